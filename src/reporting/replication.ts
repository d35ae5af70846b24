/**
 * What `replication-status` reports (spec §4.4): the streaming clients of a server, read from
 * pg_stat_replication (plus the physical slot each walsender uses), and their Barman rendering.
 *
 * A client with a replay position is a hot standby; one without (pg_receivewal, our own
 * receive-wal, pg_basebackup's WAL stream) is a "WAL streamer": only standbys apply WAL.
 */
import type { ServerConfig } from '../config/config.js';
import { PgConnection, statusConnectTimeoutMs } from '../postgres/connection.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { prettySize } from '../util/format.js';
import { parseLsn } from '../wal/names.js';

export type ReplicationTarget = 'all' | 'hot-standby' | 'wal-streamer';
export type ReplicationSource = 'backup-host' | 'wal-host';

export const REPLICATION_TARGETS: readonly ReplicationTarget[] = ['all', 'hot-standby', 'wal-streamer'];
export const REPLICATION_SOURCES: readonly ReplicationSource[] = ['backup-host', 'wal-host'];

/** One row of pg_stat_replication, as text (LSNs as `X/Y`, timestamps in Python `str()` form). */
export interface ReplicationClient {
  pid: number;
  usename: string | null;
  application_name: string;
  /** null for a Unix-socket client. */
  client_addr: string | null;
  client_hostname: string | null;
  client_port: number | null;
  backend_start: string;
  backend_xmin: string | null;
  state: string;
  sent_lsn: string | null;
  write_lsn: string | null;
  flush_lsn: string | null;
  replay_lsn: string | null;
  sync_priority: number;
  sync_state: string;
  slot_name: string | null;
  /** The server's position the differences are measured from (receive position on a standby). */
  current_lsn: string | null;
}

export interface ReplicationStatus {
  /** The primary's current WAL position; null when the server is itself a standby. */
  serverLsn: string | null;
  clients: ReplicationClient[];
}

/**
 * The conninfo to ask: `backup-host` = conninfo; `wal-host` = the WAL-only connection when the
 * server has one (wal_conninfo, which only counts together with wal_streaming_conninfo, else
 * wal_streaming_conninfo itself), falling back to conninfo.
 */
export function replicationConninfo(srv: ServerConfig, source: ReplicationSource): string | null {
  if (source === 'wal-host' && srv.wal_streaming_conninfo) return srv.wal_conninfo ?? srv.wal_streaming_conninfo;
  return srv.conninfo ?? null;
}

function whereClause(target: ReplicationTarget): string {
  // Logical walsenders hold logical slots: they are not streaming clients of the WAL archive.
  const clauses = ["(rs.slot_type IS NULL OR rs.slot_type = 'physical')"];
  if (target === 'hot-standby') clauses.push('r.replay_lsn IS NOT NULL');
  if (target === 'wal-streamer') clauses.push('r.replay_lsn IS NULL');
  return clauses.join(' AND ');
}

/** Python `str(datetime)` built by PostgreSQL: microseconds only when not zero, offset `+HH:MM`. */
const PY_TIMESTAMP = (col: string) =>
  `to_char(${col}, 'YYYY-MM-DD HH24:MI:SS') || CASE WHEN to_char(${col}, 'US') = '000000' THEN '' ELSE '.' || to_char(${col}, 'US') END || to_char(${col}, 'TZH:TZM')`;

const QUERY = (target: ReplicationTarget) => `
SELECT r.pid, r.usename, r.application_name, host(r.client_addr) AS client_addr, r.client_hostname, r.client_port,
       ${PY_TIMESTAMP('r.backend_start')} AS backend_start, r.backend_xmin::text AS backend_xmin, r.state,
       r.sent_lsn::text AS sent_lsn, r.write_lsn::text AS write_lsn, r.flush_lsn::text AS flush_lsn, r.replay_lsn::text AS replay_lsn,
       r.sync_priority, r.sync_state, rs.slot_name,
       (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END)::text AS current_lsn
  FROM pg_stat_replication r
  LEFT JOIN pg_replication_slots rs ON r.pid = rs.active_pid
 WHERE ${whereClause(target)}
 ORDER BY r.sync_state DESC, r.sync_priority`;

/** Ask PostgreSQL. Throws BarmanError (one line, password-free) when it cannot be reached. */
export async function fetchReplicationStatus(
  srv: ServerConfig,
  target: ReplicationTarget = 'all',
  source: ReplicationSource = 'backup-host',
): Promise<ReplicationStatus> {
  const conninfo = replicationConninfo(srv, source);
  if (!conninfo) throw new BarmanError(`No conninfo configured for server ${srv.name}`);
  let conn: PgConnection;
  try {
    conn = await PgConnection.connect(conninfo, { timeoutMs: statusConnectTimeoutMs(conninfo, srv.check_timeout) });
  } catch (err) {
    throw new BarmanError(`Unable to connect to server ${srv.name}: ${errorMessage(err)}`);
  }
  try {
    const inRecovery = await conn.isInRecovery();
    const serverLsn = inRecovery ? null : await conn.value<string>('SELECT pg_current_wal_lsn()::text');
    const rows = await conn.query<Record<string, unknown>>(QUERY(target));
    return { serverLsn, clients: rows.map(toClient) };
  } catch (err) {
    if (err instanceof BarmanError) throw err;
    throw new BarmanError(`Cannot read the replication status of server ${srv.name}: ${errorMessage(err)}`);
  } finally {
    await conn.close();
  }
}

const str = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));

function toClient(r: Record<string, unknown>): ReplicationClient {
  return {
    pid: Number(r.pid),
    usename: str(r.usename),
    application_name: str(r.application_name) ?? '',
    client_addr: str(r.client_addr),
    client_hostname: str(r.client_hostname),
    client_port: r.client_port === null || r.client_port === undefined ? null : Number(r.client_port),
    backend_start: str(r.backend_start) ?? '',
    backend_xmin: str(r.backend_xmin),
    state: str(r.state) ?? '',
    sent_lsn: str(r.sent_lsn),
    write_lsn: str(r.write_lsn),
    flush_lsn: str(r.flush_lsn),
    replay_lsn: str(r.replay_lsn),
    sync_priority: Number(r.sync_priority ?? 0),
    sync_state: str(r.sync_state) ?? '',
    slot_name: str(r.slot_name),
    current_lsn: str(r.current_lsn),
  };
}

// ---------------------------------------------------------------------------------------------
// Rendering (pure)

export function targetTitle(target: ReplicationTarget): string {
  if (target === 'hot-standby') return 'hot standby servers';
  if (target === 'wal-streamer') return 'WAL streamers';
  return 'streaming clients';
}

export function isWalStreamer(c: ReplicationClient): boolean {
  return !c.replay_lsn;
}

/** `lsn - current` in bytes (<= 0 when behind), or null when either side is unknown. */
export function lsnDiff(lsn: string | null, current: string | null): number | null {
  if (!lsn || !current) return null;
  try {
    return Number(parseLsn(lsn) - parseLsn(current));
  } catch {
    return null;
  }
}

export interface ClientDiffs {
  sent: number | null;
  write: number | null;
  flush: number | null;
  replay: number | null;
}

export function clientDiffs(c: ReplicationClient): ClientDiffs {
  return {
    sent: lsnDiff(c.sent_lsn, c.current_lsn),
    write: lsnDiff(c.write_lsn, c.current_lsn),
    flush: lsnDiff(c.flush_lsn, c.current_lsn),
    replay: lsnDiff(c.replay_lsn, c.current_lsn),
  };
}

/**
 * How far the client has got with the server's latest WAL: 5 levels for a standby (it also
 * flushes and replays), 3 for a WAL streamer.
 */
export function syncStage(c: ReplicationClient): string {
  const d = clientDiffs(c);
  const streamer = isWalStreamer(c);
  const max = streamer ? 3 : 5;
  if (!streamer) {
    if (d.replay === 0) return '5/5 Hot standby (max)';
    if (d.flush === 0) return '4/5 2-safe';
  }
  if (d.write === 0) return `3/${max} Remote write`;
  if (d.sent === 0) return `2/${max} WAL Sent (min)`;
  return `1/${max} 1-safe`;
}

const capitalize = (s: string): string => (s === '' ? s : s[0]!.toUpperCase() + s.slice(1).toLowerCase());

/** `#1 Sync standby`, `Async WAL streamer`. */
export function clientLabel(c: ReplicationClient): string {
  const kind = isWalStreamer(c) ? 'WAL streamer' : 'standby';
  const prio = c.sync_priority > 0 ? `#${c.sync_priority} ` : '';
  return `${prio}${capitalize(c.sync_state)} ${kind}`;
}

const text = (v: unknown): string => (v === null || v === undefined ? 'None' : String(v));
const diffText = (d: number | null): string => (d === null ? 'None' : prettySize(d));

/** The console lines of one server (Barman's exact shapes). */
export function renderReplicationConsole(server: string, target: ReplicationTarget, status: ReplicationStatus, minimal: boolean): string[] {
  const title = targetTitle(target);
  const out: string[] = [];
  if (minimal) {
    // Python's str.capitalize(): "WAL streamers" becomes "Wal streamers", as Barman prints it.
    out.push(status.serverLsn ? `${capitalize(title)} for master '${server}' (LSN @ ${status.serverLsn}):` : `${capitalize(title)} for slave '${server}':`);
  } else {
    out.push(`Status of ${title} for server '${server}':`);
    if (status.serverLsn) out.push(`  Current LSN on master: ${status.serverLsn}`);
  }
  if (status.clients.length === 0) {
    out.push(`  No ${title} attached`);
    return out;
  }
  if (minimal) {
    status.clients.forEach((c, i) => {
      const who = `${text(c.usename)}@${c.client_addr || 'socket'}`;
      if (isWalStreamer(c)) {
        out.push(`  ${i + 1}. W) ${who} S:${text(c.sent_lsn)} W:${text(c.write_lsn)} P:${c.sync_priority} AN:${c.application_name}`);
      } else {
        const st = (c.sync_state[0] ?? '?').toUpperCase();
        out.push(`  ${i + 1}. ${st}) ${who} S:${text(c.sent_lsn)} F:${text(c.flush_lsn)} R:${text(c.replay_lsn)} P:${c.sync_priority} AN:${c.application_name}`);
      }
    });
    return out;
  }
  out.push(`  Number of ${title}: ${status.clients.length}`);
  status.clients.forEach((c, i) => {
    const d = clientDiffs(c);
    out.push('');
    out.push(`  ${i + 1}. ${clientLabel(c)}`);
    out.push(`     Application name: ${c.application_name}`);
    out.push(`     Sync stage      : ${syncStage(c)}`);
    if (c.client_addr) {
      out.push('     Communication   : TCP/IP');
      out.push(`     IP Address      : ${c.client_addr} / Port: ${text(c.client_port)} / Host: ${c.client_hostname || '-'}`);
    } else {
      out.push('     Communication   : Unix domain socket');
    }
    out.push(`     User name       : ${text(c.usename)}`);
    out.push(`     Current state   : ${c.state} (${c.sync_state})`);
    if (c.slot_name) out.push(`     Replication slot: ${c.slot_name}`);
    out.push(`     WAL sender PID  : ${c.pid}`);
    out.push(`     Started at      : ${c.backend_start}`);
    if (c.backend_xmin) out.push(`     Standby's xmin  : ${c.backend_xmin}`);
    if (c.sent_lsn) out.push(`     Sent LSN   : ${c.sent_lsn} (diff: ${diffText(d.sent)})`);
    if (c.write_lsn) out.push(`     Write LSN  : ${c.write_lsn} (diff: ${diffText(d.write)})`);
    if (c.flush_lsn) out.push(`     Flush LSN  : ${c.flush_lsn} (diff: ${diffText(d.flush)})`);
    if (c.replay_lsn) out.push(`     Replay LSN : ${c.replay_lsn} (diff: ${diffText(d.replay)})`);
  });
  return out;
}

/** The JSON value of one server: `{server_lsn, <title_key>: [...]}` (+ `standby_info` when empty). */
export function replicationJson(target: ReplicationTarget, status: ReplicationStatus, minimal: boolean): Record<string, unknown> {
  const title = targetTitle(target);
  const key = title.toLowerCase().replace(/ /g, '_');
  const doc: Record<string, unknown> = { server_lsn: status.serverLsn, [key]: [] };
  if (status.clients.length === 0) {
    doc.standby_info = `No ${title} attached`;
    return doc;
  }
  doc[key] = status.clients.map((c) => {
    const base = {
      user_name: c.usename,
      client_addr: c.client_addr || 'socket',
      sent_lsn: c.sent_lsn,
      sync_priority: c.sync_priority,
      application_name: c.application_name,
    };
    if (minimal) {
      return isWalStreamer(c)
        ? { ...base, write_lsn: c.write_lsn }
        : { ...base, sync_state: (c.sync_state[0] ?? '?').toUpperCase(), flush_lsn: c.flush_lsn, replay_lsn: c.replay_lsn };
    }
    const d = clientDiffs(c);
    const o: Record<string, unknown> = { name: clientLabel(c), application_name: c.application_name, sync_stage: syncStage(c) };
    if (c.client_addr) Object.assign(o, { communication: 'TCP/IP', ip_address: c.client_addr, port: c.client_port, host: c.client_hostname || null });
    else o.communication = 'Unix domain socket';
    Object.assign(o, { user_name: c.usename, current_state: c.state, current_sync_state: c.sync_state });
    if (c.slot_name) o.replication_slot = c.slot_name;
    Object.assign(o, { wal_sender_pid: c.pid, started_at: c.backend_start });
    if (c.backend_xmin) o.standbys_xmin = c.backend_xmin;
    for (const [k, lsn] of [['sent', c.sent_lsn], ['write', c.write_lsn], ['flush', c.flush_lsn], ['replay', c.replay_lsn]] as const) {
      if (!lsn) continue;
      const diff = d[k];
      Object.assign(o, { [`${k}_lsn`]: lsn, [`${k}_lsn_diff`]: diffText(diff), [`${k}_lsn_diff_bytes`]: diff });
    }
    return o;
  });
  return doc;
}
