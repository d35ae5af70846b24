/**
 * A delta restore into directories of this host (transfer_method = agent, `recover
 * --delta-restore` without --remote-ssh-command): the backup and the destination are both
 * here, so no agent process and no page travels through a pipe. Threads of this process
 * (delta-worker.ts, `workers` of them) compare each destination file with its backup copy,
 * chunk by chunk, and write only the pages that differ; large files are cut into segments that
 * the threads share, so one large table does not hold the restore to one core.
 *
 * What the backup does not have is removed, except the protected paths (logs, WAL, ...), as a
 * remote delta restore does (serve-write.ts: prepareTree): the result is the backup's files,
 * byte for byte, as a full restore writes them.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { BarmanError } from '../util/errors.js';
import { logger } from '../util/log.js';
import type { DeltaItem, DeltaReply, DeltaRequest } from './delta-worker.js';
import { setFileAttributes } from './hash-thread.js';
import { HASH_BYTES, PAGE_SIZE, pageCount } from './pages.js';
import type { PushStats, PushTree } from './restore-push.js';
import { prepareTree, setDirAttributes } from './serve-write.js';
import type { StoreReader } from './store.js';

const log = logger('agent.restore');

/** Pages of one segment of a large file (8 MiB): the unit the threads share. */
export const SEGMENT_PAGES = 1024;
/** Small files handed to a thread at once (fewer messages between the threads). */
const BATCH_FILES = 64;
const BATCH_BYTES = 4 * 1024 * 1024;
/** Tasks given to each thread ahead of its answers. */
const AHEAD = 2;

export interface LocalDeltaOptions {
  workers: number;
  /** The backup's agent metadata (page maps), if it has any: then only differing pages of the backup are read. */
  store: StoreReader | null;
  onProgress?: (done: number, total: number) => void;
}

interface FileState {
  dest: string;
  size: number;
  mode: number;
  mtimeMs: number;
  /** Segments not done yet (files cut in several). */
  left: number;
}

interface Task {
  items: DeltaItem[];
  files: FileState[];
  bytes: number;
}

/** The tasks of a restore: segments of large files, batches of small ones, largest first. */
export async function planDelta(trees: readonly PushTree[], store: StoreReader | null): Promise<{ tasks: Task[]; pages: number; files: number; bytes: number }> {
  const jobs: { tree: PushTree; rel: string; size: number; mode: number; mtimeMs: number }[] = [];
  for (const tree of trees) for (const e of tree.scan.entries) if (e.kind === 'file') jobs.push({ tree, rel: e.rel, size: e.size, mode: e.mode, mtimeMs: e.mtimeMs });
  jobs.sort((a, b) => b.size - a.size);
  const tasks: Task[] = [];
  let batch: Task | null = null;
  let pages = 0;
  let bytes = 0;
  for (const j of jobs) {
    const n = pageCount(j.size);
    pages += n;
    bytes += j.size;
    let map: Buffer | null = null;
    if (store && j.tree.storePrefix) {
      const rec = store.files.get(`${j.tree.storePrefix}/${j.rel}`);
      if (rec && rec.s === j.size && rec.n === n) map = await store.map(rec);
    }
    const dest = path.join(j.tree.dest, j.rel);
    const src = path.join(j.tree.scan.root, j.rel);
    const file: FileState = { dest, size: j.size, mode: j.mode, mtimeMs: j.mtimeMs, left: 0 };
    const mapOf = (first: number, end: number) => (map ? new Uint8Array(map.subarray(first * HASH_BYTES, end * HASH_BYTES)) : null);
    if (n > SEGMENT_PAGES) {
      for (let first = 0; first < n; first += SEGMENT_PAGES) {
        const end = Math.min(n, first + SEGMENT_PAGES);
        file.left += 1;
        tasks.push({ items: [{ dest, src, size: j.size, first, end, map: mapOf(first, end), attrs: null }], files: [file], bytes: Math.min(end * PAGE_SIZE, j.size) - first * PAGE_SIZE });
      }
      continue;
    }
    file.left = 1;
    if (!batch || batch.items.length >= BATCH_FILES || batch.bytes >= BATCH_BYTES) tasks.push((batch = { items: [], files: [], bytes: 0 }));
    batch.items.push({ dest, src, size: j.size, first: 0, end: n, map: mapOf(0, n), attrs: { mode: j.mode, mtimeMs: j.mtimeMs } });
    batch.files.push(file);
    batch.bytes += j.size;
  }
  return { tasks, pages, files: jobs.length, bytes };
}

/** Size, mode and time of a file written in several segments. */
function finishFile(f: FileState): void {
  const fd = fs.openSync(f.dest, fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW);
  try {
    setFileAttributes(fd, f.size, f.mode, f.mtimeMs);
  } finally {
    fs.closeSync(fd);
  }
}

/** Why a thread stopped before it was asked anything (it could not start). */
const early = new WeakMap<Worker, Error>();

function startThreads(count: number, seed: string | null): Worker[] {
  return Array.from({ length: Math.max(1, count) }, () => {
    const w = new Worker(new URL('./delta-worker.js', import.meta.url), { workerData: { deltaWorker: true, seed } });
    w.on('error', (err) => early.set(w, err));
    w.on('exit', (code) => early.has(w) || early.set(w, new Error(`a delta restore thread exited (code ${code})`)));
    return w;
  });
}

/** Run the tasks on `threads` (stopped when done); returns the pages written. */
async function runTasks(tasks: Task[], threads: Worker[], onTask: (t: Task) => void): Promise<number> {
  let written = 0;
  let next = 0;
  let failure: Error | null = null;
  let closing = false;
  for (const w of threads) {
    const err = early.get(w);
    if (err) throw new BarmanError(`cannot start the delta restore threads: ${err.message}`);
  }
  try {
    await Promise.all(
      threads.map(
        (w) =>
          new Promise<void>((resolve) => {
            const pending = new Map<number, Task>();
            const feed = () => {
              while (!failure && pending.size < AHEAD && next < tasks.length) {
                const id = next++;
                const t = tasks[id] as Task;
                pending.set(id, t);
                w.postMessage({ id, items: t.items } satisfies DeltaRequest);
              }
              if (pending.size === 0) resolve();
            };
            const fail = (err: Error) => {
              failure ??= err;
              pending.clear();
              resolve();
            };
            w.on('message', (r: DeltaReply) => {
              const t = pending.get(r.id);
              if (!t) return;
              pending.delete(r.id);
              if (r.error !== undefined) return fail(new BarmanError(r.error));
              for (const n of r.written) written += n;
              try {
                onTask(t);
              } catch (err) {
                return fail(err instanceof Error ? err : new Error(String(err)));
              }
              feed();
            });
            w.on('error', fail);
            w.on('exit', (code) => {
              if (!closing) fail(new Error(`a delta restore thread exited (code ${code})`));
            });
            feed();
          }),
      ),
    );
  } finally {
    closing = true;
    await Promise.all(threads.map((w) => w.terminate()));
  }
  if (failure) throw failure;
  return written;
}

/** Delta-restore `trees` into directories of this host. */
export async function localDelta(trees: readonly PushTree[], opts: LocalDeltaOptions): Promise<PushStats> {
  // The threads load their modules while the trees are prepared.
  const threads = startThreads(opts.workers, opts.store?.meta.seed ?? null);
  try {
    return await deltaWith(trees, opts, threads);
  } finally {
    await Promise.all(threads.map((w) => w.terminate()));
  }
}

async function deltaWith(trees: readonly PushTree[], opts: LocalDeltaOptions, threads: Worker[]): Promise<PushStats> {
  for (const t of trees) {
    const entries = t.scan.entries;
    const removed = await prepareTree({
      root: t.dest,
      delta: true,
      keep: [...t.keep],
      dirs: entries.filter((e) => e.kind === 'dir').map((e) => e.rel),
      links: entries.filter((e) => e.kind === 'symlink').map((e): [string, string] => [e.rel, e.link ?? '']),
      files: entries.filter((e) => e.kind === 'file').map((e) => e.rel),
    });
    if (removed > 0) log.info(`${removed} entries of ${t.dest} that the backup does not have were removed`);
  }
  const plan = await planDelta(trees, opts.store);
  let done = 0;
  opts.onProgress?.(0, plan.bytes);
  const written = await runTasks(plan.tasks, threads, (t) => {
    for (const f of t.files) {
      f.left -= 1;
      // A file cut in segments gets its size, mode and time once all are written.
      if (f.left === 0 && t.items[0]?.attrs === null) finishFile(f);
    }
    done += t.bytes;
    opts.onProgress?.(done, plan.bytes);
  });
  const dirs: [string, number, number][] = [];
  for (const t of trees) for (const e of t.scan.entries) if (e.kind === 'dir') dirs.push([path.join(t.dest, e.rel), e.mode, e.mtimeMs]);
  await setDirAttributes(dirs);
  log.info(`agent restore: ${plan.files} files, ${written} of ${plan.pages} pages sent (written in place by ${Math.max(1, opts.workers)} threads of this process)`);
  return { files: plan.files, bytes: plan.bytes, pagesSent: written, pagesTotal: plan.pages, bytesOut: 0, bytesIn: 0 };
}
