/**
 * What barman-cloud-backup-list and barman-cloud-backup-show print, as Barman 3.4's cloud
 * tools do: the console list (`{:<20}{:<25}{:<30}{:<17}{:<20}`, DONE backups only), the JSON
 * of a backup (BackupInfo.to_json: the 3.4 fields in their stored text form, so backup_label
 * is a Python repr, tablespaces as lists, begin/end time as ctime, then backup_id), and the
 * show-backup console text of render_show_backup for a backup without WAL statistics.
 */
import { COPY_DONE, dumpBackupInfoFields, type BackupInfo } from '../catalog/backup-info.js';
import { PyFloat, PyTuple, pyRepr, type PyValue } from '../catalog/pyliteral.js';
import type { KeepTarget } from '../catalog/delete.js';
import { humanDuration, prettySize } from '../util/format.js';

/** The backup.info fields Barman 3.4 knows, in its (sorted) order. */
const FIELDS_34 = [
  'backup_label',
  'backup_name',
  'begin_offset',
  'begin_time',
  'begin_wal',
  'begin_xlog',
  'compression',
  'config_file',
  'copy_stats',
  'deduplicated_size',
  'end_offset',
  'end_time',
  'end_wal',
  'end_xlog',
  'error',
  'hba_file',
  'ident_file',
  'included_files',
  'mode',
  'pgdata',
  'server_name',
  'size',
  'snapshots_info',
  'status',
  'systemid',
  'tablespaces',
  'timeline',
  'version',
  'xlog_segment_size',
] as const;

/** A JSON value that keeps Python's float text (1.0, not 1). */
class PyJsonFloat {
  constructor(readonly text: string) {}
}

function fromPy(v: PyValue): unknown {
  if (v instanceof PyFloat) return new PyJsonFloat(pyRepr(v));
  if (v instanceof PyTuple) return v.items.map(fromPy);
  if (Array.isArray(v)) return v.map(fromPy);
  if (v instanceof Map) {
    const out = new Map<string, unknown>();
    for (const [k, x] of v) out.set(typeof k === 'string' ? k : k === null ? 'null' : pyRepr(k), fromPy(x));
    return out;
  }
  return typeof v === 'bigint' ? Number(v) : v;
}

/** Python's json.dumps (default separators, ensure_ascii). */
export function pyJsonDumps(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (v instanceof PyJsonFloat) return v.text;
  if (typeof v === 'string') return JSON.stringify(v).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `[${v.map(pyJsonDumps).join(', ')}]`;
  const entries = v instanceof Map ? [...v.entries()] : Object.entries(v as Record<string, unknown>);
  return `{${entries.map(([k, x]) => `${pyJsonDumps(String(k))}: ${pyJsonDumps(x)}`).join(', ')}}`;
}

/** BackupInfo.to_json() of Barman 3.4 for a cloud backup. */
export function backupJson(id: string, info: BackupInfo): Map<string, unknown> {
  const dumped = dumpBackupInfoFields(info);
  const out = new Map<string, unknown>();
  for (const key of FIELDS_34) {
    if ((key === 'backup_name' || key === 'snapshots_info') && info[key] === null) continue;
    switch (key) {
      case 'begin_time':
      case 'end_time':
        out.set(key, info[key]?.ctime() ?? null);
        break;
      case 'tablespaces':
        out.set(key, info.tablespaces ? info.tablespaces.map((t) => [t.name, t.oid, t.location]) : null);
        break;
      case 'copy_stats':
      case 'included_files':
      case 'snapshots_info':
        out.set(key, info[key] === null ? null : fromPy(info[key] as PyValue));
        break;
      case 'begin_offset':
      case 'end_offset':
      case 'size':
      case 'deduplicated_size':
      case 'timeline':
      case 'version':
      case 'xlog_segment_size':
        out.set(key, info[key]);
        break;
      default:
        out.set(key, dumped[key]);
    }
  }
  out.set('backup_id', id);
  return out;
}

/** The console lines of barman-cloud-backup-list. */
export function listLines(entries: ReadonlyArray<{ id: string; info: BackupInfo }>, keeps: ReadonlyMap<string, KeepTarget>): string[] {
  const row = (a: string, b: string, c: string, d: string, e: string) => `${a.padEnd(20)}${b.padEnd(25)}${c.padEnd(30)}${d.padEnd(17)}${e.padEnd(20)}`;
  const lines = [row('Backup ID', 'End Time', 'Begin Wal', 'Archival Status', 'Name')];
  for (const e of [...entries].sort((a, b) => (a.id < b.id ? -1 : 1))) {
    if (e.info.status !== 'DONE') continue;
    const keep = keeps.get(e.id);
    const end = e.info.end_time ? e.info.end_time.format().slice(0, 19) : 'None';
    lines.push(row(e.id, end, e.info.begin_wal ?? 'None', keep ? `KEEP:${keep.toUpperCase()}` : '', e.info.backup_name ?? ''));
  }
  return lines;
}

/** render_show_backup of Barman 3.4 for a backup.info alone. */
export function showLines(id: string, info: BackupInfo): string[] {
  const row = (k: string, v: unknown) => `  ${k.padEnd(23)}: ${String(v ?? 'None')}`;
  const nested = (k: string, v: unknown) => `    ${k.padEnd(21)}: ${String(v ?? 'None')}`;
  const out = [`Backup ${id}:`];
  if (info.backup_name !== null) out.push(row('Backup Name', info.backup_name));
  out.push(row('Server Name', info.server_name));
  if (info.systemid) out.push(row('System Id', info.systemid));
  out.push(row('Status', info.status));
  if (!COPY_DONE.has(info.status)) {
    if (info.error) out.push(row('Error', info.error));
    return out;
  }
  out.push(row('PostgreSQL Version', info.version));
  out.push(row('PGDATA directory', info.pgdata));
  out.push('');
  if (info.tablespaces && info.tablespaces.length > 0) {
    out.push('  Tablespaces:');
    for (const t of info.tablespaces) out.push(nested(t.name, `${t.location} (oid: ${t.oid})`));
    out.push('');
  }
  out.push('  Base backup information:');
  if (info.size !== null) out.push(nested('Disk usage', prettySize(info.size)));
  out.push(nested('Timeline', info.timeline));
  out.push(nested('Begin WAL', info.begin_wal));
  out.push(nested('End WAL', info.end_wal));
  out.push(nested('Begin time', info.begin_time?.format() ?? null));
  out.push(nested('End time', info.end_time?.format() ?? null));
  const stats = info.copy_stats instanceof Map ? info.copy_stats : null;
  const num = (k: string): number | null => {
    const v = stats?.get(k);
    return v instanceof PyFloat ? v.value : typeof v === 'number' ? v : null;
  };
  const copyTime = num('copy_time');
  if (copyTime) {
    let text = humanDuration(copyTime);
    const analysis = num('analysis_time');
    if (analysis !== null && analysis >= 1) text += ` + ${humanDuration(analysis)} startup`;
    out.push(nested('Copy time', text));
    const size = info.deduplicated_size || info.size;
    if (size !== null) {
      const workers = num('number_of_workers') ?? 1;
      out.push(nested('Estimated throughput', `${prettySize(size / copyTime)}/s${workers > 1 ? ` (${workers} jobs)` : ''}`));
    }
  }
  out.push(nested('Begin Offset', info.begin_offset));
  out.push(nested('End Offset', info.end_offset));
  out.push(nested('Begin LSN', info.begin_xlog));
  out.push(nested('End LSN', info.end_xlog));
  out.push('');
  return out;
}
