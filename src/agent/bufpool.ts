/**
 * Reusable buffers for the page pipeline. A fresh buffer of a megabyte for every message
 * (read, compressed, decoded) costs more than the work done on it: V8 accounts it as external
 * memory and collects more often, and the allocator maps and unmaps it, faulting in every
 * page again (measured: decoding zstd into a fresh 1 MiB buffer runs at 1/40 of the speed of
 * decoding into a reused one). A pool keeps a few buffers and hands them out again once the
 * message that used them is written.
 *
 * Small requests (the few changed pages of an incremental, or of a delta restore, travel in
 * messages of 8 KiB) get buffers of their own size class (powers of two up to SMALL_MAX), many
 * of which are kept: handing each of them a megabyte buffer made a random 1% incremental
 * (thousands of one-page messages, hundreds of them waiting to be written) slower than a full
 * backup, the time going to allocating, faulting in and collecting those megabytes.
 */
import { DIRECT_ALIGN } from './direct-io.js';
import { alignedBuffer } from '../util/aligned.js';

export const SMALL_MAX = 128 * 1024;

/** Memory whose large buffers suit direct I/O (direct-io.ts). */
const SLABS = new WeakSet<ArrayBufferLike>();

/** Whether `buf` starts at an address direct I/O accepts (a large buffer of an aligned pool, or a view from its start). */
export function directAligned(buf: Buffer): boolean {
  return SLABS.has(buf.buffer) && buf.byteOffset % DIRECT_ALIGN === 0;
}
const SMALL_MIN = 8 * 1024;

/** The size class of a small request: the next power of two, at least SMALL_MIN. */
export function smallClass(size: number): number {
  let c = SMALL_MIN;
  while (c < size) c *= 2;
  return c;
}

export class BufferPool {
  private readonly free: Buffer[] = [];
  private readonly small = new Map<number, Buffer[]>();
  /** The free large buffers of the aligned slab (alignedLarge), made on first use. */
  private slab: Buffer[] | null = null;

  constructor(
    /** Smallest large buffer made (so that messages of slightly different sizes share buffers). */
    private readonly minSize = 1 << 20,
    /** Large buffers kept when given back; more are left to the garbage collector. */
    private readonly keep = 8,
    /** Small buffers kept per size class. */
    private readonly keepSmall = 256,
    /**
     * Large buffers of `minSize` (a multiple of 64 KiB) come from one slab of `keep` of them
     * whose addresses suit direct I/O (directAligned), as long as it has some free.
     */
    private readonly alignedLarge = false,
  ) {}

  /** A buffer of at least `size` bytes (its contents are garbage). */
  take(size: number): Buffer {
    if (size <= SMALL_MAX) {
      const cls = smallClass(size);
      return this.small.get(cls)?.pop() ?? Buffer.allocUnsafeSlow(cls);
    }
    if (this.alignedLarge && size <= this.minSize) {
      if (!this.slab) {
        const slab = alignedBuffer(this.minSize * this.keep);
        SLABS.add(slab.buffer);
        this.slab = Array.from({ length: this.keep }, (_, i) => slab.subarray(i * this.minSize, (i + 1) * this.minSize));
      }
      const b = this.slab.pop();
      if (b) return b;
    }
    for (let i = this.free.length - 1; i >= 0; i--) {
      const b = this.free[i] as Buffer;
      if (b.length >= size) {
        this.free.splice(i, 1);
        return b;
      }
    }
    return Buffer.allocUnsafeSlow(Math.max(size, this.minSize));
  }

  /** Give back a buffer from take() once nothing refers to its bytes any more. */
  give(buf: Buffer): void {
    if (this.slab && SLABS.has(buf.buffer)) {
      this.slab.push(buf);
      return;
    }
    if (buf.length <= SMALL_MAX) {
      if (buf.length !== smallClass(buf.length)) return;
      let list = this.small.get(buf.length);
      if (!list) this.small.set(buf.length, (list = []));
      if (list.length < this.keepSmall) list.push(buf);
      return;
    }
    if (this.free.length < this.keep && buf.length >= this.minSize) this.free.push(buf);
  }
}

/**
 * Bytes handed to asynchronous writes and not yet written: reserve() waits while more than
 * `limit` are outstanding, so that a slow disk holds the reader back (and, through the pipe,
 * the agent) instead of filling memory.
 */
export class ByteBudget {
  private used = 0;
  private waiters: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  async reserve(n: number): Promise<void> {
    while (this.used > 0 && this.used + n > this.limit) await new Promise<void>((resolve) => this.waiters.push(resolve));
    this.used += n;
  }

  free(n: number): void {
    this.used -= n;
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}
