import type { Command } from 'commander';
import { switchWal } from '../../wal/switch-wal.js';
import type { CliContext } from '../context.js';

interface Opts {
  force?: boolean;
  archive?: boolean;
  archiveTimeout?: string;
}

export function define(cmd: Command): void {
  cmd
    .argument('<server...>', "server names, or 'all'")
    .option('--force', 'run a CHECKPOINT first, so that the switch happens even with no new WAL')
    .option('--archive', 'wait until the closed WAL file is archived')
    .option('--archive-timeout <seconds>', 'how long --archive waits (default 30)', '30')
    .addHelpText(
      'after',
      `
Asks PostgreSQL to close the current WAL file (pg_switch_wal()), so that it can be archived
now instead of when it is full: use it to check the archiving chain end to end, or before a
planned failover. When nothing was written since the last switch, PostgreSQL does not switch
("No switch required"); --force runs a CHECKPOINT first, which writes WAL, so that the switch
happens. Standbys refuse it; passive servers are skipped.

--archive then waits until the closed file is in the archive, running archive-wal itself
meanwhile (so it works without cron), for at most --archive-timeout seconds.

Output:
  The WAL file 000000010000000000000007 has been closed on server 'pg'
  The WAL file 000000010000000000000007 has been archived for server 'pg'

Exit status: 0 on success; 1 when PostgreSQL cannot be reached or is a standby, a server is
unknown, or (--archive) the file was not archived in time.

Examples:
  barman switch-wal pg
  barman switch-wal --force --archive --archive-timeout 60 pg`,
    );
}

export async function run(ctx: CliContext, names: string[], opts: Opts): Promise<void> {
  const timeout = Number(opts.archiveTimeout ?? 30);
  for (const srv of ctx.servers(names, { skipPassive: true })) {
    const res = await switchWal(srv, { force: opts.force === true, archive: opts.archive === true, archiveTimeoutSec: timeout });
    if (res.closed) ctx.out.info(`The WAL file ${res.closed} has been closed on server '${srv.name}'`);
    else ctx.out.info(`No switch required for server '${srv.name}'`);
    if (opts.archive && res.closed) {
      if (res.archived) ctx.out.info(`The WAL file ${res.closed} has been archived for server '${srv.name}'`);
      else ctx.out.error(`The WAL file ${res.closed} has not been received in ${timeout} seconds`);
    }
    ctx.out.set([srv.name], { closed: res.closed, archived: res.archived });
  }
}
