/**
 * libpq connection strings: `key=value` pairs (single quotes, backslash escapes) or
 * `postgresql://` / `postgres://` URIs, read by the same rules as libpq's own parser
 * (conninfo_parse and conninfo_uri_parse in fe-connect.c): several hosts and ports in a URI
 * (`postgresql://h1:5432,[::1]:5433/db`), percent-decoding, `ssl=true` as `sslmode=require`.
 *
 * Our own connections hand the user's string to libpq unchanged (with our keywords appended),
 * so libpq decides what every keyword means; this parser only serves to read a keyword
 * (connect_timeout, password) and to rewrite a conninfo for a child program's command line.
 */
import { BarmanError } from '../util/errors.js';

export type Conninfo = Record<string, string>;

const URI_PREFIXES = ['postgresql://', 'postgres://'];
/** isspace() in the C locale, as libpq tests it. */
const isSpace = (ch: string | undefined): boolean => ch === ' ' || ch === '\t' || ch === '\n' || ch === '\v' || ch === '\f' || ch === '\r';
/** Keywords are checked by libpq when it connects; we only refuse what cannot be one. */
const KEYWORD = /^[a-z_]+$/;

export function isConninfoUri(text: string): boolean {
  return URI_PREFIXES.some((p) => text.startsWith(p));
}

export function parseConninfo(text: string): Conninfo {
  const s = text.trim();
  return isConninfoUri(s) ? parseUri(s) : parseKeywords(s);
}

function store(out: Conninfo, key: string, value: string): void {
  if (!KEYWORD.test(key)) throw new BarmanError(`invalid conninfo: invalid connection option "${key}"`);
  out[key] = value;
}

/** `key = value ...`, as libpq's conninfo_parse. */
function parseKeywords(s: string): Conninfo {
  const out: Conninfo = {};
  let i = 0;
  while (i < s.length) {
    if (isSpace(s[i])) {
      i++;
      continue;
    }
    const start = i;
    while (i < s.length && s[i] !== '=' && !isSpace(s[i])) i++;
    const key = s.slice(start, i);
    while (i < s.length && isSpace(s[i])) i++;
    if (s[i] !== '=') throw new BarmanError(`invalid conninfo: missing "=" after "${key}"`);
    i++;
    while (i < s.length && isSpace(s[i])) i++;
    let value = '';
    if (s[i] === "'") {
      i++;
      for (;;) {
        if (i >= s.length) throw new BarmanError('invalid conninfo: unterminated quoted string');
        const ch = s[i] as string;
        if (ch === '\\') {
          i++;
          if (i < s.length) value += s[i++];
        } else if (ch === "'") {
          i++;
          break;
        } else {
          value += ch;
          i++;
        }
      }
    } else {
      while (i < s.length && !isSpace(s[i])) {
        if (s[i] === '\\') {
          i++;
          if (i < s.length) value += s[i++];
        } else {
          value += s[i++];
        }
      }
    }
    store(out, key, value);
  }
  return out;
}

/** libpq's conninfo_uri_decode: %XX escapes, %00 forbidden, nothing else (no '+'). */
function uriDecode(text: string): string {
  if (!text.includes('%')) return text;
  const bytes: number[] = [];
  const raw = Buffer.from(text, 'utf8');
  for (let i = 0; i < raw.length; i++) {
    const b = raw[i] as number;
    if (b !== 0x25) {
      bytes.push(b);
      continue;
    }
    const hex = raw.subarray(i + 1, i + 3).toString('latin1');
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) throw new BarmanError(`invalid conninfo URI: invalid percent-encoded token: "${text}"`);
    const c = parseInt(hex, 16);
    if (c === 0) throw new BarmanError(`invalid conninfo URI: forbidden value %00 in percent-encoded value: "${text}"`);
    bytes.push(c);
    i += 2;
  }
  return Buffer.from(bytes).toString('utf8');
}

/** `postgresql://[user[:password]@][host[:port][,...]][/dbname][?key=value&...]`, as libpq's conninfo_uri_parse. */
function parseUri(s: string): Conninfo {
  const out: Conninfo = {};
  const prefix = URI_PREFIXES.find((p) => s.startsWith(p)) ?? '';
  let p = prefix.length;
  // Credentials: everything before an '@' that comes before any '/'.
  let q = p;
  while (q < s.length && s[q] !== '@' && s[q] !== '/') q++;
  if (s[q] === '@') {
    const cred = s.slice(p, q);
    const colon = cred.indexOf(':');
    const user = colon < 0 ? cred : cred.slice(0, colon);
    if (user) out.user = uriDecode(user);
    if (colon >= 0 && cred.length > colon + 1) out.password = uriDecode(cred.slice(colon + 1));
    p = q + 1;
  }
  // One or more host[:port], separated by commas.
  let hosts = '';
  let ports = '';
  let term = '';
  for (;;) {
    let host: string;
    if (s[p] === '[') {
      const close = s.indexOf(']', p + 1);
      if (close < 0) throw new BarmanError('invalid conninfo URI: end of string reached when looking for matching "]" in IPv6 host address');
      if (close === p + 1) throw new BarmanError('invalid conninfo URI: IPv6 host address may not be empty');
      host = s.slice(p + 1, close);
      p = close + 1;
      const next = s[p];
      if (next !== undefined && next !== ':' && next !== '/' && next !== '?' && next !== ',') {
        throw new BarmanError(`invalid conninfo URI: unexpected character "${next}" at position ${p + 1} (expected ":" or "/")`);
      }
    } else {
      const start = p;
      while (p < s.length && !':/?,'.includes(s[p] as string)) p++;
      host = s.slice(start, p);
    }
    term = s[p] ?? '';
    hosts += host;
    if (term === ':') {
      const start = ++p;
      while (p < s.length && !'/?,'.includes(s[p] as string)) p++;
      ports += s.slice(start, p);
      term = s[p] ?? '';
    }
    if (term !== ',') break;
    p++;
    hosts += ',';
    ports += ',';
  }
  if (hosts) out.host = uriDecode(hosts);
  if (ports) out.port = uriDecode(ports);
  if (term === '/') {
    const start = ++p;
    while (p < s.length && s[p] !== '?') p++;
    const dbname = s.slice(start, p);
    if (dbname) out.dbname = uriDecode(dbname);
    term = s[p] ?? '';
  }
  if (term === '?') parseUriParams(s.slice(p + 1), out);
  return out;
}

function parseUriParams(params: string, out: Conninfo): void {
  for (const part of params.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    if (eq < 0) throw new BarmanError(`invalid conninfo URI: missing key/value separator "=" in query parameter: "${part}"`);
    if (part.indexOf('=', eq + 1) >= 0) throw new BarmanError(`invalid conninfo URI: extra key/value separator "=" in query parameter: "${part}"`);
    let key = uriDecode(part.slice(0, eq));
    let value = uriDecode(part.slice(eq + 1));
    // libpq's JDBC compatibility spelling.
    if (key === 'ssl' && value === 'true') [key, value] = ['sslmode', 'require'];
    store(out, key, value);
  }
}

/** libpq quoting of one value: bare when it can be, else single quotes with backslash escapes. */
function quoteValue(v: string): string {
  return v === '' || /[\s'\\]/.test(v) ? `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'` : v;
}

/** Back to a libpq `key=value` string (quoted where needed). */
export function formatConninfo(ci: Conninfo): string {
  return Object.entries(ci)
    .map(([k, v]) => `${k}=${quoteValue(v)}`)
    .join(' ');
}

/** Override or add keywords (e.g. application_name, replication), as one `key=value` string. */
export function withParams(text: string, params: Conninfo): string {
  return formatConninfo({ ...parseConninfo(text), ...params });
}

/**
 * The user's conninfo, untouched, with `params` appended: libpq keeps the last value of a
 * keyword given twice, in a `key=value` string as in a URI's query, so these win.
 */
export function appendParams(text: string, params: Conninfo): string {
  const entries = Object.entries(params);
  if (entries.length === 0) return text;
  for (const [k] of entries) if (!KEYWORD.test(k)) throw new BarmanError(`invalid connection option "${k}"`);
  const s = text.trim();
  if (isConninfoUri(s)) {
    const query = entries.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');
    const sep = !s.includes('?') ? '?' : s.endsWith('?') || s.endsWith('&') ? '' : '&';
    return `${s}${sep}${query}`;
  }
  const tail = formatConninfo(params);
  return s === '' ? tail : `${s} ${tail}`;
}

/** A conninfo for a child program's command line, and the environment that goes with it. */
export interface ChildConninfo {
  /** Without `password`: safe to show in `ps`. */
  conninfo: string;
  /** `PGPASSWORD` when the conninfo had a password (for that child's environment only). */
  env: Record<string, string>;
}

/**
 * Prepare a conninfo (with `params` overriding or adding keywords) for pg_basebackup,
 * pg_receivewal and friends: every user can read a process's arguments, so the password moves
 * from the `--dbname` argument to the child's `PGPASSWORD`.
 */
export function conninfoForChild(text: string, params: Conninfo = {}): ChildConninfo {
  const { password, ...rest } = { ...parseConninfo(text), ...params };
  return { conninfo: formatConninfo(rest), env: password !== undefined ? { PGPASSWORD: password } : {} };
}
