import { Option, type Command } from 'commander';
import {
  REPLICATION_SOURCES,
  REPLICATION_TARGETS,
  fetchReplicationStatus,
  renderReplicationConsole,
  replicationJson,
  type ReplicationSource,
  type ReplicationTarget,
} from '../../reporting/replication.js';
import { errorMessage } from '../../util/errors.js';
import type { CliContext } from '../context.js';

interface Opts {
  minimal?: boolean;
  target?: ReplicationTarget;
  source?: ReplicationSource;
}

export function define(cmd: Command): void {
  cmd
    .argument('<server...>', "server names, or 'all'")
    .option('--minimal', 'one line per client')
    .addOption(
      new Option('--target <target>', 'which clients: all, hot-standby (standbys that replay WAL) or wal-streamer (clients that only receive it)')
        .choices([...REPLICATION_TARGETS])
        .default('all'),
    )
    .addOption(
      new Option('--source <source>', 'ask the backup host (conninfo) or the WAL host (wal_conninfo / wal_streaming_conninfo)')
        .choices([...REPLICATION_SOURCES])
        .default('backup-host'),
    )
    .addHelpText(
      'after',
      `
Shows the streaming replication clients of each server, as PostgreSQL sees them in
pg_stat_replication: hot standbys (clients that replay WAL, so they report a replay position)
and WAL streamers (pg_receivewal, barman receive-wal: no replay position). For each client:
application name, sync stage, address, user, state, replication slot, walsender PID, start
time, xmin and the sent/write/flush/replay positions with their distance from the server's
current position. The sync stage goes from "1/5 1-safe" (WAL not yet sent) to
"5/5 Hot standby (max)" (everything replayed); a WAL streamer stops at "3/3 Remote write".

--source wal-host asks the server named by wal_conninfo (or wal_streaming_conninfo) when the
server has a WAL-only connection, else conninfo as with backup-host.

Passwords in connection strings are never printed.

Exit status: 0 on success; 1 when a server could not be reached or is unknown; 2 for invalid
options.

Examples:
  barman replication-status pg
  barman replication-status --target hot-standby --minimal all
  barman -f json replication-status pg`,
    );
}

export async function run(ctx: CliContext, names: string[], opts: Opts): Promise<void> {
  const { out } = ctx;
  const target = opts.target ?? 'all';
  const minimal = opts.minimal === true;
  for (const srv of ctx.servers(names, { skipPassive: true })) {
    let status;
    try {
      status = await fetchReplicationStatus(srv, target, opts.source ?? 'backup-host');
    } catch (err) {
      out.error(errorMessage(err));
      continue;
    }
    if (out.isJson) out.set([srv.name], replicationJson(target, status, minimal));
    else for (const line of renderReplicationConsole(srv.name, target, status, minimal)) out.line(line);
  }
}
