/**
 * Prefetch of barman-cloud-wal-restore (barman-ts). After a call that had to download, one
 * detached process per spool (`.prefetch.lock`: pid) fetches the segments that follow while
 * PostgreSQL replays, keeping at most `depth` files ahead in the spool; it stops when the
 * archive has no next segment, or when nothing was consumed for a minute. The sh launcher
 * (bin/barman-cloud-wal-restore) serves a spool file with one `mv` when the spool's `.source`
 * is its own command line.
 *
 * A spool file appears under its WAL name only by rename, after the same checks as a direct
 * restore (length, recorded SHA-256, compression checksums, segment size) and an fsync. A
 * prefetch failure is never reported: the next call misses and downloads for itself.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ObjectStorage } from '../storage/types.js';
import { BarmanError } from '../util/errors.js';
import { pathExists } from '../util/fsutil.js';
import { runPool } from '../util/pool.js';
import { nextSegment, walNameKind } from '../wal/names.js';
import type { CloudLayout } from './layout.js';
import { fetchWal, listWalDir, nextInListing, pickWal, writeWalFile } from './wal-restore.js';

export const DEFAULT_RESTORE_SPOOL_DIR = '/var/tmp/barman-cloud-wal-restore';
export const DEFAULT_PREFETCH = 16;
export const PREFETCH_LOCK = '.prefetch.lock';
export const SPOOL_SOURCE = '.source';
const IDLE_LIMIT_MS = 60_000;
const JOBS = 4;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function readLock(spool: string): Promise<{ pid: number; after: string } | null> {
  const text = await fsp.readFile(path.join(spool, PREFETCH_LOCK), 'utf8').catch(() => null);
  if (text === null) return null;
  const [pidText, after] = text.split('\n');
  const pid = Number(pidText);
  return Number.isInteger(pid) && pid > 0 ? { pid, after: after ?? '' } : null;
}

/** Pid of the live prefetch process of this spool, or null. */
export async function prefetchRunning(spool: string): Promise<number | null> {
  const lock = await readLock(spool);
  return lock && alive(lock.pid) ? lock.pid : null;
}

/** Will the running prefetch fetch `name` (a later segment on its timeline)? */
export async function prefetchCovers(spool: string, name: string): Promise<boolean> {
  const lock = await readLock(spool);
  if (!lock || !alive(lock.pid) || walNameKind(name) !== 'segment') return false;
  return name.slice(0, 8) === lock.after.slice(0, 8) && name > lock.after;
}

/**
 * Write the lock for the prefetch process `pid`; false when another live process holds it.
 * A lock already naming `pid` (written by the call that started it) is its own.
 */
export async function claimPrefetchLock(spool: string, pid: number, after: string): Promise<boolean> {
  const lock = path.join(spool, PREFETCH_LOCK);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await fsp.writeFile(lock, `${pid}\n${after}\n`, { flag: 'wx', mode: 0o600 });
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return false;
    }
    const holder = await prefetchRunning(spool);
    if (holder === pid) return true;
    if (holder !== null) return false;
    await fsp.rm(lock, { force: true });
  }
  return false;
}

/**
 * Make `spool` ours (0700, not a symlink) and bound to `source`: files of another source are
 * removed first. Throws when the directory cannot be trusted.
 */
export async function prepareSpool(spool: string, source: string): Promise<void> {
  await fsp.mkdir(spool, { recursive: true, mode: 0o700 });
  const st = await fsp.lstat(spool);
  const uid = process.getuid?.();
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid) || (st.mode & 0o077) !== 0) {
    throw new BarmanError(`the spool directory ${spool} is not a directory of this user with mode 0700: prefetch disabled`, 4);
  }
  const file = path.join(spool, SPOOL_SOURCE);
  const current = await fsp.readFile(file, 'utf8').catch(() => null);
  if (current === `${source}\n`) return;
  for (const name of await fsp.readdir(spool)) {
    if (walNameKind(name) !== null || name.endsWith('.tmp')) await fsp.rm(path.join(spool, name), { force: true });
  }
  await fsp.writeFile(file, `${source}\n`, { mode: 0o600 });
}

/** Serve `name` from the spool onto `dest`: true when it was there. */
export async function takeFromSpool(spool: string, name: string, dest: string): Promise<boolean> {
  const src = path.join(spool, name);
  try {
    await fsp.rename(src, dest);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return false;
    if (code !== 'EXDEV') throw err;
  }
  const data = await fsp.readFile(src);
  await writeWalFile(dest, data, false);
  await fsp.unlink(src).catch(() => undefined);
  return true;
}

/** Wait (bounded) for a running prefetch to bring `name`; true when it did. */
export async function waitForPrefetched(spool: string, name: string, dest: string, limitMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + limitMs;
  while (Date.now() < deadline) {
    if (await takeFromSpool(spool, name, dest)) return true;
    if ((await prefetchRunning(spool)) === null) return takeFromSpool(spool, name, dest);
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

async function spoolFiles(spool: string): Promise<string[]> {
  return (await fsp.readdir(spool)).filter((n) => walNameKind(n) === 'segment').sort();
}

/**
 * The background loop: fetch the segments after `after` into the spool, at most `depth` ahead
 * (counting those the starting call `asked` fetched itself beside its own).
 * Runs under the spool's lock; returns when the archive has nothing more or nobody consumes.
 */
export async function prefetchLoop(storage: ObjectStorage, layout: CloudLayout, spool: string, after: string, depth: number, asked: string = after): Promise<void> {
  const lock = path.join(spool, PREFETCH_LOCK);
  // The call that started us may have written the lock with our pid already.
  if (!(await claimPrefetchLock(spool, process.pid, after))) return;
  try {
    // Files up to the segment of the call that started us were never asked for (a restart,
    // another timeline): drop them. Those between it and `after` are that call's, ahead.
    for (const n of await spoolFiles(spool)) if (n <= asked) await fsp.rm(path.join(spool, n), { force: true });
    let last = after;
    let listing: string[] = [];
    let idleSince = Date.now();
    for (;;) {
      const ahead = (await spoolFiles(spool)).filter((n) => n > after);
      const room = depth - ahead.length;
      if (room <= 0) {
        if (Date.now() - idleSince > IDLE_LIMIT_MS) return;
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      idleSince = Date.now();
      let next = nextInListing(layout, last, listing, room);
      if (next.length === 0) {
        // Not in the listing we have: list again (next hash dir, or archived since).
        const probe = nextSegment(last);
        const dir = layout.walDir(probe);
        listing = (await listWalDir(storage, dir)).map((o) => o.key);
        if (!pickWal(dir, probe, listing, false)) return;
        next = [probe, ...nextInListing(layout, probe, listing, room - 1)];
      }
      // Segments already in the spool (fetched by the call that started us) are not fetched again.
      const batch: string[] = [];
      for (const n of next) if (!(await pathExists(path.join(spool, n)))) batch.push(n);
      await runPool(batch, JOBS, async (name) => {
        const found = pickWal(layout.walDir(name), name, listing, false);
        if (!found) throw new BarmanError(`${name} vanished`);
        const data = await fetchWal(storage, found, name);
        await writeWalFile(path.join(spool, name), data, true);
      });
      last = next[next.length - 1] as string;
    }
  } catch {
    // Never reported: the next call misses the spool and downloads for itself.
  } finally {
    await fsp.rm(lock, { force: true });
  }
}
