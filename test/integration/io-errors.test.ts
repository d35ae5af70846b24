/**
 * Only "file not found" means absent. Real EACCES and EIO, injected into the real CLI with
 * `strace --inject` on one path, must come out as errors of get-wal, check-backup, archive-wal
 * and the catalog, never as "missing": get-wal's "not found" tells PostgreSQL that the archive
 * ends there (it may end a recovery and promote), check-backup would fail a good backup,
 * archive-wal would set a good segment aside in errors/, and an empty-looking catalog would let
 * delete or retention remove what other backups need.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { newBackupInfo } from '../../src/catalog/backup-info.js';
import { loadConfig, type ServerConfig } from '../../src/config/config.js';
import { saveBackupInfo } from '../../src/catalog/catalog.js';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { walArchivePath } from '../../src/wal/archiver.js';
import { makeCliFixture, type CliFixture } from '../helpers/cli-fixture.js';
import { hasProgram } from '../helpers/testing.js';
import { withSegmentHeader } from '../helpers/wal-segment.js';

const SEG = 16 << 20;
const S = (seg: number) => `00000001000000000000000${seg}`;
/** The stat family, whichever one libuv uses (statx on current kernels). */
const STAT_CALLS = 'statx,newfstatat,stat,lstat';

interface Run {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** `barman ARGS` under strace, with `inject` (strace's -e inject=...) on syscalls touching `file`. */
function barmanWithFault(fx: CliFixture, file: string, inject: string, ...args: string[]): Promise<Run> {
  const argv = ['-f', '-qq', '-o', '/dev/null', '-P', file, '-e', `inject=${inject}`, process.execPath, BARMAN_SCRIPT, '-c', fx.configFile, ...args];
  return new Promise((resolve, reject) => {
    const child = spawn('strace', argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TZ: 'UTC' } });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr: err }));
  });
}

function segment(name: string, seed: number): Buffer {
  const buf = Buffer.alloc(SEG);
  for (let i = 0; i < SEG; i += 4096) buf.writeUInt32LE((seed * 2654435761 + i) >>> 0, i);
  return withSegmentHeader(buf, name);
}

function archive(srv: ServerConfig, name: string, data: Buffer): string {
  const file = walArchivePath(srv, name);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, data);
  return file;
}

const strace = hasProgram('strace');

describe('I/O errors are never "missing"', { skip: strace ? false : 'strace not installed' }, () => {
  let fx: CliFixture;
  let srv: ServerConfig;

  before(async () => {
    fx = await makeCliFixture({ prefix: 'bts-ioerr-', server: { conninfo: 'host=127.0.0.1 port=1' } });
    srv = loadConfig(fx.configFile).servers.get('pg') as ServerConfig;
    for (const seg of [1, 2, 3, 4]) archive(srv, S(seg), segment(S(seg), seg));
  });

  describe('get-wal', () => {
    it('exits 200 ("cannot read"), not 1 ("not found"), when stat, open or read of the file fail', async () => {
      const file = walArchivePath(srv, S(1));
      for (const inject of [`${STAT_CALLS}:error=EACCES`, 'openat:error=EACCES', 'openat:error=EIO', 'read,pread64:error=EIO']) {
        const r = await barmanWithFault(fx, file, inject, 'get-wal', 'pg', S(1));
        assert.equal(r.code, 200, `${inject}: ${r.stderr}`);
        assert.doesNotMatch(r.stderr, /not found/, inject);
        assert.match(r.stderr, /^ERROR: cannot (read|send)/m, inject);
        assert.match(r.stderr, /EACCES|EIO|permission denied|i\/o error/i, inject);
      }
      // Without a fault the same call works, and a really missing file is exit 1.
      const ok = await barmanWithFault(fx, '/nonexistent', 'openat:error=EIO', 'get-wal', 'pg', S(1));
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.stdout.length, SEG);
      const missing = await fx.run('get-wal', 'pg', S(6));
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /not found/);
    });

    it('a directory of the archive that cannot be searched is an error too', async () => {
      const dir = path.dirname(walArchivePath(srv, S(1)));
      const r = await barmanWithFault(fx, walArchivePath(srv, S(2)), `${STAT_CALLS}:error=EIO`, 'get-wal', '-o', fx.root, 'pg', S(2));
      assert.equal(r.code, 200, r.stderr);
      assert.ok(!fs.existsSync(path.join(fx.root, S(2))));
      assert.ok(fs.existsSync(dir));
    });

    it('--batch ends before a later file that cannot be read; asking for that file is exit 200', async () => {
      const r = await barmanWithFault(fx, walArchivePath(srv, S(3)), 'openat:error=EIO', 'get-wal', '--batch', '4', 'pg', S(2));
      assert.equal(r.code, 0, r.stderr);
      const text = r.stdout.toString('latin1');
      assert.ok(text.includes(S(2)) && !text.includes(`${S(3)}\0`), 'the batch holds S2, not S3');
      const alone = await barmanWithFault(fx, walArchivePath(srv, S(3)), 'openat:error=EIO', 'get-wal', '--batch', '4', 'pg', S(3));
      assert.equal(alone.code, 200, alone.stderr);
      const peek = await barmanWithFault(fx, walArchivePath(srv, S(3)), `${STAT_CALLS}:error=EACCES`, 'get-wal', '--peek', '4', 'pg', S(1));
      assert.equal(peek.code, 200, `--peek must not stop quietly at an unreadable file: ${peek.stderr}`);
    });
  });

  describe('check-backup', () => {
    const id = '20240101T000000';
    before(async () => {
      await saveBackupInfo(
        srv,
        id,
        newBackupInfo({ status: 'WAITING_FOR_WALS', begin_wal: S(1), end_wal: S(3), timeline: 1, xlog_segment_size: SEG, version: 150000 }),
        { create: true },
      );
    });
    const status = () => /^status=(.*)$/m.exec(fs.readFileSync(path.join(fx.srvDir, 'base', id, 'backup.info'), 'utf8'))?.[1];

    it('never marks a backup FAILED because a WAL could not be looked at', async () => {
      const hashDir = path.dirname(walArchivePath(srv, S(2)));
      for (const [file, inject] of [
        [walArchivePath(srv, S(2)), `${STAT_CALLS}:error=EACCES`],
        [walArchivePath(srv, S(2)), `${STAT_CALLS}:error=EIO`],
        [hashDir, 'getdents64:error=EIO'],
      ] as const) {
        const r = await barmanWithFault(fx, file, inject, 'check-backup', 'pg', id);
        assert.notEqual(r.code, 0, `${inject}: the error is reported`);
        assert.match(r.stderr, /EACCES|EIO|permission denied|i\/o error/i, inject);
        assert.equal(status(), 'WAITING_FOR_WALS', inject);
      }
      // The same archive, readable: every WAL is there, the backup is DONE.
      const r = await fx.run('check-backup', 'pg', id);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(status(), 'DONE');
    });
  });

  describe('archive-wal', () => {
    it('leaves a file it cannot read in incoming/, never in errors/', async () => {
      const incoming = path.join(fx.srvDir, 'incoming');
      const errors = path.join(fx.srvDir, 'errors');
      fs.mkdirSync(incoming, { recursive: true });
      const listErrors = () => (fs.existsSync(errors) ? fs.readdirSync(errors) : []);
      // An identical copy of an archived segment: the archived one cannot be read.
      fs.writeFileSync(path.join(incoming, S(4)), segment(S(4), 4));
      const dup = await barmanWithFault(fx, walArchivePath(srv, S(4)), 'openat:error=EIO', 'archive-wal', 'pg');
      assert.notEqual(dup.code, 0, dup.stderr);
      assert.match(dup.stderr, /EIO|i\/o error/i);
      assert.deepEqual(fs.readdirSync(incoming), [S(4)]);
      assert.deepEqual(listErrors(), []);
      // A new segment that cannot be opened.
      fs.writeFileSync(path.join(incoming, S(5)), segment(S(5), 5));
      const fresh = await barmanWithFault(fx, path.join(incoming, S(5)), 'openat:error=EACCES', 'archive-wal', 'pg');
      assert.notEqual(fresh.code, 0, fresh.stderr);
      assert.match(fresh.stderr, /EACCES|permission denied/i);
      assert.ok(fs.existsSync(path.join(incoming, S(5))));
      assert.deepEqual(listErrors(), []);
      // Readable again: the duplicate is dropped, the new one archived, errors/ stays empty.
      const r = await fx.run('archive-wal', 'pg');
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(fs.readdirSync(incoming), []);
      assert.ok(fs.existsSync(walArchivePath(srv, S(5))));
      assert.deepEqual(listErrors(), []);
    });
  });

  describe('the backup catalog', () => {
    it('an unreadable base/ is an error for list-backups and delete, never an empty catalog', async () => {
      const id = '20240102T000000';
      await saveBackupInfo(srv, id, newBackupInfo({ status: 'DONE', begin_wal: S(1), end_wal: S(1), timeline: 1 }), { create: true });
      const base = path.join(fx.srvDir, 'base');
      const list = await barmanWithFault(fx, base, 'openat:error=EACCES', 'list-backups', 'pg');
      assert.notEqual(list.code, 0);
      assert.match(list.stderr, /Cannot read the backup catalog of server 'pg'/);
      const del = await barmanWithFault(fx, base, 'getdents64:error=EIO', 'delete', 'pg', id);
      assert.notEqual(del.code, 0);
      assert.match(del.stderr, /Cannot read the backup catalog of server 'pg'.*nothing is removed/);
      assert.ok(fs.existsSync(path.join(base, id, 'backup.info')));
      for (const seg of [1, 2, 3]) assert.ok(fs.existsSync(walArchivePath(srv, S(seg))), `WAL ${seg} kept`);
    });
  });
});
