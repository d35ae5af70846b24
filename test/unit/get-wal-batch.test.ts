/**
 * `barman get-wal --batch N` (barman-ts extension for barman-wal-restore -p): one tar stream with
 * WAL_NAME, the following archived WALs and a SHA256SUMS member, through the real CLI.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { BARMAN_BIN as BIN, runBarman, syntheticWal, untar } from '../helpers/wal-tar.js';
import { loadConfig, type ServerConfig } from '../../src/config/config.js';
import { serverPaths } from '../../src/catalog/server-dirs.js';
import { walArchivePath } from '../../src/wal/archiver.js';
import { compressBuffer } from '../../src/wal/compression.js';

const content = (seed: number, size = 256 * 1024) => syntheticWal(seed, size);
const barman = (args: string[]) => runBarman(conf, args);

let tmpRoot = '';
let conf = '';
let srv: ServerConfig;
const plain = new Map<string, Buffer>();

const S = (log: number, seg: number) => `00000001${log.toString(16).toUpperCase().padStart(8, '0')}${seg.toString(16).toUpperCase().padStart(8, '0')}`;

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

before(async () => {
  tmpRoot = await fsp.mkdtemp(path.join(os.tmpdir(), 'barman-getwal-batch-'));
  conf = path.join(tmpRoot, 'barman.conf');
  fs.writeFileSync(conf, ['[barman]', `barman_home = ${tmpRoot}/home`, `barman_user = ${os.userInfo().username}`, '', '[pg]', 'conninfo = host=127.0.0.1', 'backup_method = postgres', 'archiver = on', ''].join('\n'));
  srv = loadConfig(conf).servers.get('pg') as ServerConfig;
  const p = serverPaths(srv);
  fs.mkdirSync(p.incomingDir, { recursive: true });
  fs.mkdirSync(p.streamingDir, { recursive: true });
  // Archive: 01..05 (gzip, plain, zstd, gzip, plain), gap at 06, 07; stored directly (get-wal
  // reads the archive as it is, whatever wrote it).
  const kinds: Array<'gzip' | 'plain' | 'zstd'> = ['gzip', 'plain', 'zstd', 'gzip', 'plain'];
  for (const [i, seg] of [1, 2, 3, 4, 5, 7].entries()) {
    const name = S(0, seg);
    const data = content(seg);
    plain.set(name, data);
    const kind = kinds[i] ?? 'plain';
    const stored = kind === 'gzip' ? zlib.gzipSync(data, { level: 1 }) : kind === 'zstd' ? await compressBuffer(data, 'zstd') : data;
    const file = walArchivePath(srv, name);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, stored);
  }
});

after(async () => {
  await fsp.rm(tmpRoot, { recursive: true, force: true });
});

describe('get-wal --batch', () => {
  it('sends WAL_NAME and the following files, plain, with checksums', async () => {
    const r = barman(['get-wal', '--batch', '4', 'pg', S(0, 1)]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    const members = await untar(r.stdout);
    assert.deepEqual(members.map((m) => m.name), [S(0, 1), S(0, 2), S(0, 3), S(0, 4), 'SHA256SUMS']);
    for (const m of members.slice(0, 4)) assert.ok(m.data.equals(plain.get(m.name) as Buffer), m.name);
    const sums = (members[4]?.data.toString() ?? '').split('\n').filter(Boolean);
    assert.deepEqual(sums, members.slice(0, 4).map((m) => `${sha(m.data)} *${m.name}`));
  });

  it('stops at the first gap', async () => {
    const r = barman(['get-wal', '--batch', '10', 'pg', S(0, 3)]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await untar(r.stdout)).map((m) => m.name), [S(0, 3), S(0, 4), S(0, 5), 'SHA256SUMS']);
    const r1 = barman(['get-wal', '--batch', '1', 'pg', S(0, 1)]);
    assert.equal(r1.code, 0, r1.stderr);
    const one = await untar(r1.stdout);
    assert.deepEqual(one.map((m) => m.name), [S(0, 1), 'SHA256SUMS']);
  });

  it('sends the stored bytes with --keep-compression', async () => {
    const r = barman(['get-wal', '--batch', '3', '--keep-compression', 'pg', S(0, 1)]);
    assert.equal(r.code, 0, r.stderr);
    const members = await untar(r.stdout);
    assert.deepEqual(members.map((m) => m.name), [S(0, 1), S(0, 2), S(0, 3), 'SHA256SUMS']);
    for (const m of members.slice(0, 3)) assert.ok(m.data.equals(fs.readFileSync(walArchivePath(srv, m.name))), m.name);
    assert.match(members[3]?.data.toString() ?? '', new RegExp(`^${sha(members[0]?.data as Buffer)} \\*${S(0, 1)}\n`));
  });

  it('sends a first file that is still in incoming/ alone', async () => {
    const name = S(1, 1);
    const data = content(99, 8192);
    fs.writeFileSync(path.join(serverPaths(srv).incomingDir, name), data);
    try {
      const members = await untar(barman(['get-wal', '--batch', '5', 'pg', name]).stdout);
      assert.deepEqual(members.map((m) => m.name), [name, 'SHA256SUMS']);
      assert.ok(members[0]?.data.equals(data));
    } finally {
      fs.unlinkSync(path.join(serverPaths(srv).incomingDir, name));
    }
  });

  it('reports a missing WAL_NAME like get-wal: exit 1, nothing on stdout', () => {
    const r = barman(['get-wal', '--batch', '4', 'pg', S(0, 6)]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout.length, 0);
    assert.equal(r.stderr, `ERROR: WAL file '${S(0, 6)}' not found in server 'pg'\n`);
  });

  it('ends cleanly before a corrupt later file: the files before it arrive, exit 0', async () => {
    // Log 2: plain, plain, gzip whose data is damaged (inflate fails mid-stream), plain.
    // Log 3: plain, zstd that does not decode (fails before its tar header), plain.
    const put = (name: string, data: Buffer) => {
      const file = walArchivePath(srv, name);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, data);
    };
    for (const log of [2, 3]) for (const seg of [1, 2, 4]) put(S(log, seg), content(log * 10 + seg));
    const gz = zlib.gzipSync(content(23), { level: 1 });
    gz.fill(0x55, 200, gz.length - 8); // a valid header and trailer around broken deflate data
    put(S(2, 3), gz);
    const zst = await compressBuffer(content(33), 'zstd');
    zst.fill(0x55, 20);
    put(S(3, 3), zst);
    put(S(3, 2), await compressBuffer(content(32), 'zstd'));

    const logFile = path.join(tmpRoot, 'batch.log');
    const withLog = path.join(tmpRoot, 'barman-log.conf');
    fs.writeFileSync(withLog, fs.readFileSync(conf, 'utf8').replace('[barman]\n', `[barman]\nlog_file = ${logFile}\n`));
    const run = (name: string) => {
      const r = spawnSync(process.execPath, [BIN, '-c', withLog, 'get-wal', '--batch', '8', 'pg', name], { maxBuffer: 256 << 20 });
      return { code: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
    };

    const r2 = run(S(2, 1));
    assert.equal(r2.code, 0, r2.stderr);
    const m2 = await untar(r2.stdout);
    // The damaged member was already announced when inflate failed: it is completed with
    // filler and left out of SHA256SUMS, so that a client drops it.
    assert.deepEqual(m2.map((m) => m.name), [S(2, 1), S(2, 2), S(2, 3), 'SHA256SUMS']);
    assert.ok(m2[0]?.data.equals(content(21)) && m2[1]?.data.equals(content(22)));
    assert.deepEqual(m2[3]?.data.toString().split('\n').filter(Boolean), [`${sha(content(21))} *${S(2, 1)}`, `${sha(content(22))} *${S(2, 2)}`]);

    const r3 = run(S(3, 1));
    assert.equal(r3.code, 0, r3.stderr);
    const m3 = await untar(r3.stdout);
    assert.deepEqual(m3.map((m) => m.name), [S(3, 1), S(3, 2), 'SHA256SUMS']);
    assert.ok(m3[1]?.data.equals(content(32)));
    assert.equal(m3[2]?.data.toString().split('\n').filter(Boolean).length, 2);

    const logged = fs.readFileSync(logFile, 'utf8');
    assert.match(logged, new RegExp(`WARNING: .*stopped after 2 file\\(s\\), cannot send WAL file '${S(2, 3)}'`));
    assert.match(logged, new RegExp(`WARNING: .*stopped after 2 file\\(s\\), cannot send WAL file '${S(3, 3)}'`));

    // WAL_NAME itself damaged: get-wal's failure for a file that is there but cannot be sent
    // (exit 200, never 1: "not found" would end a recovery there), as a single get-wal gives.
    const bad = run(S(2, 3));
    assert.equal(bad.code, 200);
    assert.match(bad.stderr, new RegExp(`^ERROR: cannot send WAL file '${S(2, 3)}'`));
    assert.equal(barman(['get-wal', 'pg', S(2, 3)]).code, 200);
  });

  it('rejects bad values and combinations with exit 2, bad names with exit 3', () => {
    for (const args of [['--batch', '0'], ['--batch', 'x'], ['--batch', '2', '-z'], ['--batch', '2', '--peek', '2']]) {
      const r = barman(['get-wal', ...args, 'pg', S(0, 1)]);
      assert.equal(r.code, 2, args.join(' '));
      assert.equal(r.stdout.length, 0);
    }
    assert.equal(barman(['get-wal', '--batch', '2', 'pg', '../x']).code, 3);
  });
});
