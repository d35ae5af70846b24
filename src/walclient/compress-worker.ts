/**
 * Worker thread of CompressPool (compress-pool.ts): compresses one WAL file and computes the
 * checksum of what will be sent, off the thread that feeds ssh. Messages are PackRequest in,
 * PackReply out (types in compress-pool.ts); buffers travel as transferred ArrayBuffers.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { parentPort } from 'node:worker_threads';
import { errorMessage } from '../util/errors.js';
import { compressBuffer, resolveCompressionLevel } from '../wal/compression.js';
import type { PackReply, PackRequest } from './compress-pool.js';

type ZstdBinding = typeof import('zstd-napi/binding.js');
const requireCjs = createRequire(import.meta.url);

/**
 * zstd through the library's low-level binding, with one output buffer kept for the life of
 * the worker: zstd-napi's compress() allocates a fresh compressBound-sized (16 MiB) buffer per
 * call, whose page faults cost ~10% of a level-1 compression. Same ZSTD_compress2 call with
 * the same level, hence the same frame (content size in its header) as compressBuffer.
 */
class ZstdCompressor {
  private readonly zstd = requireCjs('zstd-napi/binding') as ZstdBinding;
  private readonly cctx = new this.zstd.CCtx();
  private level: number | null = null;
  private scratch: Buffer | null = null;

  compress(data: Buffer, level: number): Buffer {
    if (this.level !== level) {
      this.cctx.setParameter(this.zstd.CParameter.compressionLevel, level);
      this.level = level;
    }
    const bound = this.zstd.compressBound(data.length);
    if (!this.scratch || this.scratch.length < bound) this.scratch = Buffer.allocUnsafeSlow(bound);
    const n = this.cctx.compress2(this.scratch, data);
    const out = Buffer.allocUnsafeSlow(n);
    this.scratch.copy(out, 0, 0, n);
    return out;
  }
}

let zstdCompressor: ZstdCompressor | null = null;

async function compress(data: Buffer, req: PackRequest): Promise<Buffer> {
  if (req.compression === 'zstd') {
    zstdCompressor ??= new ZstdCompressor();
    return zstdCompressor.compress(data, resolveCompressionLevel('zstd', req.level) ?? 4);
  }
  return req.compression ? compressBuffer(data, req.compression, req.level) : data;
}

/**
 * Whether `b`'s ArrayBuffer may be transferred: its own (not Node's shared pool of small
 * buffers) and mostly used (transferring a large buffer for a small slice wastes memory).
 */
function transferable(b: Buffer): boolean {
  return b.buffer instanceof ArrayBuffer && b.buffer.byteLength > Buffer.poolSize && b.byteLength * 2 >= b.buffer.byteLength;
}

async function pack(req: PackRequest): Promise<PackReply> {
  const input = Buffer.from(req.buffer, req.offset, req.length);
  const out = await compress(input, req);
  const digest = createHash(req.checksum).update(out).digest('hex');
  // Native libraries may hand back memory that is shared or not detachable: copy it then.
  const owned = transferable(out) ? out : Buffer.from(out);
  return { id: req.id, ok: true, buffer: owned.buffer as ArrayBuffer, offset: owned.byteOffset, length: owned.byteLength, digest };
}

const port = parentPort;
if (port) {
  port.on('message', (req: PackRequest) => {
    pack(req).then(
      (reply) => {
        try {
          port.postMessage(reply, reply.ok ? [reply.buffer] : []);
        } catch {
          // Not transferable after all (external memory): a copy is slower but correct.
          port.postMessage(reply);
        }
      },
      (err: unknown) => {
        const reply: PackReply = { id: req.id, ok: false, error: errorMessage(err) };
        port.postMessage(reply);
      },
    );
  });
}
