/**
 * A second thread for the agent's reads (hash-worker.ts): the SHA-256 of a file and the hashes
 * of its pages are computed there while the main thread reads the next chunks, compresses the
 * pages that travel and writes them out, so that one large file is not bound by a single core.
 * The read buffers are shared memory: no chunk is copied between the threads.
 */
import { Worker } from 'node:worker_threads';

export type HashRequest = { t: 'chunk'; slot: number; len: number } | { t: 'digest' };
export type HashReply = { t: 'hashes'; hashes: Uint8Array } | { t: 'sha'; hex: string } | { t: 'error'; message: string };

export class HashThread {
  private readonly worker: Worker;
  /** Read buffers (READ_CHUNK each), shared with the worker. */
  readonly slots: Buffer[];
  private readonly waiting: { resolve: (r: HashReply) => void; reject: (err: Error) => void }[] = [];
  private failed: Error | null = null;

  constructor(seed: string, slotCount: number, slotSize: number) {
    const shared = Array.from({ length: slotCount }, () => new SharedArrayBuffer(slotSize));
    this.slots = shared.map((s) => Buffer.from(s));
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
  async chunk(slot: number, len: number): Promise<Buffer> {
    const r = await this.ask({ t: 'chunk', slot, len });
    if (r.t !== 'hashes') throw new Error('hashing thread out of step');
    return Buffer.from(r.hashes.buffer, r.hashes.byteOffset, r.hashes.byteLength);
  }

  /** SHA-256 (hex) of the chunks since the last digest; the next chunk starts a new file. */
  async digest(): Promise<string> {
    const r = await this.ask({ t: 'digest' });
    if (r.t !== 'sha') throw new Error('hashing thread out of step');
    return r.hex;
  }
}
