/**
 * backup_method = rsync (through `ssh_command`) and local-rsync (same host, run as the
 * PostgreSQL user): PostgreSQL's concurrent backup API on one session kept open from start to
 * stop, the data directory and each tablespace copied by rsync (`base/<id>/data`,
 * `base/<id>/<oid>`), optionally in parallel and reusing the previous backup's unchanged files.
 *
 * Steps per tree: list it (`rsync --list-only`, the analysis) while its directories are created,
 * then copy its files in buckets of similar size, one rsync per bucket, `jobs` at a time across
 * all trees; then global/pg_control alone, and only then the stop call. The backup_label /
 * tablespace_map it returns are written into `data/`, and the backup is synced to disk.
 *
 * With several jobs, big files that rsync would copy whole are read as byte ranges in parallel
 * instead, each range a job of the same pool (ranged-copy.ts): one rsync moves a file in one
 * stream, at the speed of one ssh session whatever the number of jobs.
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { constants as fsConstants, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { pyDict, pyFloat, type PyValue } from '../catalog/pyliteral.js';
import { subprocessEnv } from '../postgres/binaries.js';
import { PgConnection, type Tablespace } from '../postgres/connection.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { faultPoint } from '../util/fault.js';
import { EarlyWriteback, syncFilesystems } from '../recovery/copy.js';
import { fsyncDir, writeFileAtomic } from '../util/fsutil.js';
import { logger } from '../util/log.js';
import { runPool, startBatches } from '../util/pool.js';
import type { CopyOutcome } from './copy-outcome.js';
import { RangedFile, type ChildStarter, type HostState } from './ranged-copy.js';
import { rangedMinBytes } from '../util/ranges.js';
import {
  PGDATA_EXCLUDES,
  TABLESPACE_EXCLUDES,
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

export interface RsyncBackupRequest extends ConcurrentBackupRequest {
  jobs: number;
  reuse: ReuseMode;
  /** The previous DONE rsync backup (`base/<id>` and its begin time), for reuse_backup. */
  previous: { dir: string; beginTimeSec: number } | null;
  /** KB/s for the data directory (tablespaces: tablespace_bandwidth_limit first). */
  bwlimit: number | null;
  onProgress?: (doneKb: number, totalKb: number) => void;
  /** `--jobs-start-batch-size` / `--jobs-start-batch-period` (else parallel_jobs_start_batch_*). */
  startBatchSize?: number;
  startBatchPeriod?: number;
}

/** One directory tree to copy: the data directory or a tablespace. */
interface Tree {
  /** copy_stats item name: `pgdata` or the tablespace name. */
  item: string;
  src: string;
  dest: string;
  excludes: readonly string[];
  reuseDir: string | null;
  transport: Transport;
}

interface Job extends CopyJobPlan {
  tree: Tree;
}

/**
 * Durability of the copy: nothing rsync writes is fsynced by rsync itself. One `sync -f`
 * (syncfs) of the backup's file system at the end covers every file and directory entry at
 * once, which per-file `rsync --fsync` does not (it leaves the directories) and which costs less
 * than one fsync per file. Write-back is started during the copy so that the final sync has
 * little left to do.
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

  /** Everything under the backup directory, and its own entry in `base/`, on disk. */
  async finish(): Promise<void> {
    await this.writeback.drain();
    const how = await syncFilesystems([this.destDir], [path.dirname(this.destDir)], this.env);
    log.debug(`backup files made durable (${how})`);
  }
}

/** Children of this backup (rsync workers, ranged reads), killed on abort or when one worker fails. */
class RsyncRunner implements ChildStarter {
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
  return (await fsp.stat(p).catch(() => null))?.isDirectory() ? p : null;
}

async function planTrees(req: RsyncBackupRequest): Promise<Tree[]> {
  const { srv } = req;
  const base: Transport = { sshCommand: srv.backup_method === 'rsync' ? srv.ssh_command : null, bwlimit: req.bwlimit, networkCompression: srv.network_compression };
  const reuseFrom = async (sub: string) => (req.reuse !== 'off' && req.previous ? existingDir(path.join(req.previous.dir, sub)) : null);
  const trees: Tree[] = [
    { item: 'pgdata', src: req.pgdata, dest: path.join(req.destDir, 'data'), excludes: PGDATA_EXCLUDES, reuseDir: await reuseFrom('data'), transport: base },
  ];
  const tsLimits = (srv.tablespace_bandwidth_limit ?? {}) as Record<string, number>;
  for (const ts of req.tablespaces) {
    trees.push({
      item: ts.name,
      src: ts.location,
      dest: path.join(req.destDir, String(ts.oid)),
      excludes: TABLESPACE_EXCLUDES,
      reuseDir: await reuseFrom(String(ts.oid)),
      transport: { ...base, bwlimit: tsLimits[ts.name] ?? req.bwlimit },
    });
  }
  return trees;
}

/**
 * List a tree and create its directory skeleton (two rsync sessions, run side by side), and
 * meanwhile read which paths the reused backup's copy of the tree has (null: no reused backup).
 */
async function analyseTree(tree: Tree, runner: RsyncRunner): Promise<{ listing: ListedEntry[]; basis: Set<string> | null }> {
  const listing = runner.check(listArgs(tree.transport, tree.src, tree.excludes), `listing of ${tree.src}`);
  const skeleton = fsp
    .mkdir(tree.dest, { recursive: true, mode: 0o700 })
    .then(() => runner.check(dirsArgs(tree.transport, tree.src, tree.excludes, tree.dest), `of the directories of ${tree.src}`));
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

/**
 * Copy every tree; returns the copy_stats entries. Throws on the first failed worker.
 * pg_control goes last, alone, once every other file is copied (see PG_CONTROL).
 */
async function copyTrees(req: RsyncBackupRequest, trees: Tree[], runner: RsyncRunner, listDir: string, sink: CopySink): Promise<[string, PyValue][]> {
  const jobs = Math.max(1, req.jobs);
  const horizon = req.reuse !== 'off' && req.previous ? req.previous.beginTimeSec : null;
  const minRanged = rangedMinBytes();
  // Per host: after one refusal of GNU dd options, the other big files go to rsync at once.
  const hosts = new Map<string, HostState>();
  const analysisStart = Date.now();
  const work: Work[] = [];
  const finalSteps: Job[] = [];
  // The trees are analysed in parallel: each analysis is mostly ssh round trips.
  const analysisPerItem = await Promise.all(
    trees.map(async (tree): Promise<[string, PyValue]> => {
      const t0 = Date.now();
      const { listing, basis } = await analyseTree(tree, runner);
      const inBasis = basis === null ? null : (name: string) => basis.has(name);
      const rangedMin = rangedCopyThreshold(tree.transport, jobs, minRanged);
      const plan = planTreeCopy(listing, { jobs, horizonSec: horizon, inBasis, isPgdata: tree.item === 'pgdata', rangedMinBytes: rangedMin });
      for (const b of plan.buckets) work.push({ kind: 'rsync', tree, bytes: b.bytes, job: { tree, ...b } });
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
      log.info(
        `${tree.item}: ${files} files (${forced} modified since the reused backup started), ${plan.buckets.length + (plan.last ? 1 : 0)} rsync jobs` +
          (plan.ranged.length > 0 ? `, ${plan.ranged.length} big files in ${ranges} ranged reads` : ''),
      );
      return [tree.item, pyFloat((Date.now() - t0) / 1000)];
    }),
  );
  const analysisTime = (Date.now() - analysisStart) / 1000;

  const totalKb = Math.ceil([...work, ...finalSteps].reduce((s, w) => s + w.bytes, 0) / 1024);
  let doneBytes = 0;
  req.onProgress?.(0, totalKb);
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
      req.onProgress?.(Math.floor(doneBytes / 1024), totalKb);
    }
  };
  const account = (tree: Tree, t0: number): void => {
    const t1 = Date.now();
    serial.set(tree.item, (serial.get(tree.item) ?? 0) + (t1 - t0) / 1000);
    const s = span.get(tree.item);
    span.set(tree.item, { start: Math.min(s?.start ?? t0, t0), end: Math.max(s?.end ?? t1, t1) });
  };
  let n = 0;
  const rsyncJob = async (job: Job, strict: boolean): Promise<void> => {
    const listFile = path.join(listDir, `files-${n++}`);
    await fsp.writeFile(listFile, job.names.map((f) => `${f}\0`).join(''), { mode: 0o600 });
    const opts = { reuse: req.reuse, reuseDir: job.tree.reuseDir, force: job.force, wholeFile: job.wholeFile };
    await runner.check(copyArgs(job.tree.transport, job.tree.src, job.tree.dest, listFile, opts), `copy of ${job.tree.src}`, strict);
  };
  /** Copy one range; returns the bytes written that `onData` did not report. */
  const rangeJob = async (w: Extract<Work, { kind: 'range' }>, onData: (bytes: number) => void): Promise<number> => {
    const { outcome } = await w.file.copyRange(w.index, onData);
    if (outcome === 'vanished') log.info(`${w.file.src} vanished during the copy (dropped): skipped`);
    if (outcome === 'fallback') {
      // The file's ranges are all over: its rsync copy takes this worker's turn.
      log.debug(`copying ${w.file.src} with rsync instead`);
      await rsyncJob({ tree: w.tree, names: [w.file.plan.name], bytes: w.file.plan.size, force: false, wholeFile: true }, false);
      return w.file.plan.size;
    }
    return 0;
  };
  let warnedDd = false;
  const copy = async (w: Work, strict = false): Promise<void> => {
    const t0 = Date.now();
    let streamed = 0;
    let written = w.bytes;
    try {
      if (w.kind === 'rsync') await rsyncJob(w.job, strict);
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
        log.warning(`the PostgreSQL host's dd cannot read byte ranges (${bad.ddUnusable}): big files are copied by rsync in one stream each`);
      }
    }
    account(w.tree, t0);
    progress(Math.max(0, w.bytes - streamed), written);
  };
  // Largest jobs first: the pool then ends with the small ones, keeping every worker busy.
  work.sort((a, b) => b.bytes - a.bytes);
  const gate = startBatches(jobs, req.startBatchSize ?? req.srv.parallel_jobs_start_batch_size, req.startBatchPeriod ?? req.srv.parallel_jobs_start_batch_period, req.signal);
  await runPool(work, jobs, async (w) => {
    await gate();
    await copy(w);
  });
  // A backup without pg_control cannot be recovered: here a vanished file is a failure.
  for (const job of finalSteps) await copy({ kind: 'rsync', tree: job.tree, bytes: job.bytes, job }, true);
  const items = trees.map((t) => t.item);
  return [
    ['number_of_workers', jobs],
    ['analysis_time', pyFloat(analysisTime)],
    ['analysis_time_per_item', pyDict(analysisPerItem)],
    ['copy_time_per_item', pyDict(items.map((i) => [i, pyFloat(((span.get(i)?.end ?? 0) - (span.get(i)?.start ?? 0)) / 1000)]))],
    ['serialized_copy_time_per_item', pyDict(items.map((i) => [i, pyFloat(serial.get(i) ?? 0)]))],
    ['serialized_copy_time', pyFloat([...serial.values()].reduce((a, b) => a + b, 0))],
  ];
}

/**
 * local-rsync reads PGDATA on this host with barman's own rights: only the PostgreSQL OS user
 * (barman_user = postgres) can. Said in one line before the server is asked to start a backup,
 * rather than as an rsync permission error half-way.
 */
async function requireLocalAccess(pgdata: string, tablespaces: readonly Tablespace[]): Promise<void> {
  for (const dir of [pgdata, ...tablespaces.map((t) => t.location)]) {
    try {
      await fsp.access(dir, fsConstants.R_OK | fsConstants.X_OK);
      await fsp.readdir(dir);
    } catch (err) {
      throw new BarmanError(
        `backup_method = local-rsync: user ${os.userInfo().username} cannot read ${dir} (${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}): ` +
          'barman must run on the database host as the PostgreSQL OS user (barman_user)',
      );
    }
  }
}

/**
 * rsync copied `data/pg_tblspc/<oid>` as the server's links, to the live tablespaces (on this
 * very host with local-rsync): point them at the backup's own copies `base/<id>/<oid>`, as a
 * pg_basebackup backup has them, so that pg_verifybackup and a manifest read the backup, not
 * the server. Recovery re-creates these links anyway. New link + rename: never half-replaced.
 */
async function linkTablespaceCopies(destDir: string, tablespaces: readonly Tablespace[]): Promise<void> {
  const tblspc = path.join(destDir, 'data', 'pg_tblspc');
  for (const ts of tablespaces) {
    const copy = path.join(destDir, String(ts.oid));
    if (!(await fsp.stat(copy).catch(() => null))?.isDirectory()) continue;
    const link = path.join(tblspc, String(ts.oid));
    const tmp = `${link}.tmp`;
    await fsp.rm(tmp, { force: true });
    await fsp.symlink(copy, tmp);
    await fsp.rename(tmp, link);
  }
  if (tablespaces.length > 0) await fsyncDir(tblspc).catch(() => undefined);
}

/** What the concurrent backup frame needs to know (rsync and agent transfers alike). */
export interface ConcurrentBackupRequest {
  srv: ServerConfig;
  /** `base/<id>` */
  destDir: string;
  version: number;
  pgdata: string;
  tablespaces: readonly Tablespace[];
  immediateCheckpoint: boolean;
  label: string;
  signal?: AbortSignal;
  /** `--keepalive-interval` (else keepalive_interval): seconds between keepalive queries; 0 = none. */
  keepaliveInterval?: number;
}

/** What a copy step hands back: copy_stats entries and what else the outcome carries. */
export type CopyStepResult = Pick<CopyOutcome, 'extraCopyStats'> & Partial<Pick<CopyOutcome, 'knownChecksums'>>;

/**
 * PostgreSQL's concurrent backup API around a copy step, on one session kept open from start
 * to stop: start, `copy` (which must copy global/pg_control last), stop, then backup_label and
 * tablespace_map into `data/`, the tablespace links pointed at the backup's own copies, and one
 * syncfs. `abortCopy` stops the copy's processes when anything fails. Shared by the rsync
 * transfer and the barman-ts agent (src/agent/backup-copy.ts).
 */
export async function concurrentBackup(req: ConcurrentBackupRequest, copy: (sink: CopySink) => Promise<CopyStepResult>, abortCopy: () => void): Promise<CopyOutcome> {
  const { srv } = req;
  // The concurrent backup belongs to this session: closing it (on any failure) aborts it.
  const pg = await PgConnection.connect(srv.conninfo ?? '');
  // A session lost during the copy dooms the backup (only it can stop it): stop copying now.
  const unwatch = pg.onLost(() => abortCopy());
  let stopKeepalive = (): void => undefined;
  try {
    const startLsn = await pg.startBackup(req.label, req.immediateCheckpoint, req.version);
    log.info(`backup started at ${startLsn} on ${req.pgdata}`);
    faultPoint('backup:pg-started');
    // keepalive_interval: the session that holds the backup stays idle for the whole copy, long
    // enough for a firewall or a TCP timeout to drop it (which would abort the backup).
    stopKeepalive = pg.startKeepalive((req.keepaliveInterval ?? srv.keepalive_interval) * 1000);
    const copyStart = Date.now();
    const sink = new CopySink(req.destDir, process.env);
    let step: CopyStepResult;
    try {
      step = await copy(sink);
    } finally {
      stopKeepalive();
    }
    faultPoint('backup:files-copied');
    // Only now, with pg_control copied last, may the backup end (see PG_CONTROL).
    const stop = await pg.stopBackup(req.version);
    faultPoint('backup:pg-stopped');
    const copySeconds = (Date.now() - copyStart) / 1000;
    const dataDir = path.join(req.destDir, 'data');
    await writeFileAtomic(path.join(dataDir, 'backup_label'), stop.labelfile);
    if (stop.spcmapfile.trim() !== '') await writeFileAtomic(path.join(dataDir, 'tablespace_map'), stop.spcmapfile);
    await linkTablespaceCopies(req.destDir, req.tablespaces);
    await sink.finish();
    return {
      labelText: stop.labelfile,
      endLsn: stop.lsn,
      format: 'plain',
      compression: null,
      copySeconds,
      extraCopyStats: step.extraCopyStats,
      // Measured by the frame, in its one walk of the backup directory (hard links = shared).
      deduplicatedSize: null,
      ...(step.knownChecksums ? { knownChecksums: step.knownChecksums } : {}),
    };
  } catch (err) {
    abortCopy();
    if (req.signal?.aborted) throw new BarmanError('interrupted by signal');
    if (pg.lost) throw new BarmanError(`${pg.lost.message} (the backup cannot be stopped without its session)`);
    throw err instanceof BarmanError ? err : new BarmanError(errorMessage(err));
  } finally {
    stopKeepalive();
    unwatch();
    await pg.close();
  }
}

/** The rsync methods' copy step for the backup frame. */
export async function rsyncCopy(req: RsyncBackupRequest): Promise<CopyOutcome> {
  const { srv } = req;
  if (req.signal?.aborted) throw new BarmanError('interrupted by signal before the backup started');
  if (srv.backup_method === 'local-rsync') await requireLocalAccess(req.pgdata, req.tablespaces);
  const trees = await planTrees(req);
  const listDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'barman-rsync-'));
  const runner = new RsyncRunner(subprocessEnv(srv.path_prefix, { TZ: 'UTC' }), req.signal);
  try {
    return await concurrentBackup(req, async (sink) => ({ extraCopyStats: await copyTrees(req, trees, runner, listDir, sink) }), () => runner.killAll());
  } finally {
    await fsp.rm(listDir, { recursive: true, force: true });
  }
}
