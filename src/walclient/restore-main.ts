/**
 * `barman-wal-restore` command line (spec §6.2), Barman's options plus `--ssh-config`. Usually
 * started by bin/barman-wal-restore (sh), which serves spool hits itself and only execs Node for
 * the rest. Prints one `ERROR:` line (or the remote's own message) and exits with Barman's codes.
 */
import { Command, Option } from 'commander';
import { BarmanError } from '../util/errors.js';
import { VERSION } from '../version.js';
import { argumentFailure, reportFailure, runIfEntryPoint } from './cli-common.js';
import { killSshSessions, RemoteError, type RestoreOptions } from './remote-get-wal.js';
import { restoreWal, testRemote } from './restore.js';
import { DEFAULT_SPOOL_DIR } from './spool.js';
import { RESTORE_DEFAULT_PARALLEL } from './trust-rules.js';
import { backgroundPrefetch, BACKGROUND_PREFETCH_LIMIT_MS, releasePrefetchLockSync } from './restore-prefetch.js';

interface ParsedOpts {
  user: string;
  port?: string;
  sleep?: string;
  parallel?: string;
  spoolDir: string;
  partial?: boolean;
  gzip?: boolean;
  bzip2?: boolean;
  keepCompression?: boolean;
  config?: string;
  sshConfig?: string;
  test?: boolean;
  backgroundPrefetch?: string;
}

export interface ParsedCommand {
  options: RestoreOptions;
  test: boolean;
  /**
   * Started detached by the sh launcher: fetch the next batch, after this WAL name (the highest
   * in the spool when it was started), into the spool (restore-prefetch.ts).
   */
  backgroundPrefetch?: string;
  /** Seconds to sleep before exiting on failure. */
  sleep: number;
}

function program(): Command {
  return new Command('barman-wal-restore')
    .description("restore_command for PostgreSQL: fetch a WAL file from a Barman server over SSH (barman get-wal)")
    .argument('<BARMAN_HOST>', 'the host of the Barman server')
    .argument('<SERVER_NAME>', 'the server name configured in Barman from which WALs are taken')
    .argument('<WAL_NAME>', "the name of the WAL file to fetch (PostgreSQL's %f)")
    .argument('<WAL_DEST>', "where to put the WAL file (PostgreSQL's %p)")
    .option('-U, --user <user>', 'the user used for the ssh connection to the Barman server', 'barman')
    .option('--port <port>', 'the port used for the ssh connection to the Barman server')
    .option('-s, --sleep <seconds>', 'sleep for SECONDS after a failure of get-wal request')
    .option('-p, --parallel <jobs>', `prefetch: fetch WAL_NAME and up to JOBS-1 following WAL files per request into the spool (default ${RESTORE_DEFAULT_PARALLEL} with a barman-ts server; 0: no prefetch)`)
    .option('--spool-dir <dir>', 'spool directory for prefetched WAL files', DEFAULT_SPOOL_DIR)
    .option('-P, --partial', 'retrieve also partial WAL files (.partial)')
    .option('-z, --gzip', 'transfer the WAL files compressed with gzip (deprecated)')
    .option('-j, --bzip2', 'transfer the WAL files compressed with bzip2 (deprecated)')
    .option('--keep-compression', 'keep the compression of the archived WAL files during transfer, decompress here')
    .option('-c, --config <config>', 'configuration file on the Barman server')
    .option('--ssh-config <file>', 'barman-ts extension: ssh client configuration file (ssh -F)')
    .option('-t, --test', 'test both the connection and the configuration of the requested PostgreSQL server in Barman to make sure it is ready to receive WAL files; WAL_NAME and WAL_DEST are ignored')
    .addOption(new Option('-V, --version', 'show the version and exit'))
    // Internal: how bin/barman-wal-restore starts the background prefetch (restore-prefetch.ts).
    .addOption(new Option('--background-prefetch <after>').hideHelp())
    .addHelpText(
      'after',
      `
Exit status: 0 when WAL_DEST holds the file; 1 when the Barman server does not have it; 2 for an
SSH or protocol failure (and invalid options); 3 when WAL_NAME or WAL_DEST is not valid; 200 when
the Barman server has the file but cannot read it (barman-ts get-wal: permission denied, I/O
error), which PostgreSQL takes for a failure that stops recovery, not for the archive's end.

With -p N, barman-ts asks the Barman server for WAL_NAME and the next N-1 WAL files in one SSH
session (get-wal --batch, checksummed); Barman's own server gets Barman's protocol (--peek and
one get-wal per file). Without -p the same is done with N = ${RESTORE_DEFAULT_PARALLEL} against a barman-ts server,
so that Barman's usual restore_command is fast as it is; Barman's server then gets one get-wal
per file, as from Barman's client without -p (-p 0 turns prefetching off). Prefetched files wait in the spool directory, from which the next calls
take them without any SSH connection. Archives compressed with gzip, bzip2, xz, zstd, lz4 or
snappy travel as stored and are decompressed here (--accept-compression). Once fewer than N/2
files are left ahead, the next batch is fetched in the background while PostgreSQL replays
(one at a time; BARMAN_WAL_RESTORE_BACKGROUND=off in the environment turns this off).

Example (postgresql.conf):
  restore_command = 'barman-wal-restore -U barman -p 8 backup.example.com pg %f %p'`,
    )
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
}

function parseCount(text: string | undefined, what: string, min: number): number {
  if (text === undefined) return 0;
  if (!/^\+?\d+$/.test(text.trim()) || Number(text) < min) throw new BarmanError(`invalid ${what} value '${text}'`, 2);
  return Number(text);
}

/** Parse the command line; throws CommanderError (usage, help, version) or BarmanError. */
export function parseArgs(argv: readonly string[]): ParsedCommand | 'version' {
  const cmd = program();
  let version = false;
  cmd.on('option:version', () => (version = true));
  // Version wins over missing positionals, as with argparse's action='version'.
  if (argv.includes('-V') || argv.includes('--version')) return 'version';
  cmd.parse([...argv], { from: 'user' });
  if (version) return 'version';
  const o = cmd.opts<ParsedOpts>();
  const [host, server, walName, walDest] = cmd.args as [string, string, string, string];
  if ([o.gzip, o.bzip2, o.keepCompression].filter(Boolean).length > 1) {
    throw new BarmanError('-z/--gzip, -j/--bzip2 and --keep-compression are mutually exclusive', 2);
  }
  const sleepText = o.sleep;
  let sleep = 0;
  if (sleepText !== undefined) {
    if (!/^\d+(\.\d+)?$/.test(sleepText.trim())) throw new BarmanError(`invalid --sleep value '${sleepText}'`, 2);
    sleep = Number(sleepText);
  }
  return {
    test: o.test === true,
    ...(o.backgroundPrefetch === undefined ? {} : { backgroundPrefetch: o.backgroundPrefetch }),
    sleep,
    options: {
      host,
      server,
      walName,
      walDest,
      user: o.user,
      port: o.port,
      sshConfig: o.sshConfig,
      config: o.config,
      parallel: o.parallel === undefined ? RESTORE_DEFAULT_PARALLEL : parseCount(o.parallel, '--parallel', 0),
      parallelByDefault: o.parallel === undefined,
      spoolDir: o.spoolDir,
      partial: o.partial === true,
      gzip: o.gzip === true,
      bzip2: o.bzip2 === true,
      keepCompression: o.keepCompression === true,
    },
  };
}

function sleepSeconds(s: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, s * 1000));
}

/** Run barman-wal-restore; resolves to the exit code. */
export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<number> {
  // `barman-wal-restore --help | head`: a reader that goes away is not worth a stack trace.
  process.stdout.on('error', () => undefined);
  let parsed: ParsedCommand | 'version';
  try {
    parsed = parseArgs(argv);
  } catch (err) {
    return argumentFailure(err);
  }
  if (parsed === 'version') {
    process.stdout.write(`barman-wal-restore ${VERSION}\n`);
    return 0;
  }
  const { options, test, sleep } = parsed;
  if (parsed.backgroundPrefetch !== undefined) {
    // Nobody reads its output (the launcher sends it to /dev/null) and nobody waits for its
    // status: a failure only means a later call fetches for itself. It must not outlive its
    // use: stopped by PostgreSQL's shutdown signals or after a time limit (a stalled network),
    // it ends its ssh sessions and removes its lock, which would otherwise stop every later
    // background prefetch until the next boot.
    const stop = (): void => {
      killSshSessions();
      releasePrefetchLockSync(options.spoolDir);
      process.exit(1);
    };
    for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(sig, stop);
    setTimeout(stop, BACKGROUND_PREFETCH_LIMIT_MS).unref();
    await backgroundPrefetch(options, parsed.backgroundPrefetch).catch(() => undefined);
    return 0;
  }
  let code: number;
  try {
    if (test) {
      code = await testRemote(options, process.stdout, process.stderr);
    } else {
      // The sh launcher already waited its limit for a background prefetch: no second wait.
      const result = await restoreWal(options, { waitForPrefetch: process.env.BARMAN_WAL_RESTORE_WAITED !== '1' });
      if (result.prefetchOff) process.stderr.write(`WARNING: ${result.prefetchOff}\n`);
      code = 0;
    }
  } catch (err) {
    if (err instanceof RemoteError && err.remoteStderr) {
      // The remote barman's own message is clearer than our summary of it.
      process.stderr.write(`${err.remoteStderr}\n`);
      code = err.exitCode;
    } else {
      code = reportFailure(err);
    }
  }
  if (code !== 0 && sleep > 0) await sleepSeconds(sleep);
  return code;
}

runIfEntryPoint(import.meta.url, () => main());
