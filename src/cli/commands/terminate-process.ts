import type { Command } from 'commander';
import { listProcesses, terminateProcess } from '../../operations/processes.js';
import { BarmanError } from '../../util/errors.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .argument('<server>', 'server name')
    .argument('<task>', 'task of the process to stop: receive-wal, backup, cron, archive-wal, sync-wal, sync-backup')
    .addHelpText(
      'after',
      `
Stops the barman subprocess of SERVER that runs TASK (see list-processes): it is sent SIGINT,
on which barman commands stop cleanly (receive-wal stops pg_receivewal, a backup is marked
FAILED), and barman waits up to 10 seconds for it to exit.

Exit status: 0 when the process stopped ("Stopped process TASK(PID)"); 1 when no such process
runs ("Termination of TASK failed: no such process for server SERVER"), when it did not stop
in time, or for an unknown server.

Examples:
  barman list-processes pg
  barman terminate-process pg receive-wal`,
    );
}

export async function run(ctx: CliContext, [serverName, task]: string[]): Promise<void> {
  const { out } = ctx;
  const srv = ctx.server(serverName ?? '', { allowInactive: true, allowDisabled: true });
  const proc = (await listProcesses(srv)).find((p) => p.task === task);
  if (!proc) throw new BarmanError(`Termination of ${task} failed: no such process for server ${srv.name}`);
  if (!(await terminateProcess(proc))) throw new BarmanError(`Cannot terminate process ${proc.task}(${proc.pid})`);
  out.info(`Stopped process ${proc.task}(${proc.pid})`);
}
