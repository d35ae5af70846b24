import type { Command } from 'commander';
import { resolveBackupId } from '../../catalog/catalog.js';
import { loadBackupsReport, showBackupView } from '../../reporting/backups.js';
import { retentionStatusesOf } from '../../retention/enforce.js';
import { serverAndBackupArguments } from '../backup-arguments.js';
import type { CliContext } from '../context.js';
import type { ServerConfig } from '../../config/config.js';
import { loadDrillRecords } from '../../drill/records.js';
import { showBackupDrillLines } from '../../reporting/drills.js';

export function define(cmd: Command): void {
  serverAndBackupArguments(cmd)
    .addHelpText(
      'after',
      `
Shows the details of a backup as recorded in its backup.info and the WAL catalog: status,
PostgreSQL version, data directory, tablespaces; base backup information (method, size with
and without the WAL it needs, resources saved by reuse_backup, timeline, begin/end WAL, LSN
and time, copy time and throughput); WAL information (files archived after it up to the next
backup, disk usage, rate, compression ratio, reachable timelines); catalog information
(retention status, e.g. VALID, OBSOLETE or KEEP:FULL; previous and next backup). A backup
that is not DONE or WAITING_FOR_WALS shows its status and error only. PostgreSQL is not
contacted.

With -f json every value is also given in machine units (*_bytes, *_timestamp, *_seconds).

Exit status: 0 on success; 1 for an unknown server or backup.

Examples:
  barman show-backup pg latest
  barman show-backup pg 20240901T103000
  barman -f json show-backup pg last-failed`,
    );
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
  await showDrills(ctx, srv, entry.id);
}

/**
 * barman-ts extension: the backup's recovery drills, as extra lines after Barman's own output
 * (and `recovery_drills` in JSON). A backup never drilled prints exactly what Barman prints.
 */
async function showDrills(ctx: CliContext, srv: ServerConfig, id: string): Promise<void> {
  const records = (await loadDrillRecords(srv).catch(() => [])).filter((r) => r.backup_id === id);
  const { lines, json } = showBackupDrillLines(records);
  if (json) ctx.out.set([srv.name, 'recovery_drills'], json);
  for (const l of lines) ctx.out.line(l);
}
