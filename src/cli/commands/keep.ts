import { Option, type Command } from 'commander';
import { getKeep, keepBackup, releaseKeep, type KeepTarget } from '../../retention/keep.js';
import { BarmanError } from '../../util/errors.js';
import { namedBackup, serverAndBackupArguments } from '../backup-arguments.js';
import type { CliContext } from '../context.js';

interface Opts {
  target?: KeepTarget;
  status?: boolean;
  release?: boolean;
}

export function define(cmd: Command): void {
  serverAndBackupArguments(cmd)
    .addOption(new Option('--target <target>', 'keep the backup: full (with every WAL after it) or standalone (only the WALs it needs)').choices(['full', 'standalone']))
    .option('-s, --status', 'print the keep status of the backup (full, standalone or nokeep)')
    .option('-r, --release', 'remove the keep: the retention policy applies to the backup again')
    .addHelpText(
      'after',
      `
A kept backup is never deleted, neither by 'delete' nor by the retention policy, whatever its
age. With --target full, the WAL files after it are kept too, so that it can be recovered to any
point in time after it; with --target standalone only the WAL files needed to make it consistent
are kept (once it is the oldest backup left, older WALs and the WALs after it are deleted).
Only DONE full (not incremental) backups can be kept. One of --target, -s/--status or
-r/--release is required.

Exit status: 0 on success; 1 when the backup is not a DONE full backup, when none of --target,
-s/--status and -r/--release is given, or for an unknown server or backup; 2 when more than
one of them is given, or for an invalid --target.

Examples:
  barman keep pg 20240901T103000 --target standalone
  barman keep pg latest --status
  barman keep pg 20240901T103000 --release`,
    );
}

export async function run(ctx: CliContext, args: string[], opts: Opts): Promise<void> {
  const { out } = ctx;
  const chosen = [opts.status, opts.release, opts.target !== undefined].filter(Boolean).length;
  if (chosen > 1) throw new BarmanError('only one of -r/--release, -s/--status and --target may be given', 2);
  if (chosen === 0) throw new BarmanError('one of the arguments -r/--release -s/--status --target is required');
  const { srv, entry } = await namedBackup(ctx, args, { allowInactive: true });
  if (opts.status) {
    const target = (await getKeep(srv, entry.id)) ?? 'nokeep';
    out.line(`Server ${srv.name}:`);
    out.line(`\tKeep: ${target}`);
    out.set([srv.name, 'keep_status'], { description: 'Keep', message: target });
    return;
  }
  if (opts.release) {
    await releaseKeep(srv, entry.id);
    return;
  }
  await keepBackup(srv, entry, opts.target as KeepTarget);
}
