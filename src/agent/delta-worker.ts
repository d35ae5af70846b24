/**
 * A thread of a local delta restore (local-delta.ts starts them): it brings pages [first, end)
 * of destination files to the content of their backup copies, with synchronous reads and
 * writes (this thread does nothing else meanwhile).
 *
 * Chunk by chunk, the destination's pages are compared with the backup's, byte for byte, and
 * only the pages that differ are written; with the backup's page map (an agent backup), each
 * of those is first checked against the hash recorded when the backup was taken (a damaged
 * backup is reported, never restored).
 */
import * as fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { setFileAttributes } from './hash-thread.js';
import { PAGE_SIZE, PageHasher, samePage } from './pages.js';
import { alignedBuffer } from '../util/aligned.js';

export interface DeltaItem {
  dest: string;
  src: string;
  /** Size of the backup's file. */
  size: number;
  first: number;
  end: number;
  /** The backup's page hashes of pages [first, end), to check the pages written; null: unchecked. */
  map: Uint8Array | null;
  /** The item is the whole file: also set its size, mode and time here. */
  attrs: { mode: number; mtimeMs: number } | null;
}

export type DeltaRequest = { id: number; items: DeltaItem[] };
export type DeltaReply = { id: number; written: number[]; error?: undefined } | { id: number; error: string };

/** Pages compared per step. */
export const CHUNK_PAGES = 128;

function readFull(fd: number, buf: Buffer, pos: number): number {
  let n = 0;
  while (n < buf.length) {
    const k = fs.readSync(fd, buf, n, buf.length - n, pos + n);
    if (k === 0) break;
    n += k;
  }
  return n;
}

export class DeltaApplier {
  private readonly dbuf = alignedBuffer(CHUNK_PAGES * PAGE_SIZE);
  private readonly sbuf = alignedBuffer(CHUNK_PAGES * PAGE_SIZE);

  constructor(private readonly hasher: PageHasher | null) {}

  /** Bring one item's pages to the backup's content; returns the pages written. */
  apply(it: DeltaItem): number {
    const dfd = fs.openSync(it.dest, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600);
    let written = 0;
    try {
      const sfd = it.end > it.first ? fs.openSync(it.src, fs.constants.O_RDONLY) : null;
      try {
        for (let c = it.first; c < it.end; c += CHUNK_PAGES) written += this.chunk(it, dfd, sfd as number, c, Math.min(it.end, c + CHUNK_PAGES));
      } finally {
        if (sfd !== null) fs.closeSync(sfd);
      }
      if (it.attrs) setFileAttributes(dfd, it.size, it.attrs.mode, it.attrs.mtimeMs);
    } finally {
      fs.closeSync(dfd);
    }
    return written;
  }

  /** Pages [c, ce) of one item. */
  private chunk(it: DeltaItem, dfd: number, sfd: number, c: number, ce: number): number {
    const start = c * PAGE_SIZE;
    /** The backup's bytes in this chunk (its last page may be short). */
    const want = Math.min(ce * PAGE_SIZE, it.size) - start;
    // Whole pages of the destination: a last page longer than the backup's differs.
    const have = readFull(dfd, this.dbuf.subarray(0, (ce - c) * PAGE_SIZE), start);
    const pageOf = (buf: Buffer, n: number, i: number) => buf.subarray(i * PAGE_SIZE, Math.min((i + 1) * PAGE_SIZE, n));
    // The backup's chunk is read whole and compared byte for byte: reading it costs less than
    // hashing the destination's pages (a few hundred MB/s per core), and proves the pages equal.
    const got = readFull(sfd, this.sbuf.subarray(0, want), start);
    if (got !== want) throw new Error(`${it.src} is shorter than when the restore started`);
    const differs: boolean[] = [];
    for (let i = 0; i < ce - c; i++) differs.push(!pageOf(this.dbuf, have, i).equals(pageOf(this.sbuf, want, i)));
    const firstDiff = differs.indexOf(true);
    if (firstDiff < 0) return 0;
    if (it.map && this.hasher) {
      // What is written is checked against the hashes recorded when the backup was taken.
      for (let i = firstDiff; i < ce - c; i++) {
        if (differs[i] && !samePage(this.hasher.page(pageOf(this.sbuf, want, i)), 0, it.map, c - it.first + i)) {
          throw new Error(`${it.src} does not match the page checksums recorded when the backup was taken: the backup is damaged (run verify-backup)`);
        }
      }
    }
    let written = 0;
    for (let i = firstDiff; i < ce - c; ) {
      if (!differs[i]) {
        i++;
        continue;
      }
      let j = i + 1;
      while (j < ce - c && differs[j]) j++;
      const data = this.sbuf.subarray(i * PAGE_SIZE, Math.min(j * PAGE_SIZE, want));
      let off = 0;
      while (off < data.length) off += fs.writeSync(dfd, data, off, data.length - off, start + i * PAGE_SIZE + off);
      written += j - i;
      i = j;
    }
    return written;
  }
}

if (parentPort && (workerData as { deltaWorker?: boolean } | null)?.deltaWorker) {
  const port = parentPort;
  const seed = (workerData as { seed: string | null }).seed;
  const applier = new DeltaApplier(seed ? await PageHasher.create(seed) : null);
  port.on('message', (m: DeltaRequest) => {
    let reply: DeltaReply;
    try {
      reply = { id: m.id, written: m.items.map((it) => applier.apply(it)) };
    } catch (err) {
      reply = { id: m.id, error: err instanceof Error ? err.message : String(err) };
    }
    port.postMessage(reply);
  });
}
