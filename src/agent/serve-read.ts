/**
 * Agent side of a backup: list trees (LIST) and send files (READ, READ_PAGES). For a READ the
 * agent reads the whole file once, hashing every page and the file (SHA-256); a page travels only
 * when its hash differs from the basis map the backup host sent (the page hashes of the copy it
 * already has; empty for a file it does not have), compressed, with its hash. For a READ_PAGES
 * (the WAL told the backup host which pages changed: wal-guide.ts) only the pages listed and
 * those past the basis copy's end are read and sent, each with its hash.
 */
import { createHash } from 'node:crypto';
import { constants as fsc, promises as fsp, type Stats } from 'node:fs';
import type { Encoder } from './codec.js';
import { pauseAt, type Faults } from './faults.js';
import { HASH_BYTES, PAGE_SIZE, bridgeRanges, rangeWindows, sendRuns, type PageHasher } from './pages.js';
import { HashThread, readFull } from './hash-thread.js';
import { encodePages, encodePassed, T, type FrameWriter, type PageRange } from './protocol.js';
import { rsyncExcluder } from '../backup/rsync-plan.js';
import { walkTree } from './walk.js';
import { alignedBuffer } from '../util/aligned.js';

/** Bytes read per step: 128 pages. */
export const READ_CHUNK = 128 * PAGE_SIZE;
/** Changed pages this close (fewer unchanged pages between them) travel in one message (sendRuns). */
export const BRIDGE = 4;

/**
 * The runs of a chunk's pages to send: those that differ from the basis, bridged (sendRuns);
 * the whole chunk in one message when at least half of it differs (a random update touches
 * most pages of a table): its unchanged pages cost less to send than the many small messages
 * the runs would be, and a backup where most pages changed goes as fast as a full one.
 */
export function chunkRuns(hashes: Buffer, basis: Buffer, first: number, pages: number): [number, number][] {
  const runs = sendRuns(hashes, basis, first, pages, BRIDGE);
  let changed = 0;
  for (const [i, j] of runs) changed += j - i;
  return runs.length > 1 && changed * 2 >= pages ? [[0, pages]] : runs;
}

export interface ListRequest {
  roots: { path: string; excludes: string[] }[];
}

export async function serveList(req: ListRequest, out: FrameWriter): Promise<void> {
  let total = 0;
  for (let r = 0; r < req.roots.length; r++) {
    const root = req.roots[r] as ListRequest['roots'][number];
    total += await walkTree(root.path, rsyncExcluder(root.excludes), (entries) => out.json(T.ENTRIES, { root: r, entries }));
  }
  await out.json(T.LIST_END, { count: total });
}

export interface ReadRequest {
  id: number;
  path: string;
}

export interface ReadEnd {
  id: number;
  /** The file was gone when the agent opened it (or was no longer a regular file). */
  vanished?: boolean;
  size?: number;
  sha256?: string;
  mtimeMs?: number;
  mode?: number;
  /** Pages sent / pages read. */
  sent?: number;
  pages?: number;
}

export interface ReadContext {
  out: FrameWriter;
  hasher: PageHasher;
  encoder: Encoder;
  faults: Faults;
  /** The hashing thread and its read buffers, kept from file to file (READ requests are served one at a time). */
  thread?: HashThread;
  /** The read buffer of small files (serveSmall). */
  small?: Buffer;
}

/** Read buffers: chunks read ahead while the hashing thread and this one work on earlier ones. */
const SLOTS = 4;

interface Chunk {
  /** Bytes read (0: end of file, or nothing more to take after a short chunk). */
  n: number;
  hashes: Buffer;
}

/**
 * Send the pages of one chunk read at page `first` of a file (`data`, in a read buffer that is
 * reused: a payload that travels raw is copied first) whose hash differs from the basis map.
 * Returns the pages sent.
 */
async function sendChunk(id: number, data: Buffer, hashes: Buffer, first: number, basis: Buffer, ctx: ReadContext, corrupt: { armed: boolean }): Promise<number> {
  const { out, encoder } = ctx;
  const pages = hashes.length / HASH_BYTES;
  let sent = 0;
  for (const [i, j] of chunkRuns(hashes, basis, first, pages)) {
    let raw = data.subarray(i * PAGE_SIZE, Math.min(j * PAGE_SIZE, data.length));
    if (corrupt.armed) {
      raw = Buffer.from(raw);
      raw[0] = (raw[0] ?? 0) ^ 0xff;
      corrupt.armed = false;
    }
    const enc = encoder.encode(raw);
    let { payload, release } = enc;
    if (payload === raw && raw.buffer === data.buffer) {
      // Never queue a view of a read buffer: it is filled again before the write completes.
      const copy = encoder.pool.take(raw.length);
      raw.copy(copy);
      payload = copy.subarray(0, raw.length);
      release = () => encoder.pool.give(copy);
    }
    const head = { id, firstPage: first + i, count: j - i, codec: enc.codec, rawLen: raw.length };
    await out.sendThen(release, T.PAGES, ...encodePages(head, hashes.subarray(i * HASH_BYTES, j * HASH_BYTES), payload));
    sent += j - i;
  }
  return sent;
}

/**
 * A file smaller than one chunk (most files of a data directory): one read, hashed on this
 * thread (handing it to the hashing thread costs two thread switches, each a wait on a busy
 * host). false when the file turned out to fill a whole chunk (it grew since its size was
 * taken): nothing was sent, the chunked reading takes it.
 */
async function serveSmall(req: ReadRequest, fh: fsp.FileHandle, st: Stats, basis: Buffer, ctx: ReadContext, corrupt: { armed: boolean }): Promise<boolean> {
  ctx.small ??= alignedBuffer(READ_CHUNK);
  const n = await readFull(fh, ctx.small, 0);
  if (n === READ_CHUNK) return false;
  const data = ctx.small.subarray(0, n);
  const hashes = ctx.hasher.pages(data);
  const sha256 = createHash('sha256').update(data).digest('hex');
  const sent = await sendChunk(req.id, data, hashes, 0, basis, ctx, corrupt);
  const pages = hashes.length / HASH_BYTES;
  await ctx.out.json(T.READ_END, { id: req.id, size: n, sha256, mtimeMs: st.mtimeMs, mode: st.mode & 0o7777, sent, pages } satisfies ReadEnd);
  return true;
}

/**
 * Serve one READ: the file is read in chunks of READ_CHUNK, up to SLOTS ahead; each chunk goes
 * to the hashing thread (page hashes, and the file's SHA-256, in file order) while this thread
 * reads further and compresses and sends the pages of the chunk before it whose hash differs
 * from the basis map. Nothing is taken after the first short chunk (the file's end when it was
 * read), whatever the file became since.
 */
export async function serveRead(req: ReadRequest, basis: Buffer, ctx: ReadContext): Promise<void> {
  const { out, hasher, faults } = ctx;
  await pauseAt(faults, req.path);
  const fh = await openToRead(req.id, req.path, out);
  if (!fh) return;
  const ahead: Promise<Chunk>[] = [];
  // A slot is read into again only once the hashing thread is done with what it held.
  const slotFree: Promise<unknown>[] = Array.from({ length: SLOTS }, () => Promise.resolve());
  let hashing = false;
  try {
    const st = await fh.stat();
    if (!st.isFile()) return await out.json(T.READ_END, { id: req.id, vanished: true } satisfies ReadEnd);
    const corruptOnce = { armed: faults.corrupt !== null && req.path.includes(faults.corrupt) };
    if (st.size < READ_CHUNK && (await serveSmall(req, fh, st, basis, ctx, corruptOnce))) return;
    const thread = (ctx.thread ??= new HashThread(hasher.seed, SLOTS, READ_CHUNK));
    let lastPosted: Promise<number> = Promise.resolve(READ_CHUNK);
    const launch = (k: number): Promise<Chunk> => {
      const slot = k % SLOTS;
      const read = (slotFree[slot] as Promise<unknown>).then(() => readFull(fh, thread.slots[slot] as Buffer, k * READ_CHUNK));
      const previous = lastPosted;
      let sha: Promise<unknown> = Promise.resolve();
      const posted = (async () => {
        const n = await read;
        // To the hashing thread (the file's SHA-256) in file order, and nothing after a short chunk.
        if ((await previous) < READ_CHUNK || n === 0) return 0;
        hashing = true;
        sha = thread.chunk(slot, n, 'sha');
        return n;
      })();
      lastPosted = posted;
      // The page hashes are computed here, while the hashing thread works on the SHA-256: the
      // two halves of the hashing go on at once.
      const chunk = posted.then((n) => ({ n, hashes: n > 0 ? hasher.pages((thread.slots[slot] as Buffer).subarray(0, n)) : Buffer.alloc(0) }));
      // A failed SHA-256 step fails the read (the next use of the slot, or the wait at the end).
      const free = posted.then(() => sha);
      free.catch(() => undefined);
      slotFree[slot] = free;
      chunk.catch(() => undefined);
      return chunk;
    };
    let launched = 0;
    let pos = 0;
    let page = 0;
    let sent = 0;
    for (let k = 0; ; k++) {
      // Slots k+1.. are free: read ahead into them (within the file's size, and one more chunk
      // to see whether it ends there).
      while (launched < k + SLOTS && (launched === 0 || launched * READ_CHUNK < st.size || launched === k + 1)) ahead.push(launch(launched++));
      const { n, hashes } = await (ahead.shift() as Promise<Chunk>);
      if (n === 0) break;
      const buf = thread.slots[k % SLOTS] as Buffer;
      const data = buf.subarray(0, n);
      const pages = hashes.length / HASH_BYTES;
      sent += await sendChunk(req.id, data, hashes, page, basis, ctx, corruptOnce);
      pos += n;
      page += pages;
      // The backup host fills in the pages not sent from its basis copy as the read goes on.
      if (basis.length > 0) await out.send(T.PASSED, encodePassed(req.id, page));
      if (n < READ_CHUNK) break;
    }
    await Promise.allSettled(ahead);
    await Promise.all(slotFree);
    hashing = false;
    const sha256 = await thread.digest();
    const end: ReadEnd = { id: req.id, size: pos, sha256, mtimeMs: st.mtimeMs, mode: st.mode & 0o7777, sent, pages: page };
    await out.json(T.READ_END, end);
  } finally {
    // Reads still going into the shared buffers end before the next file reuses them; a file
    // left half-hashed does not leave its bytes in the next file's SHA-256.
    await Promise.allSettled(ahead);
    await Promise.allSettled(slotFree);
    if (hashing) await ctx.thread?.digest().catch(() => undefined);
    await fh.close();
  }
}

export interface ReadPagesRequest {
  id: number;
  path: string;
  /** Every page from this one to the end of the file is read too (the basis copy ends there). */
  from: number;
}

const NO_BASIS = Buffer.alloc(0);

/** Open a file to read, or null (after saying so) when it is gone or no longer a regular file. */
async function openToRead(id: number, file: string, out: FrameWriter): Promise<fsp.FileHandle | null> {
  try {
    return await fsp.open(file, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Gone (a dropped relation) or replaced by a link: the backup host skips it, as rsync does.
    if (code === 'ENOENT' || code === 'ELOOP') {
      await out.json(T.READ_END, { id, vanished: true } satisfies ReadEnd);
      return null;
    }
    throw err;
  }
}

/**
 * Serve one READ_PAGES: the pages of `ranges` before `req.from` (pages past the file's end now
 * are skipped: a truncation after the backup's start, which recovery replays), then every page
 * from `req.from` to the end of the file. The size reported is where that read ended, or, when
 * nothing was there, the file's size if it is shorter than `req.from` pages.
 */
export async function serveReadPages(req: ReadPagesRequest, ranges: readonly PageRange[], ctx: ReadContext): Promise<void> {
  const { out, hasher, faults } = ctx;
  await pauseAt(faults, req.path);
  const fh = await openToRead(req.id, req.path, out);
  if (!fh) return;
  try {
    const st = await fh.stat();
    if (!st.isFile()) return await out.json(T.READ_END, { id: req.id, vanished: true } satisfies ReadEnd);
    const corrupt = { armed: faults.corrupt !== null && req.path.includes(faults.corrupt) };
    const buf = (ctx.small ??= alignedBuffer(READ_CHUNK));
    const chunkPages = READ_CHUNK / PAGE_SIZE;
    let sent = 0;
    const listed = ranges.filter(([first]) => first < req.from).map(([first, count]): PageRange => [first, Math.min(count, req.from - first)]);
    for (const w of rangeWindows(bridgeRanges(listed, BRIDGE), chunkPages)) {
      const n = await readFull(fh, buf.subarray(0, (w.end - w.first) * PAGE_SIZE), w.first * PAGE_SIZE);
      // Half the window or more listed: all of it in one message (as chunkRuns does).
      const listedPages = w.ranges.reduce((k, [, count]) => k + count, 0);
      const runs: readonly PageRange[] = w.ranges.length > 1 && listedPages * 2 >= w.end - w.first ? [[w.first, w.end - w.first]] : w.ranges;
      for (const [first, count] of runs) {
        const lo = (first - w.first) * PAGE_SIZE;
        const hi = Math.min(lo + count * PAGE_SIZE, n);
        if (hi <= lo) continue;
        const data = buf.subarray(lo, hi);
        sent += await sendChunk(req.id, data, hasher.pages(data), first, NO_BASIS, ctx, corrupt);
      }
    }
    let tail = 0;
    for (let pos = req.from * PAGE_SIZE; ; pos += READ_CHUNK) {
      const n = await readFull(fh, buf, pos);
      if (n === 0) break;
      const data = buf.subarray(0, n);
      sent += await sendChunk(req.id, data, hasher.pages(data), pos / PAGE_SIZE, NO_BASIS, ctx, corrupt);
      tail += n;
      if (n < READ_CHUNK) break;
    }
    const size = tail > 0 ? req.from * PAGE_SIZE + tail : Math.min((await fh.stat()).size, req.from * PAGE_SIZE);
    await out.json(T.READ_END, { id: req.id, size, mtimeMs: st.mtimeMs, mode: st.mode & 0o7777, sent, pages: sent } satisfies ReadEnd);
  } finally {
    await fh.close();
  }
}
