/**
 * A hand-built catalog for the restore tests (restore-local, restore-remote): the real `barman
 * backup` is tested elsewhere. A PostgreSQL 15 cluster archiving into a plain directory, with a
 * tablespace; two `pg_basebackup -X none` backups taken by the barman user into base/<id>/data
 * (plain with the tablespace in base/<id>/<oid>, and tar+gzip), their backup.info built from
 * backup_label and backup_manifest; then three batches of rows with a PITR target between the
 * second and the third, and the archived WAL copied into wals/<hashdir>/ (every other one
 * gzip-compressed, as the archiver may store them: they must reach the destination decompressed).
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { DONE, newBackupInfo, writeBackupInfoFile } from '../../src/catalog/backup-info.js';
import { manifestWalRanges, parseBackupLabel } from '../../src/postgres/backup-label.js';
import { localNowPyDateTime } from '../../src/util/pytime.js';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { hashDir, isWalName, lsnToWal, parseLsn, previousSegment, walOffset } from '../../src/wal/names.js';
import { PgCluster, pgBin, startRecoveredCluster } from './pg-cluster.js';
import { BARMAN_USER, POSTGRES_USER, chownR, ensureBarmanUser, makeTempDir, runAs, sleep, type ExecResult } from './system.js';

/** bin/barman.js, as restore_command names it. */
export const BARMAN_JS = BARMAN_SCRIPT;
/** The plain-format backup, with the tablespace. */
export const BACKUP_ID = '20240301T120000';
/** The tar+gzip backup, the latest. */
export const TAR_BACKUP_ID = '20240301T130000';

export interface RestoreFixture {
  src: PgCluster;
  home: string;
  conf: string;
  /** OID of tablespace `tbs1` (table t2, 100 rows). */
  tbsOid: number;
  /** Between the second batch of rows of table t (ids 1001-2000) and the third (2001-3000). */
  targetTime: string;
  /** Run our CLI as the barman user. */
  barman(args: string[]): Promise<ExecResult>;
}

export async function createRestoreFixture(opts: { description: string; barmanTimeoutMs?: number }): Promise<RestoreFixture> {
  await ensureBarmanUser();
  const archiveDir = await makeTempDir('archive-', { owner: POSTGRES_USER, mode: 0o755 });
  const src = await PgCluster.create({
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
  const tbsOid = Number(await src.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'tbs1'"));

  // The catalog, owned by barman.
  const home = await makeTempDir('barman-home-', { owner: BARMAN_USER, mode: 0o755 });
  const conf = path.join(home, 'barman.conf');
  await fs.writeFile(
    conf,
    [
      '[barman]',
      `barman_home = ${home}`,
      `barman_user = ${BARMAN_USER}`,
      `log_file = ${home}/barman.log`,
      '',
      '[pg]',
      `description = ${opts.description}`,
      `conninfo = ${src.conninfo}`,
      'backup_method = postgres',
      'archiver = on',
      '',
    ].join('\n'),
  );
  await fs.mkdir(path.join(home, 'pg', 'base'), { recursive: true });
  await chownR(home, BARMAN_USER);

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

  // After the backups: a second batch, the PITR target, a third batch.
  await src.psql("INSERT INTO t SELECT g, 'second' FROM generate_series(1001, 2000) g;");
  const targetTime = await src.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00:00'");
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

  const runOpts = opts.barmanTimeoutMs === undefined ? {} : { timeoutMs: opts.barmanTimeoutMs };
  const barman = (args: string[]) => runAs(BARMAN_USER, process.execPath, [BARMAN_JS, '-c', conf, ...args], runOpts);
  return { src, home, conf, tbsOid, targetTime, barman };
}

/**
 * Start the cluster restored into `dest` without a recovery target: it must come up as a
 * primary with every batch replayed (3000 rows in t, 100 in the tablespace's t2) and archiving
 * disabled, as a restore leaves it.
 */
export async function assertCompleteRestore(dest: string): Promise<void> {
  const { cluster, outcome } = await startRecoveredCluster(dest);
  try {
    assert.equal(outcome, 'primary');
    assert.equal(await cluster.psql('SELECT count(*) FROM t'), '3000');
    assert.equal(await cluster.psql('SELECT count(*) FROM t2'), '100');
    assert.equal(await cluster.psql('SHOW archive_command'), 'false');
  } finally {
    await cluster.destroy();
  }
}
