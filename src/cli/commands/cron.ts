import type { Command } from 'commander';
import { runCron } from '../../maintenance/cron.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .option('--keep-descriptors', 'let the background processes write to this terminal (debugging)')
    .addHelpText(
      'after',
      `
Runs the periodic maintenance of every active server; run it every minute from the barman
user's crontab:  * * * * * barman cron
For each server it keeps 'receive-wal' running when streaming_archiver = on (restarting it after
PostgreSQL restarts), starts 'archive-wal' in the background when WAL files are waiting in
incoming/ or streaming/, marks backups whose process died as FAILED, turns a
WAITING_FOR_WALS backup into DONE once its WAL files are archived, and enforces the retention
policy (deleting OBSOLETE backups and the WAL only they needed; never a kept backup, never
below minimum_redundancy). With drill_interval set (barman-ts), it starts 'barman drill' in
the background when a recovery drill of the server is due (one per host at a time, never
while a backup of the server runs). Two crons never work on the same server at the same time: a server
whose cron lock is held is skipped with a message. It returns quickly. At the end, when
lock_directory_cleanup is on (the default), lock files that no process holds are removed.

Messages: "Starting streaming archiver for server S", "Starting WAL archiving for server S",
"Backup ID of server S is now DONE", "Starting recovery drill for server S (backup ID: ...)",
and warnings for interrupted backups.

Exit status: 0 when every server was handled; 1 when anything failed for a server (the error
names it; the other servers are still handled) or the configuration cannot be read.

Examples:
  * * * * * barman cron                      (crontab of the barman user)
  barman -d cron --keep-descriptors          (debugging: see what the children print)`,
    );
}

export async function run(ctx: CliContext, _args: string[], opts: { keepDescriptors?: boolean }): Promise<void> {
  const servers = ctx.servers([], { skipPassive: false });
  await runCron(ctx.config, servers, { info: (m) => ctx.out.info(m), warning: (m) => ctx.out.warning(m), error: (m) => ctx.out.error(m) }, opts.keepDescriptors === true);
}
