/**
 * The list of `barman` subcommands. Only the names and one-line summaries live here, so that
 * start-up stays fast: the module that defines a command's options and action is imported only
 * when that command runs (or its --help is asked for).
 */
import type { Command } from 'commander';
import type { CliContext } from './context.js';

export interface CommandModule {
  /** Declare arguments and options on the (already named) command. */
  define(cmd: Command): void;
  /** Do the work. `args` are the positional arguments, `opts` the parsed options. */
  run(ctx: CliContext, args: string[], opts: Record<string, unknown>): Promise<void>;
}

export interface CommandEntry {
  name: string;
  aliases?: string[];
  summary: string;
  load: () => Promise<CommandModule>;
}

export const COMMANDS: readonly CommandEntry[] = [
  { name: 'archive-wal', summary: 'Move WAL files from incoming/ and streaming/ into the archive', load: () => import('./commands/archive-wal.js') },
  { name: 'backup', summary: 'Take a base backup of one or more servers', load: () => import('./commands/backup.js') },
  { name: 'check', summary: 'Check the configuration and connections of servers', load: () => import('./commands/check.js') },
  { name: 'check-backup', summary: 'Check that the WAL files a backup needs are archived', load: () => import('./commands/check-backup.js') },
  { name: 'check-wal-archive', summary: 'Check that the WAL archive is ready for a new server (no WALs of another cluster)', load: () => import('./commands/check-wal-archive.js') },
  { name: 'config-switch', summary: 'Apply a configuration model to a server, or stop applying one', load: () => import('./commands/config-switch.js') },
  { name: 'config-update', summary: 'Change options of servers and models from a JSON document', load: () => import('./commands/config-update.js') },
  { name: 'cron', summary: 'Run maintenance: WAL streaming, archiving, backup checks', load: () => import('./commands/cron.js') },
  { name: 'delete', summary: 'Delete a backup and the WAL files no other backup needs', load: () => import('./commands/delete.js') },
  { name: 'diagnose', summary: 'Print one JSON document describing the installation, for support', load: () => import('./commands/diagnose.js') },
  { name: 'drill', summary: 'Restore a backup into a sandbox, replay, promote and check it: a recovery drill (barman-ts)', load: () => import('./commands/drill.js') },
  { name: 'generate-manifest', summary: 'Write a backup_manifest for a backup that has none', load: () => import('./commands/generate-manifest.js') },
  { name: 'get-wal', summary: 'Send a WAL file from the archive (restore_command side)', load: () => import('./commands/get-wal.js') },
  { name: 'keep', summary: 'Keep a backup whatever the retention policy says, show or release the keep', load: () => import('./commands/keep.js') },
  { name: 'list-backups', aliases: ['list-backup'], summary: 'List the backups of servers', load: () => import('./commands/list-backups.js') },
  { name: 'list-drills', summary: 'List the recovery drills of a server and their results (barman-ts)', load: () => import('./commands/list-drills.js') },
  { name: 'list-files', summary: 'List the files of a backup (data, WALs)', load: () => import('./commands/list-files.js') },
  { name: 'list-processes', aliases: ['list-process'], summary: 'List the barman subprocesses running for a server', load: () => import('./commands/list-processes.js') },
  { name: 'list-servers', aliases: ['list-server'], summary: 'List the configured servers', load: () => import('./commands/list-servers.js') },
  { name: 'lock-directory-cleanup', summary: 'Remove lock files that no process holds', load: () => import('./commands/lock-directory-cleanup.js') },
  { name: 'metrics', summary: 'Print Prometheus metrics for servers (textfile collector format)', load: () => import('./commands/metrics.js') },
  { name: 'put-wal', summary: 'Receive a WAL file on stdin (barman-wal-archive side)', load: () => import('./commands/put-wal.js') },
  { name: 'rebuild-xlogdb', summary: 'Rebuild the WAL catalog (xlog.db) from the archive', load: () => import('./commands/rebuild-xlogdb.js') },
  { name: 'receive-wal', summary: 'Stream WAL with pg_receivewal into streaming/', load: () => import('./commands/receive-wal.js') },
  { name: 'replication-status', summary: 'Show the standbys and WAL streamers of servers', load: () => import('./commands/replication-status.js') },
  { name: 'restore', aliases: ['recover'], summary: 'Restore a backup into a directory, optionally to a point in time', load: () => import('./commands/restore.js') },
  { name: 'show-backup', aliases: ['show-backups'], summary: 'Show the details of a backup', load: () => import('./commands/show-backup.js') },
  { name: 'show-servers', aliases: ['show-server'], summary: 'Show the configuration of servers', load: () => import('./commands/show-servers.js') },
  { name: 'status', summary: 'Show the status of servers', load: () => import('./commands/status.js') },
  { name: 'switch-wal', aliases: ['switch-xlog'], summary: 'Force PostgreSQL to switch to a new WAL file', load: () => import('./commands/switch-wal.js') },
  { name: 'sync-backup', summary: 'Passive node: copy one backup of the primary backup server', load: () => import('./commands/sync-backup.js') },
  { name: 'sync-info', summary: 'Print what a passive node needs to mirror this server (JSON); --primary: ask the primary', load: () => import('./commands/sync-info.js') },
  { name: 'sync-wals', summary: 'Passive node: copy the new WAL files of the primary backup server', load: () => import('./commands/sync-wals.js') },
  { name: 'terminate-process', summary: 'Stop a barman subprocess of a server (see list-processes)', load: () => import('./commands/terminate-process.js') },
  { name: 'verify-backup', aliases: ['verify'], summary: 'Check a backup against its manifest with pg_verifybackup', load: () => import('./commands/verify-backup.js') },
];
