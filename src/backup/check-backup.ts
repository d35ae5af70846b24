/**
 * check-backup (spec §2.4): a WAITING_FOR_WALS backup becomes DONE once every WAL segment from
 * its begin_wal to its end_wal is in the archive, or FAILED if one of them is missing although
 * later segments of the same timeline have already been archived.
 */
import { promises as fsp } from 'node:fs';
import { pathExists, readdirIfExists } from '../util/fsutil.js';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { DONE, FAILED, WAITING_FOR_WALS, type BackupInfo } from '../catalog/backup-info.js';
import { BackupGoneError, readBackupEntry, saveBackupInfo, type BackupEntry } from '../catalog/catalog.js';
import { LockBusyError, acquireLock, type HeldLock } from '../catalog/lock.js';
import { backupLockPath, serverPaths } from '../catalog/server-dirs.js';
import { generateSegments, hashDir, isWalName } from '../wal/names.js';
import { faultPoint } from '../util/fault.js';

/**
 * Newest archived segment of a timeline (by name), looking only at that timeline's hash dirs. A
 * directory that cannot be read throws: a segment it holds is not "missing".
 */
export async function latestArchivedSegment(srv: ServerConfig, timeline: number): Promise<string | null> {
  const walsDir = serverPaths(srv).walsDir;
  const prefix = timeline.toString(16).toUpperCase().padStart(8, '0');
  const dirs = (await readdirIfExists(walsDir))
    .filter((d) => d.length === 16 && d.startsWith(prefix) && /^[0-9A-F]{16}$/.test(d))
    .sort()
    .reverse();
  for (const d of dirs) {
    const segs = (await readdirIfExists(path.join(walsDir, d))).filter(isWalName).sort();
    const last = segs.at(-1);
    if (last) return last;
  }
  return null;
}

/**
 * Whether `wal` is in the archive. Only a file that is not there is "no": one that cannot be
 * looked at (EACCES, EIO) throws, so that check-backup never fails a backup over a read error.
 */
export async function isArchived(srv: ServerConfig, wal: string): Promise<boolean> {
  return pathExists(path.join(serverPaths(srv).walsDir, hashDir(wal), wal));
}

/**
 * `busy`: another process works on the backup (its per-backup lock is held), nothing was done;
 * `gone`: the backup was deleted since `entry` was loaded.
 */
export type CheckOutcome = 'unchanged' | 'done' | 'failed' | 'busy' | 'gone';

/** Decide the new status of a WAITING_FOR_WALS backup. Pure apart from the archive lookups. */
export async function evaluateBackup(srv: ServerConfig, info: BackupInfo): Promise<{ status: string; error?: string }> {
  if (info.status !== WAITING_FOR_WALS || !info.end_wal || !info.begin_wal || info.timeline === null) return { status: info.status };
  const latest = await latestArchivedSegment(srv, info.timeline);
  if (latest === null || latest < info.begin_wal) return { status: WAITING_FOR_WALS };
  for (const seg of generateSegments(info.begin_wal, info.end_wal, info.xlog_segment_size, info.version)) {
    if (seg > latest) break;
    if (!(await isArchived(srv, seg))) {
      return { status: FAILED, error: `At least one WAL file is missing. The first missing WAL file is ${seg}` };
    }
  }
  return { status: info.end_wal <= latest ? DONE : WAITING_FOR_WALS };
}

/**
 * Run check-backup on one backup and persist the change. `entry` may have been loaded long ago:
 * under the per-backup lock (non-blocking, as delete takes it) the backup.info is read again,
 * so that neither a deleted backup is brought back nor a newer state overwritten. `entry.info`
 * is refreshed with what was found (and written).
 */
export async function checkBackup(srv: ServerConfig, entry: BackupEntry): Promise<CheckOutcome> {
  const lockFile = backupLockPath(srv, entry.id);
  let lock: HeldLock;
  try {
    lock = await acquireLock(lockFile, 'backup action');
  } catch (err) {
    if (err instanceof LockBusyError) return 'busy';
    throw err;
  }
  try {
    const current = await readBackupEntry(srv, entry.id);
    if (!current) {
      // The lock file goes with the backup, as delete does (we hold it: unlinking is safe).
      await fsp.unlink(lockFile).catch(() => undefined);
      return 'gone';
    }
    entry.info = current.info;
    entry.infoFile = current.infoFile;
    const res = await evaluateBackup(srv, entry.info);
    if (res.status === entry.info.status) return 'unchanged';
    const info: BackupInfo = { ...entry.info, status: res.status, error: res.error ?? entry.info.error };
    faultPoint('check-backup:decided');
    try {
      await saveBackupInfo(srv, entry.id, info);
    } catch (err) {
      if (err instanceof BackupGoneError) return 'gone';
      throw err;
    }
    entry.info = info;
    return res.status === DONE ? 'done' : 'failed';
  } finally {
    lock.release();
  }
}
