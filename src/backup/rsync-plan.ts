/**
 * Pure planning for backup_method = rsync / local-rsync: what is excluded from a PGDATA copy,
 * how `rsync --list-only` output is read, how files are split among parallel copy workers, and
 * the rsync arguments of one worker. No I/O here, so that all of it is unit-tested.
 */
import { splitRanges, type ByteRange } from '../util/ranges.js';

/**
 * Left out of the PGDATA copy, anchored at the data directory (rsync filter syntax). These are
 * what PostgreSQL documents as not to be copied by a base backup: runtime state recreated at
 * start-up, WAL (the archiver has it), and the label files that the backup itself writes.
 * `pg_tblspc/<oid>` symlinks are kept as symlinks; the tablespaces are copied separately.
 */
export const PGDATA_EXCLUDES: readonly string[] = [
  '/postmaster.pid',
  '/postmaster.opts',
  '/pg_wal/*',
  '/pg_xlog/*',
  '/pg_replslot/*',
  '/pg_dynshmem/*',
  '/pg_notify/*',
  '/pg_serial/*',
  '/pg_snapshots/*',
  '/pg_stat_tmp/*',
  '/pg_subtrans/*',
  '/backup_label',
  '/backup_label.old',
  '/tablespace_map',
  '/recovery.signal',
  '/standby.signal',
  '/recovery.conf',
  '/backup_manifest',
  // Unanchored: temporary files of any database, and relation cache init files (rebuilt).
  'pgsql_tmp*',
  'pg_internal.init',
];

/** Left out of a tablespace copy (its directory holds PG_<ver>_<catversion>/<dboid>/...). */
export const TABLESPACE_EXCLUDES: readonly string[] = ['pgsql_tmp*'];

export type ListedKind = 'file' | 'dir' | 'symlink' | 'other';

export interface ListedEntry {
  /** Path relative to the listed root (`.` for the root itself). */
  name: string;
  kind: ListedKind;
  size: number;
  /** Modification time, seconds since the epoch (the listing must run with TZ=UTC). */
  mtimeSec: number;
}

const LIST_RE = /^(.)\S{9}\s+([\d,]+)\s+(\d{4})\/(\d\d)\/(\d\d) (\d\d):(\d\d):(\d\d) (.*)$/;

/** rsync prints unprintable bytes of names as `\#ooo` (octal). */
function unescapeName(name: string): string {
  return name.replace(/\\#([0-7]{3})/g, (_m, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/**
 * Parse `rsync --list-only -r --no-h` output run with TZ=UTC (rsync formats the times on the
 * client side, in the client's time zone). Symlinks lose their ` -> target` suffix.
 */
export function parseListOnly(text: string): ListedEntry[] {
  const out: ListedEntry[] = [];
  for (const line of text.split('\n')) {
    const m = LIST_RE.exec(line);
    if (!m) continue;
    const [, type, size, y, mo, d, h, mi, s] = m;
    let name = m[9] ?? '';
    const kind: ListedKind = type === '-' ? 'file' : type === 'd' ? 'dir' : type === 'l' ? 'symlink' : 'other';
    if (kind === 'symlink') {
      const arrow = name.indexOf(' -> ');
      if (arrow >= 0) name = name.slice(0, arrow);
    }
    const mtimeSec = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s)) / 1000;
    out.push({ name: unescapeName(name), kind, size: Number((size ?? '0').replace(/,/g, '')), mtimeSec });
  }
  return out;
}

export interface Bucket {
  names: string[];
  bytes: number;
}

/**
 * Split items into at most `n` buckets of similar total size: largest first, each into the
 * lightest bucket so far (greedy LPT). Empty buckets are dropped; names in a bucket are sorted
 * (rsync reads the directories in order).
 */
export function splitBuckets(items: readonly { name: string; size: number }[], n: number): Bucket[] {
  const count = Math.max(1, Math.floor(n));
  const buckets: Bucket[] = Array.from({ length: count }, () => ({ names: [], bytes: 0 }));
  const sorted = [...items].sort((a, b) => b.size - a.size || (a.name < b.name ? -1 : 1));
  for (const it of sorted) {
    let best = buckets[0] as Bucket;
    for (const b of buckets) if (b.bytes < best.bytes || (b.bytes === best.bytes && b.names.length < best.names.length)) best = b;
    best.names.push(it.name);
    best.bytes += it.size;
  }
  return buckets.filter((b) => b.names.length > 0).map((b) => ({ names: b.names.sort(), bytes: b.bytes }));
}

/**
 * pg_control, relative to the data directory. It is copied alone, after every other file and
 * before the backup is stopped: for a backup taken from a standby there is no end-of-backup WAL
 * record, and recovery takes pg_control's minRecoveryPoint as the point where the copy became
 * consistent. That only holds if pg_control was read after everything else.
 */
export const PG_CONTROL = 'global/pg_control';
/** Its size in every PostgreSQL version (PG_CONTROL_FILE_SIZE): the listing is not needed for it. */
const PG_CONTROL_SIZE = 8192;

/** One rsync run of a tree's copy. */
export interface CopyJobPlan {
  names: string[];
  bytes: number;
  /** Copy whatever size and mtime say (see isAfterHorizon). */
  force: boolean;
  /**
   * No basis to compare with (no reused backup, or files it does not have): `--whole-file`,
   * since the delta algorithm would only burn CPU on both ends for nothing.
   */
  wholeFile: boolean;
}

/** A big file copied as byte ranges read in parallel instead of by one rsync (src/backup/ranged-copy.ts). */
export interface RangedFilePlan {
  name: string;
  size: number;
  /** From the listing (whole seconds): the mtime to give the copy when the source cannot say better. */
  mtimeSec: number;
  ranges: ByteRange[];
}

/**
 * How one tree is copied: its listed files and symlinks in at most `jobs` buckets per kind, and,
 * for the data directory, pg_control kept out of every bucket as the `last` step, to run once all
 * buckets are done. Kinds, each in buckets of its own since they take other rsync options: files
 * the reused backup has and vouches for; files it has but cannot vouch for (modified after its
 * horizon: forced); files it does not have, or all of them without a reused backup (whole-file).
 * `inBasis` says whether the reused backup has a file (null: there is no reused backup).
 *
 * `rangedMinBytes` (see rangedCopyThreshold; null: never): regular files at least this big that
 * rsync would copy whole anyway (no basis to reuse) are taken out of the buckets and returned in
 * `ranged`, each split into `jobs` ranges: one rsync stream would copy them at the speed of one
 * ssh session whatever the number of jobs. Files with a basis stay with rsync, whose delta
 * transfer and --link-dest are worth more than the parallel read.
 */
export function planTreeCopy(
  listing: readonly ListedEntry[],
  opts: { jobs: number; horizonSec: number | null; inBasis: ((name: string) => boolean) | null; isPgdata: boolean; rangedMinBytes?: number | null },
): { buckets: CopyJobPlan[]; last: CopyJobPlan | null; ranged: RangedFilePlan[] } {
  const items = listing.filter((e) => e.name !== '.' && (e.kind === 'file' || e.kind === 'symlink') && !(opts.isPgdata && e.name === PG_CONTROL));
  const inBasis = opts.inBasis;
  const minRanged = opts.jobs > 1 ? (opts.rangedMinBytes ?? null) : null;
  const isRanged = (e: ListedEntry) => minRanged !== null && e.kind === 'file' && e.size >= minRanged;
  const fresh = items.filter((e) => inBasis === null || !inBasis(e.name));
  const based = inBasis === null ? [] : items.filter((e) => inBasis(e.name));
  const recent = (e: ListedEntry) => isAfterHorizon(e, opts.horizonSec);
  const group = (list: ListedEntry[], force: boolean, wholeFile: boolean) => splitBuckets(list, opts.jobs).map((b) => ({ ...b, force, wholeFile }));
  const buckets = [
    ...group(based.filter((e) => !recent(e)), false, false),
    ...group(based.filter(recent), true, false),
    ...group(fresh.filter((e) => !isRanged(e)), false, true),
  ];
  const ranged = fresh.filter(isRanged).map((e) => ({ name: e.name, size: e.size, mtimeSec: e.mtimeSec, ranges: splitRanges(e.size, opts.jobs) }));
  // Forced: pg_control changes at every checkpoint, possibly within the second of the reused copy.
  const last = opts.isPgdata ? { names: [PG_CONTROL], bytes: PG_CONTROL_SIZE, force: true, wholeFile: true } : null;
  return { buckets, last, ranged };
}

/**
 * The `rangedMinBytes` of planTreeCopy for one tree's transport: `minBytes`, or null (no ranged
 * copy) with one job (nothing to parallelise) or when the transport throttles or compresses:
 * bandwidth_limit / tablespace_bandwidth_limit and network_compression are applied by rsync
 * (--bwlimit, -z), which the ranged reads (dd through ssh) cannot honour, so rsync keeps it all.
 */
export function rangedCopyThreshold(t: Transport, jobs: number, minBytes: number): number | null {
  if (jobs <= 1) return null;
  if (t.bwlimit) return null;
  // -z is only passed over ssh (transportArgs): local copies ignore network_compression.
  if (t.networkCompression && t.sshCommand) return null;
  return minBytes;
}

/**
 * Files that the size+mtime check of rsync cannot trust: modified at or after the start of the
 * backup we reuse (its "safe horizon"), a file may have changed again within the same second
 * after it was copied, keeping its size and mtime. Those are copied again whatever rsync thinks.
 * One second of margin for the listing's one-second resolution.
 */
export function isAfterHorizon(entry: Pick<ListedEntry, 'mtimeSec'>, horizonSec: number | null): boolean {
  return horizonSec !== null && entry.mtimeSec >= Math.floor(horizonSec) - 1;
}

export type ReuseMode = 'off' | 'copy' | 'link';

export interface Transport {
  /** The admin's ssh_command (rsync splits it itself); null for local-rsync. */
  sshCommand: string | null;
  /** KB/s, 0 or null = unlimited. */
  bwlimit: number | null;
  networkCompression: boolean;
}

/**
 * Options common to every rsync run of a backup (transport and throttling). Over ssh, `-s`
 * (--protect-args): remote paths travel inside rsync's protocol and are never parsed by the
 * remote shell, so a PGDATA or tablespace path with spaces, `$`, quotes or `;` is copied as it
 * is, whatever rsync version runs on either side (3.0 and later know -s).
 */
export function transportArgs(t: Transport): string[] {
  const args: string[] = [];
  if (t.sshCommand) args.push('-s', '-e', t.sshCommand);
  if (t.bwlimit) args.push(`--bwlimit=${t.bwlimit}`);
  if (t.networkCompression && t.sshCommand) args.push('-z');
  return args;
}

/** The source of a tree: `:/path/` through the host named in ssh_command, or a local `/path/`. */
export function sourceSpec(t: Pick<Transport, 'sshCommand'>, dir: string): string {
  const d = dir.endsWith('/') ? dir : `${dir}/`;
  return t.sshCommand ? `:${d}` : d;
}

/** `rsync --list-only` of a tree, with its excludes (run with TZ=UTC). */
export function listArgs(t: Transport, dir: string, excludes: readonly string[]): string[] {
  return ['--list-only', '-r', '--no-h', ...transportArgs(t), ...excludes.map((e) => `--exclude=${e}`), sourceSpec(t, dir)];
}

/** Create the directory skeleton (no files) of a tree in `dest`. */
export function dirsArgs(t: Transport, dir: string, excludes: readonly string[], dest: string): string[] {
  return [
    '-a',
    ...transportArgs(t),
    ...excludes.map((e) => `--exclude=${e}`),
    '--include=*/',
    '--exclude=*',
    sourceSpec(t, dir),
    dest.endsWith('/') ? dest : `${dest}/`,
  ];
}

/**
 * One copy worker: the files named (NUL-separated) in `listFile`. `reuseDir` is the same tree of
 * the previous backup: unchanged files are hard-linked (link) or copied locally (copy) from it.
 * `force` re-copies files whatever their size and mtime (see isAfterHorizon). No --inplace: with
 * --link-dest it would write into the previous backup's files.
 */
export function copyArgs(
  t: Transport,
  dir: string,
  dest: string,
  listFile: string,
  opts: { reuse: ReuseMode; reuseDir: string | null; force: boolean; wholeFile?: boolean },
): string[] {
  const args = ['-a', ...transportArgs(t), '--from0', `--files-from=${listFile}`];
  if (opts.wholeFile) args.push('--whole-file');
  if (opts.reuseDir && opts.reuse === 'link') args.push(`--link-dest=${opts.reuseDir}`);
  if (opts.reuseDir && opts.reuse === 'copy') args.push(`--copy-dest=${opts.reuseDir}`);
  if (opts.force) args.push('--ignore-times');
  args.push(sourceSpec(t, dir), dest.endsWith('/') ? dest : `${dest}/`);
  return args;
}

/**
 * Exit status of a copy worker: 24 (files vanished) is normal for a live cluster (a dropped table,
 * a finished temporary file); so is 23 when every error is a file that no longer exists, which is
 * how a vanished file named in --files-from is reported. WAL replay recreates what is needed.
 */
export function rsyncCopySucceeded(code: number, stderr: string): boolean {
  if (code === 0 || code === 24) return true;
  if (code !== 23) return false;
  const errors = stderr.split('\n').filter((l) => l.trim() !== '' && !/^rsync error: some files/.test(l));
  return errors.length > 0 && errors.every((l) => /file has vanished|link_stat ".*" failed: No such file or directory/.test(l));
}

/** rsync's stderr, reduced to the line worth showing (the last real error). */
export function rsyncErrorLine(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  const real = lines.filter((l) => !/^rsync error: /.test(l));
  // A full or broken disk here is the cause; the broken pipes reported after it are consequences.
  const cause = real.find((l) => /No space left on device|Disk quota exceeded|Read-only file system|Input\/output error/.test(l));
  return cause ?? real.at(-1) ?? lines.at(-1) ?? '';
}


/**
 * The exclude patterns above read as rsync reads them, for copies made without rsync (the
 * barman-ts agent): `/a/b` is anchored at the root of the tree, `/a/*` names the entries inside
 * `/a` (which itself stays), a pattern without `/` matches the last component of any path, and
 * `*` matches within one component. `rel` is `/`-separated, relative to the root; an excluded
 * directory is not descended into, so its contents go with it.
 */
export function rsyncExcluder(patterns: readonly string[]): (rel: string) => boolean {
  const glob = (p: string) =>
    p
      .split('*')
      .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('[^/]*');
  const anchored: RegExp[] = [];
  const names: RegExp[] = [];
  for (const p of patterns) {
    if (p.startsWith('/')) anchored.push(new RegExp(`^${glob(p.slice(1))}$`));
    else if (!p.includes('/')) names.push(new RegExp(`^${glob(p)}$`));
    else anchored.push(new RegExp(`^(?:.*/)?${glob(p)}$`));
  }
  return (rel) => {
    if (anchored.some((re) => re.test(rel))) return true;
    const base = rel.slice(rel.lastIndexOf('/') + 1);
    return names.some((re) => re.test(base));
  };
}
