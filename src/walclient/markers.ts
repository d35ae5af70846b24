/**
 * "Already stored" markers of barman-wal-archive's push-ahead.
 *
 * When the archive_command for segment N also pushes later segments that PostgreSQL has marked
 * `.ready`, it records each one that the Barman server durably stored (put-wal exited 0) as
 * `SPOOL/<server>/<wal name>`, holding `<size> <mtime seconds> <inode>` of the file that was
 * read. When PostgreSQL later asks for that segment, the `sh` launcher (bin/barman-wal-archive)
 * compares the marker with `stat -c '%s %Y %i'` of the file and, if equal, removes the marker
 * and succeeds without starting Node or ssh. A segment PostgreSQL has not changed since it was
 * pushed has identical bytes on the server, so the durability promise of archive_command holds.
 *
 * A marker is a promise that data is safe: nobody else may be able to create one. The spool
 * directories must therefore be real directories (not symlinks) owned by the running user with
 * mode 0700 — the launcher checks the same before trusting a marker — otherwise push-ahead is
 * not used at all.
 */
import type { BigIntStats } from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { BarmanError, errorMessage } from '../util/errors.js';

export const DEFAULT_SPOOL_DIR = '/var/tmp/barman-wal-archive';
/** Markers nobody consumed (segment archived another way, cluster rebuilt) go after a day. */
export const MARKER_MAX_AGE_MS = 24 * 3600 * 1000;

/** `<size> <mtime seconds> <inode>`: what `stat -c '%s %Y %i'` prints for the same file. */
export function statSignature(st: BigIntStats): string {
  // %Y truncates to whole seconds; mtimeNs is non-negative for any real WAL file.
  return `${st.size} ${st.mtimeNs / 1_000_000_000n} ${st.ino}`;
}

/** Same file, same size, same modification time (to the nanosecond) as when it was read. */
export function sameFile(a: BigIntStats, b: BigIntStats): boolean {
  return a.ino === b.ino && a.dev === b.dev && a.size === b.size && a.mtimeNs === b.mtimeNs;
}

/** Directory of the markers of one server, or null when the name cannot be a directory name. */
export function markerDirFor(spoolDir: string, server: string): string | null {
  if (!server || server === '.' || server === '..' || server.includes('/') || server.includes('\0')) return null;
  return path.join(spoolDir, server);
}

/**
 * Make sure `dir` is a directory owned by us with mode 0700, creating it if needed. Throws a
 * BarmanError explaining why it cannot be trusted otherwise.
 */
async function ensurePrivateDir(dir: string): Promise<void> {
  try {
    await fsp.mkdir(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new BarmanError(`cannot create spool directory ${dir}: ${errorMessage(err)}`, 2);
    }
  }
  const st = await fsp.lstat(dir);
  if (!st.isDirectory()) throw new BarmanError(`spool directory ${dir} is not a directory`, 2);
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new BarmanError(`spool directory ${dir} belongs to uid ${st.uid}, not to the current user (uid ${uid})`, 2);
  }
  // Ours: tighten it (mkdir honours the umask, an administrator may have created it 0755).
  if ((st.mode & 0o7777) !== 0o700) await fsp.chmod(dir, 0o700);
}

/** Prepare `SPOOL/<server>` for markers; returns its path. Throws BarmanError when unusable. */
export async function prepareMarkerDir(spoolDir: string, server: string): Promise<string> {
  const dir = markerDirFor(spoolDir, server);
  if (!dir) throw new BarmanError(`server name '${server}' cannot be used as a spool directory name`, 2);
  await fsp.mkdir(path.dirname(path.resolve(spoolDir)), { recursive: true, mode: 0o755 }).catch(() => undefined);
  await ensurePrivateDir(spoolDir);
  await ensurePrivateDir(dir);
  return dir;
}

/**
 * Record that `name` (whose file had `signature` when read) is stored on the Barman server.
 * Temp name + rename so that the launcher never reads half a marker. No fsync: a marker lost
 * in a crash only means that the segment is sent once more.
 */
export async function writeMarker(dir: string, name: string, signature: string): Promise<void> {
  const tmp = path.join(dir, `.${name}.${process.pid}.tmp`);
  await fsp.writeFile(tmp, `${signature}\n`, { mode: 0o600 });
  await fsp.rename(tmp, path.join(dir, name));
}

/**
 * If a marker for `name` exists, remove it and tell whether it matched `signature` (true: the
 * segment is already stored and must not be sent again). Missing dir or marker: false.
 */
export async function consumeMarker(dir: string, name: string, signature: string): Promise<boolean> {
  const file = path.join(dir, name);
  let content: string;
  try {
    content = await fsp.readFile(file, 'utf8');
  } catch {
    return false;
  }
  await fsp.unlink(file).catch(() => undefined);
  return content.split('\n')[0] === signature;
}

/** Remove markers (and leftover temp files) older than `maxAgeMs`; best effort, never throws. */
export async function cleanOldMarkers(dir: string, maxAgeMs = MARKER_MAX_AGE_MS, now = Date.now()): Promise<number> {
  let removed = 0;
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    const file = path.join(dir, name);
    try {
      const st = await fsp.lstat(file);
      if (st.isFile() && now - st.mtimeMs > maxAgeMs) {
        await fsp.unlink(file);
        removed++;
      }
    } catch {
      // Consumed by the launcher meanwhile: nothing to clean.
    }
  }
  return removed;
}
