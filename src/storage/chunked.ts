/**
 * A storage whose single puts switch to a block-by-block upload above a size: the Azure tuning
 * options of barman-cloud-wal-archive (--max-single-put-size, --max-block-size,
 * --max-concurrency) applied through the one multipart writer.
 */
import type { ObjectStorage, PutOptions } from './types.js';
import { ObjectWriter } from './upload.js';

export interface ChunkedPutOptions {
  maxSinglePut: number;
  blockSize: number;
  concurrency: number;
}

export function chunkedPuts(storage: ObjectStorage, o: ChunkedPutOptions): ObjectStorage {
  return new Proxy(storage, {
    get(target, prop, receiver) {
      if (prop !== 'put') return Reflect.get(target, prop, receiver) as unknown;
      return async (key: string, body: Buffer, opts: PutOptions = {}): Promise<void> => {
        if (body.length <= o.maxSinglePut) return target.put(key, body, opts);
        const w = new ObjectWriter(target, key, { ...opts, partSize: o.blockSize, jobs: o.concurrency });
        try {
          await w.write(body);
          await w.end();
        } catch (err) {
          await w.abort();
          throw err;
        }
      };
    },
  });
}
