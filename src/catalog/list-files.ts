/**
 * `barman list-files` (spec §4.4): absolute paths of the files that make up a backup, one per
 * line, for copying a backup elsewhere or checking it.
 *
 * - `data`: every file under `base/<id>/` (top-down: a directory's files sorted by name, then
 *   its subdirectories sorted by name; symbolic links to directories are not followed);
 * - `standalone` (default): `data` + the WAL segments begin_wal..end_wal the backup needs to be
 *   consistent, where they are (or would be) in the archive;
 * - `wal`: the archived WAL segments from begin_wal up to the next backup's end_wal (to the end
 *   of the archive for the newest backup) on the backup's timeline or an older one, plus every
 *   timeline history file;
 * - `full`: `data` + `wal`.
 *
 * Barman stops reading xlog.db at the first segment past the next backup's end_wal; we skip such
 * segments instead, which is the same for an xlog.db in archival order and does not lose history
 * files listed after them.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { BarmanError } from '../util/errors.js';
import { generateSegments, hashDir, isHistoryName, isWalName, timelineOf } from '../wal/names.js';
import { backupDir, neighbours, type BackupEntry } from './catalog.js';
import { serverPaths } from './server-dirs.js';
import type { XlogDbEntry } from './xlogdb.js';

export type ListFilesTarget = 'data' | 'standalone' | 'wal' | 'full';
export const LIST_FILES_TARGETS: readonly ListFilesTarget[] = ['data', 'standalone', 'wal', 'full'];

export interface ListFilesOptions {
  /** Also list directories that hold nothing (as their own path), where the walk meets them. */
  listEmptyDirectories?: boolean;
}

/** Files under `dir`, walked top-down as described in the module comment. */
export async function walkBackupDir(dir: string, opts: ListFilesOptions = {}): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    let items;
    try {
      items = await fsp.readdir(d, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw new BarmanError(`cannot read ${d}: ${(err as Error).message}`);
    }
    if (items.length === 0 && opts.listEmptyDirectories) {
      out.push(d);
      return;
    }
    const files: string[] = [];
    const dirs: string[] = [];
    for (const it of items) {
      const p = path.join(d, it.name);
      if (it.isDirectory()) {
        dirs.push(it.name);
      } else if (it.isSymbolicLink()) {
        // A link to a directory is neither a file nor walked into (os.walk without followlinks).
        const target = await fsp.stat(p).catch(() => null);
        if (!target?.isDirectory()) files.push(it.name);
      } else {
        files.push(it.name);
      }
    }
    for (const f of files.sort()) out.push(path.join(d, f));
    for (const sub of dirs.sort()) await walk(path.join(d, sub));
  };
  await walk(dir);
  return out;
}

/** Path of a WAL file in the archive (`wals/<hash dir>/<name>`, history files in `wals/`). */
export function walPath(srv: ServerConfig, name: string): string {
  return path.join(serverPaths(srv).walsDir, hashDir(name), name);
}

/** The segments begin_wal..end_wal of a backup (whether archived or not). */
export function requiredWalSegments(entry: BackupEntry): string[] {
  const { begin_wal: begin, end_wal: end } = entry.info;
  if (!begin || !end) return [];
  return [...generateSegments(begin.toUpperCase(), end.toUpperCase(), entry.info.xlog_segment_size, entry.info.version)];
}

/** Archived WAL names from the backup's begin_wal to the next backup's end_wal, with history files. */
export function walsUntilNextBackup(entries: readonly BackupEntry[], entry: BackupEntry, wals: readonly XlogDbEntry[]): string[] {
  const begin = entry.info.begin_wal?.toUpperCase();
  const out: string[] = [];
  const nextEnd = neighbours(entries, entry.id).next?.info.end_wal?.toUpperCase() ?? null;
  const tli = begin ? timelineOf(begin) : null;
  for (const w of wals) {
    if (isHistoryName(w.name)) {
      out.push(w.name);
      continue;
    }
    if (!begin || tli === null || !isWalName(w.name)) continue;
    const name = w.name.toUpperCase();
    if (name < begin || timelineOf(name) > tli) continue;
    if (nextEnd !== null && name > nextEnd) continue;
    out.push(w.name);
  }
  return out;
}

/** The paths `list-files` prints for a backup. */
export async function listBackupFiles(
  srv: ServerConfig,
  entries: readonly BackupEntry[],
  entry: BackupEntry,
  target: ListFilesTarget,
  wals: readonly XlogDbEntry[],
  opts: ListFilesOptions = {},
): Promise<string[]> {
  if (!LIST_FILES_TARGETS.includes(target)) throw new BarmanError(`invalid target '${String(target)}' (expected data, standalone, wal or full)`);
  const out: string[] = [];
  if (target !== 'wal') out.push(...(await walkBackupDir(backupDir(srv, entry.id), opts)));
  if (target === 'standalone') out.push(...requiredWalSegments(entry).map((n) => walPath(srv, n)));
  if (target === 'wal' || target === 'full') out.push(...walsUntilNextBackup(entries, entry, wals).map((n) => walPath(srv, n)));
  return out;
}
