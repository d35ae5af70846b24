/**
 * An INI reader with Python ConfigParser(strict=False) semantics, which is what Barman uses:
 * `key = value` or `key: value`, keys lowercased, full-line `#`/`;` comments only, indented
 * lines continue a value, duplicate sections and keys merge (last wins), `[DEFAULT]` values
 * leak into every section. Every value remembers the file and line it came from, so that a
 * bad value can be reported precisely.
 */
import { BarmanError } from '../util/errors.js';

export interface IniValue {
  value: string;
  file: string;
  line: number;
}

export type IniSection = Map<string, IniValue>;

export class IniDocument {
  /** Section name → key → value. Section names keep their case, as in ConfigParser. */
  readonly sections = new Map<string, IniSection>();
  readonly defaults: IniSection = new Map();
  /** Where each section header was last seen (for error messages). */
  readonly sectionOrigins = new Map<string, { file: string; line: number }>();

  section(name: string): IniSection | undefined {
    return this.sections.get(name);
  }

  /** Raw (not interpolated) value from a section, falling back to [DEFAULT]. */
  raw(section: string, key: string): IniValue | undefined {
    return this.sections.get(section)?.get(key) ?? this.defaults.get(key);
  }

  /** Keys set in a section, including those leaking from [DEFAULT]. */
  keys(section: string): string[] {
    const out = new Set<string>(this.defaults.keys());
    for (const k of this.sections.get(section)?.keys() ?? []) out.add(k);
    return [...out];
  }

  /** Merge another parsed file into this one (later files win). */
  merge(other: IniDocument): void {
    for (const [k, v] of other.defaults) this.defaults.set(k, v);
    for (const [name, sec] of other.sections) {
      let mine = this.sections.get(name);
      if (!mine) {
        mine = new Map();
        this.sections.set(name, mine);
      }
      for (const [k, v] of sec) mine.set(k, v);
      const origin = other.sectionOrigins.get(name);
      if (origin) this.sectionOrigins.set(name, origin);
    }
  }
}

const SECTION_RE = /^\[(?<name>[^\]]+)\]/;

/** Parse INI text. Throws BarmanError naming file and line on a syntax error. */
export function parseIni(text: string, file: string): IniDocument {
  const doc = new IniDocument();
  let current: IniSection | null = null;
  let lastValue: { sec: IniSection; key: string; indent: number } | null = null;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const rawLine = lines[i] ?? '';
    const lineNo = i + 1;
    const stripped = rawLine.trim();
    const indent = rawLine.length - rawLine.trimStart().length;
    if (stripped === '') {
      // An empty line ends nothing in ConfigParser (empty_lines_in_values), but a trailing
      // empty line would be stripped anyway, so keep it simple: it ends a continuation.
      lastValue = null;
      continue;
    }
    if (stripped.startsWith('#') || stripped.startsWith(';')) continue;
    if (lastValue && indent > lastValue.indent) {
      const prev = lastValue.sec.get(lastValue.key);
      if (prev) prev.value = prev.value === '' ? stripped : `${prev.value}\n${stripped}`;
      continue;
    }
    const sm = SECTION_RE.exec(stripped);
    if (sm?.groups) {
      const name = sm.groups.name ?? '';
      if (name === 'DEFAULT') {
        current = doc.defaults;
      } else {
        current = doc.sections.get(name) ?? new Map();
        doc.sections.set(name, current);
        doc.sectionOrigins.set(name, { file, line: lineNo });
      }
      lastValue = null;
      continue;
    }
    if (!current) {
      throw new BarmanError(`${file}:${lineNo}: file contains no section headers (line: '${stripped}')`);
    }
    const eq = firstDelimiter(stripped);
    if (eq < 0) {
      throw new BarmanError(`${file}:${lineNo}: cannot parse line '${stripped}' (expected 'key = value')`);
    }
    const key = stripped.slice(0, eq).trim().toLowerCase();
    if (key === '') throw new BarmanError(`${file}:${lineNo}: empty option name`);
    const value = stripped.slice(eq + 1).trim();
    current.set(key, { value, file, line: lineNo });
    lastValue = { sec: current, key, indent };
  }
  return doc;
}

function firstDelimiter(s: string): number {
  const a = s.indexOf('=');
  const b = s.indexOf(':');
  if (a < 0) return b;
  if (b < 0) return a;
  return Math.min(a, b);
}

const INTERP_MAX_DEPTH = 10;

/**
 * ConfigParser BasicInterpolation: `%(name)s` is replaced by the value of `name` (looked up in
 * `lookup`, itself interpolated), `%%` is a literal `%`, any other `%` is an error.
 */
export function interpolate(
  value: string,
  lookup: (name: string) => string | undefined,
  where: string,
  depth = 0,
): string {
  if (depth > INTERP_MAX_DEPTH) throw new BarmanError(`${where}: interpolation too deep (recursive reference?)`);
  let out = '';
  let i = 0;
  while (i < value.length) {
    const pct = value.indexOf('%', i);
    if (pct < 0) {
      out += value.slice(i);
      break;
    }
    out += value.slice(i, pct);
    const next = value[pct + 1];
    if (next === '%') {
      out += '%';
      i = pct + 2;
      continue;
    }
    const m = /^%\(([^)]+)\)s/.exec(value.slice(pct));
    if (!m) {
      throw new BarmanError(`${where}: '%' must be followed by '%' or '(name)s' in '${value}' (write a literal % as %%)`);
    }
    const name = (m[1] ?? '').toLowerCase();
    const replacement = lookup(name);
    if (replacement === undefined) {
      throw new BarmanError(`${where}: bad interpolation variable reference '%(${name})s'`);
    }
    out += interpolate(replacement, lookup, where, depth + 1);
    i = pct + m[0].length;
  }
  return out;
}

/** Strip one pair of matching surrounding quotes, as Barman does after reading a value. */
export function stripQuotes(value: string): string {
  if (value.length >= 2) {
    const q = value[0];
    if ((q === '"' || q === "'") && value[value.length - 1] === q) return value.slice(1, -1);
  }
  return value;
}
