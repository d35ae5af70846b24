/**
 * A server's backup catalog: every backup.info of both layouts (classic `base/<id>/backup.info`
 * and Barman >= 3.13 `meta/<id>-backup.info`, the latter winning), ID shortcuts and names.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { DIR_MODE, FILE_MODE, ensureDir, isNotFound, pathExists, pathExistsSync, readdirIfExistsSync, writeFileAtomic } from '../util/fsutil.js';
import { logger } from '../util/log.js';
import {
  COPY_DONE,
  EXTRAS_ON_DISK,
  EXTRA_KEYS,
  FAILED,
  backupExtras,
  backupType,
  isBackupId,
  needsNewerBackupInfo,
  parseBackupInfo,
  readBackupInfoFile,
  unknownBackupInfoKeys,
  writeBackupInfoFile,
  type BackupExtras,
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

/**
 * barman-ts's own files about a backup live in `base/<id>/.barman-ts/`: Barman never reads them,
 * its `delete` removes them with the backup, and `sync-backup` copies them with it.
 */
export const BACKUP_EXTRAS_DIR = '.barman-ts';
const EXTRAS_FILE = 'backup.json';

/**
 * The facts that a backup.info in Barman 3.4's form leaves out (backup-info.ts, EXTRA_KEYS),
 * as JSON: `{"cluster_size": 123, "data_checksums": "on"}`.
 */
export function backupExtrasFile(srv: ServerConfig, id: string): string {
  return path.join(backupDir(srv, id), BACKUP_EXTRAS_DIR, EXTRAS_FILE);
}

function validExtras(value: unknown): BackupExtras {
  const out: BackupExtras = {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return out;
  const v = value as Record<string, unknown>;
  if (typeof v.cluster_size === 'number' && Number.isSafeInteger(v.cluster_size) && v.cluster_size >= 0) out.cluster_size = v.cluster_size;
  if (typeof v.data_checksums === 'string') out.data_checksums = v.data_checksums;
  if (typeof v.summarize_wal === 'string') out.summarize_wal = v.summarize_wal;
  return out;
}

/**
 * Fill the EXTRA_KEYS that backup.info left out from the extras file, when there is one. These
 * values only inform (show-backup, drills): a file that cannot be read costs a log line, not the
 * backup.
 */
function mergeBackupExtras(srv: ServerConfig, id: string, info: BackupInfo): void {
  if (needsNewerBackupInfo(info) || EXTRA_KEYS.every((k) => info[k] !== null)) return;
  const file = backupExtrasFile(srv, id);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR') logger('catalog', srv.name).warning(`cannot read ${file}: ${errorMessage(err)}`);
    return;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    logger('catalog', srv.name).warning(`ignoring ${file}: not valid JSON`);
    return;
  }
  const extras = validExtras(parsed);
  for (const k of EXTRA_KEYS) {
    if (info[k] === null && extras[k] !== undefined) (info as unknown as Record<string, unknown>)[k] = extras[k];
  }
  info[EXTRAS_ON_DISK] = text;
}

/**
 * Write the extras file of the backup in `dir` (`base/<id>`) when its backup.info leaves values
 * out and the file does not hold them yet. Never creates `dir` itself: a backup whose directory
 * is gone gets no extras.
 */
export async function saveBackupExtras(dir: string, info: BackupInfo): Promise<void> {
  const extras = backupExtras(info);
  if (Object.keys(extras).length === 0) return;
  const text = `${JSON.stringify(extras)}\n`;
  if (info[EXTRAS_ON_DISK] === text) return;
  const file = path.join(dir, BACKUP_EXTRAS_DIR, EXTRAS_FILE);
  try {
    await fs.promises.mkdir(path.dirname(file), { mode: DIR_MODE });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    if (code !== 'EEXIST') throw err;
  }
  await writeFileAtomic(file, text, FILE_MODE);
  info[EXTRAS_ON_DISK] = text;
}

/** Where to write a backup's info: the meta file if Barman >= 3.13 created one, else classic. */
export function infoFileFor(srv: ServerConfig, id: string): string {
  const meta = path.join(metaDir(srv), `${id}-backup.info`);
  return pathExistsSync(meta) ? meta : classicInfoFile(srv, id);
}

/** A backup.info that could not be read made the catalog incomplete: nothing may be removed. */
export class UnreadableCatalogError extends BarmanError {
  constructor(
    srv: ServerConfig,
    readonly files: readonly string[],
    /** Set when a catalog directory (base/, meta/) could not be listed: the reason. */
    directoryProblem?: string,
  ) {
    super(
      directoryProblem !== undefined
        ? `Cannot read the backup catalog of server '${srv.name}' (${directoryProblem}): nothing is removed while the catalog cannot be read`
        : `Cannot read ${files.length === 1 ? 'a backup.info file' : `${files.length} backup.info files`} of server '${srv.name}' ` +
            `(${files.join(', ')}): nothing is removed while the catalog is incomplete (fix or move the file(s) away)`,
    );
  }
}

export interface LoadCatalogOptions {
  /**
   * Throw UnreadableCatalogError when any backup.info cannot be read. Every path that removes
   * data (delete, WAL cleanup, retention) needs this: a backup it cannot see may need the WALs
   * or the parent it would remove. Reporting commands skip unreadable files instead.
   */
  strict?: boolean;
  /** Lenient load: receives one note per skipped file. */
  problems?: string[];
}

/**
 * Where each backup's info is: meta/ (Barman >= 3.13) over base/<id>/backup.info. Synchronous
 * on purpose: with a thousand backups, one promise round trip through the thread pool per file
 * costs more than the reads themselves. A missing base/ or meta/ is an empty one; one that
 * cannot be read throws (a catalog that looks empty would let the WAL cleanup remove the WALs of
 * every backup it cannot see), and so does a base/<id>/backup.info whose presence cannot be told.
 */
function findInfoFiles(srv: ServerConfig): Map<string, string> {
  const found = new Map<string, string>();
  const base = serverPaths(srv).baseDir;
  for (const d of readdirIfExistsSync(base)) {
    const f = path.join(base, d, 'backup.info');
    if (pathExistsSync(f)) found.set(d, f);
  }
  for (const n of readdirIfExistsSync(metaDir(srv))) {
    const m = /^(.+?)-backup\.info$/.exec(n);
    if (m?.[1]) found.set(m[1], path.join(metaDir(srv), n));
  }
  return found;
}

/**
 * All backups of the server, sorted by ID (oldest first). Unreadable files are skipped with a
 * note, or make the load fail with `strict` (see LoadCatalogOptions). A `string[]` argument is
 * the `problems` list (older call style).
 */
export async function loadCatalog(srv: ServerConfig, opts: LoadCatalogOptions | string[] = {}): Promise<BackupEntry[]> {
  const { strict = false, problems } = Array.isArray(opts) ? { problems: opts } : opts;
  const entries: BackupEntry[] = [];
  const unreadable: string[] = [];
  let infoFiles: Map<string, string>;
  try {
    infoFiles = findInfoFiles(srv);
  } catch (err) {
    // Lenient or not: a catalog that cannot be listed is never shown as an empty one.
    throw new UnreadableCatalogError(srv, [], errorMessage(err));
  }
  for (const [id, infoFile] of infoFiles) {
    try {
      const info = parseBackupInfo(fs.readFileSync(infoFile, 'utf8'), infoFile);
      mergeBackupExtras(srv, id, info);
      entries.push({ id, info, infoFile });
      const newer = unknownBackupInfoKeys(info);
      if (newer.length > 0) problems?.push(`Backup ${id} has backup.info fields of a newer Barman (${newer.join(', ')}): barman-ts lists it but cannot restore it`);
    } catch (err) {
      unreadable.push(infoFile);
      problems?.push(`Skipping backup ${id}: ${(err as Error).message}`);
    }
  }
  if (strict && unreadable.length > 0) throw new UnreadableCatalogError(srv, unreadable.sort());
  return entries.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** `loadCatalog(srv, { strict: true })`: for the paths that remove data. */
export async function loadCatalogStrict(srv: ServerConfig): Promise<BackupEntry[]> {
  return loadCatalog(srv, { strict: true });
}

/** The current info of one backup, read now (meta/ over classic); null when the backup is gone. */
export async function readBackupEntry(srv: ServerConfig, id: string): Promise<BackupEntry | null> {
  for (const infoFile of [path.join(metaDir(srv), `${id}-backup.info`), classicInfoFile(srv, id)]) {
    try {
      const info = await readBackupInfoFile(infoFile);
      mergeBackupExtras(srv, id, info);
      return { id, info, infoFile };
    } catch (err) {
      if (isNotFound(err)) continue;
      throw err;
    }
  }
  return null;
}

/** saveBackupInfo refused to write: the backup was deleted meanwhile (nothing was written). */
export class BackupGoneError extends BarmanError {
  constructor(srv: ServerConfig, id: string) {
    super(`Backup ${id} of server ${srv.name} no longer exists: its backup.info is not written back`);
  }
}

export interface SaveBackupInfoOptions {
  /**
   * A new backup (only takeBackup): create `base/<id>/` if needed. Otherwise (the default) this
   * is an update, refused with BackupGoneError when the backup's backup.info is gone, so that a
   * stale copy of a deleted backup is never written back (that would resurrect it with no data).
   */
  create?: boolean;
}

/** Write a backup's info where it belongs (see SaveBackupInfoOptions; 0700 dirs, 0600 file). */
export async function saveBackupInfo(srv: ServerConfig, id: string, info: BackupInfo, opts: SaveBackupInfoOptions = {}): Promise<string> {
  const file = infoFileFor(srv, id);
  if (opts.create === true) {
    await ensureDir(path.dirname(file));
  } else if (!(await pathExists(file))) {
    throw new BackupGoneError(srv, id);
  }
  // Without `create` no directory is made: if base/<id>/ goes away now, the write fails.
  await saveBackupExtras(backupDir(srv, id), info);
  await writeBackupInfoFile(file, info);
  return file;
}

const isUsable = (e: BackupEntry) => COPY_DONE.has(e.info.status);

/**
 * Resolve a BACKUP_ID argument: an ID, a shortcut (`latest|last`, `oldest|first`, `last-failed`,
 * `latest-full|last-full`) or a backup name. Unlike Barman, `failed` is not taken for
 * `last-failed` (that was a substring-matching accident).
 */
export function resolveBackupId(srv: Pick<ServerConfig, 'name'>, entries: readonly BackupEntry[], arg: string): BackupEntry {
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
  if (pathExistsSync(v1)) return oid === undefined ? v1 : path.join(v1, 'pg_tblspc', String(oid));
  return oid === undefined ? path.join(dir, 'data') : path.join(dir, String(oid));
}

/** The usable backups before and after `id` (for hooks and show-backup). */
export function neighbours(entries: readonly BackupEntry[], id: string): { previous: BackupEntry | null; next: BackupEntry | null } {
  const usable = entries.filter((e) => COPY_DONE.has(e.info.status) || e.id === id);
  const i = usable.findIndex((e) => e.id === id);
  return { previous: i > 0 ? (usable[i - 1] ?? null) : null, next: i >= 0 ? (usable[i + 1] ?? null) : null };
}
