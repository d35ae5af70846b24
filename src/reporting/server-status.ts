/**
 * What `status` and `show-servers` report about a server (spec §4.4): facts from PostgreSQL
 * (gathered without ever throwing: a server that does not answer gives FAILED / missing
 * values), from the WAL catalog and from the backup catalog.
 */
import { readActiveModel, type ServerConfig } from '../config/config.js';
import { SERVER_OPTIONS, type OptionDef } from '../config/options.js';
import type { RetentionPolicy } from '../config/values.js';
import { DONE } from '../catalog/backup-info.js';
import { loadCatalog, type BackupEntry } from '../catalog/catalog.js';
import { pyRepr, pyFromJs } from '../catalog/pyliteral.js';
import { PgConnection, statusConnectTimeoutMs } from '../postgres/connection.js';
import { parseConninfo } from '../postgres/conninfo.js';
import { errorMessage } from '../util/errors.js';
import { humanDuration, prettySize, pyFixed } from '../util/format.js';
import { shown, type RemoteStatus, type Shown } from './remote-status.js';
import { ctime, type PyDateTime } from '../util/pytime.js';

export interface PgArchiverStats {
  archivedCount: number;
  lastArchivedWal: string | null;
  lastArchivedTime: Date | null;
  failedCount: number;
  lastFailedWal: string | null;
  lastFailedTime: Date | null;
  statsReset: Date | null;
}

/** What PostgreSQL told us; `error` set (and the rest missing) when it could not be reached. */
export interface PgFacts {
  error?: string;
  /** `server_version`, first word (e.g. `16.4`). */
  version?: string;
  versionNum?: number;
  inRecovery?: boolean;
  /** Superuser, or a user with the backup privileges (data size and directory need them). */
  hasBackupPrivileges?: boolean;
  /** Sum of pg_tablespace_size over all tablespaces (Barman's "Current data size"). */
  dataSize?: number;
  dataDirectory?: string;
  currentWal?: string | null;
  archiveCommand?: string | null;
  archiveMode?: string | null;
  walLevel?: string | null;
  archiver?: PgArchiverStats;
}

/** Ask PostgreSQL for the facts status needs. Never throws. */
export async function fetchPgFacts(srv: ServerConfig): Promise<PgFacts> {
  if (!srv.conninfo) return { error: 'no conninfo configured' };
  let conn: PgConnection;
  try {
    conn = await PgConnection.connect(srv.conninfo, { timeoutMs: statusConnectTimeoutMs(srv.conninfo, srv.check_timeout) });
  } catch (err) {
    return { error: errorMessage(err) };
  }
  const facts: PgFacts = {};
  // Each fact on its own: a missing privilege costs one line, not the whole report.
  const get = async <T>(fn: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await fn();
    } catch {
      return undefined;
    }
  };
  try {
    facts.version = await get(async () => String(await conn.value<string>("SELECT current_setting('server_version')")).split(' ')[0] ?? '');
    if (facts.version === undefined) return { error: 'cannot read the PostgreSQL version' };
    facts.versionNum = await get(() => conn.serverVersion());
    facts.inRecovery = await get(() => conn.isInRecovery());
    facts.hasBackupPrivileges = (await get(() => conn.hasBackupPrivileges())) ?? false;
    if (facts.hasBackupPrivileges) {
      facts.dataSize = await get(() => conn.tablespacesSize());
      facts.dataDirectory = (await get(() => conn.setting('data_directory'))) ?? undefined;
    }
    facts.currentWal = await get(() => conn.currentWalFile());
    facts.archiveCommand = await get(() => conn.setting('archive_command'));
    facts.archiveMode = await get(() => conn.setting('archive_mode'));
    facts.walLevel = await get(() => conn.setting('wal_level'));
    facts.archiver = await get(async () => {
      const rows = await conn.query<{
        archived_count: string;
        last_archived_wal: string | null;
        last_archived_time: Date | null;
        failed_count: string;
        last_failed_wal: string | null;
        last_failed_time: Date | null;
        stats_reset: Date | null;
      }>('SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal, last_failed_time, stats_reset FROM pg_stat_archiver');
      const r = rows[0];
      if (!r) throw new Error('no pg_stat_archiver row');
      return {
        archivedCount: Number(r.archived_count),
        lastArchivedWal: r.last_archived_wal,
        lastArchivedTime: r.last_archived_time,
        failedCount: Number(r.failed_count),
        lastFailedWal: r.last_failed_wal,
        lastFailedTime: r.last_failed_time,
        statsReset: r.stats_reset,
      };
    });
  } finally {
    await conn.close();
  }
  return facts;
}

export interface StatusRow {
  /** JSON key. */
  key: string;
  description: string;
  message: string;
}

const pyBool = (b: boolean): string => (b ? 'True' : 'False');

/** `enforced (mode: auto, retention: REDUNDANCY 2, WAL retention: MAIN)` or `not enforced`. */
export function retentionPoliciesText(srv: ServerConfig): string {
  const policy = srv.retention_policy as RetentionPolicy | null;
  if (!policy) return 'not enforced';
  return `enforced (mode: ${srv.retention_policy_mode}, retention: ${policy.text}, WAL retention: ${String(srv.wal_retention_policy).toUpperCase()})`;
}

/**
 * The rows of `barman status`, in Barman's order and with Barman 3.4's JSON keys. `facts`
 * defaults to asking PostgreSQL; when it cannot be reached the version row says FAILED and the
 * other PostgreSQL and archiver rows are left out, as Barman does. The archiver rows (archive
 * command, last archived WAL as PostgreSQL's pg_stat_archiver reports it, failures, rate) are
 * shown when `archiver = on`.
 */
export async function serverStatusRows(srv: ServerConfig, facts?: PgFacts, now: Date = new Date()): Promise<StatusRow[]> {
  const rows: StatusRow[] = [];
  const add = (key: string, description: string, message: unknown) => rows.push({ key, description, message: String(message) });
  if (srv.description) add('description', 'Description', srv.description);
  add('active', 'Active', pyBool(srv.active));
  add('disabled', 'Disabled', pyBool(srv.disabled));
  const model = activeModel(srv);
  if (model) add('active_model', 'Active configuration model', model);

  const pg = facts ?? (srv.passive ? { error: 'passive node' } : await fetchPgFacts(srv));
  const reachable = !pg.error && pg.version !== undefined;
  if (!srv.passive) {
    if (!reachable) {
      add('pg_version', 'PostgreSQL version', 'FAILED trying to get PostgreSQL version');
    } else {
      add('pg_version', 'PostgreSQL version', pg.version);
      if (pg.inRecovery !== undefined) add('is_in_recovery', 'Cluster state', pg.inRecovery ? 'in archive recovery' : 'in production');
      if (pg.dataSize !== undefined) add('current_size', 'Current data size', prettySize(pg.dataSize));
      if (pg.dataDirectory !== undefined) add('data_directory', 'PostgreSQL Data directory', pg.dataDirectory);
      if (pg.currentWal) add('current_xlog', 'Current WAL segment', pg.currentWal);
    }
    if (srv.archiver && reachable && pg.archiveMode !== undefined && pg.archiveMode !== null) archiverRows(pg, now, add);
  }

  add('passive_node', 'Passive node', pyBool(srv.passive));
  add('retention_policies', 'Retention policies', retentionPoliciesText(srv));

  let entries: BackupEntry[];
  try {
    entries = await loadCatalog(srv);
  } catch (err) {
    // An unreadable catalog is never shown as one without backups.
    add('backups_number', 'No. of available backups', `FAILED (${errorMessage(err)})`);
    return rows;
  }
  const done = entries.filter((e) => e.info.status === DONE);
  add('backups_number', 'No. of available backups', done.length);
  add('first_backup', 'First available backup', done[0]?.id ?? 'None');
  add('last_backup', 'Last available backup', done.at(-1)?.id ?? 'None');
  const min = srv.minimum_redundancy;
  // Only full backups count toward minimum_redundancy (Barman 3.11+; the same count without
  // incremental backups).
  const doneFull = done.filter((e) => !e.info.parent_backup_id).length;
  add('minimum_redundancy', 'Minimum redundancy requirements', `${doneFull >= min ? 'satisfied' : 'FAILED'} (${doneFull}/${min})`);
  if (srv.primary_ssh_command) add('primary_ssh_command', 'SSH command to primary server', srv.primary_ssh_command);
  return rows;
}

/** The rows of the file archiver: PostgreSQL's archive_command and pg_stat_archiver. */
function archiverRows(pg: PgFacts, now: Date, add: (key: string, description: string, message: unknown) => void): void {
  add('archive_command', "PostgreSQL 'archive_command' setting", pg.archiveCommand || 'FAILED (please set it accordingly to documentation)');
  const a = pg.archiver;
  let last = a?.lastArchivedWal ?? null;
  if (last && a?.lastArchivedTime) last += `, at ${ctime(a.lastArchivedTime)}`;
  add('last_archived_wal', 'Last archived WAL', last ?? 'No WAL segment shipped yet');
  if (!a) return;
  let failures = String(a.failedCount);
  if (a.failedCount > 0) failures += ` (${a.lastFailedWal ?? 'None'} at ${a.lastFailedTime ? ctime(a.lastFailedTime) : 'None'})`;
  add('failed_count', 'Failures of WAL archiver', failures);
  if (a.statsReset) {
    const seconds = (now.getTime() - a.statsReset.getTime()) / 1000;
    const perHour = seconds > 0 ? (a.archivedCount / seconds) * 3600 : 0;
    if (perHour > 0) add('server_archived_wals_per_hour', 'Server WAL archiving rate', `${pyFixed(perHour, 2)}/hour`);
  }
}

/** Name of the model applied by `config-switch`, if any (`<backup_directory>/.active-model.auto`). */
export function activeModel(srv: ServerConfig): string | null {
  try {
    return readActiveModel(srv);
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// show-servers

/** Options measured in seconds that Barman shows as a Python timedelta. */
const INTERVAL_KEYS = new Set(['last_backup_maximum_age', 'last_wal_maximum_age']);

/** Python `str(timedelta(seconds=n))` for whole seconds: `1 day, 0:00:00`, `2:30:00`. */
export function pyTimedelta(seconds: number): string {
  const days = Math.floor(seconds / 86400);
  const rest = seconds - days * 86400;
  const h = Math.floor(rest / 3600);
  const m = Math.floor((rest % 3600) / 60);
  const s = rest % 60;
  const clock = `${h}:${String(m).padStart(2, '0')}:${String(s).padStart(2, '0')}`;
  return days === 0 ? clock : `${days} day${days === 1 ? '' : 's'}, ${clock}`;
}

function isRetentionPolicy(v: unknown): v is RetentionPolicy {
  return typeof v === 'object' && v !== null && 'text' in v && 'kind' in v;
}

/** Console text of a configuration value, Python style (`None`, `True`, lists comma-joined). */
export function configValueText(key: string, value: unknown): string {
  if (value === null || value === undefined) return 'None';
  if (typeof value === 'boolean') return pyBool(value);
  if (INTERVAL_KEYS.has(key) && typeof value === 'number') return pyTimedelta(value);
  if (key === 'custom_compression_magic' && typeof value === 'string') return `0x${value}`;
  if (Array.isArray(value)) return value.join(',');
  if (isRetentionPolicy(value)) return value.text;
  if (typeof value === 'object') return pyRepr(pyFromJs(value));
  return String(value);
}

/** JSON value of a configuration value (plain types; structured ones as their text). */
function configValueJson(key: string, value: unknown): unknown {
  if (value === null || value === undefined || typeof value === 'boolean' || typeof value === 'number' && !INTERVAL_KEYS.has(key)) {
    return value ?? null;
  }
  return configValueText(key, value);
}

export interface ServerSettings {
  /** Sorted by key. */
  entries: { key: string; text: string; json: unknown }[];
}

/** Barman's `str()` of a CSV option set (`BackupOptions({'concurrent_backup'})`), items sorted. */
function csvOptionText(cls: string, items: readonly string[]): string {
  return items.length === 0 ? `${cls}()` : `${cls}({${[...items].sort().map((i) => pyRepr(i)).join(', ')}})`;
}

/**
 * backup_options as Barman's executors leave them: postgres backups are always concurrent;
 * other methods default to concurrent when neither strategy is configured.
 */
function effectiveBackupOptions(srv: ServerConfig): string[] {
  const set = new Set((srv.backup_options as unknown as string[] | null) ?? []);
  if (srv.backup_method === 'postgres') {
    set.delete('exclusive_backup');
    set.add('concurrent_backup');
  } else if (!set.has('concurrent_backup') && !set.has('exclusive_backup')) {
    set.add('concurrent_backup');
  }
  return [...set];
}

/**
 * Barman's `last_backup_maximum_age` line: the interval and the age of the last backup,
 * `1 day (latest backup: 3 hours, 2 minutes )` or `1 day (WARNING! latest backup is ... old)`.
 */
export function lastBackupMaximumAgeText(maxAge: number | null, lastEnd: PyDateTime | null, now: Date): string {
  if (maxAge === null) return 'None';
  const interval = humanDuration(maxAge);
  if (!lastEnd) return `${interval} (WARNING! latest backup is No available backups old)`;
  const age = now.getTime() / 1000 - lastEnd.epochSeconds;
  return age <= maxAge ? `${interval} (latest backup: ${humanDuration(age)} )` : `${interval} (WARNING! latest backup is ${humanDuration(age)} old)`;
}

/**
 * Every configuration key of the server, Barman 3.4's fixed attributes (name, msg_list,
 * disabled) and the facts Barman adds (passive node, maximum backup age, the remote status of
 * remote-status.ts), sorted by key, each as Barman's console text and JSON value. Options that
 * Barman 3.4 shows as objects keep its text (`BackupOptions({...})`, `RecoveryOptions()`); options
 * without a default in Barman show None while unset. Passwords are redacted by the output.
 */
export function serverSettings(srv: ServerConfig, remote: RemoteStatus | null = null, lastBackupEnd: PyDateTime | null = null, now: Date = new Date()): ServerSettings {
  const values = new Map<string, Shown>();
  const fromValue = (key: string, value: unknown): Shown => ({ text: configValueText(key, value), json: configValueJson(key, value) });
  const options = srv as unknown as Record<string, unknown>; // option values are keyed by option name
  for (const def of SERVER_OPTIONS as readonly OptionDef[]) {
    if (def.name === 'model') continue;
    values.set(def.name, fromValue(def.name, options[def.name]));
  }
  // Options that have a default in barman-ts's table but none in Barman: None while not set.
  for (const key of ['reuse_backup', 'backup_compression_workers']) {
    if (srv.sources?.[key] === 'default') values.set(key, shown.none());
  }
  values.set('backup_options', shown.object(csvOptionText('BackupOptions', effectiveBackupOptions(srv))));
  values.set('recovery_options', shown.object(csvOptionText('RecoveryOptions', (srv.recovery_options as unknown as string[] | null) ?? [])));
  // A WAL retention policy object is printed in capitals; the unset option as its default text.
  values.set('wal_retention_policy', shown.str(srv.retention_policy ? String(srv.wal_retention_policy).toUpperCase() : String(srv.wal_retention_policy)));
  // Barman 3.4's names of the GCP options (renamed gcp_project and gcp_zone later).
  values.set('snapshot_gcp_project', values.get('gcp_project') ?? shown.none());
  values.set('snapshot_zone', values.get('gcp_zone') ?? shown.none());
  values.set('barman_home', shown.str(srv.global.barman_home));
  values.set('barman_lock_directory', shown.str(srv.global.barman_lock_directory ?? srv.global.barman_home));
  values.set('name', shown.str(srv.name));
  values.set('msg_list', shown.list(srv.errors));
  values.set('disabled', shown.bool(srv.disabled));
  values.set('passive_node', shown.bool(srv.passive));
  values.set('active_model', shown.str(activeModel(srv)));
  if (remote) for (const [k, v] of remote) values.set(k, v);
  values.set('last_backup_maximum_age', shown.str(lastBackupMaximumAgeText(srv.last_backup_maximum_age, lastBackupEnd, now)));
  const keys = [...values.keys()].sort();
  return { entries: keys.map((key) => ({ key, ...(values.get(key) as Shown) })) };
}
