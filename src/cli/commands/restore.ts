import { Option, type Command } from 'commander';
import type { ServerConfig } from '../../config/config.js';
import { LockBusyError } from '../../catalog/lock.js';
import { restoreBackup, type RestoreRequest, type RestoreResult } from '../../recovery/recover.js';
import { BarmanError } from '../../util/errors.js';
import { humanDuration } from '../../util/format.js';
import { archiveWal } from '../../wal/archiver.js';
import type { CliContext } from '../context.js';
import { intOption, targetOptions } from '../restore-options.js';
import { progressLine } from '../progress.js';

interface Opts {
  targetTli?: string;
  targetTime?: string;
  targetXid?: string;
  targetLsn?: string;
  targetName?: string;
  targetImmediate?: boolean;
  exclusive?: boolean;
  targetAction?: string;
  standbyMode?: boolean;
  tablespace?: string[];
  remoteSshCommand?: string;
  stagingWalDirectory?: string;
  bwlimit?: string;
  retryTimes?: string;
  retrySleep?: string;
  retry?: boolean;
  jobs?: string;
  jobsStartBatchPeriod?: string;
  jobsStartBatchSize?: string;
  getWal?: boolean;
  networkCompression?: boolean;
  deltaRestore?: boolean;
  stagingPath?: string;
  stagingLocation?: string;
  combineMode?: string;
  recoveryStagingPath?: string;
  localStagingPath?: string;
  recoveryConfFilename?: string;
  recoveryOptionPort?: string;
  snapshotRecoveryInstance?: string;
  snapshotRecoveryZone?: string;
  gcpZone?: string;
  azureResourceGroup?: string;
  awsRegion?: string;
}

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

export function define(cmd: Command): void {
  cmd
    .usage('[options] <server> <backup_id> <destination_directory>')
    .argument('<server>', 'name of the server the backup belongs to')
    .argument(
      '<backup_id>',
      "backup ID, a backup name, a shortcut (latest|last, oldest|first, latest-full|last-full, last-failed), or 'auto'",
    )
    .argument('<destination_directory>', 'directory to restore into (created if missing; must be empty)')
    .option('--target-time <timestamp>', "recover up to this time, e.g. '2024-05-01 12:00:00+02:00' (no time zone = local time of this host)")
    .option('--target-xid <xid>', 'recover up to this transaction ID')
    .option('--target-lsn <lsn>', 'recover up to this WAL location, e.g. 0/3000060 (PostgreSQL >= 10)')
    .option('--target-name <name>', 'recover up to this restore point (created with pg_create_restore_point())')
    .option('--target-immediate', 'stop as soon as the backup is consistent (PostgreSQL >= 9.4)')
    .option('--target-tli <tli>', "recover along this timeline: a number, 'current' or 'latest'")
    .option('--exclusive', 'stop just before the target (with --target-time, --target-xid or --target-lsn)')
    .addOption(new Option('--target-action <action>', 'what PostgreSQL does when the target is reached (needs a target)').choices(['pause', 'shutdown', 'promote']))
    .option('--standby-mode', 'start the restored server as a standby (standby.signal / standby_mode)')
    .option('--tablespace <NAME:LOCATION>', 'restore tablespace NAME into LOCATION instead of its original path (repeatable)', collect)
    .option('--remote-ssh-command <command>', 'restore on the recovery host through this SSH command, e.g. "ssh postgres@db1" (checks and copy run there)')
    .option('--staging-wal-directory <dir>', 'for a point-in-time recovery, put the WAL files here instead of <destination>/barman_wal')
    .option('--get-wal', "make PostgreSQL fetch WAL with 'barman get-wal' instead of copying it now (default: recovery_options)")
    .option('--no-get-wal', 'copy the WAL files now even if recovery_options contains get-wal')
    .option('--delta-restore', 'reuse an existing destination directory: only changed files are copied (rsync with checksums)')
    .option('--no-delta-restore', 'ignore delta-restore in recovery_options')
    .option('-j, --jobs <n>', 'concurrent file copies (default: parallel_jobs, at least 4)')
    .option('--recovery-conf-filename <file>', 'PostgreSQL >= 12: file, relative to the destination, that receives the recovery settings (default postgresql.auto.conf)')
    .option('--bwlimit <kbps>', 'bandwidth limit of the rsync copies, in KB/s (remote restores only; ignored locally)')
    .option('--retry-times <n>', 'retries of a failed rsync copy (remote restores only; default basebackup_retry_times)')
    .option('--retry-sleep <seconds>', 'seconds between retries (remote restores only; default basebackup_retry_sleep)')
    .option('--no-retry', 'do not retry a failed copy')
    .option('--jobs-start-batch-period <seconds>', 'remote restores only: seconds between starting two batches of copy sessions (default: parallel_jobs_start_batch_period, 1)')
    .option('--jobs-start-batch-size <n>', 'remote restores only: copy sessions started per batch (default: parallel_jobs_start_batch_size, 10)')
    .option('--network-compression', 'compress data in transit: rsync -z (remote restores only)')
    .option('--no-network-compression', 'do not compress data in transit')
    .option('--staging-path <path>', 'local staging area of a remote restore (compressed backups are extracted there, WAL decompressed there); default: staging_path, local_staging_path, else /tmp')
    .addOption(new Option('--staging-location <where>', 'where the staging area is: local (this host); remote is not supported by barman-ts (refused)').choices(['local', 'remote']))
    .addOption(new Option('--combine-mode <mode>', 'pg_combinebackup mode for incremental backups; barman-ts refuses to restore incremental backups, so it changes nothing').choices(['copy', 'link', 'clone', 'copy-file-range']))
    .option('--recovery-staging-path <path>', 'Barman: staging directory on the recovery host; not supported by barman-ts (refused): use --staging-path')
    .option('--local-staging-path <path>', 'deprecated: same as --staging-path')
    .option('--recovery-option-port <port>', 'port of the Barman host for barman-wal-restore (remote restores only)')
    .option('--snapshot-recovery-instance <name>', 'snapshot backups: the instance the snapshot disks are attached to')
    .option('--snapshot-recovery-zone <zone>', 'snapshot backups (GCP): zone of the recovery instance')
    .option('--gcp-zone <zone>', 'snapshot backups (GCP): zone of the recovery instance')
    .option('--azure-resource-group <group>', 'snapshot backups (Azure): resource group of the recovery instance')
    .option('--aws-region <region>', 'snapshot backups (AWS): region of the recovery instance')
    .addHelpText(
      'after',
      `
Restores a backup of SERVER into DESTINATION_DIRECTORY on this host and prepares it for
recovery. The destination (and every tablespace location) must be empty or absent, and no
PostgreSQL server may be running on it. Files belong to the user running barman: make the
directory owned by the PostgreSQL user before starting the server.

With --remote-ssh-command "ssh postgres@HOST" the restore goes to HOST instead: the checks
run there, files are sent with rsync over that command (-j parallel copies, --bwlimit,
--network-compression) and belong to the ssh login user; compressed backups and WAL are
prepared in a local staging directory (--staging-path, default /tmp) removed afterwards.
The configuration files and the recovery signal file are written last.

What is done:
  * the base backup is copied (pg_wal/, pg_log/, log/, postmaster.pid, recovery.conf,
    recovery.signal, standby.signal and tablespace_map are left out); tablespaces go to
    their original paths or to --tablespace locations, linked from pg_tblspc/;
    compressed backups (base.tar.gz/.lz4/.zst) are extracted with tar; encrypted ones
    (base.tar.gz.gpg, encryption = gpg) are decrypted on the way into tar with the
    passphrase printed by encryption_passphrase_command (the same for encrypted WAL);
  * the WAL files recovery needs are copied from the archive, decompressed: into pg_wal/
    for a plain restore (recovery replays them all), into barman_wal/ (or
    --staging-wal-directory) for a point-in-time recovery; with --get-wal, PostgreSQL
    fetches them itself through 'barman get-wal';
  * for a point-in-time recovery, get-wal or a standby: recovery settings are appended to
    postgresql.auto.conf with a recovery.signal (standby.signal) file, or written to
    recovery.conf before PostgreSQL 12;
  * archive_command is disabled in the restored postgresql.conf / postgresql.auto.conf
    (the original line is kept, prefixed with #BARMAN#; the files as restored are saved
    with an .origin suffix), so the restored server cannot overwrite the archive;
  * everything is flushed to stable storage before success is reported.

Point-in-time recovery: at most one of --target-time, --target-xid, --target-lsn,
--target-name and --target-immediate; --target-tli alone also makes a PITR. A target time
before the end of the backup is refused.

BACKUP_ID 'auto' picks the newest backup that ended before --target-time (or
--target-lsn), on --target-tli if given, else the latest backup.

Examples:
  barman restore pg latest /var/lib/postgresql/15/restore
  barman restore --target-time '2024-05-01 12:00:00+02:00' --target-action promote pg auto /srv/pitr
  barman restore --tablespace tbs1:/srv/tbs1_restored pg 20240501T020000 /srv/restore
  barman recover --remote-ssh-command "ssh postgres@db2" -j 4 pg latest /var/lib/postgresql/15/main

Exit status: 0 on success, 1 on any error (nothing is written when validation fails).`,
    );
}


export { humanDuration };

/**
 * The local staging directory of a remote restore: --staging-path (or the deprecated
 * --local-staging-path), then staging_path, then the deprecated local_staging_path (Barman
 * 3.15's order); null = /tmp.
 */
export function stagingPathOf(opts: Pick<Opts, 'stagingPath' | 'localStagingPath'>, srv: Pick<ServerConfig, 'staging_path' | 'local_staging_path'>): string | null {
  return opts.stagingPath ?? opts.localStagingPath ?? srv.staging_path ?? srv.local_staging_path ?? null;
}

/** The result as the JSON document of `-f json` (snake_case, like Barman's JSON output). */
export function resultToJson(r: RestoreResult): Record<string, unknown> {
  const line = (c: { file: string; line: number; key: string; value: string }) => ({ file: c.file, line: c.line, key: c.key, value: c.value });
  return {
    backup_id: r.backupId,
    destination_directory: r.destination,
    remote_ssh_command: r.remoteSshCommand,
    start_time: r.startTime.format(),
    elapsed_time: humanDuration(r.elapsedSeconds),
    elapsed_seconds: r.elapsedSeconds,
    pitr: r.pitr,
    target: r.target,
    tablespaces: r.tablespaces.map((t) => ({ name: t.name, oid: t.oid, location: t.location })),
    get_wal: r.getWal,
    delta_restore: r.deltaRestore,
    standby_mode: r.standbyMode,
    copy: { method: r.copy.method, files: r.copy.files, bytes: r.copy.bytes, seconds: r.copy.seconds },
    wal: {
      destination: r.wal.destination,
      files: r.wal.files,
      bytes: r.wal.bytes,
      seconds: r.wal.seconds,
      target_timeline: r.wal.targetTimeline,
      missing: r.wal.missing,
    },
    recovery_files: r.recoveryFiles,
    signal_file: r.signalFile,
    changes: r.changes.map(line),
    commented: r.commented.map(line),
    warnings: r.dangerous.map(line),
    missing_files: r.missingFiles,
    durability: r.durability,
  };
}

async function archivePending(srv: ServerConfig): Promise<void> {
  try {
    await archiveWal(srv);
  } catch (err) {
    // cron (or another archive-wal) is on it right now: fine
    if (!(err instanceof LockBusyError)) throw err;
  }
}

export async function run(ctx: CliContext, [serverName, backupId, destination]: string[], opts: Opts): Promise<void> {
  const { out } = ctx;
  const srv = ctx.server(serverName ?? '', { allowInactive: true });
  if (opts.recoveryStagingPath !== undefined) {
    throw new BarmanError('--recovery-staging-path: barman-ts does not support staging on the recovery host (use --staging-path, a directory of this host)');
  }
  const jobs = intOption('--jobs', opts.jobs, 1);
  const bwlimit = intOption('--bwlimit', opts.bwlimit);
  const retryTimes = opts.retry === false ? 0 : intOption('--retry-times', opts.retryTimes);
  const retrySleep = intOption('--retry-sleep', opts.retrySleep);
  const jobsStartBatchPeriod = intOption('--jobs-start-batch-period', opts.jobsStartBatchPeriod, 0);
  const jobsStartBatchSize = intOption('--jobs-start-batch-size', opts.jobsStartBatchSize, 1);

  const req: RestoreRequest = {
    backupId: backupId ?? '',
    destination: destination ?? '',
    ...targetOptions(opts),
    targetAction: opts.targetAction,
    standbyMode: opts.standbyMode,
    tablespaces: opts.tablespace ?? [],
    remoteSshCommand: opts.remoteSshCommand ?? null,
    stagingWalDirectory: opts.stagingWalDirectory ?? null,
    getWal: opts.getWal,
    deltaRestore: opts.deltaRestore,
    networkCompression: opts.networkCompression,
    stagingLocation: opts.stagingLocation ?? null,
    recoveryConfFilename: opts.recoveryConfFilename ?? null,
    jobs,
    bwlimit,
    snapshotRecoveryInstance: opts.snapshotRecoveryInstance ?? null,
    snapshotOptions: (
      [
        ['--snapshot-recovery-zone', opts.snapshotRecoveryZone],
        ['--gcp-zone', opts.gcpZone],
        ['--azure-resource-group', opts.azureResourceGroup],
        ['--aws-region', opts.awsRegion],
      ] as const
    )
      .filter(([, v]) => v !== undefined)
      .map(([n]) => n),
    stagingPath: stagingPathOf(opts, srv),
    recoveryOptionPort: intOption('--recovery-option-port', opts.recoveryOptionPort, 1),
    retryTimes,
    retrySleep,
    jobsStartBatchPeriod,
    jobsStartBatchSize,
  };

  const dataBar = progressLine('Copying the base backup', { enabled: out.progressAllowed });
  const walBar = progressLine('Copying WAL files', { enabled: out.progressAllowed, unit: 'files' });
  const endBars = () => {
    dataBar.end();
    walBar.end();
  };
  let result: RestoreResult;
  try {
    result = await restoreBackup(srv, req, {
      info: (m) => {
        endBars();
        out.info(m);
      },
      warning: (m) => {
        endBars();
        out.warning(m);
      },
      progress: (done, total, phase) => (phase === 'data' ? dataBar : walBar).update(done, total),
      archive: () => archivePending(srv),
    });
  } finally {
    endBars();
  }

  out.debug(
    `copied ${result.copy.files} files, ${result.copy.bytes} bytes in ${result.copy.seconds.toFixed(2)} s (${result.copy.method}); ` +
      `${result.wal.files} WAL files in ${result.wal.seconds.toFixed(2)} s; durability: ${result.durability}`,
  );
  out.set([srv.name], resultToJson(result));

  if (result.changes.length > 0 || result.commented.length > 0) {
    out.info('');
    out.info('IMPORTANT');
    out.info('These settings have been modified to prevent data losses');
    out.info('');
    for (const c of result.changes) out.info(`${c.file} line ${c.line}: ${c.key} = ${c.value}`);
    for (const c of result.commented) out.info(`${c.file} line ${c.line}: ${c.key} = '${c.value}' (commented out)`);
  }
  if (result.dangerous.length > 0) {
    out.info('');
    out.info('WARNING');
    out.info('You are required to review the following options as potentially dangerous');
    out.info('');
    for (const c of result.dangerous) out.info(`${c.file} line ${c.line}: ${c.key} = ${c.value}`);
  }
  if (result.missingFiles.length > 0) {
    out.info('');
    out.info('WARNING');
    out.info('The following configuration files have not been saved during backup, hence they have not been restored.');
    out.info('You need to manually restore them in order to start the recovered PostgreSQL instance:');
    out.info('');
    for (const f of result.missingFiles) out.info(`    ${f}`);
  }
  if (result.walDirectoryToRemove && result.standbyMode) {
    out.info('');
    out.info(`After the recovery, please remember to remove the "${result.walDirectoryToRemove}" directory.`);
  }
  if (result.getWal) {
    out.info('');
    out.info("WARNING: 'get-wal' is in the specified 'recovery_options'.");
    out.info(`Before you start up the PostgreSQL server, please review the ${result.recoveryFiles.map((f) => f.slice(result.destination.length + 1)).join(', ') || 'recovery configuration'} file`);
    out.info("inside the target directory. Make sure that 'restore_command' can be executed by the PostgreSQL user.");
  }
  out.info('');
  out.info(`${completedWords(ctx.invokedAs)} (start time: ${result.startTime.format()}, elapsed time: ${humanDuration(result.elapsedSeconds)})`);
  out.info('Your PostgreSQL server has been successfully prepared for recovery!');
}

/**
 * The last line's first words: `barman recover` ends as Barman 3.4 does ("Recovery
 * completed"), `barman restore` (a command Barman added later) as Barman 3.17 does.
 */
export function completedWords(invokedAs: string): string {
  return invokedAs === 'recover' ? 'Recovery completed' : 'Restore operation completed';
}
