/**
 * transfer_method = agent for backup_method = rsync: the copy step of a concurrent backup
 * (src/backup/rsync-executor.ts: concurrentBackup does start, stop, labels and durability) made
 * by barman-ts agents on the database host, started through ssh_command, `jobs` of them.
 *
 *  1. One agent lists the data directory and the tablespaces (the rsync method's excludes).
 *  2. Each file is compared with its copy in a basis: the newest DONE agent backup, and, if a
 *     later agent backup was interrupted, that one first (resume). Same size and mtime, and an
 *     mtime older than the start of the basis backup: the copy is hard-linked, nothing is read.
 *     Otherwise the agents read the file and send only the pages whose hash differs from the
 *     basis's page map (all of them without a basis); receive.ts rebuilds the whole file.
 *  3. Files go largest first to whichever agent is free, several requests ahead per agent;
 *     global/pg_control goes last, alone.
 *     With change tracking (wal-guide.ts: the WAL from the basis's start to this backup's start
 *     is on this host), a relation file with a basis copy is not read whole: the agent reads
 *     only the pages the WAL names and those past the basis copy's end (READ_PAGES), and the
 *     backup host computes the SHA-256 of the file it built.
 *  4. Every file's SHA-256 (computed by the agent over what it read) and page map go into the
 *     backup's agent metadata (store.ts), in batches made durable as the copy goes on: an
 *     interrupted backup is the basis of the next one, which does not fetch again what it had.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { DONE, EMPTY, FAILED, STARTED } from '../catalog/backup-info.js';
import { backupDir, loadCatalog } from '../catalog/catalog.js';
import { pyFloat, type PyValue } from '../catalog/pyliteral.js';
import { subprocessEnv } from '../postgres/binaries.js';
import { concurrentBackup, type BackupStarted, type ConcurrentBackupRequest, type CopyStepResult } from '../backup/rsync-executor.js';
import { CopySink } from '../backup/tree-copy.js';
import type { CopyOutcome } from '../backup/copy-outcome.js';
import { PG_CONTROL, PGDATA_EXCLUDES, TABLESPACE_EXCLUDES, type ReuseMode } from '../backup/rsync-plan.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { formatLsn, parseLsn } from '../wal/names.js';
import { logger } from '../util/log.js';
import { runPool } from '../util/pool.js';
import { run } from '../util/proc.js';
import { ByteBudget } from './bufpool.js';
import { HashThreadPool, hashFile } from './hash-thread.js';
import { Decoder, requireCodec } from './codec.js';
import { HASH_BYTES, PAGE_SIZE, PageHasher, newSeed, pageCount } from './pages.js';
import { T, decodePages, decodePassed, encodeRanges, encodeWithBinary, parseJson } from './protocol.js';
import { FileReceiver, type Basis, type Clone, type FillGaps, type ShaOf } from './receive.js';
import { READ_CHUNK, type ReadEnd, type ReadPagesRequest, type ReadRequest } from './serve-read.js';
import { WalChangeReading, guidedRead, unloggedRelationOf, type GuidedRead, type WalGuide } from './wal-guide.js';
import type { PrestartedAgents } from './prestart.js';
import { AgentSession, type AgentEndpoint } from './session.js';
import { StoreReader, StoreWriter, sweepOrphans, type FileRecord, type TransferStats } from './store.js';
import type { WireEntry } from './walk.js';

const log = logger('agent.backup');

/** Requests sent ahead to one agent (it answers them in order). */
const WINDOW = 8;
/** Decoded bytes waiting to be written, per agent. */
const WRITE_BUDGET = 32 * 1024 * 1024;
/** Files being finished (their last writes, times, mode) while the next ones arrive, per agent. */
const MAX_FINISHING = 16;
/** Read buffers of each hashing thread (READ_CHUNK each): it fills pages in from a basis through the first. */
const HASH_SLOTS = 1;
/** Records of received files are made durable and journaled this often. */
const FLUSH_INTERVAL_MS = 3000;
/** Read buffers of a thread computing a SHA-256 on the backup host (hashFile: reads go ahead while it hashes). */
const SHA_SLOTS = 4;
/** How long change tracking waits for the streamed WAL to reach this backup's start (pg_receivewal's lag). */
const WAL_WAIT_MS = 10_000;
/**
 * Change tracking is not tried when the WAL since the basis started exceeds this share of the
 * basis's size (full-page images of most of its pages, in all likelihood), unless it is less
 * than MIN_WAL_SKIPPED, which is read in a moment anyway.
 */
const MAX_WAL_SHARE = 0.25;
const MIN_WAL_SKIPPED = 256 * 1024 * 1024;
/** The errors of a clone (FICLONE) the file system or the kernel does not do. */
const CLONE_UNSUPPORTED = new Set(['ENOTSUP', 'EOPNOTSUPP', 'EXDEV', 'EINVAL', 'ENOSYS', 'ENOTTY']);

export interface AgentBackupRequest extends ConcurrentBackupRequest {
  backupId: string;
  jobs: number;
  /** Agents the backup started ahead (its checks asked the first one): taken for this copy. */
  agents?: PrestartedAgents | null;
  /**
   * reuse_backup: link = block-level incremental, unchanged files hard-linked; copy = the same
   * with copies instead of links; off = every file fetched whole (only an interrupted backup is
   * resumed, its files copied).
   */
  reuse: ReuseMode;
  onProgress?: (doneKb: number, totalKb: number) => void;
  info?: (msg: string) => void;
}

/** An earlier backup whose files serve as basis. */
interface BasisBackup {
  id: string;
  dir: string;
  reader: StoreReader;
  /** Files modified at or after this time (ms) cannot be trusted by size and mtime. */
  horizonMs: number;
  /** An interrupted backup (FAILED, STARTED or EMPTY) whose received files this one resumes. */
  interrupted?: boolean;
  /** Where its WAL starts (begin_xlog, timeline, WAL segment size): change tracking reads the WAL from there. */
  wal: { from: bigint; timeline: number; segSize: number } | null;
  /** Its size (backup.info): how much WAL is worth reading to track changes since it. */
  size: number;
}

/** One tree copied: the data directory or a tablespace. */
interface Tree {
  item: string;
  /** On the database host. */
  src: string;
  /** Prefix in base/<id> (`data`, `<oid>`) and in a backup_manifest (``, `pg_tblspc/<oid>/`). */
  prefix: string;
  manifestPrefix: string;
  excludes: readonly string[];
}

interface Job {
  id: number;
  tree: Tree;
  rel: string;
  size: number;
  mtimeMs: number;
  mode: number;
  basis: { backup: BasisBackup; rec: FileRecord } | null;
  /** When the agent started on it (for the debug log). */
  startedMs?: number;
  /** Only these pages are read (change tracking: wal-guide.ts); null: the whole file. */
  guided?: GuidedRead | null;
}

/**
 * The basis backups: the newest DONE backup with complete agent metadata, and a later
 * interrupted one (FAILED, or left STARTED by a killed process: the caller holds the backup
 * lock) to resume. Both must use the same page hash seed.
 */
async function chooseBasis(req: AgentBackupRequest): Promise<BasisBackup[]> {
  const catalog = (await loadCatalog(req.srv)).filter((e) => e.id !== req.backupId && e.id < req.backupId).sort((a, b) => (a.id < b.id ? 1 : -1));
  const open = async (e: (typeof catalog)[number]): Promise<BasisBackup | null> => {
    if (!e.info.begin_time) return null;
    const reader = await StoreReader.open(req.srv, e.id);
    if (!reader) return null;
    const { begin_xlog: from, timeline, xlog_segment_size: segSize } = e.info;
    const wal = from && timeline ? { from: parseLsn(from), timeline, segSize } : null;
    return { id: e.id, dir: backupDir(req.srv, e.id), reader, horizonMs: Number(e.info.begin_time.epochMicros / 1000n), wal, size: Number(e.info.size ?? 0) };
  };
  const out: BasisBackup[] = [];
  let done: BasisBackup | null = null;
  for (const e of catalog) {
    if (e.info.status !== DONE) continue;
    const b = await open(e);
    if (b && b.reader.meta.complete) {
      done = b;
      break;
    }
    await b?.reader.close();
  }
  const interrupted = catalog.find((e) => [FAILED, STARTED, EMPTY].includes(e.info.status) && (!done || e.id > done.id));
  const resume = interrupted ? await open(interrupted) : null;
  if (resume && resume.reader.files.size > 0) out.push({ ...resume, interrupted: true });
  else await resume?.reader.close();
  if (done && req.reuse === 'off') {
    await done.reader.close();
    done = null;
  }
  if (done) {
    if (out.length === 0 || out[0]?.reader.meta.seed === done.reader.meta.seed) out.push(done);
    else await done.reader.close();
  }
  return out;
}

function newStats(): TransferStats {
  return {
    bytesIn: 0,
    bytesOut: 0,
    bytesTotal: 0,
    filesTotal: 0,
    filesLinked: 0,
    filesUnchanged: 0,
    filesDelta: 0,
    filesCloned: 0,
    filesTracked: 0,
    filesFull: 0,
    filesVanished: 0,
    pagesSent: 0,
    pagesRead: 0,
    seconds: 0,
    basis: [],
    resumedFrom: null,
  };
}

/** The copy step: everything between the start and the stop of the backup. */
class AgentCopy {
  readonly sessions: AgentSession[] = [];
  private readonly stats = newStats();
  private readonly known = new Map<string, { size: number; sha256: string }>();
  private readonly queue: Job[] = [];
  private nextId = 1;
  private doneBytes = 0;
  private totalBytes = 0;
  private lastProgress = 0;
  private flushTimer: NodeJS.Timeout | null = null;
  private flushError: unknown = null;

  constructor(
    private readonly req: AgentBackupRequest,
    private readonly ep: AgentEndpoint,
    private readonly hasher: PageHasher,
    private readonly store: StoreWriter,
    private readonly bases: BasisBackup[],
    private readonly threads: HashThreadPool,
    /** The threads that compute the SHA-256 of files built from pages the WAL named (their reads: hashFile). */
    private readonly shaThreads: HashThreadPool,
    /** Every agent started for this copy, ready or not (killAll). */
    private readonly started: readonly AgentSession[] = [],
    /** The WAL since the basis started, being read (change tracking), or null. */
    private readonly walReading: WalChangeReading | null = null,
    /** Whether the backup's file system clones files (canCloneIn; reuse_backup = link). */
    cloning = true,
  ) {
    this.canClone = cloning;
    this.stats.basis = bases.map((b) => b.id);
    this.stats.resumedFrom = bases.find((b) => b.interrupted)?.id ?? null;
  }

  private trees(): Tree[] {
    const trees: Tree[] = [{ item: 'pgdata', src: this.req.pgdata, prefix: 'data', manifestPrefix: '', excludes: PGDATA_EXCLUDES }];
    for (const ts of this.req.tablespaces) {
      trees.push({ item: ts.name, src: ts.location, prefix: String(ts.oid), manifestPrefix: `pg_tblspc/${ts.oid}/`, excludes: TABLESPACE_EXCLUDES });
    }
    return trees;
  }

  /** Pages filled in from a basis, checked, by one of the hashing threads. */
  private readonly fillGaps: FillGaps = (from, to, gaps, map, size, direct) => this.threads.use((t) => t.fill(from, to, gaps, map, size, direct));

  /** An unchanged basis file into the new backup: hard link, or copy (reuse_backup = copy / off). */
  private readonly share = async (from: string, to: string): Promise<void> => {
    if (this.req.reuse === 'link') await fsp.link(from, to);
    else await fsp.copyFile(from, to, fsp.constants.COPYFILE_EXCL);
  };

  /**
   * The SHA-256 and page hashes of a file built from the pages the WAL named (READ_PAGES: the
   * agent sent no SHA-256), read back on one of the SHA threads behind the file's writing (ShaOf).
   */
  private readonly shaOf: ShaOf = async (file, size, ready) => {
    // Two threads, each reading the file (from the page cache): the SHA-256 on one, the page
    // hashes on the other, at once.
    const one = (kind: 'sha' | 'pages') =>
      this.shaThreads.use(async (t) => {
        const fh = await fsp.open(file, 'r');
        try {
          return await hashFile(t, fh, size, kind, ready);
        } finally {
          await fh.close();
        }
      });
    const [sha, pages] = await Promise.all([one('sha'), one('pages')]);
    return { bytes: Math.min(sha.bytes, pages.bytes), sha256: sha.sha256, map: pages.map };
  };

  /**
   * False once a clone failed for want of support (this backup's file system does not do it),
   * or from the start where canCloneIn said so.
   */
  private canClone: boolean;

  /**
   * A changed file started as a clone of its basis copy, where the file system shares blocks
   * between files (XFS, btrfs); given to the receivers with reuse_backup = link only (copy asks
   * for files of their own).
   */
  private readonly clone: Clone = async (from, to) => {
    if (!this.canClone) return false;
    try {
      await fsp.copyFile(from, to, fsp.constants.COPYFILE_EXCL | fsp.constants.COPYFILE_FICLONE_FORCE);
      return true;
    } catch (err) {
      if (!CLONE_UNSUPPORTED.has((err as NodeJS.ErrnoException).code ?? '')) throw err;
      this.canClone = false;
      await fsp.rm(to, { force: true });
      return false;
    }
  };

  private dest(job: Pick<Job, 'tree' | 'rel'>): string {
    return path.join(this.req.destDir, job.tree.prefix, job.rel);
  }

  private progress(bytes: number): void {
    this.doneBytes += bytes;
    if (this.doneBytes - this.lastProgress >= 16 * 1024 * 1024 || this.doneBytes >= this.totalBytes) {
      this.lastProgress = this.doneBytes;
      this.req.onProgress?.(Math.floor(this.doneBytes / 1024), Math.ceil(this.totalBytes / 1024));
    }
  }

  /** syncfs of the backup's file system, then the pending records go to the journal. */
  private flush(): Promise<void> {
    return this.store.flush(async () => {
      const res = await run('sync', ['-f', this.req.destDir]);
      if (res.code !== 0) throw new BarmanError(`sync -f ${this.req.destDir} failed: ${res.stderr.trim()}`);
    });
  }

  private record(job: Job, size: number, sha256: string, map: Buffer): void {
    const p = `${job.tree.prefix}/${job.rel}`;
    this.store.add({ p, s: size, m: job.mtimeMs, h: sha256 }, map);
    this.known.set(`${job.tree.manifestPrefix}${job.rel}`, { size, sha256 });
  }

  /**
   * Change tracking for this copy (wal-guide.ts), or null: no basis to track from, or the WAL
   * cannot vouch for the changes (the reason is logged; every file is then read whole).
   */
  private async walChanges(started: BackupStarted | undefined): Promise<Omit<WalGuide, 'unlogged'> | null> {
    const basis = this.bases.find((b) => !b.interrupted);
    const reading = this.walReading;
    if (!reading) return null;
    if (!started || !basis) {
      reading.cancel();
      return null;
    }
    const off = (why: string) => {
      reading.cancel();
      log.info(`change tracking from the WAL is off for this backup (the changed files are read whole): ${why}`);
      return null;
    };
    if (!basis.wal) return off(`backup ${basis.id} has no start position`);
    const t0 = Date.now();
    try {
      const { pg } = started;
      const [blockSize, segmentBlocks, timeline] = await Promise.all([
        pg.setting('block_size'),
        pg.setting('segment_size'),
        pg.query<{ timeline_id: number }>('SELECT timeline_id FROM pg_control_checkpoint()').then((r) => r[0]?.timeline_id ?? null),
      ]);
      if (Number(blockSize) !== PAGE_SIZE) return off(`block_size is ${blockSize}, not ${PAGE_SIZE}`);
      if (timeline !== basis.wal.timeline) return off(`the timeline changed since backup ${basis.id} (${basis.wal.timeline} to ${timeline})`);
      // Much WAL since the basis (full-page images of most pages): most files changed nearly
      // everywhere, and reading them costs less than reading that WAL first.
      const walBytes = Number(parseLsn(started.startLsn) - basis.wal.from);
      if (walBytes > basis.size * MAX_WAL_SHARE && walBytes > MIN_WAL_SKIPPED) {
        return off(`${Math.round(walBytes / 1048576)} MiB of WAL since backup ${basis.id} started, more than ${MAX_WAL_SHARE * 100}% of its size`);
      }
      const changes = await reading.finish(parseLsn(started.startLsn), WAL_WAIT_MS);
      if (changes.unusable !== null) return off(changes.unusable);
      log.info(
        `change tracking: ${changes.records} WAL records from ${formatLsn(basis.wal.from)} (start of backup ${basis.id}) to ${started.startLsn} ` +
          `name blocks of ${changes.blocks.size} relation forks; read in ${Date.now() - t0} ms`,
      );
      return { changes, segmentBlocks: Number(segmentBlocks) };
    } catch (err) {
      return off(errorMessage(err));
    }
  }

  async run(sink: CopySink, agents: Promise<AgentSession[]>, started?: BackupStarted): Promise<{ extraCopyStats: [string, PyValue][]; knownChecksums: Map<string, { size: number; sha256: string }> }> {
    const tracking = this.walChanges(started);
    tracking.catch(() => undefined);
    const waited = Date.now();
    this.sessions.push(...(await agents));
    const first = this.sessions[0] as AgentSession;
    const t0 = Date.now();
    log.debug(`agents ready for the copy after ${t0 - waited} ms more`);
    this.flushTimer = setInterval(() => {
      if (this.store.pendingCount > 0) this.flush().catch((err: unknown) => (this.flushError ??= err));
    }, FLUSH_INTERVAL_MS);
    try {
      const trees = this.trees();
      const listings = await this.list(first, trees);
      const analysis = (Date.now() - t0) / 1000;
      const { dirs, pgControl } = await this.plan(trees, listings, await tracking);
      this.queue.sort((a, b) => b.size - a.size);
      let failure: unknown = null;
      await Promise.all(
        this.sessions.map((s) =>
          this.drain(s, sink).catch((err: unknown) => {
            failure ??= err;
            // One agent failing stops the others at once.
            for (const o of this.sessions) if (o !== s) o.kill();
          }),
        ),
      );
      if (failure) throw failure;
      // A backup without pg_control cannot be recovered: it goes last, alone (see PG_CONTROL).
      if (!pgControl) throw new BarmanError(`${PG_CONTROL} was not found in ${this.req.pgdata}`);
      this.queue.push(pgControl);
      await this.drain(first, sink);
      if (!this.known.has(PG_CONTROL)) throw new BarmanError(`${PG_CONTROL} vanished during the backup`);
      for (const [abs, mode, mtimeMs] of dirs.reverse()) {
        await fsp.chmod(abs, mode);
        await fsp.utimes(abs, mtimeMs / 1000, mtimeMs / 1000);
      }
      if (this.flushTimer) clearInterval(this.flushTimer);
      await this.flush();
      if (this.flushError) throw this.flushError;
      this.stats.seconds = (Date.now() - t0) / 1000;
      this.countBytes();
      await this.store.complete(this.stats);
      log.info(this.summary());
      return {
        extraCopyStats: [
          ['number_of_workers', this.req.jobs],
          ['analysis_time', pyFloat(analysis)],
        ],
        knownChecksums: this.known,
      };
    } catch (err) {
      this.countBytes();
      this.stats.seconds = (Date.now() - t0) / 1000;
      await this.store.saveStats(this.stats);
      throw err;
    } finally {
      if (this.flushTimer) clearInterval(this.flushTimer);
    }
  }

  killAll(): void {
    for (const s of new Set([...this.sessions, ...this.started])) s.kill();
  }

  private countBytes(): void {
    this.stats.bytesIn = this.sessions.reduce((n, s) => n + s.bytesIn, 0);
    this.stats.bytesOut = this.sessions.reduce((n, s) => n + s.bytesOut, 0);
  }

  summary(): string {
    const s = this.stats;
    const mib = (b: number) => `${(b / 1048576).toFixed(1)} MiB`;
    return (
      `agent copy: ${s.filesTotal} files, ${mib(s.bytesTotal)}; ${s.filesLinked} linked unread, ${s.filesUnchanged} unchanged, ` +
      `${s.filesDelta} sent in part${s.filesCloned ? ` (${s.filesCloned} over clones of the basis)` : ''}${s.filesTracked ? ` (${s.filesTracked} read only where the WAL changed them)` : ''}, ${s.filesFull} sent whole, ${s.filesVanished} vanished; ${s.pagesSent} of ${s.pagesRead} pages read were sent; ` +
      `${mib(s.bytesIn)} received, ${mib(s.bytesOut)} sent` +
      (s.resumedFrom ? `; resumed from ${s.resumedFrom}` : '')
    );
  }

  /** List every tree through the first agent. */
  private async list(s: AgentSession, trees: Tree[]): Promise<WireEntry[][]> {
    await s.json(T.LIST, { roots: trees.map((t) => ({ path: t.src, excludes: t.excludes })) });
    const out: WireEntry[][] = trees.map(() => []);
    for (;;) {
      const f = await s.next();
      if (f.type === T.LIST_END) return out;
      if (f.type !== T.ENTRIES) throw new BarmanError(`the barman-ts agent on ${this.ep.where} answered a listing with message type ${f.type}`);
      const { root, entries } = parseJson<{ root: number; entries: WireEntry[] }>(f.body, 'ENTRIES');
      const list = out[root];
      if (!list) throw new BarmanError(`the barman-ts agent on ${this.ep.where} listed an unknown tree`);
      for (const e of entries) {
        if (typeof e[0] !== 'string' || e[0] === '' || e[0].split('/').some((c) => c === '..' || c === '.' || c === '')) {
          throw new BarmanError(`the barman-ts agent on ${this.ep.where} listed an invalid path ${JSON.stringify(e[0])}`);
        }
        list.push(e);
      }
    }
  }

  /** Directories and links now; files: linked from a basis now, or queued. */
  private async plan(trees: Tree[], listings: WireEntry[][], tracking: Omit<WalGuide, 'unlogged'> | null): Promise<{ dirs: [string, number, number][]; pgControl: Job | null }> {
    const dirs: [string, number, number][] = [];
    const guide: WalGuide | null = tracking && { ...tracking, unlogged: new Set() };
    if (guide) {
      for (let t = 0; t < trees.length; t++) {
        for (const [rel, kind] of listings[t] ?? []) {
          const unlogged = kind === 'f' ? unloggedRelationOf(`${(trees[t] as Tree).manifestPrefix}${rel}`) : null;
          if (unlogged) guide.unlogged.add(unlogged);
        }
      }
    }
    const links: { job: Job; backup: BasisBackup; rec: FileRecord }[] = [];
    let pgControl: Job | null = null;
    for (let t = 0; t < trees.length; t++) {
      const tree = trees[t] as Tree;
      const root = path.join(this.req.destDir, tree.prefix);
      await fsp.mkdir(root, { recursive: true, mode: 0o700 });
      for (const [rel, kind, size, mtimeMs, mode, target] of listings[t] ?? []) {
        const abs = path.join(root, rel);
        if (kind === 'd') {
          await fsp.mkdir(abs, { mode: 0o700 });
          dirs.push([abs, mode, mtimeMs]);
          continue;
        }
        if (kind === 'l') {
          await fsp.symlink(target ?? '', abs);
          continue;
        }
        const job: Job = { id: this.nextId++, tree, rel, size, mtimeMs, mode, basis: null };
        this.stats.filesTotal += 1;
        this.totalBytes += size;
        if (tree.prefix === 'data' && rel === PG_CONTROL) {
          pgControl = job;
          continue;
        }
        const p = `${tree.prefix}/${rel}`;
        for (const backup of this.bases) {
          const rec = backup.reader.files.get(p);
          if (!rec) continue;
          job.basis = { backup, rec };
          if (rec.s === size && rec.m === mtimeMs && mtimeMs < backup.horizonMs - 1000) links.push({ job, backup, rec });
          else if (guide && !backup.interrupted) job.guided = guidedRead(`${tree.manifestPrefix}${rel}`, rec.s, guide);
          break;
        }
        if (!links.at(-1) || links.at(-1)?.job !== job) this.queue.push(job);
      }
    }
    await runPool(links, 8, async ({ job, backup, rec }) => {
      try {
        await this.share(path.join(backup.dir, rec.p), this.dest(job));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOENT' && code !== 'EMLINK') throw err;
        // The basis copy is gone (or has too many links): read the file instead.
        job.basis = null;
        job.guided = null;
        this.queue.push(job);
        return;
      }
      this.record(job, rec.s, rec.h, await backup.reader.map(rec));
      this.stats.filesLinked += 1;
      this.stats.bytesTotal += rec.s;
      this.progress(rec.s);
    });
    return { dirs, pgControl };
  }

  private async basisOf(job: Job): Promise<Basis | null> {
    if (!job.basis) return null;
    const { backup, rec } = job.basis;
    return { abs: path.join(backup.dir, rec.p), size: rec.s, map: await backup.reader.map(rec), sha256: rec.h, backupId: backup.id };
  }

  /** Feed one agent from the queue, WINDOW requests ahead, and receive what it sends. */
  private async drain(s: AgentSession, sink: CopySink): Promise<void> {
    const inflight: { job: Job; receiver: FileReceiver }[] = [];
    // One decoder per agent: a decoded message lives in its decoder until written.
    const decoder = new Decoder();
    const refill = async (): Promise<void> => {
      while (inflight.length < WINDOW && this.queue.length > 0) {
        const job = this.queue.shift() as Job;
        const basis = await this.basisOf(job);
        const guided = job.guided && basis ? job.guided : null;
        const clone = this.req.reuse === 'link' ? this.clone : null;
        const receiver = new FileReceiver(this.dest(job), job.mode, basis, this.hasher, (n) => sink.copied(n), this.share, this.fillGaps, clone, guided ? this.shaOf : null);
        inflight.push({ job, receiver });
        const file = path.join(job.tree.src, job.rel);
        if (guided) {
          const request: ReadPagesRequest = { id: job.id, path: file, from: guided.from };
          await s.send(T.READ_PAGES, ...encodeWithBinary(request, encodeRanges(guided.ranges)));
        } else {
          const request: ReadRequest = { id: job.id, path: file };
          await s.send(T.READ, ...encodeWithBinary(request, basis?.map ?? null));
        }
      }
    };
    try {
      await this.receive(s, inflight, refill, decoder);
    } catch (err) {
      // What was half-written goes (on a full disk, the space the failed backup's status needs).
      for (const { receiver } of inflight) await receiver.discard().catch(() => undefined);
      throw err;
    }
  }

  /**
   * Receive what one agent sends. Pages are verified here and written asynchronously (at most
   * WRITE_BUDGET bytes outstanding), and a file whose last message arrived is finished (its
   * remaining writes, times, mode) while the next file's pages arrive: the loop never waits for
   * the disk unless the budget is spent.
   */
  private async receive(s: AgentSession, inflight: { job: Job; receiver: FileReceiver }[], refill: () => Promise<void>, decoder: Decoder): Promise<void> {
    const budget = new ByteBudget(WRITE_BUDGET);
    const finishing = new Set<Promise<void>>();
    let finishError: unknown = null;
    try {
      for (;;) {
        await refill();
        while (inflight.length > 0) {
          if (finishError) throw finishError;
          if (this.flushError) throw this.flushError;
          const head = inflight[0] as (typeof inflight)[number];
          head.job.startedMs ??= Date.now();
          // Borrowed: decodeOwned copies what it keeps before the next message is read.
          const f = await s.next(true);
          if (f.type === T.PAGES) {
            const h = decodePages(f.body);
            if (h.id !== head.job.id) throw new BarmanError(`the barman-ts agent on ${this.ep.where} sent pages of another file than ${head.job.rel}`);
            await budget.reserve(h.rawLen);
            const { data, release } = decoder.decodeOwned(h.codec, h.payload, h.rawLen);
            head.receiver.pages(h, data, () => {
              release();
              budget.free(h.rawLen);
            });
            continue;
          }
          if (f.type === T.PASSED) {
            const { id, page } = decodePassed(f.body);
            if (id !== head.job.id) throw new BarmanError(`the barman-ts agent on ${this.ep.where} sent progress of another file than ${head.job.rel}`);
            head.receiver.passed(page);
            continue;
          }
          if (f.type !== T.READ_END) throw new BarmanError(`the barman-ts agent on ${this.ep.where} sent message type ${f.type} during a copy`);
          const end = parseJson<ReadEnd>(f.body, 'READ_END');
          if (end.id !== head.job.id) throw new BarmanError(`the barman-ts agent on ${this.ep.where} ended another file than ${head.job.rel}`);
          inflight.shift();
          const done: Promise<void> = this.finishFile(head.job, head.receiver, end)
            .catch(async (err: unknown) => {
              finishError ??= err;
              // What was half-written goes (on a full disk, the space the failed backup's status needs).
              await head.receiver.discard().catch(() => undefined);
            })
            .finally(() => finishing.delete(done));
          finishing.add(done);
          if (finishing.size >= MAX_FINISHING) await Promise.race(finishing);
          await refill();
        }
        // A file to read again (its basis was damaged) may have been queued meanwhile.
        await Promise.all(finishing);
        if (finishError) throw finishError;
        if (this.queue.length === 0) return;
      }
    } finally {
      await Promise.all(finishing);
    }
  }

  private async finishFile(job: Job, receiver: FileReceiver, end: ReadEnd): Promise<void> {
    const t0 = Date.now();
    const outcome = await receiver.finish(end);
    if (job.size >= 1 << 20) log.debug(`${job.tree.prefix}/${job.rel}: ${end.sent ?? 0} of ${end.pages ?? 0} pages received in ${t0 - (job.startedMs ?? t0)} ms, finished in ${Date.now() - t0} ms (${outcome.kind})`);
    this.stats.pagesRead += end.pages ?? 0;
    if (outcome.kind === 'vanished') {
      log.info(`${path.join(job.tree.src, job.rel)} vanished during the copy (dropped): skipped`);
      this.stats.filesVanished += 1;
      this.progress(job.size);
      return;
    }
    if (outcome.kind === 'refetch') {
      log.warning(`${job.tree.prefix}/${job.rel}: ${outcome.reason}: reading the whole file again`);
      this.queue.unshift({ ...job, id: this.nextId++, basis: null, guided: null });
      return;
    }
    if (!outcome.sha256) throw new BarmanError(`the barman-ts agent on ${this.ep.where} sent no checksum of ${job.rel}`);
    this.stats.pagesSent += outcome.sentPages;
    this.stats.bytesTotal += outcome.size;
    if (outcome.kind === 'linked') this.stats.filesUnchanged += 1;
    else if (job.basis && outcome.sentPages < pageCount(outcome.size)) {
      this.stats.filesDelta += 1;
      if (outcome.cloned) this.stats.filesCloned = (this.stats.filesCloned ?? 0) + 1;
      if (job.guided) this.stats.filesTracked = (this.stats.filesTracked ?? 0) + 1;
    }
    else this.stats.filesFull += 1;
    if (outcome.map.length !== pageCount(outcome.size) * HASH_BYTES) throw new BarmanError(`internal error: page map of ${job.rel}`);
    this.record(job, outcome.size, outcome.sha256, outcome.map);
    this.progress(job.size);
  }
}

/**
 * Whether the file system of `dir` clones files (reflink: XFS, btrfs), tried on a small file.
 * Where it does, changed files are read whole even with change tracking: a file built from the
 * WAL's pages over a clone of its basis must be read back whole here for its SHA-256, which
 * costs as much as the agent's read of it (more, measured on XFS on a loop device), and the
 * clone spares every other write.
 */
async function canCloneIn(dir: string): Promise<boolean> {
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  const a = path.join(dir, `.clone-probe-${process.pid}`);
  await fsp.writeFile(a, 'clone probe\n', { mode: 0o600, flag: 'wx' });
  try {
    await fsp.copyFile(a, `${a}.2`, fsp.constants.COPYFILE_EXCL | fsp.constants.COPYFILE_FICLONE_FORCE);
    return true;
  } catch (err) {
    if (CLONE_UNSUPPORTED.has((err as NodeJS.ErrnoException).code ?? '')) return false;
    throw err;
  } finally {
    await fsp.rm(a, { force: true });
    await fsp.rm(`${a}.2`, { force: true });
  }
}

/** Where a server's agents run: the database host, through ssh_command. */
export function agentEndpoint(srv: AgentBackupRequest['srv']): AgentEndpoint {
  return { sshCommand: srv.ssh_command, where: 'the database host', env: subprocessEnv(srv.path_prefix) };
}

/**
 * The copy's `jobs` agents, greeted with this copy's codec and seed: those the backup started
 * ahead (prestart.ts), more started now if needed. Every agent is put in `all` as soon as it
 * is there (for the clean-up, whatever happens); one that cannot be used stops everything.
 */
async function openAgents(req: AgentBackupRequest, ep: AgentEndpoint, hello: { codec: string; level: number; seed: string }, all: AgentSession[], stop: AbortSignal): Promise<AgentSession[]> {
  const n = Math.max(1, req.jobs);
  const early = req.agents?.take(stop) ?? [];
  // Started for more jobs than this copy has: let them go.
  for (const p of early.slice(n)) void p.then((s) => s.close(), () => undefined);
  const opened = await Promise.allSettled(
    Array.from({ length: n }, async (_, i) => {
      const s = await (early[i] ?? AgentSession.connect(ep, stop));
      all.push(s);
      await s.hello(hello);
      return s;
    }),
  );
  const failed = opened.find((o): o is PromiseRejectedResult => o.status === 'rejected');
  if (failed) {
    for (const s of all) s.kill();
    throw failed.reason;
  }
  return opened.map((o) => (o as PromiseFulfilledResult<AgentSession>).value);
}

/**
 * Set up a copy (basis, metadata), start greeting its agents, run `body` with the promise of
 * them (it waits for them only when the copy starts: the checkpoint of the backup's start runs
 * meanwhile), and always clean up.
 */
async function withAgentCopy<X>(req: AgentBackupRequest, track: boolean, body: (copy: AgentCopy, agents: Promise<AgentSession[]>) => Promise<X>): Promise<X> {
  const { srv } = req;
  if (!srv.ssh_command) throw new BarmanError('transfer_method = agent needs ssh_command (the agent is started through it)');
  if (req.signal?.aborted) throw new BarmanError('interrupted by signal before the backup started');
  const codec = requireCodec(String(srv.agent_compression ?? 'zstd'));
  const level = Number(srv.agent_compression_level ?? 1);
  // Stops the agents (started or starting) on a signal, and on any failure.
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  req.signal?.addEventListener('abort', onSignal, { once: true });
  const all: AgentSession[] = [];
  let opening: Promise<AgentSession[]> | null = null;
  let store: StoreWriter | null = null;
  let bases: BasisBackup[] = [];
  let threads: HashThreadPool | null = null;
  let shaThreads: HashThreadPool | null = null;
  let walReading: WalChangeReading | null = null;
  let failed = false;
  try {
    const t0 = Date.now();
    const swept = await sweepOrphans(srv, async (id) => (await fsp.stat(backupDir(srv, id)).catch(() => null)) !== null);
    if (swept.length > 0) log.info(`removed the agent metadata of ${swept.length} deleted backup(s): ${swept.join(', ')}`);
    bases = await chooseBasis(req);
    const seed = bases[0]?.reader.meta.seed ?? newSeed();
    const ep = agentEndpoint(srv);
    opening = openAgents(req, ep, { codec, level, seed }, all, stop.signal);
    opening.catch(() => undefined);
    // The fills of the files built over a basis: each thread checks the basis pages and copies
    // them with one direct read or write at a time: twice as many threads as agents let one
    // thread's I/O overlap another's (for -j 2, four threads: the 1 GiB file's fill ended
    // 1.1-1.7 s after the agent's read, against 2.6-2.9 s with two, in one A/B run). Each
    // thread costs an isolate and a 9 MiB buffer: never more than two beyond the agents.
    threads = new HashThreadPool(seed, Math.max(2, Math.min(2 * req.jobs, req.jobs + 2)), HASH_SLOTS, READ_CHUNK);
    shaThreads = new HashThreadPool(seed, 2 * Math.max(1, req.jobs), SHA_SLOTS, READ_CHUNK);
    store = await StoreWriter.create(srv, req.backupId, seed);
    const hasher = await PageHasher.create(seed);
    const resume = bases[0] && !bases[0].reader.meta.complete ? bases[0] : null;
    if (resume) req.info?.(`Resuming the interrupted backup ${resume.id}: the ${resume.reader.files.size} files it received are not fetched again`);
    log.debug(`agent copy prepared in ${Date.now() - t0} ms (basis: ${bases.map((b) => b.id).join(', ') || 'none'})`);
    // Change tracking: the WAL since the basis started is read while PostgreSQL makes the
    // checkpoint of this backup's start; not where the file system clones (canCloneIn).
    const cloning = req.reuse === 'link' && (await canCloneIn(req.destDir));
    const tracked = bases.find((b) => !b.interrupted);
    walReading = track && req.reuse !== 'off' && !cloning && tracked?.wal ? await WalChangeReading.start(srv, tracked.wal, stop.signal) : null;
    const copy = new AgentCopy(req, ep, hasher, store, bases, threads, shaThreads, all, walReading, cloning);
    return await body(copy, opening);
  } catch (err) {
    failed = true;
    stop.abort();
    if (req.signal?.aborted) throw new BarmanError('interrupted by signal');
    throw err instanceof BarmanError ? err : new BarmanError(errorMessage(err));
  } finally {
    req.signal?.removeEventListener('abort', onSignal);
    await opening?.catch(() => undefined);
    // BYE said and their input closed, the agents exit on their own (close() kills one that
    // lingers): the backup goes on meanwhile (stop, labels, manifest) instead of waiting for
    // ssh to tear down.
    const closing = Promise.all(all.map((s) => s.close()));
    if (failed) await closing;
    await store?.close();
    walReading?.cancel();
    await threads?.close();
    await shaThreads?.close();
    for (const b of bases) await b.reader.close();
  }
}

/** The copy step of backup_method = rsync with transfer_method = agent. */
export async function agentCopy(req: AgentBackupRequest): Promise<CopyOutcome> {
  if (req.srv.backup_method !== 'rsync') throw new BarmanError(`transfer_method = agent needs backup_method = rsync (this server has ${req.srv.backup_method})`);
  return withAgentCopy(req, true, (copy, agents) =>
    concurrentBackup(
      req,
      (sink, started) => copy.run(sink, agents, started),
      () => copy.killAll(),
    ),
  );
}

/**
 * The same copy without PostgreSQL's backup API (tests compare it with rsync on a stopped
 * cluster): trees copied into `destDir` and made durable, metadata recorded under `backupId`.
 */
export async function agentCopyTrees(req: AgentBackupRequest): Promise<CopyStepResult> {
  return withAgentCopy(req, false, async (copy, agents) => {
    const sink = new CopySink(req.destDir, process.env);
    const res = await copy.run(sink, agents);
    await sink.finish();
    return res;
  });
}
