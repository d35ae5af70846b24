/**
 * The prefetch spool of barman-wal-restore: `<spool>/<WAL name>` files fetched ahead of
 * PostgreSQL's requests. Same directory (/var/tmp/walrestore) and layout as Barman's client, so
 * the two can take over from each other. A file appears under its WAL name only once complete
 * (it is written under a dot-prefixed temporary name and renamed), which is what lets
 * the sh launcher serve it with a bare `mv`.
 *
 * Spool files are a cache, not the archive, so they are not fsynced when the boot id can be
 * read: within one boot the page cache is coherent and a renamed file is read back whole; only
 * a crash can leave a torn file under a WAL name, and a crash changes the boot id. `.boot_id`
 * in the spool names the boot its files were written in; a spool of another boot is served by
 * nobody (the sh launcher compares it too) and emptied before prefetching again. Without a
 * readable boot id, files are fsynced as before and the spool carries no `.boot_id`.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { errorMessage, BarmanError } from '../util/errors.js';
import { ensureDir, fsyncDir, writeFileAtomic } from '../util/fsutil.js';
import { walNameKind } from '../wal/names.js';
import { decompressFile, identifyCompression } from '../wal/compression.js';
import { dirDistrust, dirTrusted } from './trust-rules.js';

/** Barman's default spool directory. */
export const DEFAULT_SPOOL_DIR = '/var/tmp/walrestore';

/** A temporary name in `dir` for `base` that a spool lookup never matches (dot, pid, .tmp). */
export function tempNameFor(dir: string, base: string): string {
  return path.join(dir, `.${base}.${process.pid}.tmp`);
}

/**
 * The spool is trusted only when it is a real directory of ours that nobody else can create
 * files in (trust-rules.ts dirTrusted, the launcher's dir_trusted): whatever sits in it is
 * handed to PostgreSQL as WAL, and the default lives in world-writable /var/tmp, where another
 * local user could have created it first and planted files. 0700 and 0755 (what Barman's client
 * and `mkdir` leave) are both fine: the files themselves are written 0600.
 */
export async function spoolTrusted(dir: string): Promise<boolean> {
  const st = await fsp.lstat(dir).catch(() => null);
  return st !== null && dirTrusted(st, process.getuid?.());
}

/** Create the spool directory (0700: WAL files hold the whole database's changes). */
export async function ensureSpool(dir: string): Promise<void> {
  try {
    // Never tightened after the fact: files may already have been planted in an open one.
    await ensureDir(dir);
  } catch (err) {
    throw new BarmanError(`cannot create the spool directory ${dir}: ${errorMessage(err)}`, 2);
  }
  const st = await fsp.lstat(dir);
  const why = dirDistrust(st, process.getuid?.());
  if (why !== null) throw new BarmanError(`the spool directory ${dir} ${why}: refusing to use it (another user could have put files in it)`, 2);
}

/**
 * Move `src` onto `dest`. A rename when both are on one file system; otherwise a copy under a
 * temporary name in dest's directory, renamed into place, then `src` removed.
 */
export async function moveFile(src: string, dest: string): Promise<void> {
  try {
    await fsp.rename(src, dest);
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
  }
  const tmp = tempNameFor(path.dirname(dest), path.basename(dest));
  try {
    await fsp.copyFile(src, tmp);
    await fsp.rename(tmp, dest);
  } catch (err) {
    await fsp.unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fsp.unlink(src).catch(() => undefined);
}

/**
 * Serve `name` from the spool: true when `<spool>/<name>` existed and is now `dest`. A missing
 * file is false; any other failure (dest not writable) is an exit-3 error, as for a download.
 */
export async function takeFromSpool(spool: string, name: string, dest: string): Promise<boolean> {
  if (!(await spoolTrusted(spool))) return false;
  const src = path.join(spool, name);
  try {
    await moveFile(src, dest);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      // ENOENT may be about dest's directory too: only a missing spool file is a miss.
      try {
        await fsp.lstat(src);
      } catch {
        return false;
      }
    }
    throw new BarmanError(`cannot move ${src} to ${dest}: ${errorMessage(err)}`, 3);
  }
}

/**
 * A downloaded file is turned into what PostgreSQL reads: if its first bytes say it is
 * compressed (get-wal -z, --keep-compression, Barman's server), it is decompressed into a new
 * temporary file; the plain file's path is returned (the caller renames it into place).
 */
export async function plainDownload(tmp: string): Promise<string> {
  const algo = await identifyCompression(tmp);
  if (algo === null) return tmp;
  const plain = `${tmp}.plain`;
  try {
    await decompressFile(tmp, plain, algo);
  } finally {
    await fsp.unlink(tmp).catch(() => undefined);
  }
  return plain;
}

/** Make a complete temporary file visible in the spool under its WAL name (dir fsync, if any, by caller). */
export async function commitToSpool(plainTmp: string, spool: string, name: string): Promise<void> {
  await fsp.rename(plainTmp, path.join(spool, name));
}

export async function syncSpool(spool: string): Promise<void> {
  await fsyncDir(spool).catch(() => undefined);
}

/** Where the kernel publishes the current boot's id (a new random UUID at every boot). */
export const BOOT_ID_SOURCE = '/proc/sys/kernel/random/boot_id';
/** The spool's record of the boot its unsynced files belong to (the sh launcher reads it too). */
export const SPOOL_BOOT_ID = '.boot_id';

/** The current boot id, or null when it cannot be read (spool files are then fsynced). */
export async function readBootId(source: string = BOOT_ID_SOURCE): Promise<string | null> {
  try {
    const id = (await fsp.readFile(source, 'utf8')).split('\n')[0]?.trim() ?? '';
    return id === '' ? null : id;
  } catch {
    return null;
  }
}

/**
 * Whether the files in the spool may be served in this boot: with a boot id, only when the
 * spool's `.boot_id` is this boot's; without one, only when there is no `.boot_id` (its files
 * were written unsynced in some boot that can no longer be told from this one).
 */
export async function spoolMatchesBoot(spool: string, bootId: string | null): Promise<boolean> {
  const file = path.join(spool, SPOOL_BOOT_ID);
  if (bootId === null) return (await fsp.lstat(file).catch(() => null)) === null;
  const recorded = await fsp.readFile(file, 'utf8').catch(() => null);
  return recorded !== null && recorded.split('\n')[0]?.trim() === bootId;
}

/**
 * Our files in a spool: WAL names (served), dot-temporaries (left by an interrupted run) and the
 * background prefetch's markers (restore-prefetch.ts: a pid recorded in another boot means nothing).
 */
function isSpoolFileName(name: string): boolean {
  return walNameKind(name) !== null || (name.startsWith('.') && /\.tmp(\.plain)?$/.test(name)) || /^\.prefetch\.(lock|start|none|unsupported)$/.test(name);
}

/**
 * Empty a spool that does not match this boot and stamp it for this one, before anything is
 * prefetched into it. Only regular files we could have written are removed: the directory may
 * be shared with Barman's client, and nothing else in it is ours to delete.
 */
export async function resetSpool(spool: string, bootId: string | null): Promise<void> {
  try {
    for (const name of await fsp.readdir(spool)) {
      if (!isSpoolFileName(name)) continue;
      const file = path.join(spool, name);
      const st = await fsp.lstat(file).catch(() => null);
      if (st?.isFile()) await fsp.unlink(file).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
    }
    if (bootId !== null) {
      // Fsynced although once per boot only: cheap, and it keeps the record plainly durable.
      await writeFileAtomic(path.join(spool, SPOOL_BOOT_ID), `${bootId}\n`);
    } else {
      // Durable mode from now on: the removals must be on disk before the record goes, so a
      // crash cannot leave unsynced files in a spool without `.boot_id`.
      await fsyncDir(spool);
      await fsp.rm(path.join(spool, SPOOL_BOOT_ID), { force: true });
      await fsyncDir(spool);
    }
  } catch (err) {
    throw new BarmanError(`cannot empty the stale spool directory ${spool}: ${errorMessage(err)}`, 2);
  }
}
