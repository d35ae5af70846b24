import type { Command } from 'commander';
import { listProcesses } from '../../operations/processes.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .argument('<server>', 'server name')
    .addHelpText(
      'after',
      `
Lists the barman subprocesses running for SERVER, one "PID TASK" line each. A subprocess is
the holder of one of the server's lock files (in barman_lock_directory); the tasks are
receive-wal, backup (also held by delete), cron, archive-wal, sync-wal and sync-backup.
Lock files that no process holds are leftovers and are not listed (see
lock-directory-cleanup).

With -f json: {"SERVER": [{"pid": PID, "name": TASK}, ...]}.

Exit status: 0 on success (also when nothing runs); 1 for an unknown server or an unreadable
lock directory.

Examples:
  barman list-processes pg
  barman terminate-process pg receive-wal      # stop one of them`,
    );
}

export async function run(ctx: CliContext, [serverName]: string[]): Promise<void> {
  const { out } = ctx;
  const srv = ctx.server(serverName ?? '', { allowInactive: true, allowDisabled: true });
  const procs = await listProcesses(srv);
  out.set([srv.name], procs.map((p) => ({ pid: p.pid, name: p.task })));
  if (procs.length === 0) {
    out.line(`No active subprocesses found for server ${srv.name}.`);
    return;
  }
  out.line(`Active subprocesses for server ${srv.name}:`);
  for (const p of procs) out.line(`${p.pid} ${p.task}`);
}
