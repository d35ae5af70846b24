import { existsSync } from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { MANIFEST_NAME, verifyBackup, type VerifyResult } from '../../backup/manifest.js';
import { verifyChecksums } from '../../agent/verify.js';
import { backupDataDir } from '../../catalog/catalog.js';
import { BarmanError, errorMessage } from '../../util/errors.js';
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

barman-ts also reads every file itself and compares its size and SHA-256 with what was
recorded when the backup was taken (the barman-ts agent's checksums for backups taken with
transfer_method = agent, the manifest's SHA256 entries otherwise), and reports files missing,
changed or recorded nowhere: this needs no PostgreSQL program, so a backup is verified even on
a backup host without pg_verifybackup.

The backup needs a backup_manifest or agent checksums: postgres-method and agent backups have
them, other backups get a manifest with 'barman generate-manifest'.

Exit status: 0 when the backup is valid; 1 when a problem is found (printed) or the backup
cannot be verified.

Example:
  barman verify-backup pg 20261130T101500`,
    );
}

export async function run(ctx: CliContext, args: string[]): Promise<void> {
  const { srv, entry } = await namedBackup(ctx, args);
  const sums = await verifyChecksums(srv, entry);
  const hasManifest = existsSync(path.join(backupDataDir(srv, entry.id), MANIFEST_NAME));
  let res: VerifyResult | null = null;
  if (hasManifest || sums === null) {
    try {
      res = await verifyBackup(srv, entry);
    } catch (err) {
      // Without pg_verifybackup here, the checksums still say whether the files are intact.
      if (sums === null) throw err;
      ctx.out.warning(`pg_verifybackup not run: ${errorMessage(err)}`);
    }
  }
  const checksums = sums && { ok: sums.ok, files: sums.files, bytes: sums.bytes, sources: sums.sources, problems: sums.problems };
  ctx.out.set([srv.name], {
    backup_id: entry.id,
    ok: (res?.ok ?? true) && (sums?.ok ?? true),
    wal_checked: res?.walChecked ?? false,
    output: res?.output ?? '',
    ...(checksums ? { checksums } : {}),
  });
  const failures: string[] = [];
  if (res && !res.ok) failures.push(res.output.split('\n').join(' / '));
  if (sums && !sums.ok) failures.push(`${sums.problems.length} file(s) do not match their recorded checksums: ${sums.problems.slice(0, 20).join('; ')}`);
  if (failures.length > 0) throw new BarmanError(`verification of backup ${entry.id} of server ${srv.name} failed: ${failures.join(' / ')}`);
  if (res?.output) ctx.out.info(res.output);
  if (sums) ctx.out.info(`checksums of ${sums.files} files OK (SHA-256, recorded in the ${sums.sources.join(' and ')})`);
  if (res && !res.walChecked) ctx.out.warning(`WAL files of backup ${entry.id} are not all in the archive: WAL parsing skipped`);
}
