/**
 * Copying directory trees with rsync, shared by the rsync backup methods (PGDATA and tablespaces
 * from the PostgreSQL host) and by `sync-backup` on a passive node (a backup directory from the
 * primary backup server). One tree = one source directory (local, or `:path` through an ssh
 * command) and its destination.
 *
 * Steps per tree: list it (`rsync --list-only`, the analysis) while its directory skeleton is
 * created, then copy its files in buckets of similar size, one rsync per bucket, `jobs` at a time
 * across all trees; a data directory's global/pg_control goes last, alone. With several jobs,
 * big files that rsync would copy whole are read as byte ranges in parallel instead, each range
 * a job of the same pool (ranged-copy.ts): one rsync moves a file in one stream, at the speed of
 * one ssh session whatever the number of jobs.
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { pyDict, pyFloat, type PyValue } from '../catalog/pyliteral.js';
import { BarmanError } from '../util/errors.js';
import { EarlyWriteback, syncFilesystems } from '../recovery/copy.js';
import { logger } from '../util/log.js';
import { statIfExists } from '../util/fsutil.js';
import { runPool, startBatches } from '../util/pool.js';
import { rangedMinBytes } from '../util/ranges.js';
import { RangedFile, type ChildStarter, type HostState } from './ranged-copy.js';
import {
  copyArgs,
  dirsArgs,
  listArgs,
  parseListOnly,
  planTreeCopy,
  rangedCopyThreshold,
  rsyncCopySucceeded,
  rsyncErrorLine,
  type CopyJobPlan,
  type ListedEntry,
  type ReuseMode,
  type Transport,
} from './rsync-plan.js';

const log = logger('backup.rsync');

/** One directory tree to copy. */
export interface Tree {
  /** copy_stats item name: `pgdata` (a data directory: pg_control goes last) or another name. */
  item: string;
  src: string;
  dest: string;
  excludes: readonly string[];
  /** The same tree in an earlier copy, whose unchanged files are reused (reuse_backup). */
  reuseDir: string | null;
  transport: Transport;
}

interface Job extends CopyJobPlan {
  tree: Tree;
}

/**
 * Durability of the copy: nothing rsync writes is fsynced by rsync itself. One `sync -f`
 * (syncfs) of the destination's file system covers every file and directory entry at once,
 * which per-file `rsync --fsync` does not (it leaves the directories) and which costs less than
 * one fsync per file. Write-back is started during the copy so that the final sync has little
 * left to do.
 */
export class CopySink {
  private readonly writeback: EarlyWriteback;

  constructor(
    private readonly destDir: string,
    private readonly env: NodeJS.ProcessEnv,
  ) {
    this.writeback = new EarlyWriteback(destDir, env);
  }

  copied(bytes: number): void {
    this.writeback.add(bytes);
  }

  /** Everything under the destination, and its own entry in its parent, on disk. */
  async finish(): Promise<void> {
    await this.writeback.drain();
    const how = await syncFilesystems([this.destDir], [path.dirname(this.destDir)], this.env);
    log.debug(`copied files made durable (${how})`);
  }
}

/** Children of one copy (rsync workers, ranged reads), killed on abort or when one worker fails. */
export class RsyncRunner implements ChildStarter {
  private readonly children = new Set<ChildProcess>();
  private readonly groups = new Set<ChildProcess>();
  private stopped = false;

  constructor(
    private readonly env: NodeJS.ProcessEnv,
    signal?: AbortSignal,
  ) {
    signal?.addEventListener('abort', () => this.killAll(), { once: true });
    if (signal?.aborted) this.stopped = true;
  }

  killAll(): void {
    this.stopped = true;
    for (const c of this.children) c.kill('SIGTERM');
    for (const c of this.groups) {
      try {
        if (c.pid !== undefined) process.kill(-c.pid, 'SIGTERM');
      } catch {
        // Already gone.
      }
    }
  }

  /**
   * A ranged-copy child, in a process group of its own: `sh -c '<ssh_command> "$@"'` may fork
   * ssh rather than exec it, and an ssh left behind would keep the pipe, and the copy, open.
   */
  start(cmd: string, args: readonly string[], stdio: StdioOptions = ['ignore', 'pipe', 'pipe']): ChildProcess {
    if (this.stopped) throw new BarmanError('interrupted');
    log.debug(`running ${cmd} ${args.join(' ')}`);
    const child = spawn(cmd, [...args], { env: this.env, stdio, detached: true });
    this.groups.add(child);
    child.on('close', () => this.groups.delete(child));
    child.on('error', () => this.groups.delete(child));
    return child;
  }

  run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    if (this.stopped) return Promise.reject(new BarmanError('interrupted by signal'));
    log.debug(`running rsync ${args.join(' ')}`);
    return new Promise((resolve, reject) => {
      const child = spawn('rsync', args, { env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
      this.children.add(child);
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', (err) => {
        this.children.delete(child);
        reject(new BarmanError(`cannot run rsync: ${err.message}`));
      });
      child.on('close', (code, sig) => {
        this.children.delete(child);
        resolve({ code: code ?? (sig ? 128 : -1), stdout, stderr: sig && !stderr ? `killed by ${sig}` : stderr });
      });
    });
  }

  /** Run and throw a one-line BarmanError unless rsync succeeded (vanished files allowed unless `strict`). */
  async check(args: string[], what: string, strict = false): Promise<string> {
    const r = await this.run(args);
    if (strict ? r.code !== 0 : !rsyncCopySucceeded(r.code, r.stderr)) {
      if (this.stopped) throw new BarmanError('interrupted');
      throw new BarmanError(`rsync ${what} failed with exit code ${r.code}: ${rsyncErrorLine(r.stderr)}`);
    }
    return r.stdout;
  }
}

async function existingDir(p: string): Promise<string | null> {
  return (await statIfExists(p))?.isDirectory() ? p : null;
}

/** `reuseDir` when it is an existing directory (reuse from it), else null. */
export async function reusableDir(reuse: ReuseMode, dir: string | null): Promise<string | null> {
  return reuse !== 'off' && dir !== null ? existingDir(dir) : null;
}

/**
 * List a tree and create its directory skeleton (two rsync sessions, run side by side), and
 * meanwhile read which paths the reused copy of the tree has (null: no reused copy).
 */
async function analyseTree(tree: Tree, runner: RsyncRunner, strict: boolean): Promise<{ listing: ListedEntry[]; basis: Set<string> | null }> {
  const listing = runner.check(listArgs(tree.transport, tree.src, tree.excludes), `listing of ${tree.src}`, strict);
  const skeleton = fsp
    .mkdir(tree.dest, { recursive: true, mode: 0o700 })
    .then(() => runner.check(dirsArgs(tree.transport, tree.src, tree.excludes, tree.dest), `of the directories of ${tree.src}`, strict));
  const basis =
    tree.reuseDir === null
      ? Promise.resolve(null)
      : fsp
          .readdir(tree.reuseDir, { recursive: true })
          .then((names) => new Set(names))
          // Unreadable: treat every file as new (whole-file); rsync still links what matches.
          .catch(() => null);
  const [text, , names] = await Promise.all([listing, skeleton, basis]);
  return { listing: parseListOnly(text), basis: names };
}

/** One job of the worker pool: an rsync bucket, or one range of a ranged file. */
type Work = { tree: Tree; bytes: number } & ({ kind: 'rsync'; job: Job } | { kind: 'range'; file: RangedFile; index: number });

export interface TreeCopyOptions {
  jobs: number;
  reuse: ReuseMode;
  /**
   * Begin time (epoch seconds) of the copy being reused: files modified after it are copied
   * again whatever size and mtime say (see isAfterHorizon). Null: no reused copy.
   */
  horizonSec: number | null;
  onProgress?: (doneKb: number, totalKb: number) => void;
  /**
   * A source file that vanishes fails the copy. Off for a live data directory (a dropped table
   * is normal, WAL replay recreates what is needed); on for a backup, which must be complete.
   */
  strict?: boolean;
  /** Files that need no copy (already here from an earlier, interrupted run). */
  skip?: (tree: Tree, entry: ListedEntry) => boolean;
  /** Told once files of a tree are complete here (an rsync bucket or a ranged file done). */
  onCopied?: (tree: Tree, names: readonly string[]) => Promise<void>;
  /** Split rsync buckets larger than this (progress that an interrupted copy can keep). */
  maxBucketBytes?: number;
  /** Workers start `startBatchSize` at a time, `startBatchPeriod` seconds apart (parallel_jobs_start_batch_*). */
  startBatchSize?: number;
  startBatchPeriod?: number;
  signal?: AbortSignal;
}

export interface TreeCopyResult {
  /** copy_stats entries after copy_time/total_time (Barman's order). */
  stats: [string, PyValue][];
  /** What each tree held at the analysis (by item). */
  listings: Map<string, ListedEntry[]>;
  /** Bytes received over the transport (rsync's "Total bytes received" and ranged reads). */
  bytesReceived: number;
}

/** A bucket as several ones of at most `max` bytes each (a file alone may be bigger). */
export function splitBucket<T extends CopyJobPlan>(bucket: T, sizes: ReadonlyMap<string, number>, max: number): T[] {
  if (!(max > 0) || bucket.bytes <= max) return [bucket];
  const out: T[] = [];
  let cur: T = { ...bucket, names: [], bytes: 0 };
  for (const name of bucket.names) {
    const size = sizes.get(name) ?? 0;
    if (cur.names.length > 0 && cur.bytes + size > max) {
      out.push(cur);
      cur = { ...bucket, names: [], bytes: 0 };
    }
    cur.names.push(name);
    cur.bytes += size;
  }
  if (cur.names.length > 0) out.push(cur);
  return out;
}

/** `Total bytes received: 1,234` of `rsync --stats`, or 0. */
export function statsBytesReceived(stdout: string): number {
  const m = /Total bytes received:\s*([\d,.]+)/.exec(stdout);
  return m ? Number((m[1] ?? '0').replace(/[,.]/g, '')) : 0;
}

/**
 * Copy every tree; returns the copy_stats entries, the listings and the bytes received. Throws
 * on the first failed worker (the others are stopped). pg_control goes last, alone, once every
 * other file is copied (see PG_CONTROL).
 */
export async function copyTrees(trees: readonly Tree[], runner: RsyncRunner, listDir: string, sink: CopySink, opts: TreeCopyOptions): Promise<TreeCopyResult> {
  const jobs = Math.max(1, opts.jobs);
  const strict = opts.strict === true;
  const minRanged = rangedMinBytes();
  // Per host: after one refusal of GNU dd options, the other big files go to rsync at once.
  const hosts = new Map<string, HostState>();
  const listings = new Map<string, ListedEntry[]>();
  const analysisStart = Date.now();
  const work: Work[] = [];
  const finalSteps: Job[] = [];
  // The trees are analysed in parallel: each analysis is mostly ssh round trips.
  const analysisPerItem = await Promise.all(
    trees.map(async (tree): Promise<[string, PyValue]> => {
      const t0 = Date.now();
      const analysed = await analyseTree(tree, runner, strict);
      listings.set(tree.item, analysed.listing);
      const listing = opts.skip ? analysed.listing.filter((e) => e.kind !== 'file' || !opts.skip?.(tree, e)) : analysed.listing;
      const basis = analysed.basis;
      const inBasis = basis === null ? null : (name: string) => basis.has(name);
      const rangedMin = rangedCopyThreshold(tree.transport, jobs, minRanged);
      const plan = planTreeCopy(listing, { jobs, horizonSec: opts.horizonSec, inBasis, isPgdata: tree.item === 'pgdata', rangedMinBytes: rangedMin });
      const sizes = new Map(listing.map((e) => [e.name, e.size]));
      for (const b of plan.buckets) {
        for (const part of splitBucket(b, sizes, opts.maxBucketBytes ?? 0)) work.push({ kind: 'rsync', tree, bytes: part.bytes, job: { tree, ...part } });
      }
      const hostKey = tree.transport.sshCommand ?? '';
      const host = hosts.get(hostKey) ?? { ddUnusable: null };
      hosts.set(hostKey, host);
      for (const f of plan.ranged) {
        const file = new RangedFile(runner, tree.transport.sshCommand, host, path.join(tree.src, f.name), path.join(tree.dest, f.name), f);
        f.ranges.forEach((r, index) => work.push({ kind: 'range', tree, bytes: r.length, file, index }));
      }
      if (plan.last) finalSteps.push({ tree, ...plan.last });
      const forced = plan.buckets.filter((b) => b.force).reduce((n, b) => n + b.names.length, 0);
      const files = plan.buckets.reduce((n, b) => n + b.names.length, 0) + (plan.last?.names.length ?? 0) + plan.ranged.length;
      const ranges = plan.ranged.reduce((n, f) => n + f.ranges.length, 0);
      const skipped = analysed.listing.length - listing.length;
      log.info(
        `${tree.item}: ${files} files (${forced} modified since the reused copy started${skipped > 0 ? `, ${skipped} already copied` : ''}), ${plan.buckets.length + (plan.last ? 1 : 0)} rsync jobs` +
          (plan.ranged.length > 0 ? `, ${plan.ranged.length} big files in ${ranges} ranged reads` : ''),
      );
      return [tree.item, pyFloat((Date.now() - t0) / 1000)];
    }),
  );
  const analysisTime = (Date.now() - analysisStart) / 1000;

  const totalKb = Math.ceil([...work, ...finalSteps].reduce((s, w) => s + w.bytes, 0) / 1024);
  let doneBytes = 0;
  let bytesReceived = 0;
  opts.onProgress?.(0, totalKb);
  const serial = new Map<string, number>();
  const span = new Map<string, { start: number; end: number }>();
  let reportedBytes = 0;
  /** `planned` more bytes of the plan done, `written` more bytes on disk here. */
  const progress = (planned: number, written: number, always = true): void => {
    doneBytes += planned;
    if (written > 0) sink.copied(written);
    // Streamed ranges report every chunk: the progress callback only every 16 MiB.
    if (always || doneBytes - reportedBytes >= 16 * 1024 * 1024) {
      reportedBytes = doneBytes;
      opts.onProgress?.(Math.floor(doneBytes / 1024), totalKb);
    }
  };
  const account = (tree: Tree, t0: number): void => {
    const t1 = Date.now();
    serial.set(tree.item, (serial.get(tree.item) ?? 0) + (t1 - t0) / 1000);
    const s = span.get(tree.item);
    span.set(tree.item, { start: Math.min(s?.start ?? t0, t0), end: Math.max(s?.end ?? t1, t1) });
  };
  let n = 0;
  const rsyncJob = async (job: Job, strictJob: boolean): Promise<void> => {
    const listFile = path.join(listDir, `files-${n++}`);
    await fsp.writeFile(listFile, job.names.map((f) => `${f}\0`).join(''), { mode: 0o600 });
    const copyOpts = { reuse: opts.reuse, reuseDir: job.tree.reuseDir, force: job.force, wholeFile: job.wholeFile };
    const out = await runner.check(['--stats', ...copyArgs(job.tree.transport, job.tree.src, job.tree.dest, listFile, copyOpts)], `copy of ${job.tree.src}`, strictJob);
    bytesReceived += statsBytesReceived(out);
    await opts.onCopied?.(job.tree, job.names);
  };
  /** Copy one range; returns the bytes written that `onData` did not report. */
  const rangeJob = async (w: Extract<Work, { kind: 'range' }>, onData: (bytes: number) => void): Promise<number> => {
    const { received, outcome } = await w.file.copyRange(w.index, onData);
    bytesReceived += received;
    if (outcome === 'vanished') {
      if (strict) throw new BarmanError(`${w.file.src} vanished during the copy`);
      log.info(`${w.file.src} vanished during the copy (dropped): skipped`);
    }
    if (outcome === 'copied') await opts.onCopied?.(w.tree, [w.file.plan.name]);
    if (outcome === 'fallback') {
      // The file's ranges are all over: its rsync copy takes this worker's turn.
      log.debug(`copying ${w.file.src} with rsync instead`);
      await rsyncJob({ tree: w.tree, names: [w.file.plan.name], bytes: w.file.plan.size, force: false, wholeFile: true }, strict);
      return w.file.plan.size;
    }
    return 0;
  };
  let warnedDd = false;
  const copy = async (w: Work, strictJob = strict): Promise<void> => {
    const t0 = Date.now();
    let streamed = 0;
    let written = w.bytes;
    try {
      if (w.kind === 'rsync') await rsyncJob(w.job, strictJob);
      else
        written = await rangeJob(w, (bytes) => {
          streamed += bytes;
          progress(bytes, bytes, false);
        });
    } catch (err) {
      runner.killAll(); // a dropped connection fails one worker: stop the others at once
      throw err;
    }
    if (w.kind === 'range' && !warnedDd) {
      const bad = [...hosts.values()].find((h) => h.ddUnusable !== null);
      if (bad) {
        warnedDd = true;
        log.warning(`the source host's dd cannot read byte ranges (${bad.ddUnusable}): big files are copied by rsync in one stream each`);
      }
    }
    account(w.tree, t0);
    progress(Math.max(0, w.bytes - streamed), written);
  };
  // Largest jobs first: the pool then ends with the small ones, keeping every worker busy.
  work.sort((a, b) => b.bytes - a.bytes);
  const gate = startBatches(jobs, opts.startBatchSize ?? jobs, opts.startBatchPeriod ?? 0, opts.signal);
  await runPool(work, jobs, async (w) => {
    await gate();
    await copy(w);
  });
  // A backup without pg_control cannot be recovered: here a vanished file is a failure.
  for (const job of finalSteps) await copy({ kind: 'rsync', tree: job.tree, bytes: job.bytes, job }, true);
  const items = trees.map((t) => t.item);
  return {
    stats: [
      ['number_of_workers', jobs],
      ['analysis_time', pyFloat(analysisTime)],
      ['analysis_time_per_item', pyDict(analysisPerItem)],
      ['copy_time_per_item', pyDict(items.map((i) => [i, pyFloat(((span.get(i)?.end ?? 0) - (span.get(i)?.start ?? 0)) / 1000)]))],
      ['serialized_copy_time_per_item', pyDict(items.map((i) => [i, pyFloat(serial.get(i) ?? 0)]))],
      ['serialized_copy_time', pyFloat([...serial.values()].reduce((a, b) => a + b, 0))],
    ],
    listings,
    bytesReceived,
  };
}
