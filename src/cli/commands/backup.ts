import type { Command } from 'commander';
import { takeBackup } from '../../backup/backup.js';
import { archiveWal } from '../../wal/archiver.js';
import { LockBusyError } from '../../catalog/lock.js';
import { BarmanError } from '../../util/errors.js';
import type { CliContext } from '../context.js';
import { progressLine } from '../progress.js';
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
}

export function define(cmd: Command): void {
  cmd
    .argument('<server...>', "server names, or 'all'")
    .option('--immediate-checkpoint', 'ask PostgreSQL for an immediate checkpoint (faster start, I/O spike)')
    .option('--no-immediate-checkpoint', 'let PostgreSQL spread the start checkpoint (default, unless immediate_checkpoint = on)')
    .option('--name <name>', 'a friendly name for the backup, usable wherever a backup ID is expected')
    .option('-w, --wait', 'wait until every WAL file the backup needs is archived (status DONE)')
    .option('--wait-timeout <seconds>', 'with --wait: give up waiting after this many seconds (the backup stays WAITING_FOR_WALS)')
    .option('--reuse-backup [mode]', 'rsync only: off, copy or link (bare = link)')
    .option('-j, --jobs <n>', 'rsync only: parallel copy workers')
    .option('--jobs-start-batch-period <s>', 'rsync only')
    .option('--jobs-start-batch-size <n>', 'rsync only')
    .option('--bwlimit <kbps>', 'rsync only: bandwidth limit')
    .option('--retry-times <n>', 'retries of the copy on failure')
    .option('--retry-sleep <s>', 'seconds between retries')
    .option('--no-retry', 'no retries')
    .option('--manifest', 'rsync only: generate backup_manifest')
    .option('--no-manifest', 'rsync only: no backup_manifest')
    .option('--incremental <parent>', 'PostgreSQL 17 incremental backup (not supported yet)')
    .option('--keepalive-interval <s>', 'keepalive interval on the PostgreSQL connection')
    .option('--check-timeout <s>', 'timeout of the pre-backup checks')
    .addHelpText(
      'after',
      `
Takes a physical base backup of each server with its backup_method. With backup_method = postgres
the copy is made by pg_basebackup over the replication protocol (plain format, or tar when
backup_compression is set), and the WAL is left to the archiver: the backup is WAITING_FOR_WALS
until every WAL file between its start and its end is archived, then DONE. 'barman cron' does that
step; --wait does it now.

With backup_method = rsync (over ssh_command) or local-rsync, PostgreSQL's concurrent backup API
is used and rsync copies the data directory and tablespaces: -j/--jobs copy workers,
--reuse-backup to hard-link (link) or locally copy (copy) unchanged files from the previous
backup, --bwlimit to throttle.

Exit status: 0 when every backup is DONE or WAITING_FOR_WALS, 1 when any failed.`,
    );
}

export async function run(ctx: CliContext, names: string[], opts: Opts): Promise<void> {
  const { out } = ctx;
  if (opts.incremental) throw new BarmanError('incremental backups are not supported yet');
  const waitTimeout = opts.waitTimeout !== undefined ? Number(opts.waitTimeout) : undefined;
  if (waitTimeout !== undefined && !(waitTimeout >= 0)) throw new BarmanError(`invalid --wait-timeout '${opts.waitTimeout}'`, 2);
  const rsyncOpts = rsyncOptions(opts);
  for (const srv of ctx.servers(names, { skipPassive: true })) {
    const bar = progressLine(`${srv.name}: copying`, { enabled: out.progressAllowed, scale: 1024 /* pg_basebackup counts kB */ });
    try {
      const entry = await takeBackup(
        srv,
        { immediateCheckpoint: opts.immediateCheckpoint, name: opts.name, wait: opts.wait, waitTimeoutSec: waitTimeout, ...rsyncOpts },
        {
          info: (m) => {
            bar.end();
            out.info(m);
          },
          warning: (m) => {
            bar.end();
            out.warning(m);
          },
          progress: (d, t) => bar.update(d, t),
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
      if (err instanceof BarmanError) out.error(`${srv.name}: ${err.message}`);
      else throw err;
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
