import type { Command } from 'commander';
import { DeleteRefusedError, deleteBackup } from '../../catalog/delete.js';
import { serverAndBackupArguments } from '../backup-arguments.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  serverAndBackupArguments(cmd)
    .addHelpText(
      'after',
      `
Deletes a backup (and its incremental descendants). When it is the oldest backup, the WAL files
older than the next backup are deleted too. Kept backups, and DONE backups needed to satisfy
minimum_redundancy, are not deleted (exit status 1).

Output:
  Deleting backup 20240901T103000 for server pg
  Delete associated WAL segments:
  \t000000010000000000000002
  Deleted backup 20240901T103000 (start time: ..., elapsed time: ...)

pre/post_delete_script and pre/post_wal_delete_script hooks run around the deletion. Nothing
is deleted while a backup of the server is running or another process works on this backup
(both are locks): try again later. An unreadable backup.info in the catalog also stops it
before anything changes.

Exit status: 0 when the backup was deleted; 1 when it was refused (kept, needed for
minimum_redundancy, busy), a hook script aborted it, or the server or backup is unknown.

Examples:
  barman delete pg 20240901T103000
  barman delete pg oldest`,
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
