/**
 * Page hash maps: one hash per 8 KiB page of a file (PostgreSQL's block size), the basis of
 * block-level incremental backups and delta restores. A map is the hashes of pages 0..n-1
 * concatenated, HASH_BYTES each; the last page of a file whose size is not a multiple of the
 * page size is hashed over its actual bytes.
 *
 * The hash is XXH3-128 (hash-wasm's WebAssembly build: a few GB/s, where a native call per
 * page costs more than the hashing), keyed by a 64-bit seed chosen at random for each chain
 * of backups and kept in the catalog: someone who can only write rows cannot craft a page
 * whose hash collides with the page it replaces. Whatever a map says, the pages that travel
 * are checked against their hash on arrival, and whole files against their SHA-256 by
 * `verify-backup`.
 */
import { randomBytes } from 'node:crypto';
import { createXXHash128, type IHasher } from 'hash-wasm';
import { HASH_BYTES, type PageRange } from './protocol.js';

export const PAGE_SIZE = 8192;
export { HASH_BYTES };

/**
 * Pages a fill from a basis (receive.ts, hash-worker.ts) copies at most in one go (8 MiB): the
 * ranges gathered for one task, and the size of one direct read and write. This machine's
 * virtual disk gave a cold 1 GiB copy through O_DIRECT in 1.4-4.6 s with 8 MiB requests
 * against 3.3-4.1 s with 1 MiB ones: large requests are split and served in parallel.
 */
export const FILL_PAGES = 1024;

/** Number of pages of a file of `size` bytes (the last one may be short). */
export function pageCount(size: number): number {
  return Math.ceil(size / PAGE_SIZE);
}

/** A new random seed, as 16 hex digits. */
export function newSeed(): string {
  return randomBytes(8).toString('hex');
}

export function isSeed(text: unknown): text is string {
  return typeof text === 'string' && /^[0-9a-f]{16}$/.test(text);
}

/** Hashes pages with one seed. One instance per thread (it owns a WebAssembly memory). */
export class PageHasher {
  private constructor(
    private readonly h: IHasher,
    readonly seed: string,
  ) {}

  static async create(seed: string): Promise<PageHasher> {
    if (!isSeed(seed)) throw new Error(`invalid page hash seed '${seed}'`);
    const high = Number.parseInt(seed.slice(0, 8), 16);
    const low = Number.parseInt(seed.slice(8), 16);
    return new PageHasher(await createXXHash128(low, high), seed);
  }

  /** The hash of one page (or short last page). */
  page(data: Uint8Array): Uint8Array {
    this.h.init();
    this.h.update(data);
    return this.h.digest('binary');
  }

  /**
   * Hashes of the pages in `data` (which starts on a page boundary), written into `out` at
   * `out[outOffset..]`; returns `out`.
   */
  pages(data: Uint8Array, out: Buffer = Buffer.allocUnsafe(pageCount(data.length) * HASH_BYTES), outOffset = 0): Buffer {
    for (let off = 0, i = 0; off < data.length; off += PAGE_SIZE, i++) {
      out.set(this.page(data.subarray(off, Math.min(off + PAGE_SIZE, data.length))), outOffset + i * HASH_BYTES);
    }
    return out;
  }
}

/** Whether page `i` has the same hash in two maps (false when either has no page `i`). */
export function samePage(a: Uint8Array, ai: number, b: Uint8Array, bi: number): boolean {
  const ao = ai * HASH_BYTES;
  const bo = bi * HASH_BYTES;
  if (ao + HASH_BYTES > a.length || bo + HASH_BYTES > b.length) return false;
  for (let k = 0; k < HASH_BYTES; k++) if (a[ao + k] !== b[bo + k]) return false;
  return true;
}

/**
 * Pages of `current` (a map of `pages` entries) that differ from `basis` (or that `basis`
 * does not have), as ranges of consecutive pages; ranges separated by fewer than `bridge`
 * matching pages are joined (sendRuns).
 */
export function changedRanges(current: Uint8Array, basis: Uint8Array, pages = current.length / HASH_BYTES, bridge = 0): PageRange[] {
  return sendRuns(current, basis, 0, pages, bridge).map(([start, end]): PageRange => [start, end - start]);
}

/**
 * Ranges (in order, disjoint) joined where fewer than `bridge` pages separate them: one read and
 * one message instead of several small ones, the pages between them sent too (sendRuns).
 */
export function bridgeRanges(ranges: readonly PageRange[], bridge: number): PageRange[] {
  const out: PageRange[] = [];
  for (const [first, count] of ranges) {
    const last = out.at(-1);
    if (last && first - (last[0] + last[1]) < bridge) last[1] = first + count - last[0];
    else out.push([first, count]);
  }
  return out;
}

/** Split ranges so that none holds more than `max` pages. */
export function splitRanges(ranges: readonly PageRange[], max: number): PageRange[] {
  const out: PageRange[] = [];
  for (const [first, count] of ranges) {
    for (let p = first; p < first + count; p += max) out.push([p, Math.min(max, first + count - p)]);
  }
  return out;
}

/**
 * Ranges (in file order, none longer than `max` pages: splitRanges) gathered into windows of
 * at most `max` pages from the first page of their first range to the end of their last one:
 * each window is read with one read, however many ranges it holds.
 */
export function rangeWindows(ranges: readonly PageRange[], max: number): { first: number; end: number; ranges: PageRange[] }[] {
  const out: { first: number; end: number; ranges: PageRange[] }[] = [];
  for (const r of splitRanges(ranges, max)) {
    const w = out.at(-1);
    const end = r[0] + r[1];
    if (w && r[0] >= w.end && end - w.first <= max) {
      w.ranges.push(r);
      w.end = end;
    } else out.push({ first: r[0], end, ranges: [r] });
  }
  return out;
}

/**
 * Runs of pages [start, end) of a chunk whose hashes (`hashes`, pages 0..pages-1 of the chunk,
 * page `first` of the file) differ from the basis map; runs separated by fewer than `bridge`
 * matching pages are joined, the pages between them sent too. A random update changes pages
 * here and there: one message per changed page costs more (a compression, a message, a
 * decompression, a write on the other side) than sending its unchanged neighbour, which
 * compresses well and is written back identical.
 */
export function sendRuns(hashes: Uint8Array, basis: Uint8Array, first: number, pages: number, bridge = 0): [start: number, end: number][] {
  const runs: [number, number][] = [];
  for (let i = 0; i < pages; ) {
    if (samePage(hashes, i, basis, first + i)) {
      i++;
      continue;
    }
    let j = i + 1;
    while (j < pages && !samePage(hashes, j, basis, first + j)) j++;
    const last = runs.at(-1);
    if (last && i - last[1] < bridge) last[1] = j;
    else runs.push([i, j]);
    i = j;
  }
  return runs;
}
