/**
 * The agent's hashing thread (hash-thread.ts starts it): SHA-256 of the file being read and the
 * page hashes of each chunk, over read buffers shared with the main thread, while the main
 * thread reads ahead, compresses and sends. Messages are handled in the order they come.
 */
import { createHash, type Hash } from 'node:crypto';
import * as fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { FILL_PAGES, HASH_BYTES, PAGE_SIZE, PageHasher } from './pages.js';
import type { HashReply, HashRequest } from './hash-thread.js';
import { directReadLength, directWriteGoesOn, directWriteHead } from './direct-io.js';
import { alignedBuffer } from '../util/aligned.js';

type FillRequest = Extract<HashRequest, { t: 'fill' }>;

const { seed, slots } = workerData as { seed: string; slots: SharedArrayBuffer[] };
const port = parentPort;
if (!port) throw new Error('hash-worker.js runs as a worker thread');
const hasher = await PageHasher.create(seed);
let sha: Hash = createHash('sha256');

/** The buffer of fills through direct I/O (FILL_PAGES pages: one request per task; made on first use). */
let directBuf: Buffer | null = null;

/** Read `want` bytes at `pos` into `buf` (fewer at the end of the file); direct first if given, the ordinary descriptor for what it leaves. */
function readPiece(m: FillRequest, buf: Buffer, want: number, pos: number): number {
  let n = 0;
  const one = m.direct ? directReadLength(want, pos, true, buf.length) : 0;
  if (m.direct && one > 0) n = Math.min(want, fs.readSync(m.direct.from, buf, 0, one, pos));
  while (n < want) {
    const r = fs.readSync(m.from, buf, n, want - n, pos + n);
    if (r === 0) break;
    n += r;
  }
  return n;
}

/** Write `n` bytes of `buf` at `pos`: the aligned part directly if a direct descriptor is given, the rest through the ordinary one. */
function writePiece(m: FillRequest, buf: Buffer, n: number, pos: number): void {
  let w = 0;
  const head = m.direct ? directWriteHead(n, pos, true) : 0;
  while (m.direct && w < head) {
    const r = fs.writeSync(m.direct.to, buf, w, head - w, pos + w);
    w += r;
    if (!directWriteGoesOn(r)) break;
  }
  while (w < n) w += fs.writeSync(m.to, buf, w, n - w, pos + w);
}

/**
 * Copy page ranges of a basis file (fd `from`) into the file being built (fd `to`), through one
 * buffer, every page checked against its hash in `map` (the basis's page map from page
 * `mapFirst` on) before it is written: system calls made here, one after the other, rather
 * than a round trip through the main thread for each piece. With `direct` descriptors (the same
 * files opened with O_DIRECT: direct-io.ts) the data bypasses the page cache.
 */
function fill(m: FillRequest): HashReply {
  const buf = m.direct ? (directBuf ??= alignedBuffer(FILL_PAGES * PAGE_SIZE)) : Buffer.from(slots[0] as SharedArrayBuffer);
  const per = Math.floor(buf.length / PAGE_SIZE);
  let bytes = 0;
  for (const [a, b] of m.gaps) {
    for (let p = a; p < b; p += per) {
      const q = Math.min(b, p + per);
      const want = Math.min(q * PAGE_SIZE, m.basisSize) - p * PAGE_SIZE;
      const n = readPiece(m, buf, want, p * PAGE_SIZE);
      if (n < want) return { t: 'filled', bytes, bad: -1 };
      const hashes = hasher.pages(buf.subarray(0, n));
      for (let i = 0; i < q - p; i++) {
        const o = (p + i - m.mapFirst) * HASH_BYTES;
        if (Buffer.compare(hashes.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES), m.map.subarray(o, o + HASH_BYTES)) !== 0) return { t: 'filled', bytes, bad: p + i };
      }
      writePiece(m, buf, n, p * PAGE_SIZE);
      bytes += n;
    }
  }
  return { t: 'filled', bytes, bad: null };
}

port.on('message', (m: HashRequest) => {
  let reply: HashReply;
  try {
    if (m.t === 'fill') {
      reply = fill(m);
    } else if (m.t === 'chunk') {
      const data = Buffer.from(slots[m.slot] as SharedArrayBuffer, 0, m.len);
      if (m.kind !== 'pages') sha.update(data);
      reply = { t: 'hashes', hashes: m.kind === 'sha' ? new Uint8Array(0) : hasher.pages(data) };
    } else {
      reply = { t: 'sha', hex: sha.digest('hex') };
      sha = createHash('sha256');
    }
  } catch (err) {
    sha = createHash('sha256');
    reply = { t: 'error', message: err instanceof Error ? err.message : String(err) };
  }
  port.postMessage(reply);
});
