/**
 * Python-compatible float and datetime text, as found in Barman's catalog files.
 *
 * Barman stores datetimes with Python `str(datetime)` (`YYYY-MM-DD HH:MM:SS[.ffffff]+HH:MM`), WAL
 * times as Python `str(float)`, and prints `ctime()` in its output. JS `Date` only has millisecond
 * precision, so `PyDateTime` keeps the exact microsecond instant plus the UTC offset it was written
 * with: re-formatting a parsed value yields the same text.
 */

import { BarmanError } from './errors.js';

const MICROS_PER_SECOND = 1_000_000n;
const DAY_NAMES = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'] as const;
const MONTH_NAMES = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'] as const;
/** Python requires |utcoffset| < 24h. */
const MAX_OFFSET_SECONDS = 24 * 3600;

// ---------------------------------------------------------------------------------------------
// Floats

/**
 * Python `repr(float)` / `str(float)` (identical since Python 3.2): the shortest digit string that
 * round-trips, in positional notation when the decimal exponent is in [-4, 16), else in exponent
 * notation with a signed, at least two-digit exponent. Integral values get `.0`.
 * Examples: `1718291829.0`, `0.1`, `1e-05`, `1e+16`, `-0.0`, `inf`, `nan`.
 */
export function pyFloatStr(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (x === Infinity) return 'inf';
  if (x === -Infinity) return '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  // toExponential() without an argument gives the shortest round-trip digits (same digit
  // generation as Python's repr), e.g. "1.2345e+2".
  const exp = Math.abs(x).toExponential();
  const eAt = exp.indexOf('e');
  const digits = exp.slice(0, eAt).replace('.', '');
  const exponent = Number(exp.slice(eAt + 1));
  const decpt = exponent + 1; // value = 0.<digits> * 10**decpt
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) return `${sign}0.${'0'.repeat(-decpt)}${digits}`;
    if (decpt >= digits.length) return `${sign}${digits}${'0'.repeat(decpt - digits.length)}.0`;
    return `${sign}${digits.slice(0, decpt)}.${digits.slice(decpt)}`;
  }
  const mantissa = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
  const e = decpt - 1;
  const eSign = e < 0 ? '-' : '+';
  return `${sign}${mantissa}e${eSign}${String(Math.abs(e)).padStart(2, '0')}`;
}

/**
 * Python's `os.stat().st_mtime` computed from nanoseconds (`fs.stat(p, { bigint: true }).mtimeNs`):
 * CPython builds it as `sec + nsec * 1e-9` in double arithmetic, which is not always the same
 * double as `mtimeNs / 1e9`. Use with `pyFloatStr` for xlog.db times.
 */
export function pyStatMtime(mtimeNs: bigint): number {
  let sec = mtimeNs / 1_000_000_000n;
  let nsec = mtimeNs - sec * 1_000_000_000n;
  if (nsec < 0n) {
    // floor division, as CPython does for pre-1970 times
    sec -= 1n;
    nsec += 1_000_000_000n;
  }
  return Number(sec) + Number(nsec) * 1e-9;
}

// ---------------------------------------------------------------------------------------------
// Datetimes

export interface PyDateTimeFields {
  year: number;
  month: number; // 1..12
  day: number; // 1..31
  hour?: number;
  minute?: number;
  second?: number;
  microsecond?: number; // 0..999999
}

const pad2 = (n: number): string => String(n).padStart(2, '0');

function floorMod(a: bigint, m: bigint): bigint {
  const r = a % m;
  return r < 0n ? r + m : r;
}

function daysInMonth(year: number, month: number): number {
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  return [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1] ?? 0;
}

function checkInt(name: string, v: number, min: number, max: number): void {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new RangeError(`${name} must be an integer in ${min}..${max}, got ${v}`);
  }
}

function checkOffset(offsetSeconds: number): void {
  if (!Number.isInteger(offsetSeconds) || Math.abs(offsetSeconds) >= MAX_OFFSET_SECONDS) {
    throw new RangeError(`UTC offset must be whole seconds strictly within ±24h, got ${offsetSeconds}s`);
  }
}

/** Milliseconds since the epoch of a wall-clock time read as if it were UTC (years 1..9999 safe). */
function wallAsUtcMillis(f: Required<PyDateTimeFields>): number {
  const d = new Date(0);
  // setUTCFullYear avoids Date.UTC's "years 0..99 mean 19xx" rule
  d.setUTCFullYear(f.year, f.month - 1, f.day);
  d.setUTCHours(f.hour, f.minute, f.second, 0);
  return d.getTime();
}

/** Local UTC offset (seconds east of UTC) in effect at an instant. */
export function localOffsetSecondsAt(epochMillis: number): number {
  return Math.round(-new Date(epochMillis).getTimezoneOffset() * 60);
}

/** Local UTC offset (seconds) for a local wall-clock time (how a naive datetime is interpreted). */
function localOffsetSecondsForWall(f: Required<PyDateTimeFields>): number {
  const local = new Date(2000, 0, 1);
  local.setFullYear(f.year, f.month - 1, f.day);
  local.setHours(f.hour, f.minute, f.second, 0);
  return Math.round((wallAsUtcMillis(f) - local.getTime()) / 1000);
}

function completeFields(f: PyDateTimeFields): Required<PyDateTimeFields> {
  const full: Required<PyDateTimeFields> = {
    year: f.year,
    month: f.month,
    day: f.day,
    hour: f.hour ?? 0,
    minute: f.minute ?? 0,
    second: f.second ?? 0,
    microsecond: f.microsecond ?? 0,
  };
  checkInt('year', full.year, 1, 9999);
  checkInt('month', full.month, 1, 12);
  checkInt('day', full.day, 1, daysInMonth(full.year, full.month));
  checkInt('hour', full.hour, 0, 23);
  checkInt('minute', full.minute, 0, 59);
  checkInt('second', full.second, 0, 59);
  checkInt('microsecond', full.microsecond, 0, 999_999);
  return full;
}

/**
 * A tz-aware Python datetime: an exact instant in microseconds plus the UTC offset (whole
 * seconds) its wall-clock fields are expressed in. Immutable.
 */
export class PyDateTime {
  /** Microseconds since 1970-01-01T00:00:00Z. */
  readonly epochMicros: bigint;
  /** UTC offset in seconds (east positive), e.g. 7200 for +02:00. */
  readonly offsetSeconds: number;
  // Wall-clock fields in `offsetSeconds`.
  readonly year: number;
  readonly month: number;
  readonly day: number;
  readonly hour: number;
  readonly minute: number;
  readonly second: number;
  readonly microsecond: number;
  /** Day of week, 0 = Sunday (JS convention). */
  readonly weekday: number;

  private constructor(epochMicros: bigint, offsetSeconds: number) {
    checkOffset(offsetSeconds);
    this.epochMicros = epochMicros;
    this.offsetSeconds = offsetSeconds;
    const wall = epochMicros + BigInt(offsetSeconds) * MICROS_PER_SECOND;
    const micro = floorMod(wall, MICROS_PER_SECOND);
    const d = new Date(Number((wall - micro) / 1000n));
    if (Number.isNaN(d.getTime())) throw new RangeError(`datetime out of range: ${epochMicros}us`);
    this.year = d.getUTCFullYear();
    this.month = d.getUTCMonth() + 1;
    this.day = d.getUTCDate();
    this.hour = d.getUTCHours();
    this.minute = d.getUTCMinutes();
    this.second = d.getUTCSeconds();
    this.microsecond = Number(micro);
    this.weekday = d.getUTCDay();
    if (this.year < 1 || this.year > 9999) throw new RangeError(`year ${this.year} is out of range`);
  }

  /** From an exact instant; the offset defaults to the local one at that instant. */
  static fromEpochMicros(epochMicros: bigint | number, offsetSeconds?: number): PyDateTime {
    const micros = typeof epochMicros === 'bigint' ? epochMicros : BigInt(Math.round(epochMicros));
    const off = offsetSeconds ?? localOffsetSecondsAt(Number(micros / 1000n));
    return new PyDateTime(micros, off);
  }

  /**
   * From a JS Date. `offsetMinutes` defaults to the local offset at that instant; `microsecond`
   * (0..999999) replaces the sub-second part of the date (default: its milliseconds × 1000).
   */
  static fromDate(date: Date, offsetMinutes?: number, microsecond?: number): PyDateTime {
    const ms = date.getTime();
    if (Number.isNaN(ms)) throw new RangeError('invalid Date');
    let micros = BigInt(ms) * 1000n;
    if (microsecond !== undefined) {
      checkInt('microsecond', microsecond, 0, 999_999);
      const wholeSecondMicros = micros - floorMod(micros, MICROS_PER_SECOND);
      micros = wholeSecondMicros + BigInt(microsecond);
    }
    const off = offsetMinutes === undefined ? localOffsetSecondsAt(ms) : Math.round(offsetMinutes * 60);
    return new PyDateTime(micros, off);
  }

  /**
   * From wall-clock fields. `offsetSeconds` null/undefined = naive datetime interpreted in the local
   * time zone (what Barman does with a naive backup.info datetime).
   */
  static fromFields(fields: PyDateTimeFields, offsetSeconds?: number | null): PyDateTime {
    const f = completeFields(fields);
    const off = offsetSeconds ?? localOffsetSecondsForWall(f);
    checkOffset(off);
    const wallMicros = BigInt(wallAsUtcMillis(f)) * 1000n + BigInt(f.microsecond);
    return new PyDateTime(wallMicros - BigInt(off) * MICROS_PER_SECOND, off);
  }

  /** UTC offset in minutes (may be fractional only for offsets with seconds). */
  get offsetMinutes(): number {
    return this.offsetSeconds / 60;
  }

  /** Python `datetime.timestamp()`: seconds since the epoch as a float. */
  get epochSeconds(): number {
    return Number(this.epochMicros) / 1e6;
  }

  /** Milliseconds since the epoch, rounded down (what a JS Date can hold). */
  get epochMillis(): number {
    const micros = this.epochMicros;
    return Number((micros - floorMod(micros, 1000n)) / 1000n);
  }

  toDate(): Date {
    return new Date(this.epochMillis);
  }

  /** The same instant expressed at another UTC offset (Python `astimezone`). */
  withOffset(offsetSeconds: number): PyDateTime {
    return new PyDateTime(this.epochMicros, offsetSeconds);
  }

  /** The same instant expressed at the local offset in effect at that instant. */
  toLocal(): PyDateTime {
    return new PyDateTime(this.epochMicros, localOffsetSecondsAt(this.epochMillis));
  }

  /** `+HH:MM` (or `+HH:MM:SS` when the offset has seconds), as Python prints utcoffset. */
  formatOffset(): string {
    const sign = this.offsetSeconds < 0 ? '-' : '+';
    const abs = Math.abs(this.offsetSeconds);
    const hh = Math.floor(abs / 3600);
    const mm = Math.floor((abs % 3600) / 60);
    const ss = abs % 60;
    return `${sign}${pad2(hh)}:${pad2(mm)}${ss ? `:${pad2(ss)}` : ''}`;
  }

  /**
   * Python `str(datetime)` (= `isoformat(' ')`): `YYYY-MM-DD HH:MM:SS[.ffffff]+HH:MM`, the
   * fraction omitted when the microsecond is 0.
   */
  format(sep = ' '): string {
    const date = `${String(this.year).padStart(4, '0')}-${pad2(this.month)}-${pad2(this.day)}`;
    const time = `${pad2(this.hour)}:${pad2(this.minute)}:${pad2(this.second)}`;
    const frac = this.microsecond ? `.${String(this.microsecond).padStart(6, '0')}` : '';
    return `${date}${sep}${time}${frac}${this.formatOffset()}`;
  }

  /** Python `datetime.isoformat()` (separator `T` by default). */
  isoformat(sep = 'T'): string {
    return this.format(sep);
  }

  /** Python `datetime.ctime()`: the wall-clock fields as `Mon Sep  2 15:12:03 2024`. */
  ctime(): string {
    // datetime.ctime() zero-pads the year to 4 digits (time.ctime() does not)
    const year = String(this.year).padStart(4, '0');
    return ctimeFields(this.weekday, this.month, this.day, this.hour, this.minute, this.second, year);
  }

  /** Chronological order of the instants (offsets ignored, like aware Python datetimes). */
  compare(other: PyDateTime): -1 | 0 | 1 {
    return this.epochMicros < other.epochMicros ? -1 : this.epochMicros > other.epochMicros ? 1 : 0;
  }

  /** Same instant (Python `==` on aware datetimes). */
  equals(other: PyDateTime): boolean {
    return this.epochMicros === other.epochMicros;
  }

  /** Python `(a - b).total_seconds()`, exact to the microsecond before the final division. */
  static diffSeconds(a: PyDateTime, b: PyDateTime): number {
    return Number(a.epochMicros - b.epochMicros) / 1e6;
  }

  toString(): string {
    return this.format();
  }

  toJSON(): string {
    return this.format();
  }
}

function ctimeFields(
  weekday: number,
  month: number,
  day: number,
  hour: number,
  minute: number,
  second: number,
  year: number | string,
): string {
  const wd = DAY_NAMES[weekday] ?? '???';
  const mon = MONTH_NAMES[month - 1] ?? '???';
  return `${wd} ${mon} ${String(day).padStart(2, ' ')} ${pad2(hour)}:${pad2(minute)}:${pad2(second)} ${year}`;
}

/**
 * Python `time.ctime()` text, e.g. `Mon Sep  2 15:12:03 2024`. A JS Date is shown in local time;
 * a PyDateTime with its own wall-clock fields (as `datetime.ctime()` does).
 */
export function ctime(value: Date | PyDateTime = new Date()): string {
  if (value instanceof PyDateTime) return value.ctime();
  return ctimeFields(
    value.getDay(),
    value.getMonth() + 1,
    value.getDate(),
    value.getHours(),
    value.getMinutes(),
    value.getSeconds(),
    value.getFullYear(),
  );
}

/**
 * Python `str(datetime)` for a JS Date at a given offset (default: local). `micro` (0..999999)
 * replaces the sub-second part (default: the Date's milliseconds × 1000).
 */
export function formatPyDatetime(date: Date, tzOffsetMinutes?: number, micro?: number): string {
  return PyDateTime.fromDate(date, tzOffsetMinutes, micro).format();
}

/**
 * Now, at the local offset, with microseconds. The wall clock only has millisecond precision, so
 * the sub-millisecond digits come from the high-resolution timer: good enough to make successive
 * values distinct and to print six fraction digits like Python does.
 */
export function localNowPyDateTime(): PyDateTime {
  const ms = Date.now();
  const subMs = Math.floor((performance.now() % 1) * 1000) % 1000;
  return PyDateTime.fromEpochMicros(BigInt(ms) * 1000n + BigInt(subMs), localOffsetSecondsAt(ms));
}

// ---------------------------------------------------------------------------------------------
// Lenient datetime parser

const ISO_RE =
  /^(\d{4})-(\d{1,2})-(\d{1,2})(?:(?:[Tt]|\s+)(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?\s*(.*)$/;
const ISO_BASIC_RE = /^(\d{4})(\d{2})(\d{2})(?:[Tt](\d{2})(\d{2})(?:(\d{2})(?:[.,](\d+))?)?)?\s*(.*)$/;
const CTIME_RE =
  /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),?\s+(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+(\d{1,2})\s+(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?\s+(\d{4})\s*(.*)$/i;
const OFFSET_RE = /^([+-])(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?$/;

/** Offset text → seconds, `null` when there is none (naive). Throws on garbage. */
function parseOffset(text: string, whole: string): number | null {
  const t = text.trim();
  if (t === '') return null;
  if (/^(?:Z|UTC|GMT|UT)$/i.test(t)) return 0;
  const m = OFFSET_RE.exec(t);
  if (!m) throw new BarmanError(`Cannot parse datetime '${whole}': unsupported time zone '${t}'`);
  const [, sign, hh, mm, ss, frac] = m;
  if (frac && Number(frac) !== 0) {
    throw new BarmanError(`Cannot parse datetime '${whole}': sub-second UTC offsets are not supported`);
  }
  const secs = Number(hh) * 3600 + Number(mm ?? 0) * 60 + Number(ss ?? 0);
  if (Number(mm ?? 0) > 59 || Number(ss ?? 0) > 59 || secs >= MAX_OFFSET_SECONDS) {
    throw new BarmanError(`Cannot parse datetime '${whole}': invalid UTC offset '${t}'`);
  }
  return sign === '-' ? -secs : secs;
}

/** Fraction digits → microseconds, truncated to 6 digits (as dateutil does). */
function fractionMicros(frac: string | undefined): number {
  if (!frac) return 0;
  return Number(frac.slice(0, 6).padEnd(6, '0'));
}

/**
 * Lenient datetime reader for backup.info values and friends. Accepts Python `str(datetime)` /
 * ISO 8601 (`T` or space separator, optional seconds and fraction, offset `Z`, `UTC`, `±HH`,
 * `±HHMM`, `±HH:MM[:SS]`), ISO basic (`20240613T171709`) and ctime text. Without an offset the
 * value is naive and interpreted in the local time zone. Throws an Error when the text is not a
 * datetime.
 */
export function parsePyDatetime(text: string): PyDateTime {
  const s = text.trim();
  let fields: PyDateTimeFields;
  let rest: string;
  let m = ISO_RE.exec(s) ?? ISO_BASIC_RE.exec(s);
  if (m) {
    fields = {
      year: Number(m[1]),
      month: Number(m[2]),
      day: Number(m[3]),
      hour: Number(m[4] ?? 0),
      minute: Number(m[5] ?? 0),
      second: Number(m[6] ?? 0),
      microsecond: fractionMicros(m[7]),
    };
    rest = m[8] ?? '';
  } else if ((m = CTIME_RE.exec(s))) {
    const mon = m[1] ?? '';
    fields = {
      year: Number(m[7]),
      month: MONTH_NAMES.findIndex((n) => n.toLowerCase() === mon.toLowerCase()) + 1,
      day: Number(m[2]),
      hour: Number(m[3]),
      minute: Number(m[4]),
      second: Number(m[5] ?? 0),
      microsecond: fractionMicros(m[6]),
    };
    rest = m[8] ?? '';
  } else {
    throw new BarmanError(`Cannot parse datetime '${text}'`);
  }
  const offset = parseOffset(rest, text);
  try {
    return PyDateTime.fromFields(fields, offset);
  } catch (err) {
    throw new BarmanError(`Cannot parse datetime '${text}': ${(err as Error).message}`);
  }
}
