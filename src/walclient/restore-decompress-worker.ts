/**
 * Worker thread of barman-wal-restore's batch receiver (restore-decompress.ts): decompresses a
 * received member and writes the plain file, so that the main thread keeps reading ssh's pipe
 * meanwhile (a zstd segment takes ~15 ms of CPU: on the main thread ssh would stall that long).
 */
import { promises as fsp } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { errorMessage } from '../util/errors.js';
import { FILE_MODE } from '../util/fsutil.js';
import { decompressBuffer, type CompressionName } from '../wal/compression.js';

export interface DecompressJob {
  id: number;
  data: Uint8Array;
  algo: CompressionName;
  out: string;
  sync: boolean;
}

export type DecompressReply = { id: number; ok: true } | { id: number; ok: false; error: string };

async function runJob(job: DecompressJob): Promise<void> {
  const plain = await decompressBuffer(job.data, job.algo);
  const fh = await fsp.open(job.out, 'w', FILE_MODE);
  try {
    await fh.writeFile(plain);
    if (job.sync) await fh.sync();
  } finally {
    await fh.close();
  }
}

parentPort?.on('message', (job: DecompressJob) => {
  runJob(job).then(
    () => parentPort?.postMessage({ id: job.id, ok: true } satisfies DecompressReply),
    (err: unknown) => parentPort?.postMessage({ id: job.id, ok: false, error: errorMessage(err) } satisfies DecompressReply),
  );
});
