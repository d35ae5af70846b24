import type { Command } from 'commander';
import { verifyBackup } from '../../backup/manifest.js';
import { BarmanError } from '../../util/errors.js';
import { namedBackup, serverAndBackupArguments } from '../backup-arguments.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  serverAndBackupArguments(cmd)
    .addHelpText(
      'after',
      `
Runs PostgreSQL's pg_verifybackup on a backup: every file is checked against the
backup_manifest (presence, size, checksum). When all the WAL files the backup needs are in
the archive they are decompressed into a scratch directory and parsed too, which proves that
the backup can reach consistency; otherwise WAL parsing is skipped and said so.

The backup needs a backup_manifest: postgres-method backups have one, other backups get one
with 'barman generate-manifest'.

Exit status: 0 when pg_verifybackup reports the backup valid; 1 when it finds a problem (its
output is printed) or the backup cannot be verified.

Example:
  barman verify-backup pg 20261130T101500`,
    );
}

export async function run(ctx: CliContext, args: string[]): Promise<void> {
  const { srv, entry } = await namedBackup(ctx, args);
  const res = await verifyBackup(srv, entry);
  ctx.out.set([srv.name], { backup_id: entry.id, ok: res.ok, wal_checked: res.walChecked, output: res.output });
  if (!res.ok) throw new BarmanError(`verification of backup ${entry.id} of server ${srv.name} failed: ${res.output.split('\n').join(' / ')}`);
  if (res.output) ctx.out.info(res.output);
  if (!res.walChecked) ctx.out.warning(`WAL files of backup ${entry.id} are not all in the archive: WAL parsing skipped`);
}
