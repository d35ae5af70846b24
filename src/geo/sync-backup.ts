/**
 * `barman sync-backup SRV ID` on a passive node (spec §10): copy one backup of the primary, as
 * primary.info describes it, into the local catalog.
 *
 *   - The backup shows SYNCING while it is copied, under `.<srv>-<id>-sync-backup.lock` (one copy
 *     per backup) and its per-backup lock (no delete meanwhile).
 *   - rsync through primary_ssh_command pulls `<primary basebackups_directory>/<id>/` (its
 *     backup.info, lock and tablespace links left out), with the nearest local backup (the next
 *     one, else the previous one, as Barman picks it) as the basis: unchanged files are linked or
 *     copied locally (reuse_backup = link / copy; with reuse_backup = off they are copied locally
 *     too, since the result is the same full copy), changed ones move as rsync deltas.
 *   - It is DONE only once every file of the primary's listing is here with its size, and, when
 *     the backup has a backup_manifest, pg_verifybackup found every checksum right; then it is
 *     synced to disk. Until its WAL files have arrived too (sync-wals) it waits, like any backup,
 *     as WAITING_FOR_WALS. Anything else: FAILED, `failure syncing server S backup ID: ...`.
 *   - An interrupted copy is resumed by the next run: files whose copy was complete and on disk
 *     are listed in `base/<id>/.barman-ts-sync` (a file Barman ignores, removed once the backup
 *     is complete) and are not sent again.
 */
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { COPY_DONE, FAILED, SYNCING, WAITING_FOR_WALS, isBackupId, type BackupInfo } from '../catalog/backup-info.js';
import { BackupGoneError, backupDir, loadCatalog, readBackupEntry, saveBackupInfo, type BackupEntry } from '../catalog/catalog.js';
import { deleteBackup } from '../catalog/delete.js';
import { acquireLock, LockBusyError, type HeldLock } from '../catalog/lock.js';
import { backupLockPath, ensureServerDirs, syncBackupLockPath } from '../catalog/server-dirs.js';
import { evaluateBackup } from '../backup/check-backup.js';
import { MANIFEST_NAME, verifyDataFiles } from '../backup/manifest.js';
import { linkTablespaceCopies } from '../backup/rsync-executor.js';
import { faultPoint } from '../util/fault.js';
import type { ListedEntry, ReuseMode } from '../backup/rsync-plan.js';
import { CopySink, RsyncRunner, copyTrees, reusableDir, type Tree } from '../backup/tree-copy.js';
import { subprocessEnv } from '../postgres/binaries.js';
import { syncFilesystems } from '../recovery/copy.js';
import { readKeeps } from '../retention/keep.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { logger } from '../util/log.js';
import { loadPrimaryInfo, type PrimaryInfo } from './primary-info.js';
import { backupInfoFromPrimary, decideSync, isLocallyObsolete } from './primary-backup.js';

const log = logger('sync');

/** Files of the local copy that are complete and on disk (see the module comment). */
export const SYNC_STATE_FILE = '.barman-ts-sync';
/** rsync runs of at most this many bytes: what an interrupted copy keeps. */
const BUCKET_BYTES = 256 * 1024 * 1024;
/** Overrides BUCKET_BYTES (tests interrupt small backups). */
export const SYNC_BUCKET_ENV = 'BARMAN_TS_SYNC_BUCKET_BYTES';

function bucketBytes(env: NodeJS.ProcessEnv = process.env): number {
  const n = Number(env[SYNC_BUCKET_ENV] ?? '');
  return Number.isSafeInteger(n) && n > 0 ? n : BUCKET_BYTES;
}

export interface SyncBackupEvents {
  info(msg: string): void;
  warning(msg: string): void;
  progress?(doneKb: number, totalKb: number): void;
}

export interface SyncBackupResult {
  outcome: 'synced' | 'nothing' | 'purged';
  /** Final status of the local copy (synced): DONE or WAITING_FOR_WALS. */
  status?: string;
  bytesReceived?: number;
}

// ---------------------------------------------------------------------------------------------
// Resume state

interface FileState {
  size: number;
  mtimeSec: number;
}

/** `base/<id>/.barman-ts-sync`: one JSON line per file known complete and durable here. */
export class SyncState {
  private pending: [string, FileState][] = [];
  private pendingBytes = 0;

  private constructor(
    readonly file: string,
    readonly known: Map<string, FileState>,
  ) {}

  static async load(file: string): Promise<SyncState> {
    const known = new Map<string, FileState>();
    let text = '';
    try {
      text = await fsp.readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const lines = text.split('\n');
    // The text after the last newline is a torn append: ignored.
    for (const line of lines.slice(0, -1)) {
      try {
        const e = JSON.parse(line) as { n?: unknown; s?: unknown; m?: unknown };
        if (typeof e.n === 'string' && typeof e.s === 'number' && typeof e.m === 'number') known.set(e.n, { size: e.s, mtimeSec: e.m });
      } catch {
        /* a damaged line only costs the copy of that file */
      }
    }
    return new SyncState(file, known);
  }

  /** Is `e` (from the primary's listing) here, complete, as recorded by an earlier run? */
  has(dest: string, e: ListedEntry): boolean {
    const k = this.known.get(e.name);
    if (!k || k.size !== e.size || k.mtimeSec !== e.mtimeSec) return false;
    try {
      const st = fs.lstatSync(path.join(dest, e.name));
      return st.isFile() && st.size === e.size && Math.floor(st.mtimeMs / 1000) === e.mtimeSec;
    } catch {
      return false;
    }
  }

  add(entries: readonly ListedEntry[]): void {
    for (const e of entries) {
      this.pending.push([e.name, { size: e.size, mtimeSec: e.mtimeSec }]);
      this.pendingBytes += e.size;
    }
  }

  get pendingSize(): number {
    return this.pendingBytes;
  }

  /** Make the pending files durable (syncfs), then record them (append + fsync). */
  async flush(dest: string, env: NodeJS.ProcessEnv): Promise<void> {
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    await syncFilesystems([dest], [], env);
    const fh = await fsp.open(this.file, 'a', 0o600);
    try {
      await fh.appendFile(batch.map(([n, s]) => `${JSON.stringify({ n, s: s.size, m: s.mtimeSec })}\n`).join(''));
      await fh.sync();
    } finally {
      await fh.close();
    }
    for (const [n, s] of batch) this.known.set(n, s);
  }

  private chain: Promise<void> = Promise.resolve();

  /** flush() in the background, one at a time: the copy does not wait for the disk. */
  flushSoon(dest: string, env: NodeJS.ProcessEnv, onError: (err: unknown) => void): void {
    this.chain = this.chain.then(() => this.flush(dest, env)).catch(onError);
  }

  /** Wait for the background flushes. */
  async settle(): Promise<void> {
    await this.chain;
  }

  async remove(): Promise<void> {
    await this.settle();
    await fsp.rm(this.file, { force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Verification

/** Paths of the local copy that are ours, not the primary's (relative to base/<id>). */
function ownPaths(info: BackupInfo): Set<string> {
  return new Set(['backup.info', SYNC_STATE_FILE, ...(info.tablespaces ?? []).map((t) => `data/pg_tblspc/${t.oid}`)]);
}

/** Every file and symlink under `root`, relative, `/`-separated. */
async function walkLocal(root: string): Promise<Map<string, fs.Dirent>> {
  const out = new Map<string, fs.Dirent>();
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(path.join(dir, e.name), r);
      else out.set(r, e);
    }
  };
  await walk(root, '');
  return out;
}

/**
 * The local copy against the primary's listing: every file there with its size, every symlink
 * there; files the primary does not have (leftovers of an interrupted rsync) are removed.
 * Throws the first problem found.
 */
export async function verifyCopy(dest: string, listing: readonly ListedEntry[], own: ReadonlySet<string>): Promise<{ files: number; bytes: number; removed: string[] }> {
  const local = await walkLocal(dest);
  const expected = new Map(listing.filter((e) => e.kind === 'file' || e.kind === 'symlink').map((e) => [e.name, e]));
  let files = 0;
  let bytes = 0;
  for (const e of expected.values()) {
    const p = path.join(dest, e.name);
    const st = await fsp.lstat(p).catch(() => null);
    if (!st) throw new BarmanError(`${e.name} is missing in the copy`);
    if (e.kind === 'symlink') {
      if (!st.isSymbolicLink()) throw new BarmanError(`${e.name} is not a symbolic link in the copy`);
      continue;
    }
    if (!st.isFile()) throw new BarmanError(`${e.name} is not a regular file in the copy`);
    if (st.size !== e.size) throw new BarmanError(`${e.name} has ${st.size} bytes in the copy, ${e.size} on the primary`);
    files += 1;
    bytes += st.size;
  }
  const removed: string[] = [];
  for (const rel of local.keys()) {
    if (expected.has(rel) || own.has(rel)) continue;
    await fsp.rm(path.join(dest, rel), { force: true });
    removed.push(rel);
  }
  return { files, bytes, removed };
}

/** pg_verifybackup against the backup's backup_manifest, when it has one and is plain. */
async function verifyManifest(srv: ServerConfig, dest: string, info: BackupInfo, state: SyncState): Promise<void> {
  const dataDir = path.join(dest, 'data');
  if (info.compression || !fs.existsSync(path.join(dataDir, MANIFEST_NAME))) return;
  const v = await verifyDataFiles(srv, dataDir);
  if (!v.ok) {
    // Which files are bad is in the output: none of the recorded ones is trusted any more.
    await state.remove();
    throw new BarmanError(`pg_verifybackup: ${v.output.split('\n').find((l) => /error/i.test(l)) ?? v.output.split('\n')[0] ?? 'failed'}`);
  }
  log.info(`backup ${path.basename(dest)} of ${srv.name}: every file matches the checksums of its backup_manifest`);
}

// ---------------------------------------------------------------------------------------------
// The copy

/** The nearest local backup to reuse files from: the next one, else the previous one (Barman's choice). */
function pickBasis(local: readonly BackupEntry[], id: string, info: BackupInfo): { entry: BackupEntry; horizonSec: number } | null {
  const usable = local.filter((e) => e.id !== id && COPY_DONE.has(e.info.status));
  const next = usable.find((e) => e.id > id);
  const prev = usable.filter((e) => e.id < id).at(-1);
  // Files modified after the older of the two backups began may differ with the same size and
  // mtime: they are compared by content (see isAfterHorizon).
  const seconds = (e: BackupInfo) => (e.begin_time ? Number(e.begin_time.epochMicros / 1_000_000n) : 0);
  if (next) return { entry: next, horizonSec: seconds(info) };
  if (prev) return { entry: prev, horizonSec: seconds(prev.info) };
  return null;
}

interface CopyRequest {
  srv: ServerConfig;
  id: string;
  info: BackupInfo;
  primary: PrimaryInfo;
  local: readonly BackupEntry[];
  ev: SyncBackupEvents;
  signal: AbortSignal;
}

async function copyFromPrimary(req: CopyRequest): Promise<{ bytesReceived: number; files: number; skipped: number }> {
  const { srv, id, info } = req;
  const dest = backupDir(srv, id);
  const env = subprocessEnv(srv.path_prefix, { TZ: 'UTC' });
  const basis = pickBasis(req.local, id, info);
  // reuse_backup = off: the local copy of an unchanged file is the same full copy, without the network.
  const reuse: ReuseMode = srv.reuse_backup === 'link' ? 'link' : 'copy';
  const own = ownPaths(info);
  const tree: Tree = {
    item: 'backup',
    src: path.posix.join(req.primary.config.basebackups_directory, id),
    dest,
    excludes: ['/.backup.lock', ...[...own].map((p) => `/${p}`)],
    reuseDir: await reusableDir(reuse, basis ? backupDir(srv, basis.entry.id) : null),
    transport: { sshCommand: srv.primary_ssh_command, bwlimit: srv.bandwidth_limit ?? null, networkCompression: srv.network_compression },
  };
  if (tree.reuseDir) log.info(`backup ${id} of ${srv.name}: reusing unchanged files of the local backup ${basis?.entry.id ?? ''} (${reuse})`);
  const state = await SyncState.load(path.join(dest, SYNC_STATE_FILE));
  const listDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'barman-sync-'));
  const runner = new RsyncRunner(env, req.signal);
  const sink = new CopySink(dest, process.env);
  const maxBucket = bucketBytes();
  let skipped = 0;
  let listing: ListedEntry[] = [];
  try {
    const byName = new Map<string, ListedEntry>();
    const result = await copyTrees([tree], runner, listDir, sink, {
      jobs: srv.parallel_jobs || 1,
      reuse,
      horizonSec: tree.reuseDir ? (basis?.horizonSec ?? 0) : null,
      strict: true,
      maxBucketBytes: maxBucket,
      onProgress: req.ev.progress,
      skip: (_t, e) => {
        byName.set(e.name, e);
        const done = state.has(dest, e);
        if (done) skipped += 1;
        return done;
      },
      onCopied: async (_t, names) => {
        state.add(names.map((n) => byName.get(n)).filter((e): e is ListedEntry => e !== undefined));
        faultPoint('sync-backup:bucket-copied');
        if (state.pendingSize >= maxBucket) state.flushSoon(dest, env, (e) => log.warning(`backup ${id} of ${srv.name}: cannot record the files already copied: ${errorMessage(e)}`));
      },
    });
    listing = result.listings.get(tree.item) ?? [];
    await linkTablespaceCopies(dest, info.tablespaces ?? []);
    const checked = await verifyCopy(dest, listing, own);
    if (checked.removed.length > 0) log.info(`backup ${id} of ${srv.name}: removed ${checked.removed.length} file(s) the primary does not have: ${checked.removed.slice(0, 5).join(', ')}`);
    // The checksums are read from the page cache while the sync writes it out: both at once.
    await Promise.all([verifyManifest(srv, dest, info, state), sink.finish()]);
    await state.remove();
    return { bytesReceived: result.bytesReceived, files: checked.files, skipped };
  } catch (err) {
    runner.killAll();
    // What is complete stays known: the next run does not send it again.
    await state
      .settle()
      .then(() => state.flush(dest, env))
      .catch((e: unknown) => log.warning(`backup ${id} of ${srv.name}: cannot record the files already copied: ${errorMessage(e)}`));
    throw err;
  } finally {
    await fsp.rm(listDir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// sync-backup

async function takeLock(file: string, what: string, busyMessage: string): Promise<HeldLock> {
  try {
    return await acquireLock(file, what);
  } catch (err) {
    if (err instanceof LockBusyError) throw new BarmanError(busyMessage);
    throw err;
  }
}

/** `sync-backup SRV ID` (see the module comment). `signal` stops the copy (the backup is then FAILED). */
export async function syncBackup(srv: ServerConfig, id: string, ev: SyncBackupEvents, signal: AbortSignal = new AbortController().signal): Promise<SyncBackupResult> {
  if (!srv.passive) throw new BarmanError(`server ${srv.name} is not passive`);
  if (!isBackupId(id)) throw new BarmanError(`Invalid backup ID '${id}' (expected YYYYMMDDTHHMMSS)`);
  const primary = await loadPrimaryInfo(srv);
  const local = await loadCatalog(srv);
  const current = local.find((e) => e.id === id) ?? null;
  const remote = primary.backups[id];
  const keeps = remote && srv.retention_policy ? await readKeeps(srv, local) : new Map();
  const decision = decideSync(srv.name, id, remote !== undefined, current?.info ?? null, primary.config.name, () =>
    remote ? isLocallyObsolete(srv, id, remote, local, keeps, new Date()) : false,
  );
  if (decision.kind === 'refuse') throw new BarmanError(decision.message);
  if (decision.kind === 'nothing') {
    ev.info(decision.message);
    return { outcome: 'nothing' };
  }
  if (decision.kind === 'purge') {
    ev.warning(`${decision.message}, purging local backup`);
    await deleteBackup(srv, id, { info: (m) => ev.info(m), warning: (m) => ev.warning(m) });
    return { outcome: 'purged' };
  }
  if (!remote) throw new BarmanError(`Backup ${id} is absent on ${srv.name} server`);

  const syncLock = await takeLock(syncBackupLockPath(srv, id), 'sync-backup', `Another synchronisation process for backup ${id} of server ${srv.name} is already running.`);
  let backupLock: HeldLock | null = null;
  let info: BackupInfo | null = null;
  const started = Date.now();
  try {
    backupLock = await takeLock(backupLockPath(srv, id), 'backup action', `Another action is in progress for the backup ${id} of server ${srv.name}`);
    // Under the locks: the local state may have moved since the decision.
    const again = await readBackupEntry(srv, id);
    if (again && COPY_DONE.has(again.info.status)) {
      ev.info(`Backup ${id} is already synced with ${srv.name} server`);
      return { outcome: 'nothing' };
    }
    await ensureServerDirs(srv);
    info = { ...backupInfoFromPrimary(id, remote), status: SYNCING, error: null };
    await fsp.mkdir(backupDir(srv, id), { recursive: true, mode: 0o700 });
    await saveBackupInfo(srv, id, info, { create: true });
    log.info(`Synchronising with server ${srv.name} backup ${id}: file copy`);
    const copied = await copyFromPrimary({ srv, id, info, primary, local, ev, signal });
    faultPoint('sync-backup:copied');
    if (signal.aborted) throw new BarmanError('interrupted by signal');
    // Complete and verified: it now needs its WAL files, like any backup (DONE when they are here).
    const waiting: BackupInfo = { ...info, status: WAITING_FOR_WALS, error: null };
    const res = await evaluateBackup(srv, waiting);
    info = { ...waiting, status: res.status, error: res.error ?? null };
    await saveBackupInfo(srv, id, info);
    const seconds = (Date.now() - started) / 1000;
    log.info(
      `Synchronised backup ${id} of server ${srv.name}: ${copied.bytesReceived} bytes received from the primary in ${seconds.toFixed(1)} seconds ` +
        `(${copied.files} files, ${copied.skipped} already copied by an earlier run), status ${info.status}`,
    );
    if (info.status === FAILED) throw new BarmanError(info.error ?? 'WAL files are missing');
    return { outcome: 'synced', status: info.status, bytesReceived: copied.bytesReceived };
  } catch (err) {
    const reason = signal.aborted ? 'interrupted by signal' : errorMessage(err);
    const message = `failure syncing server ${srv.name} backup ${id}: ${reason}`;
    if (info && info.status !== FAILED) {
      info = { ...info, status: FAILED, error: message };
      await saveBackupInfo(srv, id, info).catch((e: unknown) => {
        if (!(e instanceof BackupGoneError)) log.error(`backup ${id} of ${srv.name}: cannot record the failure: ${errorMessage(e)}`);
      });
    }
    if (info) {
      log.error(message);
      throw new BarmanError(message);
    }
    throw err;
  } finally {
    backupLock?.release();
    syncLock.release();
  }
}
