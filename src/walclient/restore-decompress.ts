/**
 * Where barman-wal-restore's batch receiver puts a member once it is whole: plain data is
 * written as it is; compressed data (--accept-compression: the server sent it as stored) is
 * decompressed by one worker thread (restore-decompress-worker.ts) while the main thread goes
 * on receiving the next member. Two cores: ssh + hashing here, decompression there.
 */
import { promises as fsp } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { BarmanError } from '../util/errors.js';
import { FILE_MODE } from '../util/fsutil.js';
import { identifyCompression } from '../wal/compression.js';
import type { DecompressJob, DecompressReply } from './restore-decompress-worker.js';

/** Members being written at once (each holds its compressed bytes, and the worker a plain copy). */
const MAX_IN_FLIGHT = 3;

export class MemberWriter {
  private worker: Worker | null = null;
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
  private readonly inFlight = new Set<Promise<void>>();

  /**
   * Start writing `data` (a whole member) as plain content into `out`. Resolves once the job is
   * queued (waiting while too many are in flight); `done` tells the job's end.
   */
  async write(data: Buffer, out: string, sync: boolean): Promise<{ done: Promise<void> }> {
    while (this.inFlight.size >= MAX_IN_FLIGHT) await Promise.race(this.inFlight).catch(() => undefined);
    const algo = identifyCompression(data);
    const job = algo === null ? writePlain(data, out, sync) : this.decompress({ id: this.nextId++, data, algo, out, sync });
    const tracked = job.finally(() => this.inFlight.delete(tracked));
    tracked.catch(() => undefined);
    this.inFlight.add(tracked);
    return { done: tracked };
  }

  private decompress(job: DecompressJob): Promise<void> {
    const worker = this.start();
    return new Promise<void>((resolve, reject) => {
      this.waiting.set(job.id, { resolve, reject });
      // Transferred, not copied: the buffer is not used here any more.
      const buf = job.data;
      const owned = buf.byteOffset === 0 && buf.byteLength === buf.buffer.byteLength ? buf : Uint8Array.prototype.slice.call(buf);
      worker.postMessage({ ...job, data: owned }, [owned.buffer as ArrayBuffer]);
    });
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(new URL('./restore-decompress-worker.js', import.meta.url));
    worker.on('message', (reply: DecompressReply) => {
      const w = this.waiting.get(reply.id);
      if (!w) return;
      this.waiting.delete(reply.id);
      if (reply.ok) w.resolve();
      else w.reject(new BarmanError(reply.error, 2));
    });
    const failAll = (err: Error) => {
      for (const w of this.waiting.values()) w.reject(new BarmanError(`decompression worker failed: ${err.message}`, 2));
      this.waiting.clear();
      this.worker = null;
    };
    worker.on('error', failAll);
    worker.on('exit', (code) => failAll(new Error(`exited with code ${code}`)));
    this.worker = worker;
    return worker;
  }

  /** Wait for every job (failures are the callers' to handle, through the promises they got). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.inFlight]);
  }

  async close(): Promise<void> {
    await this.settle();
    const w = this.worker;
    this.worker = null;
    if (w) {
      w.removeAllListeners('exit');
      await w.terminate();
    }
  }
}

async function writePlain(data: Buffer, out: string, sync: boolean): Promise<void> {
  const fh = await fsp.open(out, 'w', FILE_MODE);
  try {
    await fh.writeFile(data);
    if (sync) await fh.sync();
  } finally {
    await fh.close();
  }
}
