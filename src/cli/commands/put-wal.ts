import type { Command } from 'commander';
import { BarmanError } from '../../util/errors.js';
import { logger } from '../../util/log.js';
import { receiveWalTar } from '../../wal/put-wal.js';
import type { CliContext } from '../context.js';
import { sshSuffix } from '../ssh-client.js';

interface Opts {
  test?: boolean;
}

export function define(cmd: Command): void {
  cmd
    .argument('<server>', 'server name')
    .option('-t, --test', 'only check that the server is ready to receive WAL files (standard input is not read)')
    .addHelpText(
      'after',
      `
Receives WAL files for SERVER on standard input and stores them in the server's incoming
directory, where archive-wal (run by cron) moves them into the archive. This is the Barman side
of barman-wal-archive, PostgreSQL's archive_command on the database host:
  archive_command = 'barman-wal-archive backup.example.com SERVER %p'
which runs "ssh barman@backup.example.com barman put-wal SERVER".

Standard input is a tar stream (PAX format): one or more WAL files (segments, .history,
.backup or .partial files, possibly compressed), then a SHA256SUMS or MD5SUMS member with one
"<hex digest> *<file name>" line per file. Members must be regular files with bare WAL file
names: no directories, links or paths. Nothing is stored unless every file arrived complete
and matches its checksum; the exit status is 0 only once every file is safely on disk
(written, fsynced and renamed into place), so PostgreSQL may then recycle the segment.

A file that is already in incoming/ or in the archive with the same content is accepted
without writing anything (a retried archive_command). With a different content nothing is
overwritten: the received copy is kept as errors/<name>.<UTC time>.duplicate, an error is
printed and the exit status is 1, so that PostgreSQL keeps the segment until the DBA decides
(the other files of the same stream are stored as usual).

When run through SSH, messages end with " (SSH host: <client address>)".

Exit status: 0 when every file was stored (or was already there); 1 on any error (invalid or
truncated stream, bad or missing checksum, different duplicate, interrupted by a signal);
2 for invalid options.

Examples:
  barman put-wal --test pg
  tar --format=pax -cf - 000000010000000A000000FF SHA256SUMS | barman put-wal pg`,
    );
}

export async function run(ctx: CliContext, [serverName]: string[], opts: Opts): Promise<void> {
  const { out } = ctx;
  const suffix = sshSuffix();
  try {
    const srv = ctx.server(serverName ?? '');
    if (opts.test) {
      out.info(`Ready to accept WAL files for the server ${srv.name}`);
      return;
    }
    // A signal must not leave half-written temporary files: receiveWalTar removes them and
    // throws; until then these handlers replace Node's immediate exit.
    const abort = new AbortController();
    const onSignal = () => abort.abort();
    const signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];
    for (const s of signals) process.on(s, onSignal);
    try {
      const report = await receiveWalTar(srv, process.stdin, { signal: abort.signal });
      // Nothing on stdout (the client has no use for it); the log keeps a trace for the DBA.
      const log = logger('put-wal', srv.name);
      for (const name of report.stored) log.info(`Received WAL file ${name}${suffix}`);
      for (const name of report.alreadyPresent) log.info(`WAL file ${name} received again, same content as the stored copy: nothing written${suffix}`);
    } finally {
      for (const s of signals) process.off(s, onSignal);
    }
  } catch (err) {
    if (err instanceof BarmanError && suffix) throw new BarmanError(`${err.message}${suffix}`, err.exitCode);
    throw err;
  }
}
