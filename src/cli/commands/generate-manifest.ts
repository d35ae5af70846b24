import type { Command } from 'commander';
import { generateManifest } from '../../backup/manifest.js';
import { prettySize } from '../../util/format.js';
import { namedBackup, serverAndBackupArguments } from '../backup-arguments.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  serverAndBackupArguments(cmd)
    .addHelpText(
      'after',
      `
Writes a backup_manifest file into the data directory of a DONE backup, in the format
pg_basebackup writes and pg_verifybackup reads: every file with its size, modification time
and SHA-256 checksum, the WAL range the backup needs, and a checksum of the manifest itself.

Backups taken with backup_method = postgres already carry the manifest PostgreSQL sent, so
this is for backups that have none (rsync backups, --no-manifest). An existing manifest is
never replaced. Compressed (tar) backups cannot get one.

Exit status: 0 when the manifest was written; 1 otherwise (unknown backup, not DONE,
compressed, manifest already present, unreadable files).

Example:
  barman generate-manifest pg latest
  barman verify-backup pg latest`,
    );
}

export async function run(ctx: CliContext, args: string[]): Promise<void> {
  const { srv, entry } = await namedBackup(ctx, args);
  const res = await generateManifest(srv, entry);
  ctx.out.info(`Backup manifest for backup '${entry.id}' successfully generated for server ${srv.name} (${res.files} files, ${prettySize(res.bytes)})`);
  ctx.out.set([srv.name], { backup_id: entry.id, manifest: res.file, files: res.files, size_bytes: res.bytes });
}
