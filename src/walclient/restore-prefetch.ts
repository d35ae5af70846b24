/**
 * Background prefetch of barman-wal-restore -p N. When the sh launcher serves a file from the
 * spool (or after a successful call) and fewer than N/2 files are left ahead, it starts
 * `restore-main.js --background-prefetch ...` detached: that process fetches the next batch
 * (the segment after the highest one in the spool, up to N files) while PostgreSQL replays, so
 * the fixed cost of a batch (Node, ssh handshake, remote barman: ~0.5 s or more) overlaps
 * recovery instead of stalling it.
 *
 * Safety: one such process at a time per spool (`.prefetch.lock`, created exclusively, holding
 * its pid and the first name it fetches). It writes only through fetchBatch, so a file appears
 * under its WAL name only by rename after its checksum was verified. It never reports anything:
 * a failure (server unreachable, nothing more archived) only means the next call misses the
 * spool and fetches itself, as without it. A call that misses while it runs for that name waits
 * for it (bounded) rather than fetching the same files a second time.
 */
import { promises as fsp, readFileSync, unlinkSync } from 'node:fs';
import * as path from 'node:path';
import { BarmanError } from '../util/errors.js';
import { DEFAULT_WAL_SEGMENT_SIZE, nextSegment, parseWalName, walNameKind } from '../wal/names.js';
import { fetchBatch } from './batch.js';
import type { RestoreOptions } from './remote-get-wal.js';
import { readBootId, spoolMatchesBoot, spoolTrusted } from './spool.js';

/** The lock of the running background prefetch (the sh launcher tests it before starting one). */
export const PREFETCH_LOCK = '.prefetch.lock';
/**
 * The sh launcher's claim (an exclusive create) before it starts a background prefetch, so that
 * the calls served meanwhile do not start more Node processes; removed by that process.
 */
export const PREFETCH_START = '.prefetch.start';
/** Left by a background prefetch that the server answered "not found": none is started until a call fetches again. */
export const PREFETCH_NONE = '.prefetch.none';
/** Left when the server refuses batches (Barman's): no background prefetch until the spool is reset. */
export const PREFETCH_UNSUPPORTED = '.prefetch.unsupported';
/**
 * How long `.prefetch.unsupported` keeps a default prefetch (no -p) from asking for batches: the
 * server may be replaced by a barman-ts one meanwhile.
 */
const UNSUPPORTED_FOR_MS = 3600_000;

/** Record that the server refused batches (Barman's): see PREFETCH_UNSUPPORTED. */
export async function markBatchesRefused(spool: string): Promise<void> {
  const file = path.join(spool, PREFETCH_UNSUPPORTED);
  await fsp.writeFile(file, '', { mode: 0o600 }).catch(() => undefined);
  // Its mtime says when: set it explicitly (an empty file rewritten empty may keep the old one).
  const now = new Date();
  await fsp.utimes(file, now, now).catch(() => undefined);
}

/** The server refused batches within UNSUPPORTED_FOR_MS (only in a spool we trust). */
export async function batchesRefusedLately(spool: string): Promise<boolean> {
  if (!(await spoolTrusted(spool))) return false;
  const st = await fsp.lstat(path.join(spool, PREFETCH_UNSUPPORTED)).catch(() => null);
  return st !== null && st.isFile() && Date.now() - st.mtimeMs < UNSUPPORTED_FOR_MS;
}

/** A start claim older than this without a lock is left over by a killed process. */
const START_STALE_MS = 10_000;
/** A background prefetch still running after this is stopped (a stalled network). */
export const BACKGROUND_PREFETCH_LIMIT_MS = 5 * 60_000;
/** How long a call that misses waits for a background prefetch fetching its file. */
const WAIT_FOR_PREFETCH_MS = 60_000;
const POLL_MS = 20;

interface LockInfo {
  pid: number;
  /** First WAL name the holder fetches (the batch covers it and the following ones). */
  first: string;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the pid belongs to another user now, so it is not our prefetch: stale.
    return false;
  }
}

async function readLock(spool: string): Promise<LockInfo | null> {
  const text = await fsp.readFile(path.join(spool, PREFETCH_LOCK), 'utf8').catch(() => null);
  if (text === null) return null;
  const [pidText, first] = text.split('\n');
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0) return { pid: 0, first: '' };
  return { pid, first: first ?? '' };
}

/** Take the lock for fetching from `first` on; false when a live process holds it. */
export async function acquirePrefetchLock(spool: string, first: string): Promise<boolean> {
  const file = path.join(spool, PREFETCH_LOCK);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await fsp.writeFile(file, `${process.pid}\n${first}\n`, { flag: 'wx', mode: 0o600 });
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return false;
    }
    const held = await readLock(spool);
    // A holder killed before it could remove its lock: stale, taken over.
    if (held && held.pid > 0 && alive(held.pid)) return false;
    await fsp.unlink(file).catch(() => undefined);
  }
  return false;
}

/**
 * A call fetched `fetched` from the server: if that is at or past the name a background
 * prefetch found missing, the archive has grown and background prefetches may find more.
 * (PostgreSQL also asks for history files and older segments: those say nothing about it.)
 */
export async function clearPrefetchNone(spool: string, fetched: string): Promise<void> {
  const file = path.join(spool, PREFETCH_NONE);
  const missing = (await fsp.readFile(file, 'utf8').catch(() => null))?.split('\n')[0]?.trim();
  if (missing === undefined) return;
  const comparable = walNameKind(missing) === 'segment' && walNameKind(fetched) === 'segment' && parseWalName(missing).tli === parseWalName(fetched).tli;
  if (comparable && fetched < missing) return;
  await fsp.unlink(file).catch(() => undefined);
}

/**
 * Synchronous cleanup for a background prefetch that must exit now (SIGTERM when PostgreSQL
 * stops, or its time limit): its lock and the launcher's claim, so that prefetching goes on
 * after a restart rather than waiting for a lock nobody holds.
 */
export function releasePrefetchLockSync(spool: string): void {
  try {
    const pid = Number(readFileSync(path.join(spool, PREFETCH_LOCK), 'utf8').split('\n')[0]);
    if (pid === process.pid) unlinkSync(path.join(spool, PREFETCH_LOCK));
  } catch {
    // no lock, or not ours
  }
  try {
    unlinkSync(path.join(spool, PREFETCH_START));
  } catch {
    // already removed
  }
}

export async function releasePrefetchLock(spool: string): Promise<void> {
  const held = await readLock(spool);
  if (held?.pid === process.pid) await fsp.unlink(path.join(spool, PREFETCH_LOCK)).catch(() => undefined);
}

/**
 * Where the next batch starts: after the highest segment of WAL_NAME's timeline among `after`
 * (what the launcher saw in the spool) and what the spool holds now, or after WAL_NAME (just
 * served). The segment size (for the step from one log to the next) is the size of a plain
 * segment we hold: that file, or WAL_DEST.
 */
export async function nextBatchStart(spool: string, walName: string, walDest: string, after: string = walName): Promise<string | null> {
  if (walNameKind(walName) !== 'segment') return null;
  const tli = parseWalName(walName).tli;
  const sameTimeline = (name: string) => walNameKind(name) === 'segment' && parseWalName(name).tli === tli;
  let highest = walName;
  for (const name of [after, ...(await fsp.readdir(spool))]) {
    if (sameTimeline(name) && name > highest) highest = name;
  }
  const inSpool = await fsp.stat(path.join(spool, highest)).catch(() => null);
  const size = inSpool?.size ?? (await fsp.stat(walDest).catch(() => null))?.size ?? DEFAULT_WAL_SEGMENT_SIZE;
  try {
    return nextSegment(highest, size);
  } catch {
    // Not a valid segment size (a partial file at WAL_DEST?): assume PostgreSQL's default.
    return nextSegment(highest, DEFAULT_WAL_SEGMENT_SIZE);
  }
}

/** The background run (`--background-prefetch`): fetch the next batch into the spool, quietly. */
export async function backgroundPrefetch(o: RestoreOptions, after: string = o.walName): Promise<void> {
  try {
    await prefetchNextBatch(o, after);
  } finally {
    await fsp.unlink(path.join(o.spoolDir, PREFETCH_START)).catch(() => undefined);
  }
}

async function prefetchNextBatch(o: RestoreOptions, after: string): Promise<void> {
  if (o.parallel < 2 || o.gzip || o.bzip2) return;
  // Only a spool the foreground prepared for this boot: it is the one that empties stale ones.
  if (!(await spoolTrusted(o.spoolDir))) return;
  const bootId = await readBootId();
  if (!(await spoolMatchesBoot(o.spoolDir, bootId))) return;
  const first = await nextBatchStart(o.spoolDir, o.walName, o.walDest, after);
  if (first === null) return;
  const locked = await acquirePrefetchLock(o.spoolDir, first);
  // From here on the lock (or the other holder's) keeps the launcher from starting another.
  await fsp.unlink(path.join(o.spoolDir, PREFETCH_START)).catch(() => undefined);
  if (!locked) return;
  try {
    const spoolSync = bootId === null;
    let batch = await fetchBatch(o, null, spoolSync, 'accept', first);
    if (batch.kind === 'unsupported' && batch.retryPlain) batch = await fetchBatch(o, null, spoolSync, 'plain', first);
    // Barman's server: every later attempt would cost two refused ssh sessions during replay.
    if (batch.kind === 'unsupported') await markBatchesRefused(o.spoolDir);
  } catch (err) {
    // Not found: nothing archived after it yet. Trying again at every call served from the
    // spool would cost an ssh session each: the next call that fetches itself re-enables it.
    if (err instanceof BarmanError && err.exitCode === 1) {
      await fsp.writeFile(path.join(o.spoolDir, PREFETCH_NONE), `${first}\n`, { mode: 0o600 }).catch(() => undefined);
    }
    // Anything else: the foreground asks when it needs the file.
  } finally {
    await releasePrefetchLock(o.spoolDir);
  }
}

/**
 * A call that missed the spool: if a background prefetch is fetching `name` (same timeline, at
 * or after its first name), wait until the file is in the spool or the prefetch ended. True
 * when it is there now.
 */
export async function waitForPrefetch(spool: string, name: string): Promise<boolean> {
  if (walNameKind(name) !== 'segment') return false;
  const file = path.join(spool, name);
  const deadline = Date.now() + WAIT_FOR_PREFETCH_MS;
  for (;;) {
    if (await fsp.lstat(file).then(() => true, () => false)) return true;
    const held = await readLock(spool);
    if (!held) {
      // Not locked yet: maybe just started by the launcher (Node takes a while to start).
      const start = path.join(spool, PREFETCH_START);
      const claimed = await fsp.lstat(start).catch(() => null);
      if (!claimed) break;
      if (Date.now() - claimed.mtimeMs > START_STALE_MS) {
        await fsp.unlink(start).catch(() => undefined);
        break;
      }
      if (Date.now() > deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      continue;
    }
    if (held.pid <= 0 || !alive(held.pid)) {
      // Killed before it could remove its lock (a standby stopped mid-prefetch): the launcher
      // starts no prefetch while the lock exists, so it goes now.
      await fsp.unlink(path.join(spool, PREFETCH_LOCK)).catch(() => undefined);
      break;
    }
    if (walNameKind(held.first) !== 'segment' || parseWalName(held.first).tli !== parseWalName(name).tli || name < held.first) return false;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  // The prefetch ended between two looks: it may have renamed the file just before.
  return fsp.lstat(file).then(() => true, () => false);
}
