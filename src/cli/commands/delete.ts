import type { Command } from 'commander';
import { DeleteRefusedError, deleteBackup } from '../../catalog/delete.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .argument('<server>', 'server name')
    .argument('<backup_id>', 'backup ID, name or shortcut')
    .addHelpText(
      'after',
      `
Deletes a backup (and its incremental descendants). When it is the oldest backup, the WAL files
older than the next backup are deleted too. Kept backups, and DONE backups needed to satisfy
minimum_redundancy, are not deleted (exit status 1).`,
    );
}

export async function run(ctx: CliContext, args: string[]): Promise<void> {
  const { out } = ctx;
  const [name = '', backupArg = ''] = args;
  const srv = ctx.server(name);
  try {
    await deleteBackup(srv, backupArg, { info: (m) => out.info(m), warning: (m) => out.warning(m) });
  } catch (err) {
    if (!(err instanceof DeleteRefusedError)) throw err;
    out.warning(err.message);
    out.exitCode = Math.max(out.exitCode, 1);
  }
}
