/**
 * Restores through barman-ts agents on the destination (transfer_method = agent): a remote
 * restore, full or delta, agents started through --remote-ssh-command (a local delta restore
 * needs no agent: local-delta.ts). The backup host reads the backup's files and sends their
 * pages, compressed; `workers` agents write them, each taking the next file, largest first.
 *
 * Into an empty destination every page travels. For a delta restore each agent first hashes
 * the file it already has and asks only for the pages whose hash differs from the backup's page
 * map (the agent metadata of an agent backup; computed here from the backup's file otherwise);
 * what the backup does not have is removed, except the protected paths (logs, WAL, ...).
 * Every page is checked against its hash on arrival: the result is the backup's files, byte for
 * byte, as a full restore writes them.
 */
import { constants as fsc, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { TreeScan } from '../recovery/copy.js';
import { BarmanError } from '../util/errors.js';
import { logger } from '../util/log.js';
import { Encoder, requireCodec } from './codec.js';
import { HashThreadPool, hashFile } from './hash-thread.js';
import { SMALL_MAX, directAligned } from './bufpool.js';
import { openDirect, readMaybeDirect } from './direct-io.js';
import { HASH_BYTES, PAGE_SIZE, PageHasher, newSeed, pageCount, rangeWindows } from './pages.js';
import { T, decodeNeed, encodePages, encodeWithBinary, parseJson, type PageRange } from './protocol.js';
import { READ_CHUNK } from './serve-read.js';
import type { TreeRequest, WriteRequest } from './serve-write.js';
import type { PrestartedAgents } from './prestart.js';
import { AgentSession, type AgentEndpoint } from './session.js';
import type { StoreReader } from './store.js';

const log = logger('agent.restore');
/** Files announced ahead to one agent. */
const WINDOW = 8;

export interface PushTree {
  scan: TreeScan;
  /** Directory on the destination host. */
  dest: string;
  /** Anchored patterns protected at the destination (never removed nor written). */
  keep: readonly string[];
  /** Prefix of the tree's files in the backup's agent metadata (`data`, `<oid>`), if it has any. */
  storePrefix?: string;
}

export interface PushOptions {
  ep: AgentEndpoint;
  delta: boolean;
  workers: number;
  codec: string;
  level: number;
  /** The backup's agent metadata (page maps), if it has any. */
  store: StoreReader | null;
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
  /** Agents started ahead (while the trees were scanned), connected but not greeted: taken. */
  agents?: PrestartedAgents | null;
}

export interface PushStats {
  files: number;
  bytes: number;
  pagesSent: number;
  pagesTotal: number;
  bytesOut: number;
  bytesIn: number;
}

interface FileJob {
  id: number;
  tree: PushTree;
  rel: string;
  size: number;
  mode: number;
  mtimeMs: number;
}

class Pusher {
  private readonly encoder: Encoder;
  private readonly queue: FileJob[] = [];
  readonly stats: PushStats = { files: 0, bytes: 0, pagesSent: 0, pagesTotal: 0, bytesOut: 0, bytesIn: 0 };
  private done = 0;
  private total = 0;

  constructor(
    private readonly opts: PushOptions,
    private readonly hasher: PageHasher,
    private readonly storeSeed: boolean,
    private readonly threads: HashThreadPool,
  ) {
    this.encoder = new Encoder(requireCodec(opts.codec), opts.level);
  }

  /** The page map of a backup file: recorded by the agent when it matches, else computed. */
  private async mapOf(job: FileJob): Promise<Buffer> {
    const store = this.opts.store;
    if (store && this.storeSeed && job.tree.storePrefix) {
      const rec = store.files.get(`${job.tree.storePrefix}/${job.rel}`);
      if (rec && rec.s === job.size) return store.map(rec);
    }
    // Computed in a hashing thread, read ahead: the agents' own hashing goes on meanwhile.
    const file = path.join(job.tree.scan.root, job.rel);
    const { bytes, map } = await this.threads.use(async (t) => {
      const fh = await fsp.open(file, 'r');
      try {
        return await hashFile(t, fh, job.size, 'pages');
      } finally {
        await fh.close();
      }
    });
    if (bytes !== job.size) throw new BarmanError(`${file} is shorter than when the restore started`);
    return map;
  }

  /**
   * Read `ranges` of a backup file and send them. Nearby ranges are read together (one read
   * per window of READ_CHUNK: a random update asks for thousands of short ranges), the next
   * window while this one is sent. Pages go with their hash: the backup's page map when there
   * is one (the agent checks every page against it, which also catches a damaged backup),
   * computed here otherwise (a full restore: the agent checks what arrived against it).
   */
  private async sendPages(s: AgentSession, job: FileJob, ranges: readonly PageRange[], map: Buffer | null): Promise<void> {
    if (ranges.length === 0) return;
    const file = path.join(job.tree.scan.root, job.rel);
    const pool = this.encoder.pool;
    const fh = await fsp.open(file, 'r');
    // Read past the page cache where the file system allows (direct-io.ts): the backup's files
    // are not read again soon, and need not push anything out of this host's cache. Only a file
    // with windows larger than SMALL_MAX can get an aligned buffer from the pool: a small file
    // is not opened a second time for nothing.
    const direct = await (job.size > SMALL_MAX ? openDirect(file, fsc.O_RDONLY | fsc.O_NOFOLLOW) : Promise.resolve(null)).catch(async (err: unknown) => {
      await fh.close();
      throw err;
    });
    const windows = rangeWindows(ranges, READ_CHUNK / PAGE_SIZE);
    const readWindow = async (w: (typeof windows)[number]) => {
      const start = w.first * PAGE_SIZE;
      const len = Math.min(w.end * PAGE_SIZE, job.size) - start;
      const whole = pool.take(len);
      const buf = whole.subarray(0, len);
      const n = await readMaybeDirect(fh, direct, whole, start, len, directAligned(whole));
      if (n !== len) {
        pool.give(whole);
        throw new BarmanError(`${file} is shorter than when the restore started`);
      }
      return { whole, buf };
    };
    let next: ReturnType<typeof readWindow> | null = readWindow(windows[0] as (typeof windows)[number]);
    try {
      for (let k = 0; next; k++) {
        const w = windows[k] as (typeof windows)[number];
        const { whole, buf } = await next;
        next = k + 1 < windows.length ? readWindow(windows[k + 1] as (typeof windows)[number]) : null;
        // The window's buffer goes back to the pool once every message that holds a view of it is written.
        let users = 1;
        const release = () => {
          if (--users === 0) pool.give(whole);
        };
        try {
          for (const [first, count] of w.ranges) {
            const off = (first - w.first) * PAGE_SIZE;
            const data = buf.subarray(off, Math.min(off + count * PAGE_SIZE, buf.length));
            const hashes = map ? map.subarray(first * HASH_BYTES, (first + count) * HASH_BYTES) : this.hasher.pages(data);
            if (hashes.length !== count * HASH_BYTES) throw new BarmanError(`internal error: page map of ${file} is shorter than the file`);
            const enc = this.encoder.encode(data);
            const raw = enc.payload === data;
            if (raw) users++;
            await s.sendThen(raw ? release : enc.release, T.PAGES, ...encodePages({ id: job.id, firstPage: first, count, codec: enc.codec, rawLen: data.length }, hashes, enc.payload));
            this.stats.pagesSent += count;
          }
        } finally {
          release();
        }
      }
    } finally {
      await next?.then((r) => pool.give(r.whole)).catch(() => undefined);
      await direct?.close();
      await fh.close();
    }
  }

  private progress(bytes: number): void {
    this.done += bytes;
    this.opts.onProgress?.(this.done, this.total);
  }

  async tree(s: AgentSession, t: PushTree): Promise<void> {
    const req: TreeRequest = {
      root: t.dest,
      delta: this.opts.delta,
      keep: [...t.keep],
      dirs: t.scan.entries.filter((e) => e.kind === 'dir').map((e) => e.rel),
      links: t.scan.entries.filter((e) => e.kind === 'symlink').map((e): [string, string] => [e.rel, e.link ?? '']),
      files: t.scan.entries.filter((e) => e.kind === 'file').map((e) => e.rel),
    };
    await s.json(T.TREE, req);
    const { removed } = parseJson<{ removed: number }>((await s.expect(T.TREE_DONE, 'TREE_DONE')).body, 'TREE_DONE');
    if (removed > 0) log.info(`${removed} entries of ${t.dest} that the backup does not have were removed`);
  }

  /** Feed one agent, WINDOW files ahead. */
  async drain(s: AgentSession): Promise<void> {
    const inflight = new Map<number, { job: FileJob; map: Buffer | null }>();
    const refill = async (): Promise<void> => {
      while (inflight.size < WINDOW && this.queue.length > 0) {
        const job = this.queue.shift() as FileJob;
        const fresh = !this.opts.delta;
        const map = fresh ? null : await this.mapOf(job);
        inflight.set(job.id, { job, map });
        const w: WriteRequest = { id: job.id, path: path.join(job.tree.dest, job.rel), size: job.size, mode: job.mode, mtimeMs: job.mtimeMs, fresh };
        await s.send(T.WRITE, ...encodeWithBinary(w, map));
        this.stats.pagesTotal += pageCount(job.size);
        if (fresh) {
          await this.sendPages(s, job, job.size > 0 ? [[0, pageCount(job.size)]] : [], null);
          await s.json(T.WRITE_END, { id: job.id });
        }
      }
    };
    await refill();
    while (inflight.size > 0) {
      const f = await s.next();
      if (f.type === T.NEED) {
        const { id, ranges } = decodeNeed(f.body);
        const item = inflight.get(id);
        if (!item) throw new BarmanError(`the barman-ts agent on ${this.opts.ep.where} asked for pages of an unknown file`);
        await this.sendPages(s, item.job, ranges, item.map);
        await s.json(T.WRITE_END, { id });
        continue;
      }
      if (f.type !== T.WRITTEN) throw new BarmanError(`the barman-ts agent on ${this.opts.ep.where} sent message type ${f.type} during a restore`);
      const { id } = parseJson<{ id: number }>(f.body, 'WRITTEN');
      const item = inflight.get(id);
      if (!item) throw new BarmanError(`the barman-ts agent on ${this.opts.ep.where} wrote an unknown file`);
      inflight.delete(id);
      this.stats.files += 1;
      this.stats.bytes += item.job.size;
      this.progress(item.job.size);
      await refill();
    }
  }

  plan(trees: readonly PushTree[]): void {
    let id = 1;
    for (const t of trees) {
      for (const e of t.scan.entries) {
        if (e.kind !== 'file') continue;
        this.queue.push({ id: id++, tree: t, rel: e.rel, size: e.size, mode: e.mode, mtimeMs: e.mtimeMs });
        this.total += e.size;
      }
    }
    this.queue.sort((a, b) => b.size - a.size);
  }

  async finish(s: AgentSession, trees: readonly PushTree[]): Promise<void> {
    const dirs: [string, number, number][] = [];
    for (const t of trees) for (const e of t.scan.entries) if (e.kind === 'dir') dirs.push([path.join(t.dest, e.rel), e.mode, e.mtimeMs]);
    await s.json(T.FINISH, { dirs, sync: [] });
    await s.expect(T.FINISH_DONE, 'FINISH_DONE');
  }
}

/** Push `trees` to agents on the destination; returns what was written and sent. */
export async function pushTrees(trees: readonly PushTree[], opts: PushOptions): Promise<PushStats> {
  // The backup's own seed lets its recorded page maps serve; otherwise any seed will do.
  const storeSeed = opts.delta && opts.store !== null;
  const seed = storeSeed && opts.store ? opts.store.meta.seed : newSeed();
  const hasher = await PageHasher.create(seed);
  const threads = new HashThreadPool(seed, Math.max(1, opts.workers), 4, READ_CHUNK);
  const pusher = new Pusher(opts, hasher, storeSeed, threads);
  const sessions: AgentSession[] = [];
  const hello = { codec: opts.codec, level: opts.level, seed, signal: opts.signal };
  // All the agents start at once (an ssh connection, a program's start take a while); the
  // others go on starting while the first prepares the trees.
  const early = opts.agents?.take(opts.signal) ?? [];
  const n = Math.max(1, opts.workers);
  // Started ahead for more workers than this restore has: let them go.
  for (const p of early.slice(n)) void p.then((s) => s.close(), () => undefined);
  const starting = Array.from({ length: n }, async (_, i) => {
    const e = early[i];
    if (!e) return AgentSession.open(opts.ep, hello);
    const s = await e;
    try {
      await s.hello(hello);
    } catch (err) {
      s.kill();
      throw err;
    }
    return s;
  });
  for (const p of starting) p.catch(() => undefined);
  let opening: Promise<PromiseSettledResult<AgentSession>[]> | null = Promise.allSettled(starting.slice(1));
  let failed = false;
  try {
    const first = await (starting[0] as Promise<AgentSession>);
    sessions.push(first);
    for (const t of trees) await pusher.tree(first, t);
    pusher.plan(trees);
    const more = await opening;
    opening = null;
    for (const m of more) if (m.status === 'fulfilled') sessions.push(m.value);
    const bad = more.find((m) => m.status === 'rejected');
    if (bad) throw (bad as PromiseRejectedResult).reason;
    let failure: unknown = null;
    await Promise.all(
      sessions.map((s) =>
        pusher.drain(s).catch((err: unknown) => {
          failure ??= err;
          for (const o of sessions) if (o !== s) o.kill();
        }),
      ),
    );
    if (failure) throw failure;
    await pusher.finish(first, trees);
    pusher.stats.bytesOut = sessions.reduce((n, s) => n + s.bytesOut, 0);
    pusher.stats.bytesIn = sessions.reduce((n, s) => n + s.bytesIn, 0);
    log.info(
      `agent restore: ${pusher.stats.files} files, ${pusher.stats.pagesSent} of ${pusher.stats.pagesTotal} pages sent, ` +
        `${(pusher.stats.bytesOut / 1048576).toFixed(1)} MiB on the wire`,
    );
    return pusher.stats;
  } catch (err) {
    failed = true;
    for (const m of opening ? await opening : []) if (m.status === 'fulfilled') sessions.push(m.value);
    for (const s of sessions) s.kill();
    throw err;
  } finally {
    // Done (FINISH made everything durable), the agents exit on their own once their input
    // closes (close() kills one that lingers): the restore goes on meanwhile.
    const closing = Promise.all(sessions.map((s) => s.close()));
    if (failed) await closing;
    await threads.close();
  }
}
