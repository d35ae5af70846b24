/**
 * A second thread for the agent's reads (hash-worker.ts): the SHA-256 of a file and the hashes
 * of its pages are computed there while the main thread reads the next chunks, compresses the
 * pages that travel and writes them out, so that one large file is not bound by a single core.
 * The read buffers are shared memory: no chunk is copied between the threads.
 */
import * as fs from 'node:fs';
import type { promises as fsp } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { HASH_BYTES } from './pages.js';
import { alignedSharedBuffer } from '../util/aligned.js';

/**
 * What a chunk goes into: its page hashes, the file's SHA-256, or both. A file's chunks all use
 * the same kind (a digest is asked for only when they include the SHA-256).
 */
export type HashKind = 'both' | 'pages' | 'sha';
export type HashRequest =
  | { t: 'chunk'; slot: number; len: number; kind: HashKind }
  | { t: 'digest' }
  /** Page ranges [a, b) of file descriptor `from` (`basisSize` bytes) copied into `to`, checked against `map` (from page `mapFirst`). */
  | { t: 'fill'; from: number; to: number; gaps: [number, number][]; map: Uint8Array; mapFirst: number; basisSize: number; direct: DirectFds | null };

/** The basis and the new file opened again with O_DIRECT (direct-io.ts), beside `from` and `to`. */
export interface DirectFds {
  from: number;
  to: number;
}
export type HashReply =
  | { t: 'hashes'; hashes: Uint8Array }
  | { t: 'sha'; hex: string }
  /** `bad`: the first page whose hash differs from the map, -1 when the basis ended early, null when all went in. */
  | { t: 'filled'; bytes: number; bad: number | null }
  | { t: 'error'; message: string };

/** Bytes copied; `bad`: the first page that does not match the map, -1 if the basis ended early, null if all is well. */
export interface FillResult {
  bytes: number;
  bad: number | null;
}

export class HashThread {
  private readonly worker: Worker;
  /** Read buffers (READ_CHUNK each), shared with the worker. */
  readonly slots: Buffer[];
  private readonly waiting: { resolve: (r: HashReply) => void; reject: (err: Error) => void }[] = [];
  private failed: Error | null = null;

  constructor(seed: string, slotCount: number, slotSize: number) {
    // Page-aligned: the reads into them cost the kernel a fraction of a copy into malloc's memory (util/aligned.ts).
    const shared = Array.from({ length: slotCount }, () => alignedSharedBuffer(slotSize));
    this.slots = shared.map((s) => Buffer.from(s, 0, slotSize));
    // stdout/stderr of its own: otherwise Node pipes them into process.stdout, whose creation
    // turns the agent's fd 1 non-blocking, and the protocol writer (an fs stream on fd 1) fails
    // with EAGAIN as soon as the pipe is full.
    this.worker = new Worker(new URL('./hash-worker.js', import.meta.url), { workerData: { seed, slots: shared }, stdout: true, stderr: true });
    this.worker.on('message', (r: HashReply) => {
      this.waiting.shift()?.resolve(r);
      if (this.waiting.length === 0) this.worker.unref();
    });
    const fail = (err: Error) => {
      this.failed ??= err;
      for (const w of this.waiting.splice(0)) w.reject(err);
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`the hashing thread exited (code ${code})`)));
    // Held only while it owes an answer: an idle thread never keeps the process alive.
    this.worker.unref();
  }

  private ask(m: HashRequest): Promise<HashReply> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise<HashReply>((resolve, reject) => {
      if (this.waiting.length === 0) this.worker.ref();
      this.waiting.push({ resolve, reject });
      this.worker.postMessage(m);
    }).then((r) => {
      if (r.t === 'error') throw new Error(`hashing failed: ${r.message}`);
      return r;
    });
  }

  /**
   * Hash the first `len` bytes of a slot: page hashes, and the file's SHA-256 goes on. Chunks
   * must be given in file order (the request is sent at once; the promise is its answer).
   */
  async chunk(slot: number, len: number, kind: HashKind = 'both'): Promise<Buffer> {
    const r = await this.ask({ t: 'chunk', slot, len, kind });
    if (r.t !== 'hashes') throw new Error('hashing thread out of step');
    return Buffer.from(r.hashes.buffer, r.hashes.byteOffset, r.hashes.byteLength);
  }

  /** SHA-256 (hex) of the chunks since the last digest; the next chunk starts a new file. */
  async digest(): Promise<string> {
    const r = await this.ask({ t: 'digest' });
    if (r.t !== 'sha') throw new Error('hashing thread out of step');
    return r.hex;
  }

  /**
   * Copy page ranges of an open basis file into the file being built, in the thread, every page
   * checked against the basis's page map first (see FillResult).
   */
  async fill(from: number, to: number, gaps: [number, number][], map: Buffer, basisSize: number, direct: DirectFds | null = null): Promise<FillResult> {
    const first = gaps[0]?.[0] ?? 0;
    const last = gaps.at(-1)?.[1] ?? 0;
    // A copy of just these hashes: a view would take its whole buffer (the file's map, or the
    // store's) through the structured clone of every message.
    const slice = new Uint8Array(map.subarray(first * HASH_BYTES, last * HASH_BYTES));
    const r = await this.ask({ t: 'fill', from, to, gaps, map: slice, mapFirst: first, basisSize, direct });
    if (r.t !== 'filled') throw new Error('hashing thread out of step');
    return { bytes: r.bytes, bad: r.bad };
  }

  /** Stop the thread (a process that goes on after its copy: the backup host). */
  async close(): Promise<void> {
    this.failed ??= new Error('the hashing thread was closed');
    await this.worker.terminate();
  }
}

/**
 * Size, mode and times of an open file being finished, as synchronous system calls: each is
 * quick, and through the thread pool (FileHandle's methods) each would wait for a turn, which
 * adds up over the thousand small files of a data directory on a busy host.
 */
export function setFileAttributes(fd: number, size: number | null, mode: number, mtimeMs: number | undefined): void {
  if (size !== null) fs.ftruncateSync(fd, size);
  fs.fchmodSync(fd, mode);
  if (mtimeMs !== undefined) fs.futimesSync(fd, mtimeMs / 1000, mtimeMs / 1000);
}

/** Fill `buf` from `pos` until it is full or the file ends; returns the bytes read. */
export async function readFull(fh: fsp.FileHandle, buf: Buffer, pos: number): Promise<number> {
  let n = 0;
  while (n < buf.length) {
    const { bytesRead } = await fh.read(buf, n, buf.length - n, pos + n);
    if (bytesRead === 0) break;
    n += bytesRead;
  }
  return n;
}

const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

export interface FileHashes {
  /** Bytes read: `limit`, or less if the file is shorter. */
  bytes: number;
  /** Page hashes of what was read (empty for kind 'sha'). */
  map: Buffer;
  /** SHA-256 (hex) of what was read ('' for kind 'pages'). */
  sha256: string;
}

/**
 * Hash the first `limit` bytes of an open file (fewer if it is shorter) on `thread`: this thread
 * reads chunks ahead into the thread's shared buffers (all of them but the one being hashed)
 * while the hashing thread works through the earlier ones, so that hashing a file goes at about
 * the speed of reading it. With `ready`, each chunk is read once `ready(its end)` resolves.
 */
export async function hashFile(thread: HashThread, fh: fsp.FileHandle, limit: number, kind: HashKind, ready?: (byteEnd: number) => Promise<void>): Promise<FileHashes> {
  const slots = thread.slots;
  const size = slots[0]?.length ?? 0;
  if (slots.length < 2 || size === 0) throw new Error('hashFile needs at least two read buffers');
  const chunks = Math.ceil(limit / size);
  const want = (i: number) => Math.min(size, limit - i * size);
  const reads = new Map<number, Promise<number>>();
  const read = (i: number) => {
    const buf = (slots[i % slots.length] as Buffer).subarray(0, want(i));
    // A file still being written (ready: its bytes up to there are written) is read behind the writing.
    const r = ready ? ready(i * size + want(i)).then(() => readFull(fh, buf, i * size)) : readFull(fh, buf, i * size);
    r.catch(() => undefined);
    reads.set(i, r);
  };
  const hashes: Promise<Buffer>[] = [];
  let bytes = 0;
  let fed = false;
  try {
    for (let i = 0; i < Math.min(slots.length - 1, chunks); i++) read(i);
    for (let i = 0; i < chunks; i++) {
      const n = await (reads.get(i) as Promise<number>);
      reads.delete(i);
      if (n > 0) {
        fed = true;
        const h = thread.chunk(i % slots.length, n, kind);
        h.catch(() => undefined);
        hashes.push(h);
      }
      bytes += n;
      if (n < want(i)) break;
      // The buffer of chunk i-1 is free once its hashes are back: read chunk i+slots-1 into it.
      const next = i + slots.length - 1;
      if (next < chunks) {
        if (i > 0) await hashes[i - 1];
        read(next);
      }
    }
    const parts = await Promise.all(hashes);
    let sha256 = '';
    if (kind !== 'pages') sha256 = fed ? await thread.digest() : EMPTY_SHA256;
    fed = false;
    return { bytes, map: kind === 'sha' ? Buffer.alloc(0) : Buffer.concat(parts), sha256 };
  } finally {
    // Reads still going into the shared buffers end before anyone reuses them; a file left
    // half-hashed does not leave its bytes in the next file's SHA-256.
    await Promise.allSettled([...reads.values(), ...hashes]);
    if (fed && kind !== 'pages') await thread.digest().catch(() => undefined);
  }
}

/** Hashing threads shared by concurrent users: take one, give it back. */
export class HashThreadPool {
  private readonly idle: HashThread[] = [];
  private readonly all: HashThread[] = [];
  private readonly waiting: ((t: HashThread) => void)[] = [];

  constructor(
    private readonly seed: string,
    private readonly max: number,
    private readonly slotCount: number,
    private readonly slotSize: number,
  ) {}

  async use<X>(body: (t: HashThread) => Promise<X>): Promise<X> {
    let t = this.idle.pop();
    if (!t && this.all.length < this.max) {
      t = new HashThread(this.seed, this.slotCount, this.slotSize);
      this.all.push(t);
    }
    t ??= await new Promise<HashThread>((resolve) => this.waiting.push(resolve));
    try {
      return await body(t);
    } finally {
      const w = this.waiting.shift();
      if (w) w(t);
      else this.idle.push(t);
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.all.map((t) => t.close()));
  }
}
