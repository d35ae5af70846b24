import type { Command } from 'commander';
import { resolveBackupId } from '../../catalog/catalog.js';
import { loadBackupsReport, showBackupView } from '../../reporting/backups.js';
import { retentionStatusesOf } from '../../retention/enforce.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .argument('<server>', 'server name')
    .argument('<backup_id>', 'backup ID, name, or latest|last, oldest|first, last-failed, latest-full|last-full')
    .addHelpText('after', '\nShows the details of a backup: PostgreSQL and base backup information, its WAL files and its neighbours in the catalog.');
}

export async function run(ctx: CliContext, args: string[]): Promise<void> {
  const { out } = ctx;
  const [name = '', backupArg = ''] = args;
  const srv = ctx.server(name, { allowInactive: true });
  const report = await loadBackupsReport(srv);
  const entry = resolveBackupId(srv, report.entries, backupArg);
  const view = showBackupView(report, entry, await retentionStatusesOf(srv, report.entries));
  for (const w of view.warnings) out.warning(w);
  out.set([srv.name], view.json);
  for (const l of view.lines) out.line(l);
}
