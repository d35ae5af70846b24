/**
 * What `list-backups` and `show-backup` report (spec §4.4): the console lines and the JSON
 * objects, built from the catalog and the WAL statistics. Pure formatting apart from
 * `loadBackupsReport`, which reads the catalog, xlog.db and the timeline history files.
 */
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { COPY_DONE, WAITING_FOR_WALS, backupType, type BackupInfo } from '../catalog/backup-info.js';
import { neighbours, type BackupEntry, loadCatalog } from '../catalog/catalog.js';
import { pyToJs, pyToNumber, type PyValue } from '../catalog/pyliteral.js';
import { serverPaths } from '../catalog/server-dirs.js';
import { readXlogDb, type XlogDbEntry } from '../catalog/xlogdb.js';
import { humanDuration, percent, prettySize, pyFixed } from '../util/format.js';
import type { PyDateTime } from '../util/pytime.js';
import { isOpenPgpMessage } from '../util/gpg.js';
import { identifyCompression } from '../wal/compression.js';
import { isHistoryName } from '../wal/names.js';
import { readFileIfExists } from '../util/fsutil.js';
import { errorMessage } from '../util/errors.js';
import { childTimelinesFromHistories, computeWalStats, EMPTY_STATS, type BackupWalStats } from './wal-stats.js';

/**
 * Retention status per backup ID (VALID, OBSOLETE, KEEP:FULL, ...) when a retention policy is
 * enforced; `null` when it is not. Retention policies plug in here.
 */
export type RetentionStatuses = ReadonlyMap<string, string> | null;

export interface BackupsReport {
  server: ServerConfig;
  /** Oldest first. */
  entries: BackupEntry[];
  wals: XlogDbEntry[];
  stats: Map<string, BackupWalStats>;
  problems: string[];
}

/** Timeline history files of the archive, by timeline (missing ones are left out, unreadable ones noted). */
async function readHistories(srv: ServerConfig, wals: readonly XlogDbEntry[], problems: string[]): Promise<Map<number, string>> {
  const out = new Map<number, string>();
  const dir = serverPaths(srv).walsDir;
  for (const w of wals) {
    if (!isHistoryName(w.name)) continue;
    try {
      const data = await readFileIfExists(path.join(dir, w.name));
      // Compressed or encrypted (encryption = gpg): not read here, child timelines are unknown.
      if (data === null || w.encryption || isOpenPgpMessage(data) || identifyCompression(data) !== null) continue;
      out.set(parseInt(w.name.slice(0, 8), 16), data.toString('utf8'));
    } catch (err) {
      // Child timelines of this one are then unknown: the figures say less, and why.
      problems.push(errorMessage(err));
    }
  }
  return out;
}

/** Catalog + xlog.db + WAL statistics of one server. */
export async function loadBackupsReport(srv: ServerConfig): Promise<BackupsReport> {
  const problems: string[] = [];
  const entries = await loadCatalog(srv, problems);
  const wals = await readXlogDb(srv);
  const children = childTimelinesFromHistories(await readHistories(srv, wals, problems));
  return { server: srv, entries, wals, stats: computeWalStats(entries, wals, children), problems };
}


function statsOf(report: BackupsReport, id: string): BackupWalStats {
  return report.stats.get(id) ?? EMPTY_STATS;
}

/** `F`, `I`, `R` or `S`. */
export function typeLetter(info: BackupInfo): string {
  return backupType(info).charAt(0).toUpperCase();
}

const ctimeOf = (t: PyDateTime | null): string => (t ? t.ctime() : 'None');
const timestampOf = (t: PyDateTime | null): string | null => (t ? String(Math.trunc(t.epochSeconds)) : null);

// ---------------------------------------------------------------------------------------------
// list-backups

export interface ListBackupsRow {
  id: string;
  line: string;
  json: Record<string, unknown>;
}

/** Rows of list-backups for one server, newest first. */
export function listBackupsRows(report: BackupsReport, retention: RetentionStatuses = null): ListBackupsRow[] {
  const srv = report.server.name;
  const rows: ListBackupsRow[] = [];
  for (const e of [...report.entries].reverse()) {
    const info = e.info;
    const name = info.backup_name ? ` '${info.backup_name}'` : '';
    const letter = typeLetter(info);
    const json: Record<string, unknown> = { backup_id: e.id, backup_type: backupType(info), status: info.status };
    if (info.backup_name) json.backup_name = info.backup_name;
    if (!COPY_DONE.has(info.status)) {
      rows.push({ id: e.id, line: `${srv} ${e.id}${name} - ${letter} - ${info.status}`, json });
      continue;
    }
    const st = statsOf(report, e.id);
    const sizeBytes = (info.size ?? 0) + st.walSize;
    const walBytes = st.walUntilNextSize;
    const rs = retention?.get(e.id) ?? null;
    let line = `${srv} ${e.id}${name} - ${letter} - ${ctimeOf(info.end_time)} - Size: ${prettySize(sizeBytes)} - WAL Size: ${prettySize(walBytes)}`;
    if (info.status === WAITING_FOR_WALS) line += ` - ${WAITING_FOR_WALS}`;
    if (rs && rs !== 'VALID' && rs !== '-') line += ` - ${rs}`;
    Object.assign(json, {
      end_time: ctimeOf(info.end_time),
      end_time_timestamp: timestampOf(info.end_time),
      size: prettySize(sizeBytes),
      size_bytes: sizeBytes,
      wal_size: prettySize(walBytes),
      wal_size_bytes: walBytes,
      retention_status: rs ?? '-',
    });
    rows.push({ id: e.id, line, json });
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// show-backup

export interface ShowBackupView {
  lines: string[];
  warnings: string[];
  json: Record<string, unknown>;
}

const top = (label: string, value: unknown): string => `  ${label.padEnd(23)}: ${String(value)}`;
const row = (label: string, value: unknown): string => `    ${label.padEnd(21)}: ${String(value)}`;
const header = (title: string): string => `  ${title}:`;

function pyDictGet(d: PyValue | null, key: string): PyValue | undefined {
  return d instanceof Map ? d.get(key) : undefined;
}

/** The root and the chain (root first) of an incremental backup, through parent_backup_id. */
function backupChain(entries: readonly BackupEntry[], entry: BackupEntry): BackupEntry[] {
  const byId = new Map(entries.map((e) => [e.id, e]));
  const chain: BackupEntry[] = [entry];
  let cur = entry;
  const seen = new Set([entry.id]);
  while (cur.info.parent_backup_id) {
    const parent = byId.get(cur.info.parent_backup_id);
    if (!parent || seen.has(parent.id)) break;
    seen.add(parent.id);
    chain.unshift(parent);
    cur = parent;
  }
  return chain;
}

/** show-backup for one backup of the report. */
export function showBackupView(report: BackupsReport, entry: BackupEntry, retention: RetentionStatuses = null): ShowBackupView {
  const srv = report.server;
  const info = entry.info;
  const lines: string[] = [];
  const warnings: string[] = [];
  const json: Record<string, unknown> = { backup_id: entry.id, status: info.status, backup_type: backupType(info) };

  lines.push(`Backup ${entry.id}:`);
  if (info.backup_name) {
    lines.push(top('Backup Name', info.backup_name));
    json.backup_name = info.backup_name;
  }
  lines.push(top('Server Name', info.server_name ?? srv.name));
  json.server_name = info.server_name ?? srv.name;
  if (info.systemid) {
    lines.push(top('System Id', info.systemid));
    json.system_id = info.systemid;
  }
  lines.push(top('Status', info.status));

  if (!COPY_DONE.has(info.status)) {
    if (info.error) {
      lines.push(top('Error', info.error));
      json.error = info.error;
    }
    lines.push('');
    return { lines, warnings, json };
  }

  lines.push(top('PostgreSQL Version', info.version ?? 'None'));
  lines.push(top('PGDATA directory', info.pgdata ?? 'None'));
  json.postgresql_version = info.version;
  json.pgdata_directory = info.pgdata;
  if (info.cluster_size) {
    lines.push(top('Estimated Cluster Size', prettySize(info.cluster_size)));
    json.cluster_size = prettySize(info.cluster_size);
    json.cluster_size_bytes = info.cluster_size;
  }
  lines.push('');

  // Server information
  if (info.data_checksums || info.summarize_wal) {
    lines.push(header('Server information'));
    if (info.data_checksums) lines.push(row('Checksums', info.data_checksums));
    if (info.summarize_wal) lines.push(row('WAL summarizer', info.summarize_wal));
    lines.push('');
  }
  json.server_information = { data_checksums: info.data_checksums, summarize_wal: info.summarize_wal };

  // Tablespaces
  if (info.tablespaces && info.tablespaces.length > 0) {
    lines.push(header('Tablespaces'));
    for (const t of info.tablespaces) lines.push(`    ${t.name}: ${t.location} (oid: ${t.oid})`);
    lines.push('');
  }
  json.tablespaces = (info.tablespaces ?? []).map((t) => ({ name: t.name, location: t.location, oid: t.oid }));

  // Base backup information
  const st = statsOf(report, entry.id);
  const type = backupType(info);
  const dedup = info.deduplicated_size ?? info.size ?? 0;
  const bb: Record<string, unknown> = {};
  lines.push(header('Base backup information'));
  lines.push(row('Backup Method', info.mode ?? 'None'));
  bb.backup_method = info.mode;
  if (info.encryption) lines.push(row('Encryption', info.encryption));
  bb.encryption = info.encryption;
  if (info.mode === 'postgres') lines.push(row('Backup Type', type));
  lines.push(row('Backup Size', `${prettySize(dedup)} (${prettySize(dedup + st.walSize)} with WALs)`));
  Object.assign(bb, {
    backup_size: prettySize(dedup),
    backup_size_bytes: dedup,
    backup_size_with_wals: prettySize(dedup + st.walSize),
    backup_size_with_wals_bytes: dedup + st.walSize,
  });
  if (info.compression && info.compression !== 'none') lines.push(row('Backup Compression', info.compression));
  bb.compression = info.compression;
  lines.push(row('WAL Size', prettySize(st.walSize)));
  bb.wal_size = prettySize(st.walSize);
  bb.wal_size_bytes = st.walSize;
  // What deduplication (rsync reuse) or incremental copy saved, against a full copy.
  const reference = type === 'incremental' ? info.cluster_size : type === 'rsync' ? info.size : null;
  if (reference && reference > 0) {
    const saved = reference - dedup;
    const ratio = 1 - dedup / reference;
    lines.push(row('Resources saved', `${prettySize(saved)} (${percent(ratio)})`));
    Object.assign(bb, { resources_saved: prettySize(saved), resources_saved_bytes: saved, resources_saved_percentage: percent(ratio) });
  }
  lines.push(row('Timeline', info.timeline ?? 'None'));
  lines.push(row('Begin WAL', info.begin_wal ?? 'None'));
  lines.push(row('End WAL', info.end_wal ?? 'None'));
  lines.push(row('Number of WALs', st.walNum));
  Object.assign(bb, { timeline: info.timeline, begin_wal: info.begin_wal, end_wal: info.end_wal, wal_num: st.walNum });
  if (st.walCompressionRatio > 0) {
    lines.push(row('WAL compression ratio', percent(st.walCompressionRatio)));
    bb.wal_compression_ratio = percent(st.walCompressionRatio);
  }
  lines.push(row('Begin time', info.begin_time?.format() ?? 'None'));
  lines.push(row('End time', info.end_time?.format() ?? 'None'));
  Object.assign(bb, {
    begin_time: info.begin_time?.format() ?? null,
    begin_time_timestamp: timestampOf(info.begin_time),
    end_time: info.end_time?.format() ?? null,
    end_time_timestamp: timestampOf(info.end_time),
  });
  const copyTime = pyToNumber(pyDictGet(info.copy_stats, 'copy_time'));
  const analysisTime = pyToNumber(pyDictGet(info.copy_stats, 'analysis_time'));
  const workers = pyToNumber(pyDictGet(info.copy_stats, 'number_of_workers')) ?? 1;
  if (copyTime !== null) {
    let text = humanDuration(copyTime);
    if (analysisTime !== null && analysisTime >= 1) text += ` + ${humanDuration(analysisTime)} startup`;
    lines.push(row('Copy time', text));
    bb.copy_time = humanDuration(copyTime);
    bb.copy_time_seconds = copyTime;
    if (analysisTime !== null) {
      bb.analysis_time = humanDuration(analysisTime);
      bb.analysis_time_seconds = analysisTime;
    }
    if (copyTime > 0) {
      const throughput = dedup / copyTime;
      lines.push(row('Estimated throughput', `${prettySize(throughput)}/s${workers > 1 ? ` (${workers} jobs)` : ''}`));
      bb.throughput = `${prettySize(throughput)}/s`;
      bb.throughput_bytes = throughput;
    }
    bb.number_of_workers = workers;
  }
  lines.push(row('Begin Offset', info.begin_offset ?? 'None'));
  lines.push(row('End Offset', info.end_offset ?? 'None'));
  lines.push(row('Begin LSN', info.begin_xlog ?? 'None'));
  lines.push(row('End LSN', info.end_xlog ?? 'None'));
  Object.assign(bb, { begin_offset: info.begin_offset, end_offset: info.end_offset, begin_lsn: info.begin_xlog, end_lsn: info.end_xlog });
  lines.push('');
  json.base_backup_information = bb;

  // WAL information
  const wi: Record<string, unknown> = {
    no_of_files: st.walUntilNextNum,
    disk_usage: prettySize(st.walUntilNextSize),
    disk_usage_bytes: st.walUntilNextSize,
    wal_rate: `${pyFixed(st.walRatePerSecond * 3600, 2)}/hour`,
    wal_rate_per_second: st.walRatePerSecond,
    compression_ratio: st.walUntilNextCompressionRatio,
    last_available: st.walLast,
    timelines: st.childTimelines,
  };
  lines.push(header('WAL information'));
  lines.push(row('Number of files', st.walUntilNextNum));
  lines.push(row('Disk usage', prettySize(st.walUntilNextSize)));
  if (st.walRatePerSecond > 0) lines.push(row('WAL rate', wi.wal_rate));
  if (st.walUntilNextCompressionRatio > 0) lines.push(row('Compression ratio', percent(st.walUntilNextCompressionRatio)));
  lines.push(row('Last available', st.walLast ?? 'None'));
  if (st.childTimelines.length > 0) {
    lines.push(row('Reachable timelines', st.childTimelines.join(', ')));
    warnings.push('WAL information is inaccurate due to multiple timelines interacting with this backup');
  }
  lines.push('');
  json.wal_information = wi;

  // Catalog information
  const { previous, next } = neighbours(report.entries, entry.id);
  const rs = retention ? (retention.get(entry.id) ?? '-') : 'not enforced';
  const ci: Record<string, unknown> = {
    retention_policy: rs,
    previous_backup: previous?.id ?? '- (this is the oldest base backup)',
    next_backup: next?.id ?? '- (this is the latest base backup)',
  };
  lines.push(header('Catalog information'));
  lines.push(row('Retention Policy', rs));
  lines.push(row('Previous Backup', ci.previous_backup));
  lines.push(row('Next Backup', ci.next_backup));
  if (type === 'incremental') {
    const chain = backupChain(report.entries, entry);
    const root = chain[0] as BackupEntry;
    const chainSize = chain.reduce((sum, e) => sum + (e.info.deduplicated_size ?? e.info.size ?? 0), 0);
    lines.push(row('Root Backup', root.id));
    lines.push(row('Parent Backup', info.parent_backup_id));
    lines.push(row('Backup chain size', chain.length));
    Object.assign(ci, { root_backup_id: root.id, parent_backup_id: info.parent_backup_id, chain_size: chain.length, chain_size_bytes: chainSize });
  }
  if (info.mode === 'postgres' && info.children_backup_ids && info.children_backup_ids.length > 0) {
    lines.push(row('Children Backup(s)', info.children_backup_ids.join(',')));
    ci.children_backup_ids = info.children_backup_ids.join(',');
  }
  lines.push('');
  json.catalog_information = ci;

  if (info.snapshots_info) json.snapshots_info = pyToJs(info.snapshots_info);
  return { lines, warnings, json };
}
