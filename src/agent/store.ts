/**
 * What an agent backup keeps beside its files, in `<backup_directory>/agent/<id>/`
 * (agentMetaDir: outside base/<id>, which Barman walks), for the next backups, delta restores
 * and verify-backup:
 *
 *   meta.json    { format, seed, pageSize, hash, complete, basis, stats }
 *   files.jsonl  one line per file of the backup: { p, s, m, h, o, n }: path relative to
 *                base/<id> (`data/...`, `<oid>/...`), size, source mtime (ms), SHA-256 of the
 *                content, offset of its page hashes in maps.bin, number of pages
 *   maps.bin     the page hash maps, back to back
 *
 * While the copy runs, records are appended in batches, each only after a syncfs that made the
 * files it names durable: the journal of a backup that was interrupted (killed, cut off, power
 * lost) lists files that are safely on disk, and the next backup resumes from them. A torn last
 * line (a crash while appending) is ignored. `complete` is set once every file is recorded.
 */
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { agentMetaDir } from '../catalog/server-dirs.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { DIR_MODE, FILE_MODE, fsyncDir, writeFileAtomic } from '../util/fsutil.js';
import { HASH_BYTES, PAGE_SIZE, isSeed } from './pages.js';

/** Page maps up to this size (files up to 32 MiB) are read synchronously (StoreReader.map). */
const SYNC_MAP_BYTES = 64 * 1024;

export const META = 'meta.json';
export const FILES = 'files.jsonl';
export const MAPS = 'maps.bin';

export interface FileRecord {
  /** Path relative to base/<id>, `/`-separated. */
  p: string;
  s: number;
  m: number;
  h: string;
  /** Offset of the page map in maps.bin, and its pages. */
  o: number;
  n: number;
}

export interface TransferStats {
  /** Bytes the agent sent / received (what ssh carried, before its own overhead). */
  bytesIn: number;
  bytesOut: number;
  /** Bytes of the files of the backup. */
  bytesTotal: number;
  filesTotal: number;
  /** Files hard-linked from a basis without being read, read and found unchanged, sent in part, sent whole. */
  filesLinked: number;
  filesUnchanged: number;
  filesDelta: number;
  /** Of filesDelta: started as a clone of the basis (reflink), only the sent pages written (absent in the meta.json of older backups). */
  filesCloned?: number;
  /** Of filesDelta: only the pages the WAL names read (wal-guide.ts; absent in older meta.json). */
  filesTracked?: number;
  filesFull: number;
  filesVanished: number;
  pagesSent: number;
  pagesRead: number;
  seconds: number;
  /** The backups whose copies served as basis, and the one resumed (an interrupted backup), if any. */
  basis: string[];
  resumedFrom: string | null;
}

export interface AgentMeta {
  format: 1;
  seed: string;
  pageSize: number;
  hash: 'xxh3-128';
  complete: boolean;
  stats?: TransferStats;
}

export function newMeta(seed: string): AgentMeta {
  return { format: 1, seed, pageSize: PAGE_SIZE, hash: 'xxh3-128', complete: false };
}

function isRecord(x: unknown): x is FileRecord {
  const r = x as FileRecord;
  return (
    typeof r === 'object' &&
    r !== null &&
    typeof r.p === 'string' &&
    typeof r.s === 'number' &&
    typeof r.m === 'number' &&
    typeof r.h === 'string' &&
    /^[0-9a-f]{64}$/.test(r.h) &&
    Number.isInteger(r.o) &&
    Number.isInteger(r.n)
  );
}

/** Parse files.jsonl: complete, well-formed lines whose map lies within `mapsSize` bytes. */
export function parseJournal(text: string, mapsSize: number): FileRecord[] {
  const out: FileRecord[] = [];
  const lines = text.split('\n');
  // The last element is '' after a final newline, or a torn line: never used.
  lines.pop();
  for (const line of lines) {
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch {
      continue;
    }
    if (isRecord(rec) && rec.o >= 0 && rec.o + rec.n * HASH_BYTES <= mapsSize) out.push(rec);
  }
  return out;
}

/** The agent metadata of a backup, for reading (a basis, a restore, verify-backup). */
export class StoreReader {
  private constructor(
    readonly id: string,
    readonly meta: AgentMeta,
    readonly files: ReadonlyMap<string, FileRecord>,
    private readonly maps: fsp.FileHandle,
  ) {}

  /** null when the backup has no (usable) agent metadata. */
  static async open(srv: ServerConfig, id: string): Promise<StoreReader | null> {
    const dir = agentMetaDir(srv, id);
    let meta: AgentMeta;
    try {
      meta = JSON.parse(await fsp.readFile(path.join(dir, META), 'utf8')) as AgentMeta;
    } catch {
      return null;
    }
    if (meta.format !== 1 || !isSeed(meta.seed) || meta.pageSize !== PAGE_SIZE) return null;
    let maps: fsp.FileHandle;
    try {
      maps = await fsp.open(path.join(dir, MAPS), 'r');
    } catch {
      return null;
    }
    try {
      const size = (await maps.stat()).size;
      const text = await fsp.readFile(path.join(dir, FILES), 'utf8').catch(() => '');
      const files = new Map(parseJournal(text, size).map((r) => [r.p, r]));
      return new StoreReader(id, meta, files, maps);
    } catch (err) {
      await maps.close();
      throw new BarmanError(`cannot read the agent metadata of backup ${id}: ${errorMessage(err)}`);
    }
  }

  async map(rec: FileRecord): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(rec.n * HASH_BYTES);
    if (buf.length === 0) return buf;
    // A small map (most files) is read here: through the thread pool each read would wait for
    // a turn, for each of the thousand files of an incremental backup.
    const bytesRead = buf.length <= SYNC_MAP_BYTES ? fs.readSync(this.maps.fd, buf, 0, buf.length, rec.o) : (await this.maps.read(buf, 0, buf.length, rec.o)).bytesRead;
    if (bytesRead !== buf.length) throw new BarmanError(`the agent metadata of backup ${this.id} is truncated`);
    return buf;
  }

  async close(): Promise<void> {
    await this.maps.close().catch(() => undefined);
  }
}

/** Writing the metadata of the backup being taken. */
export class StoreWriter {
  private pending: { rec: Omit<FileRecord, 'o'>; map: Buffer }[] = [];
  private mapsSize = 0;
  private flushing: Promise<void> = Promise.resolve();
  recorded = 0;

  private constructor(
    readonly dir: string,
    readonly meta: AgentMeta,
    private readonly files: fsp.FileHandle,
    private readonly maps: fsp.FileHandle,
  ) {}

  static async create(srv: ServerConfig, id: string, seed: string): Promise<StoreWriter> {
    const dir = agentMetaDir(srv, id);
    await fsp.mkdir(path.dirname(dir), { recursive: true, mode: DIR_MODE });
    await fsp.mkdir(dir, { mode: DIR_MODE });
    const meta = newMeta(seed);
    await writeFileAtomic(path.join(dir, META), `${JSON.stringify(meta)}\n`);
    const files = await fsp.open(path.join(dir, FILES), 'a', FILE_MODE);
    const maps = await fsp.open(path.join(dir, MAPS), 'a', FILE_MODE);
    await fsyncDir(dir);
    await fsyncDir(path.dirname(dir));
    return new StoreWriter(dir, meta, files, maps);
  }

  /** A file is complete on disk (not yet durable): recorded at the next flush. */
  add(rec: Omit<FileRecord, 'o' | 'n'>, map: Buffer): void {
    this.pending.push({ rec: { ...rec, n: map.length / HASH_BYTES }, map });
  }

  get pendingCount(): number {
    return this.pending.length;
  }

  /**
   * Record what was added so far, once `makeDurable` (a syncfs of the backup's file system)
   * has put those files on disk. Flushes run one at a time, in order.
   */
  flush(makeDurable: () => Promise<void>): Promise<void> {
    const batch = this.pending;
    this.pending = [];
    const run = async (): Promise<void> => {
      if (batch.length === 0) return;
      await makeDurable();
      const lines: string[] = [];
      const maps: Buffer[] = [];
      for (const { rec, map } of batch) {
        lines.push(JSON.stringify({ ...rec, o: this.mapsSize }));
        maps.push(map);
        this.mapsSize += map.length;
      }
      // The maps first: a line is only valid once the bytes it points to are there.
      await this.maps.write(Buffer.concat(maps));
      await this.maps.datasync();
      await this.files.write(`${lines.join('\n')}\n`);
      await this.files.datasync();
      this.recorded += batch.length;
    };
    this.flushing = this.flushing.then(run);
    return this.flushing;
  }

  /** Every file is recorded: mark the metadata complete, with the transfer statistics. */
  async complete(stats: TransferStats): Promise<void> {
    await this.flushing;
    if (this.pending.length > 0) throw new BarmanError('internal error: agent metadata completed with records pending');
    this.meta.complete = true;
    this.meta.stats = stats;
    await writeFileAtomic(path.join(this.dir, META), `${JSON.stringify(this.meta)}\n`);
  }

  /** Statistics of an interrupted backup (best effort, for the log of the resume). */
  async saveStats(stats: TransferStats): Promise<void> {
    this.meta.stats = stats;
    await writeFileAtomic(path.join(this.dir, META), `${JSON.stringify(this.meta)}\n`).catch(() => undefined);
  }

  async close(): Promise<void> {
    await this.flushing.catch(() => undefined);
    await this.files.close().catch(() => undefined);
    await this.maps.close().catch(() => undefined);
  }
}

/** Remove the metadata of backups that no longer exist (deleted by Barman, or never created). */
export async function sweepOrphans(srv: ServerConfig, exists: (id: string) => Promise<boolean>): Promise<string[]> {
  const root = path.dirname(agentMetaDir(srv, 'x'));
  const ids = await fsp.readdir(root).catch(() => [] as string[]);
  const removed: string[] = [];
  for (const id of ids) {
    if (await exists(id)) continue;
    await fsp.rm(path.join(root, id), { recursive: true, force: true });
    removed.push(id);
  }
  return removed;
}

/** The statistics of a backup's agent metadata, if any. */
export async function readStats(srv: ServerConfig, id: string): Promise<TransferStats | null> {
  try {
    const meta = JSON.parse(await fsp.readFile(path.join(agentMetaDir(srv, id), META), 'utf8')) as AgentMeta;
    return meta.stats ?? null;
  } catch {
    return null;
  }
}
