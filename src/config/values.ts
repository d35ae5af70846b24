/**
 * Parsers for configuration value types. Each takes the (interpolated, unquoted) text and returns
 * the typed value, or throws a plain Error whose message says what was expected; the loader adds
 * file, line, section and option name.
 */

export type RetentionPolicy =
  | { kind: 'redundancy'; copies: number; text: string }
  | { kind: 'window'; amount: number; unit: 'DAYS' | 'WEEKS' | 'MONTHS'; seconds: number; text: string };

export function parseBool(v: string): boolean {
  const s = v.toLowerCase();
  if (['true', 't', 'yes', 'y', '1', 'on'].includes(s)) return true;
  if (['false', 'f', 'no', 'n', '0', 'off'].includes(s)) return false;
  throw new Error(`expected a boolean (on/off, true/false, yes/no, 1/0)`);
}

export function parseInt10(v: string): number {
  if (!/^[+-]?\d+$/.test(v.trim())) throw new Error('expected an integer');
  return Number.parseInt(v, 10);
}

export function parseNonNegativeInt(v: string): number {
  const n = parseInt10(v);
  if (n < 0) throw new Error('expected an integer >= 0');
  return n;
}

const DAY = 86400;
const INTERVAL_UNITS: Record<string, number> = { hour: 3600, day: DAY, week: 7 * DAY, month: 31 * DAY };

/** `N day|week|month|hour[s]` → seconds (a month is 31 days, as in Barman). */
export function parseInterval(v: string): number {
  const m = /^\s*(\d+)\s*(hour|day|week|month)s?\s*$/i.exec(v);
  if (!m) throw new Error("expected an interval like '1 day', '2 weeks', '1 month' or '12 hours'");
  return Number(m[1]) * (INTERVAL_UNITS[(m[2] ?? '').toLowerCase()] ?? 0);
}

const SHORT_INTERVAL_UNITS: Record<string, number> = { second: 1, minute: 60, ...INTERVAL_UNITS };

/**
 * `N second|minute|hour|day|week|month[s]` → seconds (barman-ts options that measure minutes,
 * such as sync_lag_maximum_age; Barman's own interval options stop at hours).
 */
export function parseShortInterval(v: string): number {
  const m = /^\s*(\d+)\s*(second|minute|hour|day|week|month)s?\s*$/i.exec(v);
  if (!m) throw new Error("expected an interval like '90 seconds', '15 minutes', '2 hours' or '1 day'");
  return Number(m[1]) * (SHORT_INTERVAL_UNITS[(m[2] ?? '').toLowerCase()] ?? 0);
}

const SIZE_UNITS: Record<string, number> = {
  '': 1, k: 1e3, Ki: 1024, M: 1e6, Mi: 1024 ** 2, G: 1e9, Gi: 1024 ** 3, T: 1e12, Ti: 1024 ** 4,
};

/** `N[k|Ki|M|Mi|G|Gi|T|Ti]` → bytes (k = 1000, Ki = 1024; units are case-sensitive). */
export function parseSize(v: string): number {
  const m = /^\s*(\d+)\s*(k|Ki|M|Mi|G|Gi|T|Ti)?B?\s*$/.exec(v);
  if (!m) throw new Error("expected a size like '100', '10Mi', '1G' (k=1000, Ki=1024)");
  return Number(m[1]) * (SIZE_UNITS[m[2] ?? ''] ?? 1);
}

/** Retention policy text, as Barman accepts it (case-insensitive). */
export function parseRetentionPolicy(v: string): RetentionPolicy {
  const red = /^\s*redundancy\s+(\d+)\s*$/i.exec(v);
  if (red) {
    const copies = Number(red[1]);
    if (copies < 1) throw new Error('REDUNDANCY must be at least 1');
    return { kind: 'redundancy', copies, text: `REDUNDANCY ${copies}` };
  }
  const win = /^\s*recovery\s+window\s+of\s+(\d+)\s+(day|week|month)s?\s*$/i.exec(v);
  if (win) {
    const amount = Number(win[1]);
    if (amount < 1) throw new Error('RECOVERY WINDOW must be at least 1');
    const unitWord = (win[2] ?? '').toLowerCase();
    const unit = `${unitWord.toUpperCase()}S` as 'DAYS' | 'WEEKS' | 'MONTHS';
    return { kind: 'window', amount, unit, seconds: amount * (INTERVAL_UNITS[unitWord] ?? 0), text: `RECOVERY WINDOW OF ${amount} ${unit}` };
  }
  throw new Error("expected 'REDUNDANCY n' or 'RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS'");
}

export function parseEnum(values: readonly string[]) {
  return (v: string): string => {
    const s = v.toLowerCase();
    if (!values.includes(s)) throw new Error(`expected one of: ${values.join(', ')}`);
    return s;
  };
}

/** Comma-separated set of known words (backup_options, recovery_options). */
export function parseCsvSet(values: readonly string[]) {
  return (v: string): string[] => {
    const items = v.split(',').map((s) => s.trim().toLowerCase()).filter((s) => s !== '');
    for (const it of items) {
      if (!values.includes(it)) throw new Error(`unknown value '${it}' (expected any of: ${values.join(', ')})`);
    }
    return [...new Set(items)];
  };
}

export function parseSlotName(v: string): string {
  const s = v.toLowerCase();
  if (!/^[0-9a-z_]+$/.test(s)) throw new Error('a replication slot name may contain only lower-case letters, digits and underscores');
  return s;
}

/** `low|medium|high` or an integer; clamped per algorithm when used. */
export function parseCompressionLevel(v: string): string | number {
  const s = v.toLowerCase();
  if (s === 'low' || s === 'medium' || s === 'high') return s;
  return parseInt10(s);
}

/** `0x<hex>` magic for custom compression → bytes. */
export function parseMagic(v: string): string {
  if (!/^0x[0-9a-fA-F]+$/.test(v) || v.length % 2 !== 0) throw new Error("expected hex bytes like '0x28b52ffd'");
  return v.slice(2).toLowerCase();
}

/** `name:kbps name2:kbps` (space-separated). */
export function parseTablespaceLimits(v: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const rule of v.split(/\s+/).filter((s) => s !== '')) {
    const m = /^([^:]+):(\d+)$/.exec(rule);
    if (!m) throw new Error(`bad rule '${rule}' (expected tablespace:kbps)`);
    out[m[1] ?? ''] = Number(m[2]);
  }
  return out;
}

export function parseAbsPath(v: string): string {
  if (!v.startsWith('/')) throw new Error('expected an absolute path');
  return v.replace(/\/+$/, '') || '/';
}

/** Colon-separated directories prepended to PATH for subprocesses. */
export function parsePathPrefix(v: string): string {
  return v;
}

export function parseString(v: string): string {
  return v;
}
