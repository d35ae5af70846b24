/**
 * `barman restore` (spec §7), local and remote (`--remote-ssh-command`): validate everything,
 * copy the base backup (and tablespaces) into the destination, copy the WAL recovery needs, write the recovery settings,
 * disable archive_command in the restored configuration, and make it all durable before
 * reporting success. The domain never prints: progress and messages go through `events`, the
 * outcome is returned as a RestoreResult for the CLI to render.
 *
 * One pipeline for both kinds: validation, target handling, WAL selection and the settings
 * text live here; only the writing differs (destination.ts: LocalDestination,
 * remote-destination.ts: RemoteDestination).
 */
import { existsSync, realpathSync, accessSync, constants as fsc, promises as fsp } from 'node:fs';
import { pathExists } from '../util/fsutil.js';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { backupType, serializeBackupInfo, unknownBackupInfoKeys, type BackupInfo, type Tablespace } from '../catalog/backup-info.js';
import { backupDataDir, loadCatalog, resolveBackupId, type BackupEntry } from '../catalog/catalog.js';
import { acquireLock, LockBusyError, type HeldLock } from '../catalog/lock.js';
import { backupLockPath } from '../catalog/server-dirs.js';
import { subprocessEnv } from '../postgres/binaries.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { FILE_MODE } from '../util/fsutil.js';
import { faultPoint } from '../util/fault.js';
import { logger } from '../util/log.js';
import { run } from '../util/proc.js';
import { localNowPyDateTime, type PyDateTime } from '../util/pytime.js';
import { BARMAN_SCRIPT } from '../util/self.js';
import { historyName } from '../wal/names.js';
import { isTarBackup, listTarArchives, type TarDecryption } from './copy.js';
import { encryptionEnabled, serverDecryptor, type ServerDecryptor } from '../catalog/encryption.js';
import { unsupportedSettings } from '../config/support.js';
import { DATA_EXCLUDES, LocalDestination, type RestoreDestination, type RestoredFile } from './destination.js';
import { backupHookInfo, runRecoveryHooks, type RecoveryHookInfo } from '../hooks/hooks.js';
import {
  checkBackupForRestore,
  chooseAutoBackup,
  isPitr,
  normalizeDestination,
  parseRecoveryTarget,
  parseTablespaceRules,
  tablespaceTargets,
  type RecoveryTarget,
  type TargetOptions,
} from './options.js';
import { RemoteDestination } from './remote-destination.js';
import { StoreReader } from '../agent/store.js';
import {
  autoConfAppendix,
  mangleConfig,
  needsRecoverySettings,
  recoveryConfText,
  restoreCommandValue,
  type ConfigLine,
  type RecoverySettingsInput,
} from './settings.js';
import {
  customCompression,
  listArchive,
  readArchivedText,
  resolveTargetTli,
  selectRequiredWals,
  timelineAncestry,
} from './wal.js';

const log = logger('recovery');

export { DATA_EXCLUDES };

/** Default number of concurrent file copies for a local restore. */
export const DEFAULT_COPY_WORKERS = 4;

/**
 * Workers when neither --jobs nor a larger parallel_jobs says otherwise: DEFAULT_COPY_WORKERS,
 * but never more than this host's cores for a remote restore, where every worker is an ssh
 * session whose encryption takes a core here (measured on 2 cores: 4 sessions pushed 1.5 GB in
 * 21 s, one in 15 s).
 */
export function defaultCopyWorkers(remote: boolean, parallelJobs: number, cores = os.availableParallelism()): number {
  const floor = remote ? Math.min(DEFAULT_COPY_WORKERS, Math.max(1, cores)) : DEFAULT_COPY_WORKERS;
  return Math.max(1, parallelJobs, floor);
}

export interface RestoreRequest extends TargetOptions {
  /** BACKUP_ID argument: an ID, a shortcut, a name or `auto`. */
  backupId: string;
  destination: string;
  /** `--tablespace NAME:LOCATION` rules. */
  tablespaces?: readonly string[];
  standbyMode?: boolean;
  remoteSshCommand?: string | null;
  stagingWalDirectory?: string | null;
  /** true/false from --get-wal/--no-get-wal; undefined = recovery_options. */
  getWal?: boolean;
  /** true/false from --delta-restore/--no-delta-restore; undefined = recovery_options. */
  deltaRestore?: boolean;
  /** true/false from --network-compression/--no-network-compression; undefined = network_compression. */
  networkCompression?: boolean;
  /** Retries of a failed remote copy (null = basebackup_retry_times) and seconds between them. */
  retryTimes?: number | null;
  retrySleep?: number | null;
  /** Remote copy sessions started per batch and seconds between batches (null = parallel_jobs_start_batch_*). */
  jobsStartBatchSize?: number | null;
  jobsStartBatchPeriod?: number | null;
  stagingLocation?: string | null;
  /** PostgreSQL >= 12: file (relative to the destination) receiving the recovery settings. */
  recoveryConfFilename?: string | null;
  /** Concurrent copies (default: max(parallel_jobs, 4)). */
  jobs?: number | null;
  bwlimit?: number | null;
  snapshotRecoveryInstance?: string | null;
  /** Other snapshot-only options given (`--aws-region`, `--gcp-zone`, ...), by name. */
  snapshotOptions?: readonly string[];
  /** Local staging area of a remote restore (default /tmp). */
  stagingPath?: string | null;
  /** --recovery-option-port: SSH port of this host for barman-wal-restore (remote get-wal). */
  recoveryOptionPort?: number | null;
  /** The words PostgreSQL's restore_command uses to call barman (see barmanInvocation). */
  barmanCommand?: readonly string[];
  /** Run pre/post_recovery_script hooks (default true; a recovery drill is not a recovery). */
  runHooks?: boolean;
}

export interface RestoreEvents {
  info?: (msg: string) => void;
  warning?: (msg: string) => void;
  /** Bytes of the base backup copied so far / total ('data'), WAL files copied / total ('wal'). */
  progress?: (done: number, total: number, phase: 'data' | 'wal') => void;
  /** Archive pending WAL files of the server first (spec §7 step 1). */
  archive?: () => Promise<void>;
}

export interface RestoreResult {
  serverName: string;
  backupId: string;
  destination: string;
  /** The --remote-ssh-command of a remote restore, null for a local one. */
  remoteSshCommand: string | null;
  startTime: PyDateTime;
  elapsedSeconds: number;
  pitr: boolean;
  /** Target description for output (time as Python str). */
  target: {
    time: string | null;
    xid: string | null;
    lsn: string | null;
    name: string | null;
    immediate: boolean;
    tli: string | null;
    exclusive: boolean;
    action: string | null;
  };
  tablespaces: Tablespace[];
  getWal: boolean;
  deltaRestore: boolean;
  standbyMode: boolean;
  copy: { method: 'copy' | 'tar' | 'rsync' | 'agent'; files: number; bytes: number; seconds: number };
  wal: { destination: string | null; files: number; bytes: number; seconds: number; targetTimeline: number | null; missing: string[] };
  /** Files written with the recovery settings (postgresql.auto.conf, recovery.conf...). */
  recoveryFiles: string[];
  /** The restore_command written into the settings (unquoted), null when none was written. */
  restoreCommand: string | null;
  signalFile: string | null;
  /** Settings changed to prevent data loss. */
  changes: ConfigLine[];
  /** Stale recovery settings commented out. */
  commented: ConfigLine[];
  /** Options to review. */
  dangerous: ConfigLine[];
  /** Configuration files outside the data directory, hence not restored. */
  missingFiles: string[];
  /** The barman_wal directory (or staging dir) to delete after recovery, if any. */
  walDirectoryToRemove: string | null;
  /** How the restore was made durable ('remote': flushed on the recovery host). */
  durability: 'syncfs' | 'fsync' | 'remote';
  warnings: string[];
}

// ---------------------------------------------------------------------------------------------
// How PostgreSQL calls barman back (restore_command with get-wal)

const DEFAULT_SYSTEM_CONFIGS = ['/etc/barman.conf', '/etc/barman/barman.conf'];

function findOnPath(name: string, pathEnv: string): string | null {
  for (const dir of pathEnv.split(':')) {
    if (!dir) continue;
    const p = path.join(dir, name);
    try {
      accessSync(p, fsc.X_OK);
      return p;
    } catch {
      /* keep looking */
    }
  }
  return null;
}

/**
 * The command words PostgreSQL should run to reach this barman: `barman` when that name on
 * PATH is this program, otherwise node with the absolute path of bin/barman.js; plus
 * `-c <config>` unless the configuration is at a system-wide default location (the
 * restore_command runs as another user, whose ~/.barman.conf is not ours).
 */
export function barmanInvocation(configFile: string, pathEnv = process.env.PATH ?? ''): string[] {
  const script = BARMAN_SCRIPT;
  let words: string[];
  const onPath = findOnPath('barman', pathEnv);
  let same = false;
  if (onPath) {
    try {
      same = realpathSync(onPath) === realpathSync(script);
    } catch {
      same = false;
    }
  }
  words = same ? ['barman'] : [process.execPath, existsSync(script) ? script : path.resolve(process.argv[1] ?? script)];
  const cfg = path.resolve(configFile);
  if (!DEFAULT_SYSTEM_CONFIGS.includes(cfg)) words = [...words, '-c', cfg];
  return words;
}

// ---------------------------------------------------------------------------------------------

function targetSummary(t: RecoveryTarget): RestoreResult['target'] {
  return {
    time: t.time?.format() ?? null,
    xid: t.xid,
    lsn: t.lsn,
    name: t.name,
    immediate: t.immediate,
    tli: t.tli === null ? null : String(t.tli),
    exclusive: t.exclusive,
    action: t.action,
  };
}

/** Non-empty target options, for BARMAN_RECOVER_OPTIONS. */
function recoverOptionsForHooks(t: RecoveryTarget, req: RestoreRequest): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  if (t.time) o.target_time = t.time.format();
  if (t.xid) o.target_xid = t.xid;
  if (t.lsn) o.target_lsn = t.lsn;
  if (t.name) o.target_name = t.name;
  if (t.immediate) o.target_immediate = true;
  if (t.tli !== null) o.target_tli = t.tli;
  if (t.exclusive) o.exclusive = true;
  if (t.action) o.target_action = t.action;
  if (req.standbyMode) o.standby_mode = true;
  return o;
}

function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
}

/** Config files of the backup that live outside PGDATA (so they were not backed up). */
export function missingConfigFiles(info: BackupInfo): string[] {
  const out: string[] = [];
  if (!info.pgdata) return out;
  for (const f of [info.config_file, info.hba_file, info.ident_file]) {
    if (f && !isInside(f, info.pgdata)) out.push(f);
  }
  return out;
}

/**
 * The decryption an encrypted backup needs, or undefined for a backup in clear. A backup is
 * encrypted when backup.info says so or when its tar files carry `.gpg`: a catalog where the
 * two disagree is refused rather than half restored.
 */
async function backupDecryption(srv: ServerConfig, id: string, info: BackupInfo, dataDir: string, tarFormat: boolean): Promise<TarDecryption | undefined> {
  const tars = tarFormat ? [...(await listTarArchives(dataDir)).values()] : [];
  const encryptedTars = tars.filter((t) => t.encrypted).length;
  if (info.encryption === null && encryptedTars === 0) return undefined;
  if (info.encryption !== null && info.encryption !== 'gpg') throw new BarmanError(`Backup ${id} is encrypted with '${info.encryption}', which barman-ts cannot decrypt (only gpg)`);
  if (!tarFormat || encryptedTars === 0) throw new BarmanError(`Backup ${id} is recorded as encrypted (gpg) but has no encrypted tar file (*.tar*.gpg) in ${dataDir}`);
  const d = serverDecryptor(srv, `Backup ${id}`);
  return { gpg: d.gpg(), passphrase: await d.passphrase() };
}

function gzipDecompressor(env: NodeJS.ProcessEnv): string | undefined {
  // pigz decompresses a little faster (separate read, write and check threads)
  return findOnPath('pigz', env.PATH ?? '') ? 'pigz' : undefined;
}

/** FQDN of this host, as barman-wal-restore on the recovery host must reach it. */
async function barmanHostFqdn(env: NodeJS.ProcessEnv): Promise<string> {
  const res = await run('hostname', ['-f'], { env, timeoutMs: 10_000 }).catch(() => null);
  const name = res && res.code === 0 ? res.stdout.trim() : '';
  return name !== '' && !/\s/.test(name) ? name : os.hostname();
}

/** Restore a backup, locally or on a remote host. See the module comment. */
/** Where a restore's messages go: the log, the result's warnings, the caller's events. */
interface Say {
  info(m: string): void;
  warn(m: string): void;
  readonly warnings: string[];
}

function sayFor(events: RestoreEvents): Say {
  const warnings: string[] = [];
  return {
    warnings,
    info(m) {
      log.info(m);
      events.info?.(m);
    },
    warn(m) {
      log.warning(m);
      warnings.push(m);
      events.warning?.(m);
    },
  };
}

/** Everything a restore decided before writing anything (see planRestore). */
interface RestorePlan {
  srv: ServerConfig;
  events: RestoreEvents;
  say: Say;
  started: number;
  startTime: PyDateTime;
  sshCommand: string | null;
  remote: boolean;
  target: RecoveryTarget;
  dest: string;
  entries: BackupEntry[];
  entry: BackupEntry;
  id: string;
  binfo: BackupInfo;
  version: number;
  srcData: string;
  tarFormat: boolean;
  walDecryptor: ServerDecryptor;
  tarDecrypt: TarDecryption | undefined;
  delta: boolean;
  relocation: Map<string, string>;
  tablespaces: Tablespace[];
  getWal: boolean;
  standby: boolean;
  pitr: boolean;
  /** Where the WAL for recovery goes: barman_wal (or the staging dir) for PITR, pg_wal otherwise; none with get-wal. */
  walDest: string | null;
  settingsName: string;
  workers: number;
  env: NodeJS.ProcessEnv;
  barmanCommand: readonly string[];
  destination: RestoreDestination;
  remoteGetWal: RecoverySettingsInput['remoteGetWal'];
}

/** The backup to restore, refused when it is of a kind barman-ts cannot restore. */
async function chooseBackup(srv: ServerConfig, req: RestoreRequest, target: RecoveryTarget): Promise<{ entries: BackupEntry[]; entry: BackupEntry }> {
  const entries = await loadCatalog(srv);
  const entry: BackupEntry = req.backupId === 'auto' ? chooseAutoBackup(entries, target, srv.name) : resolveBackupId(srv, entries, req.backupId);
  const { id, info: binfo } = entry;
  checkBackupForRestore(id, binfo, target, { standbyMode: req.standbyMode });
  const newer = unknownBackupInfoKeys(binfo);
  if (newer.length > 0) {
    throw new BarmanError(`Backup ${id} was written by a newer Barman (backup.info fields ${newer.join(', ')}): barman-ts cannot restore it; use that Barman`);
  }
  const kind = backupType(binfo);
  if (kind === 'snapshot') {
    if (!req.snapshotRecoveryInstance) throw new BarmanError(`Backup ${id} is a snapshot backup: --snapshot-recovery-instance is required`);
    if ((req.tablespaces ?? []).length > 0) throw new BarmanError('--tablespace cannot be used with snapshot backups');
    throw new BarmanError('Recovery of snapshot backups is not supported yet');
  }
  if (req.snapshotRecoveryInstance) throw new BarmanError(`--snapshot-recovery-instance can only be used with snapshot backups (backup ${id} is not one)`);
  const snapshotOnly = req.snapshotOptions ?? [];
  if (snapshotOnly.length > 0) throw new BarmanError(`${snapshotOnly.join(', ')}: only for snapshot backups (backup ${id} is not one)`);
  if (kind === 'incremental') throw new BarmanError(`Backup ${id} is an incremental backup: restoring incremental backups is not supported yet`);
  return { entries, entry };
}

/** The destination and the tablespace locations: apart from each other and (local) from the catalog. */
function checkLocations(srv: ServerConfig, dest: string, tablespaces: readonly Tablespace[], remote: boolean): void {
  // The catalog is on this host: a remote destination cannot overlap it.
  if (!remote) {
    const catalogDir = path.resolve(srv.backup_directory);
    for (const [what, p] of [['destination directory', dest], ...tablespaces.map((t) => [`location of tablespace '${t.name}'`, t.location])] as [string, string][]) {
      if (p === catalogDir || isInside(p, catalogDir) || isInside(catalogDir, p)) {
        throw new BarmanError(`The ${what} '${p}' overlaps the backup directory of server ${srv.name} (${catalogDir})`);
      }
    }
  }
  const seen = new Map<string, string>([[dest, 'the destination directory']]);
  for (const t of tablespaces) {
    const other = seen.get(t.location) ?? [...seen].find(([p]) => isInside(p, t.location))?.[1];
    if (other) throw new BarmanError(`The location of tablespace '${t.name}' (${t.location}) overlaps ${other}`);
    seen.set(t.location, `tablespace '${t.name}'`);
  }
}

/** The staging WAL directory of a PITR without get-wal (--staging-wal-directory), else null. */
function stagingWalDirectory(req: RestoreRequest, pitr: boolean, getWal: boolean, say: Say): string | null {
  if (!req.stagingWalDirectory) return null;
  if (!pitr || getWal) {
    say.warn('--staging-wal-directory is ignored: WAL files are only staged for a point-in-time recovery without get-wal');
    return null;
  }
  const dir = path.resolve(req.stagingWalDirectory);
  if (dir.includes(':')) throw new BarmanError(`The staging WAL directory '${dir}' cannot contain ':'`);
  return dir;
}

/** The file receiving the recovery settings (postgresql.auto.conf, --recovery-conf-filename, recovery.conf). */
function settingsFileName(req: RestoreRequest, version: number, dest: string, remote: boolean, say: Say): string {
  const recoveryConfFile = req.recoveryConfFilename ?? null;
  if (recoveryConfFile !== null && version < 120000) {
    say.warn('--recovery-conf-filename is ignored for PostgreSQL < 12 (recovery.conf is used)');
  }
  const settingsName = version >= 120000 ? (recoveryConfFile ?? 'postgresql.auto.conf') : 'recovery.conf';
  if (remote && !isInside(path.resolve(dest, settingsName), dest)) {
    throw new BarmanError(`--recovery-conf-filename '${settingsName}' must name a file inside the destination directory for a remote restore`);
  }
  return settingsName;
}

/** Validation and decisions: nothing is written before all of it passes. */
async function planRestore(srv: ServerConfig, req: RestoreRequest, events: RestoreEvents, say: Say): Promise<RestorePlan> {
  const started = Date.now();
  const startTime = localNowPyDateTime();
  const sshCommand = req.remoteSshCommand && req.remoteSshCommand.trim() !== '' ? req.remoteSshCommand.trim() : null;
  const remote = sshCommand !== null;
  if (req.networkCompression && !remote) throw new BarmanError('Network compression can only be used with remote recovery (--remote-ssh-command)');
  if (req.stagingLocation === 'remote') {
    throw new BarmanError(
      remote ? '--staging-location remote is not supported yet: use the default (local)' : "--staging-location remote can only be used with remote recovery (--remote-ssh-command)",
    );
  }
  const { target, warnings: targetWarnings } = parseRecoveryTarget(req);
  for (const w of targetWarnings) say.warn(w);
  const dest = normalizeDestination(req.destination);
  const { entries, entry } = await chooseBackup(srv, req, target);
  const { id, info: binfo } = entry;
  const version = binfo.version as number;

  const srcData = backupDataDir(srv, id);
  if (!(await pathExists(srcData))) throw new BarmanError(`The data of backup ${id} is missing: ${srcData} does not exist`);
  const tarFormat = await isTarBackup(srcData);
  // Encrypted backups (encryption=gpg, `.gpg` tar files): the passphrase is obtained now, so
  // that a missing or failing encryption_passphrase_command stops the restore before anything
  // is written. WAL files are decrypted with the same passphrase when met.
  const walDecryptor = serverDecryptor(srv, 'A WAL file recovery needs');
  const tarDecrypt = await backupDecryption(srv, id, binfo, srcData, tarFormat);
  // Compressed and encrypted backups are prepared in a staging area for a remote restore:
  // barman-ts stages on this host only (staging_path, default /tmp).
  if (remote && tarFormat) {
    const refused = unsupportedSettings(srv).find((u) => u.refusedBy === 'restore');
    if (refused) throw new BarmanError(refused.message);
  }

  const recoveryOptions = (srv.recovery_options as readonly string[] | null) ?? [];
  let delta = req.deltaRestore ?? recoveryOptions.includes('delta-restore');
  if (delta && tarFormat && !remote) {
    if (req.deltaRestore) throw new BarmanError(`Delta restore is not possible for backup ${id}: it is compressed`);
    say.warn(`recovery_options 'delta-restore' ignored: backup ${id} is compressed`);
    delta = false;
  }
  const relocation = parseTablespaceRules(req.tablespaces ?? [], binfo.tablespaces);
  const tablespaces = tablespaceTargets(binfo.tablespaces, relocation);
  checkLocations(srv, dest, tablespaces, remote);

  const getWal = req.getWal ?? recoveryOptions.includes('get-wal');
  if (getWal && !remote && encryptionEnabled(srv)) {
    say.warn(`WAL files of server ${srv.name} are encrypted (gpg): PostgreSQL's restore_command 'barman get-wal' must run as the barman user, whose keys decrypt them`);
  }
  const pitr = isPitr(target);
  const walName = version >= 100000 ? 'pg_wal' : 'pg_xlog';
  const stagingWal = stagingWalDirectory(req, pitr, getWal, say);
  const walDest = getWal ? null : pitr ? (stagingWal ?? path.join(dest, 'barman_wal')) : path.join(dest, walName);
  const settingsName = settingsFileName(req, version, dest, remote, say);
  if (req.bwlimit && !remote) say.warn('--bwlimit is ignored by local restores');
  const workers = Math.max(1, req.jobs ?? defaultCopyWorkers(remote, srv.parallel_jobs ?? 1));
  const env = subprocessEnv(srv.path_prefix);
  const barmanCommand = req.barmanCommand ?? barmanInvocation(srv.global.configFile);
  const layout = { dest, tablespaces, walName, backupId: id, stagingWal };
  const destination: RestoreDestination = remote
    ? new RemoteDestination(layout, {
        sshCommand,
        bwlimit: req.bwlimit ?? null,
        networkCompression: req.networkCompression ?? srv.network_compression ?? false,
        retryTimes: req.retryTimes ?? srv.basebackup_retry_times ?? 0,
        retrySleepSeconds: req.retrySleep ?? srv.basebackup_retry_sleep ?? 30,
        startBatchSize: req.jobsStartBatchSize ?? srv.parallel_jobs_start_batch_size,
        startBatchPeriod: req.jobsStartBatchPeriod ?? srv.parallel_jobs_start_batch_period,
        stagingBase: path.resolve(req.stagingPath ?? '/tmp'),
        env,
      })
    : new LocalDestination(layout, env);
  // last: on a remote host this is the first contact (ssh), after every local rule passed
  await destination.check(delta);
  const remoteGetWal = remote && getWal ? { barmanHost: await barmanHostFqdn(env), port: req.recoveryOptionPort ?? null, parallel: srv.parallel_jobs ?? 1 } : null;
  return {
    srv,
    events,
    say,
    started,
    startTime,
    sshCommand,
    remote,
    target,
    dest,
    entries,
    entry,
    id,
    binfo,
    version,
    srcData,
    tarFormat,
    walDecryptor,
    tarDecrypt,
    delta,
    relocation,
    tablespaces,
    getWal,
    standby: req.standbyMode === true,
    pitr,
    walDest,
    settingsName,
    workers,
    env,
    barmanCommand,
    destination,
    remoteGetWal,
  };
}

/** The first lines of a restore: where, from what, to which target, the tablespaces. */
function announce(p: RestorePlan): void {
  const { say, target } = p;
  say.info(`Starting ${p.destination.where} restore for server ${p.srv.name} using backup ${p.id}`);
  say.info(`Destination directory: ${p.dest}`);
  if (p.remote) say.info(`Remote command: ${p.sshCommand ?? ''}`);
  if (p.pitr) {
    const details = [
      target.time && `Recovery target time: '${target.time.format()}'`,
      target.xid && `Recovery target xid: '${target.xid}'`,
      target.lsn && `Recovery target LSN: '${target.lsn}'`,
      target.name && `Recovery target name: '${target.name}'`,
      target.immediate && 'Recovery target: immediate (end of the backup)',
      target.tli !== null && `Recovery target timeline: '${String(target.tli)}'`,
      target.exclusive && 'Recovery target inclusive: False',
      target.action && `Recovery target action: '${target.action}'`,
    ].filter((x): x is string => typeof x === 'string');
    say.info(`Doing PITR. ${details[0] ?? ''}`);
    for (const d of details.slice(1)) say.info(d);
  }
  for (const t of p.tablespaces) say.info(`Restoring tablespace '${t.name}' (oid ${t.oid}) to ${t.location}${p.relocation.has(t.name) ? ' (relocated)' : ''}`);
}

export async function restoreBackup(srv: ServerConfig, req: RestoreRequest, events: RestoreEvents = {}): Promise<RestoreResult> {
  const say = sayFor(events);
  const plan = await planRestore(srv, req, events, say);
  const { id, dest, remote, destination } = plan;
  let lock: HeldLock;
  try {
    lock = await acquireLock(backupLockPath(srv, id), `operation on backup ${id}`);
  } catch (err) {
    if (err instanceof LockBusyError) throw new BarmanError(`Backup ${id} of server ${srv.name} is in use by another process${err.holderPid ? ` (PID ${err.holderPid})` : ''}`);
    throw err;
  }
  const hookEnv: RecoveryHookInfo = {
    ...backupHookInfo(srv, plan.entry, plan.entries),
    destination: dest,
    tablespaces: plan.tablespaces.length ? Object.fromEntries(plan.tablespaces.map((t) => [t.name, t.location])) : null,
    remoteCommand: plan.sshCommand,
    recoverOptions: recoverOptionsForHooks(plan.target, req),
  };
  const hooks = req.runHooks !== false;
  try {
    announce(plan);
    if (events.archive) {
      try {
        await events.archive();
      } catch (err) {
        say.warn(`Archiving pending WAL files failed: ${errorMessage(err)}`);
      }
    }
    if (hooks) await runRecoveryHooks(srv, 'pre', hookEnv, { warning: say.warn });
    let result: RestoreResult;
    try {
      result = await runRestore(plan);
    } catch (err) {
      throw new BarmanError(
        `Restore of backup ${id} into ${remote ? 'the remote directory ' : ''}${dest} failed: ${errorMessage(err)} (the destination is incomplete: empty it before trying again)`,
      );
    } finally {
      await destination.cleanup();
    }
    if (hooks) await runRecoveryHooks(srv, 'post', hookEnv, { warning: say.warn });
    return result;
  } catch (err) {
    if (hooks) await runRecoveryHooks(srv, 'post', { ...hookEnv, error: errorMessage(err) }, { warning: say.warn }).catch(() => undefined);
    throw err;
  } finally {
    lock.release();
  }
}

/** The base backup (and tablespaces) into the destination. */
async function copyBaseBackup(p: RestorePlan): Promise<RestoreResult['copy']> {
  const { srv, id, delta, remote, events } = p;
  p.say.info(delta ? 'Copying the base backup (delta restore).' : 'Copying the base backup.');
  const copyStart = Date.now();
  // transfer_method = agent: barman-ts agents write a remote restore, or a delta restore.
  const store = srv.transfer_method === 'agent' && (remote || delta) ? await StoreReader.open(srv, id) : null;
  const agent = srv.transfer_method === 'agent' && (remote || delta) ? { codec: String(srv.agent_compression ?? 'zstd'), level: Number(srv.agent_compression_level ?? 1), store } : undefined;
  try {
    const copied = await p.destination.copyBase(
      { dataDir: p.srcData, tarFormat: p.tarFormat, tablespaceDir: (oid) => backupDataDir(srv, id, oid) },
      { delta, agent, workers: p.workers, env: p.env, gzipProgram: gzipDecompressor(p.env), decrypt: p.tarDecrypt, onProgress: (d, t) => events.progress?.(d, t, 'data') },
    );
    return { ...copied, seconds: (Date.now() - copyStart) / 1000 };
  } finally {
    await store?.close();
  }
}

/** The WAL files recovery needs (none with get-wal): into pg_wal, barman_wal or the staging directory. */
async function copyRequiredWals(p: RestorePlan): Promise<RestoreResult['wal']> {
  const { srv, binfo, walDest, target, version, pitr, say, events } = p;
  const walStart = Date.now();
  const wal: RestoreResult['wal'] = { destination: walDest, files: 0, bytes: 0, seconds: 0, targetTimeline: null, missing: [] };
  if (walDest === null) return wal;
  say.info('Copying required WAL segments.');
  const listing = await listArchive(srv, binfo.begin_wal as string, 0xffffffff);
  const historyTlis = listing.history.map((h) => parseInt(h.name.slice(0, 8), 16));
  const targetTli = resolveTargetTli(target.tli, binfo.timeline as number, version, pitr, historyTlis);
  wal.targetTimeline = targetTli;
  const hist = listing.history.find((h) => h.name === historyName(targetTli));
  let ancestry = null;
  try {
    ancestry = timelineAncestry(targetTli, hist ? await readArchivedText(hist.path, customCompression(srv), p.walDecryptor) : null);
  } catch (err) {
    say.warn(`Cannot read the history of timeline ${targetTli}: ${errorMessage(err)}`);
  }
  if (typeof target.tli === 'number' && target.tli > (binfo.timeline as number) && !hist) {
    say.warn(`Timeline ${target.tli} has no history file in the archive: recovery may not be able to reach it`);
  }
  const sel = selectRequiredWals({ beginWal: binfo.begin_wal as string, endWal: binfo.end_wal, segSize: binfo.xlog_segment_size, version, target, targetTli, ancestry, listing });
  wal.missing = sel.missing;
  if (sel.missing.length > 0) {
    say.warn(`${sel.missing.length} WAL file(s) needed to make backup ${p.id} consistent are not in the archive (first: ${sel.missing[0] as string}): recovery will fail until they are available`);
  }
  const files = [...sel.history, ...sel.segments];
  let n = 0;
  events.progress?.(0, files.length, 'wal');
  if (!pitr) say.info('Generating archive status files');
  wal.bytes = await p.destination.placeWals(files, {
    walDest,
    doneFiles: !pitr,
    workers: p.workers,
    custom: customCompression(srv),
    decryptor: p.walDecryptor,
    onFile: () => events.progress?.(++n, files.length, 'wal'),
  });
  wal.files = files.length;
  wal.seconds = (Date.now() - walStart) / 1000;
  return wal;
}

/** The restored configuration, made safe, and the recovery settings: files to write, and what changed. */
interface RecoveryConfiguration {
  out: RestoredFile[];
  changes: ConfigLine[];
  commented: ConfigLine[];
  dangerous: ConfigLine[];
  recoveryFiles: string[];
  signalFile: string | null;
  restoreCommand: string | null;
}

async function recoveryConfiguration(p: RestorePlan): Promise<RecoveryConfiguration> {
  const { srv, version, destination, say, settingsName } = p;
  // Mangled first: recovery settings are appended after.
  const withSettings = needsRecoverySettings(p.pitr, p.getWal, p.standby);
  if (withSettings) say.info('Generating recovery configuration');
  say.info('Identify dangerous settings in destination directory.');
  // .barman-recover.info: the backup.info of what was restored (safe horizon of later deltas)
  const out: RestoredFile[] = [{ rel: '.barman-recover.info', text: serializeBackupInfo(p.binfo), mode: FILE_MODE }];
  /** Current content of the files changed so far (rel → text/mode). */
  const current = new Map<string, { text: string; mode: number }>();
  const saveOrigin = (rel: string, orig: { text: string; mode: number }) => {
    if (!out.some((f) => f.rel === `${rel}.origin`)) out.push({ rel: `${rel}.origin`, text: orig.text, mode: orig.mode, copyOf: rel });
  };
  const conf: RecoveryConfiguration = { out, changes: [], commented: [], dangerous: [], recoveryFiles: [], signalFile: null, restoreCommand: null };
  let haveConf = false;
  for (const name of ['postgresql.conf', ...(version >= 90400 ? ['postgresql.auto.conf'] : [])]) {
    const orig = await destination.readRestored(name);
    if (orig === null) continue;
    if (name === 'postgresql.conf') haveConf = true;
    const m = mangleConfig(orig.text, name, { commentRecoveryTargets: version >= 120000 });
    conf.changes.push(...m.changes);
    conf.commented.push(...m.commented);
    conf.dangerous.push(...m.dangerous);
    if (m.modified) {
      saveOrigin(name, orig);
      current.set(name, { text: m.text, mode: orig.mode });
    }
  }
  if (!haveConf) {
    say.warn(`postgresql.conf is not in the restored data directory: make sure archive_command is disabled before starting the server`);
  }
  if (withSettings) {
    const settings: RecoverySettingsInput = {
      version,
      serverName: srv.name,
      target: p.target,
      getWal: p.getWal,
      standbyMode: p.standby,
      walDir: p.pitr && !p.getWal ? p.walDest : null,
      barmanCommand: p.barmanCommand,
      barmanUser: srv.global.barman_user ?? 'barman',
      remoteGetWal: p.remoteGetWal,
    };
    conf.restoreCommand = restoreCommandValue(settings);
    if (version >= 120000) {
      const existing = current.get(settingsName) ?? (await destination.readRestored(settingsName));
      // keep the file as it was restored (mangling may already have saved it)
      if (existing !== null && existing.text !== '') {
        const restored = await destination.readRestored(settingsName);
        if (restored) saveOrigin(settingsName, restored);
      }
      const text = existing?.text ?? '';
      current.set(settingsName, { text: text + autoConfAppendix(text, settings), mode: text !== '' && existing ? existing.mode : FILE_MODE });
      conf.signalFile = p.standby ? 'standby.signal' : 'recovery.signal';
    } else {
      current.set(settingsName, { text: recoveryConfText(settings), mode: FILE_MODE });
    }
    conf.recoveryFiles.push(path.resolve(p.dest, settingsName));
  }
  for (const [rel, f] of current) out.push({ rel, ...f });
  return conf;
}

/** The writing part of a restore, in order: base backup, WAL, configuration, durability, signal file. */
async function runRestore(p: RestorePlan): Promise<RestoreResult> {
  const copy = await copyBaseBackup(p);
  faultPoint('recover:base-copied');
  const wal = await copyRequiredWals(p);
  faultPoint('recover:wals-copied');
  const conf = await recoveryConfiguration(p);
  faultPoint('recover:before-finish');
  const durability = await p.destination.finish(conf.out, conf.signalFile);
  faultPoint('recover:finished');
  return {
    serverName: p.srv.name,
    backupId: p.id,
    destination: p.dest,
    remoteSshCommand: p.sshCommand,
    startTime: p.startTime,
    elapsedSeconds: (Date.now() - p.started) / 1000,
    pitr: p.pitr,
    target: targetSummary(p.target),
    tablespaces: p.tablespaces,
    getWal: p.getWal,
    deltaRestore: p.delta,
    standbyMode: p.standby,
    copy,
    wal,
    recoveryFiles: conf.recoveryFiles,
    restoreCommand: conf.restoreCommand,
    signalFile: conf.signalFile === null ? null : path.join(p.dest, conf.signalFile),
    changes: conf.changes,
    commented: conf.commented,
    dangerous: conf.dangerous,
    missingFiles: missingConfigFiles(p.binfo),
    walDirectoryToRemove: p.pitr && !p.getWal ? p.walDest : null,
    durability,
    warnings: p.say.warnings,
  };
}
