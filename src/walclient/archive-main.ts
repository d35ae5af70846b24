/**
 * `barman-wal-archive` command line (spec §6.1): Barman's options plus the barman-ts extensions
 * `--spool-dir`, `--batch` and `--ssh-config`. Usually started by bin/barman-wal-archive (sh),
 * which answers calls for segments an earlier call already pushed without starting Node.
 *
 * Exit codes (Barman's): 0 stored; 2 local problem (options, WAL_PATH); 3 ssh could not
 * connect; any other code is put-wal's own.
 */
import { Command, Option } from 'commander';
import { BarmanError, errorMessage } from '../util/errors.js';
import type { CompressionName } from '../wal/compression.js';
import { parseCompressionLevel, type CompressionLevel } from '../wal/compression-level.js';
import { VERSION } from '../version.js';
import { argumentFailure, reportFailure, runIfEntryPoint } from './cli-common.js';
import { DEFAULT_SPOOL_DIR } from './markers.js';
import {
  archiveWal,
  DEFAULT_BATCH_MEMBERS,
  DEFAULT_COMPRESSED_BATCH_BYTES,
  DEFAULT_COMPRESSED_BATCH_MEMBERS,
  LOCAL_ERROR,
  testPutWal,
  type ArchiveOptions,
} from './push.js';
import type { SshTarget } from './ssh.js';

/** The compression options shared by the WAL clients and barman-cloud-wal-archive. */
export interface CompressionFlagOptions {
  gzip?: boolean;
  bzip2?: boolean;
  xz?: boolean;
  snappy?: boolean;
  zstd?: boolean;
  lz4?: boolean;
  compressionLevel?: string;
}

interface RawOptions extends CompressionFlagOptions {
  user: string;
  port?: string;
  config?: string;
  test?: boolean;
  md5?: boolean;
  spoolDir: string;
  batch?: string;
  sshConfig?: string;
  sessions?: string;
  workers?: string;
}

export interface ParsedArchiveCommand {
  test: boolean;
  options: ArchiveOptions;
}

/** The compression options of the WAL clients (also barman-cloud-wal-archive's) and their algorithms. */
export const COMPRESSION_FLAGS: ReadonlyArray<[Exclude<keyof CompressionFlagOptions, 'compressionLevel'>, CompressionName]> = [
  ['gzip', 'gzip'],
  ['bzip2', 'bzip2'],
  ['xz', 'xz'],
  ['snappy', 'snappy'],
  ['zstd', 'zstd'],
  ['lz4', 'lz4'],
];

const HELP_AFTER = `
Use it as PostgreSQL's archive_command, e.g. in postgresql.conf:

  archive_command = 'barman-wal-archive -U barman backup.example.com pg %p'

It sends WAL_PATH over ssh to \`barman put-wal SERVER_NAME\` on BARMAN_HOST (as a tar
stream with a checksum member) and exits 0 only once the Barman server has stored it
durably (fsync'd). Exit codes: 0 stored, 2 local error, 3 ssh connection problem,
otherwise the code of the remote put-wal.

Push-ahead (barman-ts): the segments PostgreSQL has already marked ready after WAL_PATH are
sent in the same ssh session (up to --batch), and recorded in --spool-dir; when PostgreSQL
then asks for them, the call returns at once without ssh. Run \`barman-wal-archive -t ...\`
to check the connection and the Barman configuration.

Busy servers: \`--zstd --compression-level low\` is the recommended fast setting: in our
measurements it sent WAL 1.5-2 times faster than no compression. zstd level 1 compresses a
16 MiB segment in about 30 ms of one core, to 10-55 % of its size, so ssh has that much less
to encrypt; the compression runs in worker threads while earlier segments are being sent,
and put-wal stores the files as received (compressed), as archive-wal would keep them.
--lz4 is no faster here and compresses less. Negative zstd levels (\`--compression-level -3\`)
save about a third of the compression CPU for 1.5-2 times the bytes. Compressed members need
a Barman server recent enough to know the algorithm.`;

function program(): Command {
  return new Command('barman-wal-archive')
    .description('archive_command for PostgreSQL: send a WAL file to a Barman server over SSH (barman put-wal)')
    .argument('<BARMAN_HOST>', 'the host of the Barman server')
    .argument('<SERVER_NAME>', 'the server name configured in Barman for this PostgreSQL server')
    .argument('<WAL_PATH>', "the WAL file to send (PostgreSQL's %p)")
    .option('-U, --user <USER>', 'the user used for the ssh connection to the Barman server', 'barman')
    .option('--port <PORT>', 'the port used for the ssh connection to the Barman server')
    .option('-c, --config <CONFIG>', 'the configuration file on the Barman server')
    .option('-t, --test', 'test the connection and the configuration of the Barman server, then exit')
    .option('--md5', 'use MD5 instead of SHA256 as the checksum of the stream (for old Barman servers)')
    .option('-z, --gzip', 'compress the WAL files with gzip before sending them')
    .option('-j, --bzip2', 'compress the WAL files with bzip2 before sending them')
    .option('--xz', 'compress the WAL files with xz before sending them')
    .option('--snappy', 'compress the WAL files with snappy before sending them')
    .option('--zstd', 'compress the WAL files with zstd before sending them')
    .option('--lz4', 'compress the WAL files with lz4 before sending them')
    .option('--compression-level <LEVEL>', 'compression level: low, medium, high or a number (default medium)')
    .option('--spool-dir <DIR>', 'barman-ts: directory recording segments already pushed ahead', DEFAULT_SPOOL_DIR)
    .option('--batch <N>', `barman-ts: most WAL files sent in one ssh session (0 or 1: no push-ahead; default ${DEFAULT_BATCH_MEMBERS}, ${DEFAULT_COMPRESSED_BATCH_MEMBERS} when compressing)`)
    .option('--ssh-config <FILE>', 'barman-ts: ssh client configuration file (ssh -F FILE)')
    // Tuning knobs for measurements (ssh sessions, compression threads); not worth --help lines.
    .addOption(new Option('--sessions <N>').hideHelp())
    .addOption(new Option('--workers <N>').hideHelp())
    .version(`barman-wal-archive ${VERSION}`, '-V, --version', 'show the version and exit')
    .helpOption('-h, --help', 'show this help and exit')
    .addHelpText('after', HELP_AFTER)
    .exitOverride()
    .configureOutput({
      // Commander's own errors are already one line ("error: ..."); keep them so.
      outputError: (str, write) => write(str.endsWith('\n') ? str : `${str}\n`),
    });
}

function parseCount(value: string | undefined, option: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value.trim())) throw new BarmanError(`invalid value for ${option}: '${value}' (expected a non-negative integer)`, LOCAL_ERROR);
  return Number(value.trim());
}

/** Parse the command line (throws CommanderError for help/version/usage, BarmanError for bad values). */
export function parseArgs(argv: readonly string[]): ParsedArchiveCommand {
  const cmd = program();
  cmd.parse([...argv], { from: 'user' });
  const o = cmd.opts<RawOptions>();
  const [host, server, walPath] = cmd.args as [string, string, string];

  const chosen = COMPRESSION_FLAGS.filter(([flag]) => o[flag] === true).map(([, algo]) => algo);
  if (chosen.length > 1) throw new BarmanError(`only one compression option may be given (got ${chosen.join(', ')})`, LOCAL_ERROR);
  let level: CompressionLevel | null = null;
  if (o.compressionLevel !== undefined) {
    try {
      level = parseCompressionLevel(o.compressionLevel);
    } catch (err) {
      throw new BarmanError(errorMessage(err), LOCAL_ERROR);
    }
  }
  if (!server) throw new BarmanError('SERVER_NAME cannot be empty', LOCAL_ERROR);
  if (!walPath) throw new BarmanError('WAL_PATH cannot be empty', LOCAL_ERROR);
  if (!o.spoolDir) throw new BarmanError('--spool-dir cannot be empty', LOCAL_ERROR);
  const target: SshTarget = { host, user: o.user, port: o.port, sshConfig: o.sshConfig };
  return {
    test: o.test === true,
    options: {
      target,
      server,
      walPath,
      config: o.config,
      checksum: o.md5 ? 'md5' : 'sha256',
      compression: chosen[0] ?? null,
      compressionLevel: level,
      spoolDir: o.spoolDir,
      batch: parseCount(o.batch, '--batch', chosen[0] ? DEFAULT_COMPRESSED_BATCH_MEMBERS : DEFAULT_BATCH_MEMBERS),
      maxBatchBytes: chosen[0] ? DEFAULT_COMPRESSED_BATCH_BYTES : undefined,
      sessions: o.sessions === undefined ? undefined : Math.max(1, parseCount(o.sessions, '--sessions', 1)),
      workers: o.workers === undefined ? undefined : parseCount(o.workers, '--workers', 0),
    },
  };
}

function writeLine(stream: NodeJS.WriteStream, line: string): void {
  stream.write(line.endsWith('\n') ? line : `${line}\n`);
}

/** Run barman-wal-archive; resolves to the exit code. Never throws. */
export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<number> {
  let parsed: ParsedArchiveCommand;
  try {
    parsed = parseArgs(argv);
  } catch (err) {
    return argumentFailure(err);
  }
  try {
    const { options } = parsed;
    if (parsed.test) {
      const outcome = await testPutWal(options.target, options.server, options.config);
      if (outcome.message) writeLine(process.stderr, `ERROR: ${outcome.message}`);
      return outcome.exitCode;
    }
    const result = await archiveWal(options);
    for (const w of result.warnings) writeLine(process.stderr, `WARNING: ${w}`);
    if (result.message) writeLine(process.stderr, `ERROR: ${result.message}`);
    return result.exitCode;
  } catch (err) {
    return reportFailure(err);
  }
}

runIfEntryPoint(import.meta.url, () => main());
