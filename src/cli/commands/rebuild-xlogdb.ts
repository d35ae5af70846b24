import type { Command } from 'commander';
import { rebuildXlogDb } from '../../catalog/xlogdb.js';
import { BarmanError } from '../../util/errors.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd.argument('<server...>', "server names, or 'all'").addHelpText(
    'after',
    `
Rebuilds the WAL catalog of each server from the files present in its WAL archive (wals/):
every WAL segment and backup label file (.backup) in the wals/<timeline+log>/ directories and
every timeline history file (.history) in wals/ itself, in name order, with its size, time and
compression (recognised by its first bytes). Temporary files (*.tmp) are skipped; .partial files
and anything else unexpected are reported with a warning and left out of the catalog.

The catalog is <server>-xlog.db when that file exists (Barman 3.13 and later; the older xlog.db is
then removed), xlog.db otherwise. The rebuild holds the xlogdb lock, so archive-wal and deletions
wait for it.

Output:
  Rebuilding xlogdb for server SERVER
  Done rebuilding xlogdb for server SERVER (history: 1, backup_labels: 2, wal_file: 120)

Use it after WAL files were added to or removed from wals/ by hand, or when xlog.db is lost or
damaged (list-backups then shows wrong WAL sizes, get-wal and recovery still read the files).
The new catalog is written to a temporary file and renamed into place.

Exit status: 0 when every catalog was rebuilt; 1 when a server is unknown or disabled or its
rebuild failed (the error names the server; the other servers are still rebuilt).

Examples:
  barman rebuild-xlogdb pg
  barman rebuild-xlogdb all`,
  );
}

export async function run(ctx: CliContext, names: string[]): Promise<void> {
  const { out } = ctx;
  for (const srv of ctx.servers(names, { allowInactive: true })) {
    out.info(`Rebuilding xlogdb for server ${srv.name}`);
    try {
      const counts = await rebuildXlogDb(srv, { onWarning: (m) => out.warning(m) });
      out.info(
        `Done rebuilding xlogdb for server ${srv.name} (history: ${counts.history}, backup_labels: ${counts.backup_labels}, wal_file: ${counts.wal_file})`,
      );
      out.set([srv.name], { ...counts });
    } catch (err) {
      if (!(err instanceof BarmanError)) throw err;
      out.error(`${srv.name}: ${err.message}`);
    }
  }
}
