/**
 * The pure parts of remote recovery: quoting for the remote shell, the ssh and rsync argument
 * vectors, the remote check script (run here through a fake `ssh` that behaves like the real
 * one: it joins its arguments and hands them to a shell) and the remote get-wal setting.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CHECK_SCRIPT,
  MKDIRS_SCRIPT,
  SCRIPT_DONE,
  checkProblemMessage,
  lastErrorLine,
  parseCheckOutput,
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
import { recoveryLines } from '../../src/recovery/settings.js';
import { run } from '../../src/util/proc.js';

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
    assert.deepEqual(rsyncTreeArgs(t, '/src', '/dst'), ['-a', '-s', '-e', 'ssh postgres@db1', '--bwlimit=500', '-z', '/src/', ':/dst/']);
    assert.deepEqual(rsyncTreeArgs({ ...t, bwlimit: null, networkCompression: false }, '/src/', '/dst'), ['-a', '-s', '-e', 'ssh postgres@db1', '/src/', ':/dst/']);
  });

  it('directory skeleton: anchored excludes before the include-dirs-only filter', () => {
    const a = rsyncDirsArgs(t, '/b/data', '/pg', ['pg_wal/*', 'postmaster.pid']);
    assert.deepEqual(a.slice(-6), ['--exclude=/pg_wal/*', '--exclude=/postmaster.pid', '--include=*/', '--exclude=*', '/b/data/', ':/pg/']);
  });

  it('file buckets use a NUL-separated list; delta mode checksums and deletes', () => {
    assert.deepEqual(rsyncFilesArgs(t, '/b/data', '/pg', '/tmp/l').slice(-4), ['--from0', '--files-from=/tmp/l', '/b/data/', ':/pg/']);
    const d = rsyncTreeArgs(t, '/b', '/pg', { delta: true, excludes: ['pg_wal/*'] });
    for (const o of ['--delete', '--delete-excluded', '--checksum', '--exclude=/pg_wal/*']) assert.ok(d.includes(o), o);
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

  it('mkdirs creates 0700 directories', async () => {
    const d = path.join(tmp, 'made it', 'data');
    const res = await remote(remoteScriptWords(MKDIRS_SCRIPT, [d]));
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
