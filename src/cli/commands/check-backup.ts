import type { Command } from 'commander';
import { checkBackup } from '../../backup/check-backup.js';
import { namedBackup, serverAndBackupArguments } from '../backup-arguments.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  serverAndBackupArguments(cmd)
    .addHelpText(
      'after',
      `
Checks that the WAL files a WAITING_FOR_WALS backup needs (from its begin WAL to its end WAL)
are in the archive, and updates its status: DONE when they all are; FAILED ("At least one WAL
file is missing. The first missing WAL file is X") when one of them is absent although later
segments of the same timeline are already archived; otherwise it stays WAITING_FOR_WALS (the
WAL has not arrived yet). Backups in any other status are left as they are.

'barman cron' does this for the oldest waiting backup of each server on every run, and
'barman backup --wait' waits for it; run it by hand to update a backup at once, e.g. after
running archive-wal. Nothing is printed unless the backup fails (-d shows "is now DONE").

Exit status: 0 when the backup is DONE or still waiting; 1 when it became FAILED, or for an
unknown server or backup.

Examples:
  barman check-backup pg latest
  barman archive-wal pg && barman check-backup pg 20240901T103000`,
    );
}

export async function run(ctx: CliContext, args: string[]): Promise<void> {
  const { srv, entry } = await namedBackup(ctx, args);
  const outcome = await checkBackup(srv, entry);
  if (outcome === 'failed') ctx.out.error(`Backup ${entry.id} of server ${srv.name} FAILED: ${entry.info.error ?? ''}`);
  else if (outcome === 'done') ctx.out.debug(`Backup ${entry.id} of server ${srv.name} is now DONE`);
}
