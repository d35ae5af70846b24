/**
 * WAL file name grammar and LSN arithmetic (spec §5.1). Pure functions, no I/O.
 *
 * Names: `TTTTTTTTLLLLLLLLSSSSSSSS` segment, `<segment>.XXXXXXXX.backup` backup label file,
 * `<segment>.partial` partial segment, `TTTTTTTT.history` timeline history file. Hex digits
 * are accepted in either case; Barman writes (and compares) uppercase. The suffixes are
 * lowercase only, as PostgreSQL writes them.
 */
import { BarmanError } from '../util/errors.js';

export type WalNameKind = 'segment' | 'backup' | 'partial' | 'history';

export interface WalSegmentId {
  tli: number;
  log: number;
  seg: number;
}

export interface HistoryEntry {
  parentTli: number;
  switchpoint: bigint;
  reason: string;
}

// JS `$` (without the m flag) only matches at the very end, so a trailing newline is rejected.
const SEGMENT_RE = /^[0-9A-Fa-f]{24}$/;
const BACKUP_RE = /^[0-9A-Fa-f]{24}\.[0-9A-Fa-f]{8}\.backup$/;
const PARTIAL_RE = /^[0-9A-Fa-f]{24}\.partial$/;
const HISTORY_RE = /^[0-9A-Fa-f]{8}\.history$/;
const LSN_RE = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

const UINT32_MAX = 0xffffffff;
const MIN_SEG_SIZE = 1 << 20; // 1 MiB, PostgreSQL's lower bound for --wal-segsize
const MAX_SEG_SIZE = 1 << 30; // 1 GiB, PostgreSQL's upper bound
/** Highest segment number the generator accepts when the segment size is unknown. */
export const UNKNOWN_SEG_SIZE_MAX_SEG = 0x7ffff;
export const DEFAULT_WAL_SEGMENT_SIZE = 16 << 20;

export function walNameKind(name: string): WalNameKind | null {
  if (typeof name !== 'string') return null;
  if (SEGMENT_RE.test(name)) return 'segment';
  if (BACKUP_RE.test(name)) return 'backup';
  if (PARTIAL_RE.test(name)) return 'partial';
  if (HISTORY_RE.test(name)) return 'history';
  return null;
}

/** A plain WAL segment name (24 hex digits): Barman's `is_wal_file`. */
export function isWalName(name: string): boolean {
  return walNameKind(name) === 'segment';
}

export const isSegmentName = isWalName;

export function isPartialName(name: string): boolean {
  return walNameKind(name) === 'partial';
}

export function isHistoryName(name: string): boolean {
  return walNameKind(name) === 'history';
}

export function isBackupFileName(name: string): boolean {
  return walNameKind(name) === 'backup';
}

/** Any of the four kinds of file that live in the WAL archive. */
export function isAnyXlogFile(name: string): boolean {
  return walNameKind(name) !== null;
}

function invalidName(name: string): BarmanError {
  return new BarmanError(`${quoteName(name)} is not a valid WAL file name`);
}

/** Quote a name for a one-line message: control characters are escaped. */
function quoteName(name: unknown): string {
  const text = String(name).replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return `'${text}'`;
}

/**
 * Uppercase the hex digits of any WAL archive name (suffixes stay lowercase), since every
 * comparison of WAL names is a plain string comparison of the uppercase form.
 */
export function normalizeWalName(name: string): string {
  const kind = walNameKind(name);
  if (kind === null) throw invalidName(name);
  switch (kind) {
    case 'segment':
      return name.toUpperCase();
    case 'history':
      return `${name.slice(0, 8).toUpperCase()}.history`;
    case 'partial':
      return `${name.slice(0, 24).toUpperCase()}.partial`;
    case 'backup':
      return `${name.slice(0, 33).toUpperCase()}.backup`;
  }
}

/**
 * Timeline, log and segment number of a segment, `.partial` or `.backup` name (the first 24
 * hex digits). History files carry only a timeline: see `timelineOf`.
 */
export function parseWalName(name: string): WalSegmentId {
  const kind = walNameKind(name);
  if (kind === null || kind === 'history') throw invalidName(name);
  return {
    tli: parseInt(name.slice(0, 8), 16),
    log: parseInt(name.slice(8, 16), 16),
    seg: parseInt(name.slice(16, 24), 16),
  };
}

/** Timeline of any WAL archive name, history files included. */
export function timelineOf(name: string): number {
  if (walNameKind(name) === null) throw invalidName(name);
  return parseInt(name.slice(0, 8), 16);
}

function assertUint32(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > UINT32_MAX) {
    throw new BarmanError(`invalid ${what}: ${String(value)}`);
  }
}

function hex8(value: number): string {
  return value.toString(16).toUpperCase().padStart(8, '0');
}

export function walName(tli: number, log: number, seg: number): string {
  assertUint32(tli, 'timeline');
  assertUint32(log, 'WAL log number');
  assertUint32(seg, 'WAL segment number');
  return hex8(tli) + hex8(log) + hex8(seg);
}

export function historyName(tli: number): string {
  assertUint32(tli, 'timeline');
  return `${hex8(tli)}.history`;
}

/**
 * Directory of `wals/` holding the file: timeline+log (first 16 hex digits, uppercase) for
 * segments, `.backup` and `.partial` files; `''` for history files (stored in `wals/` itself).
 */
export function hashDir(name: string): string {
  const kind = walNameKind(name);
  if (kind === null) throw invalidName(name);
  if (kind === 'history') return '';
  return name.slice(0, 16).toUpperCase();
}

// ---------------------------------------------------------------------------------------------
// LSN arithmetic

/** `H/L` (1 to 8 hex digits each) → 64-bit position. */
export function parseLsn(text: string): bigint {
  const m = typeof text === 'string' ? LSN_RE.exec(text) : null;
  if (!m) throw new BarmanError(`invalid LSN ${quoteName(text)}`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

const UINT64_MAX = (1n << 64n) - 1n;

function toLsn(lsn: bigint | number): bigint {
  if (typeof lsn === 'number') {
    if (!Number.isSafeInteger(lsn) || lsn < 0) throw new BarmanError(`invalid LSN ${lsn}`);
    return BigInt(lsn);
  }
  if (lsn < 0n || lsn > UINT64_MAX) throw new BarmanError(`invalid LSN ${lsn}`);
  return lsn;
}

/** 64-bit position → `%X/%X`. */
export function formatLsn(lsn: bigint | number): string {
  const v = toLsn(lsn);
  return `${(v >> 32n).toString(16).toUpperCase()}/${(v & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** Throws unless `segSize` is a power of two between 1 MiB and 1 GiB (PostgreSQL's limits). */
export function assertSegmentSize(segSize: number): void {
  if (
    !Number.isInteger(segSize) ||
    segSize < MIN_SEG_SIZE ||
    segSize > MAX_SEG_SIZE ||
    (segSize & (segSize - 1)) !== 0
  ) {
    throw new BarmanError(`invalid WAL segment size ${String(segSize)}`);
  }
}

/** Highest segment number within one log ("xlogid"): 0xFFFFFFFF // segSize (255 for 16 MiB). */
export function segmentsPerXlogId(segSize: number): number {
  assertSegmentSize(segSize);
  return Math.floor(UINT32_MAX / segSize);
}

/** Name of the segment on timeline `tli` that contains `lsn`. */
export function lsnToWal(lsn: bigint | number | string, tli: number, segSize: number = DEFAULT_WAL_SEGMENT_SIZE): string {
  const v = typeof lsn === 'string' ? parseLsn(lsn) : toLsn(lsn);
  const segsMax = segmentsPerXlogId(segSize);
  const size = BigInt(segSize);
  const log = Number(v >> 32n);
  const seg = Number((v & (size * BigInt(segsMax))) / size);
  return walName(tli, log, seg);
}

/** Byte offset of `lsn` inside its segment. */
export function walOffset(lsn: bigint | number | string, segSize: number = DEFAULT_WAL_SEGMENT_SIZE): number {
  assertSegmentSize(segSize);
  const v = typeof lsn === 'string' ? parseLsn(lsn) : toLsn(lsn);
  return Number(v & BigInt(segSize - 1));
}

/** Position of byte `offset` of segment `name` (a segment, `.partial` or `.backup` name). */
export function walToLsn(name: string, offset = 0, segSize: number = DEFAULT_WAL_SEGMENT_SIZE): bigint {
  assertSegmentSize(segSize);
  if (!Number.isInteger(offset) || offset < 0 || offset >= segSize) {
    throw new BarmanError(`invalid WAL offset ${String(offset)} for segment size ${segSize}`);
  }
  const { log, seg } = parseWalName(name);
  if (seg > segmentsPerXlogId(segSize)) {
    throw new BarmanError(`segment number of ${quoteName(name)} is out of range for segment size ${segSize}`);
  }
  return (BigInt(log) << 32n) + BigInt(seg) * BigInt(segSize) + BigInt(offset);
}

// ---------------------------------------------------------------------------------------------
// Segment sequences

/** Highest segment number before wrapping to the next log, as the generator uses it. */
function maxSegment(segSize: number | null | undefined, version: number | null | undefined): number {
  let max = segSize ? segmentsPerXlogId(segSize) : UNKNOWN_SEG_SIZE_MAX_SEG;
  // Before 9.3 PostgreSQL never used the last segment (0xFF) of each log.
  if (version != null && version < 90300) max = Math.min(max, 0xfe);
  return max;
}

/**
 * Segment names from `begin` to `end` inclusive, on `begin`'s timeline (`end` must be on the
 * same timeline). Without `end` the sequence is unbounded (it stops at the end of the LSN
 * space). Without `segSize` segment numbers up to 0x7FFFF are generated before wrapping;
 * for `version < 90300` segment 0xFF is skipped.
 */
export function* generateSegments(
  begin: string,
  end?: string | null,
  segSize?: number | null,
  version?: number | null,
): Generator<string, void, undefined> {
  const start = parseWalName(begin);
  let endLog = Infinity;
  let endSeg = Infinity;
  if (end != null) {
    const stop = parseWalName(end);
    if (stop.tli !== start.tli) {
      throw new BarmanError(`cannot generate WAL names across timelines (${begin} .. ${end})`);
    }
    endLog = stop.log;
    endSeg = stop.seg;
  }
  const segMax = maxSegment(segSize, version);
  let { log, seg } = start;
  while (log < endLog || (log === endLog && seg <= endSeg)) {
    yield walName(start.tli, log, seg);
    seg += 1;
    if (seg > segMax) {
      seg = 0;
      log += 1;
      if (log > UINT32_MAX) return;
    }
  }
}

/** The segment after `name` on the same timeline. */
export function nextSegment(name: string, segSize: number = DEFAULT_WAL_SEGMENT_SIZE, version?: number | null): string {
  const { tli, log, seg } = parseWalName(name);
  if (seg < maxSegment(segSize, version)) return walName(tli, log, seg + 1);
  if (log >= UINT32_MAX) throw new BarmanError(`no WAL segment after ${quoteName(name)}`);
  return walName(tli, log + 1, 0);
}

/** The segment before `name` on the same timeline. */
export function previousSegment(name: string, segSize: number = DEFAULT_WAL_SEGMENT_SIZE, version?: number | null): string {
  const { tli, log, seg } = parseWalName(name);
  const segMax = maxSegment(segSize, version);
  if (seg > 0) return walName(tli, log, Math.min(seg - 1, segMax));
  if (log === 0) throw new BarmanError(`no WAL segment before ${quoteName(name)}`);
  return walName(tli, log - 1, segMax);
}

// ---------------------------------------------------------------------------------------------
// History files

const HISTORY_LINE_RE = /^(\d+)\s+([0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8})(?:\s+(.*))?$/;

/**
 * Parse a timeline history file: one `parentTLI<TAB>switchpoint<TAB>reason` line per
 * ancestor timeline; blank lines and `#` comments are ignored.
 */
export function parseHistoryFile(text: string): HistoryEntry[] {
  const entries: HistoryEntry[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? '').trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = HISTORY_LINE_RE.exec(line);
    const parentTli = m ? Number(m[1]) : NaN;
    if (!m || !Number.isSafeInteger(parentTli) || parentTli > UINT32_MAX) {
      throw new BarmanError(`syntax error in history file at line ${i + 1}: ${quoteName(line)}`);
    }
    entries.push({ parentTli, switchpoint: parseLsn(m[2] ?? ''), reason: m[3] ?? '' });
  }
  return entries;
}

/**
 * What is wrong with `text` as the content of the history file `name` (null: nothing). What
 * PostgreSQL itself demands when it reads one: at least one line (timeline 1 has no history
 * file), every line `parentTLI<TAB>switchpoint<TAB>reason`, parent timelines increasing and
 * below the file's own timeline.
 */
export function historyProblem(name: string, text: string): string | null {
  if (text.includes('\0')) return 'is not a timeline history file (NUL bytes)';
  let entries: HistoryEntry[];
  try {
    entries = parseHistoryFile(text);
  } catch (err) {
    return `is not a timeline history file (${(err as Error).message})`;
  }
  if (entries.length === 0) return 'is not a timeline history file (no timeline line)';
  const tli = timelineOf(name);
  let prev = 0;
  for (const e of entries) {
    if (e.parentTli <= prev) return `is not a timeline history file (timeline ${e.parentTli} after ${prev}: not increasing)`;
    if (e.parentTli >= tli) return `is not a timeline history file (parent timeline ${e.parentTli} is not below ${tli})`;
    prev = e.parentTli;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Names that arrive from outside (get-wal arguments, put-wal tar members)

/**
 * Throw unless `name` is exactly a WAL archive name. The grammar already excludes `/`, `..`
 * and NUL; they are checked explicitly too because the name ends up in file system paths.
 * Exit code 3 is what `get-wal` uses for an invalid name.
 */
export function assertSafeWalName(name: unknown, exitCode = 3): asserts name is string {
  if (
    typeof name !== 'string' ||
    name.length === 0 ||
    name.includes('\0') ||
    name.includes('/') ||
    name.includes('\\') ||
    name.includes('..') ||
    walNameKind(name) === null
  ) {
    throw new BarmanError(`${quoteName(name)} is not a valid WAL file name`, exitCode);
  }
}
