/**
 * backup.info: the metadata file of one backup (spec §2). A `key=value` text file with exactly the
 * 35 keys Barman knows, sorted, `None` for null; some values are Python literals or Python
 * datetimes. Barman refuses files with keys it does not know, so we never write extra keys.
 *
 * Round trip: `serializeBackupInfo(parseBackupInfo(text))` returns `text` for every file Barman
 * writes. Values whose text is not in canonical form (a naive datetime, a literal with unusual
 * quoting...) are remembered with the text they were read from and written back verbatim as long
 * as the value is unchanged.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { BarmanError } from '../util/errors.js';
import { FILE_MODE, writeFileAtomic } from '../util/fsutil.js';
import { PyDateTime, parsePyDatetime } from '../util/pytime.js';
import { PyTuple, type PyValue, parsePyLiteral, pyRepr, pyTruthy } from './pyliteral.js';

// ---------------------------------------------------------------------------------------------
// Statuses

export const EMPTY = 'EMPTY';
export const STARTED = 'STARTED';
export const WAITING_FOR_WALS = 'WAITING_FOR_WALS';
export const DONE = 'DONE';
export const FAILED = 'FAILED';
export const SYNCING = 'SYNCING';

export type BackupStatus =
  | typeof EMPTY
  | typeof STARTED
  | typeof WAITING_FOR_WALS
  | typeof DONE
  | typeof FAILED
  | typeof SYNCING;

export const BACKUP_STATUSES: readonly BackupStatus[] = [EMPTY, STARTED, WAITING_FOR_WALS, DONE, FAILED, SYNCING];
/** Copy finished: the backup can be restored once its WALs are there. */
export const COPY_DONE: ReadonlySet<string> = new Set([WAITING_FOR_WALS, DONE]);
/** Everything but EMPTY. */
export const NOT_EMPTY: ReadonlySet<string> = new Set([STARTED, WAITING_FOR_WALS, DONE, FAILED, SYNCING]);
/** Backups whose WALs must be kept archived. */
export const ARCHIVING: ReadonlySet<string> = new Set([STARTED, WAITING_FOR_WALS, DONE, SYNCING]);

export const DEFAULT_XLOG_SEGMENT_SIZE = 16777216;

// ---------------------------------------------------------------------------------------------
// Backup IDs

export const BACKUP_ID_RE = /^\d{8}T\d{6}$/;

export function isBackupId(s: string): boolean {
  return BACKUP_ID_RE.test(s);
}

/** Backup ID for a start time: local time formatted `%Y%m%dT%H%M%S`. */
export function newBackupId(date: Date = new Date()): string {
  const p = (n: number, w = 2): string => String(n).padStart(w, '0');
  return (
    `${p(date.getFullYear(), 4)}${p(date.getMonth() + 1)}${p(date.getDate())}` +
    `T${p(date.getHours())}${p(date.getMinutes())}${p(date.getSeconds())}`
  );
}

/**
 * Backup ID of a backup.info path: `<id>-backup.info` (meta/ layout) or the name of the parent
 * directory (legacy `base/<id>/backup.info`).
 */
export function backupIdFromPath(file: string): string {
  const m = /^(.+?)-backup\.info$/.exec(path.basename(file));
  return m?.[1] ?? path.basename(path.dirname(path.resolve(file)));
}

// ---------------------------------------------------------------------------------------------
// Model

export interface Tablespace {
  name: string;
  oid: number;
  location: string;
}

/** Where the original text of non-canonical values is remembered (see module comment). */
export const RAW_FIELDS: unique symbol = Symbol('backupInfoRawFields');

interface RawField {
  /** Text as read from the file. */
  raw: string;
  /** Canonical text of the value parsed from `raw`. */
  canon: string;
}

/** The 35 backup.info keys, named exactly as in the file. */
export interface BackupInfo {
  /** Decoded label text (the file holds its Python repr). */
  backup_label: string | null;
  backup_name: string | null;
  begin_offset: number | null;
  begin_time: PyDateTime | null;
  begin_wal: string | null;
  begin_xlog: string | null;
  children_backup_ids: string[] | null;
  cluster_size: number | null;
  compression: string | null;
  config_file: string | null;
  copy_stats: PyValue | null;
  data_checksums: string | null;
  deduplicated_size: number | null;
  encryption: string | null;
  end_offset: number | null;
  end_time: PyDateTime | null;
  end_wal: string | null;
  end_xlog: string | null;
  error: string | null;
  hba_file: string | null;
  ident_file: string | null;
  included_files: PyValue | null;
  mode: string | null;
  parent_backup_id: string | null;
  pgdata: string | null;
  server_name: string | null;
  size: number | null;
  snapshots_info: PyValue | null;
  /** One of the BackupStatus constants (default EMPTY; a `None` in the file reads as EMPTY). */
  status: string;
  summarize_wal: string | null;
  systemid: string | null;
  tablespaces: Tablespace[] | null;
  timeline: number | null;
  version: number | null;
  /** Default 16777216 (also when the file says `None`). */
  xlog_segment_size: number;
  /** Original text of values as read; managed by parse/serialize, copied along by spreads. */
  [RAW_FIELDS]?: ReadonlyMap<string, RawField>;
}

export type BackupInfoKey = Exclude<keyof BackupInfo, typeof RAW_FIELDS>;

type FieldKind = 'str' | 'int' | 'datetime' | 'label' | 'literal' | 'tablespaces' | 'idlist';

const FIELD_KINDS: Record<BackupInfoKey, FieldKind> = {
  backup_label: 'label',
  backup_name: 'str',
  begin_offset: 'int',
  begin_time: 'datetime',
  begin_wal: 'str',
  begin_xlog: 'str',
  children_backup_ids: 'idlist',
  cluster_size: 'int',
  compression: 'str',
  config_file: 'str',
  copy_stats: 'literal',
  data_checksums: 'str',
  deduplicated_size: 'int',
  encryption: 'str',
  end_offset: 'int',
  end_time: 'datetime',
  end_wal: 'str',
  end_xlog: 'str',
  error: 'str',
  hba_file: 'str',
  ident_file: 'str',
  included_files: 'literal',
  mode: 'str',
  parent_backup_id: 'str',
  pgdata: 'str',
  server_name: 'str',
  size: 'int',
  snapshots_info: 'literal',
  status: 'str',
  summarize_wal: 'str',
  systemid: 'str',
  tablespaces: 'tablespaces',
  timeline: 'int',
  version: 'int',
  xlog_segment_size: 'int',
};

/** All 35 keys in file order (sorted by code point, as Python sorts str). */
export const BACKUP_INFO_KEYS: readonly BackupInfoKey[] = (Object.keys(FIELD_KINDS) as BackupInfoKey[]).sort(
  (a, b) => (a < b ? -1 : a > b ? 1 : 0),
);

/** Keys written only when they have a value (older Barman versions do not know them). */
const HIDDEN_WHEN_NONE: ReadonlySet<string> = new Set<BackupInfoKey>(['backup_name', 'snapshots_info']);

const isKey = (k: string): k is BackupInfoKey => Object.prototype.hasOwnProperty.call(FIELD_KINDS, k);

/** A BackupInfo with Barman's defaults (status EMPTY, 16 MiB segments, everything else null). */
export function newBackupInfo(init: Partial<Omit<BackupInfo, typeof RAW_FIELDS>> = {}): BackupInfo {
  return {
    backup_label: null,
    backup_name: null,
    begin_offset: null,
    begin_time: null,
    begin_wal: null,
    begin_xlog: null,
    children_backup_ids: null,
    cluster_size: null,
    compression: null,
    config_file: null,
    copy_stats: null,
    data_checksums: null,
    deduplicated_size: null,
    encryption: null,
    end_offset: null,
    end_time: null,
    end_wal: null,
    end_xlog: null,
    error: null,
    hba_file: null,
    ident_file: null,
    included_files: null,
    mode: null,
    parent_backup_id: null,
    pgdata: null,
    server_name: null,
    size: null,
    snapshots_info: null,
    status: EMPTY,
    summarize_wal: null,
    systemid: null,
    tablespaces: null,
    timeline: null,
    version: null,
    xlog_segment_size: DEFAULT_XLOG_SEGMENT_SIZE,
    ...init,
  };
}

// ---------------------------------------------------------------------------------------------
// Derived values

export type BackupType = 'snapshot' | 'rsync' | 'incremental' | 'full';

/** snapshot / rsync by mode prefix, else incremental when it has a parent, else full. */
export function backupType(info: Pick<BackupInfo, 'mode' | 'parent_backup_id'>): BackupType {
  const mode = info.mode ?? '';
  if (mode.startsWith('snapshot')) return 'snapshot';
  if (mode.startsWith('rsync')) return 'rsync';
  return info.parent_backup_id ? 'incremental' : 'full';
}

/** Not a snapshot and not an incremental backup (rsync backups count as full). */
export function isFull(info: Pick<BackupInfo, 'mode' | 'parent_backup_id'>): boolean {
  const t = backupType(info);
  return t !== 'snapshot' && t !== 'incremental';
}

// ---------------------------------------------------------------------------------------------
// Value text

/** Python `str.strip()` whitespace (JS `trim()` also strips U+FEFF, Python does not). */
const PY_WS = '\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const STRIP_RE = new RegExp(`^[${PY_WS}]+|[${PY_WS}]+$`, 'g');
const pyStrip = (s: string): string => s.replace(STRIP_RE, '');

const INT_TEXT_RE = /^[+-]?\d+(?:_\d+)*$/;

/** Canonical file text of a value, or null for `None`. */
function dumpValue(key: BackupInfoKey, kind: FieldKind, value: unknown): string | null {
  if (value === null || value === undefined) return null;
  switch (kind) {
    case 'str': {
      const s = String(value);
      // a line break would corrupt the file (and the rest of the line would be lost on read)
      return s === '' ? null : s.replace(/\r\n|[\r\n]/g, ' ');
    }
    case 'int': {
      if (typeof value !== 'number' || !Number.isInteger(value)) {
        throw new BarmanError(`backup.info field '${key}' must be an integer, got ${String(value)}`);
      }
      return BigInt(value).toString();
    }
    case 'datetime':
      if (!(value instanceof PyDateTime)) throw new BarmanError(`backup.info field '${key}' must be a PyDateTime`);
      return value.format();
    case 'label':
      return value === '' ? null : pyRepr(String(value));
    case 'literal':
      return pyTruthy(value as PyValue) ? pyRepr(value as PyValue) : null;
    case 'tablespaces': {
      const list = value as Tablespace[];
      if (list.length === 0) return null;
      return pyRepr(list.map((t) => new PyTuple([t.name, t.oid, t.location])));
    }
    case 'idlist': {
      const ids = value as string[];
      return ids.length === 0 ? null : ids.join(',');
    }
  }
}

function loadTablespaces(v: PyValue, bad: (why: string) => never): Tablespace[] | null {
  if (v === null) return null;
  const items = v instanceof PyTuple ? v.items : v;
  if (!Array.isArray(items)) bad('expected a list of (name, oid, location) tuples');
  return items.map((item) => {
    const t = item instanceof PyTuple ? item.items : item;
    if (!Array.isArray(t) || t.length !== 3) bad('expected (name, oid, location) tuples');
    const [name, oid, location] = t;
    if (typeof name !== 'string' || typeof location !== 'string' || typeof oid !== 'number' || !Number.isInteger(oid)) {
      bad('expected (str, int, str) tuples');
    }
    return { name, oid, location };
  });
}

/** Parse a value text (already stripped, not `None`). */
function loadValue(key: BackupInfoKey, kind: FieldKind, text: string, source: string): unknown {
  const bad = (why: string): never => {
    throw new BarmanError(`Invalid value for '${key}' in ${source}: ${why}`);
  };
  const literal = (): PyValue => {
    try {
      return parsePyLiteral(text);
    } catch (err) {
      return bad((err as Error).message);
    }
  };
  switch (kind) {
    case 'str':
      return text;
    case 'int':
      if (!INT_TEXT_RE.test(text)) bad(`not an integer: '${text}'`);
      return Number(text.replace(/_/g, ''));
    case 'datetime':
      try {
        return parsePyDatetime(text);
      } catch (err) {
        return bad((err as Error).message);
      }
    case 'label': {
      const v = literal();
      if (v !== null && typeof v !== 'string') bad('expected a Python string literal');
      return v;
    }
    case 'literal':
      return literal();
    case 'tablespaces':
      return loadTablespaces(literal(), bad);
    case 'idlist':
      return text.split(',');
  }
}

// ---------------------------------------------------------------------------------------------
// Parse / serialize

/**
 * Read backup.info text (spec §2.1): blank and `#` lines skipped, `key=value` split on the first
 * `=`, both sides stripped, `None` → null; a later duplicate wins. Unknown keys, lines without `=`
 * and bad values throw BarmanError naming `sourceName`. Missing keys keep Barman's defaults.
 */
export function parseBackupInfo(text: string, sourceName = 'backup.info'): BackupInfo {
  const info = newBackupInfo();
  const raw = new Map<string, RawField>();
  // Python's text-mode line iteration splits on \n, \r\n and \r (universal newlines)
  for (const line of text.split(/\r\n|\r|\n/)) {
    const stripped = pyStrip(line);
    if (stripped === '' || stripped.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq < 0) throw new BarmanError(`Malformed line in ${sourceName}: '${stripped}' (expected key=value)`);
    const key = pyStrip(line.slice(0, eq));
    const valueText = pyStrip(line.slice(eq + 1));
    if (!isKey(key)) {
      throw new BarmanError(
        `Unsupported field '${key}' in ${sourceName}: the file was probably created with a newer version of Barman`,
      );
    }
    const kind = FIELD_KINDS[key];
    let value = valueText === 'None' ? null : loadValue(key, kind, valueText, sourceName);
    if (value === null && key === 'status') value = EMPTY;
    if (value === null && key === 'xlog_segment_size') value = DEFAULT_XLOG_SEGMENT_SIZE;
    // BackupInfo is indexed by a key whose value type loadValue produced for this kind
    (info as unknown as Record<string, unknown>)[key] = value;
    raw.set(key, { raw: valueText, canon: dumpValue(key, kind, value) ?? 'None' });
  }
  info[RAW_FIELDS] = raw;
  return info;
}

/**
 * Text of every field as backup.info stores it (null = `None`), hidden fields included: what
 * Barman puts in JSON dumps of a backup (e.g. sync-info).
 */
export function dumpBackupInfoFields(info: BackupInfo): Record<BackupInfoKey, string | null> {
  const out = {} as Record<BackupInfoKey, string | null>;
  const raw = info[RAW_FIELDS];
  for (const key of BACKUP_INFO_KEYS) {
    const canon = dumpValue(key, FIELD_KINDS[key], info[key]);
    const remembered = raw?.get(key);
    const text = remembered && remembered.canon === (canon ?? 'None') ? remembered.raw : canon;
    out[key] = text === 'None' ? null : text;
  }
  return out;
}

/**
 * backup.info text: every key sorted, `key=value\n`, `None` for null (empty list/dict/str too);
 * `backup_name` and `snapshots_info` omitted when null.
 */
export function serializeBackupInfo(info: BackupInfo): string {
  const raw = info[RAW_FIELDS];
  let out = '';
  for (const key of BACKUP_INFO_KEYS) {
    const canon = dumpValue(key, FIELD_KINDS[key], info[key]) ?? 'None';
    if (canon === 'None' && HIDDEN_WHEN_NONE.has(key)) continue;
    const remembered = raw?.get(key);
    out += `${key}=${remembered && remembered.canon === canon ? remembered.raw : canon}\n`;
  }
  return out;
}

/** Read and parse a backup.info file (fs errors such as ENOENT propagate unchanged). */
export async function readBackupInfoFile(file: string): Promise<BackupInfo> {
  return parseBackupInfo(await fsp.readFile(file, 'utf8'), file);
}

/** Write a backup.info file durably (tmp + fsync + rename), mode 0600. */
export async function writeBackupInfoFile(file: string, info: BackupInfo): Promise<void> {
  await writeFileAtomic(file, serializeBackupInfo(info), FILE_MODE);
}
