import type { Command } from 'commander';
import { syncBackup } from '../../geo/sync-backup.js';
import type { CliContext } from '../context.js';
import { progressEvents, progressLine } from '../progress.js';

export function define(cmd: Command): void {
  cmd
    .argument('<server>', 'passive server name')
    .argument('<backup_id>', 'ID of the primary\'s backup to copy on this passive node')
    .addHelpText(
      'after',
      `
Geo-redundancy, on a passive node (primary_ssh_command set): copies backup BACKUP_ID of the
primary, as described by the last primary.info ('barman sync-info --primary SRV', which cron
runs), into the local catalog. 'barman cron' starts it by itself, one backup at a time.

While it copies, the backup is SYNCING. Files come with rsync through primary_ssh_command
(parallel_jobs rsync workers, bandwidth_limit, network_compression); unchanged files are taken
from the nearest local backup (hard links with reuse_backup = link, local copies otherwise), so
a new backup only moves what changed. The copy is checked against the primary's listing (every
file, its size) and, when the backup has a backup_manifest, by pg_verifybackup (every checksum);
then it is synced to disk and becomes DONE once its WAL files are here too (WAITING_FOR_WALS
until sync-wals brings them). Any failure leaves it FAILED ("failure syncing server S backup ID:
reason"); the next run resumes the copy without sending again the files already complete.

Nothing is copied when the backup is already here, when the local retention policy would delete
it at once, or when the primary no longer has it (a failed local copy is then removed).

Exit status: 0 when the backup is synced (or nothing was needed); 1 when the copy failed, the
server is not passive, primary.info is missing, or another sync of this backup runs.

Example:
  barman sync-backup pg 20240901T103000`,
    );
}

export async function run(ctx: CliContext, args: string[]): Promise<void> {
  const [name = '', id = ''] = args;
  const { out } = ctx;
  const srv = ctx.server(name);
  const bar = progressLine(`${srv.name}: syncing ${id}`, { enabled: out.progressAllowed, scale: 1024 });
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const res = await syncBackup(srv, id, progressEvents(out, bar), abort.signal);
    out.set([srv.name], { backup_id: id, outcome: res.outcome, status: res.status ?? null });
  } finally {
    bar.end();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
