/**
 * barman-cloud-wal-restore SOURCE_URL SERVER_NAME WAL_NAME WAL_DEST: PostgreSQL's
 * restore_command from an object store (spec §11.2). Usually started by
 * bin/barman-cloud-wal-restore (sh), which serves files already prefetched into the spool.
 *
 * Exit codes: 0 restored, 1 not in the archive (or bucket missing), 2 connection problem,
 * 3 invalid WAL name or option, 4 other errors (a corrupted object among them).
 */
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import * as path from 'node:path';
import { Option } from 'commander';
import { claimPrefetchLock, DEFAULT_PREFETCH, DEFAULT_RESTORE_SPOOL_DIR, PREFETCH_LOCK, prefetchCovers, prefetchLoop, prefetchRunning, prepareSpool, takeFromSpool, waitForPrefetched } from '../../cloud/wal-prefetch.js';
import { nextInListing, restoreWal, type AheadPlan } from '../../cloud/wal-restore.js';

/** Segments that follow the one asked for, downloaded by the call itself (see the plan below). */
const AHEAD_IN_CALL = 3;
import { BarmanError, errorMessage } from '../../util/errors.js';
import { isAnyXlogFile, walNameKind } from '../../wal/names.js';
import { runIfEntryPoint } from '../../walclient/cli-common.js';
import { cloudCommand, commonOptions, cloudMain, EXIT_CLI, EXIT_OPERATION } from './common.js';

const HELP_AFTER = `
Use it as PostgreSQL's restore_command, e.g.:

  restore_command = 'barman-cloud-wal-restore s3://bucket/path pg %f %p'

The object is found under its exact name or with a compression extension (.gz, .bz2, .xz,
.snappy, .zst, .lz4) and decompressed; a .partial object only when the complete one is not
there (never with --no-partial). Objects archived by barman-ts carry a SHA-256 that is
checked before anything is written to WAL_DEST.

Prefetch (barman-ts): after a download, a background process fetches the following segments
into --spool-dir (at most --prefetch files ahead, 0 to disable) while PostgreSQL replays; the
launcher hands them over with one mv.`;

function program() {
  return cloudCommand('barman-cloud-wal-restore', 'This script can be used as a `restore_command` to download WAL files previously archived with barman-cloud-wal-archive command. Currently AWS S3 and Azure Blob Storage are supported.', 'source')
    .argument('<WAL_NAME>', "The value of the '%f' keyword (according to 'restore_command').")
    .argument('<WAL_DEST>', "The value of the '%p' keyword (according to 'restore_command').")
    .option('--no-partial', 'do not use .partial WAL files')
    .option('--spool-dir <DIR>', 'barman-ts: directory of prefetched WAL files', DEFAULT_RESTORE_SPOOL_DIR)
    .option('--prefetch <N>', `barman-ts: WAL files fetched ahead in the background (0: none; default ${DEFAULT_PREFETCH})`)
    .addOption(new Option('--background-prefetch <AFTER>').hideHelp())
    .addHelpText('after', HELP_AFTER);
}

interface Raw {
  partial: boolean;
  spoolDir: string;
  prefetch?: string;
  backgroundPrefetch?: string;
}

export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<number> {
  const cmd = program();
  return cloudMain(argv, cmd, 'Barman cloud WAL restore exception', async () => {
    const o = cmd.opts<Raw>();
    const common = commonOptions(cmd);
    const [, , name, dest] = cmd.args as [string, string, string, string];
    if (!isAnyXlogFile(name)) throw new BarmanError(`${name} is an invalid name for a WAL file`, EXIT_CLI);
    const depth = o.prefetch === undefined ? DEFAULT_PREFETCH : /^\d+$/.test(o.prefetch) ? Number(o.prefetch) : NaN;
    if (!Number.isFinite(depth)) throw new BarmanError(`invalid value for --prefetch: '${o.prefetch}'`, EXIT_CLI);
    // The spool is bound to the command line (all arguments but WAL_NAME and WAL_DEST), as the
    // launcher compares it.
    const plain = argv.filter((a) => !a.startsWith('--background-prefetch'));
    const source = plain.slice(0, -2).join('\x1f');
    const usable = depth > 0 && !common.test && plain.length === argv.length && argv[argv.length - 2] === name && argv[argv.length - 1] === dest && !argv.some((a) => a.includes('\x1f') || a.includes('\n'));

    // The spool first: a file prefetched (or being prefetched) costs no SDK load nor request.
    let spoolOk = false;
    if (usable && o.backgroundPrefetch === undefined) {
      try {
        await prepareSpool(o.spoolDir, source);
        spoolOk = true;
        if ((await takeFromSpool(o.spoolDir, name, dest)) || ((await prefetchCovers(o.spoolDir, name)) && (await waitForPrefetched(o.spoolDir, name, dest)))) {
          return 0;
        }
      } catch (err) {
        common.log.warning(`prefetch disabled: ${errorMessage(err)}`);
      }
    }
    const { openCloudStorage } = await import('../../cloud/connect.js');
    const { CloudLayout } = await import('../../cloud/layout.js');
    const { storage, location } = await openCloudStorage(common.connect);
    const layout = new CloudLayout(location.prefix, common.server);
    try {
      if (o.backgroundPrefetch !== undefined) {
        await prefetchLoop(storage, layout, o.spoolDir, o.backgroundPrefetch, depth || DEFAULT_PREFETCH, name);
        return 0;
      }
      if (common.test) {
        await storage.containerExists();
        return 0;
      }
      // When the segments that follow are in the archive too, the background prefetch is
      // started as soon as the listing says so (its start-up overlaps this download), and the
      // next few are downloaded here beside this one: the calls that come while the prefetch
      // process is still starting find them in the spool.
      let prefetcher: number | null = null;
      const plan: AheadPlan = async (listing) => {
        if (!spoolOk || walNameKind(name) !== 'segment' || (await prefetchRunning(o.spoolDir)) !== null) return null;
        const ahead = nextInListing(layout, name, listing, AHEAD_IN_CALL);
        if (ahead.length === 0) return null;
        // It starts after them; if one of them fails, it is stopped below.
        prefetcher = await startBackgroundPrefetch(argv, ahead[ahead.length - 1] as string, o.spoolDir);
        return { spool: o.spoolDir, ahead };
      };
      let outcome;
      try {
        outcome = await restoreWal(storage, layout, name, dest, o.partial, (m) => common.log.warning(m), plan);
      } catch (err) {
        stopPrefetch(prefetcher, o.spoolDir);
        // A missing bucket: Barman's "Bucket X does not exist", exit 1.
        if ((err as { kind?: string }).kind === 'missing-container' || !(await storage.containerExists().catch(() => true))) {
          throw new BarmanError(`Bucket ${location.container} does not exist`, EXIT_OPERATION);
        }
        throw err;
      }
      if (!outcome.found) {
        common.log.info(`WAL file ${name} for server ${common.server} does not exists`);
        return EXIT_OPERATION;
      }
      // A segment of the plan missing from the spool: the prefetch process would not fetch it
      // (it starts after the plan) and the next call would wait for it in vain.
      if (!outcome.aheadDone) stopPrefetch(prefetcher, o.spoolDir);
      common.log.info(`Found WAL ${name} for server ${common.server} as ${outcome.found.key}`);
      return 0;
    } finally {
      await storage.close();
    }
  });
}

/**
 * A detached copy of this program that fetches what follows `after` into the spool. Its lock
 * is written here, with its pid, before it even loads: the calls that come meanwhile wait for
 * it instead of downloading the same files.
 */
async function startBackgroundPrefetch(argv: readonly string[], after: string, spool: string): Promise<number | null> {
  const script = process.argv[1];
  if (!script) return null;
  const child = spawn(process.execPath, [script, `--background-prefetch=${after}`, ...argv], { detached: true, stdio: 'ignore' });
  child.unref();
  if (child.pid === undefined) return null;
  await claimPrefetchLock(spool, child.pid, after).catch(() => undefined);
  return child.pid;
}

/** Stop the prefetch process this call started (and drop its lock): the next call starts afresh. */
function stopPrefetch(pid: number | null, spool: string): void {
  if (pid === null) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    /* already gone */
  }
  rmSync(path.join(spool, PREFETCH_LOCK), { force: true });
}

runIfEntryPoint(import.meta.url, () => main());
