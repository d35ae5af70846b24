/**
 * The barman-ts agent protocol: what the backup host and `barman-agent` (on the database host,
 * or on the recovery host for restores) say to each other over the agent's stdin/stdout,
 * through the administrator's ssh command.
 *
 * The agent first writes GREETING (16 bytes), so that text printed by a login script, a shell
 * error (`barman-agent: not found`) or any other program answering in its place is recognised
 * at once and shown to the user; then only frames follow, in both directions:
 *
 *   u32 big-endian body length | u8 type | body
 *
 * The first frame each way is HELLO (JSON: protocol version and barman-ts version): both ends
 * refuse to go on with another protocol version. Bodies are JSON for control messages, binary
 * for pages (see encodePages). A body is at most MAX_FRAME bytes: a larger announced length
 * means the stream is not this protocol.
 */
import type { Readable, Writable } from 'node:stream';
import { BarmanError } from '../util/errors.js';

/** Bumped whenever a message changes meaning or layout. */
export const PROTOCOL_VERSION = 3;
export const GREETING = Buffer.from('BARMAN-TS-AGENT\n', 'latin1');
export const MAX_FRAME = 64 * 1024 * 1024;
const HEADER = 5;

/** Frame types. Requests go from the backup host to the agent, replies the other way. */
export const T = {
  HELLO: 1,
  /** Agent → host: the request failed; JSON { message }. The agent stays usable unless it exits. */
  ERROR: 15,
  /** Host → agent: JSON { roots: [{ path, excludes }] }; replies ENTRIES*, LIST_END. */
  LIST: 16,
  ENTRIES: 17,
  LIST_END: 18,
  /** Host → agent: readRequest (JSON + basis page map); replies PAGES*, READ_END. */
  READ: 32,
  /** Either way: pages of one file (encodePages). */
  PAGES: 33,
  READ_END: 34,
  /**
   * Agent → host, during a READ with a basis map: every page before `page` was read, and those
   * not sent match the basis (encodePassed). The backup host fills them in from its basis copy
   * as the read goes on, rather than after it.
   */
  PASSED: 35,
  /**
   * Host → agent: readPagesRequest (JSON { id, path, from } + the page ranges to read, as
   * encodeRanges): the listed pages, then every page from `from` to the end of the file;
   * replies PAGES*, PASSED, READ_END (without a SHA-256: the backup host computes it).
   */
  READ_PAGES: 36,
  /** Host → agent: writeRequest (JSON + the backup's page map for a delta); replies NEED (delta only). */
  WRITE: 48,
  /** Agent → host: the page ranges a delta write needs (encodeNeed). */
  NEED: 49,
  /** Host → agent: JSON { id }: every page of the file was sent; replies WRITTEN. */
  WRITE_END: 50,
  WRITTEN: 51,
  /** Host → agent: prepare a destination tree (directories, links, removal of extra entries); replies TREE_DONE. */
  TREE: 64,
  TREE_DONE: 65,
  /** Host → agent: directory modes and times, then durability; replies FINISH_DONE. */
  FINISH: 66,
  FINISH_DONE: 67,
  /** Host → agent: exit now (status 0). */
  BYE: 127,
} as const;

export interface Frame {
  type: number;
  body: Buffer;
}

export interface Hello {
  protocol: number;
  version: string;
  /** Agent only: its process ID (for logs) and the role it was asked for. */
  pid?: number;
}

/** What the backup host adds to its HELLO: how pages travel and are hashed in this conversation. */
export interface HostHello extends Hello {
  codec: string;
  level: number;
  /** Seed of the page hashes (16 hex digits). */
  seed: string;
}

/** The stream is not speaking this protocol (garbage, truncated frame, wrong greeting). */
export class ProtocolError extends BarmanError {}

/** Printable excerpt of unexpected bytes, for one-line error messages. */
export function excerpt(bytes: Buffer, max = 120): string {
  const text = bytes.subarray(0, max).toString('latin1');
  const line = text.split(/\r?\n/).find((l) => l.trim() !== '') ?? text;
  return JSON.stringify(line.replace(/[^\x20-\x7e]/g, '?').slice(0, max));
}

export function jsonBody(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), 'utf8');
}

export function parseJson<X>(body: Buffer, what: string): X {
  try {
    return JSON.parse(body.toString('utf8')) as X;
  } catch {
    throw new ProtocolError(`malformed ${what} message (${excerpt(body)})`);
  }
}

/** A JSON header followed by binary bytes: u32 length of the JSON | JSON | bytes. */
export function encodeWithBinary(value: unknown, bin: Buffer | null): Buffer[] {
  const json = jsonBody(value);
  const len = Buffer.allocUnsafe(4);
  len.writeUInt32BE(json.length, 0);
  return bin && bin.length > 0 ? [len, json, bin] : [len, json];
}

export function decodeWithBinary<X>(body: Buffer, what: string): { value: X; bin: Buffer } {
  if (body.length < 4) throw new ProtocolError(`truncated ${what} message`);
  const n = body.readUInt32BE(0);
  if (4 + n > body.length) throw new ProtocolError(`truncated ${what} message`);
  return { value: parseJson<X>(body.subarray(4, 4 + n), what), bin: body.subarray(4 + n) };
}

/** Codec of a PAGES payload. */
export const CODEC = { none: 0, zstd: 1, lz4: 2 } as const;
export type CodecName = keyof typeof CODEC;
export const HASH_BYTES = 16;
const PAGES_HEADER = 17;

export interface PagesHeader {
  /** File the pages belong to (the id of its READ or WRITE request). */
  id: number;
  firstPage: number;
  count: number;
  codec: number;
  /** Bytes of the pages once decoded (the last page of a file may be short). */
  rawLen: number;
  /** `count` page hashes of HASH_BYTES each, over the decoded bytes. */
  hashes: Buffer;
  payload: Buffer;
}

export function encodePages(h: Omit<PagesHeader, 'payload' | 'hashes'>, hashes: Buffer, payload: Buffer): Buffer[] {
  const head = Buffer.allocUnsafe(PAGES_HEADER);
  head.writeUInt32BE(h.id, 0);
  head.writeUInt32BE(h.firstPage, 4);
  head.writeUInt32BE(h.count, 8);
  head.writeUInt8(h.codec, 12);
  head.writeUInt32BE(h.rawLen, 13);
  return [head, hashes, payload];
}

export function decodePages(body: Buffer): PagesHeader {
  if (body.length < PAGES_HEADER) throw new ProtocolError('truncated pages message');
  const count = body.readUInt32BE(8);
  const hashEnd = PAGES_HEADER + count * HASH_BYTES;
  if (count === 0 || hashEnd > body.length) throw new ProtocolError('malformed pages message');
  return {
    id: body.readUInt32BE(0),
    firstPage: body.readUInt32BE(4),
    count,
    codec: body.readUInt8(12),
    rawLen: body.readUInt32BE(13),
    hashes: body.subarray(PAGES_HEADER, hashEnd),
    payload: body.subarray(hashEnd),
  };
}

export function encodePassed(id: number, page: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeUInt32BE(id, 0);
  b.writeUInt32BE(page, 4);
  return b;
}

export function decodePassed(body: Buffer): { id: number; page: number } {
  if (body.length !== 8) throw new ProtocolError('malformed passed message');
  return { id: body.readUInt32BE(0), page: body.readUInt32BE(4) };
}

/** Page ranges [first, first + count) of one file. */
export type PageRange = [first: number, count: number];

/** Page ranges as pairs of u32 (first, count). */
export function encodeRanges(ranges: readonly PageRange[]): Buffer {
  const b = Buffer.allocUnsafe(ranges.length * 8);
  ranges.forEach(([first, count], i) => {
    b.writeUInt32LE(first, i * 8);
    b.writeUInt32LE(count, i * 8 + 4);
  });
  return b;
}

/** encodeRanges undone: ranges in increasing order, not overlapping, none empty. */
export function decodeRanges(b: Buffer): PageRange[] {
  if (b.length % 8 !== 0) throw new ProtocolError(`page ranges of ${b.length} bytes`);
  const out: PageRange[] = [];
  let end = 0;
  for (let i = 0; i < b.length; i += 8) {
    const first = b.readUInt32LE(i);
    const count = b.readUInt32LE(i + 4);
    if (count === 0 || first < end) throw new ProtocolError('page ranges out of order');
    out.push([first, count]);
    end = first + count;
  }
  return out;
}

export function encodeNeed(id: number, ranges: readonly PageRange[]): Buffer {
  const b = Buffer.allocUnsafe(8 + ranges.length * 8);
  b.writeUInt32BE(id, 0);
  b.writeUInt32BE(ranges.length, 4);
  ranges.forEach(([first, count], i) => {
    b.writeUInt32BE(first, 8 + i * 8);
    b.writeUInt32BE(count, 12 + i * 8);
  });
  return b;
}

export function decodeNeed(body: Buffer): { id: number; ranges: PageRange[] } {
  if (body.length < 8) throw new ProtocolError('truncated need message');
  const n = body.readUInt32BE(4);
  if (body.length !== 8 + n * 8) throw new ProtocolError('malformed need message');
  const ranges: PageRange[] = [];
  for (let i = 0; i < n; i++) ranges.push([body.readUInt32BE(8 + i * 8), body.readUInt32BE(12 + i * 8)]);
  return { id: body.readUInt32BE(0), ranges };
}

/**
 * Writes frames to a stream, waiting for 'drain' when it is full (so a slow reader on the other
 * side of ssh holds the writer back instead of filling this process's memory). Counts bytes.
 */
export class FrameWriter {
  bytes = 0;
  private failed: Error | null = null;
  private drainWaiters: (() => void)[] = [];

  constructor(private readonly out: Writable) {
    out.on('error', (err) => this.fail(err));
    out.on('close', () => this.fail(new Error('the stream was closed')));
    out.on('drain', () => this.wake());
  }

  private fail(err: Error): void {
    this.failed ??= err;
    this.wake();
  }

  private wake(): void {
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const f of w) f();
  }

  /** Queue one frame; resolves once the stream can take more. */
  send(type: number, ...parts: Buffer[]): Promise<void> {
    return this.sendThen(null, type, ...parts);
  }

  /**
   * Queue one frame whose parts live in a pooled buffer: `release` is called once the stream
   * has written them (or failed), never before. Resolves once the stream can take more.
   */
  async sendThen(release: (() => void) | null, type: number, ...parts: Buffer[]): Promise<void> {
    if (this.failed) {
      release?.();
      throw this.failed;
    }
    const len = parts.reduce((n, p) => n + p.length, 0);
    if (len > MAX_FRAME) {
      release?.();
      throw new BarmanError(`internal error: frame of ${len} bytes is too large`);
    }
    const head = Buffer.allocUnsafe(HEADER);
    head.writeUInt32BE(len, 0);
    head.writeUInt8(type, 4);
    this.out.cork();
    const chunks = [head, ...parts.filter((p) => p.length > 0)];
    let ok = true;
    // The callback of the last chunk runs once every chunk of the frame was written (or failed).
    chunks.forEach((c, i) => (ok = i === chunks.length - 1 && release ? this.out.write(c, () => release()) : this.out.write(c)));
    this.out.uncork();
    this.bytes += HEADER + len;
    if (!ok) {
      await new Promise<void>((resolve) => {
        this.drainWaiters.push(resolve);
        if (this.failed || !this.out.writableNeedDrain) this.wake();
      });
      if (this.failed) throw this.failed;
    }
  }

  json(type: number, value: unknown): Promise<void> {
    return this.send(type, jsonBody(value));
  }
}

/**
 * Reads the greeting, then frames, from a stream, holding at most about `highWater` bytes
 * before it pauses the stream (the writer on the other side then blocks).
 */
export class FrameReader {
  bytes = 0;
  private chunks: Buffer[] = [];
  /** Index of the first unconsumed chunk in `chunks`. */
  private head = 0;
  private buffered = 0;
  private ended = false;
  private error: Error | null = null;
  private waiter: (() => void) | null = null;
  /** Where borrowed frames spread over several chunks are gathered. */
  private assembly: Buffer | null = null;

  constructor(
    private readonly input: Readable,
    private readonly highWater = 16 * 1024 * 1024,
  ) {
    input.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.bytes += chunk.length;
      if (this.buffered >= this.highWater) input.pause();
      this.wake();
    });
    input.on('end', () => {
      this.ended = true;
      this.wake();
    });
    input.on('error', (err) => {
      this.error ??= err;
      this.wake();
    });
    input.on('close', () => {
      this.ended = true;
      this.wake();
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /**
   * Take exactly n buffered bytes (n <= buffered). With `into`, bytes spread over several
   * chunks are gathered there (instead of a new buffer).
   */
  private take(n: number, into?: Buffer): Buffer {
    this.buffered -= n;
    const first = this.chunks[this.head] as Buffer;
    if (first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.dropFirst();
      else this.chunks[this.head] = first.subarray(n);
      return out;
    }
    const out = into ? into.subarray(0, n) : Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const c = this.chunks[this.head] as Buffer;
      const k = Math.min(c.length, n - got);
      c.copy(out, got, 0, k);
      got += k;
      if (k === c.length) this.dropFirst();
      else this.chunks[this.head] = c.subarray(k);
    }
    return out;
  }

  /** Consume the first chunk; the array is compacted now and then (shift() is linear). */
  private dropFirst(): void {
    this.head++;
    if (this.head === this.chunks.length) {
      this.chunks = [];
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
  }

  private peek(n: number): Buffer {
    const parts: Buffer[] = [];
    let got = 0;
    for (let i = this.head; i < this.chunks.length; i++) {
      const c = this.chunks[i] as Buffer;
      if (got >= n) break;
      parts.push(c.subarray(0, n - got));
      got += Math.min(c.length, n - got);
    }
    return Buffer.concat(parts, got);
  }

  /** Wait until `n` bytes are buffered; false when the stream ended first. */
  private async fill(n: number): Promise<boolean> {
    while (this.buffered < n) {
      if (this.error) throw this.error;
      if (this.ended) return false;
      if (this.input.isPaused()) this.input.resume();
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
    if (this.buffered < this.highWater && this.input.isPaused()) this.input.resume();
    return true;
  }

  /** Everything buffered so far (for error messages), without consuming it. */
  pending(max = 200): Buffer {
    return this.peek(Math.min(max, this.buffered));
  }

  /**
   * Consume the greeting. Throws ProtocolError quoting what came instead; null when the stream
   * ended before a single byte arrived (the caller then reports how the agent exited).
   */
  async greeting(): Promise<true | null> {
    const ok = await this.fill(GREETING.length);
    const got = this.peek(GREETING.length);
    if (!ok && got.length === 0) return null;
    if (!got.equals(GREETING.subarray(0, got.length)) || !ok) {
      if (!got.equals(GREETING.subarray(0, got.length))) {
        // Let a bit more arrive so the message shows a whole line.
        await Promise.race([this.fill(GREETING.length + 80).catch(() => false), new Promise((r) => setTimeout(r, 100).unref())]);
      }
      throw new ProtocolError(`it does not speak the barman-ts agent protocol: its output starts with ${excerpt(this.pending())}`);
    }
    this.take(GREETING.length);
    return true;
  }

  /**
   * The next frame, or null at the end of the stream (between frames). A `borrowed` frame's
   * body may live in this reader's own buffer: it is valid until the next call of next() only
   * (page messages, handled one after the other, without a fresh buffer each).
   */
  async next(borrowed = false): Promise<Frame | null> {
    if (!(await this.fill(HEADER))) {
      if (this.buffered > 0) throw new ProtocolError('the stream ended in the middle of a message');
      return null;
    }
    const head = this.peek(HEADER);
    const len = head.readUInt32BE(0);
    if (len > MAX_FRAME) throw new ProtocolError(`unexpected bytes instead of a message: ${excerpt(this.pending())}`);
    if (!(await this.fill(HEADER + len))) throw new ProtocolError('the stream ended in the middle of a message');
    this.take(HEADER);
    if (borrowed && len > 0 && (this.assembly?.length ?? 0) < len) this.assembly = Buffer.allocUnsafeSlow(Math.max(len, 1 << 20));
    return { type: head.readUInt8(4), body: len === 0 ? Buffer.alloc(0) : this.take(len, borrowed ? (this.assembly ?? undefined) : undefined) };
  }
}
