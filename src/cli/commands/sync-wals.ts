import type { Command } from 'commander';
import { syncWals } from '../../geo/sync-wals.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .argument('<server>', 'passive server name')
    .addHelpText(
      'after',
      `
Geo-redundancy, on a passive node (primary_ssh_command set): copies the WAL files that the last
primary.info lists after the last one synced (wals/sync-wals.info), with rsync through
primary_ssh_command (bandwidth_limit, network_compression), checks their sizes, syncs them to
disk, appends them to xlog.db and records the new position in sync-wals.info. 'barman cron'
starts it by itself after asking the primary.

Refused when the compression of the two nodes differs (the files are copied as stored). Skipped,
with a warning, while no local backup exists, or while the first WAL file listed is older than
the oldest local backup (its backup is being copied).

Exit status: 0 when the WAL files are synced or skipped; 1 when the copy failed, the server is
not passive, primary.info is missing or another sync-wals runs for the server.

Example:
  barman sync-wals pg`,
    );
}

export async function run(ctx: CliContext, args: string[]): Promise<void> {
  const srv = ctx.server(args[0] ?? '');
  const res = await syncWals(srv, { info: (m) => ctx.out.info(m), warning: (m) => ctx.out.warning(m) });
  ctx.out.set([srv.name], { copied: res.copied, skipped: res.skipped ?? null });
}
