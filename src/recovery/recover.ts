/**
 * `barman restore` (spec §7), local restores: validate everything, copy the base backup (and
 * tablespaces) into the destination, copy the WAL recovery needs, write the recovery settings,
 * disable archive_command in the restored configuration, and make it all durable before
 * reporting success. The domain never prints: progress and messages go through `events`, the
 * outcome is returned as a RestoreResult for the CLI to render.
 */
import { existsSync, promises as fsp, realpathSync, accessSync, constants as fsc } from 'node:fs';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { backupType, serializeBackupInfo, type BackupInfo, type Tablespace } from '../catalog/backup-info.js';
import { backupDataDir, loadCatalog, resolveBackupId, type BackupEntry } from '../catalog/catalog.js';
import { acquireLock, LockBusyError, type HeldLock } from '../catalog/lock.js';
import { backupLockPath } from '../catalog/server-dirs.js';
import { subprocessEnv } from '../postgres/binaries.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { FILE_MODE } from '../util/fsutil.js';
import { logger } from '../util/log.js';
import { run } from '../util/proc.js';
import { localNowPyDateTime, type PyDateTime } from '../util/pytime.js';
import { BARMAN_SCRIPT } from '../util/self.js';
import { historyName } from '../wal/names.js';
import {
  copyTree,
  EarlyWriteback,
  excluder,
  extractTar,
  isTarBackup,
  listTarArchives,
  scanTree,
  syncFilesystems,
  type TreeScan,
} from './copy.js';
import { backupHookInfo, runRecoveryHooks, type RecoveryHookInfo } from '../hooks/hooks.js';
import {
  checkBackupForRestore,
  checkDestination,
  checkEmptyOrAbsent,
  chooseAutoBackup,
  isPitr,
  normalizeDestination,
  parseRecoveryTarget,
  parseTablespaceRules,
  tablespaceTargets,
  type RecoveryTarget,
  type TargetOptions,
} from './options.js';
import {
  autoConfAppendix,
  mangleConfig,
  needsRecoverySettings,
  recoveryConfText,
  type ConfigLine,
  type RecoverySettingsInput,
} from './settings.js';
import {
  copyWals,
  customCompression,
  listArchive,
  resolveTargetTli,
  selectRequiredWals,
  timelineAncestry,
  writeDoneFiles,
} from './wal.js';
import { runPool } from '../util/pool.js';

const log = logger('recovery');

/** Files and directories of the backup that are never restored (anchored at the data dir). */
export const DATA_EXCLUDES: readonly string[] = [
  'pg_log/*',
  'log/*',
  'pg_xlog/*',
  'pg_wal/*',
  'postmaster.pid',
  'postmaster.opts',
  'recovery.conf',
  'recovery.signal',
  'standby.signal',
  'tablespace_map',
  // tablespace links are recreated to the (possibly relocated) locations
  'pg_tblspc/*',
];

/** Default number of concurrent file copies for a local restore. */
export const DEFAULT_COPY_WORKERS = 4;

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
  networkCompression?: boolean;
  stagingLocation?: string | null;
  /** PostgreSQL >= 12: file (relative to the destination) receiving the recovery settings. */
  recoveryConfFilename?: string | null;
  /** Concurrent copies (default: max(parallel_jobs, 4)). */
  jobs?: number | null;
  bwlimit?: number | null;
  snapshotRecoveryInstance?: string | null;
  /** The words PostgreSQL's restore_command uses to call barman (see barmanInvocation). */
  barmanCommand?: readonly string[];
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
  copy: { method: 'copy' | 'tar' | 'rsync'; files: number; bytes: number; seconds: number };
  wal: { destination: string | null; files: number; bytes: number; seconds: number; targetTimeline: number | null; missing: string[] };
  /** Files written with the recovery settings (postgresql.auto.conf, recovery.conf...). */
  recoveryFiles: string[];
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
  durability: 'syncfs' | 'fsync';
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

async function writeSmallFile(file: string, text: string, mode = FILE_MODE): Promise<void> {
  const fh = await fsp.open(file, 'w', mode);
  try {
    await fh.writeFile(text);
  } finally {
    await fh.close();
  }
}

async function fileMode(file: string): Promise<number> {
  return (await fsp.stat(file)).mode & 0o7777;
}

/** Delta restore: rsync with checksums into an existing directory. */
async function rsyncInto(src: string, dst: string, excludes: readonly string[], env: NodeJS.ProcessEnv): Promise<void> {
  await fsp.mkdir(dst, { recursive: true, mode: 0o700 });
  const args = ['-rlpt', '--delete', '--delete-excluded', '--checksum', ...excludes.map((e) => `--exclude=/${e}`), `${src}/`, `${dst}/`];
  const res = await run('rsync', args, { env });
  if (res.code !== 0) {
    const detail = (res.stderr.trim() || res.stdout.trim()).split('\n').slice(-1)[0] ?? '';
    throw new BarmanError(`rsync of ${src} into ${dst} failed with exit code ${res.code}${detail ? `: ${detail}` : ''}`);
  }
}

function gzipDecompressor(env: NodeJS.ProcessEnv): string | undefined {
  // pigz decompresses a little faster (separate read, write and check threads)
  return findOnPath('pigz', env.PATH ?? '') ? 'pigz' : undefined;
}

/** Restore a backup locally. See the module comment. */
export async function restoreBackup(srv: ServerConfig, req: RestoreRequest, events: RestoreEvents = {}): Promise<RestoreResult> {
  const started = Date.now();
  const startTime = localNowPyDateTime();
  const warnings: string[] = [];
  const info = (m: string) => {
    log.info(m);
    events.info?.(m);
  };
  const warn = (m: string) => {
    log.warning(m);
    warnings.push(m);
    events.warning?.(m);
  };

  // ---- validation: nothing is written before all of it passes ----
  if (req.remoteSshCommand) {
    throw new BarmanError('Remote recovery (--remote-ssh-command) is not supported yet: restore locally and copy the directory');
  }
  if (req.networkCompression) throw new BarmanError('Network compression can only be used with remote recovery (--remote-ssh-command)');
  if (req.stagingLocation === 'remote') throw new BarmanError("--staging-location remote can only be used with remote recovery (--remote-ssh-command)");
  const { target, warnings: targetWarnings } = parseRecoveryTarget(req);
  for (const w of targetWarnings) warn(w);
  const dest = normalizeDestination(req.destination);

  const entries = await loadCatalog(srv);
  const entry: BackupEntry = req.backupId === 'auto' ? chooseAutoBackup(entries, target, srv.name) : resolveBackupId(srv, entries, req.backupId);
  const id = entry.id;
  const binfo = entry.info;
  checkBackupForRestore(id, binfo, target, { standbyMode: req.standbyMode });
  const version = binfo.version as number;
  const kind = backupType(binfo);
  if (kind === 'snapshot') {
    if (!req.snapshotRecoveryInstance) throw new BarmanError(`Backup ${id} is a snapshot backup: --snapshot-recovery-instance is required`);
    if ((req.tablespaces ?? []).length > 0) throw new BarmanError('--tablespace cannot be used with snapshot backups');
    throw new BarmanError('Recovery of snapshot backups is not supported yet');
  }
  if (req.snapshotRecoveryInstance) throw new BarmanError(`--snapshot-recovery-instance can only be used with snapshot backups (backup ${id} is not one)`);
  if (kind === 'incremental') throw new BarmanError(`Backup ${id} is an incremental backup: restoring incremental backups is not supported yet`);
  if (binfo.encryption) throw new BarmanError(`Backup ${id} is encrypted (${binfo.encryption}): restoring encrypted backups is not supported yet`);

  const srcData = backupDataDir(srv, id);
  if (!existsSync(srcData)) throw new BarmanError(`The data of backup ${id} is missing: ${srcData} does not exist`);
  const tarFormat = await isTarBackup(srcData);

  const recoveryOptions = (srv.recovery_options as readonly string[] | null) ?? [];
  let delta = req.deltaRestore ?? recoveryOptions.includes('delta-restore');
  if (delta && tarFormat) {
    if (req.deltaRestore) throw new BarmanError(`Delta restore is not possible for backup ${id}: it is compressed`);
    warn(`recovery_options 'delta-restore' ignored: backup ${id} is compressed`);
    delta = false;
  }

  const relocation = parseTablespaceRules(req.tablespaces ?? [], binfo.tablespaces);
  const tablespaces = tablespaceTargets(binfo.tablespaces, relocation);
  const catalogDir = path.resolve(srv.backup_directory);
  for (const [what, p] of [['destination directory', dest], ...tablespaces.map((t) => [`location of tablespace '${t.name}'`, t.location])] as [string, string][]) {
    if (p === catalogDir || isInside(p, catalogDir) || isInside(catalogDir, p)) {
      throw new BarmanError(`The ${what} '${p}' overlaps the backup directory of server ${srv.name} (${catalogDir})`);
    }
  }
  const seen = new Map<string, string>([[dest, 'the destination directory']]);
  for (const t of tablespaces) {
    const other = seen.get(t.location) ?? [...seen].find(([p]) => isInside(p, t.location))?.[1];
    if (other) throw new BarmanError(`The location of tablespace '${t.name}' (${t.location}) overlaps ${other}`);
    seen.set(t.location, `tablespace '${t.name}'`);
  }
  await checkDestination(dest, tablespaces, { delta });

  const getWal = req.getWal ?? recoveryOptions.includes('get-wal');
  const standby = req.standbyMode === true;
  const pitr = isPitr(target);
  const walName = version >= 100000 ? 'pg_wal' : 'pg_xlog';
  let stagingWal: string | null = null;
  if (req.stagingWalDirectory) {
    if (pitr && !getWal) {
      stagingWal = path.resolve(req.stagingWalDirectory);
      if (stagingWal.includes(':')) throw new BarmanError(`The staging WAL directory '${stagingWal}' cannot contain ':'`);
      await checkEmptyOrAbsent(stagingWal, 'staging WAL directory');
    } else {
      warn('--staging-wal-directory is ignored: WAL files are only staged for a point-in-time recovery without get-wal');
    }
  }
  // WAL for recovery: barman_wal (or the staging dir) for PITR, pg_wal otherwise; none with get-wal.
  const walDest = getWal ? null : pitr ? (stagingWal ?? path.join(dest, 'barman_wal')) : path.join(dest, walName);
  const recoveryConfFile = req.recoveryConfFilename ?? null;
  if (recoveryConfFile !== null && version < 120000) {
    warn('--recovery-conf-filename is ignored for PostgreSQL < 12 (recovery.conf is used)');
  }
  if (req.bwlimit) warn('--bwlimit is ignored by local restores');
  const workers = Math.max(1, req.jobs ?? Math.max(srv.parallel_jobs ?? 1, DEFAULT_COPY_WORKERS));
  const env = subprocessEnv(srv.path_prefix);
  const barmanCommand = req.barmanCommand ?? barmanInvocation(srv.global.configFile);

  // ---- the restore ----
  let lock: HeldLock;
  try {
    lock = await acquireLock(backupLockPath(srv, id), `operation on backup ${id}`);
  } catch (err) {
    if (err instanceof LockBusyError) throw new BarmanError(`Backup ${id} of server ${srv.name} is in use by another process${err.holderPid ? ` (PID ${err.holderPid})` : ''}`);
    throw err;
  }
  const hookEnv: RecoveryHookInfo = {
    ...backupHookInfo(srv, entry, entries),
    destination: dest,
    tablespaces: tablespaces.length ? Object.fromEntries(tablespaces.map((t) => [t.name, t.location])) : null,
    remoteCommand: null,
    recoverOptions: recoverOptionsForHooks(target, req),
  };
  try {
    info(`Starting local restore for server ${srv.name} using backup ${id}`);
    info(`Destination directory: ${dest}`);
    if (pitr) {
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
      info(`Doing PITR. ${details[0] ?? ''}`);
      for (const d of details.slice(1)) info(d);
    }
    for (const t of tablespaces) info(`Restoring tablespace '${t.name}' (oid ${t.oid}) to ${t.location}${relocation.has(t.name) ? ' (relocated)' : ''}`);

    if (events.archive) {
      try {
        await events.archive();
      } catch (err) {
        warn(`Archiving pending WAL files failed: ${errorMessage(err)}`);
      }
    }
    await runRecoveryHooks(srv, 'pre', hookEnv, { warning: warn });

    let result: RestoreResult;
    try {
      result = await doRestore();
    } catch (err) {
      throw new BarmanError(`Restore of backup ${id} into ${dest} failed: ${errorMessage(err)} (the destination is incomplete: empty it before trying again)`);
    }
    await runRecoveryHooks(srv, 'post', hookEnv, { warning: warn });
    return result;
  } catch (err) {
    await runRecoveryHooks(srv, 'post', { ...hookEnv, error: errorMessage(err) }, { warning: warn }).catch(() => undefined);
    throw err;
  } finally {
    lock.release();
  }

  async function doRestore(): Promise<RestoreResult> {
    // ---- base backup ----
    info(delta ? 'Copying the base backup (delta restore).' : 'Copying the base backup.');
    const copyStart = Date.now();
    const copy = { method: (delta ? 'rsync' : tarFormat ? 'tar' : 'copy') as 'copy' | 'tar' | 'rsync', files: 0, bytes: 0, seconds: 0 };
    if (tarFormat) {
      const tars = await listTarArchives(srcData);
      const jobs: { file: string; compression: 'gzip' | 'lz4' | 'zstd' | 'none'; dest: string; size: number; excludes: readonly string[] }[] = [];
      const base = tars.get(null);
      if (!base) throw new BarmanError(`No base.tar in ${srcData}`);
      jobs.push({ ...base, dest, size: (await fsp.stat(base.file)).size, excludes: DATA_EXCLUDES });
      for (const t of tablespaces) {
        const tar = tars.get(t.oid);
        if (!tar) throw new BarmanError(`No tar archive for tablespace ${t.name} (oid ${t.oid}) in ${srcData}`);
        jobs.push({ ...tar, dest: t.location, size: (await fsp.stat(tar.file)).size, excludes: [] });
      }
      const total = jobs.reduce((s, j) => s + j.size, 0);
      let done = 0;
      events.progress?.(0, total, 'data');
      await fsp.mkdir(dest, { recursive: true, mode: 0o700 });
      await fsp.chmod(dest, 0o700);
      const gz = gzipDecompressor(env);
      await runPool(jobs, workers, async (j) => {
        await extractTar(j.file, j.dest, j.compression, j.excludes, env, j.compression === 'gzip' ? gz : undefined);
        done += j.size;
        copy.files += 1;
        copy.bytes += j.size;
        events.progress?.(done, total, 'data');
      });
      // backup_manifest sits next to the tar files
      const manifest = path.join(srcData, 'backup_manifest');
      if (existsSync(manifest)) await fsp.copyFile(manifest, path.join(dest, 'backup_manifest'));
      await fsp.mkdir(path.join(dest, walName), { recursive: true, mode: 0o700 });
    } else {
      const scans: { scan: TreeScan; dest: string }[] = [];
      const dataExclude = excluder(DATA_EXCLUDES);
      scans.push({ scan: await scanTree(srcData, dataExclude), dest });
      for (const t of tablespaces) {
        const src = backupDataDir(srv, id, t.oid);
        if (!existsSync(src)) throw new BarmanError(`The data of tablespace ${t.name} (oid ${t.oid}) is missing: ${src} does not exist`);
        scans.push({ scan: await scanTree(src), dest: t.location });
      }
      const total = scans.reduce((s, x) => s + x.scan.totalBytes, 0);
      let done = 0;
      events.progress?.(0, total, 'data');
      for (const { scan, dest: to } of scans) {
        const writeback = new EarlyWriteback(to, env);
        if (delta) {
          await rsyncInto(scan.root, to, to === dest ? DATA_EXCLUDES : [], env);
          done += scan.totalBytes;
          copy.files += scan.fileCount;
          copy.bytes += scan.totalBytes;
          events.progress?.(done, total, 'data');
          continue;
        }
        const st = await copyTree(scan, to, {
          workers,
          dirsInsteadOfLinks: new Set(['pg_wal', 'pg_xlog']),
          onBytes: (n) => {
            done += n;
            writeback.add(n);
            events.progress?.(done, total, 'data');
          },
        });
        await writeback.drain();
        copy.files += st.files;
        copy.bytes += st.bytes;
      }
      await fsp.mkdir(path.join(dest, walName), { recursive: true, mode: 0o700 });
    }
    // tablespace links, to the restored locations
    if (tablespaces.length > 0) {
      const tblspc = path.join(dest, 'pg_tblspc');
      await fsp.mkdir(tblspc, { recursive: true, mode: 0o700 });
      for (const t of tablespaces) {
        const link = path.join(tblspc, String(t.oid));
        await fsp.rm(link, { force: true, recursive: false }).catch(() => undefined);
        await fsp.symlink(t.location, link);
      }
    }
    copy.seconds = (Date.now() - copyStart) / 1000;

    // .barman-recover.info: the backup.info of what was restored (safe horizon of later deltas)
    await writeSmallFile(path.join(dest, '.barman-recover.info'), serializeBackupInfo(binfo));
    const manifest = path.join(dest, 'backup_manifest');
    if (existsSync(manifest)) await fsp.rename(manifest, path.join(dest, `backup_manifest.${id}`));

    // ---- WAL ----
    const walStart = Date.now();
    const pgWal = path.join(dest, walName);
    await fsp.mkdir(path.join(pgWal, 'archive_status'), { recursive: true, mode: 0o700 });
    const wal: RestoreResult['wal'] = { destination: walDest, files: 0, bytes: 0, seconds: 0, targetTimeline: null, missing: [] };
    if (walDest !== null) {
      info('Copying required WAL segments.');
      const listing = await listArchive(srv, binfo.begin_wal as string, 0xffffffff);
      const historyTlis = listing.history.map((h) => parseInt(h.name.slice(0, 8), 16));
      const targetTli = resolveTargetTli(target.tli, binfo.timeline as number, version, pitr, historyTlis);
      wal.targetTimeline = targetTli;
      const hist = listing.history.find((h) => h.name === historyName(targetTli));
      let ancestry = null;
      try {
        ancestry = timelineAncestry(targetTli, hist ? await fsp.readFile(hist.path, 'utf8') : null);
      } catch (err) {
        warn(`Cannot read the history of timeline ${targetTli}: ${errorMessage(err)}`);
      }
      if (typeof target.tli === 'number' && target.tli > (binfo.timeline as number) && !hist) {
        warn(`Timeline ${target.tli} has no history file in the archive: recovery may not be able to reach it`);
      }
      const sel = selectRequiredWals({
        beginWal: binfo.begin_wal as string,
        endWal: binfo.end_wal,
        segSize: binfo.xlog_segment_size,
        version,
        target,
        targetTli,
        ancestry,
        listing,
      });
      wal.missing = sel.missing;
      if (sel.missing.length > 0) {
        warn(`${sel.missing.length} WAL file(s) needed to make backup ${id} consistent are not in the archive (first: ${sel.missing[0] as string}): recovery will fail until they are available`);
      }
      const files = [...sel.history, ...sel.segments];
      let n = 0;
      events.progress?.(0, files.length, 'wal');
      wal.bytes = await copyWals(files, walDest, {
        workers,
        custom: customCompression(srv),
        onFile: () => events.progress?.(++n, files.length, 'wal'),
      });
      wal.files = files.length;
      if (!pitr) {
        info('Generating archive status files');
        await writeDoneFiles(pgWal, files.map((f) => f.name));
      }
    }
    wal.seconds = (Date.now() - walStart) / 1000;

    // ---- configuration (mangled first: recovery settings are appended after) ----
    const withSettings = needsRecoverySettings(pitr, getWal, standby);
    if (withSettings) info('Generating recovery configuration');
    info('Identify dangerous settings in destination directory.');
    const changes: ConfigLine[] = [];
    const commented: ConfigLine[] = [];
    const dangerous: ConfigLine[] = [];
    const originals = new Map<string, string>();
    const confNames = ['postgresql.conf', ...(version >= 90400 ? ['postgresql.auto.conf'] : [])];
    for (const name of confNames) {
      const file = path.join(dest, name);
      let text: string;
      try {
        text = await fsp.readFile(file, 'utf8');
      } catch {
        continue;
      }
      originals.set(name, text);
      const m = mangleConfig(text, name, { commentRecoveryTargets: version >= 120000 });
      changes.push(...m.changes);
      commented.push(...m.commented);
      dangerous.push(...m.dangerous);
      if (m.modified) {
        await fsp.copyFile(file, `${file}.origin`);
        await writeSmallFile(file, m.text, await fileMode(file));
      }
    }
    const missingFiles = missingConfigFiles(binfo);
    if (!originals.has('postgresql.conf')) {
      warn(`postgresql.conf is not in the restored data directory: make sure archive_command is disabled before starting the server`);
    }

    const recoveryFiles: string[] = [];
    let signalFile: string | null = null;
    if (withSettings) {
      const settings: RecoverySettingsInput = {
        version,
        serverName: srv.name,
        target,
        getWal,
        standbyMode: standby,
        walDir: pitr && !getWal ? walDest : null,
        barmanCommand,
        barmanUser: srv.global.barman_user ?? 'barman',
      };
      if (version >= 120000) {
        const name = recoveryConfFile ?? 'postgresql.auto.conf';
        const file = path.resolve(dest, name);
        let existing = '';
        try {
          existing = await fsp.readFile(file, 'utf8');
        } catch {
          existing = '';
        }
        // keep the file as it was restored (mangling may already have saved it)
        if (existing !== '' && !existsSync(`${file}.origin`)) await fsp.copyFile(file, `${file}.origin`);
        const mode = existing !== '' ? await fileMode(file) : FILE_MODE;
        await writeSmallFile(file, existing + autoConfAppendix(existing, settings), mode);
        recoveryFiles.push(file);
        signalFile = path.join(dest, standby ? 'standby.signal' : 'recovery.signal');
        await writeSmallFile(signalFile, '');
      } else {
        const file = path.join(dest, 'recovery.conf');
        await writeSmallFile(file, recoveryConfText(settings));
        recoveryFiles.push(file);
      }
    }

    // ---- durability: nothing is reported restored before it is on stable storage ----
    const trees = [dest, ...tablespaces.map((t) => t.location), ...(stagingWal ? [stagingWal] : [])];
    const durability = await syncFilesystems(trees, trees.map((t) => path.dirname(t)), env);

    return {
      serverName: srv.name,
      backupId: id,
      destination: dest,
      startTime,
      elapsedSeconds: (Date.now() - started) / 1000,
      pitr,
      target: targetSummary(target),
      tablespaces,
      getWal,
      deltaRestore: delta,
      standbyMode: standby,
      copy,
      wal,
      recoveryFiles,
      signalFile,
      changes,
      commented,
      dangerous,
      missingFiles,
      walDirectoryToRemove: pitr && !getWal ? walDest : null,
      durability,
      warnings,
    };
  }
}
