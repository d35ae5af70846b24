/**
 * The barman subprocesses of a server (`list-processes`, `terminate-process`): the holders of
 * its lock files. Every long-running barman activity holds one (spec §1.2), so a held lock is
 * a live process and the PID written in the file is its PID; a file nobody holds is a leftover.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { isLockHeld, readLockPid } from '../catalog/lock.js';
import { serverPaths } from '../catalog/server-dirs.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { processExists } from '../util/proc.js';

export interface ProcessInfo {
  pid: number;
  /** receive-wal, backup, cron, archive-wal, sync-wal, sync-backup. */
  task: string;
  lockFile: string;
}

/** Tasks with one fixed lock file per server, in the order they are listed. */
const FIXED_TASKS = ['receive-wal', 'backup', 'cron', 'archive-wal', 'sync-wal'] as const;

export const KNOWN_TASKS: readonly string[] = [...FIXED_TASKS, 'sync-backup'];

/** The task a lock file of `server` stands for, or null (xlogdb, per-backup locks, other servers). */
export function taskOfLockFile(server: string, fileName: string): string | null {
  const prefix = `.${server}-`;
  if (!fileName.startsWith(prefix) || !fileName.endsWith('.lock')) return null;
  const rest = fileName.slice(prefix.length, -'.lock'.length);
  if ((FIXED_TASKS as readonly string[]).includes(rest)) return rest;
  // `.<srv>-<backup_id>-sync-backup.lock` (passive nodes copying one backup each).
  if (/^[^/]+-sync-backup$/.test(rest)) return 'sync-backup';
  return null;
}

const taskRank = (task: string): number => KNOWN_TASKS.indexOf(task);

/** Live barman subprocesses of the server (held locks with a readable PID). */
export async function listProcesses(srv: ServerConfig): Promise<ProcessInfo[]> {
  const dir = serverPaths(srv).lockDir;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new BarmanError(`cannot read the lock directory ${dir}: ${errorMessage(err)}`);
  }
  const found: ProcessInfo[] = [];
  for (const name of names.sort()) {
    const task = taskOfLockFile(srv.name, name);
    if (!task) continue;
    const lockFile = path.join(dir, name);
    if (!(await isLockHeld(lockFile))) continue;
    const pid = readLockPid(lockFile);
    if (pid && pid > 0) found.push({ pid, task, lockFile });
  }
  return found.sort((a, b) => taskRank(a.task) - taskRank(b.task));
}


export interface TerminateOptions {
  /** How long to wait for the process to go (default 10 s, as Barman). */
  timeoutMs?: number;
  signal?: NodeJS.Signals;
}

/**
 * Ask one process to stop, as Barman does with SIGINT (our commands and Barman's both stop
 * cleanly on it: receive-wal stops pg_receivewal, backup marks itself FAILED), and wait until it
 * is gone. Resolves to false when it is still alive after the timeout.
 */
export async function terminateProcess(proc: ProcessInfo, opts: TerminateOptions = {}): Promise<boolean> {
  // The lock must still be held by that PID: otherwise the PID may already belong to another program.
  if (!(await isLockHeld(proc.lockFile)) || readLockPid(proc.lockFile) !== proc.pid) return true;
  try {
    process.kill(proc.pid, opts.signal ?? 'SIGINT');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return true;
    throw new BarmanError(`Cannot terminate process ${proc.task}(${proc.pid}): ${errorMessage(err)}`);
  }
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  while (Date.now() < deadline) {
    if (!processExists(proc.pid)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return !processExists(proc.pid);
}
