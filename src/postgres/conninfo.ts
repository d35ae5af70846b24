/**
 * libpq connection strings (`key=value` with single-quote quoting, or a postgresql:// URI), parsed
 * into keywords so that we can hand them to node-postgres and to the PostgreSQL client programs.
 */
import { BarmanError } from '../util/errors.js';

export type Conninfo = Record<string, string>;

export function parseConninfo(text: string): Conninfo {
  const s = text.trim();
  if (/^postgres(ql)?:\/\//i.test(s)) return parseUri(s);
  const out: Conninfo = {};
  let i = 0;
  while (i < s.length) {
    while (i < s.length && /\s/.test(s[i] ?? '')) i++;
    if (i >= s.length) break;
    const eq = s.indexOf('=', i);
    if (eq < 0) throw new BarmanError(`invalid conninfo: missing "=" after "${s.slice(i)}"`);
    const key = s.slice(i, eq).trim();
    i = eq + 1;
    while (i < s.length && /\s/.test(s[i] ?? '')) i++;
    let value = '';
    if (s[i] === "'") {
      i++;
      let closed = false;
      while (i < s.length) {
        const ch = s[i] ?? '';
        if (ch === '\\' && i + 1 < s.length) {
          value += s[i + 1];
          i += 2;
        } else if (ch === "'") {
          i++;
          closed = true;
          break;
        } else {
          value += ch;
          i++;
        }
      }
      if (!closed) throw new BarmanError('invalid conninfo: unterminated quoted string');
    } else {
      while (i < s.length && !/\s/.test(s[i] ?? '')) {
        const ch = s[i] ?? '';
        if (ch === '\\' && i + 1 < s.length) {
          value += s[i + 1];
          i += 2;
        } else {
          value += ch;
          i++;
        }
      }
    }
    if (!/^[a-z_]+$/.test(key)) throw new BarmanError(`invalid conninfo keyword "${key}"`);
    out[key] = value;
  }
  return out;
}

function parseUri(s: string): Conninfo {
  let url: URL;
  try {
    url = new URL(s.replace(/^postgres(ql)?:/i, 'http:'));
  } catch {
    throw new BarmanError('invalid conninfo URI');
  }
  const out: Conninfo = {};
  if (url.hostname) out.host = decodeURIComponent(url.hostname);
  if (url.port) out.port = url.port;
  if (url.username) out.user = decodeURIComponent(url.username);
  if (url.password) out.password = decodeURIComponent(url.password);
  const db = url.pathname.replace(/^\//, '');
  if (db) out.dbname = decodeURIComponent(db);
  for (const [k, v] of url.searchParams) out[k] = v;
  return out;
}

/** Back to a libpq `key=value` string (quoted where needed). */
export function formatConninfo(ci: Conninfo): string {
  return Object.entries(ci)
    .map(([k, v]) => `${k}=${v === '' || /[\s'\\]/.test(v) ? `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'` : v}`)
    .join(' ');
}

/** Override or add keywords (e.g. application_name, replication). */
export function withParams(text: string, params: Conninfo): string {
  return formatConninfo({ ...parseConninfo(text), ...params });
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
