/**
 * The trust rules that the sh launchers (bin/barman-wal-archive, bin/barman-wal-restore) apply
 * on their fast paths, defined once for them and for the Node code (with barman-wal-restore's
 * default batch size, which both sides must also agree on):
 *
 *  - a file's identity in a push-ahead marker (markers.ts): device, inode, size and mtime to
 *    the nanosecond, as GNU `stat -c MARKER_STAT_FORMAT` prints them and fileSignature() writes
 *    them. A segment PostgreSQL rewrote (or a new file at the same path) never matches;
 *  - a spool directory (markers, prefetched WAL) is trusted when nobody but the caller can create
 *    files in it: a real directory (not a symlink), owned by the caller, not writable by group or
 *    others. 0700 and 0755 (what `mkdir` and Barman's client leave) are both fine; what another
 *    user could have planted files in (group/other-writable, someone else's, a symlink) is not.
 *
 * The sh side is SH_TRUST_FRAGMENT, rendered from the same constants and pasted between the
 * BEGIN/END lines of both launchers; test/unit/trust-rules.test.ts fails when a launcher's copy
 * differs (`node dist/src/walclient/trust-rules.js --write` rewrites them) and runs the sh
 * functions and these ones on the same files and directories.
 */
import type { BigIntStats, Stats } from 'node:fs';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

/** GNU stat format of a file's identity in a marker: `<dev> <ino> <size> <sec>.<nsec, 9 digits>`. */
export const MARKER_STAT_FORMAT = '%d %i %s %.9Y';

/**
 * barman-wal-restore without -p: the batch size it prefetches with (Barman's manual keeps
 * `restore_command` without -p, and every segment would then cost a Node start and an SSH
 * session). The sh launcher needs the same default to serve and prefetch the same way.
 */
export const RESTORE_DEFAULT_PARALLEL = 16;

/** Permission bits that let someone other than the owner create files in a directory. */
export const FOREIGN_WRITE_BITS = 0o022;

/** What `stat -c MARKER_STAT_FORMAT` prints for the same file (null for a pre-1970 mtime, which no marker vouches for). */
export function fileSignature(st: BigIntStats): string | null {
  if (st.mtimeNs < 0n) return null;
  const ns = st.mtimeNs % 1_000_000_000n;
  return `${st.dev} ${st.ino} ${st.size} ${st.mtimeNs / 1_000_000_000n}.${String(ns).padStart(9, '0')}`;
}

/**
 * Whether a directory, from its lstat, is one nobody but user `uid` can create files in (see the
 * module comment). `uid` undefined (a platform without uids): only the mode counts.
 */
export function dirTrusted(st: Stats, uid: number | undefined): boolean {
  if (!st.isDirectory() || st.isSymbolicLink()) return false;
  if (uid !== undefined && st.uid !== uid) return false;
  return (st.mode & FOREIGN_WRITE_BITS) === 0;
}

/** Why a directory is not trusted, for a warning (null when it is). */
export function dirDistrust(st: Stats, uid: number | undefined): string | null {
  if (st.isSymbolicLink()) return 'is a symbolic link';
  if (!st.isDirectory()) return 'is not a directory';
  if (uid !== undefined && st.uid !== uid) return `belongs to uid ${st.uid}, not to the current user (uid ${uid})`;
  if ((st.mode & FOREIGN_WRITE_BITS) !== 0) return `is writable by other users (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')})`;
  return null;
}

export const SH_BEGIN = '# BEGIN trust rules: generated from src/walclient/trust-rules.ts, do not edit here';
export const SH_END = '# END trust rules';

/** The sh side of the rules, between SH_BEGIN and SH_END in both launchers. */
export const SH_TRUST_FRAGMENT = [
  SH_BEGIN,
  '# A file\'s identity in a push-ahead marker: device, inode, size, mtime to the nanosecond.',
  `marker_stat_format='${MARKER_STAT_FORMAT}'`,
  '# dir_trusted DIR MODE: true when DIR, whose permission bits (stat %a) are MODE, is a real',
  '# directory of the caller that nobody else can create files in (no symlink, no group/other write).',
  'dir_trusted() {',
  '  [ -d "$1" ] && [ ! -L "$1" ] && [ -O "$1" ] || return 1',
  "  case $2 in '' | *[!0-7]*) return 1 ;; esac",
  `  [ $((0$2 & 0${FOREIGN_WRITE_BITS.toString(8)})) -eq 0 ]`,
  '}',
  '# barman-wal-restore without -p prefetches batches of this many files.',
  `restore_default_parallel=${RESTORE_DEFAULT_PARALLEL}`,
  SH_END,
].join('\n');

/** The launcher scripts that carry the fragment (relative to the repository root). */
export const LAUNCHERS = ['bin/barman-wal-archive', 'bin/barman-wal-restore', 'bin/barman-cloud-wal-archive'] as const;

/** `text` with its fragment replaced by SH_TRUST_FRAGMENT; null when it has no BEGIN/END pair. */
export function withCurrentFragment(text: string): string | null {
  const begin = text.indexOf(SH_BEGIN);
  const end = text.indexOf(SH_END, begin);
  if (begin < 0 || end < 0) return null;
  return text.slice(0, begin) + SH_TRUST_FRAGMENT + text.slice(end + SH_END.length);
}

/** `node dist/src/walclient/trust-rules.js --write`: rewrite the launchers' fragments. */
function writeLaunchers(): void {
  const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
  for (const rel of LAUNCHERS) {
    const file = path.join(repo, rel);
    const updated = withCurrentFragment(readFileSync(file, 'utf8'));
    if (updated === null) throw new Error(`${file} has no trust rules block`);
    writeFileSync(file, updated);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1]) && process.argv.includes('--write')) writeLaunchers();
