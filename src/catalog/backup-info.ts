/**
 * backup.info: the metadata file of one backup (spec §2). A `key=value` text file, sorted,
 * `None` for null; some values are Python literals or Python datetimes.
 *
 * Which keys are written. Barman refuses a file with a key it does not know, and with it the
 * whole catalog. Barman 3.4 (Debian 12) knows 29 of the 35 keys; the other six
 * (KEYS_NEWER_THAN_BARMAN_34) are written only when the backup needs them: an incremental chain
 * (`parent_backup_id`, `children_backup_ids`) or an encrypted backup (`encryption`); such a file
 * can only be read by the Barman versions that can use the backup anyway (3.11+, 3.15+), and it
 * then carries all 35 keys as they write them. Otherwise the file has exactly 3.4's keys, and
 * `cluster_size`, `data_checksums` and `summarize_wal` (which barman-ts still wants) are kept by
 * the catalog in a file of its own (see catalog.ts, BACKUP_EXTRAS_FILE).
 *
 * Keys that no Barman we know writes (a newer Barman's) are kept verbatim and written back as
 * they were: that Barman reads them, and we never rewrite a file into a form it refuses.
 *
 * Round trip: `serializeBackupInfo(parseBackupInfo(text))` returns `text` for every file Barman
 * 3.4 writes and every file of an incremental or encrypted backup that a later Barman writes.
 * Values whose text is not in canonical form (a naive datetime, a literal with unusual
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
/** Keys no Barman we know writes, with their text as read (see module comment). */
export const UNKNOWN_FIELDS: unique symbol = Symbol('backupInfoUnknownFields');
/** Text of the extras file as last read or written by the catalog (saves rewriting it). */
export const EXTRAS_ON_DISK: unique symbol = Symbol('backupInfoExtrasOnDisk');

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
  /** Keys of a newer Barman, key → value text as read; written back unchanged. */
  [UNKNOWN_FIELDS]?: ReadonlyMap<string, string>;
  /** Managed by the catalog (catalog.ts): the extras file's text on disk. */
  [EXTRAS_ON_DISK]?: string;
}

export type BackupInfoKey = Exclude<keyof BackupInfo, typeof RAW_FIELDS | typeof UNKNOWN_FIELDS | typeof EXTRAS_ON_DISK>;

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

/** The six keys Barman 3.4 does not know: it refuses a backup.info that has any of them. */
export const KEYS_NEWER_THAN_BARMAN_34: ReadonlySet<BackupInfoKey> = new Set<BackupInfoKey>([
  'children_backup_ids',
  'cluster_size',
  'data_checksums',
  'encryption',
  'parent_backup_id',
  'summarize_wal',
]);

/**
 * Newer keys that barman-ts keeps outside backup.info when the file is written in Barman 3.4's
 * form: facts about the cluster, not about how to restore the backup.
 */
export const EXTRA_KEYS = ['cluster_size', 'data_checksums', 'summarize_wal'] as const;
export type ExtraKey = (typeof EXTRA_KEYS)[number];
export type BackupExtras = Partial<Pick<BackupInfo, ExtraKey>>;

/**
 * True when the backup cannot be described without a key newer than Barman 3.4: it belongs to an
 * incremental chain or it is encrypted. Only then does backup.info carry those keys.
 */
export function needsNewerBackupInfo(info: Pick<BackupInfo, 'parent_backup_id' | 'children_backup_ids' | 'encryption'>): boolean {
  return !!info.parent_backup_id || (info.children_backup_ids?.length ?? 0) > 0 || !!info.encryption;
}

/** The values of EXTRA_KEYS that a Barman 3.4-form backup.info leaves out (empty when none). */
export function backupExtras(info: BackupInfo): BackupExtras {
  if (needsNewerBackupInfo(info)) return {};
  const out: BackupExtras = {};
  if (info.cluster_size !== null) out.cluster_size = info.cluster_size;
  if (info.data_checksums !== null) out.data_checksums = info.data_checksums;
  if (info.summarize_wal !== null) out.summarize_wal = info.summarize_wal;
  return out;
}

/**
 * True when this backup.info, as it was read, has keys Barman 3.4 refuses that the backup does
 * not need (what barman-ts 0.1 wrote into every file): written again, it is in 3.4's form.
 */
export function hasUnneededNewerKeys(info: BackupInfo): boolean {
  const raw = info[RAW_FIELDS];
  if (!raw || needsNewerBackupInfo(info)) return false;
  for (const key of KEYS_NEWER_THAN_BARMAN_34) if (raw.has(key)) return true;
  return false;
}

/** Names of the keys of a newer Barman in this backup.info (empty for every file we can write). */
export function unknownBackupInfoKeys(info: BackupInfo): string[] {
  return [...(info[UNKNOWN_FIELDS]?.keys() ?? [])];
}

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

/** What a key of a newer Barman may look like (anything else is a damaged line). */
const UNKNOWN_KEY_RE = /^[a-z][a-z0-9_]*$/;

/**
 * Read backup.info text (spec §2.1): blank and `#` lines skipped, `key=value` split on the first
 * `=`, both sides stripped, `None` → null; a later duplicate wins. Keys a newer Barman may have
 * added are kept aside (UNKNOWN_FIELDS); lines without `=` and bad values throw BarmanError
 * naming `sourceName`. Missing keys keep Barman's defaults.
 */
export function parseBackupInfo(text: string, sourceName = 'backup.info'): BackupInfo {
  const info = newBackupInfo();
  const raw = new Map<string, RawField>();
  const unknown = new Map<string, string>();
  // Python's text-mode line iteration splits on \n, \r\n and \r (universal newlines)
  for (const line of text.split(/\r\n|\r|\n/)) {
    const stripped = pyStrip(line);
    if (stripped === '' || stripped.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq < 0) throw new BarmanError(`Malformed line in ${sourceName}: '${stripped}' (expected key=value)`);
    const key = pyStrip(line.slice(0, eq));
    const valueText = pyStrip(line.slice(eq + 1));
    if (!isKey(key)) {
      if (!UNKNOWN_KEY_RE.test(key)) throw new BarmanError(`Malformed line in ${sourceName}: '${stripped}' (bad key)`);
      unknown.set(key, valueText);
      continue;
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
  if (unknown.size > 0) info[UNKNOWN_FIELDS] = unknown;
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
 * backup.info text: keys sorted, `key=value\n`, `None` for null (empty list/dict/str too);
 * `backup_name` and `snapshots_info` omitted when null; the six keys newer than Barman 3.4 only
 * when the backup needs them (see the module comment); a newer Barman's keys as they were read.
 */
export function serializeBackupInfo(info: BackupInfo): string {
  const raw = info[RAW_FIELDS];
  const newer = needsNewerBackupInfo(info);
  const lines: Array<[string, string]> = [];
  for (const key of BACKUP_INFO_KEYS) {
    if (!newer && KEYS_NEWER_THAN_BARMAN_34.has(key)) continue;
    const canon = dumpValue(key, FIELD_KINDS[key], info[key]) ?? 'None';
    if (canon === 'None' && HIDDEN_WHEN_NONE.has(key)) continue;
    const remembered = raw?.get(key);
    lines.push([key, remembered && remembered.canon === canon ? remembered.raw : canon]);
  }
  const unknown = info[UNKNOWN_FIELDS];
  if (unknown) {
    for (const [key, text] of unknown) lines.push([key, text]);
    lines.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }
  let out = '';
  for (const [key, text] of lines) out += `${key}=${text}\n`;
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
