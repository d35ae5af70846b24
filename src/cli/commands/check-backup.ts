import type { Command } from 'commander';
import { checkBackup } from '../../backup/check-backup.js';
import { loadCatalog, resolveBackupId } from '../../catalog/catalog.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .argument('<server>', 'server name')
    .argument('<backup_id>', 'backup ID, name or shortcut')
    .addHelpText(
      'after',
      '\nChecks that the WAL files a WAITING_FOR_WALS backup needs are in the archive: the backup becomes\nDONE when they all are, FAILED when one that should be there is missing.',
    );
}

export async function run(ctx: CliContext, args: string[]): Promise<void> {
  const [name = '', backupArg = ''] = args;
  const srv = ctx.server(name);
  const entry = resolveBackupId(srv, await loadCatalog(srv), backupArg);
  const outcome = await checkBackup(srv, entry);
  if (outcome === 'failed') ctx.out.error(`Backup ${entry.id} of server ${srv.name} FAILED: ${entry.info.error ?? ''}`);
  else if (outcome === 'done') ctx.out.debug(`Backup ${entry.id} of server ${srv.name} is now DONE`);
}
