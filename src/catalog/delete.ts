/**
 * Deleting a backup (spec §8, delete algorithm) and the WAL files nobody needs any more.
 *
 * Crash safety: before any data goes, the backup is marked with the `delete_this` annotation
 * (Barman's marker, which its retention code finishes) and its backup.info is rewritten as
 * FAILED, so an interrupted delete never leaves a backup that claims DONE with missing data;
 * running `delete` again finishes the job. xlog.db is rewritten before the WAL files it stops
 * listing are unlinked, so it never lists files that are gone. Every removal is followed by an
 * fsync of the directory that held the entry.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { ensureDir, fsyncDir, isNotFound, pathExists, readdirIfExists, readTextIfExists, treeSizes, unlinkIfExists, writeFileAtomic } from '../util/fsutil.js';
import { humanDuration } from '../util/format.js';
import { faultPoint } from '../util/fault.js';
import { ctime } from '../util/pytime.js';
import { hashDir, walNameKind } from '../wal/names.js';
import { ARCHIVING, COPY_DONE, DONE, FAILED, isFull, type BackupInfo } from './backup-info.js';
import { backupDir, loadCatalogStrict, readBackupEntry, resolveBackupId, saveBackupInfo, type BackupEntry } from './catalog.js';
import { LockBusyError, acquireLock, type HeldLock } from './lock.js';
import { agentMetaDir, backupLockPath, lockPath, serverPaths } from './server-dirs.js';
import { withXlogDb, type XlogDbEntry } from './xlogdb.js';
import { backupHookInfo, backupHookVars, hasHooks, runHooks, walHookVars, type WalHookInfo } from '../hooks/hooks.js';

export type KeepTarget = 'full' | 'standalone';

/** Text Barman writes in the `delete_this` annotation. */
const DELETE_MARK = 'delete';
/** `error` of a backup whose deletion started (visible if the delete is interrupted). */
export const DELETE_IN_PROGRESS_ERROR = "delete in progress (if it was interrupted, run 'barman delete' again)";

function metaDir(srv: ServerConfig): string {
  return path.join(serverPaths(srv).backupDir, 'meta');
}

function annotationFile(srv: ServerConfig, id: string, key: string): string {
  return path.join(metaDir(srv), `${id}-${key}`);
}

/** The keep request of a backup: `meta/<id>-keep`, or the legacy `base/<id>/annotations/keep`. */
export async function readKeep(srv: ServerConfig, id: string): Promise<KeepTarget | null> {
  const text =
    (await readTextIfExists(annotationFile(srv, id, 'keep'))) ??
    (await readTextIfExists(path.join(backupDir(srv, id), 'annotations', 'keep')));
  if (text === null) return null;
  const t = text.trim();
  // Any other content is still a keep request: treat it as the stricter "standalone".
  return t === 'full' ? 'full' : 'standalone';
}

/** Has a delete of this backup been started (the `delete_this` annotation exists)? */
export async function hasDeleteMark(srv: ServerConfig, id: string): Promise<boolean> {
  return pathExists(annotationFile(srv, id, 'delete_this'));
}

/** A refusal: nothing was changed (the CLI prints it as a warning and exits 1). */
export class DeleteRefusedError extends BarmanError {}

/** Another process works on the backup or the server (a lock is busy): nothing was changed. */
export class DeleteBusyError extends BarmanError {
  /** `backup`: the per-backup lock is busy; `server`: a backup of the server is running. */
  constructor(message: string, readonly busy: 'backup' | 'server') {
    super(message);
  }
}

export interface DeleteOptions {
  /**
   * Deletion by the retention policy (cron): WAL cleanup goes past older standalone-kept
   * backups, protecting only their own WAL range. A manual delete (default) cleans WALs only
   * when no older backup is left at all.
   */
  retention?: boolean;
}

// ---------------------------------------------------------------------------------------------
// WAL cleanup decision (pure)

export interface WalCleanupPolicy {
  /** WALs at or after this backup's begin_wal stay; null = no such bound ("remove everything"). */
  removeUntil: { id: string; beginWal: string; timeline: number | null } | null;
  /** Timelines other remaining backups live on (their WALs stay, remove_until's timeline aside). */
  protectedTimelines: Set<number>;
  /** begin..end ranges of older standalone-kept backups. */
  protectedRanges: [string, string][];
  /** No WAL at or after this name is ever removed (earliest begin_wal of newer remaining backups). */
  floor: string | null;
}

export interface CleanupOptions {
  /** Manual `delete`: any older backup, kept or not, means no cleanup at all. */
  manual: boolean;
  /** Concurrent backups: deleting the last backup keeps the WALs from its begin_wal on. */
  concurrent: boolean;
  keeps?: ReadonlyMap<string, KeepTarget>;
  /** IDs deleted in the same operation (incremental descendants). */
  alsoDeleted?: ReadonlySet<string>;
}

const tliOf = (name: string): number => parseInt(name.slice(0, 8), 16);

/**
 * Decide whether deleting `target` cleans WALs and within which bounds; null = no cleanup.
 * `entries` is the catalog, oldest first.
 */
export function decideWalCleanup(entries: readonly BackupEntry[], target: BackupEntry, opts: CleanupOptions): WalCleanupPolicy | null {
  const gone = (e: BackupEntry) => e.id === target.id || (opts.alsoDeleted?.has(e.id) ?? false);
  const remaining = entries.filter((e) => !gone(e) && ARCHIVING.has(e.info.status));
  const older = remaining.filter((e) => e.id < target.id).reverse(); // newest first
  const protectedRanges: [string, string][] = [];
  for (const e of older) {
    if (opts.manual) return null;
    if (opts.keeps?.get(e.id) === 'standalone' && e.info.begin_wal && e.info.end_wal) {
      protectedRanges.push([e.info.begin_wal.toUpperCase(), e.info.end_wal.toUpperCase()]);
      continue;
    }
    return null;
  }
  const newer = remaining.filter((e) => e.id > target.id);
  const next = newer.find((e) => COPY_DONE.has(e.info.status)) ?? null;
  let until: BackupEntry | null = next;
  if (!until && opts.concurrent) until = target;
  let removeUntil: WalCleanupPolicy['removeUntil'] = null;
  if (until) {
    // Without a begin_wal there is no bound to trust: keep everything.
    if (!until.info.begin_wal) return null;
    removeUntil = { id: until.id, beginWal: until.info.begin_wal.toUpperCase(), timeline: until.info.timeline ?? tliOf(until.info.begin_wal) };
  }
  const protectedTimelines = new Set<number>();
  for (const e of remaining) {
    const t = e.info.timeline ?? (e.info.begin_wal ? tliOf(e.info.begin_wal) : null);
    if (t !== null && t !== removeUntil?.timeline) protectedTimelines.add(t);
  }
  let floor: string | null = null;
  for (const e of newer) {
    const b = e.info.begin_wal?.toUpperCase();
    if (b && (floor === null || b < floor)) floor = b;
  }
  return { removeUntil, protectedTimelines, protectedRanges, floor };
}

/** The xlog.db entries the policy removes (history files and unknown names never). */
export function selectWalsToRemove(policy: WalCleanupPolicy, wals: readonly Pick<XlogDbEntry, 'name'>[]): string[] {
  const out: string[] = [];
  for (const w of wals) {
    const kind = walNameKind(w.name);
    if (kind === null || kind === 'history') continue;
    const seg = w.name.slice(0, 24).toUpperCase();
    if (policy.removeUntil && seg >= policy.removeUntil.beginWal) continue;
    if (policy.floor !== null && seg >= policy.floor) continue;
    if (policy.protectedTimelines.has(tliOf(seg))) continue;
    if (policy.protectedRanges.some(([b, e]) => seg >= b && seg <= e)) continue;
    out.push(w.name);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Delete

export interface DeleteEvents {
  info?(msg: string): void;
  warning?(msg: string): void;
}

export interface DeleteResult {
  /** Deleted backups, in deletion order (incremental descendants first). */
  deletedIds: string[];
  removedWals: string[];
}

/** Backups whose parent chain leads to `id`, deepest and newest first. */
function descendantsOf(entries: readonly BackupEntry[], id: string): BackupEntry[] {
  const out: BackupEntry[] = [];
  const visit = (parent: string, depth: number, seen: Set<string>) => {
    for (const e of entries) {
      if (e.info.parent_backup_id !== parent || seen.has(e.id)) continue;
      seen.add(e.id);
      visit(e.id, depth + 1, seen);
      out.push(e);
    }
  };
  visit(id, 0, new Set([id]));
  // children were pushed after their own descendants; newest siblings first
  return out.reverse().sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
}

/** Concurrent unless exclusive backups are configured or this one was taken exclusively. */
function isConcurrent(srv: ServerConfig, info: BackupInfo): boolean {
  const opts = (srv.backup_options as string[] | null) ?? [];
  return !opts.includes('exclusive_backup') && info.mode !== 'rsync-exclusive';
}

async function removeTree(p: string): Promise<void> {
  await fsp.rm(p, { recursive: true, force: true });
}

async function fsyncDirIfExists(dir: string): Promise<void> {
  if (await pathExists(dir)) await fsyncDir(dir);
}

/** Refusals that leave everything untouched. */
async function checkDeletable(srv: ServerConfig, entries: readonly BackupEntry[], target: BackupEntry): Promise<void> {
  if (await readKeep(srv, target.id)) {
    throw new DeleteRefusedError(
      `Skipping delete of backup ${target.id} for server ${srv.name} as it has a current keep request. ` +
        'In order to delete the backup please release the keep and try again.',
    );
  }
  if (target.info.status === DONE && isFull(target.info)) {
    const redundancy = entries.filter((e) => e.info.status === DONE && isFull(e.info)).length;
    if (srv.minimum_redundancy >= redundancy) {
      throw new DeleteRefusedError(
        `Skipping delete of backup ${target.id} for server ${srv.name} due to minimum redundancy requirements ` +
          `(minimum redundancy = ${srv.minimum_redundancy}, current redundancy = ${redundancy})`,
      );
    }
  }
}

/**
 * Remove the archived WALs a policy selects: the files (durably), then their xlog.db lines
 * (Barman's order), so that an interruption never leaves a file no catalog line knows about.
 * Without wal_delete hooks all of it runs under the xlogdb lock. Hooks never run under the
 * lock (a hanging script must not block archiving): with wal_delete hooks the selection and the
 * final rewrite take the lock, and each file is removed between its pre and post hooks in
 * between. If a hook stops the removal (HookAbortError) or fails, the lines of the files
 * removed so far are dropped and the rest stay listed.
 */
export async function cleanWals(srv: ServerConfig, policy: WalCleanupPolicy, ev: DeleteEvents = {}): Promise<string[]> {
  const walsDir = serverPaths(srv).walsDir;
  const fileOf = (name: string) => path.join(walsDir, hashDir(name), name);
  const tidy = async (removed: readonly string[]) => {
    const touched = new Set(removed.map((name) => path.join(walsDir, hashDir(name))));
    for (const dir of [...touched].sort()) {
      try {
        await fsp.rmdir(dir); // only when nothing else (an unlisted .partial, say) is left in it
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST' && !isNotFound(err)) throw err;
        await fsyncDirIfExists(dir);
      }
    }
    await fsyncDir(walsDir);
  };

  if (!hasHooks(srv, 'wal_delete')) {
    return withXlogDb(srv, async (db) => {
      const wals = await db.read();
      const remove = selectWalsToRemove(policy, wals);
      if (remove.length === 0) return [];
      const drop = new Set(remove);
      // Files first, then the catalog (Barman's order): interrupted in between, xlog.db still
      // lists what is left to remove and the delete run again finishes it. The other order
      // would leave files in wals/ that no catalog line, and so no later delete, knows about.
      for (const name of remove) {
        await unlinkIfExists(fileOf(name));
        faultPoint('delete:wal-unlinked');
      }
      await tidy(remove);
      await db.rewrite(wals.filter((w) => !drop.has(w.name)));
      faultPoint('delete:xlogdb-rewritten');
      return remove;
    });
  }

  // With hooks, the same order without holding the lock while scripts run: choose under the
  // lock, remove each file between its hooks, then drop the lines of the files now gone under
  // the lock again. Interrupted anywhere, xlog.db still lists every file left (and maybe a few
  // already removed, which the next delete or rebuild-xlogdb drops): never a file it forgot.
  const selected = await withXlogDb(srv, async (db) => {
    const wals = await db.read();
    const drop = new Set(selectWalsToRemove(policy, wals));
    return wals.filter((w) => drop.has(w.name));
  });
  if (selected.length === 0) return [];
  const removed: string[] = [];
  try {
    for (const w of selected) {
      const info: WalHookInfo = { segment: w.name, file: fileOf(w.name), size: w.size ?? 0, timestamp: w.time, compression: w.compression };
      await runHooks(srv, 'wal_delete', 'pre', walHookVars(info), { warning: ev.warning });
      await unlinkIfExists(info.file);
      removed.push(w.name);
      faultPoint('delete:wal-unlinked');
      await runHooks(srv, 'wal_delete', 'post', walHookVars(info), { warning: ev.warning });
    }
  } finally {
    if (removed.length > 0) {
      await tidy(removed);
      await withXlogDb(srv, async (db) => {
        // Only the lines of files that are really gone: one archived again meanwhile stays listed.
        const gone = new Set<string>();
        for (const name of removed) if (!(await pathExists(fileOf(name)))) gone.add(name);
        const current = await db.read();
        if (current.some((w) => gone.has(w.name))) await db.rewrite(current.filter((w) => !gone.has(w.name)));
        faultPoint('delete:xlogdb-rewritten');
      });
    }
  }
  return removed;
}

/**
 * The first remaining backup after `target` whose copy is complete: if it is an rsync backup,
 * measure it again and save its sizes. A failure is only a warning: the delete itself is done.
 */
async function recomputeNextRsyncSizes(
  srv: ServerConfig,
  entries: readonly BackupEntry[],
  target: BackupEntry,
  alsoDeleted: ReadonlySet<string>,
  ev: DeleteEvents,
): Promise<void> {
  const next = entries.find((e) => e.id > target.id && !alsoDeleted.has(e.id) && COPY_DONE.has(e.info.status));
  if (!next || !(next.info.mode ?? '').startsWith('rsync')) return;
  let lock: HeldLock | null = null;
  try {
    // Under that backup's own lock: check-backup (cron, backup --wait) rewrites its backup.info
    // too, and the walk below can take minutes. Busy: the sizes stay as they are (a warning).
    lock = await acquireLock(backupLockPath(srv, next.id), 'backup action');
    // Read it again: cron may have moved it from WAITING_FOR_WALS to DONE since the catalog was loaded.
    const fresh = await readBackupEntry(srv, next.id);
    if (!fresh || !COPY_DONE.has(fresh.info.status)) return;
    const sizes = await treeSizes(backupDir(srv, next.id));
    if (sizes.size === fresh.info.size && sizes.deduplicated === fresh.info.deduplicated_size) return;
    fresh.info = { ...fresh.info, size: sizes.size, deduplicated_size: sizes.deduplicated };
    await saveBackupInfo(srv, next.id, fresh.info);
    next.info = fresh.info;
  } catch (err) {
    ev.warning?.(`could not update the sizes of backup ${next.id} of server ${srv.name}: ${errorMessage(err)}`);
  } finally {
    lock?.release();
  }
}

async function deleteOne(
  srv: ServerConfig,
  entries: readonly BackupEntry[],
  target: BackupEntry,
  alsoDeleted: ReadonlySet<string>,
  ev: DeleteEvents,
  manual: boolean,
): Promise<string[]> {
  const start = new Date();
  ev.info?.(`Deleting backup ${target.id} for server ${srv.name}`);
  const keeps = new Map<string, KeepTarget>();
  for (const e of entries) {
    const k = await readKeep(srv, e.id);
    if (k) keeps.set(e.id, k);
  }
  const policy = decideWalCleanup(entries, target, { manual, concurrent: isConcurrent(srv, target.info), keeps, alsoDeleted });

  // 0. pre_delete hooks, before anything changes: ABORT_STOP (HookAbortError) leaves the backup as it is.
  const hookInfo = backupHookInfo(srv, target, entries);
  await runHooks(srv, 'delete', 'pre', backupHookVars(hookInfo), { warning: ev.warning });

  // 1. Mark: annotation, then backup.info no longer claims a usable backup.
  await ensureDir(metaDir(srv));
  await writeFileAtomic(annotationFile(srv, target.id, 'delete_this'), DELETE_MARK);
  if (target.info.status !== FAILED || target.info.error !== DELETE_IN_PROGRESS_ERROR) {
    await saveBackupInfo(srv, target.id, { ...target.info, status: FAILED, error: DELETE_IN_PROGRESS_ERROR });
  }
  faultPoint('delete:marked');

  // 2. Data (everything of base/<id> but a legacy backup.info).
  const dir = backupDir(srv, target.id);
  const items = await readdirIfExists(dir);
  for (const item of items) {
    if (item !== 'backup.info') {
      await removeTree(path.join(dir, item));
      faultPoint('delete:data-item-removed');
    }
  }
  if (items.length > 0) await fsyncDirIfExists(dir);
  await removeTree(agentMetaDir(srv, target.id));
  faultPoint('delete:data-removed');

  // 3. WALs.
  const removed = policy ? await cleanWals(srv, policy, ev) : [];
  if (removed.length > 0) {
    ev.info?.('Delete associated WAL segments:');
    for (const w of removed) ev.info?.(`\t${w}`);
  }

  // 4. Catalog entry: base dir (with a legacy backup.info), meta backup.info, annotations.
  await removeTree(dir);
  faultPoint('delete:base-removed');
  await fsyncDirIfExists(path.dirname(dir));
  await unlinkIfExists(path.join(metaDir(srv), `${target.id}-backup.info`));
  await unlinkIfExists(annotationFile(srv, target.id, 'delete_this'));
  await fsyncDirIfExists(metaDir(srv));

  // 5. The parent (incremental backups) no longer lists it as a child.
  const parentId = target.info.parent_backup_id;
  const parent = parentId ? entries.find((e) => e.id === parentId && !alsoDeleted.has(e.id)) : undefined;
  if (parent?.info.children_backup_ids?.includes(target.id)) {
    const children = parent.info.children_backup_ids.filter((c) => c !== target.id);
    parent.info = { ...parent.info, children_backup_ids: children.length > 0 ? children : null };
    await saveBackupInfo(srv, parent.id, parent.info);
  }
  // 6. The next rsync backup may have hard-linked files of this one (reuse_backup = link):
  // those it now holds alone count in its deduplicated size.
  await recomputeNextRsyncSizes(srv, entries, target, alsoDeleted, ev);

  // 7. post_delete hooks (the backup is gone; they see what it was).
  await runHooks(srv, 'delete', 'post', backupHookVars(hookInfo), { warning: ev.warning });

  const elapsed = (Date.now() - start.getTime()) / 1000;
  ev.info?.(`Deleted backup ${target.id} (start time: ${ctime(start)}, elapsed time: ${humanDuration(elapsed)})`);
  return removed;
}

/**
 * `barman delete SRV BACKUP_ID`: under the per-backup lock and the server's backup lock,
 * refuse kept backups and DONE full backups needed for minimum_redundancy
 * (DeleteRefusedError, nothing changed), else delete the backup, its incremental descendants
 * first, and the WALs that only it needed. An unreadable backup.info anywhere in the catalog
 * stops it before anything changes (UnreadableCatalogError).
 */
export async function deleteBackup(srv: ServerConfig, backupArg: string, ev: DeleteEvents = {}, opts: DeleteOptions = {}): Promise<DeleteResult> {
  const manual = opts.retention !== true;
  // Strict: a backup we cannot read may need the WALs (or be the child) of the one deleted.
  const entries0 = await loadCatalogStrict(srv);
  const target0 = resolveBackupId(srv, entries0, backupArg);
  // Refuse before taking the locks (no lock file left behind), and again under them.
  await checkDeletable(srv, entries0, target0);
  const locks: HeldLock[] = [];
  try {
    try {
      locks.push(await acquireLock(backupLockPath(srv, target0.id), 'backup action'));
    } catch (err) {
      if (!(err instanceof LockBusyError)) throw err;
      throw new DeleteBusyError(`Another action is in progress for the backup ${target0.id} of server ${srv.name}, skipping delete`, 'backup');
    }
    try {
      locks.push(await acquireLock(lockPath(srv, 'backup'), 'backup'));
    } catch (err) {
      if (!(err instanceof LockBusyError)) throw err;
      const pid = err.holderPid ? ` (PID ${err.holderPid})` : '';
      throw new DeleteBusyError(`A backup of server ${srv.name} is running${pid}: cannot delete backup ${target0.id} now, try again later`, 'server');
    }
    // Fresh view under the locks.
    const entries = await loadCatalogStrict(srv);
    const target = entries.find((e) => e.id === target0.id);
    if (!target) throw new BarmanError(`Unknown backup '${target0.id}' for server '${srv.name}'`);
    await checkDeletable(srv, entries, target);
    faultPoint('delete:locked');
    const descendants = descendantsOf(entries, target.id);
    const alsoDeleted = new Set(descendants.map((d) => d.id));
    const result: DeleteResult = { deletedIds: [], removedWals: [] };
    // An I/O error half-way (EIO, EACCES) leaves the backup FAILED with its delete-in-progress
    // mark: say so in one line, the next delete finishes the job.
    const failed = (id: string) => (err: unknown): never => {
      if (err instanceof BarmanError) throw err;
      throw new BarmanError(`Cannot delete backup ${id} of server ${srv.name}: ${errorMessage(err)}; it stays FAILED: run 'barman delete' again once the problem is fixed`);
    };
    for (const d of descendants) {
      result.removedWals.push(...(await deleteOne(srv, entries, d, new Set([...alsoDeleted, target.id]), ev, manual).catch(failed(d.id))));
      result.deletedIds.push(d.id);
    }
    result.removedWals.push(...(await deleteOne(srv, entries, target, alsoDeleted, ev, manual).catch(failed(target.id))));
    result.deletedIds.push(target.id);
    // The per-backup lock file goes with the backup (we still hold it: unlinking is safe).
    await unlinkIfExists(backupLockPath(srv, target.id));
    return result;
  } finally {
    for (const l of locks.reverse()) l.release();
  }
}
