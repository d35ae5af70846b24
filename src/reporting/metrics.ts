/**
 * `barman metrics`: the state of each server as Prometheus text exposition, for node_exporter's
 * textfile collector. prom-client does the format (escaping, HELP/TYPE lines); a private
 * registry per call keeps the process-wide default one (and its default metrics) out of it.
 *
 * Facts come from the catalog (backups, xlog.db, errors/), from PostgreSQL (reachable, current
 * WAL, pg_stat_archiver) and from the checks of `barman check`. A server that does not answer
 * still gets every catalog metric, with `barman_up` 0, within its `check_timeout`.
 *
 * Reading only: nothing is created or rebuilt on disk (a missing xlog.db means no WAL figures).
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Counter as CounterT, Gauge as GaugeT, Registry as RegistryT } from 'prom-client';
import type { ServerConfig } from '../config/config.js';
import { BACKUP_STATUSES, DEFAULT_XLOG_SEGMENT_SIZE, DONE } from '../catalog/backup-info.js';
import { loadCatalog, type BackupEntry } from '../catalog/catalog.js';
import { serverPaths } from '../catalog/server-dirs.js';
import { pathExistsSync, readdirIfExists } from '../util/fsutil.js';
import { readXlogDb, xlogDbPath, type XlogDbEntry } from '../catalog/xlogdb.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { isWalName, parseWalName, segmentsPerXlogId } from '../wal/names.js';
import { fetchPgFacts, type PgFacts } from './server-status.js';
import { drillGauges } from './drill-metrics.js';

/** What the metrics need of a check result (the check module may add fields). */
export interface CheckOutcome {
  name: string;
  ok: boolean;
}

/** Where the facts come from; tests replace PostgreSQL and the checks. */
export interface MetricsSources {
  /** Milliseconds since the epoch. */
  now?: () => number;
  pgFacts?: (srv: ServerConfig) => Promise<PgFacts>;
  checks?: (srv: ServerConfig) => Promise<readonly CheckOutcome[]>;
  receiveWalRunning?: (srv: ServerConfig) => Promise<boolean>;
}

export interface MetricsOptions {
  /** Run the checks of `barman check` (default true). */
  checks?: boolean;
}

/** Prometheus metric names (also used by the tests). */
export const METRIC = {
  up: 'barman_up',
  lastBackupAge: 'barman_last_backup_age_seconds',
  lastBackupTimestamp: 'barman_last_backup_timestamp_seconds',
  lastBackupSize: 'barman_last_backup_size_bytes',
  backups: 'barman_backups',
  walLagSegments: 'barman_wal_archive_lag_segments',
  walLagSeconds: 'barman_wal_archive_lag_seconds',
  walSegments: 'barman_wal_archive_segments',
  walSize: 'barman_wal_archive_size_bytes',
  archiverFailed: 'barman_archiver_failed_total',
  archiverErrors: 'barman_archiver_errors',
  receiveWal: 'barman_receive_wal_running',
  checkOk: 'barman_check_ok',
  syncLagSeconds: 'barman_sync_lag_seconds',
  syncLagSegments: 'barman_sync_lag_segments',
} as const;

/** errors/ file suffixes → `kind` label (the groups `barman check` reports). */
export function errorKind(fileName: string): string {
  const suffix = fileName.slice(fileName.lastIndexOf('.') + 1);
  if (suffix === 'duplicate') return 'duplicate';
  if (suffix === 'unknown') return 'unknown';
  if (suffix === 'error') return 'failure';
  return 'not_relevant';
}
const ERROR_KINDS = ['duplicate', 'unknown', 'not_relevant', 'failure'] as const;

/** Absolute segment number, so that segments of different log files can be subtracted. */
export function segmentPosition(name: string, segSize: number): number {
  const { log, seg } = parseWalName(name);
  return log * (segmentsPerXlogId(segSize) + 1) + seg;
}

/** What xlog.db says about the archive: newest segment, newest archival time, totals. */
export interface ArchiveFacts {
  newestSegment: string | null;
  newestTime: number | null;
  segments: number;
  bytes: number;
}

export function archiveFacts(entries: readonly XlogDbEntry[]): ArchiveFacts {
  const facts: ArchiveFacts = { newestSegment: null, newestTime: null, segments: 0, bytes: 0 };
  for (const e of entries) {
    if (!isWalName(e.name)) continue;
    const name = e.name.toUpperCase();
    facts.segments++;
    facts.bytes += e.size ?? 0;
    // Names compare by (timeline, log, segment): after a promotion the newest timeline wins.
    if (facts.newestSegment === null || name > facts.newestSegment) facts.newestSegment = name;
    if (e.time !== null && (facts.newestTime === null || e.time > facts.newestTime)) facts.newestTime = e.time;
  }
  return facts;
}

/**
 * Complete segments PostgreSQL has finished that the archive does not have yet: 0 when the
 * newest archived segment is the one just before the segment being written.
 */
export function walLagSegments(currentWal: string, newestArchived: string, segSize: number): number {
  return Math.max(0, segmentPosition(currentWal, segSize) - segmentPosition(newestArchived, segSize) - 1);
}

/** Reject after `ms`; the timer is cleared as soon as `p` settles. */
function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new BarmanError(`${what} timed out after ${ms / 1000} s`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function readArchive(srv: ServerConfig): Promise<ArchiveFacts | null> {
  // readXlogDb would rebuild a missing catalog (writing to disk): metrics only read.
  if (!pathExistsSync(xlogDbPath(srv))) return null;
  try {
    return archiveFacts(await readXlogDb(srv));
  } catch {
    return null; // an unreadable catalog only costs the WAL figures
  }
}

async function countErrors(srv: ServerConfig): Promise<Record<string, number>> {
  const counts: Record<string, number> = Object.fromEntries(ERROR_KINDS.map((k) => [k, 0]));
  const names = await readdirIfExists(serverPaths(srv).errorsDir);
  for (const n of names) {
    const k = errorKind(n);
    counts[k] = (counts[k] ?? 0) + 1;
  }
  return counts;
}

function newestDone(entries: readonly BackupEntry[]): BackupEntry | null {
  for (let i = entries.length - 1; i >= 0; i--) {
    const e = entries[i] as BackupEntry;
    if (e.info.status === DONE) return e;
  }
  return null;
}

interface Metrics {
  registry: RegistryT;
  gauges: Record<Exclude<keyof typeof METRIC, 'archiverFailed'>, GaugeT<string>>;
  archiverFailed: CounterT<string>;
}

async function makeMetrics(): Promise<Metrics> {
  // Loaded here so that other commands never pay for prom-client.
  const { Registry, Gauge, Counter } = await import('prom-client');
  const registry = new Registry();
  const g = (name: string, help: string, labelNames: string[] = ['server']) => new Gauge({ name, help, labelNames, registers: [registry] });
  return {
    registry,
    gauges: {
      up: g(METRIC.up, 'Whether PostgreSQL answered barman (1) or not (0)'),
      lastBackupAge: g(METRIC.lastBackupAge, 'Seconds since the end of the newest DONE backup (absent without one)'),
      lastBackupTimestamp: g(METRIC.lastBackupTimestamp, 'End time of the newest DONE backup, seconds since the epoch'),
      lastBackupSize: g(METRIC.lastBackupSize, 'Size of the newest DONE backup in bytes'),
      backups: g(METRIC.backups, 'Number of backups in the catalog by status', ['server', 'status']),
      walLagSegments: g(
        METRIC.walLagSegments,
        'Complete WAL segments of PostgreSQL not yet in the archive (current segment minus newest archived minus one)',
      ),
      walLagSeconds: g(METRIC.walLagSeconds, 'Seconds since the newest WAL segment was archived (xlog.db)'),
      walSegments: g(METRIC.walSegments, 'WAL segments in the archive (xlog.db)'),
      walSize: g(METRIC.walSize, 'Bytes of the WAL segments in the archive, as stored (xlog.db)'),
      archiverErrors: g(METRIC.archiverErrors, 'Files in the errors/ directory of the server by kind', ['server', 'kind']),
      receiveWal: g(METRIC.receiveWal, 'Whether barman receive-wal runs for the server (1) or not (0)'),
      checkOk: g(METRIC.checkOk, 'Result of each check of barman check (1 OK, 0 FAILED)', ['server', 'check']),
      syncLagSeconds: g(METRIC.syncLagSeconds, 'Passive nodes: seconds of primary history not copied here yet (since the last answer of the primary when nothing is missing)'),
      syncLagSegments: g(METRIC.syncLagSegments, 'Passive nodes: WAL segments of the primary not copied here yet'),
    },
    archiverFailed: new Counter({
      name: METRIC.archiverFailed,
      help: 'Failed archive_command runs since the statistics reset (pg_stat_archiver.failed_count)',
      labelNames: ['server'],
      registers: [registry],
    }),
  };
}

async function defaultChecks(srv: ServerConfig): Promise<readonly CheckOutcome[]> {
  const { runChecks } = await import('../checks/server-checks.js');
  // One argument only: the module's optional second parameter is its owner's business.
  return runChecks(srv);
}

async function defaultReceiveWalRunning(srv: ServerConfig): Promise<boolean> {
  const { isReceiveWalRunning } = await import('../wal/receive-wal.js');
  return isReceiveWalRunning(srv);
}

async function collectServer(m: Metrics, srv: ServerConfig, src: Required<MetricsSources>, opts: MetricsOptions): Promise<void> {
  const server = srv.name;
  const nowSec = src.now() / 1000;
  const limitMs = (srv.check_timeout > 0 ? srv.check_timeout : 30) * 1000;

  // PostgreSQL and the checks in parallel: an unreachable server costs one check_timeout.
  const factsP = withTimeout(src.pgFacts(srv), limitMs, 'connection to PostgreSQL').catch((err): PgFacts => ({ error: errorMessage(err) }));
  const checksP =
    opts.checks === false
      ? Promise.resolve(null)
      : withTimeout(src.checks(srv), limitMs, 'checks').catch((err): CheckOutcome[] => [{ name: `checks (${errorMessage(err)})`, ok: false }]);
  const receiveP = src.receiveWalRunning(srv).catch(() => false);

  const entries = await loadCatalog(srv);
  const counts = new Map<string, number>(BACKUP_STATUSES.map((s) => [s, 0]));
  for (const e of entries) counts.set(e.info.status, (counts.get(e.info.status) ?? 0) + 1);
  for (const [status, n] of counts) m.gauges.backups.set({ server, status }, n);

  const last = newestDone(entries);
  if (last) {
    const end = last.info.end_time ?? last.info.begin_time;
    if (end) {
      m.gauges.lastBackupTimestamp.set({ server }, end.epochSeconds);
      m.gauges.lastBackupAge.set({ server }, Math.max(0, nowSec - end.epochSeconds));
    }
    if (last.info.size !== null) m.gauges.lastBackupSize.set({ server }, last.info.size);
  }

  const archive = await readArchive(srv);
  if (archive) {
    m.gauges.walSegments.set({ server }, archive.segments);
    m.gauges.walSize.set({ server }, archive.bytes);
    if (archive.newestTime !== null) m.gauges.walLagSeconds.set({ server }, Math.max(0, nowSec - archive.newestTime));
  }

  for (const [kind, n] of Object.entries(await countErrors(srv))) m.gauges.archiverErrors.set({ server, kind }, n);

  if (srv.passive) {
    const { syncLag } = await import('../geo/lag.js');
    const { lag } = await syncLag(srv, src.now());
    if (lag) {
      m.gauges.syncLagSeconds.set({ server }, lag.seconds);
      m.gauges.syncLagSegments.set({ server }, lag.segments);
    }
  }

  const facts = await factsP;
  const up = facts.error === undefined;
  m.gauges.up.set({ server }, up ? 1 : 0);
  if (up && facts.archiver) m.archiverFailed.inc({ server }, facts.archiver.failedCount);
  if (up && facts.currentWal && archive?.newestSegment) {
    const segSize = (last ?? entries[entries.length - 1])?.info.xlog_segment_size ?? DEFAULT_XLOG_SEGMENT_SIZE;
    try {
      m.gauges.walLagSegments.set({ server }, walLagSegments(facts.currentWal, archive.newestSegment, segSize));
    } catch {
      /* a name PostgreSQL would not produce: no lag figure rather than a wrong one */
    }
  }

  m.gauges.receiveWal.set({ server }, (await receiveP) ? 1 : 0);

  const checks = await checksP;
  if (checks) {
    // Checks with the same name (rare) count as OK only if all passed.
    const byName = new Map<string, boolean>();
    for (const c of checks) byName.set(c.name, (byName.get(c.name) ?? true) && c.ok);
    for (const [check, ok] of byName) m.gauges.checkOk.set({ server, check }, ok ? 1 : 0);
  }
}

/** The exposition text for `servers` (one scrape). */
export async function collectMetrics(servers: readonly ServerConfig[], sources: MetricsSources = {}, opts: MetricsOptions = {}): Promise<string> {
  const src: Required<MetricsSources> = {
    now: sources.now ?? Date.now,
    // A passive server opens no PostgreSQL connection (its primary backup server has one).
    pgFacts: sources.pgFacts ?? ((srv) => (srv.passive ? Promise.resolve({ error: 'passive node' }) : fetchPgFacts(srv))),
    checks: sources.checks ?? defaultChecks,
    receiveWalRunning: sources.receiveWalRunning ?? defaultReceiveWalRunning,
  };
  const m = await makeMetrics();
  const drills = await drillGauges(m.registry);
  // Servers one after the other: the checks of one server already open several connections.
  for (const srv of servers) {
    await collectServer(m, srv, src, opts);
    await drills.collect(srv, src.now());
  }
  return m.registry.metrics();
}

/**
 * Write the text for the textfile collector: a temporary name in the same directory (which the
 * collector ignores: it reads `*.prom` only), fsync, mode 0644 whatever the umask (node_exporter
 * runs as another user), rename over the target, fsync the directory. A reader sees the old
 * file or the new one, never half of one.
 */
export async function writeMetricsFile(file: string, text: string): Promise<void> {
  const dir = path.dirname(path.resolve(file));
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.tmp`);
  let fh: fsp.FileHandle | null = null;
  try {
    fh = await fsp.open(tmp, 'wx', 0o644);
    await fh.writeFile(text);
    await fh.chmod(0o644);
    await fh.sync();
    await fh.close();
    fh = null;
    await fsp.rename(tmp, file);
  } catch (err) {
    await fh?.close().catch(() => undefined);
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw new BarmanError(`cannot write metrics file ${file}: ${errorMessage(err)}`);
  }
  const dh = await fsp.open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
