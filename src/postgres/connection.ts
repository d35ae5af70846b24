/**
 * A connection to the PostgreSQL server being backed up, and the facts Barman needs from it.
 *
 * It goes through libpq itself (pg-native, node-postgres' libpq binding): the user's conninfo
 * is handed to PQconnectdb as written, so every keyword and PG* environment variable means
 * exactly what it means to pg_basebackup and pg_receivewal, which read the same string (TLS
 * modes and certificates, service files, pgpass, several hosts with target_session_attrs,
 * keepalives, GSSAPI). We only append application_name when the user set none, as Barman does.
 *
 * pg-native is loaded lazily so that commands which never connect start fast.
 */
import type NativeClient from 'pg-native';
import { BarmanError, errorMessage } from '../util/errors.js';
import { logger } from '../util/log.js';
import { appendParams, parseConninfo, type Conninfo } from './conninfo.js';

const log = logger('postgres');

export interface Tablespace {
  name: string;
  oid: number;
  location: string;
}

export interface ConnectOptions {
  /** application_name unless the conninfo sets one (Barman's rule). Default `barman`. */
  applicationName?: string;
  /**
   * Give up connecting after this long (the checks' and status' budget). Without it, connecting
   * takes as long as libpq takes (connect_timeout, the OS's TCP timeouts), as for pg_basebackup.
   */
  timeoutMs?: number;
  /** Keywords appended after the user's (e.g. `replication: 'true'`): they win. */
  extra?: Conninfo;
}

/** libpq messages span lines (one per host tried, hints on tab-indented lines): one line for the user. */
export function oneLine(message: string): string {
  return message
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .join(' ');
}

/**
 * A statement's error as libpq words it (`ERROR:  primary\nDETAIL: ...\nLINE 1: ...`): the
 * primary message without its severity, as node-postgres gave it.
 */
export function queryErrorLine(message: string): string {
  const first = message.split('\n').find((l) => l.trim() !== '') ?? message;
  return first.replace(/^(ERROR|FATAL|PANIC):\s+/, '').trim();
}

/** Query parameters as libpq text values (pg-native passes them through as strings). */
function textParams(params: readonly unknown[]): (string | null)[] {
  return params.map((p) => (p === null || p === undefined ? null : p instanceof Date ? p.toISOString() : String(p)));
}

/**
 * The keywords we add to the user's conninfo: application_name when the user set none
 * (Barman's rule), and connect_timeout when we bound the connection attempt and nothing the
 * user wrote (conninfo, PGCONNECT_TIMEOUT, a service) says how long libpq may wait: libpq
 * would otherwise keep a thread-pool thread busy, and the process alive, after we gave up.
 */
export function connectParams(conninfo: string, opts: ConnectOptions, env: NodeJS.ProcessEnv = process.env): Conninfo {
  const ci = parseConninfo(conninfo);
  const params: Conninfo = {};
  if (ci.application_name === undefined) params.application_name = opts.applicationName ?? 'barman';
  const userDecides = ci.connect_timeout !== undefined || env.PGCONNECT_TIMEOUT !== undefined || ci.service !== undefined || env.PGSERVICE !== undefined;
  if (opts.timeoutMs !== undefined && !userDecides) {
    // libpq takes 1 as 2 (its minimum); per host, so several hosts may each use it.
    params.connect_timeout = String(Math.max(2, Math.ceil(opts.timeoutMs / 1000)));
  }
  return { ...params, ...(opts.extra ?? {}) };
}

/**
 * How long status-like commands wait for a connection: as long as libpq takes when the user set
 * connect_timeout (libpq applies it to each host in turn), else check_timeout capped at 30 s.
 */
export function statusConnectTimeoutMs(conninfo: string, checkTimeoutSec: number): number | undefined {
  try {
    if (parseConninfo(conninfo).connect_timeout !== undefined) return undefined;
  } catch {
    /* the connection attempt reports the bad conninfo */
  }
  return Math.min(Math.max(checkTimeoutSec || 30, 1), 30) * 1000;
}

type LostListener = (err: BarmanError) => void;

export class PgConnection {
  /** Set once the connection is gone: every later query fails with it. */
  private lostError: BarmanError | null = null;
  private readonly lostListeners = new Set<LostListener>();
  /** Queries run one at a time on a libpq connection. */
  private queue: Promise<unknown> = Promise.resolve();
  /** Fails the query in flight (pg-native never answers it once the socket is gone or closed). */
  private failPending: ((err: BarmanError) => void) | null = null;
  private closed = false;

  private constructor(private readonly client: NativeClient) {
    // pg-native reports a broken socket (EOF, reset) as an 'error' event, while idle as during a
    // query, and leaves a pending query without an answer: we fail it here.
    client.on('error', (err: Error) => this.markLost(err));
  }

  static async connect(conninfo: string, opts: ConnectOptions = {}): Promise<PgConnection> {
    const params = connectParams(conninfo, opts);
    const { default: Client } = await import('pg-native');
    const client = new Client();
    const full = appendParams(conninfo, params);
    await new Promise<void>((resolve, reject) => {
      let timedOut = false;
      const timer =
        opts.timeoutMs === undefined
          ? null
          : setTimeout(() => {
              timedOut = true;
              reject(new BarmanError(`cannot connect to PostgreSQL: timeout expired after ${Math.round((opts.timeoutMs ?? 0) / 1000)} s`));
            }, opts.timeoutMs);
      client.connect(full, (err) => {
        if (timer) clearTimeout(timer);
        // PQconnectdb runs in the thread pool and cannot be interrupted: a late one is closed here.
        if (err || timedOut) client.end();
        if (timedOut) return;
        if (err) reject(new BarmanError(`cannot connect to PostgreSQL: ${oneLine(err.message)}`));
        else resolve();
      });
    });
    const conn = new PgConnection(client);
    // A replication connection (replication=true) takes replication commands only.
    const replication = { ...parseConninfo(conninfo), ...(opts.extra ?? {}) }.replication;
    if (replication !== undefined && !/^(0|false|off|no|)$/i.test(replication)) return conn;
    try {
      // Barman's secure schema usage pattern: nothing the database's users create can shadow
      // the functions we call (pg_catalog is always searched first).
      await conn.query("SELECT pg_catalog.set_config('search_path', '', false)");
    } catch (err) {
      await conn.close();
      throw new BarmanError(`cannot connect to PostgreSQL: ${errorMessage(err)}`);
    }
    return conn;
  }

  private markLost(err: Error): void {
    if (this.lostError || this.closed) return;
    this.lostError = new BarmanError(`connection to PostgreSQL lost: ${queryErrorLine(err.message) || 'server closed the connection'}`);
    log.warning(this.lostError.message);
    this.failPending?.(this.lostError);
    for (const fn of this.lostListeners) fn(this.lostError);
    this.lostListeners.clear();
  }

  /** `fn` is told once if the connection breaks (now or later); returns the unsubscribe. */
  onLost(fn: LostListener): () => void {
    if (this.lostError) {
      fn(this.lostError);
      return () => undefined;
    }
    this.lostListeners.add(fn);
    return () => this.lostListeners.delete(fn);
  }

  get lost(): BarmanError | null {
    return this.lostError;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.lostListeners.clear();
    this.failPending?.(new BarmanError('the PostgreSQL connection was closed'));
    this.client.end();
  }

  /** Run one statement; without `params` it goes as a simple query (replication connections need that). */
  query<T extends Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]> {
    const run = (): Promise<T[]> =>
      new Promise<T[]>((resolve, reject) => {
        if (this.lostError) return reject(this.lostError);
        if (this.closed) return reject(new BarmanError('the PostgreSQL connection was closed'));
        let settled = false;
        let watchdog: NodeJS.Timeout | undefined;
        const settle = (fn: () => void) => {
          if (settled) return;
          settled = true;
          clearInterval(watchdog);
          this.failPending = null;
          fn();
        };
        this.failPending = (err) => settle(() => reject(err));
        // pg-native waits for libuv to say the socket is readable; libuv reports a socket error
        // (a reset: the server closed the session while the query was on its way) as an error
        // status that the libpq binding ignores, and the query would wait forever. Once a second,
        // while pg-native waits for an answer, it is made to read: on a dead connection libpq then
        // reports the error (pg-native emits 'error'); on a live one nothing changes.
        watchdog = setInterval(() => {
          if (this.client.pq.socket() < 0) {
            clearInterval(watchdog);
            this.markLost(new Error(this.client.pq.errorMessage() || 'server closed the connection'));
          } else if (this.client._reading) {
            this.client.pq.emit('readable');
          }
        }, 1000);
        watchdog.unref();
        // pg-native hands some failures (a flush on a dead socket) over as a bare string.
        const done = (err: Error | string | null | undefined, rows: Record<string, unknown>[]) =>
          settle(() => {
            if (this.lostError) reject(this.lostError);
            else if (err) reject(new BarmanError(queryErrorLine(typeof err === 'string' ? err : String(err.message)) || 'query failed'));
            else resolve(rows as T[]);
          });
        if (params === undefined) this.client.query(sql, done);
        else this.client.query(sql, textParams(params), done);
      });
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  async value<T>(sql: string, params?: unknown[]): Promise<T> {
    const rows = await this.query<Record<string, unknown>>(sql, params);
    const row = rows[0];
    if (!row) throw new BarmanError(`query returned no row: ${sql}`);
    return Object.values(row)[0] as T;
  }

  /**
   * Barman's keepalive_interval: a trivial query every `intervalMs` while the session would
   * otherwise sit idle (the concurrent backup of an rsync copy), so that no firewall or idle
   * timeout drops it, and so that a broken connection is noticed now rather than at
   * pg_backup_stop. A heartbeat with no answer within max(2 intervals, 60 s) counts as a lost
   * connection (a dead peer that sends no reset). Returns the function that stops it.
   */
  startKeepalive(intervalMs: number): () => void {
    if (!(intervalMs > 0)) return () => undefined;
    const answerWithinMs = Math.max(2 * intervalMs, 60_000);
    let stopped = false;
    const beat = async () => {
      if (stopped || this.failPending !== null || this.lostError || this.closed) return;
      const deadline = setTimeout(() => this.markLost(new Error(`no answer to the keepalive query within ${Math.round(answerWithinMs / 1000)} s`)), answerWithinMs);
      try {
        await this.query('SELECT 1');
      } catch (err) {
        // A session that cannot answer SELECT 1 cannot stop the backup either.
        this.markLost(err instanceof Error ? err : new Error(String(err)));
      } finally {
        clearTimeout(deadline);
      }
    };
    const timer = setInterval(() => void beat(), intervalMs);
    timer.unref();
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }

  async setting(name: string): Promise<string | null> {
    const rows = await this.query<{ setting: string }>('SELECT setting FROM pg_settings WHERE name = $1', [name]);
    return rows[0]?.setting ?? null;
  }

  async serverVersion(): Promise<number> {
    return Number(await this.value<string>("SELECT current_setting('server_version_num')"));
  }

  async isInRecovery(): Promise<boolean> {
    return this.value<boolean>('SELECT pg_is_in_recovery()');
  }

  async systemId(): Promise<string> {
    return String(await this.value<string>('SELECT system_identifier::text FROM pg_control_system()'));
  }

  async isSuperuser(): Promise<boolean> {
    return this.value<boolean>('SELECT rolsuper FROM pg_roles WHERE rolname = current_user');
  }

  /**
   * Superuser, or (as Barman checks it) a member of pg_monitor (or pg_read_all_settings and
   * pg_read_all_stats) allowed to run the backup start/stop functions of this version,
   * pg_switch_wal and pg_create_restore_point.
   */
  async hasBackupPrivileges(version?: number): Promise<boolean> {
    if (await this.isSuperuser()) return true;
    const v = version ?? (await this.serverVersion());
    const fn = (sig: string) => `has_function_privilege(current_user, '${sig}', 'EXECUTE')`;
    const start = v >= 150000 ? fn('pg_backup_start(text,bool)') : fn('pg_start_backup(text,bool,bool)');
    const stop = v >= 150000 ? fn('pg_backup_stop(bool)') : `(${fn('pg_stop_backup()')} OR ${fn('pg_stop_backup(bool,bool)')})`;
    return this.value<boolean>(
      `SELECT (pg_has_role(current_user, 'pg_monitor', 'MEMBER')
               OR (pg_has_role(current_user, 'pg_read_all_settings', 'MEMBER') AND pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER')))
          AND ${start} AND ${stop} AND ${fn('pg_switch_wal()')} AND ${fn('pg_create_restore_point(text)')}`,
    ).catch(() => false);
  }

  async tablespaces(): Promise<Tablespace[]> {
    const rows = await this.query<{ spcname: string; oid: number; location: string }>(
      "SELECT spcname, oid::int AS oid, pg_tablespace_location(oid) AS location FROM pg_tablespace WHERE pg_tablespace_location(oid) <> '' ORDER BY oid",
    );
    return rows.map((r) => ({ name: r.spcname, oid: Number(r.oid), location: r.location }));
  }

  async clusterSize(): Promise<number> {
    return Number(await this.value<string>('SELECT sum(pg_database_size(oid))::bigint::text FROM pg_database'));
  }

  /** Sum of pg_tablespace_size over all tablespaces: what Barman reports as the data size. */
  async tablespacesSize(): Promise<number> {
    return Number(await this.value<string>('SELECT sum(pg_tablespace_size(oid))::bigint::text FROM pg_tablespace'));
  }

  async currentLsn(): Promise<string> {
    return this.value<string>(
      'SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END::text',
    );
  }

  async currentWalFile(): Promise<string | null> {
    if (await this.isInRecovery()) return null;
    return this.value<string>('SELECT pg_walfile_name(pg_current_wal_lsn())');
  }

  /** pg_switch_wal(); returns the name of the file that was closed, or null if nothing to switch. */
  async switchWal(): Promise<{ closed: string | null; before: string; after: string }> {
    const before = await this.value<string>('SELECT pg_walfile_name(pg_current_wal_insert_lsn())');
    const lsn = await this.value<string>('SELECT pg_switch_wal()::text');
    const after = await this.value<string>('SELECT pg_walfile_name(pg_current_wal_insert_lsn())');
    return { closed: before !== after ? before : null, before, after: after ?? lsn };
  }

  async checkpoint(): Promise<void> {
    await this.query('CHECKPOINT');
  }

  /**
   * Start a concurrent (non-exclusive) backup: pg_backup_start on 15+, pg_start_backup(.., false)
   * before. The backup belongs to this session: it must stay open until stopBackup, and closing
   * it aborts the backup on the server. Returns the start LSN.
   */
  async startBackup(label: string, fast: boolean, version: number): Promise<string> {
    const sql = version >= 150000 ? 'SELECT pg_backup_start($1, $2)::text AS lsn' : 'SELECT pg_start_backup($1, $2, false)::text AS lsn';
    return this.value<string>(sql, [label, fast]);
  }

  /**
   * Stop the concurrent backup of this session without waiting for the archiver (Barman archives
   * the WAL itself). Returns the end LSN and the backup_label / tablespace_map contents.
   */
  async stopBackup(version: number): Promise<{ lsn: string; labelfile: string; spcmapfile: string }> {
    const fn = version >= 150000 ? 'pg_backup_stop(false)' : version >= 100000 ? 'pg_stop_backup(false, false)' : 'pg_stop_backup(false)';
    const rows = await this.query<{ lsn: string; labelfile: string | null; spcmapfile: string | null }>(
      `SELECT lsn::text AS lsn, labelfile, spcmapfile FROM ${fn}`,
    );
    const r = rows[0];
    if (!r) throw new BarmanError(`${fn} returned no row`);
    return { lsn: r.lsn, labelfile: r.labelfile ?? '', spcmapfile: r.spcmapfile ?? '' };
  }

  async replicationSlot(name: string): Promise<{ active: boolean; restartLsn: string | null } | null> {
    const rows = await this.query<{ active: boolean; restart_lsn: string | null }>(
      'SELECT active, restart_lsn::text AS restart_lsn FROM pg_replication_slots WHERE slot_name = $1',
      [name],
    );
    const r = rows[0];
    return r ? { active: r.active, restartLsn: r.restart_lsn } : null;
  }
}

export interface SystemIdentity {
  systemid: string | null;
  timeline: number | null;
  xlogpos: string | null;
  versionNum: number;
}

/**
 * A replication-protocol handshake: connect with `replication=true` and run IDENTIFY_SYSTEM
 * (what Barman calls the streaming connection check). Throws BarmanError with the driver's
 * message when the connection or the command fails. `onClient` lets a caller close the connection early (check timeouts).
 */
export async function identifySystem(conninfo: string, applicationName: string, timeoutMs: number, onClient?: (close: () => void) => void): Promise<SystemIdentity> {
  const conn = await PgConnection.connect(conninfo, { applicationName, timeoutMs, extra: { replication: 'true' } });
  onClient?.(() => void conn.close());
  try {
    const row = (await conn.query<{ systemid?: unknown; timeline?: unknown; xlogpos?: unknown }>('IDENTIFY_SYSTEM'))[0] ?? {};
    const version = await conn.query<{ server_version_num?: string }>('SHOW server_version_num').catch(() => null);
    return {
      systemid: row.systemid != null ? String(row.systemid) : null,
      timeline: row.timeline != null ? Number(row.timeline) : null,
      xlogpos: row.xlogpos != null ? String(row.xlogpos) : null,
      versionNum: Number(version?.[0]?.server_version_num ?? 0),
    };
  } catch (err) {
    if (err instanceof BarmanError) throw err;
    throw new BarmanError(errorMessage(err));
  } finally {
    await conn.close();
  }
}

/** Open, use, close. */
export async function withConnection<T>(conninfo: string, fn: (c: PgConnection) => Promise<T>, applicationName = 'barman'): Promise<T> {
  const conn = await PgConnection.connect(conninfo, { applicationName });
  try {
    return await fn(conn);
  } finally {
    await conn.close();
  }
}
