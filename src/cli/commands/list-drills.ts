import type { Command } from 'commander';
import { loadDrillRecords } from '../../drill/records.js';
import { drillJson, listDrillLine } from '../../reporting/drills.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .argument('<server>', 'server name')
    .addHelpText(
      'after',
      `
barman-ts extension. Lists the recovery drills of SERVER ('barman drill'), newest first, one
line each: drill ID, backup, start time, result (PASSED, FAILED, RUNNING, or INTERRUPTED for a
drill whose process died), the RTO it measured and its target, or why it failed. The results
live in <backup_directory>/drills/, which Barman ignores. With -f json: every recorded field
(phases in seconds, checks, point reached, target).

Exit status: 0 on success; 1 for an unknown server.

Examples:
  barman list-drills pg
  barman -f json list-drills pg`,
    );
}

export async function run(ctx: CliContext, [name = '']: string[]): Promise<void> {
  const { out } = ctx;
  const srv = ctx.server(name, { allowInactive: true });
  const problems: string[] = [];
  const records = (await loadDrillRecords(srv, problems)).reverse();
  for (const p of problems) out.warning(p);
  out.set([srv.name], records.map((r) => drillJson(r)));
  for (const r of records) out.line(listDrillLine(r));
}
