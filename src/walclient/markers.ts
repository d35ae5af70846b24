/**
 * "Already stored" markers of barman-wal-archive's push-ahead.
 *
 * When the archive_command for segment N also pushes later segments that PostgreSQL has marked
 * `.ready`, it records each one that the Barman server durably stored (put-wal exited 0) as
 * `SPOOL/<server>/<wal name>`, holding one line `<dev> <inode> <size> <mtime.ns> <destination>`:
 * the first four describe the file that was read (trust-rules.ts fileSignature), the
 * destination (`user@host:port config`, see destinationKey) says WHICH Barman server stored it.
 * When PostgreSQL later asks for that segment, the `sh` launcher (bin/barman-wal-archive) builds
 * the same line from `stat -c "$marker_stat_format"` of the file and its own options and, if
 * equal, removes the marker and succeeds without starting Node or ssh. A segment PostgreSQL has not changed since it was
 * pushed has identical bytes on that server, so the durability promise of archive_command holds.
 *
 * The destination matters: with `archive_command = 'barman-wal-archive A pg %p &&
 * barman-wal-archive B pg %p'` (or after moving archive_command from A to B) a marker left by
 * the push to A must never answer a call for B. Markers of another destination are left alone
 * (neither trusted, nor consumed, nor overwritten) so that each destination only ever pushes a
 * segment once.
 *
 * A marker is a promise that data is safe: nobody else may be able to create one. The spool
 * directories must therefore be directories nobody but the running user can create files in
 * (trust-rules.ts dirTrusted; the launcher's dir_trusted is the same rule) — otherwise push-ahead
 * is not used at all. They are created 0700 and never loosened or tightened: a directory that
 * was open to others may hold planted markers, and chmod would not remove them.
 */
import type { BigIntStats } from 'node:fs';
import { promises as fsp } from 'node:fs';
import { dirDistrust, fileSignature } from './trust-rules.js';
import * as path from 'node:path';
import { BarmanError, errorMessage } from '../util/errors.js';

export const DEFAULT_SPOOL_DIR = '/var/tmp/barman-wal-archive';
/** Markers nobody consumed (segment archived another way, cluster rebuilt) go after a day. */
export const MARKER_MAX_AGE_MS = 24 * 3600 * 1000;

/**
 * `<dev> <inode> <size> <mtime.ns>`: what the launcher's `stat -c "$marker_stat_format"` prints
 * for the same file (trust-rules.ts). Null: no marker can vouch for this file.
 */
export function statSignature(st: BigIntStats): string | null {
  return fileSignature(st);
}

/** Same file, same size, same modification time (to the nanosecond) as when it was read. */
export function sameFile(a: BigIntStats, b: BigIntStats): boolean {
  return a.ino === b.ino && a.dev === b.dev && a.size === b.size && a.mtimeNs === b.mtimeNs;
}

/** The Barman server a marker vouches for: what the launcher knows from its options. */
export interface MarkerDestination {
  user: string;
  host: string;
  /** ssh port as given on the command line (digits); unset: ssh's default. */
  port?: string | number;
  /** `--config` as given; unset and empty are the same (no `--config` sent). */
  config?: string;
}

/**
 * `user@host:port config` exactly as the sh launcher builds it (port and config empty when not
 * given, so the line may end with a space). Unambiguous for targets ssh.ts accepts: user and
 * host hold no `@` or whitespace and the port only digits, so the first `@`, the first space
 * and the last `:` before it split it back into the same four values.
 */
export function destinationKey(d: MarkerDestination): string {
  return `${d.user}@${d.host}:${d.port === undefined ? '' : String(d.port)} ${d.config ?? ''}`;
}

/**
 * The launcher compares the first line of a marker only: a destination spanning lines (a
 * config path with a newline) could make a marker's first line equal another destination's.
 * Such destinations get no markers (push-ahead off).
 */
export function markerUsableFor(destination: string): boolean {
  return !destination.includes('\n');
}

/** The one line of a marker (without the newline). */
export function markerLine(signature: string, destination: string): string {
  return `${signature} ${destination}`;
}

/** Destination part of a marker line; null for a line that is not `<n> <n> <n> <n>.<n> <dest>` (an older format). */
function destinationOf(line: string): string | null {
  const m = /^\d+ \d+ \d+ \d+\.\d{9} ([^\n]*)$/.exec(line);
  return m ? (m[1] as string) : null;
}

/** Directory of the markers of one server, or null when the name cannot be a directory name. */
export function markerDirFor(spoolDir: string, server: string): string | null {
  if (!server || server === '.' || server === '..' || server.includes('/') || server.includes('\0')) return null;
  return path.join(spoolDir, server);
}

/**
 * Make sure `dir` is a directory nobody but us can create files in (dirTrusted), creating it
 * (0700) if needed. Throws a BarmanError explaining why it cannot be trusted otherwise.
 */
async function ensurePrivateDir(dir: string): Promise<void> {
  try {
    await fsp.mkdir(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new BarmanError(`cannot create spool directory ${dir}: ${errorMessage(err)}`, 2);
    }
  }
  const why = dirDistrust(await fsp.lstat(dir), process.getuid?.());
  if (why !== null) throw new BarmanError(`spool directory ${dir} ${why}`, 2);
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
 * Record that `name` (whose file had `signature` when read) is stored on the Barman server
 * `destination` (destinationKey). Temp name + rename so that the launcher never reads half a
 * marker. No fsync: a marker lost in a crash only means that the segment is sent once more.
 */
export async function writeMarker(dir: string, name: string, signature: string, destination: string): Promise<void> {
  if (!markerUsableFor(destination)) throw new BarmanError('a destination with a line break cannot be recorded in a marker', 2);
  const tmp = path.join(dir, `.${name}.${process.pid}.tmp`);
  await fsp.writeFile(tmp, `${markerLine(signature, destination)}\n`, { mode: 0o600 });
  await fsp.rename(tmp, path.join(dir, name));
}

async function readMarker(file: string): Promise<string | null> {
  try {
    return await fsp.readFile(file, 'utf8');
  } catch {
    return null;
  }
}

/**
 * If a marker of `destination` for `name` exists, remove it and tell whether it vouches for
 * the file with `signature` (true: the segment is already stored there and must not be sent
 * again). A marker of another destination is left for that destination's own call; an
 * old-format marker (no destination) can never be trusted and is removed. Missing: false.
 */
export async function consumeMarker(dir: string, name: string, signature: string, destination: string): Promise<boolean> {
  const file = path.join(dir, name);
  const content = await readMarker(file);
  if (content === null) return false;
  const line = content.endsWith('\n') ? content.slice(0, -1) : content;
  const owner = destinationOf(line);
  if (owner !== null && owner !== destination) return false;
  await fsp.unlink(file).catch(() => undefined);
  // An older format is never trusted, whatever it says.
  return owner !== null && line === markerLine(signature, destination);
}

/**
 * True when `name` has a marker left by a push to another destination. Push-ahead for
 * `destination` stops there: overwriting it would make that destination send the segment
 * again, and the next call would take ours over in turn.
 */
export async function hasForeignMarker(dir: string, name: string, destination: string): Promise<boolean> {
  const content = await readMarker(path.join(dir, name));
  if (content === null) return false;
  const owner = destinationOf(content.endsWith('\n') ? content.slice(0, -1) : content);
  return owner !== null && owner !== destination;
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
