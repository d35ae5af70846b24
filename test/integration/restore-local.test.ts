/**
 * `barman restore` on a real PostgreSQL 15 backup. The catalog is built by hand (the real
 * `barman backup` is tested elsewhere): a `pg_basebackup -X none` taken by the barman user into
 * base/<id>/data (tablespace into base/<id>/<oid>), a backup.info from backup_label and
 * backup_manifest, and the WAL files of an archive_command-populated directory copied into
 * wals/<hashdir>/ (every other one gzip-compressed, as the archiver may store them).
 * Then our CLI restores as the barman user, and each restored cluster is started as postgres.
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
import { BARMAN_USER, POSTGRES_USER, chownR, ensureBarmanUser, makeTempDir, runAs, sleep } from '../helpers/system.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const BARMAN_JS = path.join(ROOT, 'bin', 'barman.js');
const BACKUP_ID = '20240301T120000';
const TAR_BACKUP_ID = '20240301T130000';

describe('barman restore (local)', () => {
  let src: PgCluster;
  let archiveDir: string;
  let home: string;
  let conf: string;
  let tbsOid: number;
  let targetTime: string;

  /** Run our CLI as the barman user. */
  const barman = (args: string[]) => runAs(BARMAN_USER, process.execPath, [BARMAN_JS, '-c', conf, ...args]);

  before(async () => {
    await ensureBarmanUser();
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

    // The catalog, owned by barman.
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
        'description = restore test',
        `conninfo = ${src.conninfo}`,
        'backup_method = postgres',
        'archiver = on',
        '',
      ].join('\n'),
    );
    await fs.mkdir(path.join(home, 'pg', 'base'), { recursive: true });
    await chownR(path.join(home, 'pg'), BARMAN_USER);
    await chownR(conf, BARMAN_USER);

    /** Take a backup with pg_basebackup as barman and write its backup.info. */
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

    // After the backup: a second batch, the PITR target, a third batch.
    await src.psql("INSERT INTO t SELECT g, 'second' FROM generate_series(1001, 2000) g;");
    targetTime = await src.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00:00'");
    await sleep(1100);
    await src.psql("INSERT INTO t SELECT g, 'third' FROM generate_series(2001, 3000) g;");
    await src.waitArchived(await src.switchWal());

    // The archive, as Barman's archiver would have filled it.
    const wals = path.join(home, 'pg', 'wals');
    let n = 0;
    for (const name of (await fs.readdir(archiveDir)).sort()) {
      if (!isWalName(name)) continue;
      const dir = path.join(wals, hashDir(name));
      await fs.mkdir(dir, { recursive: true });
      const data = await fs.readFile(path.join(archiveDir, name));
      await fs.writeFile(path.join(dir, name), n++ % 2 === 0 ? gzipSync(data) : data);
    }
    await chownR(home, BARMAN_USER);
  });

  after(cleanupAll);

  async function restoreDirs(): Promise<{ dest: string; tbs: string }> {
    const parent = await makeTempDir('restore-', { owner: BARMAN_USER, mode: 0o755 });
    return { dest: path.join(parent, 'data'), tbs: path.join(parent, 'tbs1') };
  }

  test('full restore: every archived WAL is replayed', async () => {
    const { dest, tbs } = await restoreDirs();
    const res = await barman(['restore', 'pg', BACKUP_ID, dest, '--tablespace', `tbs1:${tbs}`]);
    assert.equal(res.code, 0, res.stderr + res.stdout);
    assert.match(res.stdout, /^Restore operation completed \(start time: .+, elapsed time: .+\)$/m);
    assert.match(res.stdout, /^Your PostgreSQL server has been successfully prepared for recovery!$/m);
    assert.match(res.stdout, /^postgresql\.conf line \d+: archive_command = false$/m);
    assert.equal(existsSync(path.join(dest, 'recovery.signal')), false);
    assert.equal(existsSync(path.join(dest, `backup_manifest.${BACKUP_ID}`)), true);
    assert.equal(existsSync(path.join(dest, '.barman-recover.info')), true);
    assert.equal(await fs.readlink(path.join(dest, 'pg_tblspc', String(tbsOid))), tbs);
    assert.ok((await fs.readdir(path.join(dest, 'pg_wal', 'archive_status'))).length > 0);

    const { cluster, outcome } = await startRecoveredCluster(dest);
    assert.equal(outcome, 'primary');
    assert.equal(await cluster.psql('SELECT count(*) FROM t'), '3000');
    assert.equal(await cluster.psql('SELECT count(*) FROM t2'), '100');
    assert.equal(await cluster.psql('SHOW archive_command'), 'false');
    await cluster.destroy();
  });

  test('restore of a compressed tar-format backup (pg_basebackup -Ft -z)', async () => {
    const { dest, tbs } = await restoreDirs();
    const res = await barman(['recover', 'pg', 'latest', dest, '--tablespace', `tbs1:${tbs}`]);
    assert.equal(res.code, 0, res.stderr + res.stdout);
    assert.match(res.stdout, /using backup 20240301T130000/);
    assert.equal(existsSync(path.join(dest, `backup_manifest.${TAR_BACKUP_ID}`)), true);
    assert.equal(await fs.readlink(path.join(dest, 'pg_tblspc', String(tbsOid))), tbs);
    const { cluster, outcome } = await startRecoveredCluster(dest);
    assert.equal(outcome, 'primary');
    assert.equal(await cluster.psql('SELECT count(*) FROM t'), '3000');
    assert.equal(await cluster.psql('SELECT count(*) FROM t2'), '100');
    await cluster.destroy();
  });

  test('point-in-time restore between two inserts', async () => {
    const { dest, tbs } = await restoreDirs();
    const res = await barman([
      '-f', 'json', 'restore', 'pg', BACKUP_ID, dest,
      '--tablespace', `tbs1:${tbs}`, '--target-time', targetTime, '--target-action', 'promote',
    ]);
    assert.equal(res.code, 0, res.stderr + res.stdout);
    const doc = JSON.parse(res.stdout) as { pg: { pitr: boolean; wal: { files: number; destination: string }; target: { time: string } } };
    assert.equal(doc.pg.pitr, true);
    assert.equal(doc.pg.wal.destination, path.join(dest, 'barman_wal'));
    assert.ok(doc.pg.wal.files > 0);
    assert.equal(existsSync(path.join(dest, 'recovery.signal')), true);
    const auto = await fs.readFile(path.join(dest, 'postgresql.auto.conf'), 'utf8');
    assert.match(auto, /^recovery_target_time = '.+'$/m);
    assert.match(auto, /^recovery_target_action = 'promote'$/m);

    const { cluster, outcome } = await startRecoveredCluster(dest);
    assert.equal(outcome, 'primary');
    assert.equal(await cluster.psql('SELECT count(*) FROM t'), '2000');
    assert.equal(await cluster.psql("SELECT count(*) FROM t WHERE v = 'third'"), '0');
    assert.equal(await cluster.psql('SELECT count(*) FROM t2'), '100');
    // recovery_end_command removed the staged WAL
    assert.equal(existsSync(path.join(dest, 'barman_wal')), false);
    await cluster.destroy();
  });

  test('point-in-time restore with --get-wal: PostgreSQL calls our barman get-wal', async () => {
    const { dest, tbs } = await restoreDirs();
    const res = await barman(['restore', 'pg', BACKUP_ID, dest, '--tablespace', `tbs1:${tbs}`, '--get-wal', '--target-time', targetTime]);
    assert.equal(res.code, 0, res.stderr + res.stdout);
    assert.match(res.stdout, /WARNING: 'get-wal' is in the specified 'recovery_options'/);
    assert.equal(existsSync(path.join(dest, 'barman_wal')), false);
    const auto = await fs.readFile(path.join(dest, 'postgresql.auto.conf'), 'utf8');
    assert.ok(auto.includes(`restore_command = '${process.execPath} ${BARMAN_JS} -c ${conf} get-wal -P pg %f > %p'`), auto);

    // the default target action is pause
    const { cluster, outcome } = await startRecoveredCluster(dest);
    assert.equal(outcome, 'paused');
    assert.equal(await cluster.psql('SELECT count(*) FROM t'), '2000');
    await cluster.destroy();
  });

  test('validation errors exit 1 and write nothing', async () => {
    const { dest } = await restoreDirs();
    const res = await barman(['restore', 'pg', BACKUP_ID, dest, '--target-action', 'promote']);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /ERROR: Can't enable recovery target action when PITR is not required/);
    assert.equal(existsSync(dest), false);
    const remote = await barman(['restore', 'pg', BACKUP_ID, dest, '--remote-ssh-command', 'false']);
    assert.equal(remote.code, 1);
    assert.match(remote.stderr, /Checking the destination on the remote host failed \(exit code 1\)/);
    assert.equal(existsSync(dest), false);
  });
});
