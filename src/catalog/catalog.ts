/**
 * A server's backup catalog: every backup.info of both layouts (classic `base/<id>/backup.info`
 * and Barman >= 3.13 `meta/<id>-backup.info`, the latter winning), ID shortcuts and names.
 */
import { promises as fsp } from 'node:fs';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { BarmanError } from '../util/errors.js';
import { ensureDir, pathExists } from '../util/fsutil.js';
import {
  COPY_DONE,
  FAILED,
  backupType,
  isBackupId,
  readBackupInfoFile,
  writeBackupInfoFile,
  type BackupInfo,
} from './backup-info.js';
import { serverPaths } from './server-dirs.js';

export interface BackupEntry {
  id: string;
  info: BackupInfo;
  /** The file the info was read from, and where it is written back. */
  infoFile: string;
}

export const SHORTCUTS = ['latest', 'last', 'oldest', 'first', 'last-failed', 'latest-full', 'last-full'] as const;

function metaDir(srv: ServerConfig): string {
  return path.join(serverPaths(srv).backupDir, 'meta');
}

export function classicInfoFile(srv: ServerConfig, id: string): string {
  return path.join(serverPaths(srv).baseDir, id, 'backup.info');
}

export function backupDir(srv: ServerConfig, id: string): string {
  return path.join(serverPaths(srv).baseDir, id);
}

/** Where to write a backup's info: the meta file if Barman >= 3.13 created one, else classic. */
export function infoFileFor(srv: ServerConfig, id: string): string {
  const meta = path.join(metaDir(srv), `${id}-backup.info`);
  return fs.existsSync(meta) ? meta : classicInfoFile(srv, id);
}

/** All backups of the server, sorted by ID (oldest first). Unreadable files are skipped with a note. */
export async function loadCatalog(srv: ServerConfig, problems?: string[]): Promise<BackupEntry[]> {
  const found = new Map<string, string>();
  const base = serverPaths(srv).baseDir;
  for (const d of await fsp.readdir(base).catch(() => [] as string[])) {
    const f = path.join(base, d, 'backup.info');
    if (await pathExists(f)) found.set(d, f);
  }
  for (const n of await fsp.readdir(metaDir(srv)).catch(() => [] as string[])) {
    const m = /^(.+?)-backup\.info$/.exec(n);
    if (m?.[1]) found.set(m[1], path.join(metaDir(srv), n));
  }
  const entries: BackupEntry[] = [];
  for (const [id, infoFile] of found) {
    try {
      entries.push({ id, info: await readBackupInfoFile(infoFile), infoFile });
    } catch (err) {
      problems?.push(`Skipping backup ${id}: ${(err as Error).message}`);
    }
  }
  return entries.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** Write a backup's info where it belongs (creating `base/<id>/` with catalog permissions). */
export async function saveBackupInfo(srv: ServerConfig, id: string, info: BackupInfo): Promise<string> {
  const file = infoFileFor(srv, id);
  await ensureDir(path.dirname(file));
  await writeBackupInfoFile(file, info);
  return file;
}

const isUsable = (e: BackupEntry) => COPY_DONE.has(e.info.status);

/**
 * Resolve a BACKUP_ID argument: an ID, a shortcut (`latest|last`, `oldest|first`, `last-failed`,
 * `latest-full|last-full`) or a backup name. Unlike Barman, `failed` is not taken for
 * `last-failed` (that was a substring-matching accident).
 */
export function resolveBackupId(srv: ServerConfig, entries: readonly BackupEntry[], arg: string): BackupEntry {
  const pick = (e: BackupEntry | undefined, what: string): BackupEntry => {
    if (!e) throw new BarmanError(`There are no ${what} backups for server '${srv.name}'`);
    return e;
  };
  switch (arg) {
    case 'latest':
    case 'last':
      return pick(entries.filter(isUsable).at(-1), 'available');
    case 'oldest':
    case 'first':
      return pick(entries.filter(isUsable).at(0), 'available');
    case 'last-failed':
      return pick(entries.filter((e) => e.info.status === FAILED).at(-1), 'failed');
    case 'latest-full':
    case 'last-full':
      return pick(entries.filter((e) => isUsable(e) && ['full', 'rsync'].includes(backupType(e.info))).at(-1), 'full');
    default:
      break;
  }
  if (isBackupId(arg)) {
    const e = entries.find((x) => x.id === arg);
    if (!e) throw new BarmanError(`Unknown backup '${arg}' for server '${srv.name}'`);
    return e;
  }
  const named = entries.filter((e) => e.info.backup_name === arg);
  if (named.length > 1) {
    throw new BarmanError(`Multiple backups with name '${arg}' for server '${srv.name}': use a backup ID (${named.map((e) => e.id).join(', ')})`);
  }
  const e = named[0] ?? entries.find((x) => x.id === arg);
  if (!e) throw new BarmanError(`Unknown backup '${arg}' for server '${srv.name}'`);
  return e;
}

/** A backup name must not look like an ID or a shortcut (spec §2.5). */
export function validateBackupName(name: string): void {
  if (isBackupId(name) || (SHORTCUTS as readonly string[]).includes(name) || name === 'auto') {
    throw new BarmanError(`Backup name '${name}' is not allowed: it looks like a backup ID or a reserved word`);
  }
  if (name.trim() === '') throw new BarmanError('Backup name cannot be empty');
}

/** Data directory of a backup: layout v1 (`pgdata/`) or v2 (`data/`, `<oid>/`). */
export function backupDataDir(srv: ServerConfig, id: string, oid?: number): string {
  const dir = backupDir(srv, id);
  const v1 = path.join(dir, 'pgdata');
  if (fs.existsSync(v1)) return oid === undefined ? v1 : path.join(v1, 'pg_tblspc', String(oid));
  return oid === undefined ? path.join(dir, 'data') : path.join(dir, String(oid));
}

/** The usable backups before and after `id` (for hooks and show-backup). */
export function neighbours(entries: readonly BackupEntry[], id: string): { previous: BackupEntry | null; next: BackupEntry | null } {
  const usable = entries.filter((e) => COPY_DONE.has(e.info.status) || e.id === id);
  const i = usable.findIndex((e) => e.id === id);
  return { previous: i > 0 ? (usable[i - 1] ?? null) : null, next: i >= 0 ? (usable[i + 1] ?? null) : null };
}
