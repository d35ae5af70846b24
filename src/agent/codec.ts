/**
 * Compression of pages in transit between the backup host and the agent: zstd (level set by
 * `agent_compression_level`, default 1), lz4, or none. Each PAGES message is compressed on its
 * own (at most a few hundred KiB), so either end can decode it alone; a message that does not
 * shrink travels raw. zstd goes through the library's low-level binding with reused contexts
 * and reused buffers (bufpool.ts): a fresh buffer per message costs more than the compression.
 */
import { createRequire } from 'node:module';
import { BarmanError } from '../util/errors.js';
import { BufferPool } from './bufpool.js';
import { CODEC, ProtocolError, type CodecName } from './protocol.js';

type ZstdBinding = typeof import('zstd-napi/binding.js');
type Lz4Module = typeof import('lz4-napi');
const requireCjs = createRequire(import.meta.url);
let zstdBinding: ZstdBinding | null = null;
let lz4Module: Lz4Module | null = null;
const zstd = (): ZstdBinding => (zstdBinding ??= requireCjs('zstd-napi/binding.js') as ZstdBinding);
const lz4 = (): Lz4Module => (lz4Module ??= requireCjs('lz4-napi') as Lz4Module);

export const CODEC_NAMES: readonly CodecName[] = ['zstd', 'lz4', 'none'];

export function isCodecName(v: unknown): v is CodecName {
  return typeof v === 'string' && (CODEC_NAMES as readonly string[]).includes(v);
}

/** A payload to send, and what to call once it has been written (it may live in a pooled buffer). */
export interface Encoded {
  codec: number;
  payload: Buffer;
  /** Gives the payload's buffer back to the pool; null when the payload is the caller's own buffer. */
  release: (() => void) | null;
}

export class Encoder {
  private cctx: InstanceType<ZstdBinding['CCtx']> | null = null;
  /** Its large buffers suit direct I/O: a restore reads backup files into them with O_DIRECT (restore-push.ts). */
  readonly pool = new BufferPool(1 << 20, 8, 256, true);

  constructor(
    readonly name: CodecName,
    readonly level = 1,
  ) {
    if (name === 'zstd') {
      const z = zstd();
      this.cctx = new z.CCtx();
      this.cctx.setParameter(z.CParameter.compressionLevel, level);
    }
  }

  /**
   * The payload and its codec id (CODEC.none when compression did not help: then the payload
   * is `raw` itself). A compressed payload lives in a pooled buffer: call `release` once it is
   * written (FrameWriter.send does, given it).
   */
  encode(raw: Buffer): Encoded {
    if (this.name === 'zstd' && this.cctx) {
      const out = this.pool.take(zstd().compressBound(raw.length));
      const n = this.cctx.compress2(out, raw);
      if (n < raw.length) return { codec: CODEC.zstd, payload: out.subarray(0, n), release: () => this.pool.give(out) };
      this.pool.give(out);
    } else if (this.name === 'lz4') {
      const out = lz4().compressSync(raw);
      if (out.length < raw.length) return { codec: CODEC.lz4, payload: out, release: null };
    }
    return { codec: CODEC.none, payload: raw, release: null };
  }
}

/**
 * Decodes payloads. The result of a zstd payload lives in the decoder's own buffer and is valid
 * until the next decode() on the same decoder: give each pipeline (each agent conversation) its
 * own decoder, and finish with a result (write it) before decoding the next payload.
 */
export class Decoder {
  private dctx: InstanceType<ZstdBinding['DCtx']> | null = null;
  private scratch: Buffer | null = null;
  /** Large results in buffers that suit direct I/O: the backup host writes them to disk with O_DIRECT (receive.ts). */
  private readonly pool = new BufferPool(1 << 20, 32, 256, true);

  /**
   * Like decode(), into a buffer of its own (a copy, for a payload that travelled raw: the
   * message it came in may be borrowed) that stays valid until `release` is called.
   */
  decodeOwned(codec: number, payload: Buffer, rawLen: number): { data: Buffer; release: () => void } {
    // lz4 makes its own buffer; an unknown codec is refused by decode().
    if (codec !== CODEC.zstd && codec !== CODEC.none) return { data: this.decode(codec, payload, rawLen), release: () => undefined };
    if (codec === CODEC.none) this.decode(codec, payload, rawLen);
    const buf = this.pool.take(rawLen);
    const data = buf.subarray(0, rawLen);
    if (codec === CODEC.none) payload.copy(data);
    else this.zstdInto(data, payload);
    return { data, release: () => this.pool.give(buf) };
  }

  private zstdInto(out: Buffer, payload: Buffer): void {
    try {
      this.dctx ??= new (zstd().DCtx)();
      const n = this.dctx.decompress(out, payload);
      if (n !== out.length) throw new Error(`${n} bytes decoded where ${out.length} were announced`);
    } catch (err) {
      throw new ProtocolError(`page data that does not decode (${err instanceof Error ? err.message : String(err)})`);
    }
  }

  /** Decode one payload into exactly `rawLen` bytes; a payload that does not decode is a protocol error. */
  decode(codec: number, payload: Buffer, rawLen: number): Buffer {
    if (codec === CODEC.none) {
      if (payload.length !== rawLen) throw new ProtocolError(`page data of ${payload.length} bytes where ${rawLen} were announced`);
      return payload;
    }
    let out: Buffer;
    try {
      if (codec === CODEC.zstd) {
        this.dctx ??= new (zstd().DCtx)();
        if (!this.scratch || this.scratch.length < rawLen) this.scratch = Buffer.allocUnsafeSlow(Math.max(rawLen, 1 << 20));
        out = this.scratch.subarray(0, rawLen);
        const n = this.dctx.decompress(out, payload);
        if (n !== rawLen) throw new Error(`${n} bytes decoded`);
      } else if (codec === CODEC.lz4) {
        out = lz4().uncompressSync(payload);
      } else {
        throw new Error(`unknown codec ${codec}`);
      }
    } catch (err) {
      throw new ProtocolError(`page data that does not decode (${err instanceof Error ? err.message : String(err)})`);
    }
    if (out.length !== rawLen) throw new ProtocolError(`page data of ${out.length} bytes where ${rawLen} were announced`);
    return out;
  }
}

export function requireCodec(name: string): CodecName {
  if (!isCodecName(name)) throw new BarmanError(`unknown agent compression '${name}' (expected ${CODEC_NAMES.join(', ')})`);
  return name;
}
