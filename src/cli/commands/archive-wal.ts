import type { Command } from 'commander';
import { LockBusyError } from '../../catalog/lock.js';
import { archiveWal, type ArchiveSource } from '../../wal/archiver.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd.argument('<server>', 'server name').addHelpText(
    'after',
    `
Moves the WAL files waiting in the server's streaming/ directory (written by receive-wal, when
streaming_archiver = on) and incoming/ directory (written by archive_command or put-wal, when
archiver = on) into the WAL archive, wals/<timeline+log>/<name> (history files: wals/<name>),
compressed with the 'compression' option, and records each one in the xlog.db catalog.
'barman cron' runs it for every server; it is rarely needed by hand.

Per run, at most 'streaming_archiver_batch_size' / 'archiver_batch_size' files are archived from
each directory (0 = all). In streaming/, the .partial file pg_receivewal is writing is left alone
(older .partial files are archived); when there is none, the newest segment is kept for the next
run. Files already compressed when they reach incoming/ are stored as they are.

A file whose name is already in the archive is dropped if its content is the same, and moved to
the errors/ directory as <name>.<UTC time>.duplicate otherwise; files that are not WAL files are
moved there as <name>.<UTC time>.unknown. A file is reported only once it and its catalog line are
safely on disk.

Only one archive-wal runs per server at a time: if another one holds the lock, this one says so
and exits successfully.

Output:
  Processing xlog segments from streaming for SERVER
  \t000000010000000000000003
  Processing xlog segments from file archival for SERVER (batch size: 50)
  \tno file found

Exit status: 0 when the run completed (also when another archive-wal held the lock, and when
a duplicate was moved to errors/, which 'barman check' then reports as archiver errors); 1 for
an unknown, inactive or disabled server, or when a file could not be archived (an ERROR line
names it; the file stays where it was for the next run).

Examples:
  barman archive-wal pg
  barman -f json archive-wal pg`,
  );
}

export async function run(ctx: CliContext, [name]: string[]): Promise<void> {
  const srv = ctx.server(name ?? '');
  const { out } = ctx;
  // "\tno file found" closes an archiver section that had nothing to report.
  let current: ArchiveSource | null = null;
  let reported = 0;
  const closeSection = () => {
    if (current !== null && reported === 0) out.info('\tno file found');
  };
  let report;
  try {
    report = await archiveWal(srv, {
      onSource(source, batchSize) {
        closeSection();
        current = source;
        reported = 0;
        out.info(`Processing xlog segments from ${source} for ${srv.name}${batchSize > 0 ? ` (batch size: ${batchSize})` : ''}`);
      },
      onFile(wal) {
        reported++;
        out.info(`\t${wal}`);
      },
      onError(msg) {
        reported++;
        // A duplicate is reported the way Barman does, as a line of the listing.
        if (msg.endsWith('File moved to errors directory.')) out.info(`\tError: ${msg}`);
        else out.error(msg);
      },
      onWarning(msg) {
        out.warning(msg);
      },
    });
  } catch (err) {
    if (err instanceof LockBusyError) {
      out.info(`Another archive-wal process is already running on server ${srv.name}. Skipping to the next server`);
      return;
    }
    throw err;
  }
  closeSection();
  out.set([srv.name], {
    archived: report.archivedCount,
    stopped: report.stopped,
    sources: report.sources.map((s) => ({
      source: s.source,
      batch_size: s.batchSize,
      archived: s.archived,
      matching_duplicates: s.matchingDuplicates,
      duplicates: s.duplicates,
      unknown: s.unknown,
      failed: s.failed,
      remaining: s.remaining,
    })),
  });
}
