/**
 * WAL figures of every backup, computed from the xlog.db entries in one go (list-backups,
 * show-backup, status):
 *
 * - WALs of the backup: segments `begin_wal..end_wal` (what list-backups adds to `Size`);
 * - WALs "until next": segments after `end_wal` up to the next backup's `end_wal` (spec §4.4),
 *   or to the end of the archive for the newest backup (list-backups `WAL Size`);
 * - WAL rate and compression ratios.
 *
 * Only WAL segments count (`.backup`, `.history` and `.partial` files do not). A backup's WALs
 * are taken on its own timeline and on the timelines that fork off it after the backup ended
 * (`childTimelines`).
 *
 * Cost: segments are grouped by timeline into arrays sorted by name with prefix sums of sizes,
 * so each backup costs a few binary searches: O(W log W + B · T · log W) for W segments,
 * B backups and T timelines, without rescanning the archive per backup.
 */
import { COPY_DONE, type BackupInfo } from '../catalog/backup-info.js';
import { isWalName, parseHistoryFile, parseLsn } from '../wal/names.js';

/** What the statistics need of an xlog.db entry. */
export interface WalRecord {
  name: string;
  size: number | null;
  time: number | null;
}

/** What the statistics need of a backup. */
export interface BackupRef {
  id: string;
  info: Pick<BackupInfo, 'status' | 'begin_wal' | 'end_wal' | 'timeline' | 'xlog_segment_size'> & Partial<Pick<BackupInfo, 'end_xlog'>>;
}

export interface BackupWalStats {
  /** Segments begin_wal..end_wal present in the catalog, and their bytes on disk. */
  walNum: number;
  walSize: number;
  /** Segments after end_wal up to the next backup's end_wal (or the end of the archive). */
  walUntilNextNum: number;
  walUntilNextSize: number;
  /** First and last segment of begin_wal..(until next), with their archival times. */
  walFirst: string | null;
  walLast: string | null;
  walFirstTime: number | null;
  walLastTime: number | null;
  /** Segments per second between the archival of walFirst and of walLast (0 if unknown). */
  walRatePerSecond: number;
  /** 1 − bytes / (count × segment size): how much compression saved (0 without WALs). */
  walCompressionRatio: number;
  walUntilNextCompressionRatio: number;
  /** Timelines branching off the backup's one that the figures include. */
  childTimelines: number[];
}

interface TimelineIndex {
  names: string[];
  /** cumSize[i] = bytes of names[0..i-1]. */
  cumSize: Float64Array;
  times: (number | null)[];
}

const tliOf = (name: string): number => parseInt(name.slice(0, 8), 16);

/** First index whose name is >= `name` (names sorted). */
export function lowerBound(names: readonly string[], name: string): number {
  let lo = 0;
  let hi = names.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((names[mid] as string) < name) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** First index whose name is > `name` (names sorted). */
export function upperBound(names: readonly string[], name: string): number {
  let lo = 0;
  let hi = names.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((names[mid] as string) <= name) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Group the segments by timeline, sorted by name, with prefix sums. Duplicates: the last line wins. */
export function indexWals(wals: readonly WalRecord[]): Map<number, TimelineIndex> {
  let names: string[] = [];
  let recs: WalRecord[] = [];
  // xlog.db is in archival order, which is almost always strictly increasing name order: the
  // fast path keeps the entries as they come and only sorts (and dedups) when it has to.
  let sorted = true;
  let prev = '';
  for (const w of wals) {
    let name = w.name;
    if (name.length !== 24 || !isWalName(name)) continue;
    if (/[a-f]/.test(name)) name = name.toUpperCase();
    if (name <= prev) sorted = false;
    names.push(name);
    recs.push(w);
    prev = name;
  }
  if (!sorted) {
    const byName = new Map<string, WalRecord>();
    for (let i = 0; i < names.length; i++) byName.set(names[i] as string, recs[i] as WalRecord);
    names = [...byName.keys()].sort();
    recs = names.map((n) => byName.get(n) as WalRecord);
  }
  const index = new Map<number, TimelineIndex>();
  let i = 0;
  while (i < names.length) {
    const t = tliOf(names[i] as string);
    let j = i;
    while (j < names.length && tliOf(names[j] as string) === t) j++;
    const cumSize = new Float64Array(j - i + 1);
    const times: (number | null)[] = new Array<number | null>(j - i);
    for (let k = i; k < j; k++) {
      cumSize[k - i + 1] = (cumSize[k - i] as number) + ((recs[k] as WalRecord).size ?? 0);
      times[k - i] = (recs[k] as WalRecord).time;
    }
    index.set(t, { names: names.slice(i, j), cumSize, times });
    i = j;
  }
  return index;
}

/** A timeline that descends from another one, and the LSN where its line of descent left it. */
export interface ChildTimeline {
  tli: number;
  switchpoint: bigint;
}

/**
 * Descendant timelines per timeline, from the `.history` files (`tli` → file text). A history
 * file lists every ancestor of its timeline with the LSN where the descent left that ancestor.
 */
export function childTimelinesFromHistories(histories: ReadonlyMap<number, string>): Map<number, ChildTimeline[]> {
  const children = new Map<number, ChildTimeline[]>();
  for (const [tli, text] of histories) {
    let entries;
    try {
      entries = parseHistoryFile(text);
    } catch {
      continue; // a damaged history file only makes the figures less complete
    }
    for (const e of entries) {
      if (e.parentTli === tli) continue;
      const list = children.get(e.parentTli) ?? [];
      if (!list.some((c) => c.tli === tli)) list.push({ tli, switchpoint: e.switchpoint });
      children.set(e.parentTli, list);
    }
  }
  for (const list of children.values()) list.sort((a, b) => a.tli - b.tli);
  return children;
}

/** LSN text → position, null when absent or malformed. */
function lsnOrNull(text: string | null | undefined): bigint | null {
  if (!text) return null;
  try {
    return parseLsn(text);
  } catch {
    return null;
  }
}

function compressionRatio(bytes: number, count: number, segSize: number): number {
  if (count <= 0 || segSize <= 0) return 0;
  return 1 - bytes / (count * segSize);
}

export const EMPTY_STATS: BackupWalStats = {
  walNum: 0,
  walSize: 0,
  walUntilNextNum: 0,
  walUntilNextSize: 0,
  walFirst: null,
  walLast: null,
  walFirstTime: null,
  walLastTime: null,
  walRatePerSecond: 0,
  walCompressionRatio: 0,
  walUntilNextCompressionRatio: 0,
  childTimelines: [],
};

/**
 * Figures of every backup of `backups` (sorted oldest first, as `loadCatalog` returns them).
 * The "next backup" of a backup is the next one whose copy is done (WAITING_FOR_WALS or DONE).
 */
export function computeWalStats(
  backups: readonly BackupRef[],
  wals: readonly WalRecord[],
  childTimelines: ReadonlyMap<number, readonly ChildTimeline[]> = new Map(),
): Map<string, BackupWalStats> {
  const index = indexWals(wals);
  const result = new Map<string, BackupWalStats>();
  // The next usable backup's end_wal, walking from the newest backwards.
  const nextEnd = new Map<string, string | null>();
  let following: string | null = null;
  for (let i = backups.length - 1; i >= 0; i--) {
    const b = backups[i] as BackupRef;
    nextEnd.set(b.id, following);
    if (COPY_DONE.has(b.info.status) && b.info.end_wal) following = b.info.end_wal.toUpperCase();
  }

  for (const b of backups) {
    const { begin_wal, end_wal, timeline } = b.info;
    if (!begin_wal || !end_wal) {
      result.set(b.id, { ...EMPTY_STATS });
      continue;
    }
    const begin = begin_wal.toUpperCase();
    const end = end_wal.toUpperCase();
    const tli = timeline ?? tliOf(begin);
    // Timelines that forked off this one after the backup ended can start from it.
    const endLsn = lsnOrNull(b.info.end_xlog);
    const children = (childTimelines.get(tli) ?? []).filter((c) => endLsn === null || c.switchpoint >= endLsn).map((c) => c.tli);
    const limit = nextEnd.get(b.id) ?? null;
    const segSize = b.info.xlog_segment_size;

    let walNum = 0;
    let walSize = 0;
    let untilNum = 0;
    let untilSize = 0;
    let first: { name: string; time: number | null } | null = null;
    let last: { name: string; time: number | null } | null = null;
    for (const t of [tli, ...children]) {
      const ix = index.get(t);
      if (!ix) continue;
      const a = lowerBound(ix.names, begin);
      const m = upperBound(ix.names, end);
      const z = limit === null ? ix.names.length : Math.max(m, upperBound(ix.names, limit));
      if (t === tli) {
        walNum += m - a;
        walSize += (ix.cumSize[m] as number) - (ix.cumSize[a] as number);
      }
      // Child timelines fork after the backup: all their segments up to the limit are "after".
      const from = t === tli ? m : a;
      untilNum += z - from;
      untilSize += (ix.cumSize[z] as number) - (ix.cumSize[from] as number);
      if (z > a) {
        const f = { name: ix.names[a] as string, time: ix.times[a] ?? null };
        const l = { name: ix.names[z - 1] as string, time: ix.times[z - 1] ?? null };
        if (!first || f.name < first.name) first = f;
        if (!last || l.name > last.name) last = l;
      }
    }
    let rate = 0;
    if (first && last && first.time !== null && last.time !== null && last.time > first.time) {
      rate = (walNum + untilNum) / (last.time - first.time);
    }
    result.set(b.id, {
      walNum,
      walSize,
      walUntilNextNum: untilNum,
      walUntilNextSize: untilSize,
      walFirst: first?.name ?? null,
      walLast: last?.name ?? null,
      walFirstTime: first?.time ?? null,
      walLastTime: last?.time ?? null,
      walRatePerSecond: rate,
      walCompressionRatio: compressionRatio(walSize, walNum, segSize),
      walUntilNextCompressionRatio: compressionRatio(untilSize, untilNum, segSize),
      childTimelines: children,
    });
  }
  return result;
}

/** Total bytes and count of the WAL segments of the archive (status, check --nagios perfdata). */
export function archiveTotals(wals: readonly WalRecord[]): { count: number; size: number } {
  let count = 0;
  let size = 0;
  for (const w of wals) {
    if (!isWalName(w.name)) continue;
    count++;
    size += w.size ?? 0;
  }
  return { count, size };
}
