/**
 * Human-readable sizes, durations and fixed-point numbers, printed exactly as Barman prints them
 * (spec §4.3): sizes in base 1024 (`512 B`, `1.5 KiB`), durations as `1 day, 2 hours, 3 minutes,
 * 4 seconds`, numbers with Python `%.Nf` rounding.
 */

/**
 * Python `'%.<digits>f' % x`. JS `toFixed` also rounds the exact binary value, but breaks exact
 * ties away from zero where Python rounds them to even (`1.25` → Python `1.2`, JS `1.3`).
 */
export function pyFixed(x: number, digits: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  const rounded = x.toFixed(digits);
  // A tie has an exact decimal expansion ending with a 5 right after the kept digits. A double
  // has at most ~1074 fraction digits, but a tie at <= 40 digits needs far fewer than 100.
  if (Math.abs(x) >= 1e21 || digits > 40) return rounded;
  const longer = x.toFixed(100);
  const cut = longer.length - (100 - digits); // index of the first dropped digit
  const isTie = longer[cut] === '5' && /^0*$/.test(longer.slice(cut + 1));
  if (!isTie) return rounded;
  const truncated = longer.slice(0, cut).replace(/\.$/, '');
  return Number(truncated.at(-1)) % 2 === 0 ? truncated : rounded;
}

const SIZE_UNITS = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB', 'ZiB', 'YiB'] as const;

/**
 * Barman's `pretty_size`: `%d B` below 1 KiB, else `%.1f <unit>` in base 1024 (`1.0 KiB`,
 * `820.0 MiB`). Negative sizes are printed the same way with their sign.
 */
export function prettySize(bytes: number): string {
  let value = bytes;
  if (Math.abs(value) < 1024) return `${Math.trunc(value)} B`;
  for (let i = 0; i < SIZE_UNITS.length; i++) {
    value /= 1024; // a power of two: exact for every size below 2^53
    if (Math.abs(value) < 1024 || i === SIZE_UNITS.length - 1) return `${pyFixed(value, 1)} ${SIZE_UNITS[i]}`;
  }
  /* c8 ignore next */
  return `${bytes} B`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/**
 * Barman's human-readable timedelta: `1 day, 2 hours, 3 minutes, 4 seconds` (zero parts left out,
 * singular forms for 1), `less than one second` under a second, ` ago` appended for negative
 * durations. Fractions of a second are dropped.
 */
export function humanDuration(seconds: number): string {
  const negative = seconds < 0;
  // Python's timedelta keeps microseconds: work on whole microseconds so that 0.9999999 s stays < 1 s
  const micros = Math.round(Math.abs(seconds) * 1e6);
  const whole = Math.floor(micros / 1e6);
  const days = Math.floor(whole / 86400);
  const rest = whole % 86400;
  const parts: string[] = [];
  if (days > 0) parts.push(plural(days, 'day'));
  const hours = Math.floor(rest / 3600);
  if (hours > 0) parts.push(plural(hours, 'hour'));
  const minutes = Math.floor(rest / 60) % 60;
  if (minutes > 0) parts.push(plural(minutes, 'minute'));
  const secs = rest % 60;
  if (secs > 0) parts.push(plural(secs, 'second'));
  let text = micros < 1e6 ? 'less than one second' : parts.join(', ');
  if (negative) text += ' ago';
  return text;
}

/** `98.61%` from a ratio (0.9861), with Python `%.2f` rounding. */
export function percent(ratio: number, digits = 2): string {
  return `${pyFixed(ratio * 100, digits)}%`;
}
