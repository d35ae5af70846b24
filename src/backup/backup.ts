/**
 * Taking a backup (spec §2.4): EMPTY → STARTED → WAITING_FOR_WALS → DONE, or FAILED with `error`
 * set. A backup is only DONE when every WAL segment from begin_wal to end_wal is archived.
 * One backup per server at a time (`.<srv>-backup.lock`). An interrupted backup (SIGINT/SIGTERM,
 * lost connection, dead pg_basebackup) is recorded FAILED; one whose process was SIGKILLed is
 * found STARTED without a lock holder and marked FAILED by `markStaleBackups` (cron, list).
 * A signal once the copy is complete (during `--wait`) leaves the backup WAITING_FOR_WALS and
 * ends with BackupWaitInterruptedError: cron makes it DONE when its WAL files arrive.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import {
  ARCHIVING,
  DONE,
  EMPTY,
  FAILED,
  STARTED,
  WAITING_FOR_WALS,
  newBackupId,
  newBackupInfo,
  type BackupInfo,
} from '../catalog/backup-info.js';
import {
  BackupGoneError,
  UnreadableCatalogError,
  backupDir,
  loadCatalog,
  loadCatalogStrict,
  readBackupEntry,
  saveBackupInfo,
  validateBackupName,
  type BackupEntry,
} from '../catalog/catalog.js';
import { cleanWals } from '../catalog/delete.js';
import { LockBusyError, acquireLock, type HeldLock } from '../catalog/lock.js';
import { ensureServerDirs, lockPath, serverPaths } from '../catalog/server-dirs.js';
import { pyDict, pyFloat } from '../catalog/pyliteral.js';
import { parseBackupLabel } from '../postgres/backup-label.js';
import { PgConnection, type Tablespace } from '../postgres/connection.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { pause } from '../util/pause.js';
import { faultPoint } from '../util/fault.js';
import { pathExists, treeSizes, writeFileAtomic } from '../util/fsutil.js';
import { logger } from '../util/log.js';
import { localNowPyDateTime } from '../util/pytime.js';
import { lsnToWal, parseLsn, walOffset, formatLsn, previousSegment } from '../wal/names.js';
import { checkBackup } from './check-backup.js';
import { backupHookInfo, backupHookVars, runHooks, type HookPhase, type HookTiming } from '../hooks/hooks.js';
import { postgresCopy } from './postgres-executor.js';
import { encryptTarBackup } from './encrypt.js';
import { GPG_ENCRYPTION, encryptionConfigProblem, encryptionEnabled } from '../catalog/encryption.js';
import { unsupportedSettings } from '../config/support.js';
import { rsyncCopy } from './rsync-executor.js';
import { agentCopy, agentEndpoint } from '../agent/backup-copy.js';
import { PrestartedAgents } from '../agent/prestart.js';
import { generateManifest } from './manifest.js';
import { forcePrimaryCheckpoint, primaryCheckpointDue, requirePrimaryForStandby, switchWalAfterBackup } from './standby.js';
import type { CopyOutcome } from './copy-outcome.js';
import type { ReuseMode } from './rsync-plan.js';

const log = logger('backup');

export interface BackupOptions {
  immediateCheckpoint?: boolean;
  name?: string;
  wait?: boolean;
  waitTimeoutSec?: number;
  /** rsync methods: `--reuse-backup` (else reuse_backup). */
  reuseBackup?: ReuseMode;
  /** rsync methods: `-j/--jobs` (else parallel_jobs). */
  jobs?: number;
  /** rsync methods: `--bwlimit` KB/s (else bandwidth_limit). */
  bwlimit?: number;
  /** rsync methods: `--[no-]manifest`, write backup_manifest after the copy (else autogenerate_manifest). */
  manifest?: boolean;
  /** `--retry-times` / `--no-retry` (else basebackup_retry_times): copies tried again after a failure. */
  retryTimes?: number;
  /** `--retry-sleep` (else basebackup_retry_sleep): seconds between two attempts. */
  retrySleep?: number;
  /** rsync methods: `--jobs-start-batch-size` / `-period` (else parallel_jobs_start_batch_*). */
  startBatchSize?: number;
  startBatchPeriod?: number;
  /** rsync methods: `--keepalive-interval` (else keepalive_interval). */
  keepaliveInterval?: number;
  /** transfer_method = agent: the agents started with the command (prestartBackupAgents), taken by the copy. */
  agents?: PrestartedAgents | null;
}

export interface BackupEvents {
  info?: (msg: string) => void;
  warning?: (msg: string) => void;
  progress?: (doneKb: number, totalKb: number) => void;
  /** Run the archiver once (cron's archive-wal), used by --wait and to settle the status. */
  archive?: () => Promise<void>;
}

export interface ServerFacts {
  version: number;
  pgdata: string;
  systemid: string;
  tablespaces: Tablespace[];
  configFile: string | null;
  hbaFile: string | null;
  identFile: string | null;
  dataChecksums: string;
  segSize: number;
  clusterSize: number;
  inRecovery: boolean;
}

/** What a backup records of the server (one query each). */
export async function gatherFacts(pg: PgConnection): Promise<ServerFacts> {
  const s = async (n: string) => pg.setting(n);
  return {
    version: await pg.serverVersion(),
    pgdata: (await s('data_directory')) ?? '',
    systemid: await pg.systemId(),
    tablespaces: await pg.tablespaces(),
    configFile: await s('config_file'),
    hbaFile: await s('hba_file'),
    identFile: await s('ident_file'),
    dataChecksums: (await s('data_checksums')) ?? 'off',
    segSize: Number((await s('wal_segment_size')) ?? 16777216),
    clusterSize: await pg.clusterSize(),
    inRecovery: await pg.isInRecovery(),
  };
}

/** identity.json: `{"systemid": ..., "version": "<major>"}`, written once; a different system id later is refused. */
async function checkIdentity(srv: ServerConfig, facts: ServerFacts): Promise<void> {
  const file = path.join(serverPaths(srv).backupDir, 'identity.json');
  const major = facts.version >= 100000 ? String(Math.floor(facts.version / 10000)) : `${Math.floor(facts.version / 10000)}.${Math.floor(facts.version / 100) % 100}`;
  if (await pathExists(file)) {
    const known = JSON.parse(await fsp.readFile(file, 'utf8')) as { systemid?: string };
    if (known.systemid && known.systemid !== facts.systemid) {
      throw new BarmanError(
        `systemid coherence: the server's system identifier ${facts.systemid} differs from the one of the catalog (${known.systemid}, ${file})`,
      );
    }
    return;
  }
  const text = `${JSON.stringify({ systemid: facts.systemid, version: major }, null, 4)}\n`;
  await writeFileAtomic(file, text);
}

async function freshBackupId(srv: ServerConfig): Promise<string> {
  // IDs have one-second resolution: never reuse one (two quick backups in a row).
  for (;;) {
    const id = newBackupId(new Date());
    if (!(await pathExists(backupDir(srv, id)))) return id;
    await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 5));
  }
}

/** The WAL file that holds the byte just before `lsn` (as pg_walfile_name does for an end LSN). */
function endWalOf(lsn: bigint, tli: number, segSize: number): string {
  const name = lsnToWal(lsn, tli, segSize);
  return walOffset(lsn, segSize) === 0 ? previousSegment(name, segSize) : name;
}

/** Exclusive backups (backup_options = exclusive_backup) are refused before anything is written. */
function refuseExclusive(srv: ServerConfig, version: number): void {
  if (!((srv.backup_options ?? []) as readonly string[]).includes('exclusive_backup')) return;
  throw new BarmanError(
    version >= 150000
      ? 'backup_options = exclusive_backup: exclusive backups do not exist in PostgreSQL 15 and later (use concurrent_backup)'
      : 'backup_options = exclusive_backup is not supported (use concurrent_backup)',
  );
}

/** Copy workers of an rsync-method backup: `-j/--jobs`, else parallel_jobs. */
function copyJobs(srv: ServerConfig, opts: BackupOptions): number {
  return opts.jobs ?? (srv.parallel_jobs || 1);
}

/**
 * transfer_method = agent: start the copy's agents now (agent/prestart.ts), so that their ssh
 * logins and start-up overlap with the checks and the start of the backup; the checks ask the
 * first one, the copy takes them all. null for other methods. The caller discards what is
 * left when the backup is over (or was never started).
 */
export function prestartBackupAgents(srv: ServerConfig, opts: BackupOptions): PrestartedAgents | null {
  if (srv.transfer_method !== 'agent' || srv.backup_method !== 'rsync' || !srv.ssh_command || srv.passive) return null;
  return new PrestartedAgents(agentEndpoint(srv), copyJobs(srv, opts));
}

/** transfer_method = agent: only over ssh_command (backup_method = rsync), refused before anything is written. */
export function refuseAgentTransfer(srv: Pick<ServerConfig, 'transfer_method' | 'backup_method' | 'ssh_command'>): void {
  if (srv.transfer_method !== 'agent') return;
  if (srv.backup_method !== 'rsync') throw new BarmanError(`transfer_method = agent needs backup_method = rsync (this server has ${srv.backup_method})`);
  if (!srv.ssh_command) throw new BarmanError('transfer_method = agent needs ssh_command (the agent is started through it)');
}

/**
 * The backup reuse_backup takes unchanged files from: the newest DONE backup of an rsync mode
 * (a pg_basebackup copy has other mtimes and maybe another format), with its begin time as the
 * horizon after which size+mtime cannot be trusted.
 */
async function previousRsyncBackup(srv: ServerConfig, currentId: string): Promise<{ dir: string; beginTimeSec: number } | null> {
  const catalog = await loadCatalog(srv);
  const prev = catalog
    .filter((e) => e.id !== currentId && e.id < currentId && e.info.status === DONE && (e.info.mode ?? '').startsWith('rsync') && e.info.begin_time)
    .sort((a, b) => (a.id < b.id ? -1 : 1))
    .at(-1);
  if (!prev?.info.begin_time) return null;
  return { dir: backupDir(srv, prev.id), beginTimeSec: Number(prev.info.begin_time.epochMicros / 1_000_000n) };
}

/**
 * basebackup_retry_times / basebackup_retry_sleep (Barman's `--retry-times`, `--retry-sleep`):
 * a failed copy is started again from scratch (what the failed attempt left in the backup
 * directory is removed, backup.info kept), after `sleepSeconds`, up to `times` more times. A
 * signal stops the retries at once.
 */
export async function copyWithRetries<T>(
  backupDir: string,
  copy: () => Promise<T>,
  opts: { times: number; sleepSeconds: number; signal?: AbortSignal; warning?: (msg: string) => void },
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await copy();
    } catch (err) {
      if (opts.signal?.aborted || attempt > opts.times) throw err;
      opts.warning?.(`Copy failed (${errorMessage(err)}): attempt ${attempt + 1} of ${opts.times + 1} in ${opts.sleepSeconds} seconds (basebackup_retry_times)`);
      await pause(opts.sleepSeconds * 1000, opts.signal);
      if (opts.signal?.aborted) throw err;
      for (const name of await fsp.readdir(backupDir)) {
        if (name !== 'backup.info') await fsp.rm(path.join(backupDir, name), { recursive: true, force: true });
      }
    }
  }
}

/** A signal stopped the wait for a backup's WAL files: the copy is complete, it stays WAITING_FOR_WALS. */
export class BackupWaitInterruptedError extends BarmanError {}

const INTERRUPTED = 'interrupted by signal';

/** What one running backup shares between its steps (the phase names a failure). */
interface BackupRun {
  srv: ServerConfig;
  opts: BackupOptions;
  ev: BackupEvents;
  /** rsync or local-rsync (else postgres). */
  rsyncMethod: boolean;
  mode: 'rsync-concurrent' | 'postgres';
  encrypt: boolean;
  signal: AbortSignal;
  started: number;
  phase: string;
  entry: BackupEntry | null;
}

/** Refusals that need neither PostgreSQL nor the lock; returns the method's facts. */
function refuseUnsupportedBackup(srv: ServerConfig, opts: BackupOptions): Pick<BackupRun, 'rsyncMethod' | 'mode' | 'encrypt'> {
  if (srv.passive) throw new BarmanError(`Backup not allowed on the passive node '${srv.name}'`);
  const unsupported = unsupportedSettings(srv).find((u) => u.refusedBy === 'backup');
  if (unsupported) throw new BarmanError(unsupported.message);
  const rsyncMethod = srv.backup_method === 'rsync' || srv.backup_method === 'local-rsync';
  if (opts.name !== undefined) validateBackupName(opts.name);
  // encryption = gpg that cannot be honoured is refused before anything is written (Barman
  // records a FAILED backup after the copy): a backup is never stored in clear by mistake.
  const encryptionProblem = encryptionConfigProblem(srv);
  if (encryptionProblem) throw new BarmanError(encryptionProblem);
  return { rsyncMethod, mode: rsyncMethod ? 'rsync-concurrent' : 'postgres', encrypt: encryptionEnabled(srv) };
}

/** Take one backup of a server. Returns the final entry (status DONE, WAITING_FOR_WALS or FAILED). */
export async function takeBackup(srv: ServerConfig, opts: BackupOptions = {}, ev: BackupEvents = {}): Promise<BackupEntry> {
  const method = refuseUnsupportedBackup(srv, opts);
  const lock = await acquireLock(lockPath(srv, 'backup'), 'backup');
  // These handlers replace Node's exit on SIGINT/SIGTERM: every wait below must watch `abort`.
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const run: BackupRun = { srv, opts, ev, ...method, signal: abort.signal, started: Date.now(), phase: 'connecting to PostgreSQL', entry: null };
  try {
    return await backupSteps(run);
  } catch (err) {
    const entry = run.entry;
    if (err instanceof BackupWaitInterruptedError) {
      log.warning(`backup ${entry?.id ?? ''} of ${srv.name}: ${err.message}`);
      if (entry) await runPostBackupHooks(srv, entry, ev);
      throw err;
    }
    const msg = abort.signal.aborted ? INTERRUPTED : errorMessage(err);
    log.error(`backup of ${srv.name} failed while ${run.phase}: ${msg}`);
    if (entry) {
      entry.info = { ...entry.info, status: FAILED, error: `failure ${run.phase} (${msg})`, end_time: entry.info.end_time ?? localNowPyDateTime() };
      await saveBackupInfo(srv, entry.id, entry.info).catch(() => undefined);
      await runPostBackupHooks(srv, entry, ev);
      throw new BarmanError(`Backup failed ${run.phase}: ${msg}`);
    }
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    lock.release();
  }
}

function stopIfAborted(run: BackupRun): void {
  if (run.signal.aborted) throw new BarmanError(INTERRUPTED);
}

/** The steps of a backup, in order; `run.phase` says which one a failure happened in. */
async function backupSteps(run: BackupRun): Promise<BackupEntry> {
  const { srv, ev } = run;
  const facts = await connectAndCheck(run);
  const entry = await startBackupEntry(run, facts);
  const dir = backupDir(srv, entry.id);

  run.phase = 'copying files';
  // A signal that came before the copy process exists would never reach it (the executors check too).
  stopIfAborted(run);
  const result = await copyWithRetries(dir, () => copyBackupFiles(run, entry.id, facts), {
    times: run.opts.retryTimes ?? srv.basebackup_retry_times ?? 0,
    sleepSeconds: run.opts.retrySleep ?? srv.basebackup_retry_sleep ?? 30,
    signal: run.signal,
    warning: ev.warning,
  });
  faultPoint('backup:copied');
  ev.info?.(`Copy done (time: ${result.copySeconds.toFixed(1)} seconds)`);
  if (run.encrypt) {
    run.phase = 'encrypting the backup';
    stopIfAborted(run);
    ev.info?.(`Encrypting backup using ${GPG_ENCRYPTION} encryption`);
    const files = await encryptTarBackup(srv, path.join(dir, 'data'));
    log.info(`backup ${entry.id} of ${srv.name}: encrypted ${files.join(', ')}`);
  }

  run.phase = 'finalising the backup';
  const copied = await copiedBackupInfo(run, entry, facts, result);
  entry.info = copied.info;
  await saveBackupInfo(srv, entry.id, entry.info);
  faultPoint('backup:waiting');
  ev.info?.(`Backup size: ${entry.info.size ?? 0} bytes`);
  // The agent hashed every file as it copied it: its backups always get a manifest (unless --no-manifest).
  if (run.rsyncMethod && (run.opts.manifest ?? (srv.autogenerate_manifest || result.knownChecksums !== undefined))) {
    await autogenerateManifest(srv, entry, ev, result.knownChecksums);
  }
  faultPoint('backup:manifest-done');
  await purgeWalsBeforeFirstBackup(srv, entry, ev);
  faultPoint('backup:purged');
  ev.info?.(`Backup completed (start time: ${entry.info.begin_time?.format() ?? ''}, elapsed time: ${copied.totalSeconds.toFixed(1)} seconds)`);

  run.phase = 'closing the backup WAL';
  const endWal = entry.info.end_wal as string;
  await switchWalAfterBackup(srv, endWal, facts.inRecovery).then(
    (where) => {
      if (where === 'primary') log.info(`backup ${entry.id} of ${srv.name}: WAL switched on the primary to complete ${endWal}`);
    },
    (err: unknown) => ev.warning?.(`could not switch WAL${facts.inRecovery ? ' on the primary' : ''} after the backup: ${errorMessage(err)}`),
  );
  await settle(srv, entry, run.opts, ev, run.signal);
  await runPostBackupHooks(srv, entry, ev);
  return entry;
}

/** PostgreSQL's facts, and the refusals that depend on them, before anything is created on disk. */
async function connectAndCheck(run: BackupRun): Promise<ServerFacts> {
  const { srv } = run;
  const pg = await PgConnection.connect(srv.conninfo ?? '');
  let facts: ServerFacts;
  try {
    facts = await gatherFacts(pg);
  } finally {
    await pg.close();
  }
  stopIfAborted(run);
  requirePrimaryForStandby(srv, facts.inRecovery);
  if (run.rsyncMethod) refuseExclusive(srv, facts.version);
  if (run.rsyncMethod) refuseAgentTransfer(srv);
  await ensureServerDirs(srv);
  run.phase = 'checking the catalog';
  await checkIdentity(srv, facts);
  return facts;
}

/** A new backup directory with an EMPTY backup.info, the pre-backup hooks, then STARTED. */
async function startBackupEntry(run: BackupRun, facts: ServerFacts): Promise<BackupEntry> {
  const { srv, ev } = run;
  const id = await freshBackupId(srv);
  const dir = backupDir(srv, id);
  const entry: BackupEntry = {
    id,
    infoFile: '',
    info: newBackupInfo({
      status: EMPTY,
      server_name: srv.name,
      backup_name: run.opts.name ?? null,
      mode: run.mode,
      pgdata: facts.pgdata,
      systemid: facts.systemid,
      version: facts.version,
      xlog_segment_size: facts.segSize,
      tablespaces: facts.tablespaces.length ? facts.tablespaces.map((t) => ({ ...t })) : null,
      config_file: facts.configFile,
      hba_file: facts.hbaFile,
      ident_file: facts.identFile,
      data_checksums: facts.dataChecksums,
      cluster_size: facts.clusterSize,
    }),
  };
  run.entry = entry;
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  entry.infoFile = await saveBackupInfo(srv, id, entry.info, { create: true });
  faultPoint('backup:empty');
  // pre_backup hooks see the EMPTY backup on disk; ABORT_STOP fails the backup (HookAbortError).
  run.phase = 'running the pre-backup hooks';
  await runBackupHooks(srv, 'pre', entry, ev);
  ev.info?.(`Starting backup using ${run.mode} method for server ${srv.name} in ${dir}`);
  if (facts.inRecovery) ev.info?.(`Backing up from a standby: the WAL switch at the end is asked of the primary (primary_conninfo)`);

  run.phase = 'starting the backup';
  entry.info = { ...entry.info, status: STARTED, begin_time: localNowPyDateTime() };
  await saveBackupInfo(srv, id, entry.info);
  faultPoint('backup:started');
  return entry;
}

/** One copy attempt with the server's method: pg_basebackup, rsync, or the barman-ts agent. */
async function copyBackupFiles(run: BackupRun, id: string, facts: ServerFacts): Promise<CopyOutcome> {
  const { srv, opts, ev } = run;
  const destDir = backupDir(srv, id);
  const immediateCheckpoint = opts.immediateCheckpoint ?? srv.immediate_checkpoint;
  if (!run.rsyncMethod) {
    ev.info?.(`Starting backup copy via pg_basebackup for ${id}`);
    return postgresCopy({ srv, destDir, tablespaces: facts.tablespaces, immediateCheckpoint, label: srv.streaming_backup_name, onProgress: ev.progress, signal: run.signal });
  }
  const jobs = copyJobs(srv, opts);
  const reuse: ReuseMode = opts.reuseBackup ?? ((srv.reuse_backup as ReuseMode | null) ?? 'off');
  const common = {
    srv,
    destDir,
    version: facts.version,
    pgdata: facts.pgdata,
    tablespaces: facts.tablespaces,
    immediateCheckpoint,
    label: `Barman backup ${srv.name} ${id}`,
    jobs,
    reuse,
    onProgress: ev.progress,
    signal: run.signal,
    keepaliveInterval: opts.keepaliveInterval,
  };
  if (srv.transfer_method === 'agent') {
    ev.info?.(`Starting backup copy via the barman-ts agent for ${id}${jobs > 1 ? ` (${jobs} jobs)` : ''} (reuse_backup = ${reuse})`);
    return agentCopy({ ...common, backupId: id, info: ev.info, agents: opts.agents });
  }
  const previous = reuse === 'off' ? null : await previousRsyncBackup(srv, id);
  ev.info?.(`Starting backup copy via rsync for ${id}${jobs > 1 ? ` (${jobs} jobs)` : ''}${previous ? ` (reuse_backup = ${reuse} from ${path.basename(previous.dir)})` : ''}`);
  return rsyncCopy({
    ...common,
    previous,
    bwlimit: opts.bwlimit ?? srv.bandwidth_limit ?? null,
    startBatchSize: opts.startBatchSize,
    startBatchPeriod: opts.startBatchPeriod,
  });
}

/** The backup.info of a copied backup (WAITING_FOR_WALS): positions from its label, sizes, copy times. */
async function copiedBackupInfo(run: BackupRun, entry: BackupEntry, facts: ServerFacts, result: CopyOutcome): Promise<{ info: BackupInfo; totalSeconds: number }> {
  const { ev } = run;
  const labelText = result.labelText;
  const label = parseBackupLabel(labelText);
  const beginLsn = parseLsn(label.startLsn);
  const endLsn = parseLsn(result.endLsn);
  const tli = label.timeline;
  const endWal = endWalOf(endLsn, tli, facts.segSize);
  ev.info?.(`Backup start at LSN: ${formatLsn(beginLsn)} (${label.startWal}, ${walOffset(beginLsn, facts.segSize).toString(16).padStart(8, '0')})`);
  ev.info?.(`Backup end at LSN: ${formatLsn(endLsn)} (${endWal}, ${walOffset(endLsn, facts.segSize).toString(16).padStart(8, '0')})`);
  // One walk of the backup directory for both sizes (files with other links are shared).
  const sizes = await treeSizes(backupDir(run.srv, entry.id));
  const totalSeconds = (Date.now() - run.started) / 1000;
  const info: BackupInfo = {
    ...entry.info,
    status: WAITING_FOR_WALS,
    backup_label: labelText,
    begin_xlog: formatLsn(beginLsn),
    begin_wal: label.startWal,
    begin_offset: walOffset(beginLsn, facts.segSize),
    end_xlog: formatLsn(endLsn),
    end_wal: endWal,
    end_offset: walOffset(endLsn, facts.segSize),
    end_time: localNowPyDateTime(),
    timeline: tli,
    size: sizes.size,
    deduplicated_size: result.deduplicatedSize ?? sizes.deduplicated,
    compression: result.format === 'tar' ? result.compression : null,
    // Only an encrypted backup names its encryption (a key Barman < 3.14 does not know).
    ...(run.encrypt ? { encryption: GPG_ENCRYPTION } : {}),
    copy_stats: pyDict([['copy_time', pyFloat(result.copySeconds)], ['total_time', pyFloat(totalSeconds)], ...result.extraCopyStats]),
  };
  return { info, totalSeconds };
}

/**
 * Run the backup hook scripts of one phase for `entry` (spec §9): BARMAN_STATUS is its current
 * status and BARMAN_ERROR its error. Throws HookAbortError when the pre retry script exits 63.
 */
export async function runBackupHooks(srv: ServerConfig, phase: HookPhase, entry: BackupEntry, ev: BackupEvents = {}, timing?: HookTiming): Promise<void> {
  // Neighbours are informative only: an unreadable catalog must not stop a backup.
  const catalog = await loadCatalog(srv).catch(() => [] as BackupEntry[]);
  const vars = backupHookVars(backupHookInfo(srv, entry, catalog));
  await runHooks(srv, 'backup', phase, vars, { warning: ev.warning, timing });
}

/** Post hooks once the backup has its final status: a script that cannot run is only reported. */
async function runPostBackupHooks(srv: ServerConfig, entry: BackupEntry, ev: BackupEvents): Promise<void> {
  try {
    await runBackupHooks(srv, 'post', entry, ev);
  } catch (err) {
    ev.warning?.(`post backup hooks failed: ${errorMessage(err)}`);
  }
}

/**
 * WAL archived before the first backup can never be used by a recovery: drop it (as Barman
 * does), unless the storage is WORM. With a backup.info that cannot be read, this may not be
 * the first backup at all: the WALs are kept (with a warning) and the backup goes on.
 */
export async function purgeWalsBeforeFirstBackup(srv: ServerConfig, entry: BackupEntry, ev: BackupEvents): Promise<void> {
  const beginWal = entry.info.begin_wal;
  if (srv.worm_mode || !beginWal) return;
  let catalog: BackupEntry[];
  try {
    catalog = await loadCatalogStrict(srv);
  } catch (err) {
    if (!(err instanceof UnreadableCatalogError)) throw err;
    ev.warning?.(`WAL files archived before this backup are kept: ${err.message}`);
    return;
  }
  const others = catalog.filter((e) => e.id !== entry.id && ARCHIVING.has(e.info.status));
  if (others.length > 0) return;
  let removed: string[];
  try {
    removed = await cleanWals(
      srv,
      { removeUntil: { id: entry.id, beginWal, timeline: entry.info.timeline }, protectedTimelines: new Set(), protectedRanges: [], floor: null },
      ev,
    );
  } catch (err) {
    // A wal_delete hook that stops the purge, or a file that cannot be removed, leaves the rest
    // of the WALs (xlog.db lists what is still there): the backup itself is fine.
    ev.warning?.(`WAL files archived before the first backup are kept: ${errorMessage(err)}`);
    return;
  }
  if (removed.length > 0) ev.info?.(`Removed ${removed.length} WAL files archived before the first backup`);
}


/**
 * Archive what arrived and check the WALs of a backup whose copy is complete; with --wait, loop
 * until DONE or the timeout. `signal` (SIGINT/SIGTERM) stops it on any pass with
 * BackupWaitInterruptedError, leaving the backup as it is (WAITING_FOR_WALS).
 */
export async function settle(srv: ServerConfig, entry: BackupEntry, opts: BackupOptions, ev: BackupEvents, signal?: AbortSignal): Promise<void> {
  const deadline = opts.waitTimeoutSec ? Date.now() + opts.waitTimeoutSec * 1000 : Infinity;
  let announced = false;
  const stopIfAborted = () => {
    if (!signal?.aborted) return;
    throw new BackupWaitInterruptedError(
      `Interrupted while waiting for the WAL files of backup ${entry.id} of server ${srv.name}: ` +
        `the copy is complete and the backup stays ${entry.info.status} (cron completes it once its WAL files are archived)`,
    );
  };
  for (;;) {
    stopIfAborted();
    await ev.archive?.().catch((err: unknown) => ev.warning?.(`archive-wal: ${errorMessage(err)}`));
    stopIfAborted();
    await primaryCheckpointIfDue(srv, entry, ev.info);
    try {
      await checkBackup(srv, entry);
    } catch (err) {
      // The archive could not be read (EACCES, EIO): that is no missing WAL, and no reason to
      // fail a complete copy. The backup stays WAITING_FOR_WALS; cron checks it again.
      ev.warning?.(`cannot check the WAL files of backup ${entry.id} now: ${errorMessage(err)}`);
      break;
    }
    if (entry.info.status !== WAITING_FOR_WALS || !opts.wait) break;
    if (!announced) {
      ev.info?.(`Waiting for the WAL file ${entry.info.end_wal ?? ''} to be archived`);
      announced = true;
    }
    if (Date.now() > deadline) {
      ev.warning?.(`The backup ${entry.id} is still waiting for WAL files after ${opts.waitTimeoutSec} seconds`);
      break;
    }
    await pause(1000, signal);
  }
  if (entry.info.status === WAITING_FOR_WALS) {
    ev.warning?.(
      'IMPORTANT: this backup is classified as WAITING_FOR_WALS, meaning that Barman has not received yet all the required WAL files for the backup consistency.',
    );
    ev.info?.('This is a common behaviour in concurrent backup scenarios, and Barman automatically set the backup as DONE once all the required WAL files have been archived.');
  } else if (entry.info.status === FAILED) {
    ev.warning?.(`Backup ${entry.id} FAILED: ${entry.info.error ?? ''}`);
  }
}

/**
 * primary_checkpoint_timeout: force a checkpoint and a WAL switch on the primary for a backup
 * still waiting for its WAL that long after its end (backup --wait, cron). A primary that
 * cannot be reached is only a warning in the log: the backup keeps waiting.
 */
export async function primaryCheckpointIfDue(srv: ServerConfig, entry: BackupEntry, info?: (msg: string) => void): Promise<void> {
  if (!primaryCheckpointDue(srv, entry.info, Date.now()) || !entry.info.end_wal) return;
  try {
    if (await forcePrimaryCheckpoint(srv, entry.info.end_wal)) {
      const msg = `Backup ${entry.id} of server ${srv.name} still waits for ${entry.info.end_wal} after primary_checkpoint_timeout (${srv.primary_checkpoint_timeout} s): forced a checkpoint and a WAL switch on the primary`;
      log.info(msg);
      info?.(msg);
    }
  } catch (err) {
    log.warning(`backup ${entry.id} of ${srv.name}: cannot force a checkpoint on the primary: ${errorMessage(err)}`);
  }
}

/**
 * A backup left STARTED/EMPTY by a process that no longer holds the backup lock died without
 * cleaning up (kill -9, power loss): record it as FAILED so that it is never taken for good.
 * The server's backup lock is acquired (not just probed) while marking, and each backup.info is
 * read again under it: a backup that finished meanwhile is left alone, never overwritten by the
 * stale STARTED copy. A busy lock means a backup is running: nothing is done.
 */
export async function markStaleBackups(srv: ServerConfig): Promise<string[]> {
  const inProgress = (e: BackupEntry) => e.info.status === STARTED || e.info.status === EMPTY;
  const candidates = (await loadCatalog(srv)).filter(inProgress);
  if (candidates.length === 0) return [];
  let lock: HeldLock;
  try {
    lock = await acquireLock(lockPath(srv, 'backup'), 'backup');
  } catch (err) {
    if (err instanceof LockBusyError) return [];
    throw err;
  }
  const fixed: string[] = [];
  try {
    for (const c of candidates) {
      let e: BackupEntry | null;
      try {
        e = await readBackupEntry(srv, c.id);
      } catch (err) {
        log.warning(`backup ${c.id} of ${srv.name}: cannot read its backup.info again: ${errorMessage(err)}`);
        continue;
      }
      if (!e || !inProgress(e)) continue;
      const info: BackupInfo = { ...e.info, status: FAILED, error: 'failure copying files (the backup process died before completing the backup)' };
      try {
        await saveBackupInfo(srv, e.id, info);
      } catch (err) {
        if (err instanceof BackupGoneError) continue;
        throw err;
      }
      log.warning(`backup ${e.id} of ${srv.name} was left ${e.info.status} by a dead process: marked FAILED`);
      fixed.push(e.id);
    }
  } finally {
    lock.release();
  }
  return fixed;
}

/**
 * autogenerate_manifest / `backup --manifest` (rsync methods): write backup_manifest once the
 * copy is complete, and count it in the backup's sizes (it is a file of the backup). As in
 * Barman, a manifest that cannot be written is a warning: the backup itself is good.
 */
async function autogenerateManifest(srv: ServerConfig, entry: BackupEntry, ev: BackupEvents, known?: CopyOutcome['knownChecksums']): Promise<void> {
  try {
    const res = await generateManifest(srv, entry, { copyDone: true, known });
    const bytes = (await fsp.stat(res.file)).size;
    entry.info = { ...entry.info, size: (entry.info.size ?? 0) + bytes, deduplicated_size: (entry.info.deduplicated_size ?? 0) + bytes };
    await saveBackupInfo(srv, entry.id, entry.info);
    ev.info?.(`Backup manifest for backup '${entry.id}' successfully generated for server ${srv.name}`);
  } catch (err) {
    ev.warning?.(`Cannot generate the backup manifest of backup ${entry.id} of server ${srv.name}: ${errorMessage(err)}`);
  }
}
