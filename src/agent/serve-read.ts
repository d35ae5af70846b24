/**
 * Agent side of a backup: list trees (LIST) and send files (READ). For a READ the agent reads
 * the whole file once, hashing every page and the file (SHA-256); a page travels only when its
 * hash differs from the basis map the backup host sent (the page hashes of the copy it already
 * has; empty for a file it does not have), compressed, with its hash.
 */
import { constants as fsc, promises as fsp } from 'node:fs';
import type { Encoder } from './codec.js';
import { pauseAt, type Faults } from './faults.js';
import { HASH_BYTES, PAGE_SIZE, sendRuns, type PageHasher } from './pages.js';
import { HashThread, readFull } from './hash-thread.js';
import { encodePages, T, type FrameWriter } from './protocol.js';
import { rsyncExcluder } from '../backup/rsync-plan.js';
import { walkTree } from './walk.js';

/** Bytes read per step: 128 pages. */
export const READ_CHUNK = 128 * PAGE_SIZE;
/** Changed pages this close (fewer unchanged pages between them) travel in one message (sendRuns). */
export const BRIDGE = 4;

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
}

/** Read buffers: chunks read ahead while the hashing thread and this one work on earlier ones. */
const SLOTS = 4;

interface Chunk {
  /** Bytes read (0: end of file, or nothing more to take after a short chunk). */
  n: number;
  hashes: Buffer;
}

/**
 * Serve one READ: the file is read in chunks of READ_CHUNK, up to SLOTS ahead; each chunk goes
 * to the hashing thread (page hashes, and the file's SHA-256, in file order) while this thread
 * reads further and compresses and sends the pages of the chunk before it whose hash differs
 * from the basis map. Nothing is taken after the first short chunk (the file's end when it was
 * read), whatever the file became since.
 */
export async function serveRead(req: ReadRequest, basis: Buffer, ctx: ReadContext): Promise<void> {
  const { out, hasher, encoder, faults } = ctx;
  await pauseAt(faults, req.path);
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(req.path, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Gone (a dropped relation) or replaced by a link: the backup host skips it, as rsync does.
    if (code === 'ENOENT' || code === 'ELOOP') return out.json(T.READ_END, { id: req.id, vanished: true } satisfies ReadEnd);
    throw err;
  }
  const thread = (ctx.thread ??= new HashThread(hasher.seed, SLOTS, READ_CHUNK));
  const ahead: Promise<Chunk>[] = [];
  let hashing = false;
  try {
    const st = await fh.stat();
    if (!st.isFile()) return await out.json(T.READ_END, { id: req.id, vanished: true } satisfies ReadEnd);
    let corrupt = faults.corrupt !== null && req.path.includes(faults.corrupt);
    let lastPosted: Promise<number> = Promise.resolve(READ_CHUNK);
    const launch = (k: number): Promise<Chunk> => {
      const slot = k % SLOTS;
      const read = readFull(fh, thread.slots[slot] as Buffer, k * READ_CHUNK);
      const previous = lastPosted;
      let hashes: Promise<Buffer> = Promise.resolve(Buffer.alloc(0));
      const posted = (async () => {
        const n = await read;
        // To the hashing thread in file order, and nothing after a short chunk.
        if ((await previous) < READ_CHUNK || n === 0) return 0;
        hashing = true;
        hashes = thread.chunk(slot, n);
        return n;
      })();
      lastPosted = posted;
      const chunk = posted.then(async (n) => ({ n, hashes: await hashes }));
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
      for (const [i, j] of sendRuns(hashes, basis, page, pages, BRIDGE)) {
        let raw = data.subarray(i * PAGE_SIZE, Math.min(j * PAGE_SIZE, n));
        if (corrupt) {
          raw = Buffer.from(raw);
          raw[0] = (raw[0] ?? 0) ^ 0xff;
          corrupt = false;
        }
        const enc = encoder.encode(raw);
        let { payload, release } = enc;
        if (payload === raw && raw.buffer === buf.buffer) {
          // Never queue a view of a read buffer: it is filled again before the write completes.
          const copy = encoder.pool.take(raw.length);
          raw.copy(copy);
          payload = copy.subarray(0, raw.length);
          release = () => encoder.pool.give(copy);
        }
        const head = { id: req.id, firstPage: page + i, count: j - i, codec: enc.codec, rawLen: raw.length };
        await out.sendThen(release, T.PAGES, ...encodePages(head, hashes.subarray(i * HASH_BYTES, j * HASH_BYTES), payload));
        sent += j - i;
      }
      pos += n;
      page += pages;
      if (n < READ_CHUNK) break;
    }
    await Promise.allSettled(ahead);
    hashing = false;
    const sha256 = await thread.digest();
    const end: ReadEnd = { id: req.id, size: pos, sha256, mtimeMs: st.mtimeMs, mode: st.mode & 0o7777, sent, pages: page };
    await out.json(T.READ_END, end);
  } finally {
    // Reads still going into the shared buffers end before the next file reuses them; a file
    // left half-hashed does not leave its bytes in the next file's SHA-256.
    await Promise.allSettled(ahead);
    if (hashing) await thread.digest().catch(() => undefined);
    await fh.close();
  }
}
