/**
 * Change tracking from the WAL for agent incremental backups: which pages of a relation file
 * can have changed since the basis backup started, read from the WAL between the basis's start
 * and this backup's start (src/wal/block-changes.ts), so that the agent reads and sends only
 * those pages instead of reading the whole file to compare page hashes.
 *
 * Why the rest of such a file may be taken from the basis copy: the basis copied it after its
 * own start checkpoint had flushed every page changed before that checkpoint; a page changed
 * after it has a WAL record naming its block, whether the change reached the disk before, during
 * or after the basis's copy, and is listed. A page no record names is the same now as in the
 * basis copy, but for hint bits (which are only hints: a page without them is valid, and with
 * checksums or wal_log_hints a hint change is WAL-logged, so listed). Changes made after this
 * backup's start are replayed from the WAL by any recovery of it, as for any page copied here.
 * PostgreSQL 17's incremental backups (WAL summaries) rest on the same facts.
 *
 * Read whole, as without change tracking: any file that is not a relation file of the main fork
 * (free space maps are not WAL-logged; visibility maps and init forks are small), the forks of
 * unlogged relations, relations created or truncated since the basis started, the files of
 * databases created, copied or dropped since then, a basis copy whose size is not whole pages.
 * A file a quarter of whose pages changed is read whole too (cheaper then: MAX_TRACKED_SHARE).
 * The pages past the basis copy's end are always read. Any doubt about the WAL itself (a gap,
 * another timeline, a record that cannot be read: BlockChanges.unusable) turns the tracking off
 * for the whole backup, with the reason in the log.
 */
import { Writable } from 'node:stream';
import type { ServerConfig } from '../config/config.js';
import { BlockChangeReader, forkKey, relationFileOf, relationKey, type BlockChanges } from '../wal/block-changes.js';
import { openWal, sendWal } from '../wal/get-wal.js';
import { formatLsn, lsnToWal, nextSegment, walOffset, walToLsn } from '../wal/names.js';
import { errorMessage } from '../util/errors.js';
import { PAGE_SIZE } from './pages.js';
import type { PageRange } from './protocol.js';

/** What the tracking found, ready to answer for each file. */
export interface WalGuide {
  changes: BlockChanges;
  /** Blocks per relation segment file (segment_size: 131072 for 1 GiB). */
  segmentBlocks: number;
  /** Relations ("spc/db/rel") with an init fork in this backup: unlogged, their changes not in the WAL. */
  unlogged: Set<string>;
}

/** The share of a file's pages above which it is read whole even when the WAL names its pages. */
export const MAX_TRACKED_SHARE = 0.25;

/** What to read of one file: the listed ranges (before `from`), then every page from `from` on. */
export interface GuidedRead {
  ranges: PageRange[];
  from: number;
}

/** Whether `p` (a path as in a backup_manifest) is an init fork: its relation is unlogged. */
export function unloggedRelationOf(p: string): string | null {
  const rf = relationFileOf(p);
  return rf && rf.fork === 3 ? relationKey(rf.spc, rf.db, rf.rel) : null;
}

/**
 * The pages of file `p` (a path as in a backup_manifest: `base/DB/REL`, `pg_tblspc/SPC/...`) to
 * read given its basis copy of `basisSize` bytes, or null when the file must be read whole.
 */
export function guidedRead(p: string, basisSize: number, guide: WalGuide): GuidedRead | null {
  const { changes } = guide;
  if (changes.unusable !== null || basisSize % PAGE_SIZE !== 0) return null;
  const rf = relationFileOf(p);
  if (!rf || rf.fork !== 0) return null;
  const rel = relationKey(rf.spc, rf.db, rf.rel);
  if (guide.unlogged.has(rel) || changes.wholeRelations.has(rel) || changes.wholeDatabases.has(rf.db)) return null;
  const from = basisSize / PAGE_SIZE;
  const first = rf.segment * guide.segmentBlocks;
  const pages: number[] = [];
  for (const b of changes.blocks.get(forkKey(rf.spc, rf.db, rf.rel, 0)) ?? []) {
    const page = b - first;
    if (page >= 0 && page < from && page < guide.segmentBlocks) pages.push(page);
  }
  // Changed nearly everywhere: reading it whole (and hashing it there) costs less than reading
  // those pages one window at a time and then the whole file again here for its SHA-256.
  if (pages.length > from * MAX_TRACKED_SHARE) return null;
  pages.sort((a, b) => a - b);
  const ranges: PageRange[] = [];
  for (const page of pages) {
    const last = ranges.at(-1);
    if (last && last[0] + last[1] === page) last[1] += 1;
    else ranges.push([page, 1]);
  }
  return { ranges, from };
}

/** The plain content of WAL file `name` of `srv` (decompressed, decrypted), or null if it is not here. */
async function loadWal(srv: ServerConfig, name: string, partial: boolean): Promise<Buffer | null> {
  const opened = await openWal(srv, name, { partial });
  if (!opened) return null;
  await opened.handle.close();
  const parts: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      parts.push(chunk);
      cb();
    },
  });
  await sendWal(srv, name, sink, { partial });
  return Buffer.concat(parts);
}

/** Whether a record was written at `lsn` in a segment's content (the bytes there are not zeros yet). */
function writtenAt(seg: Buffer, lsn: bigint, segSize: number): boolean {
  const off = walOffset(lsn, segSize);
  return off + 4 <= seg.length && seg.readUInt32LE(off) !== 0;
}

/** Where the WAL to read starts: the basis backup's start (begin_xlog), timeline and segment size. */
export interface WalStart {
  from: bigint;
  timeline: number;
  segSize: number;
}

const POLL_MS = 100;
/** More WAL than this between the two starts: reading the files is cheaper than reading the WAL. */
const MAX_SEGMENT_BYTES = 8 * 1024 * 1024 * 1024;

/**
 * Reading the WAL of `srv` (its archive, incoming and streaming directories) from a basis's
 * start: started before this backup's start is known (`start`: the complete segments already
 * here are read while PostgreSQL makes the backup's checkpoint), ended once it is (`finish`).
 */
export class WalChangeReading {
  private next: string;
  private stopping = false;
  private readonly prefetched: Promise<void>;

  private constructor(
    private readonly srv: ServerConfig,
    private readonly w: WalStart,
    private readonly reader: BlockChangeReader,
    private readonly signal?: AbortSignal,
  ) {
    this.next = lsnToWal(w.from, w.timeline, w.segSize);
    this.prefetched = this.prefetch().catch((err: unknown) => this.fail(`the WAL cannot be read: ${errorMessage(err)}`));
  }

  static async start(srv: ServerConfig, w: WalStart, signal?: AbortSignal): Promise<WalChangeReading> {
    return new WalChangeReading(srv, w, await BlockChangeReader.create(w.from, null), signal);
  }

  private failure: string | null = null;

  private fail(why: string): void {
    this.failure ??= why;
  }

  /** Feed the complete segments that are here, in order, until one is missing (or finish() is called). */
  private async prefetch(): Promise<void> {
    const limit = this.w.from + BigInt(MAX_SEGMENT_BYTES);
    while (!this.stopping && !this.reader.finished && !this.signal?.aborted && walToLsn(this.next, 0, this.w.segSize) < limit) {
      const seg = await loadWal(this.srv, this.next, false);
      if (!seg || this.stopping) return;
      this.reader.feedSegment(seg, walToLsn(this.next, 0, this.w.segSize));
      this.next = nextSegment(this.next, this.w.segSize);
      // Let the backup's other work run between segments.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Stop reading (change tracking is not used after all). */
  cancel(): void {
    this.stopping = true;
  }

  /**
   * The block changes up to `to` (this backup's start), or why they cannot be had (`unusable`).
   * The segment holding `to` is usually still being streamed (a `.partial` file): it is waited
   * for until a record was written at `to`, and a segment missing before it for its complete
   * file, for at most `waitMs` in all (with streaming_archiver = on: nothing else brings it).
   */
  async finish(to: bigint, waitMs: number): Promise<BlockChanges> {
    this.stopping = true;
    await this.prefetched;
    const { reader, w } = this;
    const unusable = (why: string): BlockChanges => ({ ...reader.result(), unusable: why });
    if (this.failure) return unusable(this.failure);
    if (to < w.from) return unusable(`this backup starts (${formatLsn(to)}) before its basis did (${formatLsn(w.from)})`);
    if (to - w.from > BigInt(MAX_SEGMENT_BYTES)) return unusable(`more than ${MAX_SEGMENT_BYTES / 1073741824} GiB of WAL since the basis started`);
    reader.setEnd(to);
    const last = lsnToWal(to, w.timeline, w.segSize);
    // Only pg_receivewal brings the segment being written: without it, nothing to wait for.
    const deadline = Date.now() + (this.srv.streaming_archiver ? waitMs : 0);
    try {
      for (let name = this.next; !reader.finished; name = nextSegment(name, w.segSize)) {
        if (this.signal?.aborted) return unusable('interrupted');
        const isLast = name === last;
        // The segment holding `to` is read as streamed so far (a .partial), once a record is
        // written at `to`; it may not even be there yet (a backup starting on a new segment).
        // One before it is complete, but pg_receivewal may not have received its end yet (the
        // WAL switch just before this backup's start): its complete file is waited for.
        let seg = await loadWal(this.srv, name, isLast);
        const ready = (b: Buffer | null): boolean => b !== null && (!isLast || writtenAt(b, to, w.segSize));
        // Not there, not even being streamed: gone, nothing to wait for.
        const coming = async (): Promise<boolean> => {
          if (isLast) return true;
          const o = await openWal(this.srv, name, { partial: true });
          await o?.handle.close();
          return o !== null;
        };
        while (!ready(seg) && Date.now() < deadline && (await coming())) {
          await new Promise((resolve) => setTimeout(resolve, POLL_MS));
          seg = await loadWal(this.srv, name, isLast);
        }
        if (!seg) return unusable(`WAL file ${name} is not on this host${isLast ? ' (streaming_archiver = on brings it as it is written)' : ''}`);
        reader.feedSegment(seg, walToLsn(name, 0, w.segSize));
        if (isLast && !reader.finished) break;
      }
    } catch (err) {
      return unusable(`the WAL cannot be read: ${errorMessage(err)}`);
    }
    return reader.result();
  }
}
