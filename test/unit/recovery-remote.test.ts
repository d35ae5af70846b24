/**
 * The pure parts of remote recovery: quoting for the remote shell, the ssh and rsync argument
 * vectors, the remote check script (run here through a fake `ssh` that behaves like the real
 * one: it joins its arguments and hands them to a shell) and the remote get-wal setting.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CHECK_SCRIPT,
  PREPARE_SCRIPT,
  RANGED_FINISH_SCRIPT,
  RANGED_WRITE_SCRIPT,
  SCRIPT_DONE,
  checkProblemMessage,
  lastErrorLine,
  parseCheckOutput,
  prepareScriptArgs,
  rangedFinishArgs,
  remoteCommandLine,
  remoteQuote,
  remoteScriptWords,
  remoteSpec,
  rsyncDirsArgs,
  rsyncFilesArgs,
  rsyncTreeArgs,
  sshInvocation,
} from '../../src/recovery/remote-shell.js';
import { NO_TARGET } from '../../src/recovery/options.js';
import { DELTA_CLEARED_FILES } from '../../src/recovery/destination.js';
import { RemoteDestination } from '../../src/recovery/remote-destination.js';
import { planRanges, rangedPushAllowed, remoteFailure } from '../../src/recovery/ranged-push.js';
import { rangedMinBytes } from '../../src/util/ranges.js';
import { recoveryLines } from '../../src/recovery/settings.js';
import { RANGED_COPY_MIN_BYTES, ddWriteWords } from '../../src/util/ranges.js';
import { run } from '../../src/util/proc.js';
import { STREAM_MALLOC_TUNABLES, streamingSshEnv } from '../../src/util/ssh-command.js';

const NASTY = [`it's`, 'a b', '$HOME', '`id`', '"q"', 'semi;colon', 'back\\slash', 'new\nline', '*', ''];

let tmp: string;
let fakeSsh: string;

before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'recovery-remote-'));
  // Like ssh: drop the destination, join the rest with spaces, give it to the remote shell.
  fakeSsh = path.join(tmp, 'fake-ssh');
  await fsp.writeFile(fakeSsh, '#!/bin/sh\nshift\nexec sh -c "$*"\n', { mode: 0o755 });
});

after(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

/** Run words on the "remote host" through the fake ssh, as the restore does. */
async function remote(words: string[]) {
  const inv = sshInvocation(`${fakeSsh} postgres@db1`, words);
  return run(inv.cmd, inv.args);
}

describe('remote quoting', () => {
  it('leaves plain words alone and single-quotes the rest', () => {
    assert.equal(remoteQuote('/var/lib/postgresql/15/main'), '/var/lib/postgresql/15/main');
    assert.equal(remoteQuote("it's"), `'it'\\''s'`);
    assert.equal(remoteQuote(''), `''`);
    assert.equal(remoteQuote('a b'), `'a b'`);
    assert.equal(remoteCommandLine(['printf', '%s', 'a b']), `printf %s 'a b'`);
  });

  it('every value survives the local shell, ssh joining and the remote shell unchanged', async () => {
    const res = await remote(['printf', '[%s]', ...NASTY]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout, NASTY.map((w) => `[${w}]`).join(''));
  });

  it('gives an ssh client carrying a stream its malloc settings, keeping the administrator\'s own (last: they win)', () => {
    assert.equal(streamingSshEnv({ PATH: '/bin' }).GLIBC_TUNABLES, STREAM_MALLOC_TUNABLES);
    assert.equal(streamingSshEnv({ PATH: '/bin' }).PATH, '/bin');
    assert.equal(streamingSshEnv({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' }).GLIBC_TUNABLES, `${STREAM_MALLOC_TUNABLES}:glibc.malloc.arena_max=2`);
    const env = { GLIBC_TUNABLES: 'x=1' };
    streamingSshEnv(env);
    assert.equal(env.GLIBC_TUNABLES, 'x=1', 'the given environment is not changed');
  });

  it('runs the admin ssh command as shell text, with the values as positional parameters', () => {
    const inv = sshInvocation('ssh -p 2222 postgres@db1', ['sh', '-c', 'echo "$1"', 'sh', "x'; rm -rf /"]);
    assert.equal(inv.cmd, '/bin/sh');
    assert.deepEqual(inv.args.slice(0, 3), ['-c', 'ssh -p 2222 postgres@db1 "$@"', 'sh']);
    assert.equal(inv.args.length, 4);
    assert.equal(inv.args[3], `sh -c 'echo "$1"' sh 'x'\\''; rm -rf /'`);
  });
});

describe('rsync arguments', () => {
  const t = { sshCommand: 'ssh postgres@db1', bwlimit: 500, networkCompression: true };

  it('pushes to :<dir>/ through the ssh command, with bwlimit and -z', () => {
    assert.equal(remoteSpec('/d'), ':/d/');
    assert.equal(remoteSpec('/d/'), ':/d/');
    assert.deepEqual(rsyncTreeArgs(t, '/src', '/dst'), ['-a', '-s', '-e', 'ssh postgres@db1', '--bwlimit=500', '-z', '--whole-file', '/src/', ':/dst/']);
    assert.deepEqual(rsyncTreeArgs({ ...t, bwlimit: null, networkCompression: false }, '/src/', '/dst'), ['-a', '-s', '-e', 'ssh postgres@db1', '--whole-file', '/src/', ':/dst/']);
  });

  it('directory skeleton: anchored excludes before the include-dirs-only filter', () => {
    const a = rsyncDirsArgs(t, '/b/data', '/pg', ['pg_wal/*', 'postmaster.pid']);
    assert.deepEqual(a.slice(-6), ['--exclude=/pg_wal/*', '--exclude=/postmaster.pid', '--include=*/', '--exclude=*', '/b/data/', ':/pg/']);
  });

  it('file buckets use a NUL-separated list; delta mode checksums and deletes', () => {
    assert.deepEqual(rsyncFilesArgs(t, '/b/data', '/pg', '/tmp/l').slice(-5), ['--whole-file', '--from0', '--files-from=/tmp/l', '/b/data/', ':/pg/']);
    const d = rsyncTreeArgs(t, '/b', '/pg', { delta: true, excludes: ['pg_wal/*'] });
    for (const o of ['--delete', '--checksum', '--exclude=/pg_wal/*']) assert.ok(d.includes(o), o);
    // excluded paths (server logs) are protected on the destination, never deleted
    assert.equal(d.includes('--delete-excluded'), false);
    assert.equal(d.includes('--whole-file'), false, 'a delta restore uses the delta algorithm');
    assert.ok(rsyncTreeArgs(t, '/b', '/pg').includes('--whole-file'), 'nothing to compute a delta against');
  });
});

describe('remote destination check script', () => {
  const check = async (pairs: [string, string][]) => {
    const res = await remote(remoteScriptWords(CHECK_SCRIPT, pairs.flat()));
    assert.equal(res.code, 0, res.stderr);
    return parseCheckOutput(res.stdout);
  };

  it('accepts absent and empty directories, with awkward names', async () => {
    const empty = path.join(tmp, `empty dir 'x' $y`);
    await fsp.mkdir(empty);
    assert.deepEqual(await check([['empty', empty], ['empty', path.join(tmp, 'new; parent', 'child')]]), []);
  });

  it('reports a non-empty directory (unless delta), a file, and a running postmaster', async () => {
    const full = path.join(tmp, 'full');
    await fsp.mkdir(full);
    await fsp.writeFile(path.join(full, 'x'), 'x');
    const file = path.join(tmp, 'plain-file');
    await fsp.writeFile(file, '');
    assert.deepEqual(await check([['empty', full], ['any', full], ['empty', file]]), [
      { index: 0, code: 'NOTEMPTY' },
      { index: 2, code: 'NOTDIR' },
    ]);
    // A live "postmaster": this test's node process does not look like postgres, a stale pid.
    const running = path.join(tmp, 'running');
    await fsp.mkdir(running);
    await fsp.writeFile(path.join(running, 'postmaster.pid'), `${process.pid}\n/x\n`);
    assert.deepEqual(await check([['any', running]]), []);
    await fsp.writeFile(path.join(running, 'postmaster.pid'), '999999999\n');
    assert.deepEqual(await check([['any', running]]), []);
    // a process whose command line says postgres
    const pm = spawn('sleep', ['60'], { argv0: 'postgres', stdio: 'ignore' });
    try {
      await fsp.writeFile(path.join(running, 'postmaster.pid'), `${pm.pid as number}\n`);
      assert.deepEqual(await check([['any', running]]), [{ index: 0, code: 'RUNNING', pid: pm.pid }]);
    } finally {
      pm.kill('SIGKILL');
    }
  });

  it('reports a parent that cannot be written', { skip: process.getuid?.() === 0 ? 'root can write anywhere' : false }, async () => {
    const ro = path.join(tmp, 'ro');
    await fsp.mkdir(ro, { mode: 0o555 });
    assert.deepEqual(await check([['empty', path.join(ro, 'sub', 'data')]]), [{ index: 0, code: 'PARENT_NOTWRITABLE' }]);
  });

  it('preparation creates 0700 directories', async () => {
    const d = path.join(tmp, 'made it', 'data');
    const res = await remote(remoteScriptWords(PREPARE_SCRIPT, prepareScriptArgs(d, 'pg_wal', [d], false, [])));
    assert.equal(res.code, 0, res.stderr);
    assert.ok(res.stdout.includes(SCRIPT_DONE));
    assert.equal((await fsp.stat(d)).mode & 0o777, 0o700);
  });

  it('parses output strictly: no marker means the script did not run', () => {
    assert.equal(parseCheckOutput('motd text\n'), null);
    assert.deepEqual(parseCheckOutput(`Welcome!\n0 RUNNING 1234\n1 NOTEMPTY\n2 BOGUS\n${SCRIPT_DONE}\n`), [
      { index: 0, code: 'RUNNING', pid: 1234 },
      { index: 1, code: 'NOTEMPTY' },
    ]);
  });

  it('one clear line per problem', () => {
    assert.equal(
      checkProblemMessage({ index: 0, code: 'RUNNING', pid: 42 }, 'destination directory', '/pg'),
      "The destination directory '/pg' on the remote host belongs to a running PostgreSQL server (PID 42): stop it first",
    );
    assert.match(checkProblemMessage({ index: 0, code: 'PARENT_NOTWRITABLE' }, 'destination directory', '/pg'), /permission denied$/);
    assert.equal(lastErrorLine('rsync: [sender] write error\nrsync error: error in rsync protocol (code 12)\n'), 'rsync: [sender] write error');
  });
});

describe('remote destination preparation (PREPARE_SCRIPT)', () => {
  const prepare = async (dest: string, delta: boolean, extraDirs: string[] = []) => {
    const res = await remote(remoteScriptWords(PREPARE_SCRIPT, prepareScriptArgs(dest, 'pg_wal', [dest, ...extraDirs], delta, DELTA_CLEARED_FILES)));
    assert.equal(res.code, 0, res.stderr);
    assert.ok(res.stdout.includes(SCRIPT_DONE));
  };

  it('creates the directories and a real pg_wal/archive_status, 0700', async () => {
    const dest = path.join(tmp, 'prep fresh', 'data');
    const tbs = path.join(tmp, 'prep fresh', 'tbs');
    await prepare(dest, false, [tbs]);
    for (const d of [dest, tbs, path.join(dest, 'pg_wal'), path.join(dest, 'pg_wal', 'archive_status')]) {
      const st = await fsp.lstat(d);
      assert.ok(st.isDirectory(), d);
      assert.equal(st.mode & 0o777, 0o700, d);
    }
  });

  it('replaces a pg_wal symlink by a directory without touching its target', async () => {
    const dest = path.join(tmp, 'prep link', 'data');
    const target = path.join(tmp, 'prep link', 'someone-elses-wal');
    await fsp.mkdir(target, { recursive: true });
    await fsp.writeFile(path.join(target, '000000010000000000000001'), 'live');
    await fsp.mkdir(dest, { recursive: true });
    await fsp.symlink(target, path.join(dest, 'pg_wal'));
    for (const delta of [false, true]) {
      await prepare(dest, delta);
      assert.ok((await fsp.lstat(path.join(dest, 'pg_wal'))).isDirectory());
      assert.deepEqual(await fsp.readdir(target), ['000000010000000000000001']);
      await fsp.rm(path.join(dest, 'pg_wal'), { recursive: true });
      await fsp.symlink(target, path.join(dest, 'pg_wal'));
    }
  });

  it('delta: clears signal files, old WAL and tablespace links, keeps the server logs and data', async () => {
    const dest = path.join(tmp, 'prep delta', 'data');
    for (const f of ['log/postgresql.log', 'pg_log/old.log', 'base/1/1259', 'pg_wal/000000010000000000000009', 'pg_wal/archive_status/000000010000000000000009.ready', ...DELTA_CLEARED_FILES]) {
      await fsp.mkdir(path.dirname(path.join(dest, f)), { recursive: true });
      await fsp.writeFile(path.join(dest, f), 'x');
    }
    await fsp.mkdir(path.join(dest, 'pg_tblspc'));
    await fsp.symlink('/nowhere', path.join(dest, 'pg_tblspc', '16385'));
    // not a delta: nothing removed
    await prepare(dest, false);
    assert.equal(existsSync(path.join(dest, 'recovery.signal')), true);
    await prepare(dest, true);
    for (const f of DELTA_CLEARED_FILES) assert.equal(existsSync(path.join(dest, f)), false, f);
    assert.deepEqual(await fsp.readdir(path.join(dest, 'pg_wal')), ['archive_status']);
    assert.deepEqual(await fsp.readdir(path.join(dest, 'pg_wal', 'archive_status')), []);
    assert.deepEqual(await fsp.readdir(path.join(dest, 'pg_tblspc')), []);
    for (const f of ['log/postgresql.log', 'pg_log/old.log', 'base/1/1259']) assert.equal(existsSync(path.join(dest, f)), true, f);
  });
});

describe('RemoteDestination through a fake ssh: rsync backup whose pg_wal is a symlink', () => {
  it('restores the WAL into a real pg_wal, never into the link target', async () => {
    const base = path.join(tmp, 'linked-wal');
    const backup = path.join(base, 'backup', 'data');
    const elsewhere = path.join(base, 'other-cluster-pg_wal');
    const dest = path.join(base, 'restored');
    await fsp.mkdir(path.join(backup, 'base', '1'), { recursive: true });
    await fsp.mkdir(elsewhere, { recursive: true });
    await fsp.writeFile(path.join(backup, 'PG_VERSION'), '15\n');
    await fsp.writeFile(path.join(backup, 'base', '1', '1259'), Buffer.alloc(8192, 1));
    await fsp.symlink(elsewhere, path.join(backup, 'pg_wal'));
    const archive = path.join(base, 'wals');
    await fsp.mkdir(archive, { recursive: true });
    const wal = '000000010000000000000002';
    await fsp.writeFile(path.join(archive, wal), Buffer.alloc(1024, 7));

    const d = new RemoteDestination(
      { dest, tablespaces: [], walName: 'pg_wal', backupId: '20240101T000000', stagingWal: null },
      { sshCommand: `${fakeSsh} postgres@db1`, bwlimit: null, networkCompression: false, stagingBase: path.join(base, 'staging'), env: process.env, retryTimes: 0, retrySleepSeconds: 0 },
    );
    try {
      await d.check(false);
      await d.copyBase({ dataDir: backup, tarFormat: false, tablespaceDir: () => '/nonexistent' }, { delta: false, workers: 2, env: process.env });
      assert.ok((await fsp.lstat(path.join(dest, 'pg_wal'))).isDirectory(), 'pg_wal is a real directory before the WAL is sent');
      await d.placeWals([{ name: wal, path: path.join(archive, wal) }], {
        walDest: path.join(dest, 'pg_wal'),
        doneFiles: true,
        workers: 1,
        custom: { decompressionFilter: null, magic: null, unidentifiedIsCustom: false },
      });
      await d.finish([], null);
    } finally {
      await d.cleanup();
    }
    assert.deepEqual(await fsp.readdir(elsewhere), [], 'nothing written into the link target');
    assert.ok((await fsp.lstat(path.join(dest, 'pg_wal'))).isDirectory());
    assert.deepEqual((await fsp.readFile(path.join(dest, 'pg_wal', wal))).length, 1024);
    assert.deepEqual(await fsp.readdir(path.join(dest, 'pg_wal', 'archive_status')), [`${wal}.done`]);
    assert.equal((await fsp.readFile(path.join(dest, 'base', '1', '1259'))).length, 8192);
  });

});

describe('remote get-wal restore_command', () => {
  const base = {
    version: 150000,
    serverName: 'pg',
    target: NO_TARGET,
    getWal: true,
    standbyMode: false,
    walDir: null,
    barmanCommand: ['barman'],
    barmanUser: 'barman',
  };

  it('calls barman-wal-restore with the barman host, port and parallel jobs', () => {
    const lines = recoveryLines({ ...base, remoteGetWal: { barmanHost: 'backup.example.com', port: 2222, parallel: 4 } });
    assert.match(lines[0] as string, /barman-cli/);
    assert.equal(lines[1], "restore_command = 'barman-wal-restore -P -U barman --port 2222 backup.example.com pg %f %p -p 4'");
    const plain = recoveryLines({ ...base, remoteGetWal: { barmanHost: 'bk', port: null, parallel: 1 } });
    assert.equal(plain[1], "restore_command = 'barman-wal-restore -P -U barman bk pg %f %p'");
  });
});

describe('ranged push of big files', () => {
  it('is used with several jobs only, never for a delta restore, a bandwidth limit or -z', () => {
    const o = { workers: 2, delta: false, bwlimit: null, networkCompression: false };
    assert.equal(rangedPushAllowed(o), true);
    assert.equal(rangedPushAllowed({ ...o, workers: 1 }), false);
    assert.equal(rangedPushAllowed({ ...o, delta: true }), false);
    assert.equal(rangedPushAllowed({ ...o, bwlimit: 1000 }), false);
    assert.equal(rangedPushAllowed({ ...o, networkCompression: true }), false);
  });

  it('reads its threshold from BARMAN_TS_RANGED_MIN_BYTES, refuses nonsense', () => {
    assert.equal(rangedMinBytes({}), RANGED_COPY_MIN_BYTES);
    assert.equal(rangedMinBytes({ BARMAN_TS_RANGED_MIN_BYTES: '' }), RANGED_COPY_MIN_BYTES);
    assert.equal(rangedMinBytes({ BARMAN_TS_RANGED_MIN_BYTES: '4096' }), 4096);
    for (const bad of ['0', '-1', '1.5', 'lots']) assert.throws(() => rangedMinBytes({ BARMAN_TS_RANGED_MIN_BYTES: bad }), /Invalid BARMAN_TS_RANGED_MIN_BYTES/);
  });

  it('plans ranges covering each big file once, one set per job, small files left to rsync', () => {
    const mib = 1024 * 1024;
    const { ranged, jobs } = planRanges([{ rel: 'base/5/1', size: 10 * mib + 3 }, { rel: 'base/5/2', size: mib }, { rel: 'base/5/3', size: 4 * mib }], '/b/data', '/r/data', 3, 4 * mib);
    assert.deepEqual(ranged.map((f) => f.rel), ['base/5/1', 'base/5/3']);
    const of1 = jobs.filter((j) => j.local === '/b/data/base/5/1');
    assert.equal(of1.length, 3);
    assert.ok(of1.every((j) => j.remote === '/r/data/base/5/1'));
    let next = 0;
    for (const j of of1) {
      assert.equal(j.range.offset, next);
      next += j.range.length;
    }
    assert.equal(next, 10 * mib + 3);
  });

  it('formats mode and nanosecond mtime for the finishing script', () => {
    assert.deepEqual(rangedFinishArgs([{ remote: "/r/it's", size: 7, mode: 0o100600, mtimeNs: 1_700_000_000_000_000_042n }]), ['7', '0600', '@1700000000.000000042', "/r/it's"]);
  });

  it('says "Cannot reach the remote host" for ssh failures only', () => {
    assert.match(remoteFailure('ssh db1', 255, 'Connection refused', 'Writing x').message, /^Cannot reach the remote host with 'ssh db1' \(exit code 255\): Connection refused$/);
    assert.match(remoteFailure('ssh db1', 1, 'No space left on device', 'Writing x').message, /^Writing x on the remote host failed \(exit code 1\): No space left on device$/);
  });

  it('write and finishing scripts: ranges in any order make one 0600 file, then size checked, mode and mtime set', async () => {
    const dir = path.join(tmp, 'ranged scripts');
    await fsp.mkdir(dir, { recursive: true });
    const f = path.join(dir, `big 'one'`);
    const inv = (offset: number) => sshInvocation(`${fakeSsh} postgres@db1`, remoteScriptWords(RANGED_WRITE_SCRIPT, ddWriteWords(f, offset)));
    for (const [offset, text] of [[3, 'de'], [0, 'abc']] as const) {
      const i = inv(offset);
      const r = await run(i.cmd, i.args, { input: text });
      assert.equal(r.code, 0, r.stderr);
    }
    assert.equal(await fsp.readFile(f, 'utf8'), 'abcde');
    assert.equal((await fsp.stat(f)).mode & 0o777, 0o600);
    await fsp.truncate(f, 0);
    const meta = { remote: f, size: 5, mode: 0o640, mtimeNs: 1_600_000_000_123_456_789n };
    let res = await remote(remoteScriptWords(RANGED_FINISH_SCRIPT, rangedFinishArgs([meta])));
    assert.notEqual(res.code, 0, 'a file without all its bytes is an error');
    assert.match(res.stderr, /has 0 bytes instead of 5/);
    await fsp.writeFile(f, 'abcde');
    res = await remote(remoteScriptWords(RANGED_FINISH_SCRIPT, rangedFinishArgs([meta])));
    assert.equal(res.code, 0, res.stderr);
    assert.ok(res.stdout.includes(SCRIPT_DONE));
    const st = await fsp.stat(f, { bigint: true });
    assert.equal(Number(st.mode & 0o777n), 0o640);
    assert.equal(st.mtimeNs, 1_600_000_000_123_456_789n);
  });

  const bigBackup = async (base: string) => {
    const backup = path.join(base, 'backup', 'data');
    await fsp.mkdir(path.join(backup, 'base', '5'), { recursive: true });
    await fsp.writeFile(path.join(backup, 'PG_VERSION'), '15\n');
    const big = Buffer.alloc(5 * 1024 * 1024 + 12345);
    for (let i = 0; i + 4 <= big.length; i += 4) big.writeUInt32LE(i, i);
    await fsp.writeFile(path.join(backup, 'base', '5', '16397'), big, { mode: 0o600 });
    await fsp.utimes(path.join(backup, 'base', '5', '16397'), 1_650_000_000.25, 1_650_000_000.25);
    await fsp.writeFile(path.join(backup, 'base', '5', '1259'), Buffer.alloc(8192, 3));
    return { backup, big };
  };
  const destination = (base: string, sshCommand: string, env: NodeJS.ProcessEnv) =>
    new RemoteDestination(
      { dest: path.join(base, 'restored'), tablespaces: [], walName: 'pg_wal', backupId: '20240101T000000', stagingWal: null },
      { sshCommand, bwlimit: null, networkCompression: false, stagingBase: path.join(base, 'staging'), env, retryTimes: 0, retrySleepSeconds: 0 },
    );

  it('RemoteDestination with 3 jobs pushes a big file in ranges: same bytes, mode and mtime', async () => {
    const base = path.join(tmp, 'ranged-ok');
    const { backup, big } = await bigBackup(base);
    // a log of the remote commands: the big file must go through dd, not rsync
    const logged = path.join(base, 'ssh-log');
    const ssh = path.join(base, 'logging-ssh');
    await fsp.writeFile(ssh, `#!/bin/sh\nshift\nprintf '%s\\n' "$*" | tr '\\n' ' ' >> '${logged}'; echo >> '${logged}'\nexec sh -c "$*"\n`, { mode: 0o755 });
    const d = destination(base, `${ssh} postgres@db1`, { ...process.env, BARMAN_TS_RANGED_MIN_BYTES: String(1024 * 1024) });
    let stats;
    try {
      stats = await d.copyBase({ dataDir: backup, tarFormat: false, tablespaceDir: () => '/nonexistent' }, { delta: false, workers: 3, env: process.env });
    } finally {
      await d.cleanup();
    }
    const out = path.join(base, 'restored', 'base', '5', '16397');
    assert.ok((await fsp.readFile(out)).equals(big));
    const [a, b] = [await fsp.stat(path.join(backup, 'base', '5', '16397')), await fsp.stat(out)];
    assert.equal(b.mode & 0o7777, a.mode & 0o7777);
    assert.equal(b.mtimeMs, a.mtimeMs);
    assert.equal((await fsp.readFile(path.join(base, 'restored', 'base', '5', '1259'))).length, 8192);
    assert.equal(stats.files, 3);
    assert.equal(stats.bytes, big.length + 8192 + 3);
    const log = await fsp.readFile(logged, 'utf8');
    // occurrences, not lines: the three sessions log at the same time and their lines may interleave
    assert.equal(log.split(' dd of=').length - 1, 3, log);
  });

  it('a range that cannot be written fails the push with one line naming the host problem', async () => {
    const base = path.join(tmp, 'ranged-cut');
    const { backup } = await bigBackup(base);
    // ssh dies (255) on the second range; the rest goes through
    const ssh = path.join(base, 'cut-ssh');
    await fsp.writeFile(ssh, `#!/bin/sh\nshift\ncase "$*" in *seek=0*) ;; *"dd of="*) exit 255;; esac\nexec sh -c "$*"\n`, { mode: 0o755 });
    const d = destination(base, `${ssh} postgres@db1`, { ...process.env, BARMAN_TS_RANGED_MIN_BYTES: String(1024 * 1024) });
    try {
      await assert.rejects(
        d.copyBase({ dataDir: backup, tarFormat: false, tablespaceDir: () => '/nonexistent' }, { delta: false, workers: 2, env: process.env }),
        /^BarmanError: Cannot reach the remote host with '.*cut-ssh postgres@db1' \(exit code 255\)$/,
      );
    } finally {
      await d.cleanup();
    }
  });

  it('a range lost without an error is caught by the size check, with one line', async () => {
    const base = path.join(tmp, 'ranged-lost');
    const { backup } = await bigBackup(base);
    // the later ranges "succeed" without writing anything
    const ssh = path.join(base, 'lossy-ssh');
    await fsp.writeFile(ssh, `#!/bin/sh\nshift\ncase "$*" in *seek=0*) ;; *"dd of="*) cat > /dev/null; exit 0;; esac\nexec sh -c "$*"\n`, { mode: 0o755 });
    const d = destination(base, `${ssh} postgres@db1`, { ...process.env, BARMAN_TS_RANGED_MIN_BYTES: String(1024 * 1024) });
    try {
      await assert.rejects(
        d.copyBase({ dataDir: backup, tarFormat: false, tablespaceDir: () => '/nonexistent' }, { delta: false, workers: 2, env: process.env }),
        /^BarmanError: Finishing the ranged copy on the remote host failed \(exit code 1\): .*16397 has \d+ bytes instead of 5255225$/,
      );
    } finally {
      await d.cleanup();
    }
  });
});
