/**
 * barman-wal-restore: option parsing, remote command lines, and the whole flow through the sh
 * launcher with a fake `ssh` first in PATH that runs the remote command locally, where `barman`
 * is barman-ts on a temporary archive (no sshd needed).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as zlib from 'node:zlib';
import { loadConfig, type ServerConfig } from '../../src/config/config.js';
import { walArchivePath } from '../../src/wal/archiver.js';
import { compressBuffer } from '../../src/wal/compression.js';
import { parseArgs } from '../../src/walclient/restore-main.js';
import { getWalSshArgs, parseChecksums, type RestoreOptions } from '../../src/walclient/remote-get-wal.js';
import { RESTORE_DEFAULT_PARALLEL } from '../../src/walclient/trust-rules.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const LAUNCHER = path.join(ROOT, 'bin', 'barman-wal-restore');
const S = (seg: number) => `0000000100000000${seg.toString(16).toUpperCase().padStart(8, '0')}`;

let tmp = '';
let conf = '';
let fakeBin = '';
const data = new Map<string, Buffer>();

function content(seed: number, size = 128 * 1024): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4) b.writeUInt32LE(((i * 2654435761 + seed) >>> 0) & 0xffff, i);
  return b;
}

/** The spool's files other than its boot record (WAL names and any temporary left behind). */
function spoolFiles(spool: string): string[] {
  return fs.readdirSync(spool).filter((n) => n !== '.boot_id');
}

const BOOT_ID = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();

function write(file: string, text: string): void {
  fs.writeFileSync(file, text, { mode: 0o755 });
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run the sh launcher with the fake ssh/barman; `bins` are extra dirs put first in PATH. */
function restore(args: string[], opts: { env?: NodeJS.ProcessEnv; barman?: string; path?: string; command?: string } = {}): Run {
  const env = {
    ...process.env,
    PATH: opts.path ?? `${fakeBin}:${path.dirname(process.execPath)}:${process.env.PATH ?? ''}`,
    FAKE_BARMAN: opts.barman ?? path.join(fakeBin, 'barman-real'),
    // These tests count ssh sessions: the background prefetch has tests of its own.
    BARMAN_WAL_RESTORE_BACKGROUND: 'off',
    ...opts.env,
  };
  const r = spawnSync(opts.command ?? LAUNCHER, args, { env, maxBuffer: 64 << 20 });
  return { code: r.status, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

const baseOpts = (over: Partial<RestoreOptions> = {}): RestoreOptions => ({
  host: 'backup',
  server: 'pg',
  walName: S(1),
  walDest: '/tmp/x',
  user: 'barman',
  parallel: 0,
  spoolDir: '/var/tmp/walrestore',
  partial: false,
  gzip: false,
  bzip2: false,
  keepCompression: false,
  ...over,
});

before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'barman-walrestore-'));
  conf = path.join(tmp, 'barman.conf');
  fs.writeFileSync(conf, ['[barman]', `barman_home = ${tmp}/home`, `barman_user = ${os.userInfo().username}`, '', '[pg]', 'conninfo = host=127.0.0.1', 'backup_method = postgres', 'archiver = on', ''].join('\n'));
  const srv = loadConfig(conf).servers.get('pg') as ServerConfig;
  // 01..0A archived (every other one gzip-compressed), then a gap.
  for (let seg = 1; seg <= 10; seg++) {
    const d = content(seg);
    data.set(S(seg), d);
    const file = walArchivePath(srv, S(seg));
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, seg % 2 ? zlib.gzipSync(d, { level: 1 }) : d);
  }
  fakeBin = path.join(tmp, 'bin');
  fs.mkdirSync(fakeBin);
  // ssh: skip its options and USER@HOST, then hand the rest to a shell, as sshd does.
  write(
    path.join(fakeBin, 'ssh'),
    `#!/bin/sh
[ -n "$FAKE_SSH_FAIL" ] && exit 255
echo "$*" >> "${tmp}/ssh.log"
while [ $# -gt 0 ]; do case $1 in -F|-p) shift 2 ;; -q|-T) shift ;; *) break ;; esac; done
shift
PATH="${fakeBin}/remote:$PATH" exec sh -c "$*"
`,
  );
  fs.mkdirSync(path.join(fakeBin, 'remote'));
  write(path.join(fakeBin, 'remote', 'barman'), `#!/bin/sh\nexec "$FAKE_BARMAN" "$@"\n`);
  write(path.join(fakeBin, 'barman-real'), `#!/bin/sh\nexec "${process.execPath}" "${ROOT}/bin/barman.js" -c "${conf}" "$@"\n`);
  // Barman's server: argparse refuses --batch.
  write(
    path.join(fakeBin, 'barman-old'),
    `#!/bin/sh
case "$*" in *--batch*) echo "usage: barman get-wal [-h] SERVER_NAME WAL_NAME" >&2; echo "barman get-wal: error: unrecognized arguments: --batch 8" >&2; exit 2 ;; esac
exec "${fakeBin}/barman-real" "$@"
`,
  );
  // A transport that flips one byte of the first member's data of a --batch stream (Barman's
  // single-file protocol has no checksum to catch it: there, ssh's integrity is all there is).
  write(
    path.join(fakeBin, 'barman-corrupt'),
    `#!/bin/sh
case "$*" in *--batch*) ;; *) exec "${fakeBin}/barman-real" "$@" ;; esac
"${fakeBin}/barman-real" "$@" | "${process.execPath}" -e 'const c=[];process.stdin.on("data",d=>c.push(d)).on("end",()=>{const b=Buffer.concat(c);if(b.length>2000)b[1500]^=0xff;process.stdout.write(b)})'
`,
  );
  // A server whose --batch breaks off: only the first FAKE_CUT bytes of the stream, then exit
  // FAKE_CUT_RC (with a message), as when a later file fails on an older barman-ts server.
  write(
    path.join(fakeBin, 'barman-cut'),
    `#!/bin/sh
case "$*" in *--batch*) ;; *) exec "${fakeBin}/barman-real" "$@" ;; esac
"${fakeBin}/barman-real" "$@" | head -c "$FAKE_CUT"
echo "ERROR: cannot send WAL file: broken" >&2
exit "$FAKE_CUT_RC"
`,
  );
  // node that must not run (proves the sh fast path).
  fs.mkdirSync(path.join(tmp, 'nonode'));
  write(path.join(tmp, 'nonode', 'node'), '#!/bin/sh\necho "node must not run" >&2\nexit 99\n');
});

after(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

describe('barman-wal-restore options', () => {
  it('parses Barman options anywhere on the line', () => {
    const p = parseArgs(['-U', 'bob', 'host', '--port', '2222', 'pg', '-p', '8', '--spool-dir=/s', S(1), '/d', '-P', '--keep-compression', '-c', '/etc/b.conf', '-s', '1.5']);
    assert.notEqual(p, 'version');
    if (p === 'version') return;
    assert.equal(p.test, false);
    assert.equal(p.sleep, 1.5);
    assert.deepEqual(
      { ...p.options },
      { host: 'host', server: 'pg', walName: S(1), walDest: '/d', user: 'bob', port: '2222', sshConfig: undefined, config: '/etc/b.conf', parallel: 8, parallelByDefault: false, spoolDir: '/s', partial: true, gzip: false, bzip2: false, keepCompression: true },
    );
    const d = parseArgs(['h', 'pg', S(1), '/d']);
    assert.ok(d !== 'version' && d.options.user === 'barman' && d.options.spoolDir === '/var/tmp/walrestore');
    assert.ok(d.options.parallel === RESTORE_DEFAULT_PARALLEL && d.options.parallelByDefault === true);
    const off = parseArgs(['-p', '0', 'h', 'pg', S(1), '/d']);
    assert.ok(off !== 'version' && off.options.parallel === 0 && off.options.parallelByDefault === false);
    assert.equal(parseArgs(['-V']), 'version');
  });

  it('refuses invalid values', () => {
    assert.throws(() => parseArgs(['-p', 'x', 'h', 'pg', S(1), '/d']), /--parallel/);
    assert.throws(() => parseArgs(['-z', '--keep-compression', 'h', 'pg', S(1), '/d']), /mutually exclusive/);
    assert.throws(() => parseArgs(['-s', 'soon', 'h', 'pg', S(1), '/d']), /--sleep/);
  });

  it('usage errors exit 2, --help and -V exit 0', () => {
    assert.equal(restore(['h', 'pg']).code, 2);
    assert.equal(restore(['--bogus', 'h', 'pg', S(1), '/d']).code, 2);
    assert.equal(restore(['--help']).code, 0);
    const v = restore(['-V']);
    assert.equal(v.code, 0);
    assert.match(v.stdout, /^barman-wal-restore \d/);
  });

  it("builds Barman's remote command line, values quoted for the remote shell", () => {
    assert.deepEqual(getWalSshArgs(baseOpts()), ['-q', '-T', 'barman@backup', 'barman', `get-wal 'pg' '${S(1)}'`]);
    assert.deepEqual(
      getWalSshArgs(baseOpts({ port: '2222', config: "/etc/it's.conf", gzip: true, partial: true, server: 'a b;c' }), { peek: 4 }),
      ['-p', '2222', '-q', '-T', 'barman@backup', 'barman', `--config='/etc/it'\\''s.conf'`, `get-wal --peek '4' --gzip --partial 'a b;c' '${S(1)}'`],
    );
    assert.deepEqual(getWalSshArgs(baseOpts({ sshConfig: '/c', keepCompression: true }), { batch: 8 }), ['-F', '/c', '-q', '-T', 'barman@backup', 'barman', `get-wal --batch '8' --keep-compression 'pg' '${S(1)}'`]);
    assert.deepEqual(getWalSshArgs(baseOpts(), { test: true }).slice(-1), [`get-wal --test 'pg' '${S(1)}'`]);
  });

  it('parses checksum lines in both formats', () => {
    const h = 'a'.repeat(64);
    assert.deepEqual([...parseChecksums(`${h} *A\n${h.toUpperCase()}  B\n`)], [['A', h], ['B', h]]);
    assert.throws(() => parseChecksums('nope *A\n'));
  });
});

describe('barman-wal-restore flow (fake ssh)', () => {
  const dest = () => path.join(tmp, 'pg_wal', 'RECOVERYXLOG');
  before(() => fs.mkdirSync(path.join(tmp, 'pg_wal'), { recursive: true }));

  it('-p 0: fetches one file, decompressed, no spool', () => {
    const spool = path.join(tmp, 'spool0');
    const r = restore(['-p', '0', '--spool-dir', spool, 'backup', 'pg', S(1), dest()]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(fs.readFileSync(dest()).equals(data.get(S(1)) as Buffer));
    assert.equal(fs.existsSync(spool), false);
    assert.deepEqual(fs.readdirSync(path.dirname(dest())), ['RECOVERYXLOG'], 'no temporary file left');
  });

  it("without -p (Barman's manual restore_command): prefetches a default batch in one session, served by the sh fast path", () => {
    const spool = path.join(tmp, 'spool-default');
    fs.rmSync(path.join(tmp, 'ssh.log'), { force: true });
    const r = restore(['--spool-dir', spool, 'backup', 'pg', S(1), dest()]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(fs.readFileSync(dest()).equals(data.get(S(1)) as Buffer));
    // The archive holds 01..0A: everything after WAL_NAME comes in the same session.
    assert.deepEqual(spoolFiles(spool).sort(), [2, 3, 4, 5, 6, 7, 8, 9, 10].map(S));
    const log = fs.readFileSync(path.join(tmp, 'ssh.log'), 'utf8').trim().split('\n');
    assert.equal(log.length, 1, 'one ssh session');
    assert.match(log[0] ?? '', new RegExp(`get-wal --batch '${RESTORE_DEFAULT_PARALLEL}'`));
    const hit = restore(['--spool-dir', spool, 'backup', 'pg', S(2), dest()], { path: `${path.join(tmp, 'nonode')}:/usr/bin:/bin` });
    assert.equal(hit.code, 0, hit.stderr);
    assert.ok(fs.readFileSync(dest()).equals(data.get(S(2)) as Buffer));
  });

  it("without -p against Barman's server: one get-wal per file, as Barman's client; the refusal is remembered", () => {
    const spool = path.join(tmp, 'spool-default-old');
    fs.rmSync(path.join(tmp, 'ssh.log'), { force: true });
    const env = { FAKE_BARMAN: path.join(fakeBin, 'barman-old') };
    const first = restore(['--spool-dir', spool, 'backup', 'pg', S(1), dest()], { env });
    assert.equal(first.code, 0, first.stderr);
    assert.ok(fs.readFileSync(dest()).equals(data.get(S(1)) as Buffer));
    assert.deepEqual(spoolFiles(spool), ['.prefetch.unsupported'], 'no --peek prefetch nobody asked for; the refusal noted');
    const second = restore(['--spool-dir', spool, 'backup', 'pg', S(2), dest()], { env });
    assert.equal(second.code, 0, second.stderr);
    const log = fs.readFileSync(path.join(tmp, 'ssh.log'), 'utf8').trim().split('\n');
    // The first call paid one refused --batch; the second went straight to Barman's get-wal.
    assert.equal(log.filter((l) => l.includes('--batch')).length, 1, log.join('\n'));
    assert.equal(log.filter((l) => l.includes('--peek')).length, 0, log.join('\n'));
    assert.equal(log.length, 3, log.join('\n'));
  });

  it('-p 8: WAL_NAME to dest and 7 files in the spool in one session; the sh fast path serves the next without node', () => {
    const spool = path.join(tmp, 'spool8');
    fs.rmSync(path.join(tmp, 'ssh.log'), { force: true });
    const r = restore(['-p', '8', '--spool-dir', spool, 'backup', 'pg', S(1), dest()]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(fs.readFileSync(dest()).equals(data.get(S(1)) as Buffer));
    assert.deepEqual(spoolFiles(spool).sort(), [2, 3, 4, 5, 6, 7, 8].map(S));
    assert.equal(fs.readFileSync(path.join(spool, '.boot_id'), 'utf8'), `${BOOT_ID}\n`, 'stamped with this boot');
    assert.equal(fs.statSync(spool).mode & 0o777, 0o700);
    for (const n of spoolFiles(spool)) assert.ok(fs.readFileSync(path.join(spool, n)).equals(data.get(n) as Buffer), n);
    assert.equal(fs.readFileSync(path.join(tmp, 'ssh.log'), 'utf8').trim().split('\n').length, 1, 'one ssh session');

    // Served from the spool with a PATH where node fails.
    const noNode = `${path.join(tmp, 'nonode')}:/usr/bin:/bin`;
    const hit = restore(['-p', '8', '--spool-dir', spool, 'backup', 'pg', S(2), dest()], { path: noNode });
    assert.equal(hit.code, 0, hit.stderr);
    assert.ok(fs.readFileSync(dest()).equals(data.get(S(2)) as Buffer));
    assert.equal(fs.existsSync(path.join(spool, S(2))), false);
    // A miss does reach node (which fails here with 99): the fast path never invents success.
    assert.equal(restore(['--spool-dir', spool, 'backup', 'pg', S(9), dest()], { path: noNode }).code, 99);
    // A directory as WAL_DEST is never served by the fast path: node refuses it with 3.
    const asDir = restore(['--spool-dir', spool, 'backup', 'pg', S(3), path.join(tmp, 'pg_wal')]);
    assert.equal(asDir.code, 3);
    assert.ok(fs.existsSync(path.join(spool, S(3))));
  });

  it("uses a spool of ours with mode 0755 (what Barman's client and mkdir leave): prefetch on, the sh fast path serves it", () => {
    const spool = path.join(tmp, 'spool-0755');
    fs.mkdirSync(spool, { mode: 0o755 });
    fs.chmodSync(spool, 0o755);
    const r = restore(['-p', '4', '--spool-dir', spool, 'backup', 'pg', S(1), dest()]);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /prefetch \(-p\) disabled/);
    assert.deepEqual(spoolFiles(spool).sort(), [2, 3, 4].map(S));
    assert.equal(fs.statSync(spool).mode & 0o7777, 0o755, 'left as it is');
    const hit = restore(['-p', '4', '--spool-dir', spool, 'backup', 'pg', S(2), dest()], { path: `${path.join(tmp, 'nonode')}:/usr/bin:/bin` });
    assert.equal(hit.code, 0, hit.stderr);
    assert.ok(fs.readFileSync(dest()).equals(data.get(S(2)) as Buffer));
  });

  it('never serves a planted file from a spool others can write; prefetching is then off', () => {
    const spool = path.join(tmp, 'spool-open');
    fs.mkdirSync(spool, { mode: 0o777 });
    fs.chmodSync(spool, 0o777);
    fs.writeFileSync(path.join(spool, S(4)), 'planted');
    for (const p of [`${path.join(tmp, 'nonode')}:/usr/bin:/bin`, undefined]) {
      const r = restore(['-p', '8', '--spool-dir', spool, 'backup', 'pg', S(4), dest()], p ? { path: p } : {});
      if (p) {
        assert.equal(r.code, 99, 'the sh fast path does not trust the spool: node is started');
        continue;
      }
      assert.equal(r.code, 0, r.stderr);
      assert.ok(fs.readFileSync(dest()).equals(data.get(S(4)) as Buffer), 'the real WAL, from the server');
      // Said once, on stderr (PostgreSQL's log): a spool that is never used costs a session per WAL.
      assert.match(r.stderr, /^WARNING: prefetch \(-p\) disabled: .*spool-open.*\n$/);
    }
    assert.deepEqual(fs.readdirSync(spool), [S(4)], 'nothing prefetched into the open spool, the planted file left alone');
  });

  it('a spool of another boot (or without a boot record) is not served; node empties it and refetches', () => {
    const spool = path.join(tmp, 'spool-boot');
    const noNode = `${path.join(tmp, 'nonode')}:/usr/bin:/bin`;
    assert.equal(restore(['-p', '4', '--spool-dir', spool, 'backup', 'pg', S(1), dest()]).code, 0);
    assert.deepEqual(spoolFiles(spool).sort(), [2, 3, 4].map(S));
    // What a crash could leave: a torn file under a WAL name, stamped with an earlier boot.
    fs.writeFileSync(path.join(spool, S(2)), 'torn');
    fs.writeFileSync(path.join(spool, '.boot_id'), '00000000-0000-0000-0000-000000000000\n');
    fs.writeFileSync(path.join(spool, `.${S(7)}.12345.tmp`), 'half');
    fs.writeFileSync(path.join(spool, 'not-ours'), 'x');
    assert.equal(restore(['-p', '4', '--spool-dir', spool, 'backup', 'pg', S(2), dest()], { path: noNode }).code, 99, 'node is started');
    fs.rmSync(path.join(tmp, 'ssh.log'), { force: true });
    const r = restore(['-p', '4', '--spool-dir', spool, 'backup', 'pg', S(2), dest()]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.ok(fs.readFileSync(dest()).equals(data.get(S(2)) as Buffer), 'the real WAL, from the server');
    assert.equal(fs.readFileSync(path.join(tmp, 'ssh.log'), 'utf8').trim().split('\n').length, 1, 'fetched again');
    assert.deepEqual(spoolFiles(spool).sort(), [...[3, 4, 5].map(S), 'not-ours'], 'stale files gone, only ours removed');
    for (const n of [3, 4, 5].map(S)) assert.ok(fs.readFileSync(path.join(spool, n)).equals(data.get(n) as Buffer), n);
    assert.equal(fs.readFileSync(path.join(spool, '.boot_id'), 'utf8'), `${BOOT_ID}\n`);
    // Stamped again: the fast path serves it.
    assert.equal(restore(['-p', '4', '--spool-dir', spool, 'backup', 'pg', S(3), dest()], { path: noNode }).code, 0);
    assert.ok(fs.readFileSync(dest()).equals(data.get(S(3)) as Buffer));
    // A spool without a boot record (written by an older client): not served by either path.
    fs.rmSync(path.join(spool, '.boot_id'));
    assert.equal(restore(['-p', '4', '--spool-dir', spool, 'backup', 'pg', S(4), dest()], { path: noNode }).code, 99);
    fs.writeFileSync(path.join(spool, S(4)), 'torn');
    const legacy = restore(['-p', '4', '--spool-dir', spool, 'backup', 'pg', S(4), dest()]);
    assert.equal(legacy.code, 0, legacy.stderr);
    assert.ok(fs.readFileSync(dest()).equals(data.get(S(4)) as Buffer));
  });

  it('no fsync is issued for prefetched spool files', { skip: spawnSync('strace', ['-V']).status !== 0 && 'strace not available' }, () => {
    const spool = path.join(tmp, 'spool-nosync');
    // First call stamps the spool (.boot_id is written durably, once per boot).
    assert.equal(restore(['-p', '2', '--spool-dir', spool, 'backup', 'pg', S(1), dest()]).code, 0);
    const trace = path.join(tmp, 'strace.out');
    const r = restore(['-f', '-qq', '-o', trace, '-e', 'trace=fsync,fdatasync,sync_file_range', LAUNCHER, '-p', '8', '--spool-dir', spool, 'backup', 'pg', S(3), dest()], { command: 'strace' });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(fs.readFileSync(dest()).equals(data.get(S(3)) as Buffer));
    assert.deepEqual(spoolFiles(spool).sort(), [2, 4, 5, 6, 7, 8, 9, 10].map(S));
    // The whole tree is traced (the fake ssh runs the server's barman too): none of it syncs.
    assert.equal(fs.readFileSync(trace, 'utf8').split('\n').filter((l) => /\b(fsync|fdatasync|sync_file_range)\(/.test(l)).length, 0);
  });

  it("falls back to Barman's protocol (--peek + one get-wal per file) when --batch is refused", () => {
    const spool = path.join(tmp, 'spool-old');
    fs.rmSync(path.join(tmp, 'ssh.log'), { force: true });
    const r = restore(['-p', '4', '--spool-dir', spool, 'backup', 'pg', S(3), dest()], { barman: path.join(fakeBin, 'barman-old') });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.ok(fs.readFileSync(dest()).equals(data.get(S(3)) as Buffer));
    assert.deepEqual(spoolFiles(spool).sort(), [4, 5, 6].map(S));
    for (const n of spoolFiles(spool)) assert.ok(fs.readFileSync(path.join(spool, n)).equals(data.get(n) as Buffer), n);
    const log = fs.readFileSync(path.join(tmp, 'ssh.log'), 'utf8');
    assert.match(log, /--batch/);
    assert.match(log, /get-wal --peek '4'/);
    // argparse named --batch among the unknown arguments: no second, plain --batch session.
    assert.equal(log.split('\n').filter((l) => /--batch/.test(l)).length, 1, log);
  });

  it('-z with -p uses the peek protocol (the transfer encoding is honoured)', () => {
    const spool = path.join(tmp, 'spool-z');
    fs.rmSync(path.join(tmp, 'ssh.log'), { force: true });
    const r = restore(['-z', '-p', '2', '--spool-dir', spool, 'backup', 'pg', S(5), dest()]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(fs.readFileSync(dest()).equals(data.get(S(5)) as Buffer));
    assert.deepEqual(spoolFiles(spool), [S(6)]);
    assert.ok(fs.readFileSync(path.join(spool, S(6))).equals(data.get(S(6)) as Buffer));
    assert.doesNotMatch(fs.readFileSync(path.join(tmp, 'ssh.log'), 'utf8'), /--batch/);
  });

  it('--keep-compression: stored bytes travel, the client decompresses', () => {
    const spool = path.join(tmp, 'spool-keep');
    const r = restore(['--keep-compression', '-p', '3', '--spool-dir', spool, 'backup', 'pg', S(7), dest()]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(fs.readFileSync(dest()).equals(data.get(S(7)) as Buffer));
    for (const n of [S(8), S(9)]) assert.ok(fs.readFileSync(path.join(spool, n)).equals(data.get(n) as Buffer), n);
  });

  it('not found → 1, with the remote message', () => {
    fs.rmSync(dest(), { force: true });
    for (const p of [[], ['-p', '4']]) {
      const r = restore([...p, '--spool-dir', path.join(tmp, 'spool-nf'), 'backup', 'pg', S(0x20), dest()]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`WAL file '${S(0x20)}' not found in server 'pg'`));
      assert.equal(fs.existsSync(dest()), false);
    }
  });

  it('ssh connection failure → 2; --sleep waits first', () => {
    const r = restore(['--spool-dir', path.join(tmp, 'spool-x'), 'backup', 'pg', S(1), dest()], { env: { FAKE_SSH_FAIL: '1' } });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^ERROR: Connection problem with ssh\n$/);
    const t0 = Date.now();
    assert.equal(restore(['-s', '1', 'backup', 'pg', S(1), dest()], { env: { FAKE_SSH_FAIL: '1' } }).code, 2);
    assert.ok(Date.now() - t0 >= 1000);
  });

  it('bad destination → 3, bad WAL name → 3', () => {
    assert.equal(restore(['backup', 'pg', S(1), path.join(tmp, 'pg_wal')]).code, 3);
    const r = restore(['backup', 'pg', S(1), path.join(tmp, 'no', 'such', 'dir', 'X')]);
    assert.equal(r.code, 3);
    assert.equal(r.stderr.split('\n').filter(Boolean).length, 1);
    assert.equal(restore(['backup', 'pg', '../etc/passwd', dest()]).code, 3);
  });

  it('checksum mismatch of WAL_NAME in a batch → WAL_NAME fetched alone; nothing unverified in the spool', () => {
    fs.rmSync(dest(), { force: true });
    const spool = path.join(tmp, 'spool-bad');
    fs.rmSync(path.join(tmp, 'ssh.log'), { force: true });
    const r = restore(['-p', '3', '--spool-dir', spool, 'backup', 'pg', S(2), dest()], { barman: path.join(fakeBin, 'barman-corrupt') });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(fs.readFileSync(dest()).equals(data.get(S(2)) as Buffer));
    // The later files came with checksums of their own (.sha256 members) that matched: kept,
    // whole; nothing else (no temporary file) is left.
    for (const n of fs.existsSync(spool) ? spoolFiles(spool) : []) {
      assert.ok([S(3), S(4)].includes(n), n);
      assert.ok(fs.readFileSync(path.join(spool, n)).equals(data.get(n) as Buffer), n);
    }
    assert.deepEqual(fs.readdirSync(path.dirname(dest())), ['RECOVERYXLOG'], 'no temporary file left');
    const sessions = fs.readFileSync(path.join(tmp, 'ssh.log'), 'utf8').trim().split('\n');
    assert.equal(sessions.length, 2);
    assert.match(sessions[0] ?? '', /--batch/);
    assert.doesNotMatch(sessions[1] ?? '', /--batch|--peek/);
  });

  it('a --batch that fails mid-way still delivers WAL_NAME (single get-wal) and exits 0', () => {
    // [bytes let through, server exit code]: cut inside the 2nd member, inside the 1st, right
    // after the tar header, and a cut stream that the server claims complete (exit 0).
    for (const [cut, rc] of [[200_000, 1], [70_000, 1], [600, 2], [200_000, 0]] as const) {
      fs.rmSync(dest(), { force: true });
      const spool = path.join(tmp, `spool-cut-${cut}-${rc}`);
      fs.rmSync(path.join(tmp, 'ssh.log'), { force: true });
      const r = restore(['-p', '4', '--spool-dir', spool, 'backup', 'pg', S(5), dest()], {
        barman: path.join(fakeBin, 'barman-cut'),
        env: { FAKE_CUT: String(cut), FAKE_CUT_RC: String(rc) },
      });
      assert.equal(r.code, 0, `${cut}/${rc}: ${r.stderr}`);
      assert.ok(fs.existsSync(dest()), `WAL_DEST missing after exit 0 (${cut}/${rc}): ${r.stderr} ${fs.readdirSync(path.dirname(dest()))} ${fs.existsSync(spool) ? fs.readdirSync(spool) : '-'} ${fs.readFileSync(path.join(tmp, 'ssh.log'), 'utf8')}`);
      assert.ok(fs.readFileSync(dest()).equals(data.get(S(5)) as Buffer));
      assert.deepEqual(fs.existsSync(spool) ? spoolFiles(spool) : [], [], 'nothing unverified kept');
      assert.deepEqual(fs.readdirSync(path.dirname(dest())), ['RECOVERYXLOG'], 'no temporary file left');
      assert.equal(fs.readFileSync(path.join(tmp, 'ssh.log'), 'utf8').trim().split('\n').length, 2);
    }
    // Nothing sent and exit 1 is the server's "not found": no second session.
    fs.rmSync(path.join(tmp, 'ssh.log'), { force: true });
    const nf = restore(['-p', '4', '--spool-dir', path.join(tmp, 'spool-cut'), 'backup', 'pg', S(5), dest()], {
      barman: path.join(fakeBin, 'barman-cut'),
      env: { FAKE_CUT: '0', FAKE_CUT_RC: '1' },
    });
    assert.equal(nf.code, 1);
    assert.match(nf.stderr, /broken/);
    assert.equal(fs.readFileSync(path.join(tmp, 'ssh.log'), 'utf8').trim().split('\n').length, 1);
  });

  it('a corrupt archived file after WAL_NAME: the batch stops before it, WAL_NAME and the files before it arrive', () => {
    const srv = loadConfig(conf).servers.get('pg') as ServerConfig;
    const put = (name: string, bytes: Buffer) => {
      const file = walArchivePath(srv, name);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, bytes);
    };
    const d = (seg: number) => content(seg);
    put(S(0x30), d(0x30));
    put(S(0x31), d(0x31));
    const gz = zlib.gzipSync(d(0x32), { level: 1 });
    gz.fill(0x55, 200, gz.length - 8);
    put(S(0x32), gz);
    put(S(0x33), d(0x33));
    fs.rmSync(dest(), { force: true });
    const spool = path.join(tmp, 'spool-corrupt-later');
    fs.rmSync(path.join(tmp, 'ssh.log'), { force: true });
    const r = restore(['-p', '4', '--spool-dir', spool, 'backup', 'pg', S(0x30), dest()]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(fs.readFileSync(dest()).equals(d(0x30)));
    // gzip is accepted (--accept-compression): the stored bytes travel and match their checksum;
    // the client cannot decompress the bad one: dropped, the others kept.
    assert.deepEqual(spoolFiles(spool), [S(0x31), S(0x33)]);
    assert.ok(fs.readFileSync(path.join(spool, S(0x31))).equals(d(0x31)));
    assert.ok(fs.readFileSync(path.join(spool, S(0x33))).equals(d(0x33)));
    assert.equal(fs.readFileSync(path.join(tmp, 'ssh.log'), 'utf8').trim().split('\n').length, 1, 'one session');
    // --keep-compression: the server sends the stored bytes (checksums match); the client
    // cannot decompress the bad one: dropped, WAL_NAME and the others still delivered.
    const keepSpool = path.join(tmp, 'spool-corrupt-keep');
    const keep = restore(['--keep-compression', '-p', '4', '--spool-dir', keepSpool, 'backup', 'pg', S(0x31), dest()]);
    assert.equal(keep.code, 0, keep.stderr);
    assert.ok(fs.readFileSync(dest()).equals(d(0x31)));
    assert.deepEqual(spoolFiles(keepSpool), [S(0x33)]);
    // The corrupt file itself: a failure (never a torn file at WAL_DEST).
    fs.rmSync(dest(), { force: true });
    const bad = restore(['-p', '4', '--spool-dir', spool, 'backup', 'pg', S(0x32), dest()]);
    assert.notEqual(bad.code, 0);
    assert.equal(fs.existsSync(dest()), false);
  });

  it('--test prints the remote answer and exits with its code', () => {
    const r = restore(['-t', 'backup', 'pg', 'DUMMY', 'DUMMY']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'Ready to retrieve WAL files from the server pg\n');
    assert.equal(restore(['-t', 'backup', 'nope', 'DUMMY', 'DUMMY']).code, 1);
  });
});

describe('barman-wal-restore -p: compressed transfer and background prefetch (fake ssh)', () => {
  const dest = () => path.join(tmp, 'pg_wal', 'RECOVERYXLOG');
  const put = (name: string, bytes: Buffer) => {
    const srv = loadConfig(conf).servers.get('pg') as ServerConfig;
    const file = walArchivePath(srv, name);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, bytes);
  };
  const sessions = () => (fs.existsSync(path.join(tmp, 'ssh.log')) ? fs.readFileSync(path.join(tmp, 'ssh.log'), 'utf8').trim().split('\n').filter(Boolean) : []);
  /** Wait until no background prefetch runs or is starting in `spool`. */
  const settled = async (spool: string) => {
    for (let i = 0; i < 600; i++) {
      if (!['.prefetch.lock', '.prefetch.start'].some((f) => fs.existsSync(path.join(spool, f)))) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.fail('background prefetch still running after 60 s');
  };
  const bg = { BARMAN_WAL_RESTORE_BACKGROUND: 'on' };
  before(() => fs.mkdirSync(path.join(tmp, 'pg_wal'), { recursive: true }));

  it('every client-decodable algorithm travels as stored and is decompressed bit for bit', async () => {
    const algos = ['gzip', 'bzip2', 'xz', 'zstd', 'lz4', 'snappy'] as const;
    for (const [i, algo] of algos.entries()) put(S(0x50 + i), await compressBuffer(content(0x50 + i), algo));
    put(S(0x56), content(0x56));
    const spool = path.join(tmp, 'spool-algos');
    fs.rmSync(path.join(tmp, 'ssh.log'), { force: true });
    const r = restore(['-p', '8', '--spool-dir', spool, 'backup', 'pg', S(0x50), dest()]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(fs.readFileSync(dest()).equals(content(0x50)));
    assert.deepEqual(spoolFiles(spool).sort(), [0x51, 0x52, 0x53, 0x54, 0x55, 0x56].map(S));
    for (const n of spoolFiles(spool)) assert.ok(fs.readFileSync(path.join(spool, n)).equals(content(parseInt(n.slice(-8), 16))), n);
    assert.equal(sessions().length, 1);
    assert.match(sessions()[0] ?? '', /--batch '8' --accept-compression gzip,bzip2,xz,zstd,lz4,snappy /);
  });

  it('an older barman-ts server (no --accept-compression) gets the plain --batch request', () => {
    const older = path.join(fakeBin, 'barman-no-accept');
    write(older, `#!/bin/sh\ncase "$*" in *--accept-compression*) echo "error: unknown option '--accept-compression'" >&2; exit 2 ;; esac\nexec "${fakeBin}/barman-real" "$@"\n`);
    const spool = path.join(tmp, 'spool-no-accept');
    fs.rmSync(path.join(tmp, 'ssh.log'), { force: true });
    const r = restore(['-p', '3', '--spool-dir', spool, 'backup', 'pg', S(0x51), dest()], { barman: older });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(fs.readFileSync(dest()).equals(content(0x51)));
    assert.deepEqual(spoolFiles(spool).sort(), [S(0x52), S(0x53)]);
    assert.equal(sessions().length, 2);
    assert.doesNotMatch(sessions()[1] ?? '', /accept-compression/);
  });

  it('a corrupt zstd member after WAL_NAME ends up nowhere; the others arrive', async () => {
    put(S(0x70), await compressBuffer(content(0x70), 'zstd'));
    const bad = await compressBuffer(content(0x71), 'zstd');
    bad.fill(0x5a, 40, bad.length - 4);
    put(S(0x71), bad);
    put(S(0x72), await compressBuffer(content(0x72), 'zstd'));
    const spool = path.join(tmp, 'spool-bad-zstd');
    const r = restore(['-p', '4', '--spool-dir', spool, 'backup', 'pg', S(0x70), dest()]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(fs.readFileSync(dest()).equals(content(0x70)));
    assert.deepEqual(spoolFiles(spool), [S(0x72)], 'no trace of the corrupt one, no temporary file');
    // Asked for itself: a failure, never a torn file at WAL_DEST.
    fs.rmSync(dest(), { force: true });
    const r2 = restore(['-p', '4', '--spool-dir', spool, 'backup', 'pg', S(0x71), dest()]);
    assert.notEqual(r2.code, 0);
    assert.equal(fs.existsSync(dest()), false);
  });

  it('background prefetch: the next batch arrives while the spool is served; every call succeeds', async () => {
    for (let seg = 0x80; seg < 0x8c; seg++) put(S(seg), seg % 3 ? await compressBuffer(content(seg), 'zstd') : content(seg));
    const spool = path.join(tmp, 'spool-bg');
    fs.rmSync(path.join(tmp, 'ssh.log'), { force: true });
    for (let seg = 0x80; seg < 0x8c; seg++) {
      const r = restore(['-p', '4', '--spool-dir', spool, 'backup', 'pg', S(seg), dest()], { env: bg });
      assert.equal(r.code, 0, `${S(seg)}: ${r.stderr}`);
      assert.ok(fs.readFileSync(dest()).equals(content(seg)), S(seg));
      for (const n of spoolFiles(spool).filter((f) => !f.startsWith('.'))) assert.ok(fs.readFileSync(path.join(spool, n)).equals(content(parseInt(n.slice(-8), 16))), `spool ${n} whole`);
      if (seg === 0x80) await settled(spool);
    }
    await settled(spool);
    // 12 files, -p 4: far fewer sessions than calls, and the background ones found their files.
    assert.ok(sessions().length < 8, sessions().join('\n'));
    assert.ok(sessions().some((s) => s.includes(S(0x84))), 'a background batch started after the first one');
    // Past the end of the archive: the background prefetch stops asking (.prefetch.none).
    assert.deepEqual(spoolFiles(spool).filter((f) => !f.startsWith('.prefetch.start') && !f.startsWith('.prefetch.lock')), spoolFiles(spool).filter((f) => f === '.prefetch.none'));
  });

  it('a call whose file a live background prefetch is fetching waits for it in sh, without starting node', async () => {
    const spool = path.join(tmp, 'spool-wait');
    fs.mkdirSync(spool, { mode: 0o700 });
    fs.writeFileSync(path.join(spool, '.boot_id'), `${BOOT_ID}\n`);
    const holder = spawn('sleep', ['30'], { stdio: 'ignore' });
    const noNode = `${fakeBin}:${path.join(tmp, 'nonode')}:${process.env.PATH ?? ''}`;
    /** The launcher, asynchronously, where `node` only fails (exit 99): served by sh or not at all. */
    const launch = (name: string) =>
      new Promise<Run & { ms: number }>((resolve) => {
        const t0 = Date.now();
        const child = spawn(LAUNCHER, ['-p', '4', '--spool-dir', spool, 'backup', 'pg', name, dest()], {
          env: { ...process.env, PATH: noNode, BARMAN_WAL_RESTORE_BACKGROUND: 'off' },
        });
        let stderr = '';
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        child.on('close', (code) => resolve({ code, stdout: '', stderr, ms: Date.now() - t0 }));
      });
    const lock = (pid: number | undefined, first: string) => fs.writeFileSync(path.join(spool, '.prefetch.lock'), `${pid}\n${first}\n`);
    try {
      lock(holder.pid, S(0xa0));
      const waiting = launch(S(0xa1));
      await new Promise((r) => setTimeout(r, 300));
      // The prefetch renames the verified file in.
      fs.writeFileSync(path.join(spool, 'tmp-a1'), content(0xa1));
      fs.renameSync(path.join(spool, 'tmp-a1'), path.join(spool, S(0xa1)));
      const served = await waiting;
      assert.equal(served.code, 0, served.stderr);
      assert.ok(served.ms >= 250, `returned after ${served.ms} ms: before the file came?`);
      assert.ok(fs.readFileSync(dest()).equals(content(0xa1)));
      // Not waited for: a name before the batch, another timeline, a dead holder, no lock.
      for (const [first, name] of [[S(0xa5), S(0xa2)], [`00000002${S(0xa0).slice(8)}`, S(0xa2)]]) {
        lock(holder.pid, first);
        const r = await launch(name);
        assert.equal(r.code, 99, `${first} / ${name}: node should have been asked (${r.stderr})`);
        assert.ok(r.ms < 20_000, `${first} / ${name}: waited ${r.ms} ms`); // a wait would last 60 s
      }
      const dead = spawnSync('sh', ['-c', 'echo $$']).stdout.toString().trim();
      for (const pid of [Number(dead), 0]) {
        lock(pid, S(0xa0));
        const r = await launch(S(0xa2));
        assert.equal(r.code, 99, `holder ${pid}`);
        assert.ok(r.ms < 20_000, `holder ${pid}: waited ${r.ms} ms`);
      }
      fs.rmSync(path.join(spool, '.prefetch.lock'));
      assert.equal((await launch(S(0xa2))).code, 99);
      // Only being started (.start, no lock yet): a short wait, then node (which judges its age).
      fs.writeFileSync(path.join(spool, '.prefetch.start'), '');
      const starting = await launch(S(0xa2));
      assert.equal(starting.code, 99);
      assert.ok(starting.ms >= 1500 && starting.ms < 30_000, `waited ${starting.ms} ms for a prefetch being started`);
    } finally {
      holder.kill();
    }
  });

  it('background prefetch failures (cut stream, ssh down) never make a call fail nor leave a partial file', async () => {
    for (let seg = 0x90; seg < 0x9a; seg++) put(S(seg), await compressBuffer(content(seg), 'zstd'));
    const spool = path.join(tmp, 'spool-bg-fail');
    // First batch in the foreground, whole; one file served without a background prefetch.
    assert.equal(restore(['-p', '4', '--spool-dir', spool, 'backup', 'pg', S(0x90), dest()]).code, 0);
    assert.equal(restore(['-p', '4', '--spool-dir', spool, 'backup', 'pg', S(0x91), dest()]).code, 0);
    // Served from the spool (one left: below N/2); the background batch it starts is cut mid-way
    // (exit 0 claimed).
    const cut = restore(['-p', '4', '--spool-dir', spool, 'backup', 'pg', S(0x92), dest()], {
      barman: path.join(fakeBin, 'barman-cut'),
      env: { ...bg, FAKE_CUT: '150000', FAKE_CUT_RC: '0' },
    });
    assert.equal(cut.code, 0, cut.stderr);
    await settled(spool);
    assert.ok(sessions().some((l) => l.includes(S(0x94))), 'the background batch ran');
    // Only files verified by their own checksum member before the cut (whole), no temporary file.
    const afterCut = spoolFiles(spool).sort();
    assert.equal(afterCut[0], S(0x93));
    assert.ok(afterCut.length < 5, afterCut.join(' '));
    for (const n of afterCut) assert.ok(/^[0-9A-F]{24}$/.test(n) && fs.readFileSync(path.join(spool, n)).equals(content(parseInt(n.slice(-8), 16))), n);
    // Served; a background prefetch, if started, cannot even reach the server.
    const down = restore(['-p', '4', '--spool-dir', spool, 'backup', 'pg', S(0x93), dest()], { env: { ...bg, FAKE_SSH_FAIL: '1' } });
    assert.equal(down.code, 0, down.stderr);
    await settled(spool);
    assert.deepEqual(spoolFiles(spool).sort(), afterCut.slice(1));
    // Everything still comes, in order.
    for (let seg = 0x94; seg < 0x9a; seg++) {
      const r = restore(['-p', '4', '--spool-dir', spool, 'backup', 'pg', S(seg), dest()], { env: bg });
      assert.equal(r.code, 0, `${S(seg)}: ${r.stderr}`);
      assert.ok(fs.readFileSync(dest()).equals(content(seg)), S(seg));
    }
    await settled(spool);
  });
});
