import { pause } from './pause.js';

/**
 * Bounded concurrency: run `fn` over `items` with at most `limit` in flight. Results keep the
 * input order. The first failure stops new work; it is thrown once the work in flight is over
 * (never leaving operations running behind the caller's back).
 */
export async function mapPool<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failed: { err: unknown } | null = null;
  const worker = async (): Promise<void> => {
    while (failed === null && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i] as T);
      } catch (err) {
        failed ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failed !== null) throw (failed as { err: unknown }).err;
  return results;
}

/** mapPool for work without results. */
export async function runPool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  await mapPool(items, limit, fn);
}

/**
 * parallel_jobs_start_batch_size / _period (Barman): workers are started `size` at a time,
 * one batch every `periodSec` seconds, so that a pool of many ssh copies does not hit sshd's
 * MaxStartups at once. Returns what each task awaits before it starts: the k-th task started
 * (k < workers: the first task of each worker) waits floor(k / size) periods, the others
 * start at once. With the defaults (10 per second) a pool of up to 10 workers never waits.
 */
export function startBatches(workers: number, size: number, periodSec: number, signal?: AbortSignal): () => Promise<void> {
  let started = 0;
  const batch = Math.max(1, size);
  return () => {
    const k = started++;
    const waitMs = k < workers ? Math.floor(k / batch) * Math.max(0, periodSec) * 1000 : 0;
    return waitMs === 0 ? Promise.resolve() : pause(waitMs, signal);
  };
}
