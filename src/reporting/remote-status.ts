/**
 * What Barman calls a server's "remote status" (spec §4.4, show-servers): the facts it gathers
 * from PostgreSQL (settings, position, configuration files, slot, systemid), from the streaming
 * connection (IDENTIFY_SYSTEM), from pg_stat_archiver (with `archiver = on`) and from the client
 * programs it would run (pg_receivewal with `streaming_archiver = on`, pg_basebackup with
 * `backup_method = postgres`), under Barman 3.4's key names and with the value types its console
 * and JSON output show (Python `str()` on the console; in JSON, numbers, booleans, lists and
 * null as such and anything else as its `str()`). A server that does not answer gets Barman's
 * keys set to None, never an exception.
 */
import type { ServerConfig } from '../config/config.js';
import { findPgBinary } from '../postgres/binaries.js';
import { PgConnection, identifySystem } from '../postgres/connection.js';
import { parseConninfo } from '../postgres/conninfo.js';
import { pyFromJs, pyRepr } from '../catalog/pyliteral.js';
import { errorMessage } from '../util/errors.js';
import { run } from '../util/proc.js';

/** One value as Barman shows it: console text and JSON value. */
export interface Shown {
  text: string;
  json: unknown;
}

export const shown = {
  none: (): Shown => ({ text: 'None', json: null }),
  bool: (b: boolean | null | undefined): Shown => (b === null || b === undefined ? shown.none() : { text: b ? 'True' : 'False', json: b }),
  int: (n: number | null | undefined): Shown => (n === null || n === undefined || Number.isNaN(n) ? shown.none() : { text: String(n), json: n }),
  str: (s: string | null | undefined): Shown => (s === null || s === undefined ? shown.none() : { text: s, json: s }),
  /** A list of strings: Python repr on the console (`['a', 'b']`), a list in JSON. */
  list: (items: readonly string[] | null | undefined): Shown => (items ? { text: pyRepr(pyFromJs([...items])), json: [...items] } : shown.none()),
  /** An object Barman prints with `str()` in both outputs (Decimal, datetime, namedtuple, Version). */
  object: (text: string | null | undefined): Shown => (text === null || text === undefined ? shown.none() : { text, json: text }),
};

/**
 * Python `str(Decimal(text))` for a PostgreSQL numeric in text form: plain notation while the
 * exponent allows it, scientific otherwise (`0.00000000000000000000` → `0E-20`).
 */
export function pyDecimalStr(text: string): string {
  const m = /^([+-]?)(\d*)(?:\.(\d*))?$/.exec(text.trim());
  if (!m) return text;
  const sign = m[1] === '-' ? '-' : '';
  const frac = m[3] ?? '';
  const coeff = `${m[2] ?? ''}${frac}`.replace(/^0+(?=\d)/, '') || '0';
  const exp = -frac.length;
  const adjusted = exp + coeff.length - 1;
  if (exp <= 0 && adjusted >= -6) {
    if (exp === 0) return sign + coeff;
    const point = coeff.length + exp;
    return sign + (point > 0 ? `${coeff.slice(0, point)}.${coeff.slice(point)}` : `0.${'0'.repeat(-point)}${coeff}`);
  }
  const mantissa = coeff.length > 1 ? `${coeff[0]}.${coeff.slice(1)}` : coeff;
  return `${sign}${mantissa}E${adjusted >= 0 ? '+' : '-'}${Math.abs(adjusted)}`;
}

/**
 * Python `str(datetime)` of a timestamptz that PostgreSQL printed as text (ISO DateStyle):
 * microseconds with six digits when not zero, the offset as `+HH:MM`.
 */
export function pyTimestamptzStr(text: string): string {
  const m = /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(\d+))?([+-]\d\d)(?::?(\d\d))?(?::?(\d\d))?$/.exec(text.trim());
  if (!m) return text;
  const micro = m[2] && /[1-9]/.test(m[2]) ? `.${m[2].padEnd(6, '0').slice(0, 6)}` : '';
  return `${m[1]}${micro}${m[3]}:${m[4] ?? '00'}${m[5] ? `:${m[5]}` : ''}`;
}

/** `15.18` from `pg_basebackup (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`. */
export function clientVersionText(versionOutput: string): string | null {
  const words = versionOutput.replace(/\s*\([^)]*\)/g, '').trim().split(/\s+/);
  const v = words[1];
  return v && /^\d+(\.\d+|devel|beta|alpha|rc)/.test(v) ? v : null;
}

/** `a <= b` for dotted versions (`15` <= `15.18`). */
function versionLe(a: string, b: string): boolean {
  const pa = a.split('.').map((x) => parseInt(x, 10) || 0);
  const pb = b.split('.').map((x) => parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? 0;
    const y = pb[i] ?? 0;
    if (x !== y) return x < y;
  }
  return true;
}

/** PostgreSQL's major version as Barman compares it: `15`, or `9.6` before 10. */
function majorVersionText(versionNum: number): string {
  return versionNum >= 100000 ? String(Math.floor(versionNum / 10000)) : `${Math.floor(versionNum / 10000)}.${Math.floor(versionNum / 100) % 100}`;
}

const MINIMAL_VERSION = 90600;

export type RemoteStatus = Map<string, Shown>;

interface Context {
  srv: ServerConfig;
  timeoutMs: number;
  out: RemoteStatus;
  /** Major version seen on the streaming connection (what client programs must match). */
  streamingMajor: string | null;
  syncNames: string[] | null;
}

/** Ask everything Barman asks; never throws. */
export async function fetchRemoteStatus(srv: ServerConfig, timeoutMs = 30000): Promise<RemoteStatus> {
  const ctx: Context = { srv, timeoutMs, out: new Map(), streamingMajor: null, syncNames: null };
  await postgresStatus(ctx);
  if (srv.backup_method === 'postgres' || srv.streaming_archiver) await streamingStatus(ctx);
  if (srv.streaming_archiver) {
    const client = await clientProgram(ctx, 'pg_receivewal', 'pg_receivexlog');
    if (client) {
      const { version } = client;
      const pgMajor = ctx.streamingMajor;
      if (version !== null && pgMajor !== null) {
        const compatible = versionLe('9.3', pgMajor) && versionLe(pgMajor, version);
        ctx.out.set('pg_receivexlog_compatible', shown.bool(compatible));
        ctx.out.set('pg_receivexlog_supports_slots', shown.bool(compatible && versionLe('9.4', pgMajor)));
        const names = ctx.syncNames;
        const sync = compatible && versionLe('9.4', pgMajor) && versionLe('9.5', version)
          ? names === null ? null : names.includes('*') || names.includes(srv.streaming_archiver_name ?? '')
          : false;
        ctx.out.set('pg_receivexlog_synchronous', shown.bool(sync));
      }
    }
  }
  if (srv.backup_method === 'postgres') {
    const client = await clientProgram(ctx, 'pg_basebackup', 'pg_basebackup');
    if (client) {
      ctx.out.set('pg_basebackup_bwlimit', shown.bool(client.version === null || versionLe('9.4', client.version)));
      ctx.out.set('pg_basebackup_tbls_mapping', shown.bool(client.version !== null && versionLe('9.4', client.version)));
      if (client.version !== null && ctx.streamingMajor !== null) {
        ctx.out.set('pg_basebackup_compatible', shown.bool(versionLe('9.2', ctx.streamingMajor) && versionLe(ctx.streamingMajor, client.version)));
      }
    }
  }
  return ctx.out;
}

/** The main connection's facts (and pg_stat_archiver with `archiver = on`). */
async function postgresStatus(ctx: Context): Promise<void> {
  const { out, srv } = ctx;
  const POSTGRES_KEYS = ['data_directory', 'server_txt_version', 'is_superuser', 'is_in_recovery', 'current_xlog', 'replication_slot_support', 'replication_slot', 'synchronous_standby_names', 'postgres_systemid', 'version_supported'];
  for (const k of POSTGRES_KEYS) out.set(k, shown.none());
  if (srv.archiver) for (const k of ['archive_mode', 'archive_command']) out.set(k, shown.none());
  if (!srv.conninfo) return;
  let conn: PgConnection;
  try {
    conn = await PgConnection.connect(srv.conninfo, { applicationName: 'barman', timeoutMs: connectTimeout(srv.conninfo, ctx.timeoutMs) });
  } catch {
    return;
  }
  // One fact failing (a missing privilege) leaves that value None, as Barman's getters do.
  const get = async <T>(fn: () => Promise<T>): Promise<T | null> => {
    try {
      return await fn();
    } catch {
      return null;
    }
  };
  const show = (name: string) => get(() => conn.value<string>(`SHOW ${quoteIdent(name)}`));
  const intSetting = async (name: string) => {
    const v = await get(() => conn.setting(name));
    return v === null ? null : parseInt(v, 10);
  };
  try {
    const versionNum = await conn.serverVersion();
    for (const name of ['wal_level', 'hot_standby', 'max_wal_senders', 'data_checksums', 'max_replication_slots', 'wal_compression']) out.set(name, shown.str(await show(name)));
    const keep = versionNum < 130000 ? 'wal_keep_segments' : 'wal_keep_size';
    out.set(keep, shown.str(await show(keep)));
    const privileged = (await get(() => conn.hasBackupPrivileges())) ?? false;
    if (privileged) out.set('data_directory', shown.str(await show('data_directory')));
    out.set('is_superuser', shown.bool(await get(() => conn.isSuperuser())));
    out.set('has_backup_privileges', shown.bool(privileged));
    const inRecovery = await get(() => conn.isInRecovery());
    out.set('is_in_recovery', shown.bool(inRecovery));
    const txt = await get(async () => String(await conn.value<string>('SELECT version()')).split(/\s+/)[1] ?? null);
    out.set('server_txt_version', shown.str(txt));
    out.set('version_supported', shown.bool(versionNum >= MINIMAL_VERSION));
    const pos = await get(() =>
      conn.query<{ lsn: string; file: string | null }>(
        inRecovery
          ? 'SELECT pg_last_wal_replay_lsn()::text AS lsn, NULL::text AS file'
          : 'SELECT pg_current_wal_lsn()::text AS lsn, pg_walfile_name(pg_current_wal_lsn()) AS file',
      ),
    );
    out.set('current_lsn', shown.str(pos?.[0]?.lsn ?? null));
    out.set('current_xlog', shown.str(pos?.[0]?.file ?? null));
    const size = privileged ? await get(() => conn.value<string>('SELECT sum(pg_tablespace_size(oid))::text FROM pg_tablespace')) : null;
    out.set('current_size', shown.object(size));
    out.set('archive_timeout', shown.int(await intSetting('archive_timeout')));
    out.set('checkpoint_timeout', shown.int(await intSetting('checkpoint_timeout')));
    const segment = await intSetting('wal_segment_size');
    out.set('xlog_segment_size', shown.int(segment !== null && versionNum < 110000 ? segment * ((await intSetting('wal_block_size')) ?? 8192) : segment));
    const files = await get(() => conn.query<{ name: string; setting: string }>("SELECT name, setting FROM pg_settings WHERE name IN ('config_file', 'hba_file', 'ident_file')"));
    for (const f of files ?? []) out.set(f.name, shown.str(f.setting));
    const included = await get(() =>
      conn.query<{ f: string }>(
        "SELECT DISTINCT sourcefile AS f FROM pg_settings WHERE sourcefile IS NOT NULL AND sourcefile <> current_setting('config_file') ORDER BY 1",
      ),
    );
    if (included && included.length > 0) out.set('included_files', shown.list(included.map((r) => r.f)));
    out.set('replication_slot_support', shown.bool(true));
    if (srv.slot_name) {
      const slot = await get(() =>
        conn.query<{ slot_name: string; active: boolean; restart_lsn: string | null }>(
          "SELECT slot_name, active, restart_lsn::text AS restart_lsn FROM pg_replication_slots WHERE slot_type = 'physical' AND slot_name = $1",
          [srv.slot_name],
        ),
      );
      const r = slot?.[0];
      // A psycopg2 named tuple, as Barman shows it.
      out.set('replication_slot', r ? shown.object(`Record(slot_name=${pyRepr(r.slot_name)}, active=${r.active ? 'True' : 'False'}, restart_lsn=${r.restart_lsn === null ? 'None' : pyRepr(r.restart_lsn)})`) : shown.none());
    }
    const sync = await show('synchronous_standby_names');
    ctx.syncNames = sync === null ? [] : standbyNames(sync);
    out.set('synchronous_standby_names', shown.list(ctx.syncNames));
    out.set('postgres_systemid', shown.str(await get(() => conn.systemId())));
    if (srv.archiver) await archiverStatus(ctx, conn, show);
  } catch {
    /* the connection went away: what was learnt stays */
  } finally {
    await conn.close();
  }
}

/** Names of `synchronous_standby_names` (`2 (a, "b")` → `['a', 'b']`; empty → `['']`). */
export function standbyNames(setting: string): string[] {
  const open = setting.indexOf('(') + 1;
  const close = setting.lastIndexOf(')');
  const list = setting.slice(open, close < 0 ? setting.length : close);
  return list.split(',').map((x) => x.trim().replace(/^"+|"+$/g, ''));
}

async function archiverStatus(ctx: Context, conn: PgConnection, show: (name: string) => Promise<string | null>): Promise<void> {
  const { out } = ctx;
  out.set('archive_mode', shown.str(await show('archive_mode')));
  out.set('archive_command', shown.str(await show('archive_command')));
  let rows: Record<string, unknown>[];
  try {
    rows = await conn.query(
      `SELECT archived_count, last_archived_wal, last_archived_time::text AS last_archived_time,
              failed_count, last_failed_wal, last_failed_time::text AS last_failed_time, stats_reset::text AS stats_reset,
              current_setting('archive_mode') IN ('on', 'always')
                AND (last_failed_wal IS NULL
                     OR (last_failed_wal LIKE '%.history' AND left(last_failed_wal, 8) <= left(last_archived_wal, 8))
                     OR last_failed_time <= last_archived_time) AS is_archiving,
              (archived_count::numeric / EXTRACT(EPOCH FROM age(now(), stats_reset)))::text AS rate
         FROM pg_stat_archiver`,
    );
  } catch {
    return;
  }
  const r = rows[0];
  if (!r) return;
  const text = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
  const time = (v: unknown): Shown => shown.object(text(v) === null ? null : pyTimestamptzStr(String(v)));
  out.set('archived_count', shown.int(Number(r.archived_count)));
  out.set('last_archived_wal', shown.str(text(r.last_archived_wal)));
  out.set('last_archived_time', time(r.last_archived_time));
  out.set('failed_count', shown.int(Number(r.failed_count)));
  out.set('last_failed_wal', shown.str(text(r.last_failed_wal)));
  out.set('last_failed_time', time(r.last_failed_time));
  out.set('stats_reset', time(r.stats_reset));
  out.set('is_archiving', shown.bool(r.is_archiving === null ? null : Boolean(r.is_archiving)));
  out.set('current_archived_wals_per_second', shown.object(text(r.rate) === null ? null : pyDecimalStr(String(r.rate))));
}

/** The streaming connection (IDENTIFY_SYSTEM with streaming_conninfo). */
async function streamingStatus(ctx: Context): Promise<void> {
  const { out, srv } = ctx;
  for (const k of ['connection_error', 'streaming_supported', 'streaming', 'streaming_systemid', 'timeline', 'xlogpos', 'version_supported']) out.set(k, shown.none());
  const conninfo = srv.streaming_conninfo ?? srv.conninfo ?? '';
  try {
    const id = await identifySystem(conninfo, 'barman', connectTimeout(conninfo, ctx.timeoutMs));
    out.set('version_supported', shown.bool(id.versionNum >= MINIMAL_VERSION));
    if (id.versionNum < MINIMAL_VERSION) return;
    ctx.streamingMajor = majorVersionText(id.versionNum);
    out.set('streaming_supported', shown.bool(true));
    out.set('streaming', shown.bool(true));
    out.set('streaming_systemid', shown.str(id.systemid));
    out.set('timeline', shown.int(id.timeline));
    out.set('xlogpos', shown.str(id.xlogpos));
  } catch (err) {
    out.set('connection_error', shown.str(errorMessage(err)));
  }
}

/** `<label>_installed`, `_path`, `_version` (and the others None until compared). */
async function clientProgram(ctx: Context, program: string, label: string): Promise<{ version: string | null } | null> {
  const { out } = ctx;
  const keys = label === 'pg_basebackup' ? ['compatible', 'installed', 'tbls_mapping', 'path', 'bwlimit', 'version'] : ['compatible', 'installed', 'path', 'supports_slots', 'synchronous', 'version'];
  for (const k of keys) out.set(`${label}_${k}`, shown.none());
  let bin: string;
  try {
    bin = findPgBinary(program, ctx.srv.path_prefix);
  } catch {
    out.set(`${label}_installed`, shown.bool(false));
    return null;
  }
  const res = await run(bin, ['--version'], { timeoutMs: 10000 }).catch(() => null);
  const version = res ? clientVersionText(res.stdout) : null;
  out.set(`${label}_installed`, shown.bool(true));
  out.set(`${label}_path`, shown.str(bin));
  out.set(`${label}_version`, shown.object(version));
  return { version };
}

function connectTimeout(conninfo: string, fallbackMs: number): number {
  try {
    const ci = parseConninfo(conninfo);
    if (ci.connect_timeout) return Math.max(1, Number(ci.connect_timeout)) * 1000;
  } catch {
    /* the connection attempt reports it */
  }
  return fallbackMs;
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
