/**
 * Heal a catalog that an earlier barman-ts (0.1) wrote in a form Barman 3.4 refuses, so that a
 * user can switch back: backup.info files with keys 3.4 does not know although the backup does
 * not need them, and xlog.db lines with a fifth column although the WAL is not encrypted. Run by
 * `cron`; every rewrite goes through the ordinary writers, which write what 3.4 reads.
 *
 * Files of a Barman >= 3.13 catalog (one with a `meta/` directory) are left as they are: that
 * Barman wrote them and reads them, and its users may not want them rewritten.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { DONE, FAILED, hasUnneededNewerKeys } from './backup-info.js';
import { classicInfoFile, readBackupEntry, saveBackupInfo, type BackupEntry } from './catalog.js';
import { acquireLock, LockBusyError } from './lock.js';
import { backupLockPath, serverPaths } from './server-dirs.js';
import { parseXlogDbLine, withXlogDb, xlogDbPath } from './xlogdb.js';

export interface CompatRepair {
  /** Backups whose backup.info was written again in Barman 3.4's form. */
  backups: string[];
  /** xlog.db was written again with four columns. */
  xlogdb: boolean;
}

/** Backups in a final state only: any other one belongs to a running process, which writes it. */
const SETTLED = new Set([DONE, FAILED]);

async function repairBackup(srv: ServerConfig, entry: BackupEntry): Promise<boolean> {
  let lock;
  try {
    lock = await acquireLock(backupLockPath(srv, entry.id), 'backup action');
  } catch (err) {
    if (err instanceof LockBusyError) return false;
    throw err;
  }
  try {
    // Read again under the lock: the file may have changed since the catalog was loaded.
    const fresh = await readBackupEntry(srv, entry.id);
    if (!fresh || fresh.infoFile !== classicInfoFile(srv, entry.id) || !SETTLED.has(fresh.info.status) || !hasUnneededNewerKeys(fresh.info)) return false;
    await saveBackupInfo(srv, entry.id, fresh.info);
    return true;
  } finally {
    lock.release();
  }
}

/** First and last line of a file, read from its two ends (xlog.db may hold 200,000 lines). */
function endLines(file: string): string[] {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  try {
    const size = fs.fstatSync(fd).size;
    const chunk = Math.min(size, 4096);
    const head = Buffer.alloc(chunk);
    const tail = Buffer.alloc(chunk);
    fs.readSync(fd, head, 0, chunk, 0);
    fs.readSync(fd, tail, 0, chunk, size - chunk);
    const first = head.toString('latin1').split('\n')[0] ?? '';
    const lastLines = tail.toString('latin1').split('\n');
    // a torn last line (no newline yet) is an append in progress, not a line to judge
    const last = lastLines.length >= 2 ? (lastLines[lastLines.length - 2] ?? '') : '';
    return [first, last].filter((l) => l !== '');
  } finally {
    fs.closeSync(fd);
  }
}

function hasUnneededFifthColumn(line: string): boolean {
  try {
    const e = parseXlogDbLine(line);
    return e !== null && e.encryption === null && line.trim().split(/\s+/).length === 5;
  } catch {
    return false;
  }
}

/** See the module comment. Returns what was rewritten. */
export async function repairCatalogForBarman34(srv: ServerConfig, entries: readonly BackupEntry[]): Promise<CompatRepair> {
  const out: CompatRepair = { backups: [], xlogdb: false };
  if (fs.existsSync(path.join(serverPaths(srv).backupDir, 'meta'))) return out;
  for (const e of entries) {
    if (SETTLED.has(e.info.status) && hasUnneededNewerKeys(e.info) && (await repairBackup(srv, e))) out.backups.push(e.id);
  }
  const file = xlogDbPath(srv);
  if (file === serverPaths(srv).xlogdbFile && endLines(file).some(hasUnneededFifthColumn)) {
    out.xlogdb = await withXlogDb(srv, async (db) => {
      if (db.file !== file) return false;
      await db.rewrite(await db.read());
      return true;
    });
  }
  return out;
}
