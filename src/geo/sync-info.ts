/**
 * `barman sync-info SRV [LAST_WAL [LAST_POSITION]]` on a primary backup server (spec §10): the
 * JSON document a passive node fetches through its `primary_ssh_command` to learn what to copy.
 * Its text is Python's `json.dump(indent=4)` of Barman's dict, key order included, since Barman
 * passives parse it and scripts compare it:
 *
 *   last_position  byte offset in xlog.db of the start of its last line (0 when empty)
 *   last_name      name on that line ('' when empty)
 *   backups        the DONE / WAITING_FOR_WALS backups, as Barman's BackupInfo.to_json
 *   wals           xlog.db lines after LAST_WAL (or from the oldest backup's begin_wal)
 *   version        the Barman version we follow
 *   config         the server's configuration, as Barman's ServerConfig.to_json
 *
 * A passive of Barman 3.4 refuses any backup field it does not know (it builds its backup.info
 * with them): the fields newer than 3.4 that only inform (cluster_size, data_checksums,
 * summarize_wal) are left out, and the others (encryption, parent and children backup IDs) are
 * only there when set, in which case no passive older than the feature could use the backup.
 */
import * as fs from 'node:fs';
import type { ServerConfig } from '../config/config.js';
import { SERVER_OPTIONS, type OptionDef } from '../config/options.js';
import type { RetentionPolicy } from '../config/values.js';
import { COPY_DONE, dumpBackupInfoFields, serializeBackupInfo, type BackupInfo, type BackupInfoKey } from '../catalog/backup-info.js';
import { loadCatalog } from '../catalog/catalog.js';
import { pyFloat, type PyValue } from '../catalog/pyliteral.js';
import { parseXlogDbLine, withXlogDb, type XlogDbEntry } from '../catalog/xlogdb.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { humanDuration } from '../util/format.js';
import { pyJsonDumps, type PyJsonValue } from '../util/pyjson.js';
import { PyDateTime } from '../util/pytime.js';
import { redact } from '../util/redact.js';
import { VERSION } from '../version.js';

// ---------------------------------------------------------------------------------------------
// Backups

/** backup.info fields newer than Barman 3.4 that only inform: never sent (see the module comment). */
const INFORMATIONAL_NEWER_FIELDS: ReadonlySet<string> = new Set(['cluster_size', 'data_checksums', 'summarize_wal']);
/** backup.info fields newer than Barman 3.4 that matter for a restore: sent only when set. */
const NEWER_FIELDS: ReadonlySet<string> = new Set(['children_backup_ids', 'encryption', 'parent_backup_id']);

/** The keys the backup.info writer writes for this backup (it leaves some out when unset). */
function writtenKeys(info: BackupInfo): Set<string> {
  const keys = new Set<string>();
  for (const line of serializeBackupInfo(info).split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) keys.add(line.slice(0, eq));
  }
  return keys;
}

const INT_FIELDS: ReadonlySet<string> = new Set([
  'begin_offset',
  'cluster_size',
  'deduplicated_size',
  'end_offset',
  'size',
  'timeline',
  'version',
  'xlog_segment_size',
]);

/**
 * A backup as Barman's BackupInfo.to_json: the fields in their backup.info text forms (the label
 * as its Python repr, ID lists comma-joined), ints as numbers, times as ctime, the Python
 * literals (tablespaces as `[name, oid, location]` lists, copy_stats, included_files,
 * snapshots_info) as JSON, sorted by key, then `backup_id`.
 */
export function backupSyncJson(id: string, info: BackupInfo): Map<string, PyJsonValue> {
  const out = new Map<string, PyJsonValue>();
  const texts = dumpBackupInfoFields(info);
  const written = writtenKeys(info);
  for (const [key, text] of Object.entries(texts) as [BackupInfoKey, string | null][]) {
    if (!written.has(key) || INFORMATIONAL_NEWER_FIELDS.has(key)) continue;
    if (NEWER_FIELDS.has(key) && text === null) continue;
    const value: unknown = info[key];
    if (value === null || value === undefined || text === null) out.set(key, null);
    else if (value instanceof PyDateTime) out.set(key, value.ctime());
    else if (key === 'tablespaces') out.set(key, (info.tablespaces ?? []).map((t) => [t.name, t.oid, t.location]));
    else if (key === 'copy_stats' || key === 'included_files' || key === 'snapshots_info') out.set(key, value as PyValue);
    else if (INT_FIELDS.has(key) && typeof value === 'number') out.set(key, value);
    else out.set(key, text);
  }
  out.set('backup_id', id);
  return out;
}

// ---------------------------------------------------------------------------------------------
// WAL files from xlog.db

/** A WAL file as Barman's WalFileInfo.to_json (keys sorted; encryption only when set). */
export function walSyncJson(e: XlogDbEntry): Map<string, PyJsonValue> {
  const out = new Map<string, PyJsonValue>();
  out.set('compression', e.compression);
  if (e.encryption !== null) out.set('encryption', e.encryption);
  out.set('name', e.name);
  out.set('size', e.size);
  out.set('time', e.time === null ? null : pyFloat(e.time));
  return out;
}

export interface WalSelection {
  wals: XlogDbEntry[];
  lastPosition: number;
  lastName: string;
}

/**
 * Where reading starts: `lastPosition` when the 24 characters there are `lastWal` (the passive's
 * last sync still matches the file), else the start (the file was rewritten meanwhile).
 */
export function startingPoint(text: string, lastWal: string | null, lastPosition: number | null): number {
  const pos = lastPosition ?? 0;
  return lastWal !== null && text.slice(pos, pos + 24) === lastWal ? pos : 0;
}

/**
 * The xlog.db lines a passive needs (spec §10), from the file's text (latin1: one char = one
 * byte): after `lastWal` when given, else from `firstUsefulWal` (the oldest backup's begin_wal).
 * A last line without its newline is a torn append: not returned, as every reader skips it.
 */
export function selectWals(text: string, lastWal: string | null, lastPosition: number | null, firstUsefulWal: string | null): WalSelection {
  const start = startingPoint(text, lastWal, lastPosition);
  let checkFirst = start === 0 && lastWal !== null;
  const wals: XlogDbEntry[] = [];
  let last: { pos: number; name: string } | null = null;
  let pos = start;
  for (;;) {
    const nl = text.indexOf('\n', pos);
    if (nl < 0) break;
    const line = text.slice(pos, nl);
    const linePos = pos;
    pos = nl + 1;
    let e: XlogDbEntry | null;
    try {
      e = parseXlogDbLine(line);
    } catch (err) {
      throw new BarmanError(`xlog.db: ${errorMessage(err)}`);
    }
    if (!e) continue;
    last = { pos: linePos, name: e.name };
    if (checkFirst && lastWal !== null) {
      if (lastWal < e.name) throw new BarmanError(`last_wal '${lastWal}' is older than the first available wal '${e.name}'`);
      checkFirst = false;
    }
    if (lastWal) {
      if (e.name <= lastWal) continue;
    } else if (firstUsefulWal && e.name < firstUsefulWal) {
      continue;
    }
    wals.push(e);
  }
  if (!last) return { wals, lastPosition: 0, lastName: '' };
  if (lastWal !== null && lastWal > last.name) {
    throw new BarmanError(`last_wal '${lastWal}' is newer than the last available wal  '${last.name}'`);
  }
  return { wals, lastPosition: last.pos, lastName: last.name };
}

// ---------------------------------------------------------------------------------------------
// Configuration

/** Barman 3.4's ServerConfig attributes, in the order its to_json lists them. */
const BARMAN_34_CONFIG_KEYS = [
  'active', 'archiver', 'archiver_batch_size', 'backup_compression', 'backup_compression_format',
  'backup_compression_level', 'backup_compression_location', 'backup_compression_workers',
  'backup_directory', 'backup_method', 'backup_options', 'bandwidth_limit', 'basebackup_retry_sleep',
  'basebackup_retry_times', 'basebackups_directory', 'check_timeout', 'compression', 'conninfo',
  'custom_compression_filter', 'custom_decompression_filter', 'custom_compression_magic',
  'description', 'disabled', 'errors_directory', 'forward_config_path', 'immediate_checkpoint',
  'incoming_wals_directory', 'last_backup_maximum_age', 'last_backup_minimum_size',
  'last_wal_maximum_age', 'max_incoming_wals_queue', 'minimum_redundancy', 'network_compression',
  'parallel_jobs', 'path_prefix', 'post_archive_retry_script', 'post_archive_script',
  'post_backup_retry_script', 'post_backup_script', 'post_delete_script', 'post_delete_retry_script',
  'post_recovery_retry_script', 'post_recovery_script', 'post_wal_delete_script',
  'post_wal_delete_retry_script', 'pre_archive_retry_script', 'pre_archive_script',
  'pre_backup_retry_script', 'pre_backup_script', 'pre_delete_script', 'pre_delete_retry_script',
  'pre_recovery_retry_script', 'pre_recovery_script', 'pre_wal_delete_script',
  'pre_wal_delete_retry_script', 'primary_conninfo', 'primary_ssh_command', 'recovery_options',
  'recovery_staging_path', 'create_slot', 'retention_policy', 'retention_policy_mode', 'reuse_backup',
  'slot_name', 'snapshot_disks', 'snapshot_gcp_project', 'snapshot_instance', 'snapshot_provider',
  'snapshot_zone', 'ssh_command', 'streaming_archiver', 'streaming_archiver_batch_size',
  'streaming_archiver_name', 'streaming_backup_name', 'streaming_conninfo', 'streaming_wals_directory',
  'tablespace_bandwidth_limit', 'wal_retention_policy', 'wals_directory',
] as const;

/** Names Barman 3.4 used for options renamed since. */
const RENAMED: Readonly<Record<string, string>> = { snapshot_gcp_project: 'gcp_project', snapshot_zone: 'gcp_zone' };

const POLICY_UNITS: Readonly<Record<string, string>> = { DAYS: 'd', WEEKS: 'w', MONTHS: 'm' };

/** A retention policy as Barman's to_json: `redundancy 2 b`, `window 4 w` (and `simple-wal ...` for WALs). */
export function policyJson(policy: RetentionPolicy, mode = policy.kind === 'redundancy' ? 'redundancy' : 'window'): string {
  if (policy.kind === 'redundancy') return `${mode} ${policy.copies} b`;
  return `${mode} ${policy.amount} ${POLICY_UNITS[policy.unit] ?? 'd'}`;
}

const INTERVAL_KEYS: ReadonlySet<string> = new Set(['last_backup_maximum_age', 'last_wal_maximum_age']);

function configValueJson(srv: ServerConfig, key: string, value: unknown): PyJsonValue {
  const policy = srv.retention_policy as RetentionPolicy | null;
  if (key === 'wal_retention_policy') return policy ? policyJson(policy, 'simple-wal') : String(value ?? 'main');
  if (value === null || value === undefined) return null;
  if (key === 'retention_policy') return policyJson(value as RetentionPolicy);
  if (INTERVAL_KEYS.has(key) && typeof value === 'number') return humanDuration(value);
  if (key === 'reuse_backup' && value === 'off') return null;
  if (key === 'compression' && value === 'none') return null;
  if (key === 'custom_compression_magic') return `0x${String(value)}`;
  if (key === 'snapshot_disks' && typeof value === 'string') return value.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (typeof value === 'boolean' || typeof value === 'number') return value;
  // Passwords never leave the primary (the passive uses none of the connection strings).
  if (typeof value === 'string') return redact(value);
  if (Array.isArray(value)) return value.join(',');
  if (typeof value === 'object') return value as Record<string, number>;
  return String(value);
}

/**
 * Barman's ServerConfig.to_json: `msg_list`, `name`, `barman_home`, `barman_lock_directory`, then
 * every option in Barman 3.4's order; options Barman 3.4 did not have follow in our table order.
 */
export function syncInfoConfig(srv: ServerConfig): Map<string, PyJsonValue> {
  const values = srv as unknown as Record<string, unknown>; // option values are keyed by option name
  const out = new Map<string, PyJsonValue>();
  out.set('msg_list', [...srv.errors]);
  out.set('name', srv.name);
  out.set('barman_home', srv.global.barman_home);
  out.set('barman_lock_directory', srv.global.barman_lock_directory ?? srv.global.barman_home);
  for (const key of BARMAN_34_CONFIG_KEYS) {
    if (key === 'disabled') out.set(key, srv.disabled);
    else out.set(key, configValueJson(srv, key, values[RENAMED[key] ?? key]));
  }
  const done = new Set<string>([...BARMAN_34_CONFIG_KEYS, ...Object.values(RENAMED), 'model']);
  for (const def of SERVER_OPTIONS as readonly OptionDef[]) {
    if (!done.has(def.name)) out.set(def.name, configValueJson(srv, def.name, values[def.name]));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The document

/** The sync-info document of a server and its text (Python's json.dump, no final newline). */
export async function buildSyncInfo(srv: ServerConfig, lastWal: string | null, lastPosition: number | null): Promise<{ doc: Map<string, PyJsonValue>; text: string }> {
  const backups = (await loadCatalog(srv)).filter((e) => COPY_DONE.has(e.info.status));
  const firstUsefulWal = backups[0]?.info.begin_wal ?? null;
  // A missing catalog is rebuilt first, as Barman does; then one read of the whole file.
  const text = await withXlogDb(srv, async (db) => {
    await db.ensure();
    try {
      return fs.readFileSync(db.file, 'latin1');
    } catch (err) {
      throw new BarmanError(`cannot read ${db.file}: ${errorMessage(err)}`);
    }
  });
  const sel = selectWals(text, lastWal, lastPosition, firstUsefulWal);
  const doc = new Map<string, PyJsonValue>();
  doc.set('last_position', sel.lastPosition);
  doc.set('last_name', sel.lastName);
  doc.set('backups', new Map(backups.map((e) => [e.id, backupSyncJson(e.id, e.info)])));
  doc.set('wals', sel.wals.map(walSyncJson));
  doc.set('version', VERSION);
  doc.set('config', syncInfoConfig(srv));
  return { doc, text: pyJsonDumps(doc) };
}
