/**
 * A real streaming hot standby of a test cluster, for tests that need replication clients
 * (replication-status, standby backups).
 *
 * The standby is cloned with `pg_basebackup -R` run as postgres, lives in its own temp
 * directory (data dir, socket, log) on its own port, and is returned only once its WAL receiver
 * streams and the primary sees it in pg_stat_replication with a replay position (so that a
 * caller can tell it from a WAL streamer, which never reports one). It is a PgCluster: stop(),
 * psql(), destroy() and cleanupAll() work as for any test cluster.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { PgCluster, confQuote, pgBin, quoteLiteral } from './pg-cluster.js';
import { POSTGRES_USER, freePort, makeTempDir, runAs, waitFor } from './system.js';

export interface StandbyOptions {
  /**
   * application_name the standby connects with (what pg_stat_replication shows). Default
   * `standby_<port>`, unique per standby.
   */
  applicationName?: string;
  /** Stream through this physical replication slot (`primary_slot_name`). */
  slotName?: string;
  /** Create the slot on the primary (default true when slotName is given). */
  createSlot?: boolean;
  /** TCP port (default: a free one). */
  port?: number;
  /** How long to wait for the clone and for streaming to start (default 120 s). */
  timeoutMs?: number;
  /** Extra postgresql.auto.conf settings for the standby (e.g. hot_standby_feedback). */
  extraConf?: Record<string, string | number | boolean>;
  /** Extra pg_basebackup arguments, e.g. `-T OLDDIR=NEWDIR` for a primary with tablespaces. */
  basebackupArgs?: string[];
}

export interface Standby extends PgCluster {
  /** The application_name the standby streams with. */
  readonly applicationName: string;
  readonly slotName: string | undefined;
}

/** libpq keyword/value quoting: single quotes, backslash-escaped. */
function connValue(v: string): string {
  return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** Clone `primary` into a new hot standby, start it and wait until it streams. */
export async function startStandby(primary: PgCluster, opts: StandbyOptions = {}): Promise<Standby> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const port = opts.port ?? (await freePort());
  const applicationName = opts.applicationName ?? `standby_${port}`;
  const runDir = await makeTempDir('pgsb-', { owner: POSTGRES_USER, mode: 0o755 });
  const dataDir = path.join(runDir, 'data');

  if (opts.slotName !== undefined && opts.createSlot !== false) {
    await primary.psql(`SELECT pg_create_physical_replication_slot(${quoteLiteral(opts.slotName)});`);
  }
  // -X stream: the clone is consistent on its own; -c fast: no wait for a spread checkpoint.
  await runAs(
    POSTGRES_USER,
    pgBin('pg_basebackup'),
    ['-h', '127.0.0.1', '-p', String(primary.port), '-U', 'postgres', '-D', dataDir, '-R', '-X', 'stream', '-c', 'fast', '--no-sync', ...(opts.basebackupArgs ?? [])],
    { check: true, timeoutMs },
  );

  // postgresql.auto.conf is read last: these win over the settings copied from the primary
  // (its port and socket directory in particular). Our own primary_conninfo (rather than the
  // one -R wrote) carries the application_name the tests look for.
  const settings: Record<string, string | number | boolean> = {
    port,
    unix_socket_directories: runDir,
    listen_addresses: '127.0.0.1',
    logging_collector: 'off',
    hot_standby: 'on',
    primary_conninfo: `host=127.0.0.1 port=${primary.port} user=postgres application_name=${connValue(applicationName)}`,
    ...(opts.slotName !== undefined ? { primary_slot_name: opts.slotName } : {}),
    ...(opts.extraConf ?? {}),
  };
  const lines = Object.entries(settings).map(([k, v]) => `${k} = ${confQuote(v)}\n`).join('');
  await fs.appendFile(path.join(dataDir, 'postgresql.auto.conf'), `# barman-ts test harness (standby)\n${lines}`);

  const cluster = PgCluster.adopt(dataDir, port, runDir, [runDir], opts.port === undefined);
  await cluster.start({ timeoutSec: Math.ceil(timeoutMs / 1000) });
  const standby = Object.assign(cluster, { applicationName, slotName: opts.slotName }) as Standby;

  await waitFor(async () => (await cluster.psql('SELECT status FROM pg_stat_wal_receiver;')) === 'streaming', {
    timeoutMs,
    what: `standby on port ${port} to stream from the primary on port ${primary.port}`,
  });
  // The first feedback message carries the replay position; before it replay_lsn is NULL and
  // the standby would look like a WAL streamer.
  await waitFor(
    async () =>
      (await primary.psql(
        `SELECT count(*) FROM pg_stat_replication WHERE application_name = ${quoteLiteral(applicationName)} AND replay_lsn IS NOT NULL;`,
      )) === '1',
    { timeoutMs, what: `primary to see standby ${applicationName} in pg_stat_replication` },
  );
  return standby;
}

/** Wait until the standby has replayed everything the primary has written so far. */
export async function waitStandbyCaughtUp(primary: PgCluster, standby: Standby, timeoutMs = 60_000): Promise<void> {
  const target = await primary.psql('SELECT pg_current_wal_lsn();');
  await waitFor(
    async () =>
      (await primary.psql(
        `SELECT replay_lsn >= ${quoteLiteral(target)}::pg_lsn FROM pg_stat_replication WHERE application_name = ${quoteLiteral(standby.applicationName)};`,
      )) === 't',
    { timeoutMs, what: `standby ${standby.applicationName} to replay up to ${target}` },
  );
}
