import type { Command } from 'commander';
import { checkWalArchive, parseTimelineArg } from '../../wal/check-wal-archive.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .argument('<server>', 'server name')
    .option('--timeline <n>', 'only WAL files of timeline N or later count (N >= 1)')
    .addHelpText(
      'after',
      `
Checks that the WAL archive of SERVER is ready to receive the WAL of a PostgreSQL cluster
that has never archived there: a new cluster starts again at timeline 1, so its WAL file names
would clash with (or silently mix into) WAL files already archived from another cluster.

Without --timeline the archive must be empty. With --timeline N (typically the timeline of a
promoted standby or of a restored cluster) only WAL files of timeline N or later count: older
timelines are the history the cluster comes from.

Run it before pointing a rebuilt or newly created cluster at an existing Barman server.
Nothing is changed on disk.

Exit status: 0 when the archive is usable ("WAL archive check for server S passed");
1 when it is not ("WAL archive check failed for server S: ...") or the server is unknown;
2 for a malformed timeline.

Examples:
  barman check-wal-archive pg
  barman check-wal-archive --timeline 3 pg`,
    );
}

export async function run(ctx: CliContext, [serverName]: string[], opts: { timeline?: string }): Promise<void> {
  const { out } = ctx;
  const timeline = opts.timeline === undefined ? undefined : parseTimelineArg(opts.timeline);
  const srv = ctx.server(serverName ?? '', { allowInactive: true });
  out.line(`Server ${srv.name}:`);
  out.set([srv.name], {});
  await checkWalArchive(srv, timeline);
  out.line(` - WAL archive check for server ${srv.name} passed`);
  out.set([srv.name], `WAL archive check for server ${srv.name} passed`);
}
