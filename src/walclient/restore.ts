/**
 * barman-wal-restore, the restore_command client (spec §6.2): fetch WAL_NAME from the Barman
 * server over SSH (`barman get-wal`) into WAL_DEST, optionally prefetching the following WAL
 * files into a spool directory.
 *
 * Prefetch (-p N) first asks our server for `get-wal --batch N`: WAL_NAME and up to N-1 following
 * files in one tar stream over one SSH session, with SHA-256 checksums. Barman's server rejects
 * the option; the client then speaks Barman's protocol (`--peek N`, then one get-wal per name).
 *
 * PostgreSQL must never read a half file: everything is written under a temporary name next to
 * its destination and renamed. Spool files are fsynced only when no boot id can tell a crashed
 * boot's spool apart (spool.ts); WAL_DEST never is (PostgreSQL asks again after a crash).
 * Nothing is printed here; failures are BarmanErrors whose exit code is the one the command
 * must end with (1 not found, 2 ssh/protocol, 3 bad destination/name).
 */
import { spawn } from 'node:child_process';
import { createHash, type Hash } from 'node:crypto';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BarmanError, errorMessage } from '../util/errors.js';
import { FILE_MODE } from '../util/fsutil.js';
import { mapPool } from '../util/pool.js';
import { assertSafeWalName } from '../wal/names.js';
import { fetchBatch } from './batch.js';
import { getWalSshArgs, remoteFailure, runSsh, type RestoreOptions } from './remote-get-wal.js';
import { sshOutcome } from './ssh.js';
import { commitToSpool, ensureSpool, plainDownload, readBootId, resetSpool, spoolMatchesBoot, spoolTrusted, syncSpool, takeFromSpool, tempNameFor } from './spool.js';
import { batchesRefusedLately, clearPrefetchNone, markBatchesRefused, waitForPrefetch } from './restore-prefetch.js';

export type RestoreSource = 'spool' | 'batch' | 'peek' | 'single';

export interface RestoreResult {
  source: RestoreSource;
  /** Files left in the spool for the next calls. */
  prefetched: string[];
  /** Why the `--batch` request failed when WAL_NAME then came through a single get-wal. */
  batchFailure?: string;
  /** Why -p was not honoured (an unusable spool): worth a line, since it costs one SSH session per WAL. */
  prefetchOff?: string;
}

/** Bytes buffered before the file sink writes (one writev for many ~64 KiB ssh reads). */
const SINK_BUFFER = 4 << 20;

/** Write all of `bufs` at the file position (writev, then plain writes for a short count). */
async function writeAll(fh: fsp.FileHandle, bufs: Buffer[]): Promise<void> {
  const total = bufs.reduce((n, b) => n + b.length, 0);
  const { bytesWritten } = await fh.writev(bufs);
  if (bytesWritten === total) return;
  const rest = Buffer.concat(bufs).subarray(bytesWritten);
  for (let off = 0; off < rest.length; ) off += (await fh.write(rest, off, rest.length - off)).bytesWritten;
}

/**
 * The end of a download: chunks go as they are from ssh's pipe to the file, the ones that
 * arrive while a write runs batched into the next writev (no copy, few syscalls).
 */
function downloadSink(fh: fsp.FileHandle): Writable {
  return new Writable({
    highWaterMark: SINK_BUFFER,
    writev(chunks, cb) {
      writeAll(
        fh,
        chunks.map((c) => c.chunk as Buffer),
      ).then(() => cb(), cb);
    },
  });
}

/**
 * A pass-through that feeds a hash as each (~64 KiB) chunk arrives: hashing a big batch at
 * once would keep the thread from reading ssh's pipe, and ssh would stall.
 */
function hasher(hash: Hash): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
  });
}

/** Stream `src` into a new file `file` (0600), optionally fsynced; returns the SHA-256 when asked. */
async function writeStreamToFile(src: Readable, file: string, opts: { sync: boolean; sha256?: boolean }): Promise<string> {
  const fh = await fsp.open(file, 'w', FILE_MODE);
  const hash = opts.sha256 ? createHash('sha256') : undefined;
  try {
    await pipeline([src, ...(hash ? [hasher(hash)] : []), downloadSink(fh)]);
    if (opts.sync) await fh.sync();
  } finally {
    await fh.close();
  }
  return hash ? hash.digest('hex') : '';
}

/**
 * Destination checks (Barman: not a directory, openable, else exit 3) done by creating the
 * temporary file we write into next to it: nothing ever appears at WAL_DEST before the rename.
 */
async function openDestTemp(dest: string): Promise<string> {
  let isDir = false;
  try {
    isDir = fs.statSync(dest).isDirectory();
  } catch {
    // does not exist yet: fine
  }
  if (isDir) throw new BarmanError(`WAL_DEST cannot be a directory: ${dest}`, 3);
  const tmp = tempNameFor(path.dirname(dest), path.basename(dest));
  try {
    const fh = await fsp.open(tmp, 'w', FILE_MODE);
    await fh.close();
  } catch (err) {
    throw new BarmanError(`Cannot open '${dest}' (WAL_DEST) for writing: ${errorMessage(err)}`, 3);
  }
  return tmp;
}

/** Decompress if needed, then rename the download onto its final name. */
async function finishDownload(tmp: string, finalPath: string): Promise<void> {
  const plain = await plainDownload(tmp);
  try {
    await fsp.rename(plain, finalPath);
  } catch (err) {
    await fsp.unlink(plain).catch(() => undefined);
    throw new BarmanError(`cannot write ${finalPath}: ${errorMessage(err)}`, 3);
  }
}

/** One plain `get-wal` session writing `name` into the file `tmp`. */
async function fetchOne(o: RestoreOptions, name: string, tmp: string, sync: boolean): Promise<void> {
  const run = await runSsh(getWalSshArgs(o, { walName: name }), async (stdout) => {
    await writeStreamToFile(stdout, tmp, { sync });
  });
  if (run.code !== 0 || run.signal) throw remoteFailure(run, 'get-wal');
}

/** Barman's protocol: `--peek N`, then one get-wal per name (main file into `destTmp`). */
async function fetchPeek(o: RestoreOptions, destTmp: string, spoolSync: boolean): Promise<string[]> {
  let listing = '';
  const run = await runSsh(getWalSshArgs(o, { peek: o.parallel }), async (stdout) => {
    stdout.setEncoding('utf8');
    for await (const chunk of stdout as AsyncIterable<string>) if (listing.length < 1 << 20) listing += chunk;
  });
  if (run.code !== 0 || run.signal) throw remoteFailure(run, 'get-wal --peek');
  const names = listing.split('\n').map((l) => l.trim()).filter(Boolean);
  if (names[0] !== o.walName) throw new BarmanError(`The required file is not available: ${o.walName}`, 2);
  const others = names.slice(1).filter((n) => {
    try {
      assertSafeWalName(n, 2);
      return true;
    } catch {
      return false;
    }
  });
  if (others.length > 0) await ensureSpool(o.spoolDir);
  const prefetched: string[] = [];
  // Barman starts one session per name at once; the same bound (N sessions) applies here.
  const results = await mapPool([o.walName, ...others], Math.max(1, o.parallel), async (name) => {
    if (name === o.walName) {
      await fetchOne(o, name, destTmp, false);
      return null;
    }
    const tmp = tempNameFor(o.spoolDir, name);
    try {
      await fetchOne(o, name, tmp, spoolSync);
      await commitToSpool(await plainDownload(tmp), o.spoolDir, name);
      prefetched.push(name);
    } catch {
      // A prefetch that failed is only a miss later: the file is asked for again then.
      await fsp.unlink(tmp).catch(() => undefined);
      await fsp.unlink(`${tmp}.plain`).catch(() => undefined);
    }
    return null;
  });
  void results;
  if (prefetched.length > 0 && spoolSync) await syncSpool(o.spoolDir);
  return prefetched;
}

/**
 * Fetch WAL_NAME into WAL_DEST (spool first, then the Barman server). `waitForPrefetch` false:
 * do not wait for a background prefetch bringing it (the caller already did).
 */
export async function restoreWal(o: RestoreOptions, opts: { waitForPrefetch?: boolean } = {}): Promise<RestoreResult> {
  assertSafeWalName(o.walName, 3);
  const destTmp = await openDestTemp(o.walDest);
  try {
    const bootId = await readBootId();
    // A spool of another boot may hold files torn by a crash: never served, emptied below.
    const spoolCurrent = await spoolMatchesBoot(o.spoolDir, bootId);
    if (spoolCurrent && (await takeFromSpool(o.spoolDir, o.walName, o.walDest))) return { source: 'spool', prefetched: [] };
    // A background prefetch (restore-prefetch.ts) about to deliver it: waiting beats a second
    // fetch of the same files.
    if (spoolCurrent && o.parallel > 1 && opts.waitForPrefetch !== false && (await spoolTrusted(o.spoolDir)) && (await waitForPrefetch(o.spoolDir, o.walName))) {
      if (await takeFromSpool(o.spoolDir, o.walName, o.walDest)) return { source: 'spool', prefetched: [] };
    }
    let source: RestoreSource = 'single';
    let prefetched: string[] = [];
    let batchFailure: string | undefined;
    // An unusable spool (someone else's, or too open) only turns prefetching off: failing here
    // would read as "no such WAL" to PostgreSQL and end the recovery early. It is said, though:
    // silently, every WAL would cost an SSH session.
    let prefetchOff: string | undefined;
    // A default prefetch against Barman's server (it refused batches lately): WAL_NAME alone,
    // without paying a refused session first at every call.
    const defaultRefused = o.parallelByDefault === true && (spoolCurrent ? await batchesRefusedLately(o.spoolDir) : false);
    const prefetch =
      o.parallel > 0 &&
      !defaultRefused &&
      !(o.parallelByDefault === true && (o.gzip || o.bzip2)) &&
      (await ensureSpool(o.spoolDir)
        // Emptied and stamped for this boot before anything unsynced lands in it.
        .then(() => (spoolCurrent ? undefined : resetSpool(o.spoolDir, bootId)))
        .then(
          () => true,
          (err: unknown) => {
            prefetchOff = `prefetch ${o.parallelByDefault === true ? '' : '(-p) '}disabled: ${errorMessage(err)}`;
            return false;
          },
        ));
    const spoolSync = bootId === null;
    if (prefetch && !o.gzip && !o.bzip2) {
      let batch = await fetchBatch(o, destTmp, spoolSync, 'accept');
      // An older barman-ts server knows --batch but not --accept-compression.
      if (batch.kind === 'unsupported' && batch.retryPlain) batch = await fetchBatch(o, destTmp, spoolSync, 'plain');
      if (batch.kind === 'ok') {
        source = 'batch';
        prefetched = batch.prefetched;
      } else if (batch.kind === 'broken') {
        // Never report "not found" for a batch problem: PostgreSQL would end its recovery
        // there. WAL_NAME alone, with Barman's single-file protocol, decides.
        await fetchOne(o, o.walName, destTmp, false);
        batchFailure = batch.reason;
      } else if (o.parallelByDefault === true) {
        // Barman's server, and nobody asked for -p: one get-wal, as Barman's client would.
        await markBatchesRefused(o.spoolDir);
        await fetchOne(o, o.walName, destTmp, false);
      } else {
        source = 'peek';
        prefetched = await fetchPeek(o, destTmp, spoolSync);
      }
    } else if (prefetch) {
      // -z/-j ask for a transfer encoding that --batch does not offer: Barman's protocol has it.
      source = 'peek';
      prefetched = await fetchPeek(o, destTmp, spoolSync);
    } else {
      await fetchOne(o, o.walName, destTmp, false);
    }
    await finishDownload(destTmp, o.walDest);
    if (prefetch) await clearPrefetchNone(o.spoolDir, o.walName);
    return {
      source,
      prefetched,
      ...(batchFailure === undefined ? {} : { batchFailure }),
      ...(prefetchOff === undefined ? {} : { prefetchOff }),
    };
  } finally {
    await fsp.unlink(destTmp).catch(() => undefined);
  }
}

/** `--test`: run `get-wal --test` remotely; its output goes to ours. Returns the exit code. */
export async function testRemote(o: RestoreOptions, stdout: NodeJS.WritableStream, stderr: NodeJS.WritableStream): Promise<number> {
  const child = spawn('ssh', getWalSshArgs(o, { test: true }), { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.pipe(stdout, { end: false });
  child.stderr.pipe(stderr, { end: false });
  const end = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
    child.on('error', (error) => resolve({ code: null, signal: null, error }));
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  if (end.error) throw new BarmanError(`cannot run ssh: ${end.error.message}`, 2);
  const outcome = sshOutcome(end.code, end.signal, 2);
  if (outcome.message) throw new BarmanError(outcome.message, outcome.exitCode);
  return outcome.exitCode;
}
