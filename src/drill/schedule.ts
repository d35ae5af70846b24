/**
 * When a drill is due (`drill_interval`), and cron's part: start one in the background. The
 * cadence is the server's: a drill is due when no drill of the server succeeded within the
 * interval; it drills the newest DONE backup, unless that backup was already attempted within
 * the interval (a failed drill is not retried every minute: it waits for a new backup or the
 * next interval, and `check` reports it meanwhile).
 */
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { DONE } from '../catalog/backup-info.js';
import { loadCatalog, type BackupEntry } from '../catalog/catalog.js';
import { acquireLock, isLockHeld } from '../catalog/lock.js';
import { subprocessEnv } from '../postgres/binaries.js';
import { lockPath, serverPaths } from '../catalog/server-dirs.js';
import { humanDuration } from '../util/format.js';
import { logger } from '../util/log.js';
import { cleanupInterrupted, interruptedDrills } from './cleanup.js';
import { LocalHost } from './host.js';
import { effectiveStatus, loadDrillRecords, type DrillRecord } from './records.js';
import { processExists } from '../util/proc.js';

const log = logger('drill');

/** The lock of drills on this host (one at a time); remote hosts get one per ssh command. */
export function drillLockPath(srv: ServerConfig, hostKey: string): string {
  return path.join(serverPaths(srv).lockDir, `.drill@${hostKey}.lock`);
}

export interface DueDecision {
  due: boolean;
  reason: string;
  /** The backup to drill when due. */
  backupId: string | null;
}

/**
 * Pure decision. `now` in seconds since the epoch; `alive` tells whether a `running` record's
 * process is still there.
 */
export function drillDue(
  interval: number | null,
  entries: readonly BackupEntry[],
  records: readonly DrillRecord[],
  now: number,
  alive: (r: DrillRecord) => boolean,
): DueDecision {
  const no = (reason: string): DueDecision => ({ due: false, reason, backupId: null });
  if (interval === null) return no('drill_interval is not set');
  if (records.some((r) => effectiveStatus(r, alive) === 'running')) return no('a drill is running');
  const newest = entries.filter((e) => e.info.status === DONE).at(-1);
  if (!newest) return no('there is no DONE backup');
  const within = (t: number | null) => t !== null && now - t < interval;
  const passed = records.filter((r) => r.status === 'passed' && within(r.ended_at_timestamp)).at(-1);
  if (passed) return no(`the last successful drill ended ${humanDuration(now - (passed.ended_at_timestamp as number))} ago`);
  const tried = records.filter((r) => r.backup_id === newest.id && within(r.started_at_timestamp)).at(-1);
  if (tried) return no(`backup ${newest.id} was drilled ${humanDuration(now - tried.started_at_timestamp)} ago (${effectiveStatus(tried, alive)}): waiting for a new backup or the next interval`);
  return { due: true, reason: `no successful drill within ${humanDuration(interval)}`, backupId: newest.id };
}

/** Decision for a server, from its catalog and drill results. */
export async function drillDueFor(srv: ServerConfig, alive: (r: DrillRecord) => boolean, now = Date.now() / 1000): Promise<DueDecision> {
  return drillDue(srv.drill_interval, await loadCatalog(srv), await loadDrillRecords(srv), now, alive);
}

/** Drills started by this cron process (one per run: the drill lock is per host). */
let startedThisRun = false;

export interface DrillCronEvents {
  info(msg: string): void;
}

/**
 * cron's part: when a drill of the server is due, no drill runs on this host and no backup of
 * the server runs, start `barman drill --if-due SERVER` in the background. The drill checks
 * again once it holds the drill lock, so two crons racing start one drill.
 */
export async function maybeStartDrill(
  srv: ServerConfig,
  ev: DrillCronEvents,
  spawn: (args: string[]) => number | undefined,
  alive: (r: DrillRecord) => boolean,
): Promise<boolean> {
  if (srv.drill_interval === null || startedThisRun) return false;
  if (await isLockHeld(lockPath(srv, 'backup'))) {
    log.debug(`${srv.name}: no drill while a backup runs`);
    return false;
  }
  const lockFile = drillLockPath(srv, 'local');
  if (await isLockHeld(lockFile)) {
    log.debug(`${srv.name}: a drill runs on this host`);
    return false;
  }
  if (interruptedDrills(await loadDrillRecords(srv), 'local', alive).length > 0) {
    // What a killed drill left (a running sandbox PostgreSQL, its directory) goes now.
    const lock = await acquireLock(lockFile, 'drill').catch(() => null);
    if (lock) {
      try {
        await cleanupInterrupted(srv, new LocalHost(subprocessEnv(srv.path_prefix)), (m) => ev.info(m));
      } finally {
        lock.release();
      }
    }
  }
  const d = await drillDueFor(srv, alive);
  if (!d.due) {
    log.debug(`${srv.name}: no drill due: ${d.reason}`);
    return false;
  }
  startedThisRun = true;
  ev.info(`Starting recovery drill for server ${srv.name} (backup ${d.backupId ?? ''}: ${d.reason})`);
  const pid = spawn(['drill', '--if-due', srv.name]);
  // The next cron must see this drill: wait until the child holds the drill lock (or is gone).
  await waitForLockOrExit(lockFile, pid, 60_000);
  return true;
}

/** Until `file` is locked by someone, `pid` has exited, or `timeoutMs` passed. */
export async function waitForLockOrExit(file: string, pid: number | undefined, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await isLockHeld(file)) return;
    if (pid === undefined || !processExists(pid)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  log.warning(`the background drill (pid ${pid ?? '?'}) did not take its lock within ${timeoutMs / 1000} s`);
}
