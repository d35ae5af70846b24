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
import { constants as fsConstants, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { subprocessEnv } from '../postgres/binaries.js';
import { PgConnection, type Tablespace } from '../postgres/connection.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { faultPoint } from '../util/fault.js';
import { fsyncDir, statIfExists, writeFileAtomic } from '../util/fsutil.js';
import { logger } from '../util/log.js';
import type { CopyOutcome } from './copy-outcome.js';
import { PGDATA_EXCLUDES, TABLESPACE_EXCLUDES, type ReuseMode, type Transport } from './rsync-plan.js';
import { CopySink, RsyncRunner, copyTrees, reusableDir, type Tree } from './tree-copy.js';

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

/** The data directory (item `pgdata`) and one tree per tablespace (item: its name). */
async function planTrees(req: RsyncBackupRequest): Promise<Tree[]> {
  const { srv } = req;
  const base: Transport = { sshCommand: srv.backup_method === 'rsync' ? srv.ssh_command : null, bwlimit: req.bwlimit, networkCompression: srv.network_compression };
  const reuseFrom = (sub: string) => reusableDir(req.reuse, req.previous ? path.join(req.previous.dir, sub) : null);
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
export async function linkTablespaceCopies(destDir: string, tablespaces: readonly Tablespace[]): Promise<void> {
  const tblspc = path.join(destDir, 'data', 'pg_tblspc');
  for (const ts of tablespaces) {
    const copy = path.join(destDir, String(ts.oid));
    if (!(await statIfExists(copy))?.isDirectory()) continue;
    const link = path.join(tblspc, String(ts.oid));
    const tmp = `${link}.tmp`;
    await fsp.rm(tmp, { force: true });
    await fsp.symlink(copy, tmp);
    await fsp.rename(tmp, link);
  }
  if (tablespaces.length > 0) await fsyncDir(tblspc);
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

/** What a copy step is told of the backup it copies for: where it started, and its session. */
export interface BackupStarted {
  startLsn: string;
  pg: PgConnection;
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
export async function concurrentBackup(req: ConcurrentBackupRequest, copy: (sink: CopySink, started: BackupStarted) => Promise<CopyStepResult>, abortCopy: () => void): Promise<CopyOutcome> {
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
      step = await copy(sink, { startLsn, pg });
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
    return await concurrentBackup(
      req,
      async (sink) => {
        const { stats } = await copyTrees(trees, runner, listDir, sink, {
          jobs: req.jobs,
          reuse: req.reuse,
          horizonSec: req.reuse !== 'off' && req.previous ? req.previous.beginTimeSec : null,
          onProgress: req.onProgress,
          startBatchSize: req.startBatchSize ?? srv.parallel_jobs_start_batch_size,
          startBatchPeriod: req.startBatchPeriod ?? srv.parallel_jobs_start_batch_period,
          signal: req.signal,
        });
        return { extraCopyStats: stats };
      },
      () => runner.killAll(),
    );
  } finally {
    await fsp.rm(listDir, { recursive: true, force: true });
  }
}
