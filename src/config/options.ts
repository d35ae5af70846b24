/**
 * The option table: every Barman server/global option with its scope, type and default.
 * Scopes: G = may be set in [barman] and is inherited by servers, S = server section, M = model.
 * Defaults are strings formatted with `%(name)s` against the server's attributes, as Barman does.
 * The table order matters: a default may only refer to options that come before it.
 */
import * as v from './values.js';

export type Scope = 'G' | 'S' | 'M';

export interface OptionDef<N extends string = string, T = unknown, D extends string | undefined = string | undefined> {
  name: N;
  scopes: readonly Scope[];
  parse: (text: string) => T;
  /** Default as text (parsed like a configured value) or absent = unset. */
  default: D;
  /** Options whose value is a shell command or script (never interpolated into other shells). */
  shell?: boolean;
  /** Never print the value (conninfo may carry passwords; printing redacts them anyway). */
  conninfo?: boolean;
}

const GSM: readonly Scope[] = ['G', 'S', 'M'];
const GS: readonly Scope[] = ['G', 'S'];
const SM: readonly Scope[] = ['S', 'M'];
const S: readonly Scope[] = ['S'];

interface Flags {
  shell?: boolean;
  conninfo?: boolean;
}

function o<N extends string, T, D extends string | undefined = undefined>(
  name: N,
  scopes: readonly Scope[],
  parse: (t: string) => T,
  def?: D,
  flags: Flags = {},
): OptionDef<N, T, D> {
  return { name, scopes, parse, default: def as D, ...flags };
}

const WAL_COMPRESSIONS = ['gzip', 'bzip2', 'xz', 'zstd', 'lz4', 'snappy', 'pigz', 'pygzip', 'pybzip2', 'custom', 'none'] as const;


/** Server-level options, in resolution order. */
export const SERVER_OPTIONS = [
  // Directories first: later defaults refer to them.
  o('backup_directory', S, v.parseAbsPath, '%(barman_home)s/%(name)s'),
  o('basebackups_directory', S, v.parseAbsPath, '%(backup_directory)s/base'),
  o('errors_directory', S, v.parseAbsPath, '%(backup_directory)s/errors'),
  o('incoming_wals_directory', S, v.parseAbsPath, '%(backup_directory)s/incoming'),
  o('streaming_wals_directory', S, v.parseAbsPath, '%(backup_directory)s/streaming'),
  o('wals_directory', S, v.parseAbsPath, '%(backup_directory)s/wals'),
  o('xlogdb_directory', GS, v.parseAbsPath, '%(wals_directory)s'),
  o('active', SM, v.parseBool, 'true'),
  // barman-ts extensions (Barman ignores them): compression of the barman-ts agent's transfers.
  o('agent_compression', GSM, v.parseEnum(['zstd', 'lz4', 'none']), 'zstd'),
  o('agent_compression_level', GSM, v.parseInt10, '1'),
  o('archiver', GSM, v.parseBool, 'off'),
  o('archiver_batch_size', GSM, v.parseNonNegativeInt, '0'),
  o('autogenerate_manifest', GSM, v.parseBool, 'false'),
  o('aws_profile', GSM, v.parseString),
  o('aws_region', GSM, v.parseString),
  o('aws_await_snapshots_timeout', GSM, v.parseNonNegativeInt, '3600'),
  o('aws_snapshot_lock_mode', GSM, v.parseEnum(['compliance', 'governance'])),
  o('aws_snapshot_lock_duration', GSM, v.parseNonNegativeInt),
  o('aws_snapshot_lock_expiration_date', GSM, v.parseString),
  o('aws_snapshot_lock_cool_off_period', GSM, v.parseNonNegativeInt),
  o('azure_credential', GSM, v.parseEnum(['azure-cli', 'managed-identity', 'default'])),
  o('azure_resource_group', GSM, v.parseString),
  o('azure_subscription_id', GSM, v.parseString),
  o('backup_compression', GSM, v.parseEnum(['gzip', 'lz4', 'zstd', 'none'])),
  o('backup_compression_format', GSM, v.parseEnum(['plain', 'tar'])),
  o('backup_compression_level', GSM, v.parseInt10),
  o('backup_compression_location', GSM, v.parseEnum(['client', 'server'])),
  o('backup_compression_workers', GSM, v.parseNonNegativeInt, '0'),
  o('backup_method', GSM, v.parseEnum(['rsync', 'postgres', 'local-rsync', 'snapshot']), 'rsync'),
  o('backup_options', GSM, v.parseCsvSet(['concurrent_backup', 'exclusive_backup', 'external_configuration']), ''),
  o('bandwidth_limit', GSM, v.parseNonNegativeInt),
  o('basebackup_retry_sleep', GSM, v.parseNonNegativeInt, '30'),
  o('basebackup_retry_times', GSM, v.parseNonNegativeInt, '0'),
  o('check_timeout', GSM, v.parseNonNegativeInt, '30'),
  o('cluster', SM, v.parseString, '%(name)s'),
  o('combine_mode', GSM, v.parseEnum(['copy', 'link', 'clone', 'copy-file-range']), 'copy'),
  o('compression', GSM, v.parseEnum(WAL_COMPRESSIONS)),
  o('compression_level', GSM, v.parseCompressionLevel, 'medium'),
  o('conninfo', SM, v.parseString, undefined, { conninfo: true }),
  o('create_slot', GSM, v.parseEnum(['manual', 'auto']), 'manual'),
  o('custom_compression_filter', GSM, v.parseString, undefined, { shell: true }),
  o('custom_decompression_filter', GSM, v.parseString, undefined, { shell: true }),
  o('custom_compression_magic', GSM, v.parseMagic),
  o('description', SM, v.parseString),
  o('encryption', GSM, v.parseEnum(['none', 'gpg'])),
  o('encryption_key_id', GSM, v.parseString),
  o('encryption_passphrase_command', GSM, v.parseString, undefined, { shell: true }),
  o('forward_config_path', GSM, v.parseBool, 'false'),
  o('gcp_project', GSM, v.parseString),
  o('gcp_zone', SM, v.parseString),
  o('immediate_checkpoint', GSM, v.parseBool, 'false'),
  // Barman cannot inherit keepalive_interval from [barman] (a typo in its key list); we can.
  o('keepalive_interval', GSM, v.parseNonNegativeInt, '60'),
  o('last_backup_maximum_age', GSM, v.parseInterval),
  o('last_backup_minimum_size', GSM, v.parseSize),
  o('last_wal_maximum_age', GSM, v.parseInterval),
  o('local_staging_path', GSM, v.parseAbsPath),
  o('recovery_staging_path', GSM, v.parseAbsPath),
  o('max_incoming_wals_queue', GSM, v.parseNonNegativeInt),
  o('minimum_redundancy', GSM, v.parseNonNegativeInt, '0'),
  o('network_compression', GSM, v.parseBool, 'false'),
  o('parallel_jobs', GSM, v.parseNonNegativeInt, '1'),
  o('parallel_jobs_start_batch_period', GSM, v.parseNonNegativeInt, '1'),
  o('parallel_jobs_start_batch_size', GSM, v.parseNonNegativeInt, '10'),
  o('path_prefix', GSM, v.parsePathPrefix),
  o('pre_archive_script', GS, v.parseString, undefined, { shell: true }),
  o('pre_archive_retry_script', GS, v.parseString, undefined, { shell: true }),
  o('post_archive_script', GS, v.parseString, undefined, { shell: true }),
  o('post_archive_retry_script', GS, v.parseString, undefined, { shell: true }),
  o('pre_backup_script', GS, v.parseString, undefined, { shell: true }),
  o('pre_backup_retry_script', GS, v.parseString, undefined, { shell: true }),
  o('post_backup_script', GS, v.parseString, undefined, { shell: true }),
  o('post_backup_retry_script', GS, v.parseString, undefined, { shell: true }),
  o('pre_delete_script', GS, v.parseString, undefined, { shell: true }),
  o('pre_delete_retry_script', GS, v.parseString, undefined, { shell: true }),
  o('post_delete_script', GS, v.parseString, undefined, { shell: true }),
  o('post_delete_retry_script', GS, v.parseString, undefined, { shell: true }),
  o('pre_recovery_script', GS, v.parseString, undefined, { shell: true }),
  o('pre_recovery_retry_script', GS, v.parseString, undefined, { shell: true }),
  o('post_recovery_script', GS, v.parseString, undefined, { shell: true }),
  o('post_recovery_retry_script', GS, v.parseString, undefined, { shell: true }),
  o('pre_wal_delete_script', GS, v.parseString, undefined, { shell: true }),
  o('pre_wal_delete_retry_script', GS, v.parseString, undefined, { shell: true }),
  o('post_wal_delete_script', GS, v.parseString, undefined, { shell: true }),
  o('post_wal_delete_retry_script', GS, v.parseString, undefined, { shell: true }),
  o('primary_checkpoint_timeout', SM, v.parseNonNegativeInt, '0'),
  o('primary_conninfo', SM, v.parseString, undefined, { conninfo: true }),
  o('primary_ssh_command', GSM, v.parseString, undefined, { shell: true }),
  o('recovery_options', GSM, v.parseCsvSet(['get-wal', 'delta-restore']), ''),
  o('retention_policy', GSM, v.parseRetentionPolicy),
  o('retention_policy_mode', GSM, v.parseEnum(['auto']), 'auto'),
  o('reuse_backup', GSM, v.parseEnum(['off', 'copy', 'link']), 'off'),
  o('snapshot_disks', SM, v.parseString),
  o('snapshot_instance', SM, v.parseString),
  o('snapshot_provider', GSM, v.parseEnum(['aws', 'azure', 'gcp'])),
  o('slot_name', GSM, v.parseSlotName),
  o('ssh_command', SM, v.parseString, undefined, { shell: true }),
  o('staging_path', GSM, v.parseAbsPath),
  o('staging_location', GSM, v.parseEnum(['local', 'remote']), 'local'),
  o('streaming_archiver', GSM, v.parseBool, 'off'),
  o('streaming_archiver_batch_size', GSM, v.parseNonNegativeInt, '0'),
  o('streaming_archiver_name', GSM, v.parseString, 'barman_receive_wal'),
  o('streaming_backup_name', GSM, v.parseString, 'barman_streaming_backup'),
  o('streaming_conninfo', SM, v.parseString, '%(conninfo)s', { conninfo: true }),
  // barman-ts extension (Barman warns about it and ignores it): `check` fails on a passive node
  // further behind its primary than this (see src/geo/lag.ts).
  o('sync_lag_maximum_age', GSM, v.parseShortInterval),
  o('tablespace_bandwidth_limit', GSM, v.parseTablespaceLimits),
  // barman-ts extension (Barman ignores it): rsync, or the barman-ts agent (src/agent).
  o('transfer_method', GSM, v.parseEnum(['rsync', 'agent']), 'rsync'),
  o('wal_conninfo', SM, v.parseString, undefined, { conninfo: true }),
  o('wal_streaming_conninfo', SM, v.parseString, undefined, { conninfo: true }),
  o('wal_retention_policy', GSM, v.parseEnum(['main']), 'main'),
  o('worm_mode', GSM, v.parseBool, 'off'),
  // barman-ts extensions (Barman ignores them, with a warning): recovery drills (`barman drill`).
  o('drill_directory', GS, v.parseAbsPath, '%(barman_home)s/drills'),
  o('drill_interval', GS, v.parseInterval),
  o('drill_max_age', GS, v.parseInterval),
  o('drill_timeout', GS, v.parseNonNegativeInt, '21600'),
  o('drill_sql_file', GS, v.parseAbsPath),
  o('model', ['M'], v.parseBool),
] as const;

/** Options only valid in [barman]. */
export const GLOBAL_OPTIONS = [
  o('barman_home', ['G'], v.parseAbsPath),
  o('barman_user', ['G'], v.parseString, 'barman'),
  o('barman_lock_directory', ['G'], v.parseAbsPath, '%(barman_home)s'),
  o('lock_directory_cleanup', ['G'], v.parseBool, 'true'),
  o('config_changes_queue', ['G'], v.parseAbsPath, '%(barman_home)s/cfg_changes.queue'),
  o('configuration_files_directory', ['G'], v.parseAbsPath),
  o('log_file', ['G'], v.parseAbsPath),
  o('log_level', ['G'], (t) => v.parseEnum(['notset', 'debug', 'info', 'warning', 'error', 'critical'])(t).toUpperCase(), 'INFO'),
  o('log_format', ['G'], v.parseString),
] as const;

type ValueOf<D> = D extends OptionDef<string, infer T, infer Def> ? (Def extends string ? T : T | null) : never;

/** Typed values of every server option, keyed by Barman's option name. */
export type ServerOptionValues = {
  [D in (typeof SERVER_OPTIONS)[number] as D['name']]: ValueOf<D>;
};
export type GlobalOptionValues = {
  [D in (typeof GLOBAL_OPTIONS)[number] as D['name']]: ValueOf<D>;
};

export const SERVER_OPTION_MAP: ReadonlyMap<string, OptionDef> = new Map(SERVER_OPTIONS.map((d) => [d.name, d as OptionDef]));
export const GLOBAL_OPTION_MAP: ReadonlyMap<string, OptionDef> = new Map(GLOBAL_OPTIONS.map((d) => [d.name, d as OptionDef]));

/** Keys that a model section may not set (directories and hook scripts). */
export function modelMaySet(name: string): boolean {
  const def = SERVER_OPTION_MAP.get(name);
  return def !== undefined && def.scopes.includes('M');
}
