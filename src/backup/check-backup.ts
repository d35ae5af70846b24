/**
 * check-backup (spec §2.4): a WAITING_FOR_WALS backup becomes DONE once every WAL segment from
 * its begin_wal to its end_wal is in the archive, or FAILED if one of them is missing although
 * later segments of the same timeline have already been archived.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { DONE, FAILED, WAITING_FOR_WALS, type BackupInfo } from '../catalog/backup-info.js';
import { saveBackupInfo, type BackupEntry } from '../catalog/catalog.js';
import { serverPaths } from '../catalog/server-dirs.js';
import { generateSegments, hashDir, isWalName } from '../wal/names.js';

/** Newest archived segment of a timeline (by name), looking only at that timeline's hash dirs. */
export async function latestArchivedSegment(srv: ServerConfig, timeline: number): Promise<string | null> {
  const walsDir = serverPaths(srv).walsDir;
  const prefix = timeline.toString(16).toUpperCase().padStart(8, '0');
  const dirs = (await fsp.readdir(walsDir).catch(() => [] as string[]))
    .filter((d) => d.length === 16 && d.startsWith(prefix) && /^[0-9A-F]{16}$/.test(d))
    .sort()
    .reverse();
  for (const d of dirs) {
    const segs = (await fsp.readdir(path.join(walsDir, d)).catch(() => [] as string[])).filter(isWalName).sort();
    const last = segs.at(-1);
    if (last) return last;
  }
  return null;
}

export async function isArchived(srv: ServerConfig, wal: string): Promise<boolean> {
  try {
    await fsp.access(path.join(serverPaths(srv).walsDir, hashDir(wal), wal));
    return true;
  } catch {
    return false;
  }
}

export type CheckOutcome = 'unchanged' | 'done' | 'failed';

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

/** Run check-backup on one backup and persist the change. */
export async function checkBackup(srv: ServerConfig, entry: BackupEntry): Promise<CheckOutcome> {
  const res = await evaluateBackup(srv, entry.info);
  if (res.status === entry.info.status) return 'unchanged';
  entry.info = { ...entry.info, status: res.status, error: res.error ?? entry.info.error };
  await saveBackupInfo(srv, entry.id, entry.info);
  return res.status === DONE ? 'done' : 'failed';
}
