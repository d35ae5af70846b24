import type { Command } from 'commander';
import { prestartBackupAgents, takeBackup } from '../../backup/backup.js';
import { BackupPrecheckError, failedCheckLine, precheckBackup } from '../../backup/precheck.js';
import { redact } from '../../util/redact.js';
import { archiveWal } from '../../wal/archiver.js';
import { LockBusyError } from '../../catalog/lock.js';
import { BarmanError } from '../../util/errors.js';
import type { CliContext } from '../context.js';
import { progressEvents, progressLine } from '../progress.js';
import type { ReuseMode } from '../../backup/rsync-plan.js';

interface Opts {
  immediateCheckpoint?: boolean;
  name?: string;
  wait?: boolean;
  waitTimeout?: string;
  reuseBackup?: string | boolean;
  jobs?: string;
  retryTimes?: string;
  retrySleep?: string;
  retry?: boolean;
  bwlimit?: string;
  manifest?: boolean;
  incremental?: string;
  checkTimeout?: string;
  jobsStartBatchPeriod?: string;
  jobsStartBatchSize?: string;
  keepaliveInterval?: string;
}

export function define(cmd: Command): void {
  cmd
    .argument('<server...>', "server names, or 'all'")
    .option('--immediate-checkpoint', 'ask PostgreSQL for an immediate checkpoint (faster start, I/O spike)')
    .option('--no-immediate-checkpoint', 'let PostgreSQL spread the start checkpoint (default, unless immediate_checkpoint = on)')
    .option('--name <name>', 'a friendly name for the backup, usable wherever a backup ID is expected')
    .option('-w, --wait', 'wait until every WAL file the backup needs is archived (status DONE)')
    .option('--wait-timeout <seconds>', 'with --wait: give up waiting after this many seconds (the backup stays WAITING_FOR_WALS)')
    .option(
      '--reuse-backup [mode]',
      'rsync methods: take unchanged files from the previous backup: off, copy (local copy) or link (hard link, saves space); bare = link; default: reuse_backup',
    )
    .option('-j, --jobs <n>', 'rsync methods: number of rsync copy workers running at once (default: parallel_jobs)')
    .option('--jobs-start-batch-period <s>', 'rsync methods: seconds between starting two batches of copy workers (default: parallel_jobs_start_batch_period, 1)')
    .option('--jobs-start-batch-size <n>', 'rsync methods: copy workers started per batch (default: parallel_jobs_start_batch_size, 10)')
    .option('--bwlimit <kbps>', 'rsync methods: bandwidth limit in KB/s per rsync, 0 = none (default: bandwidth_limit)')
    .option('--retry-times <n>', 'how many times a failed copy is started again from scratch (default: basebackup_retry_times, 0)')
    .option('--retry-sleep <s>', 'seconds between two attempts (default: basebackup_retry_sleep, 30)')
    .option('--no-retry', 'do not retry a failed copy (--retry-times 0)')
    .option('--manifest', 'rsync methods: write a backup_manifest once the copy is complete (default: autogenerate_manifest); a failure to write it is only a warning')
    .option('--no-manifest', 'rsync methods: do not write a backup_manifest, whatever autogenerate_manifest says')
    .option('--incremental <parent>', 'PostgreSQL 17 incremental backup on top of backup PARENT (not supported yet: refused with an error)')
    .option('--keepalive-interval <s>', 'rsync methods: seconds between keepalive queries on the PostgreSQL session that holds the backup during the copy, 0 = none (default: keepalive_interval, 60)')
    .option('--check-timeout <s>', 'seconds allowed for the checks run before the backup starts (default: check_timeout; 0 = no limit)')
    .addHelpText(
      'after',
      `
Takes a physical base backup of each server with its backup_method. With backup_method = postgres
the copy is made by pg_basebackup over the replication protocol (plain format, or tar when
backup_compression is set), and the WAL is left to the archiver: the backup is WAITING_FOR_WALS
until every WAL file between its start and its end is archived, then DONE. 'barman cron' does that
step; --wait does it now.

With encryption = gpg (postgres method, backup_compression set, tar format), the tar files are
then encrypted with gpg for encryption_key_id (base.tar.gz.gpg ...) and backup.info says
encryption=gpg; restore decrypts them with encryption_passphrase_command.

With backup_method = rsync (over ssh_command) or local-rsync, PostgreSQL's concurrent backup API
is used and rsync copies the data directory and tablespaces: -j/--jobs copy workers,
--reuse-backup to hard-link (link) or locally copy (copy) unchanged files from the previous
backup, --bwlimit to throttle.

Before anything is written, the checks of 'barman check' run silently: a failing check stops
the backup of that server ("Impossible to start the backup", the failed checks listed, exit 1),
except the checks that do not matter for a new backup (failed backups, backup age/size, minimum
redundancy, archiver errors, WAL queues and age, standby). As in Barman, that includes WAL
arrival: a new server needs one archived WAL file ('barman switch-wal --archive SERVER'), its
replication slot and, with streaming_archiver, a running receive-wal ('barman cron').

A failed copy is started again from scratch basebackup_retry_times times (--retry-times),
basebackup_retry_sleep seconds apart (--retry-sleep); --no-retry: never.

Passive and inactive servers are skipped with a warning; servers are backed up one after the
other, and a failure of one does not stop the others. Hook scripts (pre/post_backup_script and
their retry variants) run around each backup. The new backup ID (a timestamp such as
20240901T103000) or --name can then be given to every command taking a BACKUP_ID.

Exit status: 0 when every backup is DONE or WAITING_FOR_WALS; 1 when any failed (its status is
FAILED with the error in show-backup) or a server is unknown; 2 for invalid options.

Examples:
  barman backup pg
  barman backup --wait --name before-upgrade pg
  barman backup -j 4 --reuse-backup link --bwlimit 20000 pg     (backup_method = rsync)
  barman backup all                                            (nightly from cron)`,
    );
}

export async function run(ctx: CliContext, names: string[], opts: Opts): Promise<void> {
  const { out } = ctx;
  if (opts.incremental) throw new BarmanError('incremental backups are not supported yet');
  const waitTimeout = opts.waitTimeout !== undefined ? Number(opts.waitTimeout) : undefined;
  if (waitTimeout !== undefined && !(waitTimeout >= 0)) throw new BarmanError(`invalid --wait-timeout '${opts.waitTimeout}'`, 2);
  const rsyncOpts = rsyncOptions(opts);
  const retry = retryOptions(opts);
  const checkTimeout = parseCheckTimeout(opts.checkTimeout);
  for (const srv of ctx.servers(names, { skipPassive: true })) {
    const bar = progressLine(`${srv.name}: copying`, { enabled: out.progressAllowed, scale: 1024 /* pg_basebackup counts kB */ });
    const backupOpts = { immediateCheckpoint: opts.immediateCheckpoint, name: opts.name, wait: opts.wait, waitTimeoutSec: waitTimeout, manifest: opts.manifest, ...rsyncOpts, ...retry };
    // transfer_method = agent: the copy's agents start now, while the checks run (the first one is checked).
    const agents = prestartBackupAgents(srv, backupOpts);
    try {
      await precheckBackup(srv, { checkTimeout, agents: agents ?? undefined });
      const entry = await takeBackup(
        srv,
        { ...backupOpts, agents },
        {
          ...progressEvents(out, bar),
          archive: async () => {
            try {
              await archiveWal(srv);
            } catch (err) {
              if (!(err instanceof LockBusyError)) throw err;
            }
          },
        },
      );
      bar.end();
      out.set([srv.name], { backup_id: entry.id, status: entry.info.status, error: entry.info.error });
      if (entry.info.status === 'FAILED') out.error(`Backup ${entry.id} of server ${srv.name} FAILED: ${entry.info.error ?? ''}`);
    } catch (err) {
      bar.end();
      if (err instanceof BackupPrecheckError) {
        // Barman prints only the first line; the failing checks follow so that nobody has to dig.
        out.error(err.message);
        out.set([srv.name], { status: 'NOT STARTED', failed_checks: err.failed.map((r) => ({ name: r.name, hint: r.hint })) });
        if (!out.isJson) for (const r of err.failed) process.stderr.write(`${redact(failedCheckLine(r))}\n`);
      } else if (err instanceof BarmanError) out.error(`${srv.name}: ${err.message}`);
      else throw err;
    } finally {
      await agents?.discard();
    }
  }
}

/** --reuse-backup [off|copy|link] (bare = link), -j/--jobs N, --bwlimit KBPS: checked before any backup starts. */
function rsyncOptions(opts: Opts): { reuseBackup?: ReuseMode; jobs?: number; bwlimit?: number } {
  const res: { reuseBackup?: ReuseMode; jobs?: number; bwlimit?: number } = {};
  if (opts.reuseBackup !== undefined) {
    const mode = opts.reuseBackup === true ? 'link' : String(opts.reuseBackup);
    if (mode !== 'off' && mode !== 'copy' && mode !== 'link') throw new BarmanError(`invalid --reuse-backup '${mode}' (expected off, copy or link)`, 2);
    res.reuseBackup = mode;
  }
  if (opts.jobs !== undefined) {
    if (!/^\d+$/.test(opts.jobs) || Number(opts.jobs) < 1) throw new BarmanError(`invalid --jobs '${opts.jobs}' (expected a positive integer)`, 2);
    res.jobs = Number(opts.jobs);
  }
  if (opts.bwlimit !== undefined) {
    if (!/^\d+$/.test(opts.bwlimit)) throw new BarmanError(`invalid --bwlimit '${opts.bwlimit}' (expected KB/s, 0 = unlimited)`, 2);
    res.bwlimit = Number(opts.bwlimit);
  }
  return res;
}

type CountOptions = { retryTimes?: number; retrySleep?: number; startBatchSize?: number; startBatchPeriod?: number; keepaliveInterval?: number };

/**
 * --retry-times N / --retry-sleep S / --no-retry (N = 0), --jobs-start-batch-size N (>= 1),
 * --jobs-start-batch-period S, --keepalive-interval S: checked before any backup starts.
 */
function retryOptions(opts: Opts): CountOptions {
  const res: CountOptions = {};
  const table = [
    ['--retry-times', opts.retryTimes, 'retryTimes', 0],
    ['--retry-sleep', opts.retrySleep, 'retrySleep', 0],
    ['--jobs-start-batch-size', opts.jobsStartBatchSize, 'startBatchSize', 1],
    ['--jobs-start-batch-period', opts.jobsStartBatchPeriod, 'startBatchPeriod', 0],
    ['--keepalive-interval', opts.keepaliveInterval, 'keepaliveInterval', 0],
  ] as const;
  for (const [name, text, key, min] of table) {
    if (text === undefined) continue;
    if (!/^\d+$/.test(text.trim()) || Number(text.trim()) < min) throw new BarmanError(`invalid ${name} '${text}' (expected an integer >= ${min})`, 2);
    res[key] = Number(text.trim());
  }
  if (opts.retry === false) res.retryTimes = 0;
  return res;
}

/** --check-timeout SECONDS for the pre-backup checks (0 = no limit; default check_timeout). */
function parseCheckTimeout(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text.trim())) throw new BarmanError(`invalid --check-timeout '${text}' (expected seconds)`, 2);
  return Number(text.trim());
}
