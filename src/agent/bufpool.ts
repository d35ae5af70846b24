/**
 * Reusable buffers for the page pipeline. A fresh buffer of a megabyte for every message
 * (read, compressed, decoded) costs more than the work done on it: V8 accounts it as external
 * memory and collects more often, and the allocator maps and unmaps it, faulting in every
 * page again (measured: decoding zstd into a fresh 1 MiB buffer runs at 1/40 of the speed of
 * decoding into a reused one). A pool keeps a few buffers and hands them out again once the
 * message that used them is written.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];

  constructor(
    /** Smallest buffer made (so that messages of slightly different sizes share buffers). */
    private readonly minSize = 1 << 20,
    /** Buffers kept when given back; more are left to the garbage collector. */
    private readonly keep = 8,
  ) {}

  /** A buffer of at least `size` bytes (its contents are garbage). */
  take(size: number): Buffer {
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
