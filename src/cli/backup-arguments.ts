/**
 * The `<server> <backup_id>` pair of the commands that act on one backup (show-backup,
 * check-backup, keep, delete, list-files, generate-manifest, verify-backup): one definition, so
 * that their help pages name the same shortcuts resolveBackupId accepts.
 */
import type { Command } from 'commander';
import { loadCatalog, resolveBackupId, type BackupEntry } from '../catalog/catalog.js';
import type { ServerConfig } from '../config/config.js';
import type { CliContext } from './context.js';

export function serverAndBackupArguments(cmd: Command): Command {
  return cmd
    .argument('<server>', 'server name')
    .argument('<backup_id>', 'backup ID, name, or latest|last, oldest|first, last-failed, latest-full|last-full');
}

/** The server and the backup the two arguments name (unknown server or backup: BarmanError). */
export async function namedBackup(
  ctx: CliContext,
  args: readonly string[],
  opts: { allowInactive?: boolean } = {},
): Promise<{ srv: ServerConfig; entry: BackupEntry }> {
  const [name = '', backupArg = ''] = args;
  const srv = ctx.server(name, opts);
  const entry = resolveBackupId(srv, await loadCatalog(srv), backupArg);
  return { srv, entry };
}
