/**
 * The prefetch spool of barman-wal-restore: `<spool>/<WAL name>` files fetched ahead of
 * PostgreSQL's requests. Same directory (/var/tmp/walrestore) and layout as Barman's client, so
 * the two can take over from each other. A file appears under its WAL name only once complete
 * (it is written under a dot-prefixed temporary name, fsynced and renamed), which is what lets
 * the sh launcher serve it with a bare `mv`.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { errorMessage, BarmanError } from '../util/errors.js';
import { ensureDir, fsyncDir } from '../util/fsutil.js';
import { decompressFile, identifyCompression } from '../wal/compression.js';

/** Barman's default spool directory. */
export const DEFAULT_SPOOL_DIR = '/var/tmp/walrestore';

/** A temporary name in `dir` for `base` that a spool lookup never matches (dot, pid, .tmp). */
export function tempNameFor(dir: string, base: string): string {
  return path.join(dir, `.${base}.${process.pid}.tmp`);
}

/**
 * The spool is trusted only when it is a real directory of ours that nobody else can write:
 * whatever sits in it is handed to PostgreSQL as WAL, and the default lives in world-writable
 * /var/tmp, where another local user could have created it first and planted files.
 */
export async function spoolTrusted(dir: string): Promise<boolean> {
  const st = await fsp.lstat(dir).catch(() => null);
  if (!st || !st.isDirectory()) return false;
  const uid = process.getuid?.();
  return (uid === undefined || st.uid === uid) && (st.mode & 0o077) === 0;
}

/** Create the spool directory (0700: WAL files hold the whole database's changes). */
export async function ensureSpool(dir: string): Promise<void> {
  try {
    // Never tightened after the fact: files may already have been planted in an open one.
    await ensureDir(dir);
  } catch (err) {
    throw new BarmanError(`cannot create the spool directory ${dir}: ${errorMessage(err)}`, 2);
  }
  if (!(await spoolTrusted(dir))) {
    throw new BarmanError(`the spool directory ${dir} is not a directory of this user with mode 0700: refusing to use it`, 2);
  }
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

/** Make a complete temporary file visible in the spool under its WAL name (dir fsync by caller). */
export async function commitToSpool(plainTmp: string, spool: string, name: string): Promise<void> {
  await fsp.rename(plainTmp, path.join(spool, name));
}

export async function syncSpool(spool: string): Promise<void> {
  await fsyncDir(spool).catch(() => undefined);
}
