import { Option, type Command } from 'commander';
import { BarmanError } from '../../util/errors.js';
import { fetchWalToDirectory, parseAcceptCompression, peekWals, sendWal, sendWalBatch, type GetWalOptions } from '../../wal/get-wal.js';
import { assertSafeWalName } from '../../wal/names.js';
import type { CliContext } from '../context.js';
import { sshSuffix } from '../ssh-client.js';

interface Opts {
  outputDirectory?: string;
  partial?: boolean;
  gzip?: boolean;
  x?: boolean;
  bzip2?: boolean;
  keepCompression?: boolean;
  peek?: string;
  batch?: string;
  acceptCompression?: string;
  test?: boolean;
}

export function define(cmd: Command): void {
  cmd
    .argument('<server>', 'server name')
    .argument('<wal_name>', 'name of the WAL file (as PostgreSQL passes it in %f)')
    .option('-o, --output-directory <dir>', 'write the file as DIR/WAL_NAME instead of sending it to standard output')
    .option('-P, --partial', 'also look for .partial files (the segment pg_receivewal is writing)')
    .option('-z, --gzip', 'send the file compressed with gzip')
    .addOption(new Option('-x', 'same as -z/--gzip').hideHelp())
    .option('-j, --bzip2', 'send the file compressed with bzip2')
    .option('--keep-compression', 'send the file as it is stored in the archive (compressed or not)')
    .option('-p, --peek <n>', 'print the names of up to N consecutive WAL files in the archive, starting with WAL_NAME, instead of sending data')
    .option('--batch <n>', 'barman-ts extension: send WAL_NAME and up to N-1 following archived WAL files as one tar stream with a SHA256SUMS member (barman-wal-restore -p)')
    .option('--accept-compression <list>', 'barman-ts extension, with --batch: the client decompresses these algorithms (comma separated): files stored with one of them are sent as stored, others plain')
    .option('-t, --test', 'only check that the server can serve WAL files (WAL_NAME is ignored)')
    .addHelpText(
      'after',
      `
Sends one WAL file of SERVER to standard output, uncompressed: this is the restore_command side,
  restore_command = 'barman get-wal SERVER %f > %p'
(or, from another host, barman-wal-restore, which uses --peek, -o and -z).

The file is looked for in the archive (wals/), then in incoming/ and streaming/, where the
archiver has not picked it up yet. With -P/--partial, .partial files count too (streaming/ first,
then the archive, then incoming/); their content is sent as it is.

Standard output carries the WAL data only: every message goes to standard error.

Exit status: 0 when the file was sent; 1 when it is not there ("ERROR: WAL file 'X' not found
in server 'S'"); 2 for invalid options; 3 when WAL_NAME is not a WAL file name or the output
file cannot be written; 200 when the file is there but cannot be read or decoded (permission
denied, I/O error, corrupt compressed file). Only a missing file is "not found": PostgreSQL
takes an exit code up to 125 from restore_command for the end of the archive (a recovery
would end there), and an exit code above 125 for a failure that stops it instead.

Examples:
  barman get-wal pg 000000010000000A000000FF > /tmp/wal
  barman get-wal -o /var/spool/wal -z pg 000000010000000A000000FF
  barman get-wal --peek 10 pg 000000010000000A000000FF
  barman get-wal --batch 8 pg 000000010000000A000000FF | tar -tvf -

--batch N (barman-ts extension, used by barman-ts's barman-wal-restore -p N to prefetch with one
SSH session): standard output is a tar stream with WAL_NAME and then the next consecutive WAL
files of the archive (the --peek walk), at most N files, each sent as get-wal would send it (plain,
or as stored with --keep-compression), then a SHA256SUMS member with "<sha256> *<name>" lines.
With --accept-compression LIST (what barman-wal-restore -p sends: gzip,bzip2,xz,zstd,lz4,snappy)
a file stored compressed with one of those algorithms is sent as stored and the client
decompresses it (fewer bytes through SSH); any other (custom) is sent plain. Each file is then
also followed by a "<name>.sha256" member (its SHA256SUMS line), so that the client can use a
verified file before the batch ends.
Barman's get-wal rejects --batch; barman-ts's client then falls back to --peek.`,
    );
}

export async function run(ctx: CliContext, [serverName, walName]: string[], opts: Opts): Promise<void> {
  const { out } = ctx;
  const srv = ctx.server(serverName ?? '', { allowInactive: true, allowDisabled: true });
  if (opts.test) {
    out.info(`Ready to retrieve WAL files from the server ${srv.name}`);
    return;
  }
  const gzip = opts.gzip === true || opts.x === true;
  const chosen = [gzip, opts.bzip2 === true, opts.keepCompression === true].filter(Boolean).length;
  if (chosen > 1) throw new BarmanError('-z/--gzip, -j/--bzip2 and --keep-compression are mutually exclusive', 2);
  let peek = 0;
  if (opts.peek !== undefined) {
    if (!/^[-+]?\d+$/.test(opts.peek.trim())) throw new BarmanError(`invalid --peek value '${opts.peek}': expected an integer`, 2);
    peek = Number(opts.peek);
  }
  let batch = 0;
  if (opts.batch !== undefined) {
    if (!/^\+?\d+$/.test(opts.batch.trim()) || Number(opts.batch) < 1) throw new BarmanError(`invalid --batch value '${opts.batch}': expected a positive integer`, 2);
    if (opts.peek !== undefined || opts.outputDirectory !== undefined) throw new BarmanError('--batch cannot be combined with --peek or -o/--output-directory', 2);
    if (gzip || opts.bzip2) throw new BarmanError('--batch cannot be combined with -z/--gzip or -j/--bzip2', 2);
    batch = Number(opts.batch);
  }
  if (opts.acceptCompression !== undefined && (batch === 0 || opts.keepCompression)) {
    throw new BarmanError('--accept-compression needs --batch and cannot be combined with --keep-compression', 2);
  }

  const suffix = sshSuffix();
  try {
    assertSafeWalName(walName, 3);
    if (peek !== 0) {
      for (const name of peekWals(srv, walName, peek)) out.info(name);
      return;
    }
    const getOpts: GetWalOptions = {
      partial: opts.partial === true,
      compression: gzip ? 'gzip' : opts.bzip2 ? 'bzip2' : null,
      keepCompression: opts.keepCompression === true,
      ...(opts.acceptCompression === undefined ? {} : { acceptCompression: parseAcceptCompression(opts.acceptCompression) }),
    };
    if (batch > 0) {
      process.stdout.on('error', () => undefined);
      await sendWalBatch(srv, walName, batch, process.stdout, getOpts);
      return;
    }
    if (opts.outputDirectory !== undefined) {
      await fetchWalToDirectory(srv, walName, opts.outputDirectory, getOpts);
      return;
    }
    // A reader that goes away must give an error message, not an unhandled 'error' event.
    process.stdout.on('error', () => undefined);
    await sendWal(srv, walName, process.stdout, getOpts);
  } catch (err) {
    if (err instanceof BarmanError && suffix) throw new BarmanError(`${err.message}${suffix}`, err.exitCode);
    throw err;
  }
}
