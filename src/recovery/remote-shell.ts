/**
 * Talking to the recovery host through the administrator's `--remote-ssh-command` (e.g.
 * `ssh -p 2222 postgres@db1`), as pure argv/text builders so they are unit-tested. Quoting
 * rules: src/util/ssh-command.ts. The remote side runs small fixed `sh` scripts whose inputs
 * are positional parameters.
 */
import { transportArgs } from '../backup/rsync-plan.js';

export { remoteCommandLine, remoteQuote, sshInvocation } from '../util/ssh-command.js';

/** Words running a fixed remote `sh` script with positional arguments. */
export function remoteScriptWords(script: string, args: readonly string[]): string[] {
  return ['sh', '-c', script, 'sh', ...args];
}

export interface RemoteTransport {
  sshCommand: string;
  bwlimit: number | null;
  networkCompression: boolean;
}

/** `:<dir>/` — rsync takes the host from the `-e` command (which names it). */
export function remoteSpec(dir: string): string {
  return `:${dir.endsWith('/') ? dir : `${dir}/`}`;
}

/**
 * Common rsync options of a push to the recovery host: archive mode, then transportArgs: `-s`
 * so that remote paths are sent inside the protocol (never parsed by the remote shell), the ssh
 * command, the bandwidth limit and `-z`.
 */
export function rsyncPushBase(t: RemoteTransport): string[] {
  return ['-a', ...transportArgs({ sshCommand: t.sshCommand, bwlimit: t.bwlimit, networkCompression: t.networkCompression })];
}

/** rsync `--exclude` options for anchored patterns (`pg_wal/*` → `--exclude=/pg_wal/*`). */
export function anchoredExcludes(patterns: readonly string[]): string[] {
  return patterns.map((p) => `--exclude=/${p.replace(/^\/+/, '')}`);
}

/** Create the directories (no files) of a local tree on the remote side. */
export function rsyncDirsArgs(t: RemoteTransport, src: string, dest: string, excludes: readonly string[]): string[] {
  const s = src.endsWith('/') ? src : `${src}/`;
  return [...rsyncPushBase(t), ...anchoredExcludes(excludes), '--include=*/', '--exclude=*', s, remoteSpec(dest)];
}

/**
 * Copy the files listed (NUL-separated, relative to `src`) in `listFile` into a destination
 * checked empty: `--whole-file`, since there is nothing to compute a delta against.
 */
export function rsyncFilesArgs(t: RemoteTransport, src: string, dest: string, listFile: string): string[] {
  const s = src.endsWith('/') ? src : `${src}/`;
  return [...rsyncPushBase(t), '--whole-file', '--from0', `--files-from=${listFile}`, s, remoteSpec(dest)];
}

/**
 * Whole tree in one run (small trees, WAL, config overlay); `delta` = checksum + delete. The
 * excluded paths are protected from the deletion (no --delete-excluded): a delta restore keeps
 * the server logs; what must go is removed by PREPARE_SCRIPT.
 */
export function rsyncTreeArgs(t: RemoteTransport, src: string, dest: string, opts: { excludes?: readonly string[]; delta?: boolean } = {}): string[] {
  const s = src.endsWith('/') ? src : `${src}/`;
  const args = [...rsyncPushBase(t)];
  if (opts.delta) args.push('--delete', '--checksum');
  else args.push('--whole-file');
  args.push(...anchoredExcludes(opts.excludes ?? []), s, remoteSpec(dest));
  return args;
}

// ---------------------------------------------------------------------------------------------
// Remote scripts (fixed text; all values are positional parameters)

/** Marker printed last by each script: proves the script really ran on the remote side. */
export const SCRIPT_DONE = 'BARMAN-REMOTE-DONE';

/**
 * Destination checks, nothing written. Arguments: pairs `<empty|any> <path>`. Prints one line
 * per problem, `<index> <CODE> [detail]`, then the marker. Codes: NOTDIR, UNREADABLE,
 * NOTEMPTY, NOTWRITABLE, RUNNING <pid>, PARENT_NOTDIR, PARENT_NOTWRITABLE.
 */
export const CHECK_SCRIPT = `
running() {
  if [ -d /proc/self ]; then
    [ -d "/proc/$1" ] || return 1
    [ -r "/proc/$1/cmdline" ] || return 0
    tr '\\000' ' ' < "/proc/$1/cmdline" | grep -q -e postgres -e postmaster
  else
    kill -0 "$1" 2>/dev/null || ps -p "$1" >/dev/null 2>&1
  fi
}
i=0
while [ $# -ge 2 ]; do
  mode=$1; d=$2; shift 2
  if [ -e "$d" ] || [ -L "$d" ]; then
    if [ ! -d "$d" ]; then echo "$i NOTDIR"
    elif [ ! -r "$d" ] || [ ! -x "$d" ]; then echo "$i UNREADABLE"
    else
      if [ -f "$d/postmaster.pid" ]; then
        pid=$(head -n 1 "$d/postmaster.pid" 2>/dev/null | tr -cd 0-9)
        if [ -n "$pid" ] && running "$pid"; then echo "$i RUNNING $pid"; fi
      fi
      if [ "$mode" = empty ] && [ -n "$(ls -A "$d" 2>/dev/null | head -n 1)" ]; then echo "$i NOTEMPTY"; fi
      if [ ! -w "$d" ]; then echo "$i NOTWRITABLE"; fi
    fi
  else
    p=$(dirname "$d")
    while [ ! -e "$p" ] && [ "$p" != / ]; do p=$(dirname "$p"); done
    if [ ! -d "$p" ]; then echo "$i PARENT_NOTDIR"
    elif [ ! -w "$p" ] || [ ! -x "$p" ]; then echo "$i PARENT_NOTWRITABLE"; fi
  fi
  i=$((i+1))
done
echo ${SCRIPT_DONE}
`;

/**
 * Before any file is sent. Arguments: dest, WAL dir name, `fresh|delta`, the directories to
 * create (0700), `--`, then (delta only) the files to remove from dest. Creates the
 * directories; for a delta restore removes the listed files, empties the WAL directories
 * (pg_wal, pg_xlog: a symlink loses the link only, its target is not ours) and removes the
 * pg_tblspc links (recreated by FINISH_SCRIPT); then makes `<dest>/<wal>/archive_status` real
 * directories, so that the WAL pushed there can never land in a symlink's target.
 */
export const PREPARE_SCRIPT = `
set -e
d=$1; wal=$2; kind=$3; shift 3
while [ $# -gt 0 ] && [ "$1" != -- ]; do mkdir -p "$1"; chmod 700 "$1"; shift; done
[ $# -gt 0 ] && shift
if [ "$kind" = delta ]; then
  for f in "$@"; do rm -rf "$d/$f"; done
  for w in pg_wal pg_xlog; do
    if [ -L "$d/$w" ]; then rm -f "$d/$w"
    elif [ -d "$d/$w" ]; then find "$d/$w" -mindepth 1 -maxdepth 1 -exec rm -rf {} +; fi
  done
  if [ -d "$d/pg_tblspc" ]; then find "$d/pg_tblspc" -mindepth 1 -maxdepth 1 -type l -exec rm -f {} +; fi
fi
if [ -L "$d/$wal" ] || { [ -e "$d/$wal" ] && [ ! -d "$d/$wal" ]; }; then rm -f "$d/$wal"; fi
mkdir -p "$d/$wal/archive_status"
chmod 700 "$d/$wal" "$d/$wal/archive_status"
echo ${SCRIPT_DONE}
`;

/** Arguments of PREPARE_SCRIPT. */
export function prepareScriptArgs(dest: string, walName: string, dirs: readonly string[], delta: boolean, clearedFiles: readonly string[]): string[] {
  return [dest, walName, delta ? 'delta' : 'fresh', ...dirs, '--', ...(delta ? clearedFiles : [])];
}

/**
 * Last step, after every file is in place. Arguments: dest, WAL dir name, backup ID, signal
 * file name (empty: none), then pairs `<oid> <location>`. Makes pg_wal a real directory with
 * archive_status, links the tablespaces, renames backup_manifest, flushes everything to disk
 * and only then creates the signal file (so an interrupted restore can never be started in
 * recovery by accident), flushed too.
 */
export const FINISH_SCRIPT = `
set -e
d=$1; wal=$2; id=$3; sig=$4; shift 4
flush() { for f in "$@"; do sync -f "$f" 2>/dev/null || { sync; return 0; }; done; }
if [ -L "$d/$wal" ]; then rm -f "$d/$wal"; fi
mkdir -p "$d/$wal/archive_status"
chmod 700 "$d/$wal" "$d/$wal/archive_status"
mkdir -p "$d/pg_tblspc"
while [ $# -ge 2 ]; do
  rm -f "$d/pg_tblspc/$1"
  ln -s "$2" "$d/pg_tblspc/$1"
  flush "$2"
  shift 2
done
if [ -f "$d/backup_manifest" ]; then mv -f "$d/backup_manifest" "$d/backup_manifest.$id"; fi
flush "$d"
if [ -n "$sig" ]; then
  : > "$d/$sig"
  chmod 600 "$d/$sig"
  flush "$d"
fi
echo ${SCRIPT_DONE}
`;

/**
 * Runs the `dd` words of one range (src/util/ranges.ts ddWriteWords) with umask 077: the first
 * session to open the file creates it, 0600 and owned by the ssh user, and none truncates it
 * (conv=notrunc), whatever order the ranges arrive in. No session of its own to create the
 * files first: on a busy host each ssh login costs a few tenths of a second.
 */
export const RANGED_WRITE_SCRIPT = 'umask 077; exec "$@"';

/**
 * After every range is written. Arguments: quadruples `<size> <mode octal> <mtime> <file>`
 * (mtime as `@<seconds>.<nanoseconds>` for GNU touch). Checks that each file has its full size
 * (a range lost without an error must not go unnoticed), then gives it the mode and mtime of
 * the source, as rsync -a does for the other files.
 */
export const RANGED_FINISH_SCRIPT = `
set -e
while [ $# -ge 4 ]; do
  size=$(stat -c %s "$4")
  if [ "$size" != "$1" ]; then echo "$4 has $size bytes instead of $1" >&2; exit 1; fi
  chmod "$2" "$4"
  touch -c -m -d "$3" "$4"
  shift 4
done
echo ${SCRIPT_DONE}
`;

/** One ranged file as RANGED_FINISH_SCRIPT wants it. */
export interface RangedFileMeta {
  remote: string;
  size: number;
  /** Permission bits of the source (mode & 0o7777). */
  mode: number;
  /** Modification time of the source in nanoseconds since the epoch. */
  mtimeNs: bigint;
}

/** Arguments of RANGED_FINISH_SCRIPT. */
export function rangedFinishArgs(files: readonly RangedFileMeta[]): string[] {
  return files.flatMap((f) => {
    const sec = f.mtimeNs / 1_000_000_000n;
    const ns = f.mtimeNs % 1_000_000_000n;
    return [String(f.size), (f.mode & 0o7777).toString(8).padStart(4, '0'), `@${sec}.${String(ns).padStart(9, '0')}`, f.remote];
  });
}

export type CheckCode = 'NOTDIR' | 'UNREADABLE' | 'NOTEMPTY' | 'NOTWRITABLE' | 'RUNNING' | 'PARENT_NOTDIR' | 'PARENT_NOTWRITABLE';

export interface CheckProblem {
  index: number;
  code: CheckCode;
  pid?: number;
}

const CODES: ReadonlySet<string> = new Set(['NOTDIR', 'UNREADABLE', 'NOTEMPTY', 'NOTWRITABLE', 'RUNNING', 'PARENT_NOTDIR', 'PARENT_NOTWRITABLE']);

/** Parse CHECK_SCRIPT output; null when the marker is missing (the script did not run to the end). */
export function parseCheckOutput(stdout: string): CheckProblem[] | null {
  const lines = stdout.split('\n').map((l) => l.trim());
  if (!lines.includes(SCRIPT_DONE)) return null;
  const out: CheckProblem[] = [];
  for (const l of lines) {
    const m = /^(\d+) ([A-Z_]+)(?: (\d+))?$/.exec(l);
    if (!m || !CODES.has(m[2] as string)) continue;
    const p: CheckProblem = { index: Number(m[1]), code: m[2] as CheckCode };
    if (m[3] !== undefined) p.pid = Number(m[3]);
    out.push(p);
  }
  return out;
}

/** One line for a destination problem found on the remote side. */
export function checkProblemMessage(p: CheckProblem, what: string, dir: string): string {
  switch (p.code) {
    case 'NOTDIR':
      return `The ${what} '${dir}' exists on the remote host and is not a directory`;
    case 'UNREADABLE':
      return `Cannot read the ${what} '${dir}' on the remote host: permission denied`;
    case 'NOTEMPTY':
      return `The ${what} '${dir}' on the remote host is not empty (use an empty or new directory, or --delta-restore)`;
    case 'NOTWRITABLE':
      return `The ${what} '${dir}' on the remote host is not writable by the remote user: permission denied`;
    case 'RUNNING':
      return `The ${what} '${dir}' on the remote host belongs to a running PostgreSQL server (PID ${p.pid ?? '?'}): stop it first`;
    case 'PARENT_NOTDIR':
      return `Cannot create the ${what} '${dir}' on the remote host: a parent is not a directory`;
    case 'PARENT_NOTWRITABLE':
      return `Cannot create the ${what} '${dir}' on the remote host: permission denied`;
  }
}

/** The last meaningful line of an ssh/rsync failure. */
export function lastErrorLine(stderr: string, stdout = ''): string {
  const lines = (stderr.trim() || stdout.trim()).split('\n').map((l) => l.trim()).filter((l) => l !== '' && !/^rsync error: /.test(l));
  return lines.at(-1) ?? (stderr.trim().split('\n').at(-1) ?? '');
}
