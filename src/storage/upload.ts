/**
 * Streamed upload with bounded memory: bytes written are cut into parts of `partSize`, each
 * part sent as soon as it is full with at most `jobs` parts in flight; write() waits while
 * they are, so memory stays at about (jobs + 1) × partSize whatever the object's size.
 * An object smaller than one part goes in a single put. The SHA-256 and the size of what
 * was written are returned by end(), so callers can record them for verification on restore.
 */
import { createHash, type Hash } from 'node:crypto';
import { BarmanError } from '../util/errors.js';
import { faultPoint } from '../util/fault.js';
import type { MultipartUpload, ObjectStorage, PutOptions } from './types.js';

export interface UploadOptions extends PutOptions {
  /** Part size in bytes (raised to the driver's minimum). */
  partSize: number;
  /** Parts sent at once (>= 1). */
  jobs: number;
  /** Shared bandwidth limit, bytes per second (null: none). */
  throttle?: Throttle | null;
}

export interface UploadResult {
  size: number;
  sha256: string;
  parts: number;
}

/** A byte-rate limit shared by every upload of a command (--max-bandwidth). */
export class Throttle {
  private readonly start = Date.now();
  private sent = 0;
  constructor(private readonly bytesPerSecond: number) {}

  private readonly waiting = new Set<() => void>();

  /** Wait until sending `bytes` more keeps the average rate under the limit. */
  async take(bytes: number): Promise<void> {
    this.sent += bytes;
    const due = this.start + (this.sent / this.bytesPerSecond) * 1000;
    const wait = due - Date.now();
    if (wait <= 0) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiting.delete(done);
        resolve();
      };
      const timer = setTimeout(done, wait);
      this.waiting.add(done);
    });
  }

  /** End every wait now (the uploads are being aborted). */
  cancel(): void {
    for (const done of [...this.waiting]) done();
  }
}

export class ObjectWriter {
  private readonly partSize: number;
  private readonly jobs: number;
  private readonly hash: Hash = createHash('sha256');
  private current: Buffer;
  private fill = 0;
  private parts = 0;
  private size = 0;
  private upload: MultipartUpload | null = null;
  private starting: Promise<MultipartUpload> | null = null;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly free: Buffer[] = [];
  private failure: unknown = null;
  private finished = false;
  private aborted = false;

  constructor(
    private readonly storage: ObjectStorage,
    readonly key: string,
    private readonly opts: UploadOptions,
  ) {
    const caps = storage.capabilities;
    this.partSize = Math.max(opts.partSize, caps.minPartSize);
    this.jobs = Math.max(1, opts.jobs);
    this.current = Buffer.allocUnsafe(this.partSize);
  }

  /** Bytes written so far. */
  get written(): number {
    return this.size;
  }

  /** Append bytes; resolves when the writer can take more (back-pressure). */
  async write(data: Uint8Array): Promise<void> {
    if (this.finished) throw new Error(`write after end of ${this.key}`);
    this.throwIfFailed();
    this.hash.update(data);
    this.size += data.length;
    let offset = 0;
    while (offset < data.length) {
      const n = Math.min(this.partSize - this.fill, data.length - offset);
      data instanceof Buffer
        ? data.copy(this.current, this.fill, offset, offset + n)
        : this.current.set(data.subarray(offset, offset + n), this.fill);
      this.fill += n;
      offset += n;
      if (this.fill === this.partSize) await this.flushPart();
    }
  }

  private throwIfFailed(): void {
    if (this.failure !== null) throw this.failure;
  }

  private async multipart(): Promise<MultipartUpload> {
    if (this.upload) return this.upload;
    this.starting ??= this.storage.startMultipart(this.key, this.opts);
    this.upload = await this.starting;
    return this.upload;
  }

  private async flushPart(): Promise<void> {
    const body = this.current.subarray(0, this.fill);
    const full = this.current;
    const partNumber = ++this.parts;
    if (partNumber > this.storage.capabilities.maxParts) {
      throw new BarmanError(`${this.key}: more than ${this.storage.capabilities.maxParts} parts (raise --min-chunk-size or lower --max-archive-size)`);
    }
    this.current = this.free.pop() ?? Buffer.allocUnsafe(this.partSize);
    this.fill = 0;
    const upload = await this.multipart();
    const task = (async () => {
      await this.opts.throttle?.take(body.length);
      if (this.aborted) return;
      await upload.uploadPart(partNumber, body);
      faultPoint('upload:part-uploaded');
    })().then(
      () => {
        this.inFlight.delete(task);
        if (this.free.length < 2) this.free.push(full);
      },
      (err: unknown) => {
        this.inFlight.delete(task);
        this.failure ??= err;
      },
    );
    this.inFlight.add(task);
    while (this.inFlight.size >= this.jobs) await Promise.race(this.inFlight);
    this.throwIfFailed();
  }

  /** Finish the object: the last part and the completion (or a single put when it fits one part). */
  async end(): Promise<UploadResult> {
    this.throwIfFailed();
    this.finished = true;
    const sha256 = this.hash.digest('hex');
    if (this.parts === 0) {
      await this.opts.throttle?.take(this.fill);
      await this.storage.put(this.key, this.current.subarray(0, this.fill), this.opts);
      this.current = Buffer.alloc(0);
      return { size: this.size, sha256, parts: 1 };
    }
    if (this.fill > 0) await this.flushPart();
    await Promise.all(this.inFlight);
    this.throwIfFailed();
    const upload = await this.multipart();
    await upload.complete(this.parts);
    this.current = Buffer.alloc(0);
    this.free.length = 0;
    return { size: this.size, sha256, parts: this.parts };
  }

  /** Give up: wait for the parts in flight, then abort the multipart upload (best effort). */
  async abort(): Promise<void> {
    this.finished = true;
    this.aborted = true;
    this.opts.throttle?.cancel();
    await Promise.allSettled(this.inFlight);
    const upload = this.upload ?? (this.starting ? await this.starting.catch(() => null) : null);
    await upload?.abort().catch(() => undefined);
    this.current = Buffer.alloc(0);
    this.free.length = 0;
  }
}
