/**
 * The WAL catalog, xlog.db (spec §1.1): one line per archived file,
 * `name\tsize\ttime\tcompression\n`, time as Python `str(float)`, `None` for missing values,
 * lines in archival order. A fifth column, `encryption`, is written only for encrypted files:
 * Barman < 3.15 (Debian 12's 3.4 among them) stops at the first line that has one.
 *
 * Two file names exist. Barman < 3.13 (and we, by default) use `<xlogdb_directory>/xlog.db`;
 * Barman >= 3.13 uses `<xlogdb_directory>/<server>-xlog.db`. When the new name exists it is the
 * catalog (read and appended to), so that both tools keep agreeing on one file; otherwise the
 * classic name is.
 *
 * Every change happens under the blocking `.<server>-xlogdb.lock`. flock(2) locks belong to an
 * open file description, so a second acquisition from this same process would wait for itself:
 * code that needs several operations under one lock uses `withXlogDb` and its session object.
 *
 * Sized for large archives (hundreds of thousands of lines): one readFile + split to read, one
 * write + one fsync per appended group, sync I/O and no per-line allocations beyond the entry.
 */
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { faultPoint } from '../util/fault.js';
import { DIR_MODE, FILE_MODE, fsyncDir, pathExistsSync } from '../util/fsutil.js';
import { pyFloatStr, pyStatMtime } from '../util/pytime.js';
import { identifyCompression, type CompressionName, type CustomCompressionConfig } from '../wal/compression.js';
import { isOpenPgpMessage, OPENPGP_HEAD_BYTES } from '../util/gpg.js';
import { walNameKind } from '../wal/names.js';
import { withLock } from './lock.js';
import { lockPath, serverPaths } from './server-dirs.js';

export interface XlogDbEntry {
  /** File name as stored in the archive (segment, `.backup`, `.history` or `.partial`). */
  name: string;
  /** Bytes on disk (after compression), null when written as `None`. */
  size: number | null;
  /** mtime, seconds since the epoch as a float; null when written as `None`. */
  time: number | null;
  /** Compression registry name (gzip, zstd, ...) or null. */
  compression: string | null;
  /** `gpg` or null. */
  encryption: string | null;
}

export interface XlogDbRebuildCounts {
  history: number;
  backup_labels: number;
  wal_file: number;
}

// ---------------------------------------------------------------------------------------------
// Line format

function noneOr(value: string | null | undefined): string {
  return value == null || value === '' ? 'None' : value;
}

/**
 * Python `str(float)`. For the usual range JS `String()` yields the same shortest round-trip
 * digits in the same positional notation, only without `.0` on integral values; that path is
 * several times faster than the general one, which matters for 200,000-line rewrites.
 */
function timeStr(t: number): string {
  if (t >= 1e-4 && t < 1e16) {
    const s = String(t);
    return s.includes('.') ? s : `${s}.0`;
  }
  return pyFloatStr(t);
}

/** One catalog line, `\n` included: four columns, five for an encrypted file. */
export function formatXlogDbLine(e: XlogDbEntry): string {
  const size = e.size == null ? 'None' : String(e.size);
  const time = e.time == null ? 'None' : timeStr(e.time);
  const line = `${e.name}\t${size}\t${time}\t${noneOr(e.compression)}`;
  return e.encryption == null || e.encryption === '' ? `${line}\n` : `${line}\t${e.encryption}\n`;
}

/** The whole file for a list of entries. */
export function formatXlogDb(entries: readonly XlogDbEntry[]): string {
  let text = '';
  for (const e of entries) text += formatXlogDbLine(e);
  return text;
}

const INT_RE = /^[-+]?\d+$/;
const HEX_LIKE_RE = /^[-+]?0[xob]/i;

function parseIntField(text: string): number | null {
  if (text === 'None') return null;
  // Python int(): optional sign and digits (Number() would also take '1e3', '0x10', '').
  return INT_RE.test(text) ? Number(text) : NaN;
}

function parseFloatField(text: string): number | null {
  if (text === 'None') return null;
  // Number('') is 0 and Number('0x10') is 16: Python's float() rejects both.
  if (text === '' || HEX_LIKE_RE.test(text)) return NaN;
  return Number(text);
}

function optional(text: string | undefined): string | null {
  return text === undefined || text === 'None' ? null : text;
}

const OTHER_BLANK_RE = /[ \r\v\f]/;

/**
 * Parse one line (without its newline). Fields are split on any whitespace, as Barman does;
 * 3 (name, size, time), 4 (+ compression) or 5 (+ encryption) fields are accepted.
 * Returns null for a blank line; throws BarmanError for anything else that is malformed.
 */
export function parseXlogDbLine(line: string): XlogDbEntry | null {
  let fields = line.split('\t');
  // Fast path: Barman's and our own lines are TAB separated without other blanks.
  if (fields.length < 3 || fields.length > 5 || OTHER_BLANK_RE.test(line)) {
    const trimmed = line.trim();
    if (trimmed === '') return null;
    fields = trimmed.split(/\s+/);
  }
  if (fields.length < 3 || fields.length > 5) {
    if (fields.length === 1 && fields[0] === '') return null;
    throw new BarmanError(`malformed xlog.db line (expected 3 to 5 fields): '${line}'`);
  }
  const [name = '', sizeText = '', timeText = '', comp, enc] = fields;
  const size = parseIntField(sizeText);
  const time = parseFloatField(timeText);
  if (name === '' || Number.isNaN(size) || Number.isNaN(time)) {
    throw new BarmanError(`malformed xlog.db line: '${line}'`);
  }
  return { name, size, time, compression: optional(comp), encryption: optional(enc) };
}

/**
 * Parse a whole catalog. Blank lines are ignored. A last line without its newline is an append
 * torn by a crash (or one still being written): it is never returned, even if it parses, because
 * the next append truncates it. Callers must not believe a name catalogued that the next write
 * drops (the archiver re-adds the line of such a file when it meets it again). Any other
 * malformed line throws a BarmanError naming `source` and the line number.
 */
export function parseXlogDb(text: string, source = 'xlog.db'): XlogDbEntry[] {
  const lines = text.split('\n');
  const entries: XlogDbEntry[] = [];
  // The text after the final '\n' ('' for a complete file) is the torn line, if any: skipped.
  const complete = lines.length - 1;
  for (let i = 0; i < complete; i++) {
    const line = lines[i] as string;
    if (line.length === 0) continue;
    try {
      const e = parseXlogDbLine(line);
      if (e) entries.push(e);
    } catch (err) {
      throw new BarmanError(`${source}, line ${i + 1}: ${errorMessage(err)}`);
    }
  }
  return entries;
}

// ---------------------------------------------------------------------------------------------
// File locations

/**
 * The catalog file in use: `<server>-xlog.db` when it exists (Barman >= 3.13 created it),
 * otherwise the classic `xlog.db`, which is what we create.
 */
export function xlogDbPath(srv: ServerConfig): string {
  const p = serverPaths(srv);
  return pathExistsSync(p.xlogdbFileNew) ? p.xlogdbFileNew : p.xlogdbFile;
}

function readCatalogFile(file: string): XlogDbEntry[] | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'latin1');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new BarmanError(`cannot read ${file}: ${errorMessage(err)}`);
  }
  return parseXlogDb(text, file);
}

// ---------------------------------------------------------------------------------------------
// Sessions under the lock

/** Operations on the catalog while holding `.<server>-xlogdb.lock`. */
export interface XlogDbSession {
  /** The file being used (see `xlogDbPath`). */
  readonly file: string;
  /** All entries; the catalog is rebuilt from `wals/` first if it does not exist. */
  read(): Promise<XlogDbEntry[]>;
  /** Rebuild the catalog from the files in `wals/` if it does not exist yet. */
  ensure(): Promise<void>;
  /** Append entries in one write, then fsync. */
  append(entries: readonly XlogDbEntry[]): Promise<void>;
  /** Replace the whole catalog: temp file, fsync, rename, fsync directory. */
  rewrite(entries: readonly XlogDbEntry[]): Promise<void>;
  /** Rebuild from `wals/` (see `rebuildXlogDb`). */
  rebuild(events?: RebuildEvents): Promise<XlogDbRebuildCounts>;
}

export interface RebuildEvents {
  /** An unexpected file found in `wals/` (not indexed). */
  onWarning?(msg: string): void;
}

/** Run `fn` holding the (blocking) xlogdb lock. */
export async function withXlogDb<T>(srv: ServerConfig, fn: (db: XlogDbSession) => Promise<T>): Promise<T> {
  return withLock(lockPath(srv, 'xlogdb'), 'xlogdb', () => fn(session(srv)), true);
}

function session(srv: ServerConfig): XlogDbSession {
  const file = xlogDbPath(srv);
  const db: XlogDbSession = {
    file,
    async ensure() {
      if (!pathExistsSync(file)) await rebuildLocked(srv, file);
    },
    async read() {
      await db.ensure();
      return readCatalogFile(file) ?? [];
    },
    async append(entries) {
      if (entries.length === 0) return;
      await appendLocked(file, entries);
    },
    async rewrite(entries) {
      await writeCatalogAtomic(file, formatXlogDb(entries));
    },
    async rebuild(events) {
      return rebuildLocked(srv, file, events);
    },
  };
  return db;
}

/** How far back to look for the end of the last complete line. */
const TORN_LINE_SCAN = 4096;

async function appendLocked(file: string, entries: readonly XlogDbEntry[]): Promise<void> {
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: DIR_MODE });
  const created = !pathExistsSync(file);
  const fh = await fsp.open(file, 'a+', FILE_MODE);
  try {
    let text = formatXlogDb(entries);
    // A crash may have torn the previous append (it was never reported): drop the partial line
    // rather than glue a new one onto it.
    const { size } = await fh.stat();
    if (size > 0) {
      const tailLen = Math.min(size, TORN_LINE_SCAN);
      const tail = Buffer.alloc(tailLen);
      await fh.read(tail, 0, tailLen, size - tailLen);
      if (tail[tailLen - 1] !== 0x0a) {
        const nl = tail.lastIndexOf(0x0a);
        if (nl >= 0 || size <= TORN_LINE_SCAN) await fh.truncate(size - tailLen + nl + 1);
        else text = `\n${text}`; // no line is that long: keep the bytes, start a new line
      }
    }
    await fh.appendFile(text, 'latin1');
    faultPoint('xlogdb:appended');
    await fh.sync();
  } finally {
    await fh.close();
  }
  if (created) await fsyncDir(path.dirname(file));
}

async function writeCatalogAtomic(file: string, text: string): Promise<void> {
  const dir = path.dirname(file);
  await fsp.mkdir(dir, { recursive: true, mode: DIR_MODE });
  const tmp = `${file}.tmp`;
  const fh = await fsp.open(tmp, 'w', FILE_MODE);
  try {
    await fh.writeFile(text, 'latin1');
    await fh.sync();
  } finally {
    await fh.close();
  }
  faultPoint('xlogdb:tmp-written');
  await fsp.rename(tmp, file);
  faultPoint('xlogdb:renamed');
  await fsyncDir(dir);
}

// ---------------------------------------------------------------------------------------------
// Convenience wrappers (each takes the lock once)

/** All catalog entries (rebuilding a missing catalog first). */
export async function readXlogDb(srv: ServerConfig): Promise<XlogDbEntry[]> {
  const existing = xlogDbPath(srv);
  // Reading an existing file needs no lock: appends are whole lines and rewrites are renames.
  if (pathExistsSync(existing)) return readCatalogFile(existing) ?? [];
  return withXlogDb(srv, (db) => db.read());
}

/** Append entries (one write, one fsync). */
export async function appendXlogDb(srv: ServerConfig, entries: readonly XlogDbEntry[]): Promise<void> {
  if (entries.length === 0) return;
  await withXlogDb(srv, async (db) => {
    await db.ensure();
    await db.append(entries);
  });
}

/** Remove the entries with these names; resolves to how many lines were dropped. */
export async function removeFromXlogDb(srv: ServerConfig, names: Iterable<string>): Promise<number> {
  const drop = new Set(names);
  if (drop.size === 0) return 0;
  return withXlogDb(srv, async (db) => {
    const entries = await db.read();
    const kept = entries.filter((e) => !drop.has(e.name));
    const removed = entries.length - kept.length;
    if (removed > 0) await db.rewrite(kept);
    return removed;
  });
}

/**
 * Rebuild the catalog from the files in `wals/` (what `rebuild-xlogdb` does). When the file in
 * use is `<server>-xlog.db`, the legacy `xlog.db` is deleted afterwards, as Barman does.
 */
export async function rebuildXlogDb(srv: ServerConfig, events: RebuildEvents = {}): Promise<XlogDbRebuildCounts> {
  return withXlogDb(srv, (db) => db.rebuild(events));
}

// ---------------------------------------------------------------------------------------------
// Rebuild

const HASH_DIR_RE = /^[0-9A-Fa-f]{16}$/;

/** Compression settings for identification: with compression=custom and no magic, anything unrecognised is custom. */
export function customCompressionOf(srv: ServerConfig): CustomCompressionConfig {
  return {
    compressionFilter: srv.custom_compression_filter ?? null,
    decompressionFilter: srv.custom_decompression_filter ?? null,
    magic: srv.custom_compression_magic ?? null,
    unidentifiedIsCustom: srv.compression === 'custom',
  };
}

function sortedEntries(dir: string): fs.Dirent[] {
  let list: fs.Dirent[];
  try {
    list = fs.readdirSync(dir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new BarmanError(`cannot read ${dir}: ${errorMessage(err)}`);
  }
  // Python sorts by code point; names here are ASCII, where UTF-16 order is the same.
  return list.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * Synchronous on purpose: for an archive of 200,000 files, stat + a 16-byte read each, sync
 * calls on cached metadata are several times faster than going through the thread pool.
 */
function indexFile(file: string, name: string, head: Buffer, custom: CustomCompressionConfig, known?: ReadonlyMap<string, KnownEncrypted>): XlogDbEntry {
  const st = fs.statSync(file, { bigint: true });
  let got = 0;
  const fd = fs.openSync(file, 'r');
  try {
    got = fs.readSync(fd, head, 0, head.length, 0);
  } finally {
    fs.closeSync(fd);
  }
  const first = head.subarray(0, got);
  // An encrypted file (encryption = gpg) hides its compression: only its encryption is known.
  // The line archive-wal wrote knows it (it compressed before encrypting): kept when it is the same file.
  if (isOpenPgpMessage(first)) {
    const k = known?.get(name);
    const compression = k !== undefined && k.size === Number(st.size) ? k.compression : null;
    return { name, size: Number(st.size), time: pyStatMtime(st.mtimeNs), compression, encryption: 'gpg' };
  }
  const compression = identifyCompression(first, custom);
  return { name, size: Number(st.size), time: pyStatMtime(st.mtimeNs), compression, encryption: null };
}

interface KnownEncrypted {
  size: number;
  compression: CompressionName | null;
}

/**
 * Compression of the encrypted files the current catalog lists (read leniently: a damaged
 * catalog is what rebuild-xlogdb repairs). An encrypted file hides its compression, so a rebuild
 * can only keep what the archiver recorded.
 */
function knownEncrypted(files: readonly string[]): Map<string, KnownEncrypted> {
  const out = new Map<string, KnownEncrypted>();
  for (const f of files) {
    let text: string;
    try {
      text = fs.readFileSync(f, 'latin1');
    } catch {
      continue; // no catalog (or an unreadable one): nothing known
    }
    for (const line of text.split('\n')) {
      const p = line.trim().split(/\s+/);
      if (p.length !== 5 || p[4] !== 'gpg' || p[3] === 'None' || !/^\d+$/.test(p[1] ?? '')) continue;
      out.set(p[0] as string, { size: Number(p[1]), compression: p[3] as CompressionName });
    }
  }
  return out;
}

async function rebuildLocked(srv: ServerConfig, file: string, events: RebuildEvents = {}): Promise<XlogDbRebuildCounts> {
  const paths = serverPaths(srv);
  const wals = paths.walsDir;
  const custom = customCompressionOf(srv);
  const magicLen = custom.magic ? Math.ceil(String(custom.magic).length / 2) : 0;
  const head = Buffer.alloc(Math.max(OPENPGP_HEAD_BYTES, magicLen));
  const counts: XlogDbRebuildCounts = { history: 0, backup_labels: 0, wal_file: 0 };
  const catalogNames = new Set([path.basename(paths.xlogdbFile), path.basename(paths.xlogdbFileNew), 'sync-wals.info']);
  const warn = (p: string) => events.onWarning?.(`Unexpected file ${p} found in WAL archive of server '${srv.name}': not indexed`);
  const known = knownEncrypted([...new Set([file, paths.xlogdbFile])]);
  let text = '';

  for (const top of sortedEntries(wals)) {
    const topPath = path.join(wals, top.name);
    if (top.isDirectory()) {
      if (!HASH_DIR_RE.test(top.name)) {
        warn(topPath);
        continue;
      }
      for (const f of sortedEntries(topPath)) {
        if (f.name.endsWith('.tmp')) continue;
        const kind = walNameKind(f.name);
        const fPath = path.join(topPath, f.name);
        if (!f.isFile() || (kind !== 'segment' && kind !== 'backup')) {
          warn(fPath);
          continue;
        }
        text += formatXlogDbLine(indexFile(fPath, f.name, head, custom, known));
        if (kind === 'segment') counts.wal_file++;
        else counts.backup_labels++;
      }
      continue;
    }
    if (top.name.endsWith('.tmp') || top.name.endsWith('.lock') || catalogNames.has(top.name)) continue;
    if (top.isFile() && walNameKind(top.name) === 'history') {
      text += formatXlogDbLine(indexFile(topPath, top.name, head, custom, known));
      counts.history++;
      continue;
    }
    warn(topPath);
  }

  await writeCatalogAtomic(file, text);
  if (file === paths.xlogdbFileNew && paths.xlogdbFile !== file) {
    try {
      await fsp.unlink(paths.xlogdbFile);
      await fsyncDir(path.dirname(paths.xlogdbFile));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new BarmanError(`cannot remove ${paths.xlogdbFile}: ${errorMessage(err)}`);
    }
  }
  return counts;
}
