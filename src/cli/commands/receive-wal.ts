import type { Command } from 'commander';
import { LockBusyError } from '../../catalog/lock.js';
import { createSlot, dropSlot, isReceiveWalRunning, receiveWal, resetReceiveWal, stopReceiveWal } from '../../wal/receive-wal.js';
import { BarmanError } from '../../util/errors.js';
import type { CliContext } from '../context.js';

interface Opts {
  stop?: boolean;
  reset?: boolean;
  createSlot?: boolean;
  ifNotExists?: boolean;
  dropSlot?: boolean;
}

export function define(cmd: Command): void {
  cmd
    .argument('<server>', 'server name')
    .option('--stop', 'stop the receive-wal process running for the server')
    .option('--reset', 'reset the streaming position (removes .partial files in streaming/)')
    .option('--create-slot', "create the replication slot named by 'slot_name'")
    .option('--if-not-exists', 'with --create-slot: do not fail if the slot exists')
    .option('--drop-slot', "drop the replication slot named by 'slot_name'")
    .addHelpText(
      'after',
      `
Streams WAL from the server with pg_receivewal into its streaming/ directory, using the
replication slot 'slot_name' (created automatically when create_slot = auto). It runs in the
foreground until PostgreSQL goes away or it is stopped; 'barman cron' starts it for every server
with streaming_archiver = on and restarts it when it has exited. pg_receivewal's output is
printed with a "SERVER: " prefix. Only one receive-wal runs per server (it holds a lock).

The WAL segment being written is streaming/<name>.partial; 'barman archive-wal' (run by cron)
moves completed segments into the archive.

With one of the options below, it does that instead of streaming, and returns:
  --stop           stops the running receive-wal (SIGTERM; waits up to 10 seconds):
                   "Stopped process receive-wal(PID)"; an error when none runs
  --reset          forgets the streaming position: removes the .partial files, so that the next
                   start resumes from the slot's position (not while receive-wal runs)
  --create-slot    creates the physical replication slot 'slot_name' (pg_receivewal
                   --create-slot); with --if-not-exists an existing slot is not an error
  --drop-slot      drops it (a dropped slot no longer holds WAL on PostgreSQL for barman)

Exit status: 0 on success (receive-wal: pg_receivewal ended normally, or another receive-wal
already runs for the server: "Another receive-wal process is already running", as Barman);
1 when streaming_archiver is off, streaming_conninfo or slot_name is missing, pg_receivewal
failed (exit code printed), --stop found no receive-wal to stop, or the slot cannot be created
or dropped; 2 for conflicting options.

Examples:
  barman receive-wal --create-slot pg
  barman receive-wal pg                   (foreground; cron normally does this)
  barman receive-wal --stop pg && barman receive-wal --reset pg`,
    );
}

export async function run(ctx: CliContext, [name]: string[], opts: Opts): Promise<void> {
  const srv = ctx.server(name ?? '');
  const { out } = ctx;
  const actions = [opts.stop, opts.reset, opts.createSlot, opts.dropSlot].filter(Boolean).length;
  if (actions > 1) throw new BarmanError('--stop, --reset, --create-slot and --drop-slot are mutually exclusive', 2);
  if (opts.ifNotExists && !opts.createSlot) throw new BarmanError('--if-not-exists needs --create-slot', 2);
  if (srv.passive && !opts.stop && !opts.reset) {
    throw new BarmanError(`Unable to run receive-wal on server '${srv.name}': it is a passive node (primary_ssh_command is set), which copies WAL from its primary backup server and opens no PostgreSQL connection`);
  }
  if (opts.createSlot) {
    out.info(`Creating physical replication slot '${srv.slot_name ?? ''}' on server '${srv.name}'`);
    await createSlot(srv, opts.ifNotExists === true);
    out.info(`Replication slot '${srv.slot_name ?? ''}' created`);
    return;
  }
  if (opts.dropSlot) {
    out.info(`Dropping physical replication slot '${srv.slot_name ?? ''}' on server '${srv.name}'`);
    await dropSlot(srv);
    out.info(`Replication slot '${srv.slot_name ?? ''}' dropped`);
    return;
  }
  if (opts.stop) {
    // Barman's words and exit codes: a script stopping receive-wal can tell whether one ran.
    const pid = await stopReceiveWal(srv);
    if (pid === null) out.error(`Termination of receive-wal failed: no such process for server ${srv.name}`);
    else out.info(`Stopped process receive-wal(${pid})`);
    return;
  }
  if (opts.reset) {
    if (await isReceiveWalRunning(srv)) {
      out.info(`Unable to reset the status of receive-wal for server ${srv.name}. Process is still running`);
      return;
    }
    const removed = await resetReceiveWal(srv);
    out.info(`Resetting receive-wal directory status for server '${srv.name}'${removed.length ? ` (removed ${removed.join(', ')})` : ''}`);
    return;
  }
  if (!srv.streaming_archiver) throw new BarmanError(`Unable to start receive-wal process: streaming_archiver option set to 'off' in barman configuration file`);
  out.info(`Starting receive-wal for server ${srv.name}`);
  let code: number;
  try {
    code = await receiveWal(srv, { onLine: (l) => out.line(`${srv.name}: ${l}`) });
  } catch (err) {
    // One receive-wal per server: the one running is doing the job (Barman: info, exit 0).
    if (!(err instanceof LockBusyError)) throw err;
    out.info(`Another receive-wal process is already running for server ${srv.name}.`);
    return;
  }
  if (code !== 0) out.error(`receive-wal for server '${srv.name}' ended: pg_receivewal exited with code ${code}`);
}
