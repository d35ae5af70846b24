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

const ctimeOf = (t: PyDateTime | null): string => (t ? t.ctime() : 'None');
const timestampOf = (t: PyDateTime | null): string | null => (t ? String(Math.trunc(t.epochSeconds)) : null);

// ---------------------------------------------------------------------------------------------
// list-backups

export interface ListBackupsRow {
  id: string;
  line: string;
  json: Record<string, unknown>;
}

/**
 * Rows of list-backups for one server, newest first, in Barman 3.4's shape (see the README's
 * compatibility table): `SRV ID['NAME'] - <end ctime> - Size: S - WAL Size: W` then
 * ` (tablespaces: name:location, ...)`, ` - WAITING_FOR_WALS` and ` - <retention status>` (only
 * when a policy is enforced and the status is not VALID); `SRV ID['NAME'] - <STATUS>` for a
 * backup whose copy is not done. Barman 3.11+ adds a backup-type letter column after the name,
 * which 3.4's scripts do not expect: the type is in the JSON only (`backup_type`).
 */
export function listBackupsRows(report: BackupsReport, retention: RetentionStatuses = null): ListBackupsRow[] {
  const srv = report.server.name;
  const rows: ListBackupsRow[] = [];
  for (const e of [...report.entries].reverse()) {
    const info = e.info;
    const head = `${srv} ${e.id} ${info.backup_name ? `'${info.backup_name}' - ` : '- '}`;
    const json: Record<string, unknown> = { backup_id: e.id, backup_type: backupType(info), status: info.status };
    if (info.backup_name) json.backup_name = info.backup_name;
    if (!COPY_DONE.has(info.status)) {
      rows.push({ id: e.id, line: `${head}${info.status}`, json });
      continue;
    }
    const st = statsOf(report, e.id);
    const sizeBytes = (info.size ?? 0) + st.walSize;
    const walBytes = st.walUntilNextSize;
    // Barman reports a status other than VALID only; `-` stands for "nothing to say".
    const rs = retention?.get(e.id) ?? null;
    const shown = rs && rs !== 'VALID' && rs !== '-' ? rs : null;
    const tablespaces = info.tablespaces ?? [];
    let line = `${head}${ctimeOf(info.end_time)} - Size: ${prettySize(sizeBytes)} - WAL Size: ${prettySize(walBytes)}`;
    if (tablespaces.length > 0) line += ` (tablespaces: ${tablespaces.map((t) => `${t.name}:${t.location}`).join(', ')})`;
    if (info.status === WAITING_FOR_WALS) line += ` - ${WAITING_FOR_WALS}`;
    if (shown) line += ` - ${shown}`;
    Object.assign(json, {
      end_time: ctimeOf(info.end_time),
      end_time_timestamp: timestampOf(info.end_time),
      size: prettySize(sizeBytes),
      size_bytes: sizeBytes,
      wal_size: prettySize(walBytes),
      wal_size_bytes: walBytes,
      retention_status: shown ?? '-',
      tablespaces: tablespaces.map((t) => ({ name: t.name, location: t.location })),
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

/**
 * show-backup for one backup of the report, in Barman 3.4's layout and labels (`Disk usage`,
 * `Incremental size`, `WAL number`, `No of files`: see the README's compatibility table). Rows
 * that only a Barman 3.11+ catalog can fill (estimated cluster size, checksums and WAL
 * summarizer, encryption, incremental chains) are added, in Barman 3.17's words, for the
 * backups that have them. The JSON holds Barman 3.4's keys plus Barman 3.17's additions.
 */
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

  if (info.data_checksums || info.summarize_wal) {
    lines.push(header('Server information'));
    if (info.data_checksums) lines.push(row('Checksums', info.data_checksums));
    if (info.summarize_wal) lines.push(row('WAL summarizer', info.summarize_wal));
    lines.push('');
  }
  json.server_information = { data_checksums: info.data_checksums, summarize_wal: info.summarize_wal };

  if (info.snapshots_info) json.snapshots_info = pyToJs(info.snapshots_info);

  if (info.tablespaces && info.tablespaces.length > 0) {
    lines.push(header('Tablespaces'));
    for (const t of info.tablespaces) lines.push(row(t.name, `${t.location} (oid: ${t.oid})`));
    lines.push('');
  }
  json.tablespaces = (info.tablespaces ?? []).map((t) => ({ name: t.name, location: t.location, oid: t.oid }));

  const st = statsOf(report, entry.id);
  const base = baseBackupSection(entry, st);
  lines.push(...base.lines);
  json.base_backup_information = base.json;

  const wal = walInformationSection(st);
  lines.push(...wal.lines);
  json.wal_information = wal.json;

  const cat = catalogSection(report, entry, retention);
  lines.push(...cat.lines);
  json.catalog_information = cat.json;

  if (st.childTimelines.length > 0) {
    // Barman prints this warning among the show-backup lines (stdout), after a blank line.
    lines.push('', `WARNING: ${MULTIPLE_TIMELINES}`);
  }
  return { lines, warnings, json };
}

const MULTIPLE_TIMELINES = 'WAL information is inaccurate due to multiple timelines interacting with this backup';

interface Section {
  lines: string[];
  json: Record<string, unknown>;
}

/** `Base backup information`: sizes, WAL range, times, copy statistics, offsets and LSNs. */
function baseBackupSection(entry: BackupEntry, st: BackupWalStats): Section {
  const info = entry.info;
  const type = backupType(info);
  const lines: string[] = [header('Base backup information')];
  const bb: Record<string, unknown> = { backup_method: info.mode, encryption: info.encryption, compression: info.compression };
  if (type === 'incremental') lines.push(row('Backup Type', type));
  if (info.encryption) lines.push(row('Encryption', info.encryption));
  const size = info.size ?? 0;
  if (info.size !== null && info.size !== undefined) {
    lines.push(row('Disk usage', `${prettySize(size)} (${prettySize(size + st.walSize)} with WALs)`));
  }
  Object.assign(bb, {
    disk_usage: prettySize(size),
    disk_usage_bytes: size,
    disk_usage_with_wals: prettySize(size + st.walSize),
    disk_usage_with_wals_bytes: size + st.walSize,
  });
  const dedupKnown = info.deduplicated_size !== null && info.deduplicated_size !== undefined;
  if (dedupKnown && size > 0) {
    const dedup = info.deduplicated_size ?? 0;
    // Barman writes the saving as a negative percentage: `-` glued to Python's `{:.2%}`.
    const ratio = `-${percent(1 - dedup / size)}`;
    lines.push(row('Incremental size', `${prettySize(dedup)} (${ratio})`));
    Object.assign(bb, { incremental_size: prettySize(dedup), incremental_size_bytes: dedup, incremental_size_ratio: ratio });
  }
  // Barman 3.17's names for the same sizes (deduplicated size, as 3.17 reports it).
  const dedupOrSize = info.deduplicated_size ?? size;
  Object.assign(bb, {
    backup_size: prettySize(dedupOrSize),
    backup_size_bytes: dedupOrSize,
    backup_size_with_wals: prettySize(dedupOrSize + st.walSize),
    backup_size_with_wals_bytes: dedupOrSize + st.walSize,
    wal_size: prettySize(st.walSize),
    wal_size_bytes: st.walSize,
  });
  // Barman 3.17's saving against a full copy: rsync reuse (against size) or incremental
  // (against the cluster size). The console shows the same as 3.4's `Incremental size`.
  const reference = type === 'incremental' ? info.cluster_size : type === 'rsync' ? info.size : null;
  if (reference && reference > 0) {
    const saved = reference - dedupOrSize;
    Object.assign(bb, { resources_saved: prettySize(saved), resources_saved_bytes: saved, resources_saved_percentage: percent(1 - dedupOrSize / reference) });
  }
  lines.push(row('Timeline', info.timeline ?? 'None'));
  lines.push(row('Begin WAL', info.begin_wal ?? 'None'));
  lines.push(row('End WAL', info.end_wal ?? 'None'));
  lines.push(row('WAL number', st.walNum));
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
  if (copyTime) {
    const analysisTime = pyToNumber(pyDictGet(info.copy_stats, 'analysis_time'));
    const workers = pyToNumber(pyDictGet(info.copy_stats, 'number_of_workers')) ?? 1;
    let text = humanDuration(copyTime);
    if (analysisTime !== null && analysisTime >= 1) text += ` + ${humanDuration(analysisTime)} startup`;
    lines.push(row('Copy time', text));
    // Barman divides the deduplicated size when there is one (`deduplicated_size or size`).
    const throughput = (info.deduplicated_size || size) / copyTime;
    lines.push(row('Estimated throughput', `${prettySize(throughput)}/s${workers > 1 ? ` (${workers} jobs)` : ''}`));
    Object.assign(bb, {
      copy_time: humanDuration(copyTime),
      copy_time_seconds: copyTime,
      analysis_time: humanDuration(analysisTime ?? 0),
      analysis_time_seconds: analysisTime ?? 0,
      throughput: `${prettySize(throughput)}/s`,
      throughput_bytes: throughput,
      number_of_workers: workers,
    });
  }
  lines.push(row('Begin Offset', info.begin_offset ?? 'None'));
  lines.push(row('End Offset', info.end_offset ?? 'None'));
  lines.push(row('Begin LSN', info.begin_xlog ?? 'None'));
  lines.push(row('End LSN', info.end_xlog ?? 'None'));
  Object.assign(bb, { begin_offset: info.begin_offset, end_offset: info.end_offset, begin_lsn: info.begin_xlog, end_lsn: info.end_xlog });
  lines.push('');
  return { lines, json: bb };
}

/** `WAL information`: the WAL archived after the backup, up to the next one. */
function walInformationSection(st: BackupWalStats): Section {
  const wi: Record<string, unknown> = {
    no_of_files: st.walUntilNextNum,
    disk_usage: prettySize(st.walUntilNextSize),
    disk_usage_bytes: st.walUntilNextSize,
    // Barman leaves these at 0 (a number) when there is nothing to say, else a string.
    wal_rate: 0,
    wal_rate_per_second: 0,
    compression_ratio: 0,
    last_available: st.walLast,
    timelines: st.childTimelines.map(String),
  };
  const lines: string[] = [header('WAL information')];
  lines.push(row('No of files', st.walUntilNextNum));
  lines.push(row('Disk usage', prettySize(st.walUntilNextSize)));
  if (st.walRatePerSecond > 0) {
    wi.wal_rate = `${pyFixed(st.walRatePerSecond * 3600, 2)}/hour`;
    wi.wal_rate_per_second = st.walRatePerSecond;
    lines.push(row('WAL rate', wi.wal_rate));
  }
  if (st.walUntilNextCompressionRatio > 0) {
    wi.compression_ratio = percent(st.walUntilNextCompressionRatio);
    lines.push(row('Compression ratio', wi.compression_ratio));
  }
  lines.push(row('Last available', st.walLast ?? 'None'));
  if (st.childTimelines.length > 0) {
    lines.push(row('Reachable timelines', st.childTimelines.join(', ')));
    wi._WARNING = MULTIPLE_TIMELINES;
  }
  lines.push('');
  return { lines, json: wi };
}

/** `Catalog information`: retention status, neighbours and, for incremental backups, the chain. */
function catalogSection(report: BackupsReport, entry: BackupEntry, retention: RetentionStatuses): Section {
  const info = entry.info;
  const { previous, next } = neighbours(report.entries, entry.id);
  const rs = retention ? (retention.get(entry.id) ?? '-') : 'not enforced';
  const ci: Record<string, unknown> = {
    retention_policy: rs,
    previous_backup: previous?.id ?? '- (this is the oldest base backup)',
    next_backup: next?.id ?? '- (this is the latest base backup)',
  };
  const lines: string[] = [header('Catalog information')];
  lines.push(row('Retention Policy', rs));
  lines.push(row('Previous Backup', ci.previous_backup));
  lines.push(row('Next Backup', ci.next_backup));
  if (backupType(info) === 'incremental') {
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
  return { lines, json: ci };
}
