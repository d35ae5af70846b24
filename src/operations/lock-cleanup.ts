/**
 * `lock-directory-cleanup`: remove the lock files that no process holds. Holders leave their
 * lock files behind when they finish (as Barman does: removing a file that another process may
 * be opening could let two processes lock two different files of the same name), so locks of
 * finished backups and of removed servers pile up; this clears them.
 *
 * Each file is removed while we hold its lock, so a process that holds it is never affected.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LockBusyError, acquireLock } from '../catalog/lock.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { fsyncDir } from '../util/fsutil.js';

export interface LockCleanupResult {
  removed: string[];
  /** Held by a running process: left alone. */
  busy: string[];
}

/** Barman's lock files: hidden, ending in `.lock`. */
export function isLockFileName(name: string): boolean {
  return name.startsWith('.') && name.endsWith('.lock') && name.length >= '.x.lock'.length;
}

export async function cleanupLockDirectory(dir: string): Promise<LockCleanupResult> {
  const result: LockCleanupResult = { removed: [], busy: [] };
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return result;
    throw new BarmanError(`cannot read the lock directory ${dir}: ${errorMessage(err)}`);
  }
  for (const name of names.sort()) {
    if (!isLockFileName(name)) continue;
    const file = path.join(dir, name);
    if (!fs.lstatSync(file, { throwIfNoEntry: false })?.isFile()) continue;
    let lock;
    try {
      lock = await acquireLock(file, 'lock-directory-cleanup');
    } catch (err) {
      if (err instanceof LockBusyError) {
        result.busy.push(file);
        continue;
      }
      throw err;
    }
    try {
      fs.unlinkSync(file);
      result.removed.push(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new BarmanError(`cannot remove ${file}: ${errorMessage(err)}`);
    } finally {
      lock.release();
    }
  }
  if (result.removed.length > 0) await fsyncDir(dir);
  return result;
}
