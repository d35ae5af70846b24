/**
 * `barman drill`: prove that a backup restores. Restore it into a sandbox exactly as `recover`
 * does (src/recovery, with get-wal), start PostgreSQL of the backup's major version there on a
 * private Unix socket with nothing that can reach production or write to the archive, replay
 * WAL through get-wal up to the target (or the end of the archive), promote, check the data,
 * compare the point reached with the target, measure every phase, record the result in the
 * catalog (drills/, which Barman ignores), and stop and remove the sandbox whatever happens.
 *
 * The domain never prints: progress goes through `events`, the result is the DrillRecord.
 */
import { createHash } from 'node:crypto';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { backupType, DONE, type BackupInfo } from '../catalog/backup-info.js';
import { loadCatalog, resolveBackupId, type BackupEntry } from '../catalog/catalog.js';
import { acquireLock, isLockHeld, type HeldLock } from '../catalog/lock.js';
import { lockPath } from '../catalog/server-dirs.js';
import { parseConninfo } from '../postgres/conninfo.js';
import { subprocessEnv } from '../postgres/binaries.js';
import { checkBackupForRestore, hasStopTarget, parseRecoveryTarget, type RecoveryTarget, type TargetOptions } from '../recovery/options.js';
import { restoreBackup, type RestoreResult } from '../recovery/recover.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { prettySize } from '../util/format.js';
import { logger } from '../util/log.js';
import { freePort } from '../util/net.js';
import { pause } from '../util/pause.js';
import { localNowPyDateTime } from '../util/pytime.js';
import { historyName } from '../wal/names.js';
import { amcheckCheck, checksumsCheck, sqlCheck } from './checks.js';
import { drillHost, FIND_BINDIR_SCRIPT, type DrillHost } from './host.js';
import { describeTarget, isDrillProcessAlive, loadDrillRecords, saveDrillRecord, type DrillCheck, type DrillPhases, type DrillReached, type DrillRecord } from './records.js';
import { checksumsEnabled, hotStandbySettings, type SandboxConfigInput } from './sandbox-config.js';
import { psqlError, SandboxServer } from './sandbox.js';
import { cleanupInterrupted } from './cleanup.js';
import { drillDueFor, drillLockPath } from './schedule.js';
import { parseSqlChecks, type SqlCheckStatement } from './sql-checks.js';
import { diagnoseRecoveryLog, endOfArchive, lastHistoryEntry, targetRecord, verifyTarget, walOfLastByte } from './target.js';

const log = logger('drill');

/** Oldest PostgreSQL a drill supports: pg_amcheck and pg_get_wal_replay_pause_state() (14). */
export const MIN_DRILL_VERSION = 140000;

export interface DrillRequest extends TargetOptions {
  /** BACKUP_ID argument (default `latest`). */
  backupId?: string;
  /** --directory: the sandbox data directory (must be empty or absent). */
  directory?: string | null;
  /** --sql FILE, already read: its path and text. */
  sql?: { file: string; text: string } | null;
  keep?: boolean;
  remoteSshCommand?: string | null;
  jobs?: number | null;
  /** Seconds for the replay (default drill_timeout; 0 = no limit). */
  timeoutSeconds?: number | null;
  /** cron: drill the newest DONE backup only if a drill is still due once the lock is held. */
  ifDue?: boolean;
  /** Interrupts the drill (Ctrl-C, SIGTERM): the sandbox is stopped and removed. */
  signal?: AbortSignal;
  /** Words restore_command uses to run barman (tests). */
  barmanCommand?: readonly string[];
}

export interface DrillEvents {
  info?: (msg: string) => void;
  warning?: (msg: string) => void;
}

export interface DrillOutcome {
  /** The recorded drill, null when none was started (--if-due found nothing due). */
  record: DrillRecord | null;
  /** --if-due: why no drill was started. */
  notDue?: string;
  /** The drill's sandbox was kept (--keep): where and how to reach it. */
  kept?: { dataDir: string; privateDir: string | null; port: number | null; bindir: string | null };
}

/** A drill interrupted by a signal. */
export class DrillInterrupted extends BarmanError {}

const now = () => performance.now();
const secs = (ms: number) => Math.round(ms) / 1000;

/** Free space a restore needs: the restored size, plus 10% and 128 MiB for WAL and slack. */
export function neededBytes(info: BackupInfo): { data: number; needed: number; estimated: boolean } {
  const compressed = info.compression !== null && info.compression !== 'none';
  // A compressed backup's restored size is unknown unless recorded (cluster_size).
  const data = info.cluster_size ?? (compressed ? (info.size ?? 0) * 3 : (info.size ?? 0));
  return { data, needed: Math.ceil(data * 1.1) + 128 * 1024 * 1024, estimated: info.cluster_size === null && compressed };
}

/** `<YYYYMMDDTHHMMSS>-<pid>` of this instant. */
export function drillId(date: Date, pid: number): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${date.getFullYear()}${p(date.getMonth() + 1)}${p(date.getDate())}T${p(date.getHours())}${p(date.getMinutes())}${p(date.getSeconds())}-${pid}`;
}

/** Host key of the drill lock: `local`, or a digest of the ssh command. */
export function hostKey(sshCommand: string | null): string {
  return sshCommand ? createHash('sha256').update(sshCommand).digest('hex').slice(0, 12) : 'local';
}

/** Refuse what cannot be drilled before anything is started (nothing recorded). */
function checkDrillable(id: string, info: BackupInfo, target: RecoveryTarget): void {
  if (info.status !== DONE) throw new BarmanError(`Cannot drill backup ${id}: its status is ${info.status} (only DONE backups can be drilled)`);
  checkBackupForRestore(id, info, target);
  const v = info.version as number;
  if (v < MIN_DRILL_VERSION) {
    throw new BarmanError(`Cannot drill backup ${id}: drills need PostgreSQL 14 or later (pg_amcheck), the backup is PostgreSQL ${Math.floor(v / 10000)}`);
  }
  const kind = backupType(info);
  if (kind === 'snapshot' || kind === 'incremental') throw new BarmanError(`Cannot drill backup ${id}: restoring ${kind} backups is not supported yet`);
  if (info.encryption) throw new BarmanError(`Cannot drill backup ${id}: it is encrypted (${info.encryption}), which restores do not support yet`);
}

function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** Roles and databases to try for the first connection (the bootstrap superuser is then used). */
export function loginCandidates(srv: ServerConfig): { users: (string | null)[]; dbs: string[] } {
  const users: (string | null)[] = [];
  const dbs: string[] = [];
  for (const ci of [srv.conninfo, srv.streaming_conninfo]) {
    if (!ci) continue;
    try {
      const p = parseConninfo(ci);
      if (p.user) users.push(p.user);
      if (p.dbname && !/[=/]/.test(p.dbname)) dbs.push(p.dbname);
    } catch {
      /* an unparsable conninfo only costs a candidate */
    }
  }
  users.push('postgres', null);
  dbs.push('postgres', 'template1');
  return { users, dbs };
}

/** Wait that grows with the time already spent: reactive at first, cheap on long replays. */
function pollDelay(elapsedMs: number): number {
  if (elapsedMs < 2000) return 50;
  if (elapsedMs < 10_000) return 150;
  if (elapsedMs < 60_000) return 400;
  return 1000;
}


const POLL_SQL =
  "SELECT (SELECT rolname FROM pg_roles WHERE oid = 10), pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE 'not paused' END";
const REACHED_SQL =
  "SELECT pg_last_wal_replay_lsn(), coalesce(to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00:00', ''), " +
  "coalesce(extract(epoch FROM pg_last_xact_replay_timestamp())::text, ''), pg_walfile_name(pg_current_wal_lsn())";

/** Run a drill. See the module comment. */
export async function runDrill(srv: ServerConfig, req: DrillRequest, events: DrillEvents = {}): Promise<DrillOutcome> {
  const info = (m: string) => {
    log.info(m);
    events.info?.(m);
  };
  const signal = req.signal;
  const interrupted = () => new DrillInterrupted(interruptedMessage(signal));

  // ---- validation: nothing is started or recorded before all of it passes ----
  const { target } = parseRecoveryTarget(req);
  if (req.targetAction) throw new BarmanError('--target-action is not a drill option: a drill always pauses at the target, then promotes');
  const statements: SqlCheckStatement[] | null = req.sql ? parseSqlChecks(req.sql.text, req.sql.file) : null;
  const sshCommand = req.remoteSshCommand && req.remoteSshCommand.trim() !== '' ? req.remoteSshCommand.trim() : null;
  const env = subprocessEnv(srv.path_prefix);
  const host = drillHost(sshCommand, env);

  let entries = await loadCatalog(srv);
  let entry: BackupEntry = resolveBackupId(srv, entries, req.backupId ?? 'latest');
  if (!req.ifDue) checkDrillable(entry.id, entry.info, target);

  const started = new Date();
  const id = drillId(started, process.pid);
  const dir = req.directory ? normalizeDir(req.directory, sshCommand !== null) : path.join(srv.drill_directory, `${srv.name}-${entry.id}-${id}`);
  if (!sshCommand && isInside(dir, path.resolve(srv.backup_directory))) {
    throw new BarmanError(`The drill directory '${dir}' is inside the backup directory of server ${srv.name}: a drill never writes into the catalog`);
  }
  if (!sshCommand && isInside(path.resolve(srv.backup_directory), dir)) {
    throw new BarmanError(`The drill directory '${dir}' contains the backup directory of server ${srv.name}`);
  }
  await host.checkSandboxDir(dir);
  if (await isLockHeld(lockPath(srv, 'backup'))) {
    if (req.ifDue) return { record: null, notDue: `a backup of server ${srv.name} is running` };
    throw new BarmanError(`A backup of server ${srv.name} is running: no drill meanwhile (try again when it has finished)`);
  }

  // ---- one drill per host at a time ----
  const waitStart = now();
  const lockFile = drillLockPath(srv, hostKey(sshCommand));
  let lock: HeldLock;
  {
    const pending = acquireLock(lockFile, 'drill', true);
    const aborted = new Promise<never>((_, reject) => {
      if (signal?.aborted) reject(interrupted());
      signal?.addEventListener('abort', () => reject(interrupted()), { once: true });
    });
    try {
      lock = await Promise.race([pending, aborted]);
    } catch (err) {
      pending.then((l) => l.release()).catch(() => undefined);
      throw err;
    }
  }
  const waitMs = now() - waitStart;
  try {
    if (waitMs > 1000) {
      // Another drill ran meanwhile: what it left (or a backup started since) is checked again.
      await host.checkSandboxDir(dir);
      if (await isLockHeld(lockPath(srv, 'backup'))) {
        if (req.ifDue) return { record: null, notDue: `a backup of server ${srv.name} is running` };
        throw new BarmanError(`A backup of server ${srv.name} is running: no drill meanwhile (try again when it has finished)`);
      }
    }
    await cleanupInterrupted(srv, host, info);
    let sandbox = dir;
    if (req.ifDue) {
      const due = await drillDueFor(srv, isDrillProcessAlive);
      if (!due.due || due.backupId === null) return { record: null, notDue: due.reason };
      entries = await loadCatalog(srv);
      entry = resolveBackupId(srv, entries, due.backupId);
      checkDrillable(entry.id, entry.info, target);
      if (!req.directory) sandbox = path.join(srv.drill_directory, `${srv.name}-${entry.id}-${id}`);
    }
    return await drillLocked({ srv, req, events, host, entry, target, statements, dir: sandbox, id, waitMs, sshCommand });
  } finally {
    lock.release();
  }
}

function interruptedMessage(signal: AbortSignal | undefined): string {
  return `Drill interrupted${typeof signal?.reason === 'string' ? ` by ${signal.reason}` : ''}`;
}

/** --directory as an absolute path (a remote one must be given absolute: our cwd means nothing there). */
export function normalizeDir(d: string, remote: boolean): string {
  if (d.trim() === '') throw new BarmanError('The drill directory cannot be empty');
  if (d.includes(':')) throw new BarmanError(`The drill directory '${d}' cannot contain ':'`);
  if (!path.isAbsolute(d)) {
    if (remote) throw new BarmanError(`The drill directory '${d}' must be an absolute path on the remote host`);
    return path.resolve(d);
  }
  return path.normalize(d).replace(/\/+$/, '') || '/';
}

interface LockedDrill {
  srv: ServerConfig;
  req: DrillRequest;
  events: DrillEvents;
  host: DrillHost;
  entry: BackupEntry;
  target: RecoveryTarget;
  statements: SqlCheckStatement[] | null;
  dir: string;
  id: string;
  waitMs: number;
  sshCommand: string | null;
}

async function drillLocked(d: LockedDrill): Promise<DrillOutcome> {
  const { srv, req, host, entry, target, dir } = d;
  const signal = req.signal;
  const info = (m: string) => {
    log.info(m);
    d.events.info?.(m);
  };
  const binfo = entry.info;
  const version = binfo.version as number;
  const segSize = binfo.xlog_segment_size;
  const stopTarget = hasStopTarget(target);
  const startedPy = localNowPyDateTime();
  const rec: DrillRecord = {
    format: 1,
    id: d.id,
    server: srv.name,
    backup_id: entry.id,
    status: 'running',
    error: null,
    started_at: startedPy.format(),
    started_at_timestamp: Number(startedPy.epochMicros) / 1e6,
    ended_at: null,
    ended_at_timestamp: null,
    pid: process.pid,
    host: host.label,
    directory: dir,
    directory_created: !(await host.exists(dir)),
    private_directory: null,
    postmaster_pid: null,
    port: null,
    kept: false,
    postgres: { version, bindir: null },
    target: targetRecord(target),
    reached: null,
    wal_segments: null,
    bytes_restored: null,
    phases: {
      wait_seconds: secs(d.waitMs),
      setup_seconds: 0,
      restore_seconds: null,
      prepare_seconds: null,
      replay_seconds: null,
      consistency_seconds: null,
      promote_seconds: null,
      checks_seconds: null,
      stop_seconds: null,
      cleanup_seconds: null,
      total_seconds: 0,
      rto_seconds: null,
      overhead_seconds: null,
    },
    checks: [],
    log_tail: [],
  };
  const phases: DrillPhases = rec.phases;
  const t0 = now();
  let mark = t0;
  type PhaseKey = 'setup_seconds' | 'restore_seconds' | 'prepare_seconds' | 'replay_seconds' | 'promote_seconds' | 'checks_seconds' | 'stop_seconds' | 'cleanup_seconds';
  let phase: PhaseKey = 'setup_seconds';
  /** Close the current phase (its seconds since the previous mark) and open `next`. */
  const lap = (next: PhaseKey | null) => {
    const t = now();
    phases[phase] = secs(t - mark);
    mark = t;
    if (next) phase = next;
  };
  await saveDrillRecord(srv, rec);

  let sb: SandboxServer | null = null;
  let privateDir: string | null = null;
  let restoring = false;
  let kept: DrillOutcome['kept'];
  /** What a signal does at once: kill the sandbox server, pull the restore's rug. */
  let abortWork: Promise<void> = Promise.resolve();
  const onAbort = () => {
    abortWork = (async () => {
      if (sb?.pid) await sb.stop('immediate').catch(() => undefined);
      if (restoring) await host.remove(dir, 'contents').catch(() => undefined);
    })();
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  const checkAbort = () => {
    if (signal?.aborted) throw new DrillInterrupted(interruptedMessage(signal));
  };

  let failure: string | null = null;
  try {
    // ---- setup: free space, PostgreSQL programs, the target ----
    const need = neededBytes(binfo);
    const free = await host.freeBytes(dir);
    if (free.bytes < need.needed) {
      throw new BarmanError(
        `Not enough free space for the drill in ${free.dir}${host.kind === 'remote' ? ' on the remote host' : ''}: ${prettySize(free.bytes)} available, ` +
          `${prettySize(need.needed)} needed (backup ${entry.id} restores ${need.estimated ? 'to an estimated ' : 'to '}${prettySize(need.data)}, plus room for WAL)`,
      );
    }
    const major = Math.floor(version / 10000);
    const found = await host.script(FIND_BINDIR_SCRIPT, [String(major), ...(srv.path_prefix ?? '').split(':').filter((x) => x !== '')], { timeoutMs: 120_000 });
    const bindir = found.stdout.trim().split('\n').at(-1) ?? '';
    if (found.code !== 0 || bindir === '' || bindir.startsWith('NOTFOUND')) {
      const seen = bindir.startsWith('NOTFOUND') ? bindir.slice('NOTFOUND'.length).trim() : '';
      throw new BarmanError(
        `PostgreSQL ${major} server programs (${'postgres, pg_ctl, psql, pg_amcheck, pg_checksums, pg_controldata'}) not found${host.kind === 'remote' ? ' on the remote host' : ''}: ` +
          `install them or set path_prefix${seen ? ` (found: ${seen})` : ''}`,
      );
    }
    rec.postgres.bindir = bindir;
    if (!stopTarget) rec.target = targetRecord(target, await endOfArchive(srv, binfo, target));
    checkAbort();
    lap('restore_seconds');

    // ---- restore, as `recover` does (get-wal for the WAL) ----
    info(`Restoring backup ${entry.id} of server ${srv.name} into ${dir}${d.sshCommand ? ` on ${d.sshCommand}` : ''}`);
    restoring = true;
    let restored: RestoreResult;
    try {
      restored = await restoreBackup(srv, {
        backupId: entry.id,
        destination: dir,
        targetTime: req.targetTime,
        targetXid: req.targetXid,
        targetLsn: req.targetLsn,
        targetName: req.targetName,
        targetImmediate: req.targetImmediate,
        targetTli: req.targetTli,
        exclusive: req.exclusive,
        // Tablespaces go inside the sandbox, never to their production paths.
        tablespaces: (binfo.tablespaces ?? []).map((t) => `${t.name}:${dir}/barman_drill_tablespaces/${t.oid}`),
        remoteSshCommand: d.sshCommand,
        getWal: true,
        deltaRestore: false,
        jobs: req.jobs ?? null,
        stagingPath: srv.local_staging_path ?? null,
        runHooks: false,
        ...(req.barmanCommand ? { barmanCommand: req.barmanCommand } : {}),
      });
    } finally {
      restoring = false;
    }
    await abortWork;
    checkAbort();
    rec.bytes_restored = restored.copy.bytes;
    if (!restored.restoreCommand) throw new BarmanError('the restore wrote no restore_command');
    lap('prepare_seconds');

    // ---- prepare and start the sandbox ----
    await host.run(['chmod', '700', dir]);
    privateDir = await host.makePrivateDir();
    rec.private_directory = privateDir;
    const controldata = await host.run(['env', 'LC_ALL=C', 'LANG=C', `${bindir}/pg_controldata`, '-D', dir], { timeoutMs: 120_000 });
    if (controldata.code !== 0) throw new BarmanError(`pg_controldata cannot read the restored data directory: ${controldata.stderr.trim().split('\n').at(-1) ?? ''}`);
    const withChecksums = checksumsEnabled(controldata.stdout);
    const port = host.kind === 'local' ? await freePort() : 20000 + Math.floor(Math.random() * 40000);
    rec.port = port;
    const cfg: SandboxConfigInput = {
      version,
      bindir,
      dataDir: dir,
      privateDir,
      port,
      restoreCommand: restored.restoreCommand,
      target,
      controlSettings: hotStandbySettings(controldata.stdout),
    };
    sb = new SandboxServer(host, cfg, loginCandidates(srv));
    info(`Starting PostgreSQL ${major} in the sandbox (socket ${privateDir}, port ${port}) and replaying WAL through get-wal`);
    checkAbort();
    rec.postmaster_pid = await sb.start();
    await saveDrillRecord(srv, rec);
    lap('replay_seconds');

    // ---- replay to the target (or the end of the archive), consistency on the way ----
    const pgStart = mark;
    const limit = (req.timeoutSeconds ?? srv.drill_timeout ?? 0) * 1000;
    let consistentAt: number | null = null;
    let paused = false;
    let psqlFailures = 0;
    for (;;) {
      checkAbort();
      const p = await sb.poll(POLL_SQL);
      const t = now();
      if (!p.alive) {
        await abortWork;
        checkAbort();
        throw new BarmanError(diagnoseRecoveryLog(await sb.readLog(), describeTarget(rec.target)));
      }
      if (p.output !== null && p.rc === 0) {
        const [su, inRecovery, pause] = p.output.trim().split('|');
        if (consistentAt === null) {
          consistentAt = t;
          if (su && sb.login) sb.login = { user: su, db: sb.login.db };
          info(`Consistent after ${secs(t - pgStart)} s`);
        }
        if (inRecovery === 'f') break;
        if (stopTarget && pause === 'paused') {
          paused = true;
          break;
        }
        psqlFailures = 0;
      } else if (p.output !== null && p.login !== null && ++psqlFailures >= 20) {
        throw new BarmanError(`Cannot query the sandbox PostgreSQL: ${psqlError(p.output)}`);
      }
      if (limit > 0 && t - pgStart > limit) {
        throw new BarmanError(`Recovery did not reach the target (${describeTarget(rec.target)}) within ${limit / 1000} s${consistentAt === null ? ' (not even a consistent state)' : ''}`);
      }
      await pause(pollDelay(t - pgStart), signal);
    }
    phases.consistency_seconds = consistentAt === null ? null : secs(consistentAt - pgStart);
    lap('promote_seconds');

    // ---- promote ----
    if (paused) {
      info('Target reached: promoting');
      const ok = await sb.query('SELECT pg_promote(true, 600)');
      if (ok !== 't') throw new BarmanError('the sandbox PostgreSQL did not finish its promotion within 600 s');
    }
    // The target verification below is the first of the checks.
    lap('checks_seconds');

    // ---- where did recovery stop? ----
    const [lsn = '', commitText = '', commitEpoch = '', walfile = ''] = (await sb.query(REACHED_SQL)).split('|');
    const newTli = parseInt(walfile.slice(0, 8), 16);
    const hist = newTli > 1 ? lastHistoryEntry(await sb.query(`SELECT pg_read_file('pg_wal/${historyName(newTli)}')`).catch(() => '')) : null;
    const reachedTli = hist?.parentTli ?? newTli;
    const reached: DrillReached = {
      lsn,
      timeline: reachedTli,
      new_timeline: hist ? newTli : null,
      last_commit_time: commitText === '' ? null : commitText,
      reason: hist?.reason ?? null,
      wal: walOfLastByte(lsn, reachedTli, segSize),
    };
    rec.reached = reached;
    const pgLog = await sb.readLog();
    rec.wal_segments = new Set([...pgLog.matchAll(/restored log file "([0-9A-F]{24})" from archive/g)].map((m) => m[1])).size;
    const verdict = verifyTarget(rec.target, reached, {
      lastCommitEpoch: commitEpoch === '' ? null : Number(commitEpoch),
      targetEpoch: target.time ? Number(target.time.epochMicros) / 1e6 : null,
    });
    if (!verdict.ok) throw new BarmanError(verdict.message);
    info(verdict.message);
    checkAbort();

    // ---- checks ----
    const checks: DrillCheck[] = [];
    info('Checking the data: pg_amcheck over every database');
    checks.push(await amcheckCheck(sb, req.jobs ?? Math.max(1, Math.min(4, os.availableParallelism()))));
    checkAbort();
    if (d.statements && req.sql) {
      info(`Running the checks of ${req.sql.file}`);
      checks.push(await sqlCheck(sb, d.statements, req.sql.file));
      checkAbort();
    }
    if (withChecksums && !req.keep) {
      info('Stopping the sandbox cleanly for pg_checksums');
      await sb.stop('fast');
      sb.pid = null;
      checks.push(await checksumsCheck(sb));
    } else {
      checks.push({ name: 'checksums', status: 'skipped', detail: withChecksums ? 'the sandbox is kept running (--keep)' : 'the cluster has no data checksums', seconds: 0 });
    }
    rec.checks = checks;
    checkAbort();
    lap('stop_seconds');
    const bad = checks.filter((c) => c.status === 'failed');
    if (bad.length > 0) failure = `Check failed: ${bad.map((c) => `${c.name}: ${c.detail}`).join('; ')}`;
  } catch (err) {
    await abortWork;
    failure = signal?.aborted ? interruptedMessage(signal) : errorMessage(err);
    if (!(err instanceof BarmanError)) log.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
    if (sb) rec.log_tail = (await sb.readLog()).split('\n').filter((l) => l.trim() !== '').slice(-20);
    // The failed phase keeps the time it took; stopping and removing come next.
    lap('stop_seconds');
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }

  // ---- stop and remove the sandbox (unless --keep) ----
  if (req.keep) {
    rec.kept = true;
    kept = { dataDir: dir, privateDir, port: rec.port, bindir: rec.postgres.bindir };
  } else {
    try {
      if (sb?.pid) await sb.stop('immediate');
      lap('cleanup_seconds');
      await host.remove(dir, rec.directory_created ? 'all' : 'contents');
      if (privateDir) await host.remove(privateDir, 'all');
      lap(null);
    } catch (err) {
      const msg = `the sandbox could not be removed: ${errorMessage(err)}`;
      failure = failure ? `${failure} (${msg})` : `Drill passed its checks, but ${msg}`;
      lap(null);
    }
  }

  // ---- the result ----
  const ended = localNowPyDateTime();
  const z = (v: number | null) => v ?? 0;
  phases.total_seconds = secs(mark - t0);
  if (phases.restore_seconds !== null && phases.replay_seconds !== null && phases.promote_seconds !== null) {
    phases.rto_seconds = Math.round((phases.restore_seconds + z(phases.prepare_seconds) + phases.replay_seconds + phases.promote_seconds) * 1000) / 1000;
    phases.overhead_seconds = Math.round((phases.setup_seconds + z(phases.prepare_seconds) + phases.promote_seconds + z(phases.stop_seconds) + z(phases.cleanup_seconds)) * 1000) / 1000;
  }
  rec.status = failure === null ? 'passed' : 'failed';
  rec.error = failure;
  rec.ended_at = ended.format();
  rec.ended_at_timestamp = Number(ended.epochMicros) / 1e6;
  await saveDrillRecord(srv, rec);
  return { record: rec, ...(kept ? { kept } : {}) };
}
