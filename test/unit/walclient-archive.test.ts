/**
 * barman-wal-archive (PostgreSQL host side): options and exit codes, ssh command lines, the
 * push-ahead batch, the tar stream, markers, and the sh launcher's fast path. No sshd: a fake
 * `ssh` on PATH runs the remote command locally with a fake `barman` that keeps the stream.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as zlib from 'node:zlib';
import { CommanderError } from 'commander';
import { parseArgs } from '../../src/walclient/archive-main.js';
import {
  cleanOldMarkers,
  consumeMarker,
  destinationKey,
  hasForeignMarker,
  markerDirFor,
  prepareMarkerDir,
  statSignature,
  writeMarker,
} from '../../src/walclient/markers.js';
import { archiverOrder, putWalRemoteArgs, readyAfter, selectBatch, splitBatch, writeTarStream, type PushMember } from '../../src/walclient/push.js';
import { quoteRemote, remoteConfigArgs, sshArgs, sshOutcome } from '../../src/walclient/ssh.js';
import { BarmanError } from '../../src/util/errors.js';
import { collect, untar } from '../helpers/wal-tar.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const LAUNCHER = path.join(REPO, 'bin', 'barman-wal-archive');
const NODE_DIR = path.dirname(process.execPath);

let tmp = '';
before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'bts-walarchive-'));
});
after(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

let dirCounter = 0;
async function freshDir(label: string): Promise<string> {
  const d = path.join(tmp, `${label}-${++dirCounter}`);
  await fsp.mkdir(d, { recursive: true, mode: 0o700 });
  return d;
}

const seg = (n: number, tli = 1) => `${tli.toString(16).toUpperCase().padStart(8, '0')}00000000${n.toString(16).toUpperCase().padStart(8, '0')}`;

/** A fake pg_wal with files and archive_status entries. */
async function fakePgWal(files: Record<string, string | Buffer>, status: Record<string, 'ready' | 'done'>): Promise<string> {
  const root = await freshDir('pgwal');
  const wal = path.join(root, 'pg_wal');
  await fsp.mkdir(path.join(wal, 'archive_status'), { recursive: true });
  for (const [name, data] of Object.entries(files)) await fsp.writeFile(path.join(wal, name), data);
  for (const [name, st] of Object.entries(status)) await fsp.writeFile(path.join(wal, 'archive_status', `${name}.${st}`), '');
  return wal;
}

// -------------------------------------------------------------------------------------------

describe('options and exit codes', () => {
  it('parses Barman options with their defaults', () => {
    const p = parseArgs(['backup.example.com', 'pg', 'pg_wal/000000010000000000000001']);
    assert.equal(p.test, false);
    assert.deepEqual(p.options.target, { host: 'backup.example.com', user: 'barman', port: undefined, sshConfig: undefined });
    assert.equal(p.options.server, 'pg');
    assert.equal(p.options.checksum, 'sha256');
    assert.equal(p.options.compression, null);
    assert.equal(p.options.batch, 64);
    assert.equal(p.options.maxBatchBytes, undefined);
    assert.equal(p.options.workers, undefined);
    assert.equal(p.options.spoolDir, '/var/tmp/barman-wal-archive');
  });

  it('sends longer batches when compressing, and takes negative zstd levels', () => {
    const p = parseArgs(['--zstd', '--compression-level', '-3', 'h', 'pg', 'w']);
    assert.equal(p.options.batch, 128);
    assert.equal(p.options.maxBatchBytes, 2 * 1024 ** 3);
    assert.equal(p.options.compressionLevel, -3);
    assert.equal(parseArgs(['--lz4', '--batch', '10', 'h', 'pg', 'w']).options.batch, 10);
    assert.equal(parseArgs(['--workers', '0', 'h', 'pg', 'w']).options.workers, 0);
  });

  it('parses every option', () => {
    const p = parseArgs([
      '-U', 'bkp', '--port', '2222', '-c', '/etc/b.conf', '--md5', '--zstd', '--compression-level', 'high',
      '--spool-dir=/s', '--batch', '8', '--ssh-config', '/cfg', '-t', 'h', 'srv', 'w',
    ]);
    assert.equal(p.test, true);
    assert.deepEqual(p.options.target, { host: 'h', user: 'bkp', port: '2222', sshConfig: '/cfg' });
    assert.equal(p.options.config, '/etc/b.conf');
    assert.equal(p.options.checksum, 'md5');
    assert.equal(p.options.compression, 'zstd');
    assert.equal(p.options.compressionLevel, 'high');
    assert.equal(p.options.spoolDir, '/s');
    assert.equal(p.options.batch, 8);
    for (const [flag, algo] of [['-z', 'gzip'], ['-j', 'bzip2'], ['--xz', 'xz'], ['--snappy', 'snappy'], ['--lz4', 'lz4']]) {
      assert.equal(parseArgs([flag as string, 'h', 's', 'w']).options.compression, algo);
    }
  });

  it('rejects bad values with a BarmanError of code 2', () => {
    for (const argv of [
      ['--gzip', '--zstd', 'h', 's', 'w'],
      ['--batch', 'many', 'h', 's', 'w'],
      ['--compression-level', 'extreme', 'h', 's', 'w'],
      ['h', '', 'w'],
    ]) {
      assert.throws(() => parseArgs(argv), (err: unknown) => err instanceof BarmanError && err.exitCode === 2, argv.join(' '));
    }
  });

  it('leaves usage errors, --help and --version to commander', () => {
    const quiet = { stdout: process.stdout.write, stderr: process.stderr.write };
    process.stdout.write = () => true;
    process.stderr.write = () => true;
    try {
      assert.throws(() => parseArgs(['h', 's']), (e: unknown) => e instanceof CommanderError && e.code === 'commander.missingArgument');
      assert.throws(() => parseArgs(['--bogus', 'h', 's', 'w']), (e: unknown) => e instanceof CommanderError && e.code === 'commander.unknownOption');
      assert.throws(() => parseArgs(['--help']), (e: unknown) => e instanceof CommanderError && e.code === 'commander.helpDisplayed');
      assert.throws(() => parseArgs(['-V']), (e: unknown) => e instanceof CommanderError && e.code === 'commander.version');
    } finally {
      process.stdout.write = quiet.stdout;
      process.stderr.write = quiet.stderr;
    }
  });

  it('maps ssh exits as Barman does', () => {
    assert.deepEqual(sshOutcome(0, null, 3), { exitCode: 0, message: null });
    assert.deepEqual(sshOutcome(255, null, 3), { exitCode: 3, message: 'Connection problem with ssh' });
    assert.deepEqual(sshOutcome(1, null, 3), { exitCode: 1, message: null });
    assert.deepEqual(sshOutcome(4, null, 3), { exitCode: 4, message: null });
    assert.equal(sshOutcome(null, 'SIGKILL', 3).exitCode, 3);
  });

  it('exits 2 with one line for local errors (program run through node)', async () => {
    const dir = await freshDir('local');
    const cases: Array<[string[], RegExp]> = [
      [['h', 's', dir], /^ERROR: WAL_PATH cannot be a directory/],
      [['h', 's', path.join(dir, 'missing')], /^ERROR: WAL_PATH does not exist/],
      [['--batch', 'x', 'h', 's', path.join(dir, 'missing')], /^ERROR: invalid value for --batch/],
      [['h', 's'], /^error: missing required argument/],
      [['--nope', 'h', 's', 'w'], /^error: unknown option/],
    ];
    for (const [argv, re] of cases) {
      const r = spawnSync(process.execPath, [path.join(REPO, 'bin', 'barman-wal-archive.js'), ...argv], { encoding: 'utf8' });
      assert.equal(r.status, 2, argv.join(' '));
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
  });
});

describe('ssh command line', () => {
  it('builds the argv Barman uses, with -F and -p when given', () => {
    assert.deepEqual(sshArgs({ host: 'b', user: 'barman' }, putWalRemoteArgs('pg', undefined, false)), [
      '-q', '-T', 'barman@b', 'barman', 'put-wal', "'pg'",
    ]);
    assert.deepEqual(sshArgs({ host: 'b', user: 'u', port: '2222', sshConfig: '/c' }, putWalRemoteArgs('pg', '/etc/b.conf', true)), [
      '-F', '/c', '-p', '2222', '-q', '-T', 'u@b', 'barman', "--config='/etc/b.conf'", 'put-wal', "'pg'", '--test',
    ]);
    assert.deepEqual(remoteConfigArgs(undefined), []);
  });

  it('refuses hosts, users and ports that ssh would misread', () => {
    for (const t of [{ host: '-oProxyCommand=x', user: 'u' }, { host: 'h', user: '-l' }, { host: 'a b', user: 'u' }, { host: 'h', user: 'u', port: '22x' }]) {
      assert.throws(() => sshArgs(t, ['x']), (e: unknown) => e instanceof BarmanError && e.exitCode === 2);
    }
  });

  it('quotes values so that the remote shell gives back the exact words', () => {
    const server = `my srv 'quoted' "dq" $HOME; rm -rf /`;
    const config = `/etc/bar man/it's.conf`;
    const remote = putWalRemoteArgs(server, config, false);
    // ssh joins the words with spaces and the remote shell parses the result again.
    const r = spawnSync('/bin/sh', ['-c', 'eval "set -- $1"; printf "%s\\0" "$@"', 'sh', remote.join(' ')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.split('\0').slice(0, -1), ['barman', `--config=${config}`, 'put-wal', server]);
    assert.equal(quoteRemote("it's"), `'it'\\''s'`);
  });
});

describe('push-ahead batch', () => {
  it('selects ready segments after the requested one, history first, ignoring the rest', async () => {
    const files: Record<string, string> = {};
    const status: Record<string, 'ready' | 'done'> = {};
    for (let i = 1; i <= 9; i++) files[seg(i)] = `seg${i}`;
    files['00000002.history'] = '1\t0/5000000\tno recovery target specified\n';
    files[`${seg(6)}.00000028.backup`] = 'label';
    files[`${seg(8)}.partial`] = 'partial';
    Object.assign(status, {
      [seg(2)]: 'ready', // before the requested one: not pushed ahead
      [seg(3)]: 'done',
      [seg(4)]: 'ready', // the requested one
      [seg(5)]: 'done',
      [seg(6)]: 'ready',
      [`${seg(6)}.00000028.backup`]: 'ready',
      [seg(7)]: 'ready',
      [`${seg(8)}.partial`]: 'ready',
      [seg(9)]: 'ready',
      '00000002.history': 'ready',
      [seg(10)]: 'ready', // no file: skipped by selectBatch
      'garbage.tmp': 'ready',
    });
    const wal = await fakePgWal(files, status);
    const requested = path.join(wal, seg(4));
    assert.deepEqual(await readyAfter(requested), [
      '00000002.history', seg(6), `${seg(6)}.00000028.backup`, seg(7), seg(9), seg(10),
    ]);
    const batch = await selectBatch(requested, { maxMembers: 64, maxBytes: 1 << 30 });
    assert.deepEqual(batch.map((m) => m.name), [seg(4), '00000002.history', seg(6), `${seg(6)}.00000028.backup`, seg(7), seg(9)]);
    assert.equal(batch[0]?.path, requested);
    assert.deepEqual((await selectBatch(requested, { maxMembers: 3, maxBytes: 1 << 30 })).map((m) => m.name), [seg(4), '00000002.history', seg(6)]);
    assert.deepEqual((await selectBatch(requested, { maxMembers: 1, maxBytes: 1 << 30 })).map((m) => m.name), [seg(4)]);
    assert.deepEqual((await selectBatch(requested, { maxMembers: 0, maxBytes: 1 << 30 })).map((m) => m.name), [seg(4)]);
    // Byte cap: stop once the batch holds that much (each file here is 4-5 bytes).
    assert.deepEqual((await selectBatch(requested, { maxMembers: 64, maxBytes: 10 })).map((m) => m.name), [seg(4), '00000002.history']);
  });

  it('does not push ahead for a partial or non-WAL file name', async () => {
    const wal = await fakePgWal({ [`${seg(1)}.partial`]: 'p', other: 'x', [seg(2)]: 'y' }, { [seg(2)]: 'ready' });
    assert.deepEqual(await readyAfter(path.join(wal, `${seg(1)}.partial`)), []);
    assert.deepEqual(await readyAfter(path.join(wal, 'other')), []);
  });

  it('orders like the PostgreSQL archiver and splits batches in contiguous runs', () => {
    assert.deepEqual([seg(3), '00000003.history', seg(1), '00000002.history'].sort(archiverOrder), ['00000002.history', '00000003.history', seg(1), seg(3)]);
    assert.deepEqual(splitBatch([1, 2, 3, 4, 5], 2), [[1, 2, 3], [4, 5]]);
    assert.deepEqual(splitBatch([1], 2), [[1]]);
    assert.deepEqual(splitBatch([1, 2, 3, 4], 1), [[1, 2, 3, 4]]);
  });
});

describe('tar stream', () => {
  it('holds the members then SHA256SUMS, readable by tar-stream extract', async () => {
    const big = Buffer.alloc(3 * 1024 * 1024 + 17, 0x5a);
    const wal = await fakePgWal({ [seg(1)]: big, [seg(2)]: 'second', [seg(3)]: '' }, {});
    const members: PushMember[] = [1, 2, 3].map((i) => ({ name: seg(i), path: path.join(wal, seg(i)), size: 0 }));
    members.splice(2, 0, { name: seg(9), path: path.join(wal, seg(9)), size: 0 }); // vanished: skipped
    const { sink, data } = collect();
    const res = await writeTarStream(members, sink, { checksum: 'sha256' });
    assert.equal(res.complete, true);
    assert.deepEqual(res.sent.map((m) => m.name), [seg(1), seg(2), seg(3)]);
    assert.ok(res.sent.every((m) => m.unchanged));
    const st = await fsp.stat(path.join(wal, seg(2)), { bigint: true });
    assert.equal(res.sent[1]?.signature, `${st.dev} ${st.ino} ${st.size} ${st.mtimeNs / 1_000_000_000n}.${String(st.mtimeNs % 1_000_000_000n).padStart(9, '0')}`);
    const entries = await untar(data());
    assert.deepEqual(entries.map((e) => e.name), [seg(1), seg(2), seg(3), 'SHA256SUMS']);
    assert.ok(entries[0]?.data.equals(big));
    assert.equal(entries[1]?.data.toString(), 'second');
    assert.equal(entries[1]?.mtime?.getTime(), Math.floor(Number(st.mtimeNs / 1_000_000n) / 1000) * 1000);
    const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
    assert.equal(entries[3]?.data.toString(), `${sha(big)} *${seg(1)}\n${sha('second')} *${seg(2)}\n${sha('')} *${seg(3)}\n`);
  });

  it('uses MD5SUMS with --md5 and compresses members under their own names', async () => {
    const content = Buffer.from('wal data '.repeat(10000));
    const wal = await fakePgWal({ [seg(1)]: content }, {});
    const { sink, data } = collect();
    await writeTarStream([{ name: seg(1), path: path.join(wal, seg(1)), size: 0 }], sink, { checksum: 'md5', compression: 'gzip' });
    const entries = await untar(data());
    assert.deepEqual(entries.map((e) => e.name), [seg(1), 'MD5SUMS']);
    const member = entries[0]?.data as Buffer;
    assert.ok(zlib.gunzipSync(member).equals(content));
    assert.equal(entries[1]?.data.toString(), `${createHash('md5').update(member).digest('hex')} *${seg(1)}\n`);
  });

  it('fails on an unreadable requested file, and flags a file that changed while read', async () => {
    const { sink } = collect();
    await assert.rejects(writeTarStream([{ name: seg(1), path: path.join(tmp, 'nope'), size: 0 }], sink, { checksum: 'sha256' }), (e: unknown) => e instanceof BarmanError && e.exitCode === 2);
    // /proc files claim size 0 yet have content: "changed while read", so no marker may vouch for it.
    const wal = await fakePgWal({ [seg(1)]: 'x' }, {});
    const c = collect();
    const res = await writeTarStream([{ name: seg(1), path: path.join(wal, seg(1)), size: 0 }, { name: seg(2), path: '/proc/self/status', size: 0 }], c.sink, { checksum: 'sha256' });
    assert.deepEqual(res.sent.map((m) => [m.name, m.unchanged]), [[seg(1), true], [seg(2), false]]);
  });
});

describe('markers', () => {
  it('are written atomically, consumed once, and only when the signature matches', async () => {
    const spool = path.join(await freshDir('spool'), 'spool');
    const dir = await prepareMarkerDir(spool, 'pg');
    const dest = destinationKey({ user: 'barman', host: 'a' });
    assert.equal((await fsp.stat(spool)).mode & 0o777, 0o700);
    assert.equal((await fsp.stat(dir)).mode & 0o777, 0o700);
    const sig = '2049 42 16 1700000000.123456789';
    await writeMarker(dir, seg(1), sig, dest);
    assert.deepEqual(await fsp.readdir(dir), [seg(1)]);
    assert.equal(await fsp.readFile(path.join(dir, seg(1)), 'utf8'), `${sig} barman@a: \n`);
    assert.equal(await consumeMarker(dir, seg(1), '2049 42 16 1700000000.123456788', dest), false); // stale (1 ns): removed, not trusted
    assert.deepEqual(await fsp.readdir(dir), []);
    await writeMarker(dir, seg(1), sig, dest);
    assert.equal(await consumeMarker(dir, seg(1), sig, dest), true);
    assert.equal(await consumeMarker(dir, seg(1), sig, dest), false);
    // Markers of older formats (no destination; seconds without device) vouch for nothing: removed.
    for (const old of ['16 1700000000 42\n', '16 1700000000 42 barman@a: \n']) {
      await fsp.writeFile(path.join(dir, seg(1)), old);
      assert.equal(await consumeMarker(dir, seg(1), '16 1700000000 42', dest), false, old);
      assert.deepEqual(await fsp.readdir(dir), [], old);
    }
    assert.equal(markerDirFor(spool, 'a/b'), null);
    assert.equal(markerDirFor(spool, '..'), null);
  });

  it('name the destination: user, host, port and config as the launcher sees them', () => {
    assert.equal(destinationKey({ user: 'barman', host: 'b' }), 'barman@b: ');
    assert.equal(destinationKey({ user: 'u', host: 'b', port: '2222', config: '/etc/my barman.conf' }), 'u@b:2222 /etc/my barman.conf');
    assert.equal(destinationKey({ user: 'u', host: 'b', port: 22, config: '' }), 'u@b:22 ');
    const dest = (argv: string[]) => {
      const o = parseArgs([...argv, 'w']).options;
      return destinationKey({ ...o.target, config: o.config });
    };
    assert.equal(dest(['h', 'pg']), 'barman@h: ');
    assert.equal(dest(['-Ubkp', '--port=22', '-c/x y', 'h', 'pg']), 'bkp@h:22 /x y');
    assert.equal(dest(['--user', 'bkp', '--config=', 'h', 'pg']), 'bkp@h: ');
  });

  it('of another destination are neither trusted, nor consumed, nor taken over', async () => {
    const dir = await prepareMarkerDir(path.join(await freshDir('spool'), 's'), 'pg');
    const sig = '2049 42 16 1700000000.000000000';
    const a = destinationKey({ user: 'barman', host: 'a' });
    await writeMarker(dir, seg(1), sig, a);
    for (const other of [
      destinationKey({ user: 'barman', host: 'b' }),
      destinationKey({ user: 'other', host: 'a' }),
      destinationKey({ user: 'barman', host: 'a', port: '22' }),
      destinationKey({ user: 'barman', host: 'a', config: '/etc/barman.conf' }),
    ]) {
      assert.equal(await consumeMarker(dir, seg(1), sig, other), false, other);
      assert.equal(await hasForeignMarker(dir, seg(1), other), true, other);
    }
    assert.deepEqual(await fsp.readdir(dir), [seg(1)], 'left for its own destination');
    assert.equal(await hasForeignMarker(dir, seg(1), a), false);
    assert.equal(await hasForeignMarker(dir, seg(2), a), false);
    assert.equal(await consumeMarker(dir, seg(1), sig, a), true);
    // A destination spanning lines could fake another one's first line: never recorded.
    await assert.rejects(writeMarker(dir, seg(3), sig, destinationKey({ user: 'u', host: 'a', config: 'x\nother' })), BarmanError);
  });

  it('accept a spool directory of ours that nobody else can write into, refuse one others could plant markers in', async () => {
    const spool = await freshDir('spool');
    await fsp.chmod(spool, 0o755); // what mkdir (umask 022) and Barman's client leave: fine, left as it is
    await prepareMarkerDir(spool, 'pg');
    assert.equal((await fsp.stat(spool)).mode & 0o7777, 0o755);
    assert.equal((await fsp.stat(path.join(spool, 'pg'))).mode & 0o7777, 0o700, 'created 0700');
    for (const mode of [0o775, 0o757, 0o1777]) {
      await fsp.chmod(spool, mode);
      // Never tightened: markers may already have been planted there.
      await assert.rejects(prepareMarkerDir(spool, 'pg'), /is writable by other users/);
      assert.equal((await fsp.stat(spool)).mode & 0o7777, mode);
    }
    await fsp.chmod(spool, 0o700);
    const link = path.join(await freshDir('link'), 'spool');
    await fsp.symlink(spool, link);
    await assert.rejects(prepareMarkerDir(link, 'pg'), /is a symbolic link/);
    if (process.getuid?.() === 0) {
      const foreign = await freshDir('foreign');
      await fsp.chown(foreign, 65534, 65534);
      await assert.rejects(prepareMarkerDir(foreign, 'pg'), /belongs to uid 65534/);
    }
  });

  it('are cleaned after a day', async () => {
    const dir = await prepareMarkerDir(path.join(await freshDir('spool'), 's'), 'pg');
    await writeMarker(dir, seg(1), '1 2 3', 'barman@a: ');
    await writeMarker(dir, seg(2), '1 2 3', 'barman@a: ');
    const old = new Date(Date.now() - 2 * 24 * 3600 * 1000);
    await fsp.utimes(path.join(dir, seg(1)), old, old);
    assert.equal(await cleanOldMarkers(dir), 1);
    assert.deepEqual(await fsp.readdir(dir), [seg(2)]);
  });
});

// -------------------------------------------------------------------------------------------
// Whole program with a fake ssh (runs the remote command locally) and a fake barman.

interface Fake {
  bin: string;
  out: string;
  env: NodeJS.ProcessEnv;
}

async function fakeRemote(): Promise<Fake> {
  const root = await freshDir('fake');
  const bin = path.join(root, 'bin');
  const out = path.join(root, 'out');
  await fsp.mkdir(bin);
  await fsp.mkdir(out);
  // ssh: drop the options and the destination, then let a shell parse the remote words, as sshd does.
  await fsp.writeFile(path.join(bin, 'ssh'), `#!/bin/sh
while [ $# -gt 0 ]; do
  case $1 in
    -F|-p) shift 2 ;;
    -q|-T) shift ;;
    *@*) FAKE_DEST=$1; export FAKE_DEST; shift; break ;;
    *) echo "fake ssh: unexpected $1" >&2; exit 255 ;;
  esac
done
[ -n "$FAKE_SSH_DOWN" ] && exit 255
# ssh that stops reading at once and fails a moment later: the writes see EPIPE first.
[ -n "$FAKE_SSH_DROP" ] && { exec 0<&-; sleep 0.3; exit 255; }
exec /bin/sh -c "$*"
`, { mode: 0o755 });
  // barman: keep its arguments and its stdin; exit with FAKE_RC.
  await fsp.writeFile(path.join(bin, 'barman'), `#!/bin/sh
n=$(ls "$FAKE_OUT" | grep -c '^args\\.')
printf '%s\\n' "$FAKE_DEST" > "$FAKE_OUT/dest.$n"
printf '%s\\n' "$@" > "$FAKE_OUT/args.$n"
cat > "$FAKE_OUT/stream.$n"
[ -n "$FAKE_MSG" ] && echo "$FAKE_MSG" >&2
[ -n "$FAKE_RC_FIRST" ] && [ "$n" = 0 ] && exit "$FAKE_RC_FIRST"
exit \${FAKE_RC:-0}
`, { mode: 0o755 });
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${bin}:${NODE_DIR}:/usr/bin:/bin`, FAKE_OUT: out };
  delete env.NODE_TEST_CONTEXT;
  return { bin, out, env };
}

function runLauncher(args: string[], env: NodeJS.ProcessEnv): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(LAUNCHER, args, { env, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function streams(fake: Fake): Promise<Array<Array<{ name: string; data: Buffer }>>> {
  return (await sessions(fake)).map((x) => x.members);
}

/** Every put-wal session in order: the ssh destination it went to, and the tar members. */
async function sessions(fake: Fake): Promise<Array<{ dest: string; members: Array<{ name: string; data: Buffer }> }>> {
  const count = (await fsp.readdir(fake.out)).filter((n) => n.startsWith('stream.')).length;
  const out: Array<{ dest: string; members: Array<{ name: string; data: Buffer }> }> = [];
  for (let n = 0; n < count; n++) {
    out.push({
      dest: (await fsp.readFile(path.join(fake.out, `dest.${n}`), 'utf8')).trim(),
      members: await untar(await fsp.readFile(path.join(fake.out, `stream.${n}`))),
    });
  }
  return out;
}

/** A fake remote, an empty spool, and a pg_wal whose segments 1..n are all `.ready`. */
async function readyBacklog(n: number) {
  const fake = await fakeRemote();
  const spool = path.join(await freshDir('spool'), 'spool');
  const files: Record<string, string> = {};
  const status: Record<string, 'ready'> = {};
  for (let i = 1; i <= n; i++) {
    files[seg(i)] = `segment ${i}`;
    status[seg(i)] = 'ready';
  }
  return { fake, spool, files, status, wal: await fakePgWal(files, status) };
}

describe('barman-wal-archive end to end (fake ssh)', () => {
  it('pushes ahead, writes markers, and later calls return through the sh fast path', async () => {
    const { fake, spool, wal } = await readyBacklog(5);
    const common = ['--spool-dir', spool, '-c', '/etc/my barman.conf', '--ssh-config', '/dev/null', 'backup', "pg 'one'"];
    let r = runLauncher([...common, path.join(wal, seg(1))], fake.env);
    assert.equal(r.code, 0, r.stderr);
    const [first] = await streams(fake);
    assert.deepEqual(first?.map((e) => e.name), [seg(1), seg(2), seg(3), seg(4), seg(5), 'SHA256SUMS']);
    assert.deepEqual((await fsp.readFile(path.join(fake.out, 'args.0'), 'utf8')).split('\n'), ['--config=/etc/my barman.conf', 'put-wal', "pg 'one'", '']);
    const markerDir = path.join(spool, "pg 'one'");
    assert.deepEqual((await fsp.readdir(markerDir)).sort(), [seg(2), seg(3), seg(4), seg(5)]);

    // PostgreSQL marks seg 1 done and asks for seg 2: answered without Node (a failing fake node proves it).
    await fsp.writeFile(path.join(fake.bin, 'node'), '#!/bin/sh\necho "node must not run" >&2\nexit 99\n', { mode: 0o755 });
    const noNode = { ...fake.env, PATH: `${fake.bin}:/usr/bin:/bin` };
    const t0 = process.hrtime.bigint();
    r = runLauncher([...common, path.join(wal, seg(2))], noNode);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(process.hrtime.bigint() - t0 < 5_000_000_000n); // generous: just "did not hang"
    assert.ok(!fs.existsSync(path.join(markerDir, seg(2))), 'marker consumed');

    // seg 3 changed since it was pushed (mtime): the marker is stale, Node must run.
    const future = new Date(Date.now() + 120_000);
    await fsp.utimes(path.join(wal, seg(3)), future, future);
    r = runLauncher([...common, path.join(wal, seg(3))], noNode);
    assert.equal(r.code, 99);
    assert.match(r.stderr, /node must not run/);
    await fsp.unlink(path.join(fake.bin, 'node'));
    r = runLauncher([...common, path.join(wal, seg(3))], fake.env);
    assert.equal(r.code, 0, r.stderr);
    const all = await streams(fake);
    assert.equal(all.length, 2);
    assert.deepEqual(all[1]?.map((e) => e.name), [seg(3), seg(4), seg(5), 'SHA256SUMS']);
  });

  it('falls through to Node when the fast path cannot be trusted or does not apply', async () => {
    const fake = await fakeRemote();
    const spool = path.join(await freshDir('spool'), 'spool');
    const wal = await fakePgWal({ [seg(1)]: 'one' }, { [seg(1)]: 'ready' });
    const file = path.join(wal, seg(1));
    const dir = await prepareMarkerDir(spool, 'pg');
    const sig = statSignature(await fsp.stat(file, { bigint: true })) ?? '';
    await fsp.writeFile(path.join(fake.bin, 'node'), '#!/bin/sh\nexit 99\n', { mode: 0o755 });
    const noNode = { ...fake.env, PATH: `${fake.bin}:/usr/bin:/bin` };
    const attempt = async (args: string[], setup?: () => Promise<void>, dest = 'barman@h: '): Promise<number | null> => {
      await writeMarker(dir, seg(1), sig, dest);
      await setup?.();
      return runLauncher(args, noNode).code;
    };
    assert.equal(await attempt(['--spool-dir', spool, 'h', 'pg', file]), 0); // control: fast path works
    assert.equal(await attempt([`--spool-dir=${spool}`, '-Ubarman', '--port', '22', '--zstd', 'h', 'pg', file], undefined, 'barman@h:22 '), 0);
    // Values Node refuses never match, even a marker whose line they would spell.
    assert.equal(await attempt(['--spool-dir', spool, '--port=', 'h', 'pg', file]), 99);
    assert.equal(await attempt(['--spool-dir', spool, '--port', '1:2', 'h', 'pg', file], undefined, 'barman@h:1:2 '), 99);
    assert.equal(await attempt(['--spool-dir', spool, '-U', 'a@b', 'h', 'pg', file], undefined, 'a@b@h: '), 99);
    assert.equal(await attempt(['--spool-dir', spool, '-U', 'barman', 'h x', 'pg', file], undefined, 'barman@h x: '), 99);
    assert.equal(await attempt(['--spool-dir', spool, '--test', 'h', 'pg', file]), 99);
    assert.equal(await attempt(['--spool-dir', spool, '--unknown', 'h', 'pg', file]), 99);
    assert.equal(await attempt(['--spool-dir', spool, 'h', 'pg/x', file]), 99);
    assert.equal(await attempt(['--spool-dir', spool, 'h', 'pg']), 99);
    assert.equal(await attempt(['--spool-dir', spool, 'h', 'pg', file], () => fsp.chmod(dir, 0o770)), 99);
    assert.equal(await attempt(['--spool-dir', spool, 'h', 'pg', file], () => fsp.chmod(dir, 0o755)), 0, 'nobody else can write into 0755');
    assert.equal(await attempt(['--spool-dir', spool, 'h', 'pg', file], () => fsp.chmod(spool, 0o1777)), 99);
    await fsp.chmod(spool, 0o700);
    await fsp.chmod(dir, 0o700);
    assert.equal(await attempt(['--spool-dir', spool, 'h', 'pg', file], () => fsp.writeFile(path.join(dir, seg(1)), '1 2 3\n')), 99);
    // The old format (no destination) is not trusted any more.
    assert.equal(await attempt(['--spool-dir', spool, 'h', 'pg', file], () => fsp.writeFile(path.join(dir, seg(1)), `${sig}\n`)), 99);
  });

  it('accepts a marker written by Node only for the very destination it names', async () => {
    const spool = path.join(await freshDir('spool'), 'spool');
    const wal = await fakePgWal({ [seg(1)]: 'one' }, { [seg(1)]: 'ready' });
    const file = path.join(wal, seg(1));
    const dir = await prepareMarkerDir(spool, 'pg');
    const sig = statSignature(await fsp.stat(file, { bigint: true })) ?? '';
    const fake = await fakeRemote();
    await fsp.writeFile(path.join(fake.bin, 'node'), '#!/bin/sh\nexit 99\n', { mode: 0o755 });
    const noNode = { ...fake.env, PATH: `${fake.bin}:/usr/bin:/bin` };
    // Option spellings (and the host) a call may use; the destination is what Node makes of them.
    const variants: string[][] = [
      ['h'],
      ['--user', 'barman', 'h'],
      ['--config=', 'h'],
      ['h2'],
      ['-U', 'bkp', 'h'],
      ['--user=bkp', 'h'],
      ['-Ubkp', 'h'],
      ['--port', '2222', 'h'],
      ['--port=2222', 'h'],
      ['--port', '22', 'h'],
      ['-c', '/etc/b.conf', 'h'],
      ['--config=/etc/b.conf', 'h'],
      ['-c/etc/b.conf', 'h'],
      ['--config', '/etc/my barman.conf', 'h'],
      ['-U', 'bkp', '--port=22', '-c', "/it's here.conf", '--zstd', '--batch', '4', '--sessions', '2', 'h'],
      ['--ssh-config', '/dev/null', 'h', '--user=bkp'],
      ['--workers', '1', '--compression-level=low', '--lz4', 'h', '--workers=2'],
    ];
    const destOf = (v: string[]) => {
      const o = parseArgs([...v, 'pg', file]).options;
      return destinationKey({ ...o.target, config: o.config });
    };
    const dests = variants.map(destOf);
    assert.equal(new Set(dests).size, 8, dests.join(' | '));
    for (const [i, writer] of variants.entries()) {
      for (const [j, caller] of variants.entries()) {
        await writeMarker(dir, seg(1), sig, dests[i] as string);
        const r = runLauncher(['--spool-dir', spool, ...caller, 'pg', file], noNode);
        const same = dests[i] === dests[j];
        assert.equal(r.code, same ? 0 : 99, `marker of [${writer.join(' ')}], call with [${caller.join(' ')}]`);
        assert.equal(fs.existsSync(path.join(dir, seg(1))), !same, 'consumed only when accepted');
      }
    }
  });

  it('ships every segment to both servers of "A && B" and to a new host after a move', async () => {
    const { fake, spool, files, status, wal } = await readyBacklog(5);
    const call = (host: string, i: number) => runLauncher(['--spool-dir', spool, host, 'pg', path.join(wal, seg(i))], fake.env);
    // archive_command = 'barman-wal-archive A pg %p && barman-wal-archive B pg %p', backlog of 5.
    for (let i = 1; i <= 5; i++) {
      for (const host of ['hostA', 'hostB']) {
        const r = call(host, i);
        assert.equal(r.code, 0, `${host} ${seg(i)}: ${r.stderr}`);
      }
    }
    const received = (host: string, list: Awaited<ReturnType<typeof sessions>>) =>
      list.filter((x) => x.dest === `barman@${host}`).flatMap((x) => x.members.map((m) => m.name).filter((n) => n !== 'SHA256SUMS'));
    let all = await sessions(fake);
    // A pushed ahead once; B never took A's markers (each of its calls sent its own segment).
    assert.deepEqual(received('hostA', all), [1, 2, 3, 4, 5].map((i) => seg(i)));
    assert.deepEqual(received('hostB', all), [1, 2, 3, 4, 5].map((i) => seg(i)));
    assert.equal(all.filter((x) => x.dest === 'barman@hostA').length, 1);
    assert.deepEqual(await fsp.readdir(path.join(spool, 'pg')), []);

    // archive_command moved from A to C while A's markers were pending: C gets every segment.
    const wal2 = await fakePgWal(files, status);
    const call2 = (host: string, i: number) => runLauncher(['--spool-dir', spool, host, 'pg', path.join(wal2, seg(i))], fake.env);
    assert.equal(call2('hostA', 1).code, 0);
    for (let i = 2; i <= 5; i++) assert.equal(call2('hostC', i).code, 0);
    all = (await sessions(fake)).slice(all.length);
    assert.deepEqual(received('hostC', all), [2, 3, 4, 5].map((i) => seg(i)));
  });

  it('maps failures: no markers, remote code passed on, ssh 255 → 3', async () => {
    const fake = await fakeRemote();
    const spool = path.join(await freshDir('spool'), 'spool');
    const wal = await fakePgWal({ [seg(1)]: 'a', [seg(2)]: 'b' }, { [seg(1)]: 'ready', [seg(2)]: 'ready' });
    const args = ['--spool-dir', spool, 'h', 'pg', path.join(wal, seg(1))];
    let r = runLauncher(args, { ...fake.env, FAKE_RC: '1', FAKE_MSG: "ERROR: Bad file checksum" });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Bad file checksum/);
    assert.deepEqual(await fsp.readdir(path.join(spool, 'pg')), []);
    for (const how of ['FAKE_SSH_DOWN', 'FAKE_SSH_DROP']) {
      r = runLauncher(args, { ...fake.env, [how]: '1' });
      assert.equal(r.code, 3, `${how}: ${r.stderr}`);
      assert.equal(r.stderr, 'ERROR: Connection problem with ssh\n');
      assert.deepEqual(await fsp.readdir(path.join(spool, 'pg')), []);
    }
    // put-wal refuses the batch but takes the requested segment alone: success, no markers.
    const fake2 = await fakeRemote();
    r = runLauncher(args, { ...fake2.env, FAKE_RC_FIRST: '1' });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /sending 000000010000000000000001 alone/);
    assert.deepEqual((await streams(fake2)).map((s) => s.map((e) => e.name)), [[seg(1), seg(2), 'SHA256SUMS'], [seg(1), 'SHA256SUMS']]);
    assert.deepEqual(await fsp.readdir(path.join(spool, 'pg')), []);
    // --batch 1: no push-ahead, spool untouched.
    const spool2 = path.join(await freshDir('spool'), 'none');
    r = runLauncher(['--batch', '1', '--spool-dir', spool2, 'h', 'pg', path.join(wal, seg(1))], fake.env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(fs.existsSync(spool2), false);
    const all = await streams(fake);
    assert.deepEqual(all.at(-1)?.map((e) => e.name), [seg(1), 'SHA256SUMS']);
  });

  it('--test runs put-wal --test remotely and exits with its code', async () => {
    const fake = await fakeRemote();
    let r = runLauncher(['-t', 'h', 'pg', '/nonexistent'], fake.env);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await fsp.readFile(path.join(fake.out, 'args.0'), 'utf8')).split('\n'), ['put-wal', 'pg', '--test', '']);
    r = runLauncher(['--test', 'h', 'pg', 'x'], { ...fake.env, FAKE_RC: '4' });
    assert.equal(r.code, 4);
  });
});
