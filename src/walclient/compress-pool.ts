/**
 * A small pool of worker threads that compress WAL files (and checksum the result) for the
 * push: compressing a 16 MiB segment takes ~30 ms of CPU at zstd level 1 and 100+ ms at level
 * 4, about what ssh needs to send it, so on the thread that feeds ssh it would stall the
 * stream. With the pool, the next members are compressed on other cores while one streams.
 *
 * Safety: a job that fails (compression error, worker crash) rejects with a BarmanError of
 * exit code 2; the caller then abandons the whole tar stream, so put-wal never gets a member
 * whose checksum line does not describe exactly the bytes sent. close() terminates the
 * workers; idle workers are unref'd, so a forgotten pool never keeps the process alive.
 */
import { Worker } from 'node:worker_threads';
import { BarmanError } from '../util/errors.js';
import type { CompressionLevel, CompressionName } from '../wal/compression.js';

/** Exit code for local failures (push.ts's LOCAL_ERROR; not imported to keep the worker graph small). */
const LOCAL_ERROR = 2;

export interface PackJob {
  compression: CompressionName | null;
  level: CompressionLevel | null;
  checksum: 'sha256' | 'md5';
}

/** Message to a worker: the bytes of `buffer` from `offset`, `length` long, and what to do. */
export interface PackRequest extends PackJob {
  id: number;
  buffer: ArrayBuffer;
  offset: number;
  length: number;
}

export type PackReply =
  | { id: number; ok: true; buffer: ArrayBuffer; offset: number; length: number; digest: string }
  | { id: number; ok: false; error: string };

export interface Packed {
  /** What to send (compressed or not). */
  data: Buffer;
  /** Hex digest of `data` with the job's checksum algorithm. */
  digest: string;
}

interface Pending {
  resolve: (p: Packed) => void;
  reject: (err: Error) => void;
}

interface Slot {
  worker: Worker;
  pending: Map<number, Pending>;
}

const DEFAULT_WORKER_URL = new URL('./compress-worker.js', import.meta.url);

export { defaultPoolSize } from './pool-size.js';

export class CompressPool {
  private readonly slots: Slot[] = [];
  private nextId = 1;
  private next = 0;
  private closed = false;
  private failure: BarmanError | null = null;

  /** Number of worker threads. */
  get size(): number {
    return this.slots.length;
  }

  constructor(size: number, workerUrl: URL = DEFAULT_WORKER_URL) {
    for (let i = 0; i < Math.max(1, size); i++) this.slots.push(this.start(workerUrl));
  }

  private start(url: URL): Slot {
    const worker = new Worker(url);
    const slot: Slot = { worker, pending: new Map() };
    worker.on('message', (reply: PackReply) => {
      const p = slot.pending.get(reply.id);
      if (!p) return;
      slot.pending.delete(reply.id);
      if (slot.pending.size === 0) worker.unref();
      if (reply.ok) p.resolve({ data: Buffer.from(reply.buffer, reply.offset, reply.length), digest: reply.digest });
      else p.reject(new BarmanError(reply.error, LOCAL_ERROR));
    });
    const fail = (why: string) => {
      if (!this.closed) this.failure ??= new BarmanError(`compression worker ${why}`, LOCAL_ERROR);
      const err = this.failure ?? new BarmanError('compression pool closed', LOCAL_ERROR);
      for (const p of slot.pending.values()) p.reject(err);
      slot.pending.clear();
    };
    worker.on('error', (err) => fail(`failed: ${err.message.split('\n')[0] ?? ''}`));
    worker.on('exit', (code) => fail(`exited with code ${code}`));
    // After the listeners: adding a 'message' listener refs the worker's port again.
    worker.unref();
    return slot;
  }

  /**
   * Compress `data` (if the job says so) and checksum the result. `data`'s memory is handed to
   * the worker (transferred when `data` owns its ArrayBuffer): do not use it afterwards.
   */
  pack(data: Buffer, job: PackJob): Promise<Packed> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new BarmanError('compression pool closed', LOCAL_ERROR));
    const slot = this.slots[this.next++ % this.slots.length] as Slot;
    const id = this.nextId++;
    // Give the worker the whole ArrayBuffer (no copy) when it is data's own, as for a file
    // read into Buffer.allocUnsafe(size + 1); a small or shared one is copied instead.
    const own = data.buffer instanceof ArrayBuffer && data.buffer.byteLength > Buffer.poolSize && data.byteLength * 2 >= data.buffer.byteLength;
    const src = own ? data : Buffer.from(data);
    const req: PackRequest = { id, buffer: src.buffer as ArrayBuffer, offset: src.byteOffset, length: src.byteLength, ...job };
    return new Promise<Packed>((resolve, reject) => {
      slot.pending.set(id, { resolve, reject });
      slot.worker.ref(); // a job in progress keeps the process alive until its answer
      try {
        slot.worker.postMessage(req, [req.buffer]);
      } catch (err) {
        slot.pending.delete(id);
        reject(new BarmanError(`cannot hand a WAL file to the compression worker: ${(err as Error).message}`, LOCAL_ERROR));
      }
    });
  }

  /**
   * Stop every worker; pending jobs are rejected at once. Termination is not awaited: with
   * Node 20, terminate() of a worker busy in native code (a compression) was seen never to
   * settle once the event loop had nothing else to do, which would leave the push pending
   * forever (and node exiting 0). Unref'd, a terminating worker cannot hold the process.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const err = new BarmanError('compression pool closed', LOCAL_ERROR);
    for (const slot of this.slots) {
      for (const p of slot.pending.values()) p.reject(err);
      slot.pending.clear();
      slot.worker.unref();
      slot.worker.terminate().catch(() => undefined);
    }
  }
}
