/**
 * Keep annotations (`barman keep`): a kept backup is never deleted, neither by `delete` nor by
 * the retention policy. `full` keeps the backup and every WAL after it (point-in-time recovery
 * from it stays possible); `standalone` keeps the backup with only the WALs needed to make it
 * consistent.
 *
 * Where the annotation lives: Barman < 3.13.3 reads only `base/<id>/annotations/keep`, newer
 * ones read `meta/<id>-keep` first and move the legacy file there. We write the legacy file,
 * which every Barman 3.x reads, unless the backup already lives in `meta/` (its backup.info or
 * its keep file is there), in which case `meta/<id>-keep` is written and a legacy file removed.
 * The content is `full` or `standalone`, without newline.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { DONE } from '../catalog/backup-info.js';
import { backupDir, type BackupEntry } from '../catalog/catalog.js';
import { readKeep, type KeepTarget } from '../catalog/delete.js';
import { serverPaths } from '../catalog/server-dirs.js';
import { BarmanError } from '../util/errors.js';
import { ensureDir, fsyncDir, pathExists, writeFileAtomic } from '../util/fsutil.js';
import { logger } from '../util/log.js';

export type { KeepTarget };
export const KEEP_TARGETS: readonly KeepTarget[] = ['full', 'standalone'];

const log = logger('retention');

function metaDir(srv: ServerConfig): string {
  return path.join(serverPaths(srv).backupDir, 'meta');
}

function metaKeepFile(srv: ServerConfig, id: string): string {
  return path.join(metaDir(srv), `${id}-keep`);
}

function legacyKeepFile(srv: ServerConfig, id: string): string {
  return path.join(backupDir(srv, id), 'annotations', 'keep');
}

/** The keep target of a backup, null when it is not kept. */
export async function getKeep(srv: ServerConfig, id: string): Promise<KeepTarget | null> {
  return readKeep(srv, id);
}

/** Keep targets of the catalog's backups (only the kept ones are in the map). */
export async function readKeeps(srv: ServerConfig, entries: readonly { id: string }[]): Promise<Map<string, KeepTarget>> {
  const out = new Map<string, KeepTarget>();
  for (const e of entries) {
    const k = await readKeep(srv, e.id);
    if (k) out.set(e.id, k);
  }
  return out;
}

/** Where the keep annotation of a backup is written (see the module comment). */
export async function keepFileFor(srv: ServerConfig, id: string): Promise<string> {
  const inMeta = (await pathExists(path.join(metaDir(srv), `${id}-backup.info`))) || (await pathExists(metaKeepFile(srv, id)));
  return inMeta ? metaKeepFile(srv, id) : legacyKeepFile(srv, id);
}

/** Refuse what Barman refuses: only DONE full backups can be kept. */
export function checkKeepable(entry: BackupEntry): void {
  if (entry.info.status !== DONE) {
    throw new BarmanError(
      `Cannot add keep to backup ${entry.id} because it has status ${entry.info.status}. Only backups with status DONE can be kept.`,
    );
  }
  if (entry.info.parent_backup_id) {
    throw new BarmanError(
      `Unable to execute the keep command on backup ${entry.id}: is an incremental backup.\n` +
        'Only full backups are eligible for the use of the keep command.',
    );
  }
}

async function unlinkDurably(file: string): Promise<boolean> {
  try {
    await fsp.unlink(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return false;
    throw new BarmanError(`cannot remove ${file}: ${(err as Error).message}`);
  }
  await fsyncDir(path.dirname(file));
  return true;
}

/** Write (or replace) the keep annotation of a DONE full backup; returns the file written. */
export async function keepBackup(srv: ServerConfig, entry: BackupEntry, target: KeepTarget): Promise<string> {
  if (!KEEP_TARGETS.includes(target)) throw new BarmanError(`invalid keep target '${String(target)}' (expected full or standalone)`);
  checkKeepable(entry);
  const file = await keepFileFor(srv, entry.id);
  const dir = path.dirname(file);
  const existed = await pathExists(dir);
  await ensureDir(dir);
  // A directory just created must itself survive a crash: fsync its parent.
  if (!existed) await fsyncDir(path.dirname(dir));
  await writeFileAtomic(file, target);
  // One annotation only: a legacy file next to a meta one would be read by older Barman versions.
  if (file === metaKeepFile(srv, entry.id)) await unlinkDurably(legacyKeepFile(srv, entry.id));
  log.info(`Keep ${target} added to backup ${entry.id} of server ${srv.name} (${file})`);
  return file;
}

/** Remove the keep annotation (both locations); false when the backup was not kept. */
export async function releaseKeep(srv: ServerConfig, id: string): Promise<boolean> {
  const a = await unlinkDurably(metaKeepFile(srv, id));
  const b = await unlinkDurably(legacyKeepFile(srv, id));
  if (a || b) log.info(`Keep released for backup ${id} of server ${srv.name}`);
  return a || b;
}
