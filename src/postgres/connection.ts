/**
 * A connection to the PostgreSQL server being backed up, and the facts Barman needs from it.
 * node-postgres is loaded lazily so that commands which never connect start fast.
 */
import type { Client } from 'pg';
import { BarmanError, errorMessage } from '../util/errors.js';
import { parseConninfo, type Conninfo } from './conninfo.js';

export interface Tablespace {
  name: string;
  oid: number;
  location: string;
}

/** node-postgres options from libpq keywords (sslmode and friends are passed through by name). */
function clientConfig(ci: Conninfo, applicationName: string): Record<string, unknown> {
  const cfg: Record<string, unknown> = { application_name: ci.application_name ?? applicationName };
  if (ci.host) cfg.host = ci.host.split(',')[0];
  if (ci.hostaddr && !ci.host) cfg.host = ci.hostaddr;
  if (ci.port) cfg.port = Number(ci.port);
  if (ci.user) cfg.user = ci.user;
  if (ci.password) cfg.password = ci.password;
  cfg.database = ci.dbname ?? ci.user ?? 'postgres';
  if (ci.connect_timeout) cfg.connectionTimeoutMillis = Number(ci.connect_timeout) * 1000;
  if (ci.sslmode && ci.sslmode !== 'disable' && ci.sslmode !== 'allow' && ci.sslmode !== 'prefer') {
    cfg.ssl = ci.sslmode === 'require' ? { rejectUnauthorized: false } : true;
  }
  if (!cfg.host) cfg.host = process.env.PGHOST ?? '/var/run/postgresql';
  return cfg;
}

export class PgConnection {
  private constructor(private readonly client: Client) {}

  static async connect(conninfo: string, applicationName = 'barman', timeoutMs = 30000): Promise<PgConnection> {
    const { default: pg } = await import('pg');
    const ci = parseConninfo(conninfo);
    const cfg = clientConfig(ci, applicationName);
    cfg.connectionTimeoutMillis ??= timeoutMs;
    const client = new pg.Client(cfg);
    client.on('error', () => undefined);
    try {
      await client.connect();
    } catch (err) {
      throw new BarmanError(`cannot connect to PostgreSQL: ${errorMessage(err)}`);
    }
    return new PgConnection(client);
  }

  async close(): Promise<void> {
    await this.client.end().catch(() => undefined);
  }

  async query<T extends Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T[]> {
    const res = await this.client.query(sql, params);
    return res.rows as T[];
  }

  async value<T>(sql: string, params: unknown[] = []): Promise<T> {
    const rows = await this.query<Record<string, unknown>>(sql, params);
    const row = rows[0];
    if (!row) throw new BarmanError(`query returned no row: ${sql}`);
    return Object.values(row)[0] as T;
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

  /** Superuser, or a member of pg_checkpoint/pg_read_all_settings with backup functions granted. */
  async hasBackupPrivileges(): Promise<boolean> {
    if (await this.isSuperuser()) return true;
    return this.value<boolean>(
      "SELECT has_function_privilege(current_user, 'pg_backup_start(text,bool)', 'EXECUTE') OR pg_has_role(current_user, 'pg_read_all_settings', 'MEMBER')",
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
  const { default: pg } = await import('pg');
  const cfg = clientConfig(parseConninfo(conninfo), applicationName);
  cfg.connectionTimeoutMillis ??= timeoutMs;
  // `replication` is a libpq startup parameter node-postgres passes through but does not type.
  cfg.replication = 'true';
  const client = new pg.Client(cfg);
  client.on('error', () => undefined);
  onClient?.(() => void client.end().catch(() => undefined));
  try {
    await client.connect();
    const res = await client.query('IDENTIFY_SYSTEM');
    const row = (res.rows[0] ?? {}) as { systemid?: unknown; timeline?: unknown; xlogpos?: unknown };
    const version = await client.query('SHOW server_version_num').catch(() => null);
    return {
      systemid: row.systemid != null ? String(row.systemid) : null,
      timeline: row.timeline != null ? Number(row.timeline) : null,
      xlogpos: row.xlogpos != null ? String(row.xlogpos) : null,
      versionNum: Number((version?.rows[0] as { server_version_num?: string } | undefined)?.server_version_num ?? 0),
    };
  } catch (err) {
    if (err instanceof BarmanError) throw err;
    throw new BarmanError(errorMessage(err));
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Open, use, close. */
export async function withConnection<T>(conninfo: string, fn: (c: PgConnection) => Promise<T>, applicationName = 'barman'): Promise<T> {
  const conn = await PgConnection.connect(conninfo, applicationName);
  try {
    return await fn(conn);
  } finally {
    await conn.close();
  }
}
