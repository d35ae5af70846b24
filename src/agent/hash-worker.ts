/**
 * The agent's hashing thread (hash-thread.ts starts it): SHA-256 of the file being read and the
 * page hashes of each chunk, over read buffers shared with the main thread, while the main
 * thread reads ahead, compresses and sends. Messages are handled in the order they come.
 */
import { createHash, type Hash } from 'node:crypto';
import * as fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { HASH_BYTES, PAGE_SIZE, PageHasher } from './pages.js';
import type { HashReply, HashRequest } from './hash-thread.js';

const { seed, slots } = workerData as { seed: string; slots: SharedArrayBuffer[] };
const port = parentPort;
if (!port) throw new Error('hash-worker.js runs as a worker thread');
const hasher = await PageHasher.create(seed);
let sha: Hash = createHash('sha256');

/**
 * Copy page ranges of a basis file (fd `from`) into the file being built (fd `to`), through the
 * first read buffer, every page checked against its hash in `map` (the basis's page map from
 * page `mapFirst` on) before it is written: system calls made here, one after the other, rather
 * than a round trip through the main thread for each piece.
 */
function fill(m: Extract<HashRequest, { t: 'fill' }>): HashReply {
  const buf = Buffer.from(slots[0] as SharedArrayBuffer);
  const per = Math.floor(buf.length / PAGE_SIZE);
  let bytes = 0;
  for (const [a, b] of m.gaps) {
    for (let p = a; p < b; p += per) {
      const q = Math.min(b, p + per);
      const want = Math.min(q * PAGE_SIZE, m.basisSize) - p * PAGE_SIZE;
      let n = 0;
      while (n < want) {
        const r = fs.readSync(m.from, buf, n, want - n, p * PAGE_SIZE + n);
        if (r === 0) break;
        n += r;
      }
      if (n < want) return { t: 'filled', bytes, bad: -1 };
      const hashes = hasher.pages(buf.subarray(0, n));
      for (let i = 0; i < q - p; i++) {
        const o = (p + i - m.mapFirst) * HASH_BYTES;
        if (Buffer.compare(hashes.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES), m.map.subarray(o, o + HASH_BYTES)) !== 0) return { t: 'filled', bytes, bad: p + i };
      }
      let w = 0;
      while (w < n) w += fs.writeSync(m.to, buf, w, n - w, p * PAGE_SIZE + w);
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
