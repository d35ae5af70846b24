/**
 * Restore onto another host (spec §7 "remote restore"): every check runs on the recovery host
 * through the administrator's `--remote-ssh-command`, every file goes there with rsync over
 * that command. What needs preparing on this side (tar extraction, decompressed WAL, the
 * settings files) is staged in a private local directory removed at the end.
 *
 * With several jobs, big files go as byte ranges in parallel (ranged-push.ts), beside the rsync
 * buckets of the other files.
 *
 * Order matters for safety: data, then WAL, then configuration files, and the signal file
 * last, after a flush on the remote side, so an interrupted restore never looks startable.
 */
import { promises as fsp } from 'node:fs';
import { pathExists, pathExistsSync } from '../util/fsutil.js';
import * as path from 'node:path';
import { splitBuckets } from '../backup/rsync-plan.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { logger } from '../util/log.js';
import { runPool, startBatches } from '../util/pool.js';
import { run, type RunResult } from '../util/proc.js';
import { planRanges, pushRange, rangedPushAllowed, remoteFailure, runKillable, Stopped, type RangeJob } from './ranged-push.js';
import { rangedMinBytes } from '../util/ranges.js';
import { excluder, extractTar, listTarArchives, scanTree, type TreeScan } from './copy.js';
import { PrestartedAgents } from '../agent/prestart.js';
import { pushTrees } from '../agent/restore-push.js';
import type { AgentEndpoint } from '../agent/session.js';
import {
  copyWalsTo,
  DATA_EXCLUDES,
  DELTA_CLEARED_FILES,
  WAL_DIRS,
  readTextWithMode,
  tarDecryption,
  type BackupSource,
  type BaseCopyStats,
  type CopyOptions,
  type RestoreDestination,
  type RestoreLayout,
  type RestoredFile,
  type WalPlacement,
} from './destination.js';
import {
  CHECK_SCRIPT,
  FINISH_SCRIPT,
  PREPARE_SCRIPT,
  RANGED_FINISH_SCRIPT,
  SCRIPT_DONE,
  checkProblemMessage,
  lastErrorLine,
  parseCheckOutput,
  prepareScriptArgs,
  rangedFinishArgs,
  remoteScriptWords,
  rsyncDirsArgs,
  rsyncFilesArgs,
  rsyncTreeArgs,
  sshInvocation,
  type RangedFileMeta,
  type RemoteTransport,
} from './remote-shell.js';
import type { ArchivedWal } from './wal.js';

const log = logger('recovery.remote');

/**
 * Configuration files sent only at the end, with the settings: if the copy stops half-way the
 * remote directory has no postgresql.conf, so PostgreSQL refuses to start there (rather than
 * starting with the source's archive_command active).
 */
const HELD_BACK: readonly string[] = ['postgresql.conf', 'postgresql.auto.conf'];

/** Ranged files finished per ssh session (see finishRanged in copyBase). */
const RANGED_FINISH_SLICE = 200;

/** Remote checks and small scripts: generous, the host may be slow to accept a session. */
const SCRIPT_TIMEOUT_MS = 10 * 60 * 1000;

export interface RemoteOptions extends RemoteTransport {
  /** Local directory under which the staging directory is created. */
  stagingBase: string;
  env: NodeJS.ProcessEnv;
  /** A failed rsync is run again this many times (each run completes what the last left). */
  retryTimes: number;
  retrySleepSeconds: number;
  /** Copy sessions started per batch, and seconds between batches (parallel_jobs_start_batch_*: 10, 1). */
  startBatchSize?: number;
  startBatchPeriod?: number;
}

/** One job of the push pool: an rsync bucket of files, or one range of a big file. */
type PushJob = { kind: 'rsync'; tree: PushTree; names: string[]; bytes: number; list: string } | { kind: 'range'; job: RangeJob; bytes: number };

/** A tree to push: a local directory (backup or staged) and its remote location. */
interface PushTree {
  scan: TreeScan;
  dest: string;
  excludes: readonly string[];
}

export class RemoteDestination implements RestoreDestination {
  readonly where = 'remote' as const;
  private staging: string | null = null;
  /** Local directory whose files are what the data directory receives (for readRestored). */
  private restoredSource: string | null = null;
  /** Files this big go in byte ranges (ranged-push.ts); read now, so a bad value changes nothing. */
  private readonly rangedMinBytes: number;

  constructor(
    private readonly layout: RestoreLayout,
    private readonly opts: RemoteOptions,
  ) {
    this.rangedMinBytes = rangedMinBytes(opts.env);
  }

  private get transport(): RemoteTransport {
    return { sshCommand: this.opts.sshCommand, bwlimit: this.opts.bwlimit, networkCompression: this.opts.networkCompression };
  }

  /** Run a fixed script on the recovery host; throws one line unless it ran to its end. */
  private async script(script: string, args: readonly string[], what: string): Promise<string> {
    const inv = sshInvocation(this.opts.sshCommand, remoteScriptWords(script, args));
    let res: RunResult;
    try {
      res = await run(inv.cmd, inv.args, { env: this.opts.env, timeoutMs: SCRIPT_TIMEOUT_MS });
    } catch (err) {
      throw new BarmanError(`Cannot run the remote ssh command: ${errorMessage(err)}`);
    }
    if (res.code !== 0 || !res.stdout.includes(SCRIPT_DONE)) {
      // 255: ssh itself failed (unreachable host, refused key, unknown host key)
      throw remoteFailure(this.opts.sshCommand, res.code, lastErrorLine(res.stderr, res.stdout), what);
    }
    return res.stdout;
  }

  private async rsync(args: string[], what: string, signal: AbortSignal = new AbortController().signal): Promise<void> {
    await this.withRetries(async () => {
      log.debug(`running rsync ${args.join(' ')}`);
      const res = await runKillable('rsync', args, this.opts.env, signal);
      if (res.code === 0) return;
      const detail = lastErrorLine(res.stderr, res.stdout);
      throw new BarmanError(`rsync of ${what} to the remote host failed with exit code ${res.code}${detail ? `: ${detail}` : ''}`);
    }, what, signal);
  }

  /** A failed copy is run again retryTimes times (each run completes or rewrites what the last left). */
  private async withRetries(fn: () => Promise<void>, what: string, signal: AbortSignal): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (err instanceof Stopped || signal.aborted || attempt >= this.opts.retryTimes) throw err;
        log.warning(`${errorMessage(err)}: retrying in ${this.opts.retrySleepSeconds} seconds (${attempt + 1}/${this.opts.retryTimes})`);
        await new Promise((r) => setTimeout(r, this.opts.retrySleepSeconds * 1000));
      }
    }
  }

  private async stagingDir(): Promise<string> {
    if (this.staging === null) {
      await fsp.mkdir(this.opts.stagingBase, { recursive: true, mode: 0o700 });
      // mkdtemp: 0700, a name nobody else can predict
      this.staging = await fsp.mkdtemp(path.join(this.opts.stagingBase, 'barman-restore-'));
    }
    return this.staging;
  }

  async check(delta: boolean): Promise<void> {
    const { dest, tablespaces, stagingWal } = this.layout;
    const dirs: { what: string; dir: string; mode: 'empty' | 'any' }[] = [
      { what: 'destination directory', dir: dest, mode: delta ? 'any' : 'empty' },
      ...tablespaces.map((t) => ({ what: `location of tablespace '${t.name}'`, dir: t.location, mode: (delta ? 'any' : 'empty') as 'empty' | 'any' })),
      ...(stagingWal ? [{ what: 'staging WAL directory', dir: stagingWal, mode: 'empty' as const }] : []),
    ];
    const out = await this.script(CHECK_SCRIPT, dirs.flatMap((d) => [d.mode, d.dir]), 'Checking the destination');
    const problems = parseCheckOutput(out);
    if (problems === null) throw new BarmanError('Checking the destination on the remote host failed: unexpected output');
    // a running server first: it is the most important thing to know
    const first = problems.find((p) => p.code === 'RUNNING') ?? problems[0];
    if (first) {
      const d = dirs[first.index];
      if (!d) throw new BarmanError('Checking the destination on the remote host failed: unexpected output');
      throw new BarmanError(checkProblemMessage(first, d.what, d.dir));
    }
  }

  /**
   * Create the destination directories (0700) on the remote host, clear what a delta restore
   * must not keep, and make the WAL directory a real one before anything is sent (placeWals
   * pushes into it).
   */
  private async prepare(delta: boolean): Promise<void> {
    const { dest, tablespaces, stagingWal, walName } = this.layout;
    const dirs = [dest, ...tablespaces.map((t) => t.location), ...(stagingWal ? [stagingWal] : [])];
    // delta: the held-back configuration goes too, so an interrupted delta restore cannot start
    await this.script(PREPARE_SCRIPT, prepareScriptArgs(dest, walName, dirs, delta, [...DELTA_CLEARED_FILES, ...HELD_BACK]), 'Preparing the destination directories');
  }

  async copyBase(source: BackupSource, opts: CopyOptions): Promise<BaseCopyStats> {
    // barman-ts agents on the recovery host: started now (an ssh login and a program's start
    // take a while), they are ready once the destination is prepared and the trees scanned.
    const ep: AgentEndpoint = { sshCommand: this.opts.sshCommand, where: 'the recovery host', env: this.opts.env };
    const agents = opts.agent ? new PrestartedAgents(ep, opts.workers) : null;
    try {
      return await this.copyTrees(source, opts, ep, agents);
    } finally {
      await agents?.discard();
    }
  }

  private async copyTrees(source: BackupSource, opts: CopyOptions, ep: AgentEndpoint, agents: PrestartedAgents | null): Promise<BaseCopyStats> {
    const { dest, tablespaces } = this.layout;
    await this.prepare(opts.delta);
    const stats: BaseCopyStats = { method: 'rsync', files: 0, bytes: 0 };
    const trees: PushTree[] = [];
    if (source.tarFormat) {
      // Extracted here first: rsync then sends plain files (and can compress/limit them).
      const staging = await this.stagingDir();
      const tars = await listTarArchives(source.dataDir);
      const base = tars.get(null);
      if (!base) throw new BarmanError(`No base.tar in ${source.dataDir}`);
      const jobs = [{ ...base, local: path.join(staging, 'data'), excludes: DATA_EXCLUDES, dest }];
      for (const t of tablespaces) {
        const tar = tars.get(t.oid);
        if (!tar) throw new BarmanError(`No tar archive for tablespace ${t.name} (oid ${t.oid}) in ${source.dataDir}`);
        jobs.push({ ...tar, local: path.join(staging, `tablespace-${t.oid}`), excludes: [], dest: t.location });
      }
      await runPool(jobs, opts.workers, (j) =>
        extractTar(j.file, j.local, j.compression, j.excludes, opts.env, j.compression === 'gzip' ? opts.gzipProgram : undefined, tarDecryption(j, opts)),
      );
      const manifest = path.join(source.dataDir, 'backup_manifest');
      if (await pathExists(manifest)) await fsp.copyFile(manifest, path.join(staging, 'data', 'backup_manifest'));
      for (const j of jobs) {
        const excludes = j.dest === dest ? [...j.excludes, ...WAL_DIRS, ...HELD_BACK] : j.excludes;
        trees.push({ scan: await scanTree(j.local, excluder(excludes)), dest: j.dest, excludes });
      }
      this.restoredSource = path.join(staging, 'data');
    } else {
      // The WAL directory itself is not sent (it may be a symlink): prepare() made a real one.
      const excludes = [...DATA_EXCLUDES, ...WAL_DIRS, ...HELD_BACK];
      trees.push({ scan: await scanTree(source.dataDir, excluder(excludes)), dest, excludes });
      for (const t of tablespaces) {
        const src = source.tablespaceDir(t.oid);
        if (!(await pathExists(src))) throw new BarmanError(`The data of tablespace ${t.name} (oid ${t.oid}) is missing: ${src} does not exist`);
        trees.push({ scan: await scanTree(src), dest: t.location, excludes: [] });
      }
      this.restoredSource = source.dataDir;
    }

    const total = trees.reduce((s, t) => s + t.scan.totalBytes, 0);
    let done = 0;
    opts.onProgress?.(0, total);
    if (opts.agent) {
      // barman-ts agents on the recovery host: compressed pages, only the changed ones for a delta.
      const pushed = await pushTrees(
        trees.map((t, i) => ({ scan: t.scan, dest: t.dest, keep: t.excludes, storePrefix: source.tarFormat ? undefined : i === 0 ? 'data' : String(tablespaces[i - 1]?.oid) })),
        { ep, delta: opts.delta, workers: opts.workers, ...opts.agent, onProgress: opts.onProgress, agents },
      );
      return { method: 'agent', files: pushed.files, bytes: pushed.bytes };
    }
    if (opts.delta) {
      // rsync's own delta logic on each whole tree (checksums: sizes and times may lie)
      for (const t of trees) {
        await this.rsync(rsyncTreeArgs(this.transport, t.scan.root, t.dest, { excludes: t.excludes, delta: true }), t.scan.root);
        done += t.scan.totalBytes;
        stats.files += t.scan.fileCount;
        stats.bytes += t.scan.totalBytes;
        opts.onProgress?.(done, total);
      }
      return stats;
    }

    // Directories first (one run per tree), then the files in buckets of similar size and the
    // ranges of the big files (ranged-push.ts), `workers` jobs at a time across all trees, the
    // largest first. The first failure stops the others (their processes are killed).
    const staging = await this.stagingDir();
    const ranged = rangedPushAllowed({ workers: opts.workers, delta: false, bwlimit: this.opts.bwlimit, networkCompression: this.opts.networkCompression });
    const jobs: PushJob[] = [];
    const rangedFiles: RangedFileMeta[] = [];
    let n = 0;
    for (const tree of trees) {
      await this.rsync(rsyncDirsArgs(this.transport, tree.scan.root, tree.dest, tree.excludes), `the directories of ${tree.scan.root}`);
      let items = tree.scan.entries.filter((e) => e.kind !== 'dir').map((e) => ({ rel: e.rel, size: e.size, file: e.kind === 'file' }));
      if (ranged) {
        const plan = planRanges(items.filter((i) => i.file), tree.scan.root, tree.dest, opts.workers, this.rangedMinBytes);
        const big = new Set(plan.ranged.map((f) => f.rel));
        items = items.filter((i) => !big.has(i.rel));
        for (const f of plan.ranged) {
          // bigint: rsync -a keeps the nanoseconds of the mtime, so does RANGED_FINISH_SCRIPT
          const st = await fsp.stat(path.join(tree.scan.root, f.rel), { bigint: true });
          rangedFiles.push({ remote: path.posix.join(tree.dest, f.rel), size: f.size, mode: Number(st.mode & 0o7777n), mtimeNs: st.mtimeNs });
        }
        for (const j of plan.jobs) jobs.push({ kind: 'range', job: j, bytes: j.range.length });
      }
      for (const b of splitBuckets(items.map((i) => ({ name: i.rel, size: i.size })), opts.workers)) {
        const list = path.join(staging, `files-${n++}.list`);
        await fsp.writeFile(list, b.names.map((x) => `${x}\0`).join(''), { mode: 0o600 });
        jobs.push({ kind: 'rsync', tree, names: b.names, bytes: b.bytes, list });
      }
    }
    stats.files += rangedFiles.length;
    jobs.sort((a, b) => b.bytes - a.bytes);
    const stop = new AbortController();
    // The ranges are the biggest jobs, so they end first: their files are finished (size, mode,
    // mtime) while the pool still copies small files, not in a session of its own after it.
    let rangesLeft = jobs.filter((j) => j.kind === 'range').length;
    let rangedFinish: Promise<unknown> | null = null;
    // In slices: one ssh argument line holds at most 128 KiB (Linux MAX_ARG_STRLEN), about a
    // thousand files; each slice may be run again (it only checks sizes and sets mode/mtime).
    const finishRanged = async () => {
      try {
        for (let i = 0; i < rangedFiles.length; i += RANGED_FINISH_SLICE) {
          const slice = rangedFiles.slice(i, i + RANGED_FINISH_SLICE);
          await this.withRetries(async () => void (await this.script(RANGED_FINISH_SCRIPT, rangedFinishArgs(slice), 'Finishing the ranged copy')), 'finishing the ranged copy', stop.signal);
        }
      } catch (err) {
        stop.abort();
        throw err;
      }
    };
    const gate = startBatches(opts.workers, this.opts.startBatchSize ?? 10, this.opts.startBatchPeriod ?? 1, stop.signal);
    const pool = runPool(jobs, opts.workers, async (j) => {
      try {
        await gate();
        if (j.kind === 'range') {
          await this.withRetries(() => pushRange(j.job, this.opts.sshCommand, this.opts.env, stop.signal), `ranged copy of ${j.job.local}`, stop.signal);
          if (--rangesLeft === 0) {
            rangedFinish = finishRanged();
            rangedFinish.catch(() => undefined); // awaited below; a failure also stops the pool
          }
        } else {
          await this.rsync(rsyncFilesArgs(this.transport, j.tree.scan.root, j.tree.dest, j.list), j.tree.scan.root, stop.signal);
          stats.files += j.names.length;
        }
      } catch (err) {
        stop.abort();
        throw err;
      }
      done += j.bytes;
      stats.bytes += j.bytes;
      opts.onProgress?.(done, total);
    });
    try {
      await pool;
    } catch (err) {
      // stopped by a failed finishing script: that failure is the one to report
      if (err instanceof Stopped && rangedFinish !== null) await rangedFinish;
      throw err;
    }
    if (rangedFinish !== null) await rangedFinish;
    return stats;
  }

  async readRestored(rel: string): Promise<{ text: string; mode: number } | null> {
    // What the remote data directory received is exactly the local source minus the excludes.
    if (this.restoredSource === null || excluder(DATA_EXCLUDES)(rel, 'file')) return null;
    return readTextWithMode(path.resolve(this.restoredSource, rel));
  }

  async placeWals(files: readonly ArchivedWal[], p: WalPlacement): Promise<number> {
    // Decompressed here (the archive may be compressed in any way the recovery host cannot read).
    const local = path.join(await this.stagingDir(), 'wal');
    const bytes = await copyWalsTo(files, local, p);
    await this.rsync(rsyncTreeArgs(this.transport, local, p.walDest), 'the WAL files');
    await fsp.rm(local, { recursive: true, force: true });
    return bytes;
  }

  async finish(files: readonly RestoredFile[], signal: string | null): Promise<'remote'> {
    const { dest, tablespaces, walName, backupId } = this.layout;
    // held-back files the pipeline did not change go as they are (bytes, not re-encoded text)
    const unchanged = this.restoredSource === null ? [] : HELD_BACK.filter((rel) => !files.some((f) => f.rel === rel) && pathExistsSync(path.join(this.restoredSource as string, rel)));
    if (files.length > 0 || unchanged.length > 0) {
      const overlay = path.join(await this.stagingDir(), 'overlay');
      await fsp.mkdir(overlay, { recursive: true, mode: 0o700 });
      for (const f of files) {
        const file = path.resolve(overlay, f.rel);
        await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
        if (f.copyOf !== undefined && this.restoredSource !== null) await fsp.copyFile(path.resolve(this.restoredSource, f.copyOf), file);
        else await fsp.writeFile(file, f.text, { mode: f.mode });
        await fsp.chmod(file, f.mode);
      }
      for (const rel of unchanged) {
        const from = path.join(this.restoredSource as string, rel);
        await fsp.copyFile(from, path.join(overlay, rel));
        await fsp.chmod(path.join(overlay, rel), (await fsp.stat(from)).mode & 0o7777);
      }
      // rsync -a gives the destination the overlay's mode: 0700, as PostgreSQL wants it.
      await fsp.chmod(overlay, 0o700);
      await this.rsync(rsyncTreeArgs(this.transport, overlay, dest), 'the configuration files');
    }
    const links = tablespaces.flatMap((t) => [String(t.oid), t.location]);
    await this.script(FINISH_SCRIPT, [dest, walName, backupId, signal ?? '', ...links], 'Finishing the restore');
    return 'remote';
  }

  async cleanup(): Promise<void> {
    if (this.staging !== null) {
      await fsp.rm(this.staging, { recursive: true, force: true }).catch(() => undefined);
      this.staging = null;
    }
  }
}
