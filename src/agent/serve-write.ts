/**
 * Agent side of a restore: prepare a destination tree (TREE), write files (WRITE, PAGES,
 * WRITE_END), then set directory modes and times and make everything durable (FINISH).
 *
 * A "fresh" write receives every page of the file. A delta write first hashes the pages of the
 * file already at the destination and answers NEED with the pages whose hash differs from the
 * backup's map, then receives only those. Every page received is checked against the hash that
 * came with it and, for a delta, against the backup's map, before it is written. Several files
 * may be in progress at once: the backup host sends the next WRITE before the pages of the
 * previous one, so that the hashing here and the reading there overlap.
 */
import { constants as fsc, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { run } from '../util/proc.js';
import { ByteBudget, directAligned } from './bufpool.js';
import { closeQuietly, openDirect, writeMaybeDirect } from './direct-io.js';
import { HashThread, hashFile, readFull, setFileAttributes } from './hash-thread.js';
import type { Decoder } from './codec.js';
import { HASH_BYTES, PAGE_SIZE, changedRanges, pageCount, type PageHasher } from './pages.js';
import { ProtocolError, encodeNeed, T, type FrameWriter, type PagesHeader } from './protocol.js';
import { READ_CHUNK } from './serve-read.js';
import { alignedBuffer } from '../util/aligned.js';

export interface TreeRequest {
  root: string;
  /** Remove what the backup does not have (delta restore into an existing directory). */
  delta: boolean;
  /** Anchored patterns (`pg_wal/*`, `postmaster.pid`) never removed nor descended into. */
  keep: string[];
  dirs: string[];
  links: [rel: string, target: string][];
  files: string[];
}

export interface WriteRequest {
  id: number;
  path: string;
  size: number;
  mode: number;
  mtimeMs: number;
  /** The destination has no such file (a full restore): every page follows, no NEED. */
  fresh: boolean;
}

interface OpenWrite {
  req: WriteRequest;
  fh: fsp.FileHandle;
  /** The backup's page map (delta writes). */
  map: Buffer | null;
  /** Pages still expected. */
  expected: Set<number> | null;
  remaining: number;
  /** The file's writes, in order; never rejects (the first failure is kept in `error`). */
  writing: Promise<void>;
  error: unknown;
  /** The file opened again with O_DIRECT for aligned writes (null: the file system does not do it). */
  direct?: Promise<fsp.FileHandle | null>;
}

async function closeDirect(w: OpenWrite): Promise<void> {
  const direct = w.direct;
  w.direct = undefined;
  await closeQuietly(direct);
}

/**
 * Pages to write this close (fewer matching pages between them) are asked for in one range: a
 * random update changes pages here and there, and a message per page costs more (a read and a
 * message there, a check and a write here) than the matching page between two, rewritten with
 * the same bytes.
 */
const NEED_BRIDGE = 2;

/** Read buffers of the hashing thread (READ_CHUNK each). */
const HASH_SLOTS = 4;

/** Decoded bytes waiting to be written, over all files. */
const WRITE_BUDGET = 32 * 1024 * 1024;

function anchored(patterns: readonly string[]): (rel: string) => boolean {
  const res = patterns.map(
    (p) =>
      new RegExp(
        `^${p
          .replace(/^\/+/, '')
          .split('*')
          .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
          .join('[^/]*')}$`,
      ),
  );
  return (rel) => res.some((re) => re.test(rel));
}

const missing = (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOENT';

/** Remove `rel` under `root` unless kept; a directory keeps what is kept inside it. Returns entries removed. */
async function removeEntry(root: string, rel: string, keep: (rel: string) => boolean): Promise<number> {
  const abs = path.join(root, rel);
  const st = await fsp.lstat(abs).catch((err: unknown) => (missing(err) ? null : Promise.reject(err)));
  if (!st) return 0;
  if (!st.isDirectory()) {
    await fsp.rm(abs, { force: true });
    return 1;
  }
  let n = 0;
  let keptInside = false;
  for (const name of await fsp.readdir(abs)) {
    const child = `${rel}/${name}`;
    if (keep(child)) keptInside = true;
    else n += await removeEntry(root, child, keep);
  }
  if (!keptInside && (await fsp.readdir(abs)).length === 0) {
    await fsp.rmdir(abs);
    n += 1;
  }
  return n;
}

/**
 * Prepare a destination tree: the root, the directories and links of the backup; for a delta,
 * what the backup does not have removed first (kept paths aside). Returns the entries removed.
 */
export async function prepareTree(req: TreeRequest): Promise<number> {
  const keep = anchored(req.keep);
  await fsp.mkdir(req.root, { recursive: true, mode: 0o700 });
  let removed = 0;
  if (req.delta) {
    const dirs = new Set(req.dirs);
    const files = new Set(req.files);
    const links = new Map(req.links);
    const walk = async (rel: string): Promise<void> => {
      const abs = rel === '' ? req.root : path.join(req.root, rel);
      for (const ent of await fsp.readdir(abs, { withFileTypes: true })) {
        const child = rel === '' ? ent.name : `${rel}/${ent.name}`;
        if (keep(child)) continue;
        if (ent.isDirectory() && dirs.has(child)) {
          await walk(child);
          continue;
        }
        if (ent.isFile() && files.has(child)) continue;
        if (ent.isSymbolicLink() && links.has(child) && (await fsp.readlink(path.join(req.root, child)).catch(() => null)) === links.get(child)) continue;
        removed += await removeEntry(req.root, child, keep);
      }
    };
    await walk('');
  }
  for (const d of req.dirs) await fsp.mkdir(path.join(req.root, d), { recursive: true, mode: 0o700 });
  for (const [rel, target] of req.links) {
    const abs = path.join(req.root, rel);
    const cur = await fsp.readlink(abs).catch(() => null);
    if (cur === target) continue;
    await fsp.rm(abs, { force: true });
    await fsp.symlink(target, abs);
  }
  return removed;
}

/** Directory modes and times, deepest first (a parent's time is set after its children are). */
export async function setDirAttributes(dirs: readonly [abs: string, mode: number, mtimeMs: number][]): Promise<void> {
  for (const [abs, mode, mtimeMs] of [...dirs].sort((a, b) => b[0].length - a[0].length)) {
    await fsp.chmod(abs, mode);
    await fsp.utimes(abs, mtimeMs / 1000, mtimeMs / 1000);
  }
}

export class WriteServer {
  private readonly open = new Map<number, OpenWrite>();
  private readonly budget = new ByteBudget(WRITE_BUDGET);
  pagesWritten = 0;
  private thread: HashThread | null = null;
  /** Read buffer of the small files (hashed on this thread). */
  private small: Buffer | null = null;

  constructor(
    private readonly out: FrameWriter,
    private readonly hasher: PageHasher,
    private readonly decoder: Decoder,
  ) {}

  async tree(req: TreeRequest): Promise<void> {
    const removed = await prepareTree(req);
    await this.out.json(T.TREE_DONE, { removed });
  }

  async write(req: WriteRequest, map: Buffer): Promise<void> {
    const pages = pageCount(req.size);
    if (req.fresh) {
      const fh = await fsp.open(req.path, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC | fsc.O_NOFOLLOW, 0o600);
      this.open.set(req.id, { req, fh, map: null, expected: null, remaining: pages, writing: Promise.resolve(), error: null });
      return;
    }
    if (map.length !== pages * HASH_BYTES) throw new ProtocolError(`page map of ${req.path} does not match its size`);
    // The map is kept until the file is written: copied out of the (borrowed) message.
    map = Buffer.from(map);
    const fh = await fsp.open(req.path, fsc.O_RDWR | fsc.O_CREAT | fsc.O_NOFOLLOW, 0o600);
    try {
      const have = await this.hashExisting(fh, pages);
      const ranges = changedRanges(map, have, pages, NEED_BRIDGE);
      const expected = new Set<number>();
      for (const [first, count] of ranges) for (let p = first; p < first + count; p++) expected.add(p);
      this.open.set(req.id, { req, fh, map, expected, remaining: expected.size, writing: Promise.resolve(), error: null });
      await this.out.send(T.NEED, encodeNeed(req.id, ranges));
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw err;
    }
  }

  /**
   * Hashes of the first `pages` pages of an existing file (fewer if it is shorter): read ahead
   * and hashed in the hashing thread, as a backup reads (WRITE requests come one at a time).
   */
  private async hashExisting(fh: fsp.FileHandle, pages: number): Promise<Buffer> {
    if (pages * PAGE_SIZE <= READ_CHUNK) {
      // Most files of a data directory are this small: one read, hashed here. Handing them to
      // the hashing thread costs more (two thread switches, each a wait on a busy host).
      this.small ??= alignedBuffer(READ_CHUNK);
      const n = await readFull(fh, this.small.subarray(0, pages * PAGE_SIZE), 0);
      return this.hasher.pages(this.small.subarray(0, n));
    }
    this.thread ??= new HashThread(this.hasher.seed, HASH_SLOTS, READ_CHUNK);
    const { map } = await hashFile(this.thread, fh, pages * PAGE_SIZE, 'pages');
    return map;
  }

  /**
   * Pages of a file being written: verified, then written asynchronously (the next message is
   * read meanwhile; at most WRITE_BUDGET bytes wait). A failed write is reported by end().
   */
  async pages(h: PagesHeader): Promise<void> {
    const w = this.open.get(h.id);
    if (!w) throw new ProtocolError(`pages for a file not being written (${h.id})`);
    await this.budget.reserve(h.rawLen);
    // Owned: the message itself is borrowed, and the write outlives it.
    const { data: raw, release } = this.decoder.decodeOwned(h.codec, h.payload, h.rawLen);
    const done = () => {
      release();
      this.budget.free(h.rawLen);
    };
    try {
      this.verify(w, h, raw);
    } catch (err) {
      done();
      throw err;
    }
    const pos = h.firstPage * PAGE_SIZE;
    w.writing = w.writing
      .then(async () => {
        if (w.error !== null) return;
        // Restored pages go to disk past the page cache where the file system allows (direct-io.ts).
        const aligned = directAligned(raw);
        if (aligned) w.direct ??= openDirect(w.req.path, fsc.O_WRONLY | fsc.O_NOFOLLOW);
        await writeMaybeDirect(w.fh, aligned ? await (w.direct as Promise<fsp.FileHandle | null>) : null, raw, pos, aligned);
      })
      .catch((err: unknown) => {
        w.error ??= err;
      })
      .finally(done);
    this.pagesWritten += h.count;
  }

  private verify(w: OpenWrite, h: PagesHeader, raw: Buffer): void {
    for (let i = 0; i < h.count; i++) {
      const p = h.firstPage + i;
      const data = raw.subarray(i * PAGE_SIZE, Math.min((i + 1) * PAGE_SIZE, raw.length));
      const got = this.hasher.page(data);
      const sent = h.hashes.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES);
      const want = w.map ? w.map.subarray(p * HASH_BYTES, (p + 1) * HASH_BYTES) : sent;
      if (!Buffer.from(got).equals(sent) || !Buffer.from(got).equals(want)) {
        // With a map, the host sends the backup's own page hashes: the page was damaged on its
        // way here, or in the backup since it was taken.
        const why = w.map ? 'does not match the checksum recorded when the backup was taken (damaged in transit, or the backup is damaged: run verify-backup)' : 'was damaged in transit (its checksum does not match)';
        throw new ProtocolError(`page ${p} of ${w.req.path} ${why}`);
      }
      if (w.expected) {
        if (!w.expected.delete(p)) throw new ProtocolError(`page ${p} of ${w.req.path} was not asked for`);
      }
      w.remaining -= 1;
    }
  }

  async end(id: number): Promise<void> {
    const w = this.open.get(id);
    if (!w) throw new ProtocolError(`end of a file not being written (${id})`);
    this.open.delete(id);
    try {
      await w.writing;
      if (w.error) throw w.error;
      if (w.remaining !== 0) throw new ProtocolError(`${w.req.path}: ${w.remaining} pages were not received`);
      // Quick system calls, made here: through the thread pool each would wait for a turn.
      setFileAttributes(w.fh.fd, w.req.size, w.req.mode, w.req.mtimeMs);
    } finally {
      await closeDirect(w);
      await w.fh.close();
    }
    await this.out.json(T.WRITTEN, { id });
  }

  /** Directory modes and times (deepest first), then `sync -f` on each path. */
  async finish(req: { dirs: [abs: string, mode: number, mtimeMs: number][]; sync: string[] }): Promise<void> {
    await setDirAttributes(req.dirs);
    for (const p of req.sync) {
      const res = await run('sync', ['-f', p]);
      if (res.code !== 0) throw new Error(`sync -f ${p} failed: ${res.stderr.trim()}`);
    }
    await this.out.json(T.FINISH_DONE, {});
  }

  async closeAll(): Promise<void> {
    for (const w of this.open.values()) {
      await w.writing;
      await closeDirect(w);
      await w.fh.close().catch(() => undefined);
    }
    this.open.clear();
  }
}
