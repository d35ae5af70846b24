import type { Command } from 'commander';
import { cleanupLockDirectory } from '../../operations/lock-cleanup.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd.addHelpText(
    'after',
    `
Removes the lock files (.*.lock) of barman_lock_directory (default: barman_home) that no
process holds, such as the per-backup locks of finished backups or the locks of servers that
were removed from the configuration. Each file is removed while barman holds its lock, so a
running process is never affected; the files it holds are left alone. One line is printed per
removed file. cron does the same on every run when lock_directory_cleanup is on (the default).

Exit status: 0 on success; 1 when the directory or a file cannot be read or removed.

Example:
  barman lock-directory-cleanup`,
  );
}

export async function run(ctx: CliContext): Promise<void> {
  const { out } = ctx;
  const cfg = ctx.config;
  const dir = cfg.global.barman_lock_directory ?? cfg.global.barman_home;
  const result = await cleanupLockDirectory(dir);
  for (const f of result.removed) out.info(`Removed lock file ${f}`);
  out.set(['removed'], result.removed);
  out.set(['busy'], result.busy);
}
