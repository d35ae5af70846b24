/**
 * `barman check`: the list of checks that apply to a server, in Barman's order and with Barman's
 * names (scripts and Nagios parse them). Each check is independent: one failing never hides the
 * others, and a PostgreSQL that does not answer makes the PostgreSQL checks fail, not the command.
 */
import { promises as fsp } from 'node:fs';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { COPY_DONE, DONE, FAILED } from '../catalog/backup-info.js';
import { loadCatalog } from '../catalog/catalog.js';
import { isLockHeld } from '../catalog/lock.js';
import { ensureServerDirs, lockPath, serverPaths } from '../catalog/server-dirs.js';
import { findPgBinary } from '../postgres/binaries.js';
import { PgConnection } from '../postgres/connection.js';
import { errorMessage } from '../util/errors.js';
import { humanDuration } from '../util/format.js';
import { run } from '../util/proc.js';

export interface CheckResult {
  name: string;
  ok: boolean;
  hint: string;
}

/** Checks that `backup` ignores when it runs them before starting. */
export const NON_BLOCKING_FOR_BACKUP = new Set([
  'minimum redundancy requirements',
  'backup maximum age',
  'backup minimum size',
  'failed backups',
  'archiver errors',
  'empty incoming directory',
  'empty streaming directory',
  'incoming WALs directory',
  'streaming WALs directory',
  'wal maximum age',
  'PostgreSQL server is standby',
]);

async function hasArchivedWal(srv: ServerConfig): Promise<boolean> {
  const p = serverPaths(srv);
  for (const f of [p.xlogdbFileNew, p.xlogdbFile]) {
    try {
      const st = await fsp.stat(f);
      if (st.size > 0) return true;
    } catch {
      /* next */
    }
  }
  return false;
}

async function pgClientVersion(bin: string): Promise<number | null> {
  const res = await run(bin, ['--version']).catch(() => null);
  const m = res ? /(\d+)(?:\.(\d+))?/.exec(res.stdout) : null;
  return m ? Number(m[1]) : null;
}

function countErrors(srv: ServerConfig): Record<string, number> {
  const counts: Record<string, number> = { duplicates: 0, unknown: 0, 'not relevant': 0, 'unknown failure': 0 };
  let names: string[] = [];
  try {
    names = fs.readdirSync(serverPaths(srv).errorsDir);
  } catch {
    return counts;
  }
  for (const n of names) {
    const suffix = n.slice(n.lastIndexOf('.') + 1);
    if (suffix === 'duplicate') counts.duplicates = (counts.duplicates ?? 0) + 1;
    else if (suffix === 'unknown') counts.unknown = (counts.unknown ?? 0) + 1;
    else if (suffix === 'error') counts['unknown failure'] = (counts['unknown failure'] ?? 0) + 1;
    else counts['not relevant'] = (counts['not relevant'] ?? 0) + 1;
  }
  return counts;
}

type AddCheck = (name: string, ok: boolean, hint?: string) => void;

/**
 * `<label>` (the program is found) and `<label> compatible` (its major version is at least the
 * server's; only when the server answered). True when both hold.
 */
async function checkClientProgram(add: AddCheck, program: string, label: string, srv: ServerConfig, serverVersion: number): Promise<boolean> {
  let bin: string;
  try {
    bin = findPgBinary(program, srv.path_prefix);
    add(label, true);
  } catch (err) {
    add(label, false, errorMessage(err));
    return false;
  }
  if (!serverVersion) return false;
  const major = Math.floor(serverVersion / 10000);
  const v = await pgClientVersion(bin);
  const ok = v !== null && v >= major;
  add(`${label} compatible`, ok, ok ? '' : `PostgreSQL version: ${major}, ${label} version: ${v ?? 'unknown'}`);
  return ok;
}

export async function runChecks(srv: ServerConfig): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const add = (name: string, ok: boolean, hint = '') => results.push({ name, ok, hint });
  const p = serverPaths(srv);

  const archived = await hasArchivedWal(srv);
  add('WAL archive', archived, archived ? '' : 'please make sure WAL shipping is setup');

  if (srv.max_incoming_wals_queue !== null && srv.archiver) {
    const queue = (await fsp.readdir(p.incomingDir).catch(() => [])).length;
    add('incoming WALs directory', queue <= srv.max_incoming_wals_queue, `${queue} files in queue (max ${srv.max_incoming_wals_queue})`);
  }

  let pg: PgConnection | null = null;
  let version = 0;
  try {
    pg = await PgConnection.connect(srv.conninfo ?? '', 'barman_check', srv.check_timeout * 1000 || 30000);
    add('PostgreSQL', true);
  } catch (err) {
    add('PostgreSQL', false, errorMessage(err));
  }
  try {
    if (pg) {
      version = await pg.serverVersion();
      const privileged = await pg.hasBackupPrivileges();
      add('superuser or standard user with backup privileges', privileged, privileged ? '' : 'no access to backup functions');
    }
    // Streaming connection: a replication-protocol handshake with streaming_conninfo.
    if (srv.streaming_archiver || srv.backup_method === 'postgres') {
      const streamingOk = await checkStreaming(srv);
      add('PostgreSQL streaming', streamingOk === null, streamingOk ?? '');
    }
    if (pg) {
      const walLevel = await pg.setting('wal_level');
      add('wal_level', walLevel === 'replica' || walLevel === 'logical', walLevel === 'replica' || walLevel === 'logical' ? '' : `please set it to a higher level than ${walLevel ?? 'unknown'}`);
      if (srv.slot_name && srv.streaming_archiver) {
        const slot = await pg.replicationSlot(srv.slot_name);
        if (!slot) add('replication slot', false, `replication slot '${srv.slot_name}' doesn't exist. Please execute 'barman receive-wal --create-slot ${srv.name}'`);
        else add('replication slot', slot.active, slot.active ? '' : `slot '${srv.slot_name}' not initialised: is 'receive-wal' running?`);
      }
    }
  } catch (err) {
    add('PostgreSQL', false, errorMessage(err));
  }

  try {
    await ensureServerDirs(srv);
    add('directories', true);
  } catch (err) {
    add('directories', false, errorMessage(err));
  }

  // An invalid retention_policy disables the server (its checks are then the configuration
  // errors), so a server that gets here has either no policy or a valid one.
  add('retention policy settings', true);
  const catalog = await loadCatalog(srv).catch(() => []);
  const done = catalog.filter((e) => e.info.status === DONE);
  if (srv.last_backup_maximum_age !== null) {
    // The last available backup, DONE or WAITING_FOR_WALS, as Barman's default status filter.
    const last = catalog.filter((e) => COPY_DONE.has(e.info.status)).at(-1)?.info.end_time;
    const age = last ? Date.now() / 1000 - last.epochSeconds : Infinity;
    add(
      'backup maximum age',
      last !== undefined && last !== null && age <= srv.last_backup_maximum_age,
      `interval provided: ${humanDuration(srv.last_backup_maximum_age)}, latest backup age: ${last ? humanDuration(age) : 'No available backups'}`,
    );
  } else {
    add('backup maximum age', true, 'no last_backup_maximum_age provided');
  }
  add('compression settings', true);
  const failed = catalog.filter((e) => e.info.status === FAILED).length;
  add('failed backups', failed === 0, `there are ${failed} failed backups`);
  // Only full backups count (an incremental backup is nothing without its chain), as in Barman 3.11+.
  const doneFull = done.filter((e) => !e.info.parent_backup_id).length;
  add('minimum redundancy requirements', doneFull >= srv.minimum_redundancy, `have ${doneFull} non-incremental backups, expected at least ${srv.minimum_redundancy}`);

  if (srv.backup_method === 'postgres') {
    if (await checkClientProgram(add, 'pg_basebackup', 'pg_basebackup', srv, version)) add('pg_basebackup supports tablespaces mapping', true);
  }

  const identity = path.join(p.backupDir, 'identity.json');
  if (pg && fs.existsSync(identity)) {
    try {
      const known = JSON.parse(fs.readFileSync(identity, 'utf8')) as { systemid?: string };
      const sysid = await pg.systemId();
      add('systemid coherence', known.systemid === sysid, known.systemid === sysid ? '' : `is the streaming DB ${sysid} the same as ${known.systemid}?`);
    } catch (err) {
      add('systemid coherence', false, errorMessage(err));
    }
  } else {
    add('systemid coherence', true, 'no system Id stored on disk');
  }

  if (srv.archiver && pg) {
    const mode = await pg.setting('archive_mode');
    add('archive_mode', mode === 'on' || mode === 'always', mode === 'on' || mode === 'always' ? '' : `please set it to 'on' or 'always'`);
    const cmd = await pg.setting('archive_command');
    const okCmd = !!cmd && cmd !== '(disabled)';
    add('archive_command', okCmd, okCmd ? '' : 'please set it accordingly to documentation');
    add('continuous archiving', true);
  }
  if (srv.streaming_archiver) {
    await checkClientProgram(add, 'pg_receivewal', 'pg_receivexlog', srv, version);
    const running = await isLockHeld(lockPath(srv, 'receiveWal'));
    add('receive-wal running', running, running ? '' : 'See the Barman log file for more details');
  }
  const errs = countErrors(srv);
  const total = Object.values(errs).reduce((a, b) => a + b, 0);
  add('archiver errors', total === 0, Object.entries(errs).map(([k, v]) => `${k}: ${v}`).join(', '));
  await pg?.close();
  return results;
}

/** null when a replication connection works, else the reason. */
async function checkStreaming(srv: ServerConfig): Promise<string | null> {
  const ci = srv.streaming_conninfo ?? srv.conninfo ?? '';
  const { default: pg } = await import('pg');
  const { parseConninfo } = await import('../postgres/conninfo.js');
  const c = parseConninfo(ci);
  const client = new pg.Client({
    host: c.host ?? '/var/run/postgresql',
    port: c.port ? Number(c.port) : undefined,
    user: c.user,
    password: c.password,
    database: c.dbname ?? 'postgres',
    replication: 'true',
    connectionTimeoutMillis: (srv.check_timeout || 30) * 1000,
  } as unknown as ConstructorParameters<typeof pg.Client>[0]);
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('IDENTIFY_SYSTEM');
    return null;
  } catch (err) {
    return errorMessage(err);
  } finally {
    await client.end().catch(() => undefined);
  }
}
