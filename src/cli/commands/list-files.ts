import { Option, type Command } from 'commander';
import { loadCatalog, resolveBackupId } from '../../catalog/catalog.js';
import { listBackupFiles, type ListFilesTarget } from '../../catalog/list-files.js';
import { readXlogDb } from '../../catalog/xlogdb.js';
import { serverAndBackupArguments } from '../backup-arguments.js';
import type { CliContext } from '../context.js';

interface Opts {
  target?: ListFilesTarget;
  listEmptyDirectories?: boolean;
}

export function define(cmd: Command): void {
  serverAndBackupArguments(cmd)
    .addOption(
      new Option('--target <target>', 'which files: data, standalone (data + the WALs it needs), wal (WALs until the next backup), full (data + wal)')
        .choices(['data', 'standalone', 'wal', 'full'])
        .default('standalone'),
    )
    .option('--list-empty-directories', 'also print the directories of the backup that are empty')
    .addHelpText(
      'after',
      `
Prints the absolute paths of the files of a backup, one per line:
  data        every file of the base backup directory
  standalone  data + the WAL segments from its begin WAL to its end WAL (default)
  wal         the archived WAL segments from its begin WAL up to the end WAL of the next backup
              (or the end of the archive), and the timeline history files
  full        data + wal

Use it to feed a copy or an integrity check of a backup to other tools (rsync --files-from,
tar -T, sha256sum). Nothing is changed on disk. With -f json the paths are listed under
_INFO.

Exit status: 0 on success; 1 for an unknown server or backup; 2 for an invalid --target.

Examples:
  barman list-files pg latest
  barman list-files --target wal pg 20240901T103000
  barman list-files --target full pg latest | tar -czf /tmp/pg-backup.tar.gz -T -`,
    );
}

export async function run(ctx: CliContext, args: string[], opts: Opts): Promise<void> {
  const { out } = ctx;
  const [name = '', backupArg = ''] = args;
  const srv = ctx.server(name, { allowInactive: true });
  const entries = await loadCatalog(srv);
  const entry = resolveBackupId(srv, entries, backupArg);
  const target = opts.target ?? 'standalone';
  const needWals = target === 'wal' || target === 'full';
  const wals = needWals ? await readXlogDb(srv) : [];
  const files = await listBackupFiles(srv, entries, entry, target, wals, { listEmptyDirectories: opts.listEmptyDirectories === true });
  // Barman prints the paths as info messages (so JSON output lists them under _INFO), without
  // logging each of them.
  if (out.isJson) out.set(['_INFO'], files);
  else for (const f of files) out.line(f);
}
