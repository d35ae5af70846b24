/**
 * barman-cloud-backup from the database host: a concurrent backup (pg_backup_start/stop on
 * one session) whose tars stream straight from PGDATA into multipart uploads, as Barman's
 * CloudBackupUploader does: tablespaces first (`<oid>.tar`, only their PG_<major>_* directory),
 * then PGDATA (`data.tar`, pg_basebackup's exclusions), global/pg_control last, the external
 * configuration files at the root, and the backup_label returned by pg_backup_stop. Then a
 * restore point `barman_<ID>`, and backup.info written last (also for a FAILED backup, which
 * the lists then hide), so that an interrupted upload never appears as a backup.
 *
 * IDs: local time to the second as Barman's, but never one already used in the bucket, and
 * claimed with an object before use, so two backups started in the same second get two IDs.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { newBackupId, newBackupInfo, serializeBackupInfo, DONE, FAILED, STARTED, type BackupInfo } from '../catalog/backup-info.js';
import { pyDict, pyFloat, type PyValue } from '../catalog/pyliteral.js';
import { parseBackupLabel } from '../postgres/backup-label.js';
import { gatherFacts } from '../backup/backup.js';
import { PgConnection } from '../postgres/connection.js';
import type { ObjectStorage } from '../storage/types.js';
import type { Throttle } from '../storage/upload.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { faultPoint } from '../util/fault.js';
import { localNowPyDateTime } from '../util/pytime.js';
import { formatLsn, lsnToWal, parseLsn, previousSegment, walOffset } from '../wal/names.js';
import type { CloudLayout, TarCompression } from './layout.js';
import { CloudTarUploader, EXCLUDE_LIST, matcher, PGDATA_EXCLUDE_LIST, uploadTree, type UploadedObject } from './tar-upload.js';
import { writeSums } from './integrity.js';

export interface CloudBackupRequest {
  storage: ObjectStorage;
  layout: CloudLayout;
  conninfo: string;
  immediateCheckpoint: boolean;
  compression: TarCompression | null;
  maxArchiveSize: number;
  minChunkSize: number;
  jobs: number;
  throttle: Throttle | null;
  name: string | null;
  tags: ReadonlyArray<readonly [string, string]> | null;
  signal?: AbortSignal;
  info?: (m: string) => void;
}

/** Part size as Barman computes it: half the parts an archive of maximum size may have. */
export function chunkSize(storage: ObjectStorage, maxArchiveSize: number, minChunkSize: number): number {
  const caps = storage.capabilities;
  return Math.max(Math.floor((2 * maxArchiveSize) / caps.maxParts), caps.minPartSize, minChunkSize);
}

/** The WAL file that holds the byte just before `lsn` (what pg_walfile_name gives for an end LSN). */
function endWalOf(lsn: bigint, tli: number, segSize: number): string {
  const name = lsnToWal(lsn, tli, segSize);
  return walOffset(lsn, segSize) === 0 ? previousSegment(name, segSize) : name;
}

/**
 * A fresh backup ID: local time to the second, not used in the bucket, claimed by an object
 * `base/<ID>/barman-ts.claim.<token>`. The claim holds only when it is the only one there
 * when listed after writing it: of two backups that start in the same second, at most one
 * keeps the ID (both may retry), and any later one sees the claim.
 */
export async function claimBackupId(storage: ObjectStorage, layout: CloudLayout, now: () => Date = () => new Date()): Promise<string> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const id = newBackupId(now());
    const dir = layout.backupDir(id);
    if ((await storage.list(dir)).objects.length === 0) {
      const token = randomBytes(8).toString('hex');
      const claim = `${dir}barman-ts.claim.${token}`;
      await storage.put(claim, Buffer.from(`${process.pid}\n`));
      const there = (await storage.list(dir)).objects.map((o) => o.key);
      if (there.length === 1 && there[0] === claim) return id;
      await storage.deleteBatch([claim]);
    }
    // Next second, with a little jitter so that two losers do not meet again.
    await new Promise((r) => setTimeout(r, 1000 - (now().getTime() % 1000) + Math.floor(Math.random() * 200)));
  }
  throw new BarmanError('could not find a free backup ID');
}

/** Barman's copy_stats dict from the uploaded objects. */
function copyStats(jobs: number, started: number, ended: number, byArchive: Map<string, UploadedObject[]>): PyValue {
  const perItem = new Map<PyValue, PyValue>();
  const serialized = new Map<PyValue, PyValue>();
  const analysis = new Map<PyValue, PyValue>();
  let first = Infinity;
  let last = 0;
  let serial = 0;
  for (const [name, objs] of byArchive) {
    const s = Math.min(...objs.map((o) => o.startTime));
    const e = Math.max(...objs.map((o) => o.endTime));
    const sum = objs.reduce((acc, o) => acc + (o.endTime - o.startTime), 0) / 1000;
    first = Math.min(first, s);
    last = Math.max(last, e);
    serial += sum;
    perItem.set(name, pyFloat((e - s) / 1000));
    serialized.set(name, pyFloat(sum));
    analysis.set(name, 0);
  }
  return pyDict([
    ['total_time', pyFloat((ended - started) / 1000)],
    ['number_of_workers', jobs],
    ['analysis_time', 0],
    ['analysis_time_per_item', analysis],
    ['copy_time_per_item', perItem],
    ['serialized_copy_time_per_item', serialized],
    ['copy_time', pyFloat(first === Infinity ? 0 : (last - first) / 1000)],
    ['serialized_copy_time', pyFloat(serial)],
  ]);
}

export interface CloudBackupResult {
  id: string;
  info: BackupInfo;
}

/** Take a backup of the PostgreSQL server at `conninfo` into the bucket. */
export async function cloudBackup(req: CloudBackupRequest): Promise<CloudBackupResult> {
  const { storage, layout } = req;
  const say = req.info ?? (() => undefined);
  const pg = await PgConnection.connect(req.conninfo, { applicationName: 'barman_cloud_backup' }).catch((err: unknown) => {
    throw new BarmanError(`Cannot connect to postgres: ${errorMessage(err).replace(/^cannot connect to PostgreSQL: /, '')}`, 1);
  });
  const stopIfAborted = () => {
    if (req.signal?.aborted) throw new BarmanError('Barman cloud backup was interrupted by the user', 1);
  };
  let info: BackupInfo | null = null;
  let id = '';
  const open: CloudTarUploader[] = [];
  const uploaded = new Map<string, UploadedObject[]>();
  try {
    const facts = await gatherFacts(pg);
    if (facts.version < 90600) throw new BarmanError(`unsupported PostgresSQL version ${facts.version}. Expecting 9.6 or above.`);
    id = await claimBackupId(storage, layout);
    info = newBackupInfo({
      server_name: 'cloud',
      backup_name: req.name,
      systemid: facts.systemid,
      pgdata: facts.pgdata,
      version: facts.version,
      xlog_segment_size: facts.segSize,
      config_file: facts.configFile,
      hba_file: facts.hbaFile,
      ident_file: facts.identFile,
      tablespaces: facts.tablespaces.length ? facts.tablespaces.map((t) => ({ ...t })) : null,
      data_checksums: facts.dataChecksums,
    });
    const started = Date.now();
    say(`Starting backup '${id}'`);
    const startLsn = await pg.startBackup(`Barman backup cloud ${id}`, req.immediateCheckpoint, facts.version);
    const tli = Number(await pg.value<number>('SELECT timeline_id FROM pg_control_checkpoint()'));
    const begin = parseLsn(startLsn);
    info = {
      ...info,
      status: STARTED,
      begin_time: localNowPyDateTime(),
      begin_xlog: formatLsn(begin),
      begin_wal: lsnToWal(begin, tli, facts.segSize),
      begin_offset: walOffset(begin, facts.segSize),
      timeline: tli,
    };
    const partSize = chunkSize(storage, req.maxArchiveSize, req.minChunkSize);
    const tarOpts = { storage, layout, backupId: id, compression: req.compression, maxArchiveSize: req.maxArchiveSize, partSize, jobs: req.jobs, throttle: req.throttle, tags: req.tags };
    const major = facts.version >= 100000 ? String(Math.floor(facts.version / 10000)) : `${Math.floor(facts.version / 10000)}.${Math.floor(facts.version / 100) % 100}`;
    const pgdataExcludes = [...PGDATA_EXCLUDE_LIST, ...EXCLUDE_LIST];
    for (const t of facts.tablespaces) {
      stopIfAborted();
      if (t.location.startsWith(`${facts.pgdata}/`)) pgdataExcludes.push(t.location.slice(facts.pgdata.length));
      pgdataExcludes.push(`/pg_tblspc/${t.oid}`);
      say(`Uploading '${t.name}' directory '${t.location}' as '${t.oid}.tar'`);
      const tar = new CloudTarUploader(tarOpts, String(t.oid), req.signal);
      open.push(tar);
      await uploadTree(tar, t.location, matcher(['/*', ...EXCLUDE_LIST]), matcher([`/PG_${major}_*`]));
      uploaded.set(String(t.oid), await tar.close());
      open.pop();
    }
    stopIfAborted();
    const pgdata = await fsp.realpath(facts.pgdata);
    say(`Uploading 'pgdata' directory '${pgdata}' as 'data.tar'`);
    const data = new CloudTarUploader(tarOpts, 'data', req.signal);
    open.push(data);
    await uploadTree(data, pgdata, matcher(pgdataExcludes), null);
    await data.addPath(path.join(pgdata, 'global/pg_control'), 'global/pg_control', await fsp.stat(path.join(pgdata, 'global/pg_control')));
    // Configuration files outside PGDATA go to the root of the data tar.
    for (const [file, optional] of [
      [facts.configFile, false],
      [facts.hbaFile, false],
      [facts.identFile, true],
    ] as const) {
      if (!file || file.startsWith(`${facts.pgdata}/`) || file.startsWith(`${pgdata}/`)) continue;
      const st = await fsp.stat(file).catch((err: NodeJS.ErrnoException) => {
        if (optional && err.code === 'ENOENT') return null;
        throw new BarmanError(`cannot read ${file}: ${errorMessage(err)}`);
      });
      if (st) await data.addPath(file, path.basename(file), st);
    }
    stopIfAborted();
    say(`Stopping backup '${id}'`);
    const stop = await pg.stopBackup(facts.version);
    // Archive the WAL file holding the end of the backup now (a standby cannot switch).
    if (!facts.inRecovery) await pg.query('SELECT pg_switch_wal()').catch(() => undefined);
    const label = parseBackupLabel(stop.labelfile);
    const end = parseLsn(stop.lsn);
    info = {
      ...info,
      backup_label: stop.labelfile,
      timeline: label.timeline,
      end_time: localNowPyDateTime(),
      end_xlog: formatLsn(end),
      end_wal: endWalOf(end, label.timeline, facts.segSize),
      end_offset: walOffset(end, facts.segSize),
    };
    // As Barman: no restore point on a standby, and failing to create one is not a failure.
    if (!facts.inRecovery) await pg.query('SELECT pg_create_restore_point($1)', [`barman_${id}`]).catch(() => undefined);
    const pgStat = await fsp.stat(facts.pgdata);
    await data.addBuffer('backup_label', Buffer.from(stop.labelfile, 'utf8'), { mode: 0o600, uid: pgStat.uid, gid: pgStat.gid });
    uploaded.set('data', await data.close());
    open.pop();
    const ended = Date.now();
    info = { ...info, copy_stats: copyStats(req.jobs, started, ended, uploaded), status: DONE };
    await writeSums(storage, layout.sumsKey(id), [...uploaded.values()].flat());
    faultPoint('cloud-backup:sums-written');
    say(`Backup end at LSN: ${info.end_xlog} (${info.end_wal}, ${(info.end_offset ?? 0).toString(16).toUpperCase().padStart(8, '0')})`);
  } catch (err) {
    for (const t of open) await t.abort(err instanceof Error ? err : new Error(String(err))).catch(() => undefined);
    if (info) {
      const first = errorMessage(err).trim() || (err as Error)?.name || 'error';
      info = { ...info, status: FAILED, error: `failure uploading data (${first})` };
      await storage.put(layout.backupInfoKey(id), Buffer.from(serializeBackupInfo(info))).catch(() => undefined);
    }
    throw err;
  } finally {
    await pg.close();
  }
  await storage.put(layout.backupInfoKey(id), Buffer.from(serializeBackupInfo(info)));
  return { id, info };
}

export interface BarmanUploadRequest extends Omit<CloudBackupRequest, 'conninfo' | 'immediateCheckpoint' | 'name'> {
  /** BARMAN_BACKUP_DIR: base/<ID> of the Barman catalog. */
  backupDir: string;
  backupId: string;
  /** BARMAN_BACKUP_INFO_PATH, or backupDir/backup.info. */
  infoPath: string;
}

/**
 * As Barman's post_backup[_retry]_script: upload a finished backup of the Barman catalog
 * (`<backupDir>/data`, `<backupDir>/<oid>`) and its backup.info unchanged, last.
 */
export async function uploadBarmanBackup(req: BarmanUploadRequest): Promise<void> {
  const { storage, layout } = req;
  const { parseBackupInfo } = await import('../catalog/backup-info.js');
  const infoText = await fsp.readFile(req.infoPath);
  const info = parseBackupInfo(infoText.toString('utf8'), req.infoPath);
  const dataDir = path.join(req.backupDir, 'data');
  if (!(await fsp.stat(path.join(dataDir, 'global', 'pg_control')).catch(() => null))) {
    throw new BarmanError(`${dataDir} is not a plain copy of PGDATA (tar or compressed backups cannot be uploaded by barman-cloud-backup)`);
  }
  const partSize = chunkSize(storage, req.maxArchiveSize, req.minChunkSize);
  const tarOpts = { storage, layout, backupId: req.backupId, compression: req.compression, maxArchiveSize: req.maxArchiveSize, partSize, jobs: req.jobs, throttle: req.throttle, tags: req.tags };
  const version = info.version ?? 0;
  const major = version >= 100000 ? String(Math.floor(version / 10000)) : `${Math.floor(version / 10000)}.${Math.floor(version / 100) % 100}`;
  const excludes = [...PGDATA_EXCLUDE_LIST, ...EXCLUDE_LIST];
  const open: CloudTarUploader[] = [];
  const objects: UploadedObject[] = [];
  try {
    for (const t of info.tablespaces ?? []) {
      if (info.pgdata && t.location.startsWith(`${info.pgdata}/`)) excludes.push(t.location.slice(info.pgdata.length));
      excludes.push(`/pg_tblspc/${t.oid}`);
      const tar = new CloudTarUploader(tarOpts, String(t.oid), req.signal);
      open.push(tar);
      await uploadTree(tar, path.join(req.backupDir, String(t.oid)), matcher(['/*', ...EXCLUDE_LIST]), matcher([`/PG_${major}_*`]));
      objects.push(...(await tar.close()));
      open.pop();
    }
    const data = new CloudTarUploader(tarOpts, 'data', req.signal);
    open.push(data);
    await uploadTree(data, dataDir, matcher(excludes), null);
    await data.addPath(path.join(dataDir, 'global/pg_control'), 'global/pg_control', await fsp.stat(path.join(dataDir, 'global/pg_control')));
    objects.push(...(await data.close()));
    open.pop();
    await writeSums(storage, layout.sumsKey(req.backupId), objects);
    await storage.put(layout.backupInfoKey(req.backupId), infoText);
  } catch (err) {
    for (const t of open) await t.abort(err instanceof Error ? err : new Error(String(err))).catch(() => undefined);
    throw err;
  }
}
