/**
 * `barman recover --remote-ssh-command` against a real sshd on 127.0.0.1: the barman user
 * restores, through `ssh -F <cfg> postgres@127.0.0.1`, into directories that only postgres can
 * write (so every file really goes through the ssh session as another OS user). The catalog is
 * built by hand as in restore-local.test.ts: pg_basebackup backups (plain with a tablespace,
 * and tar+gzip) of a PostgreSQL 15 cluster, and its archived WAL in wals/.
 */
import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { DONE, newBackupInfo, writeBackupInfoFile } from '../../src/catalog/backup-info.js';
import { manifestWalRanges, parseBackupLabel } from '../../src/postgres/backup-label.js';
import { localNowPyDateTime } from '../../src/util/pytime.js';
import { lsnToWal, parseLsn, previousSegment, walOffset, isWalName, hashDir } from '../../src/wal/names.js';
import { PgCluster, cleanupAll, pgBin, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { startSshd, type Sshd } from '../helpers/sshd.js';
import { BARMAN_USER, POSTGRES_USER, chownR, ensureBarmanUser, lookupUser, makeTempDir, runAs, sleep } from '../helpers/system.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const BARMAN_JS = path.join(ROOT, 'bin', 'barman.js');
const BACKUP_ID = '20240301T120000';
const TAR_BACKUP_ID = '20240301T130000';
const TIMEOUT = { timeout: 240_000 };

describe('barman recover --remote-ssh-command', { timeout: 600_000 }, () => {
  let src: PgCluster;
  let sshd: Sshd;
  let sshCommand: string;
  let archiveDir: string;
  let home: string;
  let conf: string;
  let tbsOid: number;
  let targetTime: string;
  let postgresUid: number;

  const barman = (args: string[]) => runAs(BARMAN_USER, process.execPath, [BARMAN_JS, '-c', conf, ...args], { timeoutMs: 300_000 });

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

    archiveDir = await makeTempDir('archive-', { owner: POSTGRES_USER, mode: 0o755 });
    src = await PgCluster.create({
      archiveMode: true,
      // Written by the administrator of the test cluster: PostgreSQL runs it through a shell.
      archiveCommand: `test ! -f ${archiveDir}/%f && cp %p ${archiveDir}/%f`,
    });
    const tbsDir = await makeTempDir('tbs-', { owner: POSTGRES_USER, mode: 0o700 });
    await src.psql(`
      CREATE TABLESPACE tbs1 LOCATION '${tbsDir}';
      CREATE TABLE t (id int PRIMARY KEY, v text);
      CREATE TABLE t2 (id int) TABLESPACE tbs1;
      INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g;
      INSERT INTO t2 SELECT generate_series(1, 100);
    `);
    tbsOid = Number(await src.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'tbs1'"));

    home = await makeTempDir('barman-home-', { owner: BARMAN_USER, mode: 0o755 });
    conf = path.join(home, 'barman.conf');
    await fs.writeFile(
      conf,
      [
        '[barman]',
        `barman_home = ${home}`,
        `barman_user = ${BARMAN_USER}`,
        `log_file = ${home}/barman.log`,
        '',
        '[pg]',
        'description = remote restore test',
        `conninfo = ${src.conninfo}`,
        'backup_method = postgres',
        'archiver = on',
        '',
      ].join('\n'),
    );
    await fs.mkdir(path.join(home, 'pg', 'base'), { recursive: true });
    await chownR(home, BARMAN_USER);

    const takeBackup = async (id: string, format: 'plain' | 'tar'): Promise<void> => {
      const base = path.join(home, 'pg', 'base', id);
      await runAs(BARMAN_USER, 'mkdir', ['-p', base], { check: true });
      const data = path.join(base, 'data');
      const args = ['-d', src.conninfo, '-D', data, '-X', 'none', '-c', 'fast'];
      if (format === 'plain') args.push('-T', `${tbsDir}=${path.join(base, String(tbsOid))}`);
      else args.push('-F', 't', '-z');
      const beginTime = localNowPyDateTime();
      await runAs(BARMAN_USER, pgBin('pg_basebackup'), args, { check: true });
      const endTime = localNowPyDateTime();
      const labelText =
        format === 'plain'
          ? await fs.readFile(path.join(data, 'backup_label'), 'utf8')
          : (await runAs('root', 'tar', ['-xzOf', path.join(data, 'base.tar.gz'), 'backup_label'], { check: true })).stdout;
      const label = parseBackupLabel(labelText);
      const range = manifestWalRanges(await fs.readFile(path.join(data, 'backup_manifest'), 'utf8')).at(-1);
      assert.ok(range);
      const endLsn = range.endLsn;
      const endWalRaw = lsnToWal(endLsn, range.timeline);
      const endWal = walOffset(endLsn) === 0 ? previousSegment(endWalRaw) : endWalRaw;
      assert.ok(parseLsn(endLsn) > parseLsn(label.startLsn));
      const info = newBackupInfo({
        status: DONE,
        backup_label: labelText,
        begin_time: beginTime,
        end_time: endTime,
        begin_wal: label.startWal,
        end_wal: endWal,
        begin_xlog: label.startLsn,
        end_xlog: endLsn,
        begin_offset: walOffset(label.startLsn),
        end_offset: walOffset(endLsn),
        timeline: label.timeline,
        version: Number(await src.psql('SHOW server_version_num')),
        pgdata: src.dataDir,
        config_file: path.join(src.dataDir, 'postgresql.conf'),
        hba_file: path.join(src.dataDir, 'pg_hba.conf'),
        ident_file: path.join(src.dataDir, 'pg_ident.conf'),
        mode: 'postgres',
        compression: format === 'tar' ? 'gzip' : null,
        server_name: 'pg',
        systemid: await src.psql('SELECT system_identifier FROM pg_control_system()'),
        tablespaces: [{ name: 'tbs1', oid: tbsOid, location: tbsDir }],
        data_checksums: 'off',
      });
      await writeBackupInfoFile(path.join(base, 'backup.info'), info);
    };
    await takeBackup(BACKUP_ID, 'plain');
    await takeBackup(TAR_BACKUP_ID, 'tar');

    // After the backups: a second batch, the PITR target, a third batch.
    await src.psql("INSERT INTO t SELECT g, 'second' FROM generate_series(1001, 2000) g;");
    targetTime = await src.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00:00'");
    await sleep(1100);
    await src.psql("INSERT INTO t SELECT g, 'third' FROM generate_series(2001, 3000) g;");
    await src.waitArchived(await src.switchWal());

    const wals = path.join(home, 'pg', 'wals');
    let n = 0;
    for (const name of (await fs.readdir(archiveDir)).sort()) {
      if (!isWalName(name)) continue;
      const dir = path.join(wals, hashDir(name));
      await fs.mkdir(dir, { recursive: true });
      const data = await fs.readFile(path.join(archiveDir, name));
      // some compressed: they must reach the recovery host decompressed
      await fs.writeFile(path.join(dir, name), n++ % 2 === 0 ? gzipSync(data) : data);
    }
    await chownR(home, BARMAN_USER);
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
    assert.match(res.stdout, /^Restore operation completed \(start time: .+, elapsed time: .+\)$/m);
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
    const { cluster, outcome } = await startRecoveredCluster(dest);
    assert.equal(outcome, 'primary');
    assert.equal(await cluster.psql('SELECT count(*) FROM t'), '3000');
    assert.equal(await cluster.psql('SELECT count(*) FROM t2'), '100');
    assert.equal(await cluster.psql('SHOW archive_command'), 'false');
    await cluster.destroy();
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
