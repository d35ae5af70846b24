import { availableParallelism } from 'node:os';

/**
 * Compression workers worth starting: one per core, at most 2 (ssh and put-wal need CPU too).
 * Apart from compress-pool.ts so that deciding costs no worker_threads load when nothing is
 * compressed.
 */
export function defaultPoolSize(): number {
  return Math.max(1, Math.min(2, availableParallelism()));
}
