import type { Command } from 'commander';
import { listBackupsRows, loadBackupsReport } from '../../reporting/backups.js';
import { retentionStatusesOf } from '../../retention/enforce.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .argument('<server...>', "server names, or 'all'")
    .option('--minimal', 'print only the backup IDs')
    .addHelpText(
      'after',
      `
Lists the backups of each server, newest first, as Barman 3.4 does:
  SRV ID ['NAME' ]- END TIME - Size: SIZE - WAL Size: WAL_SIZE[ (tablespaces: NAME:LOCATION, ...)]
      [ - WAITING_FOR_WALS][ - RETENTION]
Size includes the WAL files needed by the backup; WAL Size is the WAL archived after it, up to the
next backup. Backups not completed show their status instead (SRV ID - FAILED). With a
retention_policy, RETENTION shows what the policy thinks of a backup when it is not VALID:
OBSOLETE (cron deletes it), OBSOLETE* (kept for minimum_redundancy), KEEP:FULL or
KEEP:STANDALONE (see 'barman keep').

Output example:
  pg 20240901T103000 - Mon Sep  2 15:12:03 2024 - Size: 820.0 MiB - WAL Size: 22.0 MiB

With -f json: {"SERVER": [{backup_id, backup_name, backup_type, end_time, end_time_timestamp,
size, size_bytes, wal_size, wal_size_bytes, status, retention_status ('-' unless not VALID),
tablespaces: [{name, location}]}]}; with --minimal a list of IDs. backup_type (full,
incremental, rsync, snapshot) is the one addition to Barman 3.4's keys.

Exit status: 0 on success (also when a server has no backups); 1 for an unknown or disabled
server (the other servers are still listed).

Examples:
  barman list-backups pg
  barman list-backups --minimal all
  barman -f json list-backups pg`,
    );
}

export async function run(ctx: CliContext, names: string[], opts: { minimal?: boolean }): Promise<void> {
  const { out } = ctx;
  for (const srv of ctx.servers(names)) {
    const report = await loadBackupsReport(srv);
    for (const p of report.problems) out.warning(p);
    const rows = listBackupsRows(report, await retentionStatusesOf(srv, report.entries));
    out.set([srv.name], rows.map((r) => (opts.minimal ? r.id : r.json)));
    for (const r of rows) out.line(opts.minimal ? r.id : r.line);
  }
}
