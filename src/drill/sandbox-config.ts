/**
 * How a drill's PostgreSQL is configured so that it cannot reach production or the archive,
 * as pure functions. Every setting that matters is given on the postgres command line (`-c`),
 * which wins over postgresql.conf, its includes and postgresql.auto.conf (where ALTER SYSTEM,
 * `pg_basebackup -R` or a standby's setup may have left primary_conninfo, an archive_command
 * and friends). The configuration file is our own, in the sandbox's private directory, and
 * includes the restored postgresql.conf (when there is one) for everything else. Targets
 * are the exception: the restore commented out the stale ones in the restored files.
 */
import { confQuote } from '../recovery/settings.js';
import type { RecoveryTarget } from '../recovery/options.js';

export interface SandboxConfigInput {
  /** server_version_num of the backup. */
  version: number;
  bindir: string;
  /** The restored data directory. */
  dataDir: string;
  /** Private directory (0700): socket, configuration, log. */
  privateDir: string;
  port: number;
  /** get-wal (or barman-wal-restore) command written by the restore. */
  restoreCommand: string;
  target: RecoveryTarget;
  /** Hot standby minimums from the control file (see hotStandbySettings). */
  controlSettings?: readonly [string, string][];
}

/** Files of the private directory. */
export function privateFiles(p: SandboxConfigInput): { name: string; text: string }[] {
  return [
    {
      name: 'postgresql.conf',
      text: [
        '# barman drill sandbox: the restored configuration, then the command line wins',
        `include_if_exists ${confQuote(`${p.dataDir}/postgresql.conf`)}`,
        '',
      ].join('\n'),
    },
    // Only the drill's own user reaches the socket (the directory is 0700): no password needed.
    { name: 'pg_hba.conf', text: 'local all all trust\n' },
    { name: 'pg_ident.conf', text: '' },
  ];
}

/** The sandbox's log file (PostgreSQL's stderr). */
export function sandboxLogFile(privateDir: string): string {
  return `${privateDir}/postgresql.log`;
}

/** Settings forced on the command line, in order. */
export function sandboxSettings(p: SandboxConfigInput): [string, string][] {
  const t = p.target;
  const s: [string, string][] = [
    ['config_file', `${p.privateDir}/postgresql.conf`],
    ['data_directory', p.dataDir],
    ['hba_file', `${p.privateDir}/pg_hba.conf`],
    ['ident_file', `${p.privateDir}/pg_ident.conf`],
    ['external_pid_file', ''],
    ['cluster_name', 'barman-drill'],
    // Unix socket in the private directory only: nothing on the network can connect.
    ['listen_addresses', ''],
    ['port', String(p.port)],
    ['unix_socket_directories', p.privateDir],
    ['unix_socket_group', ''],
    ['unix_socket_permissions', '0700'],
    ['ssl', 'off'],
    // Never write to the archive, never follow or feed a primary.
    ['archive_mode', 'off'],
    ['archive_command', ''],
    ...(p.version >= 150000 ? ([['archive_library', '']] as [string, string][]) : []),
    ['archive_cleanup_command', ''],
    ['recovery_end_command', ''],
    ['restore_command', p.restoreCommand],
    ['primary_conninfo', ''],
    ['primary_slot_name', ''],
    ['recovery_min_apply_delay', '0'],
    ['synchronous_standby_names', ''],
    // Subscriptions would start apply workers against their publishers (and move their slots).
    ['max_logical_replication_workers', '0'],
    ['max_sync_workers_per_subscription', '0'],
    // Extensions with background workers (pg_cron, schedulers, agents that phone home).
    ['shared_preload_libraries', ''],
    ['session_preload_libraries', ''],
    ['local_preload_libraries', ''],
    // Read-only connections while replaying, to watch the replay and stop at the target.
    ['hot_standby', 'on'],
    // Only the drill's own target: PostgreSQL refuses a second one, even an empty one, once a
    // target is set (the restore commented out any other left in the restored files).
    ...targetSetting(t),
    ['recovery_target_inclusive', t.exclusive ? 'off' : 'on'],
    ['recovery_target_timeline', t.tli === null ? 'latest' : String(t.tli)],
    ['recovery_target_action', 'pause'],
    ['restart_after_crash', 'off'],
    ['huge_pages', 'try'],
    ['autovacuum', 'off'],
    ['default_transaction_read_only', 'off'],
    ['statement_timeout', '0'],
    ['lock_timeout', '0'],
    ['idle_in_transaction_session_timeout', '0'],
    ['idle_session_timeout', '0'],
    // The log: our file (stderr), in English, with times, whatever the production settings.
    ['logging_collector', 'off'],
    ['log_destination', 'stderr'],
    ['log_line_prefix', '%m [%p] '],
    ['log_min_messages', 'warning'],
    ['lc_messages', 'C'],
    ['log_connections', 'off'],
    ['log_disconnections', 'off'],
    ['log_statement', 'none'],
    ['log_min_duration_statement', '-1'],
  ];
  // Before 15 a stats directory configured elsewhere (Debian: /run/postgresql) is shared.
  if (p.version < 150000) s.push(['stats_temp_directory', 'pg_stat_tmp']);
  s.push(...(p.controlSettings ?? []));
  return s;
}

/** pg_controldata lines → setting names a hot standby needs at least as high as the primary's. */
const CONTROL_SETTINGS: readonly [RegExp, string][] = [
  [/^max_connections setting:\s+(\d+)$/m, 'max_connections'],
  [/^max_worker_processes setting:\s+(\d+)$/m, 'max_worker_processes'],
  [/^max_wal_senders setting:\s+(\d+)$/m, 'max_wal_senders'],
  [/^max_prepared_xacts setting:\s+(\d+)$/m, 'max_prepared_transactions'],
  [/^max_locks_per_xact setting:\s+(\d+)$/m, 'max_locks_per_transaction'],
];

/**
 * A hot standby refuses to replay (or pauses) when these settings are lower than the primary's
 * values recorded in the control file; the restored postgresql.conf may be missing (Debian
 * keeps it in /etc), so the control file's values are forced.
 */
export function hotStandbySettings(controldata: string): [string, string][] {
  const out: [string, string][] = [];
  for (const [re, name] of CONTROL_SETTINGS) {
    const m = re.exec(controldata);
    if (m) out.push([name, m[1] as string]);
  }
  return out;
}

/** Data checksums per pg_controldata ("Data page checksum version: 0" = off). */
export function checksumsEnabled(controldata: string): boolean {
  const m = /^Data page checksum version:\s+(\d+)$/m.exec(controldata);
  return m !== null && m[1] !== '0';
}

function targetSetting(t: RecoveryTarget): [string, string][] {
  if (t.immediate) return [['recovery_target', 'immediate']];
  if (t.lsn !== null) return [['recovery_target_lsn', t.lsn]];
  if (t.name !== null) return [['recovery_target_name', t.name]];
  if (t.time !== null) return [['recovery_target_time', t.time.format()]];
  if (t.xid !== null) return [['recovery_target_xid', t.xid]];
  return [];
}

/** The postgres command line. */
export function postgresArgv(p: SandboxConfigInput): string[] {
  return [`${p.bindir}/postgres`, ...sandboxSettings(p).flatMap(([k, v]) => ['-c', `${k}=${v}`])];
}
