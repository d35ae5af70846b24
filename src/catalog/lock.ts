/**
 * Barman-compatible lock files: `flock(LOCK_EX)` on a file in `barman_lock_directory`, content =
 * holder PID. Node has no flock(2), so we open the file and let `flock(1)` lock our inherited
 * descriptor: flock locks belong to the open file description, which we keep open, so the lock
 * stays ours after flock(1) exits and is released when we close it or die (even by SIGKILL).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BarmanError } from '../util/errors.js';
import { statIfExistsSync } from '../util/fsutil.js';

export class LockBusyError extends BarmanError {
  constructor(readonly lockFile: string, readonly holderPid: number | null, what: string) {
    super(`Another ${what} process is already running${holderPid ? ` (PID ${holderPid})` : ''}`);
  }
}

export interface HeldLock {
  readonly file: string;
  release(): void;
}

const held = new Set<number>();
process.once('exit', () => {
  for (const fd of held) {
    try {
      fs.closeSync(fd);
    } catch {
      /* already closed */
    }
  }
});

function flockFd(fd: number, wait: boolean): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const child = spawn('flock', wait ? ['-x', '3'] : ['-xn', '3'], { stdio: ['ignore', 'ignore', 'ignore', fd] });
    child.on('error', (err) => reject(new BarmanError(`cannot run flock: ${err.message}`)));
    child.on('close', (code) => resolve(code === 0));
  });
}

/** Does `file` still name the file open on `fd`? False only when the name is gone or another file. */
function sameFile(fd: number, file: string): boolean {
  const a = fs.fstatSync(fd);
  const b = statIfExistsSync(file);
  return b !== null && a.ino === b.ino && a.dev === b.dev;
}

export function readLockPid(file: string): number | null {
  try {
    const n = Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
    return Number.isFinite(n) ? n : null;
  } catch {
    return null;
  }
}

/**
 * Take a lock. With `wait = false` a busy lock throws LockBusyError at once.
 * `what` names the activity for the error message ("backup", "archive-wal", ...).
 */
export async function acquireLock(file: string, what: string, wait = false): Promise<HeldLock> {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  let fd: number;
  for (;;) {
    fd = fs.openSync(file, 'a+', 0o600);
    let ok: boolean;
    try {
      ok = await flockFd(fd, wait);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    if (!ok) {
      fs.closeSync(fd);
      throw new LockBusyError(file, readLockPid(file), what);
    }
    // lock-directory-cleanup may have unlinked the file while we waited for it: a lock on a
    // file that no longer has this name protects nothing (the next process locks a new file).
    let same: boolean;
    try {
      same = sameFile(fd, file);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    if (same) break;
    fs.closeSync(fd);
  }
  fs.ftruncateSync(fd, 0);
  fs.writeSync(fd, `${process.pid}\n`, 0);
  held.add(fd);
  let released = false;
  return {
    file,
    release() {
      if (released) return;
      released = true;
      held.delete(fd);
      fs.closeSync(fd);
    },
  };
}

/** Run `fn` while holding the lock. */
export async function withLock<T>(file: string, what: string, fn: () => Promise<T>, wait = false): Promise<T> {
  const lock = await acquireLock(file, what, wait);
  try {
    return await fn();
  } finally {
    lock.release();
  }
}

/**
 * Is the lock currently held by someone? We try it without waiting on a read-only descriptor
 * and let go at once: the file is neither created nor rewritten, so the holder's PID stays in
 * it (a process that starts during the probe and finds the lock busy names the real holder).
 */
export async function isLockHeld(file: string): Promise<boolean> {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new BarmanError(`cannot open lock file ${file}: ${(err as Error).message}`);
  }
  try {
    return !(await flockFd(fd, false));
  } finally {
    fs.closeSync(fd);
  }
}

/** Lock file names, as Barman spells them. */
export const lockNames = {
  backup: (srv: string) => `.${srv}-backup.lock`,
  cron: (srv: string) => `.${srv}-cron.lock`,
  xlogdb: (srv: string) => `.${srv}-xlogdb.lock`,
  archiveWal: (srv: string) => `.${srv}-archive-wal.lock`,
  receiveWal: (srv: string) => `.${srv}-receive-wal.lock`,
  perBackup: (srv: string, id: string) => `.${srv}-${id}.lock`,
  /** Passive nodes: one `sync-backup` per backup, one `sync-wals` per server. */
  syncBackup: (srv: string, id: string) => `.${srv}-${id}-sync-backup.lock`,
  syncWal: (srv: string) => `.${srv}-sync-wal.lock`,
  globalCron: () => '.cron.lock',
};
