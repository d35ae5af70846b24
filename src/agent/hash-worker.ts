/**
 * The agent's hashing thread (hash-thread.ts starts it): SHA-256 of the file being read and the
 * page hashes of each chunk, over read buffers shared with the main thread, while the main
 * thread reads ahead, compresses and sends. Messages are handled in the order they come.
 */
import { createHash, type Hash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { PageHasher } from './pages.js';
import type { HashReply, HashRequest } from './hash-thread.js';

const { seed, slots } = workerData as { seed: string; slots: SharedArrayBuffer[] };
const port = parentPort;
if (!port) throw new Error('hash-worker.js runs as a worker thread');
const hasher = await PageHasher.create(seed);
let sha: Hash = createHash('sha256');

port.on('message', (m: HashRequest) => {
  let reply: HashReply;
  try {
    if (m.t === 'chunk') {
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
