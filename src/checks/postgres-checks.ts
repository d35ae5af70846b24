/**
 * The checks that talk to PostgreSQL: the connection, backup privileges, the streaming
 * (replication protocol) connection, wal_level, the standby checks and the replication slot.
 * Facts are gathered once, with every connection bounded by the time left to the run, and
 * handed to the later checks (systemid coherence, archiver checks) that need them too.
 */
import type { ServerConfig } from '../config/config.js';
import { PgConnection, identifySystem } from '../postgres/connection.js';
import { errorMessage } from '../util/errors.js';
import { logger } from '../util/log.js';
import type { CheckCollector } from './types.js';

const log = logger('checks');

export interface ArchiverStats {
  failedCount: number;
  lastFailedWal: string | null;
  lastFailedTime: Date | null;
  lastArchivedWal: string | null;
  lastArchivedTime: Date | null;
}

/** What the checks know about the server; null where it could not be learnt. */
export interface PgFacts {
  connected: boolean;
  connectionError: string | null;
  versionNum: number | null;
  hasBackupPrivileges: boolean | null;
  walLevel: string | null;
  systemId: string | null;
  inRecovery: boolean | null;
  archiveMode: string | null;
  archiveCommand: string | null;
  archiver: ArchiverStats | null;
  /** Current WAL file name on the server (for the timeline of a failing .history file). */
  currentWal: string | null;
  slot: { active: boolean; restartLsn: string | null } | null;
  /** The WAL host (wal_conninfo / wal_streaming_conninfo) could not be asked about the slot. */
  slotError?: string | null;
  /** Streaming connection, when one is configured (backup_method=postgres or streaming_archiver). */
  streaming: { configured: boolean; ok: boolean; error: string | null; systemId: string | null };
}

const emptyFacts = (): PgFacts => ({
  connected: false,
  connectionError: null,
  versionNum: null,
  hasBackupPrivileges: null,
  walLevel: null,
  systemId: null,
  inRecovery: null,
  archiveMode: null,
  archiveCommand: null,
  archiver: null,
  currentWal: null,
  slot: null,
  streaming: { configured: false, ok: false, error: null, systemId: null },
});

async function connectBounded(col: CheckCollector, conninfo: string): Promise<PgConnection> {
  const conn = await PgConnection.connect(conninfo, { applicationName: 'barman_check', timeoutMs: col.remainingMs() });
  col.onAbandon(() => void conn.close());
  return conn;
}

/**
 * The replication slot lives where the WAL is streamed from: wal_conninfo, else
 * wal_streaming_conninfo (Barman's order), else the main connection.
 */
async function slotFacts(col: CheckCollector, srv: ServerConfig, main: PgConnection, slot: string, facts: PgFacts): Promise<PgFacts['slot']> {
  const walConninfo = srv.wal_conninfo ?? srv.wal_streaming_conninfo;
  if (!walConninfo) return main.replicationSlot(slot);
  let walHost: PgConnection | null = null;
  try {
    walHost = await connectBounded(col, walConninfo);
    return await walHost.replicationSlot(slot);
  } catch (err) {
    facts.slotError = errorMessage(err);
    return null;
  } finally {
    await walHost?.close();
  }
}

const toDate = (v: unknown): Date | null => (v instanceof Date ? v : v ? new Date(String(v)) : null);

async function gatherMain(col: CheckCollector, srv: ServerConfig, facts: PgFacts): Promise<void> {
  if (!srv.conninfo) {
    // An empty conninfo would reach whatever libpq's defaults point at.
    facts.connectionError = "'conninfo' not set";
    return;
  }
  let pg: PgConnection;
  try {
    pg = await connectBounded(col, srv.conninfo);
  } catch (err) {
    facts.connectionError = errorMessage(err);
    // The check line carries no hint (as Barman's): the cause goes to the log.
    log.info(`check: ${facts.connectionError}`);
    return;
  }
  try {
    facts.connected = true;
    facts.versionNum = await pg.serverVersion();
    facts.hasBackupPrivileges = await pg.hasBackupPrivileges(facts.versionNum).catch(() => false);
    facts.walLevel = await pg.setting('wal_level');
    facts.systemId = await pg.systemId().catch(() => null);
    facts.inRecovery = await pg.isInRecovery();
    facts.archiveMode = await pg.setting('archive_mode');
    facts.archiveCommand = await pg.setting('archive_command');
    facts.currentWal = await pg.currentWalFile().catch(() => null);
    const rows = await pg
      .query<Record<string, unknown>>('SELECT failed_count, last_failed_wal, last_failed_time, last_archived_wal, last_archived_time FROM pg_stat_archiver')
      .catch(() => []);
    const r = rows[0];
    if (r) {
      facts.archiver = {
        failedCount: Number(r.failed_count ?? 0),
        lastFailedWal: (r.last_failed_wal as string | null) ?? null,
        lastFailedTime: toDate(r.last_failed_time),
        lastArchivedWal: (r.last_archived_wal as string | null) ?? null,
        lastArchivedTime: toDate(r.last_archived_time),
      };
    }
    if (srv.slot_name) facts.slot = await slotFacts(col, srv, pg, srv.slot_name, facts);
  } catch (err) {
    facts.connectionError ??= errorMessage(err);
  } finally {
    await pg.close();
  }
}

/** A replication-protocol handshake (IDENTIFY_SYSTEM) with streaming_conninfo. */
async function gatherStreaming(col: CheckCollector, srv: ServerConfig, facts: PgFacts): Promise<void> {
  facts.streaming.configured = true;
  if (!srv.streaming_conninfo && !srv.conninfo) {
    facts.streaming.error = "'streaming_conninfo' not set";
    return;
  }
  try {
    const id = await identifySystem(srv.streaming_conninfo ?? srv.conninfo ?? '', 'barman_check', col.remainingMs(), (close) => col.onAbandon(close));
    facts.streaming.ok = true;
    facts.streaming.systemId = id.systemid;
  } catch (err) {
    facts.streaming.error = errorMessage(err);
    log.info(`check: streaming connection: ${facts.streaming.error}`);
  }
}

export async function gatherPgFacts(col: CheckCollector, srv: ServerConfig): Promise<PgFacts> {
  const facts = emptyFacts();
  await gatherMain(col, srv, facts);
  if (srv.backup_method === 'postgres' || srv.streaming_archiver) await gatherStreaming(col, srv, facts);
  return facts;
}

export interface PrimaryFacts {
  connected: boolean;
  error: string | null;
  inRecovery: boolean | null;
  systemId: string | null;
}

export async function gatherPrimaryFacts(col: CheckCollector, primaryConninfo: string): Promise<PrimaryFacts> {
  try {
    const pg = await connectBounded(col, primaryConninfo);
    try {
      return { connected: true, error: null, inRecovery: await pg.isInRecovery(), systemId: await pg.systemId() };
    } finally {
      await pg.close();
    }
  } catch (err) {
    return { connected: false, error: errorMessage(err), inRecovery: null, systemId: null };
  }
}

type Line = { name: string; ok: boolean; hint: string };

/**
 * The standby checks (primary_conninfo set): conninfo must reach a server in recovery,
 * primary_conninfo one that is not, and both must share the system identifier. An unreachable
 * primary fails its checks rather than passing them unverified.
 */
export function standbyCheckLines(standby: { inRecovery: boolean | null; systemId: string | null }, primary: PrimaryFacts): Line[] {
  const lines: Line[] = [];
  lines.push(
    standby.inRecovery === true
      ? { name: 'PostgreSQL server is standby', ok: true, hint: '' }
      : { name: 'PostgreSQL server is standby', ok: false, hint: 'conninfo should point to a standby server if primary_conninfo is set' },
  );
  if (!primary.connected) {
    lines.push({ name: 'Primary server is not a standby', ok: false, hint: `cannot connect to the primary server: ${primary.error ?? 'unknown error'}` });
    lines.push({ name: 'Primary and standby have same system ID', ok: false, hint: 'cannot read the system identifier of the primary server' });
    return lines;
  }
  lines.push(
    primary.inRecovery === false
      ? { name: 'Primary server is not a standby', ok: true, hint: '' }
      : { name: 'Primary server is not a standby', ok: false, hint: 'primary_conninfo should point to a primary server, not a standby' },
  );
  const same = standby.systemId !== null && standby.systemId === primary.systemId;
  lines.push(
    same
      ? { name: 'Primary and standby have same system ID', ok: true, hint: '' }
      : {
          name: 'Primary and standby have same system ID',
          ok: false,
          hint: 'primary_conninfo and conninfo should point to primary and standby servers which share the same system identifier',
        },
  );
  return lines;
}

/** `replication slot` (only when slot_name is set and the server answered). */
export function slotCheckLine(srv: Pick<ServerConfig, 'name' | 'slot_name' | 'streaming_archiver'>, slot: PgFacts['slot']): Line | null {
  const name = srv.slot_name;
  if (!name) return null;
  if (srv.streaming_archiver) {
    if (!slot) return { name: 'replication slot', ok: false, hint: `replication slot '${name}' doesn't exist. Please execute 'barman receive-wal --create-slot ${srv.name}'` };
    if (slot.restartLsn === null) return { name: 'replication slot', ok: false, hint: `slot '${name}' not initialised: is 'receive-wal' running?` };
    if (!slot.active) return { name: 'replication slot', ok: false, hint: `slot '${name}' not active: is 'receive-wal' running?` };
    return { name: 'replication slot', ok: true, hint: '' };
  }
  // Not an error, but a slot nobody consumes makes PostgreSQL keep WAL forever.
  if (slot && slot.restartLsn !== null) {
    return { name: 'replication slot', ok: true, hint: `WARNING: slot '${name}' is ${slot.active ? 'active' : 'initialised'} but not required by the current config` };
  }
  return null;
}

/** PostgreSQL, privileges, streaming, wal_level, standby checks, replication slot. */
export async function postgresChecks(col: CheckCollector, srv: ServerConfig, facts: PgFacts): Promise<void> {
  if (!facts.connected) {
    // As Barman: the line carries no hint (monitoring matches it verbatim); the log has the
    // cause. Nothing else of PostgreSQL is checked then (Nagios lists the same failures).
    col.add('PostgreSQL', false);
    return;
  }
  col.add('PostgreSQL', true);
  if (facts.hasBackupPrivileges) col.add('superuser or standard user with backup privileges', true);
  else col.add('no access to backup functions', false, 'privileges for PostgreSQL backup functions are required (see documentation)');
  if (facts.streaming.configured) col.add('PostgreSQL streaming', facts.streaming.ok, facts.streaming.ok ? '' : (facts.streaming.error ?? ''));
  const minimal = facts.walLevel === 'minimal';
  col.add('wal_level', !minimal, minimal ? "please set it to a higher level than 'minimal'" : '');
  if (srv.primary_conninfo) {
    const primary = await gatherPrimaryFacts(col, srv.primary_conninfo);
    for (const l of standbyCheckLines({ inRecovery: facts.inRecovery, systemId: facts.systemId }, primary)) col.add(l.name, l.ok, l.hint);
  }
  if (facts.connected && facts.slotError) {
    col.add('replication slot', false, `cannot ask the WAL host (wal_conninfo) about slot '${srv.slot_name ?? ''}': ${facts.slotError}`);
  } else if (facts.connected) {
    const line = slotCheckLine(srv, facts.slot);
    if (line) col.add(line.name, line.ok, line.hint);
  }
}
