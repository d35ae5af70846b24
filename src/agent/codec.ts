/**
 * Compression of pages in transit between the backup host and the agent: zstd (level set by
 * `agent_compression_level`, default 1), lz4, or none. Each PAGES message is compressed on its
 * own (at most a few hundred KiB), so either end can decode it alone; a message that does not
 * shrink travels raw. zstd goes through the library's low-level binding with reused contexts
 * and scratch buffers: a fresh compressBound-sized buffer per call costs page faults.
 */
import { createRequire } from 'node:module';
import { BarmanError } from '../util/errors.js';
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

export class Encoder {
  private cctx: InstanceType<ZstdBinding['CCtx']> | null = null;
  private scratch: Buffer | null = null;

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

  /** The payload and its codec id (CODEC.none when compression did not help). */
  encode(raw: Buffer): { codec: number; payload: Buffer } {
    if (this.name === 'zstd' && this.cctx) {
      const bound = zstd().compressBound(raw.length);
      if (!this.scratch || this.scratch.length < bound) this.scratch = Buffer.allocUnsafeSlow(Math.max(bound, 1 << 20));
      const n = this.cctx.compress2(this.scratch, raw);
      // Copied out: the scratch buffer is reused for the next message while this one is queued.
      if (n < raw.length) return { codec: CODEC.zstd, payload: Buffer.from(this.scratch.subarray(0, n)) };
    } else if (this.name === 'lz4') {
      const out = lz4().compressSync(raw);
      if (out.length < raw.length) return { codec: CODEC.lz4, payload: out };
    }
    return { codec: CODEC.none, payload: raw };
  }
}

export class Decoder {
  private dctx: InstanceType<ZstdBinding['DCtx']> | null = null;

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
        out = Buffer.allocUnsafe(rawLen);
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
