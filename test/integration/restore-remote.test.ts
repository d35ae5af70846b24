/**
 * `barman recover --remote-ssh-command` against a real sshd on 127.0.0.1: the barman user
 * restores, through `ssh -F <cfg> postgres@127.0.0.1`, into directories that only postgres can
 * write (so every file really goes through the ssh session as another OS user). The catalog is
 * built by hand in test/helpers/restore-fixture.ts: pg_basebackup backups (plain with a
 * tablespace, and tar+gzip) of a PostgreSQL 15 cluster, and its archived WAL in wals/.
 */
import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { cleanupAll, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { BACKUP_ID, BARMAN_JS, TAR_BACKUP_ID, assertCompleteRestore, createRestoreFixture, type RestoreFixture } from '../helpers/restore-fixture.js';
import { startSshd, type Sshd } from '../helpers/sshd.js';
import { BARMAN_USER, POSTGRES_USER, chownR, ensureBarmanUser, lookupUser, makeTempDir, runAs } from '../helpers/system.js';

const TIMEOUT = { timeout: 240_000 };
/** BARMAN_TS_RANGED_MIN_BYTES of the ranged tests: the fixture's catalog files of this size and more. */
const RANGED_TEST_MIN = 256 * 1024;

describe('barman recover --remote-ssh-command', { timeout: 600_000 }, () => {
  let sshd: Sshd;
  let sshCommand: string;
  let conf: string;
  let tbsOid: number;
  let targetTime: string;
  let postgresUid: number;
  let barman: RestoreFixture['barman'];

  /** Directories on the "remote" side: a parent only postgres may write into. */
  async function remoteDirs(): Promise<{ parent: string; dest: string; tbs: string }> {
    const parent = await makeTempDir('remote-restore-', { owner: POSTGRES_USER, mode: 0o755 });
    return { parent, dest: path.join(parent, 'data'), tbs: path.join(parent, 'tbs-moved') };
  }

  /** Exactly one non-empty line on stderr, an ERROR. */
  function assertOneErrorLine(stderr: string, re: RegExp): void {
    const lines = stderr.split('\n').filter((l) => l.trim() !== '');
    assert.equal(lines.length, 1, `expected one line on stderr, got:\n${stderr}`);
    assert.match(lines[0] as string, /^ERROR: /);
    assert.match(lines[0] as string, re);
  }

  before(async () => {
    await ensureBarmanUser();
    postgresUid = (lookupUser(POSTGRES_USER) as { uid: number }).uid;
    sshd = await startSshd();
    // barman's key may log in as postgres: the recovery host's PostgreSQL user
    const cfg = await sshd.clientConfigFor(BARMAN_USER, [POSTGRES_USER]);
    sshCommand = `ssh -F ${cfg} ${POSTGRES_USER}@127.0.0.1`;
    ({ conf, tbsOid, targetTime, barman } = await createRestoreFixture({ description: 'remote restore test', barmanTimeoutMs: 300_000 }));
  });

  after(async () => {
    await sshd?.stop();
    await cleanupAll();
  });

  test('remote PITR with a relocated tablespace: files written as postgres, the cluster starts at the target', TIMEOUT, async () => {
    const { dest, tbs } = await remoteDirs();
    const res = await barman([
      'recover', 'pg', BACKUP_ID, dest,
      '--remote-ssh-command', sshCommand,
      '--tablespace', `tbs1:${tbs}`,
      '--target-time', targetTime, '--target-action', 'promote',
      '--jobs', '3',
    ]);
    assert.equal(res.code, 0, `${res.stderr}${res.stdout}\n--- sshd ---\n${sshd.log().slice(-2000)}`);
    assert.match(res.stdout, new RegExp(`^Starting remote restore for server pg using backup ${BACKUP_ID}$`, 'm'));
    assert.match(res.stdout, new RegExp(`^Destination directory: ${dest}$`, 'm'));
    // `recover` ends as Barman 3.4 does.
    assert.match(res.stdout, /^Recovery completed \(start time: .+, elapsed time: .+\)$/m);
    assert.match(res.stdout, /^Your PostgreSQL server has been successfully prepared for recovery!$/m);
    assert.match(res.stdout, /^postgresql\.conf line \d+: archive_command = false$/m);

    // everything went through the ssh session as postgres
    for (const p of [dest, path.join(dest, 'PG_VERSION'), path.join(dest, 'recovery.signal'), tbs, path.join(dest, 'barman_wal')]) {
      assert.equal((await fs.lstat(p)).uid, postgresUid, `${p} should belong to postgres`);
    }
    assert.equal(((await fs.stat(dest)).mode & 0o777).toString(8), '700');
    assert.equal(await fs.readlink(path.join(dest, 'pg_tblspc', String(tbsOid))), tbs);
    assert.equal(existsSync(path.join(dest, `backup_manifest.${BACKUP_ID}`)), true);
    assert.equal(existsSync(path.join(dest, '.barman-recover.info')), true);
    assert.equal(existsSync(path.join(dest, 'postgresql.conf.origin')), true);
    assert.ok((await fs.readdir(path.join(dest, 'barman_wal'))).length > 0);
    assert.equal(existsSync(path.join(dest, 'pg_wal', 'archive_status')), true);
    const auto = await fs.readFile(path.join(dest, 'postgresql.auto.conf'), 'utf8');
    assert.match(auto, /^recovery_target_time = '.+'$/m);
    assert.ok(auto.includes(`restore_command = 'cp ${path.join(dest, 'barman_wal')}/%f %p'`), auto);

    const { cluster, outcome } = await startRecoveredCluster(dest);
    assert.equal(outcome, 'primary');
    assert.equal(await cluster.psql('SELECT count(*) FROM t'), '2000');
    assert.equal(await cluster.psql("SELECT count(*) FROM t WHERE v = 'second'"), '1000');
    assert.equal(await cluster.psql("SELECT count(*) FROM t WHERE v = 'third'"), '0');
    assert.equal(await cluster.psql('SELECT count(*) FROM t2'), '100');
    assert.equal(await cluster.psql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'tbs1'"), tbs);
    assert.ok((await fs.readdir(tbs)).some((n) => n.startsWith('PG_15_')), 'the tablespace data lives in the new location');
    await cluster.destroy();
  });

  test('remote full restore of a compressed tar backup, staged locally and removed', TIMEOUT, async () => {
    const { dest, tbs } = await remoteDirs();
    const staging = await makeTempDir('staging-', { owner: BARMAN_USER, mode: 0o700 });
    const res = await barman([
      'recover', 'pg', TAR_BACKUP_ID, dest, '--remote-ssh-command', sshCommand,
      '--tablespace', `tbs1:${tbs}`, '--staging-path', staging, '--network-compression', '--bwlimit', '100000',
    ]);
    assert.equal(res.code, 0, res.stderr + res.stdout);
    assert.deepEqual(await fs.readdir(staging), [], 'the staging directory is emptied');
    assert.equal(existsSync(path.join(dest, 'recovery.signal')), false);
    assert.equal(existsSync(path.join(dest, `backup_manifest.${TAR_BACKUP_ID}`)), true);
    assert.ok((await fs.readdir(path.join(dest, 'pg_wal', 'archive_status'))).some((n) => n.endsWith('.done')));
    await assertCompleteRestore(dest);
  });

  test('a non-empty remote destination is refused with one line, nothing written', TIMEOUT, async () => {
    const { parent, dest, tbs } = await remoteDirs();
    await runAs(POSTGRES_USER, 'mkdir', [dest], { check: true });
    await runAs(POSTGRES_USER, 'touch', [path.join(dest, 'precious')], { check: true });
    const res = await barman(['recover', 'pg', BACKUP_ID, dest, '--remote-ssh-command', sshCommand, '--tablespace', `tbs1:${tbs}`]);
    assert.equal(res.code, 1);
    assertOneErrorLine(res.stderr, /destination directory .* on the remote host is not empty/);
    assert.deepEqual(await fs.readdir(dest), ['precious']);
    assert.deepEqual((await fs.readdir(parent)).sort(), ['data']);
  });

  test('a remote directory the remote user cannot write is refused with one line', TIMEOUT, async () => {
    // owned by root, 0755: postgres can look but not create
    const parent = await makeTempDir('remote-ro-', { mode: 0o755 });
    const dest = path.join(parent, 'data');
    const res = await barman(['recover', 'pg', BACKUP_ID, dest, '--remote-ssh-command', sshCommand, '--tablespace', `tbs1:${parent}-tbs`]);
    assert.equal(res.code, 1);
    assertOneErrorLine(res.stderr, /Cannot create the destination directory .* on the remote host: permission denied/);
    assert.equal(existsSync(dest), false);
  });

  test('a copy cut half-way fails with one line and leaves nothing PostgreSQL could start from', TIMEOUT, async () => {
    const { dest, tbs } = await remoteDirs();
    // An admin-style wrapper around ssh that lets the first 3 rsync sessions through (data
    // directories, tablespace directories, the data files with -j 1) and cuts the rest.
    const dir = await makeTempDir('flaky-ssh-', { owner: BARMAN_USER, mode: 0o755 });
    const wrapper = path.join(dir, 'flaky-ssh');
    const script = [
      '#!/bin/sh',
      'case "$*" in *"rsync --server"*)',
      `  n=$(cat ${dir}/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > ${dir}/count`,
      '  if [ "$n" -gt 3 ]; then echo "simulated network failure" >&2; exit 255; fi;;',
      'esac',
      `exec ${sshCommand.replace(/ \S+@127\.0\.0\.1$/, '')} "$@"`,
      '',
    ].join('\n');
    await fs.writeFile(wrapper, script, { mode: 0o755 });
    await chownR(dir, BARMAN_USER);
    const res = await barman([
      'recover', 'pg', BACKUP_ID, dest, '--remote-ssh-command', `${wrapper} ${POSTGRES_USER}@127.0.0.1`,
      '--tablespace', `tbs1:${tbs}`, '--target-time', targetTime, '-j', '1',
    ]);
    assert.equal(res.code, 1, res.stderr + res.stdout);
    assertOneErrorLine(res.stderr, /Restore of backup .* into the remote directory .* failed: rsync of .* failed with exit code/);
    assert.equal(existsSync(path.join(dest, 'PG_VERSION')), true, 'the data files were copied');
    for (const f of ['postgresql.conf', 'postgresql.auto.conf', 'recovery.signal', 'backup_manifest.' + BACKUP_ID]) {
      assert.equal(existsSync(path.join(dest, f)), false, `${f} must not be there`);
    }
  });

  /** An admin-style wrapper around the test's ssh: `body` (sh) runs first, "$*" is the remote command. */
  async function sshWrapper(name: string, body: string[]): Promise<{ dir: string; command: string }> {
    const dir = await makeTempDir(`${name}-`, { owner: BARMAN_USER, mode: 0o755 });
    const wrapper = path.join(dir, name);
    const ssh = sshCommand.replace(/ \S+@127\.0\.0\.1$/, '');
    await fs.writeFile(wrapper, ['#!/bin/sh', `D=${dir}`, `SSH="${ssh}"`, ...body, 'exec $SSH "$@"', ''].join('\n'), { mode: 0o755 });
    await chownR(dir, BARMAN_USER);
    return { dir, command: `${wrapper} ${POSTGRES_USER}@127.0.0.1` };
  }
  /** Our CLI with a small ranged-copy threshold, so that the fixture's bigger files go in ranges. */
  const barmanRanged = (args: string[]) =>
    runAs(BARMAN_USER, process.execPath, [BARMAN_JS, '-c', conf, ...args], { timeoutMs: 300_000, env: { ...process.env, BARMAN_TS_RANGED_MIN_BYTES: String(RANGED_TEST_MIN) } });

  test('-j 4 with a small ranged threshold: big files go in byte ranges through dd, the cluster starts with the same data', TIMEOUT, async () => {
    const { dest, tbs } = await remoteDirs();
    const { dir, command } = await sshWrapper('logging-ssh', [`case "$*" in *"dd of="*) echo dd >> $D/log;; *) echo other >> $D/log;; esac`]);
    const res = await barmanRanged([
      'recover', 'pg', BACKUP_ID, dest, '--remote-ssh-command', command,
      '--tablespace', `tbs1:${tbs}`, '--target-time', targetTime, '--target-action', 'promote', '-j', '4',
    ]);
    assert.equal(res.code, 0, `${res.stderr}${res.stdout}\n--- sshd ---\n${sshd.log().slice(-2000)}`);
    const log = (await fs.readFile(path.join(dir, 'log'), 'utf8')).split('\n');
    assert.ok(log.filter((l) => l === 'dd').length >= 4, `some files should have been sent in ranges: ${log.join(',')}`);
    // every data file of the backup arrived whole, ranged or not, with its mode
    const backupData = path.join(path.dirname(conf), 'pg', 'base', BACKUP_ID, 'data');
    let ranged = 0;
    for (const rel of ['base', 'global']) {
      for (const f of await fs.readdir(path.join(backupData, rel), { recursive: true })) {
        const a = await fs.stat(path.join(backupData, rel, f)).catch(() => null);
        if (!a?.isFile()) continue;
        const b = await fs.stat(path.join(dest, rel, f));
        assert.equal(b.size, a.size, f);
        assert.equal(b.mode & 0o777, a.mode & 0o777, f);
        assert.equal(b.uid, postgresUid, f);
        if (a.size >= RANGED_TEST_MIN && f !== 'pg_control') {
          ranged++;
          assert.ok((await fs.readFile(path.join(dest, rel, f))).equals(await fs.readFile(path.join(backupData, rel, f))), `${f} differs`);
          assert.equal(Math.floor(b.mtimeMs / 1000), Math.floor(a.mtimeMs / 1000), `mtime of ${f}`);
        }
      }
    }
    assert.ok(ranged > 0);
    const { cluster, outcome } = await startRecoveredCluster(dest);
    assert.equal(outcome, 'primary');
    assert.equal(await cluster.psql('SELECT count(*) FROM t'), '2000');
    assert.equal(await cluster.psql("SELECT count(*) FROM t WHERE v = 'second'"), '1000');
    assert.equal(await cluster.psql('SELECT count(*) FROM t2'), '100');
    // the catalog files came in ranges: the server must be able to read all of them
    assert.equal(await cluster.psql("SELECT count(*) > 1000 FROM pg_proc"), 't');
    await cluster.destroy();
  });

  test('an ssh session killed during a ranged push fails with one line, nothing PostgreSQL could start from', TIMEOUT, async () => {
    const { dest, tbs } = await remoteDirs();
    // the first dd session goes through, every later one is killed under way (ssh then says 255)
    const { command } = await sshWrapper('killing-ssh', [
      'case "$*" in *"dd of="*)',
      '  n=$(cat $D/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > $D/count',
      '  if [ "$n" -gt 1 ]; then $SSH "$@" & p=$!; sleep 0.2; kill -9 $p; echo "Connection to 127.0.0.1 closed by remote host." >&2; exit 255; fi;;',
      'esac',
    ]);
    const res = await barmanRanged([
      'recover', 'pg', BACKUP_ID, dest, '--remote-ssh-command', command, '--tablespace', `tbs1:${tbs}`, '--target-time', targetTime, '-j', '4',
    ]);
    assert.equal(res.code, 1, res.stderr + res.stdout);
    assertOneErrorLine(res.stderr, /Restore of backup .* into the remote directory .* failed: Cannot reach the remote host with '.*killing-ssh .*' \(exit code 255\): Connection to 127\.0\.0\.1 closed by remote host\./);
    for (const f of ['postgresql.conf', 'postgresql.auto.conf', 'recovery.signal', 'backup_manifest.' + BACKUP_ID]) {
      assert.equal(existsSync(path.join(dest, f)), false, `${f} must not be there`);
    }
  });

  test('a wrong ssh command fails cleanly, nothing written', TIMEOUT, async () => {
    const { parent, dest, tbs } = await remoteDirs();
    // a login that is not authorised for barman's key
    const wrong = sshCommand.replace(`${POSTGRES_USER}@`, `${BARMAN_USER}@`);
    const res = await barman(['recover', 'pg', BACKUP_ID, dest, '--remote-ssh-command', wrong, '--tablespace', `tbs1:${tbs}`]);
    assert.equal(res.code, 1);
    assertOneErrorLine(res.stderr, /Cannot reach the remote host .*Permission denied/);
    assert.deepEqual(await fs.readdir(parent), []);
  });
});
