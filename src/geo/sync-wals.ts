/**
 * `barman sync-wals SRV` on a passive node (spec §10): copy the WAL files primary.info lists
 * after the last one synced (`sync-wals.info`), then catalogue them.
 *
 * One at a time per server (`.<srv>-sync-wal.lock`). Refused when the two nodes compress WAL
 * differently (the files are copied as they are stored). Skipped, with Barman's warnings, while
 * no local backup exists, or while the first WAL listed is older than the oldest local backup and
 * an older backup is still to be copied (its files wait for it). When no older backup will ever
 * come (the local retention policy leaves them on the primary), the files older than the oldest
 * local backup are left out instead: Barman would wait for them forever.
 *
 * Order of the steps, so that a crash anywhere leaves a consistent archive: rsync into the hash
 * directories (temporary name + rename, never a partial file under a WAL name), each file
 * checked against the listed size and fsynced with its directory, then the xlog.db lines
 * appended (one write, fsync; names already catalogued by an interrupted earlier run are not
 * added twice), and only then `sync-wals.info` replaced atomically.
 */
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { COPY_DONE, SYNCING } from '../catalog/backup-info.js';
import { loadCatalog, type BackupEntry } from '../catalog/catalog.js';
import { acquireLock, LockBusyError } from '../catalog/lock.js';
import { ensureServerDirs, lockPath, serverPaths } from '../catalog/server-dirs.js';
import { withXlogDb, type XlogDbEntry } from '../catalog/xlogdb.js';
import { rsyncErrorLine, transportArgs } from '../backup/rsync-plan.js';
import { subprocessEnv } from '../postgres/binaries.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { fsyncDir } from '../util/fsutil.js';
import { faultPoint } from '../util/fault.js';
import { logger } from '../util/log.js';
import { run } from '../util/proc.js';
import { hashDir, walNameKind } from '../wal/names.js';
import { readKeeps } from '../retention/keep.js';
import { loadPrimaryInfo, readSyncWalsInfo, writeSyncWalsInfo, type PrimaryInfo, type PrimaryWal } from './primary-info.js';
import { decideSync, isLocallyObsolete } from './primary-backup.js';

const log = logger('sync');

export interface SyncWalsEvents {
  info(msg: string): void;
  warning(msg: string): void;
}

export interface SyncWalsResult {
  /** Files copied and catalogued. */
  copied: number;
  /** Why nothing was copied, when skipped (warning already given). */
  skipped?: string;
}

/** Compression as both Barman and we mean it: unset and `none` are the same. */
const compressionName = (c: unknown): string | null => (c === null || c === undefined || c === 'none' ? null : String(c));

/** Path of a WAL file relative to wals/: `<hash dir>/<name>`, or `<name>` for history files. */
export function walRelPath(name: string): string {
  const dir = hashDir(name);
  return dir === '' ? name : `${dir}/${name}`;
}

/** The rsync arguments of one sync-wals copy (files named, NUL-separated, in `listFile`). */
export function syncWalsArgs(srv: ServerConfig, primaryWalsDir: string, listFile: string): string[] {
  return [
    '--recursive',
    '--perms',
    '--times',
    '--protect-args',
    ...transportArgs({ sshCommand: srv.primary_ssh_command, bwlimit: srv.bandwidth_limit ?? null, networkCompression: srv.network_compression }),
    '--from0',
    `--files-from=${listFile}`,
    `:${primaryWalsDir}/`,
    `${serverPaths(srv).walsDir}/`,
  ];
}

async function copyWals(srv: ServerConfig, primaryWalsDir: string, wals: readonly PrimaryWal[]): Promise<void> {
  const listDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'barman-sync-wals-'));
  try {
    const listFile = path.join(listDir, 'files');
    await fsp.writeFile(listFile, wals.map((w) => `${walRelPath(w.name)}\0`).join(''), { mode: 0o600 });
    const res = await run('rsync', syncWalsArgs(srv, primaryWalsDir, listFile), { env: subprocessEnv(srv.path_prefix) });
    if (res.code !== 0) throw new BarmanError(`rsync failed with exit code ${res.code}: ${rsyncErrorLine(res.stderr)}`);
  } finally {
    await fsp.rm(listDir, { recursive: true, force: true });
  }
  const walsDir = serverPaths(srv).walsDir;
  const dirs = new Set<string>([walsDir]);
  for (const w of wals) {
    const file = path.join(walsDir, walRelPath(w.name));
    const fh = await fsp.open(file, 'r');
    try {
      const st = await fh.stat();
      if (w.size !== null && st.size !== w.size) throw new BarmanError(`${w.name} has ${st.size} bytes here, ${w.size} on the primary`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    dirs.add(path.dirname(file));
  }
  for (const d of dirs) await fsyncDir(d);
}

/**
 * Is a backup older than the oldest local one still to come here (being copied, or to be copied
 * by a later cron)? Then the WAL files older than the local backups are waited for (Barman's
 * rule); otherwise they would be waited for forever.
 */
async function olderBackupPending(srv: ServerConfig, primary: PrimaryInfo, firstLocalId: string, local: readonly BackupEntry[]): Promise<boolean> {
  const keeps = srv.retention_policy ? await readKeeps(srv, local) : new Map();
  const now = new Date();
  for (const [id, remote] of Object.entries(primary.backups)) {
    if (id >= firstLocalId) continue;
    const mine = local.find((e) => e.id === id)?.info ?? null;
    if (decideSync(srv.name, id, true, mine, primary.config.name, () => isLocallyObsolete(srv, id, remote, local, keeps, now)).kind === 'sync') return true;
  }
  return local.some((e) => e.id < firstLocalId && e.info.status === SYNCING);
}

/** `sync-wals SRV` (see the module comment). */
export async function syncWals(srv: ServerConfig, ev: SyncWalsEvents): Promise<SyncWalsResult> {
  if (!srv.passive) throw new BarmanError(`server ${srv.name} is not passive`);
  let lock;
  try {
    lock = await acquireLock(lockPath(srv, 'syncWal'), 'sync-wal');
  } catch (err) {
    if (err instanceof LockBusyError) throw new BarmanError(`Another sync-wal operation is running for server ${srv.name}`);
    throw err;
  }
  try {
    return await syncWalsLocked(srv, ev);
  } catch (err) {
    throw new BarmanError(`WAL synchronisation for server ${srv.name} failed with: ${errorMessage(err)}`);
  } finally {
    lock.release();
  }
}

async function syncWalsLocked(srv: ServerConfig, ev: SyncWalsEvents): Promise<SyncWalsResult> {
  const synced = readSyncWalsInfo(srv);
  const primary = await loadPrimaryInfo(srv);
  const theirs = compressionName(primary.config.compression);
  const ours = compressionName(srv.compression);
  if (theirs !== ours) {
    throw new BarmanError(`Compression method on server ${srv.name} (${theirs ?? 'None'}) does not match local compression method (${ours ?? 'None'})`);
  }
  const firstRemote = primary.wals.find((w) => walNameKind(w.name) === 'segment')?.name ?? null;
  const local = await loadCatalog(srv);
  const first = local.find((e) => COPY_DONE.has(e.info.status));
  if (!first) {
    const why = `No base backup for server ${srv.name}`;
    ev.warning(why);
    return { copied: 0, skipped: why };
  }
  let floor: string | null = null;
  if (firstRemote !== null && first.info.begin_wal !== null && first.info.begin_wal > firstRemote) {
    if (await olderBackupPending(srv, primary, first.id, local)) {
      const why = `Skipping WAL synchronisation for server ${srv.name}: no available local backup for ${firstRemote}`;
      ev.warning(why);
      return { copied: 0, skipped: why };
    }
    // No older backup will ever be here (the local retention policy drops them): their WAL
    // files are of no use, and waiting for them would stop WAL synchronisation for good.
    floor = first.info.begin_wal;
    log.info(`sync-wals of ${srv.name}: WAL files before ${floor} (older than every local backup) are not copied`);
  }
  const todo = primary.wals.filter(
    (w) => (synced.lastWal === null || w.name > synced.lastWal) && (floor === null || walNameKind(w.name) === 'history' || w.name >= floor),
  );
  await ensureServerDirs(srv);
  if (todo.length > 0) {
    await copyWals(srv, primary.config.wals_directory, todo);
    faultPoint('sync-wals:copied');
    const entries: XlogDbEntry[] = todo.map((w) => ({ name: w.name, size: w.size, time: w.time, compression: w.compression, encryption: w.encryption }));
    await withXlogDb(srv, async (db) => {
      const known = new Set((await db.read()).map((e) => e.name));
      await db.append(entries.filter((e) => !known.has(e.name)));
    });
    faultPoint('sync-wals:cataloged');
    log.info(`sync-wals of ${srv.name}: ${todo.length} WAL file(s) copied, ${todo[0]?.name ?? ''} to ${todo.at(-1)?.name ?? ''}`);
  }
  await writeSyncWalsInfo(srv, primary.last_name, primary.last_position);
  return { copied: todo.length };
}
