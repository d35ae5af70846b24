/**
 * `barman cron`: the only maintenance entry point (no daemon). For each server, under its cron
 * lock: mark backups whose process died as FAILED, keep `receive-wal` running for streaming
 * servers (it exits when PostgreSQL goes away, and is started again here), start `archive-wal` in
 * the background, and move the oldest WAITING_FOR_WALS backup forward. It returns quickly: the
 * long-running work happens in the background processes it starts.
 */
import { spawn } from 'node:child_process';
import { isNotFound } from '../util/fsutil.js';
import * as fs from 'node:fs';
import type { Config, ServerConfig } from '../config/config.js';
import { WAITING_FOR_WALS } from '../catalog/backup-info.js';
import { loadCatalog } from '../catalog/catalog.js';
import { repairCatalogForBarman34 } from '../catalog/compat.js';
import { acquireLock, isLockHeld, LockBusyError } from '../catalog/lock.js';
import { ensureServerDirs, lockPath, serverPaths } from '../catalog/server-dirs.js';
import { checkBackup } from '../backup/check-backup.js';
import { markStaleBackups, primaryCheckpointIfDue } from '../backup/backup.js';
import { enforceRetention } from '../retention/enforce.js';
import { cleanupLockDirectory } from '../operations/lock-cleanup.js';
import { isDrillProcessAlive } from '../drill/records.js';
import { maybeStartDrill } from '../drill/schedule.js';
import { syncCron } from '../geo/sync-cron.js';
import { barmanCommand } from '../util/self.js';
import { errorMessage } from '../util/errors.js';
import { faultPoint } from '../util/fault.js';
import { logger } from '../util/log.js';

const log = logger('cron');

export interface CronEvents {
  info(msg: string): void;
  warning(msg: string): void;
  error(msg: string): void;
}

/** Start `barman -c CONF -q <args>` detached from us, its output going to the log only. */
export function spawnBackground(config: Config, args: string[], keepDescriptors = false): number | undefined {
  const [exe, pre] = barmanCommand();
  const child = spawn(exe, [...pre, '-c', config.configFile, '-q', ...args], {
    detached: true,
    stdio: keepDescriptors ? 'inherit' : 'ignore',
  });
  child.unref();
  return child.pid;
}

async function cronServer(config: Config, srv: ServerConfig, ev: CronEvents, keepDescriptors: boolean): Promise<void> {
  await ensureServerDirs(srv);
  for (const id of await markStaleBackups(srv)) {
    ev.warning(`Backup ${id} of server ${srv.name} was interrupted (its process is gone): marked FAILED`);
  }
  faultPoint('cron:stale-checked');
  // A passive node copies from its primary backup server instead of archiving (src/geo).
  if (srv.passive) await syncCron(srv, ev, (args) => spawnBackground(config, args, keepDescriptors));
  if (srv.streaming_archiver && !srv.passive) {
    if (!(await isLockHeld(lockPath(srv, 'receiveWal')))) {
      ev.info(`Starting streaming archiver for server ${srv.name}`);
      spawnBackground(config, ['receive-wal', srv.name], keepDescriptors);
    }
  }
  if (!srv.passive && hasWalToArchive(srv) && !(await isLockHeld(lockPath(srv, 'archiveWal')))) {
    ev.info(`Starting WAL archiving for server ${srv.name}`);
    spawnBackground(config, ['archive-wal', srv.name], keepDescriptors);
  }
  const catalog = await loadCatalog(srv);
  const repaired = await repairCatalogForBarman34(srv, catalog);
  if (repaired.backups.length > 0) log.info(`${srv.name}: backup.info of ${repaired.backups.join(', ')} written again in the form Barman 3.4 reads`);
  if (repaired.xlogdb) log.info(`${srv.name}: xlog.db written again with the four columns Barman 3.4 reads`);
  const oldestWaiting = catalog.find((e) => e.info.status === WAITING_FOR_WALS);
  if (oldestWaiting) {
    if (!srv.passive) await primaryCheckpointIfDue(srv, oldestWaiting, ev.info);
    const outcome = await checkBackup(srv, oldestWaiting);
    if (outcome === 'done') ev.info(`Backup ${oldestWaiting.id} of server ${srv.name} is now DONE`);
    if (outcome === 'failed') ev.error(`Backup ${oldestWaiting.id} of server ${srv.name} FAILED: ${oldestWaiting.info.error ?? ''}`);
  }
  faultPoint('cron:backups-checked');
  if (srv.retention_policy && srv.retention_policy_mode === 'auto') {
    // Obsolete backups go last; a failure is reported and the cron goes on.
    try {
      await enforceRetention(srv, ev);
    } catch (err) {
      log.error(`retention policy on ${srv.name}: ${errorMessage(err)}`);
      ev.error(`${srv.name}: retention policy: ${errorMessage(err)}`);
    }
  }
  // barman-ts: a recovery drill in the background when one is due (drill_interval).
  await maybeStartDrill(srv, ev, (args) => spawnBackground(config, args, keepDescriptors), isDrillProcessAlive).catch((err: unknown) =>
    ev.warning(`${srv.name}: recovery drill scheduling: ${errorMessage(err)}`),
  );
}

/** Is there anything in incoming/ or streaming/ for archive-wal to do? (cheap check) */
function hasWalToArchive(srv: ServerConfig): boolean {
  const p = serverPaths(srv);
  const has = (dir: string, enabled: boolean) => {
    if (!enabled) return false;
    try {
      return fs.readdirSync(dir).some((n) => !n.endsWith('.tmp') && !n.startsWith('.'));
    } catch (err) {
      // Unreadable is not empty: archive-wal runs and reports the real error in its log.
      return !isNotFound(err);
    }
  };
  // In streaming/ a lone .partial is pg_receivewal's current file: nothing to archive yet.
  const streaming = (() => {
    if (!srv.streaming_archiver) return false;
    try {
      const names = fs.readdirSync(p.streamingDir).filter((n) => !n.endsWith('.tmp'));
      return names.some((n) => !n.endsWith('.partial')) || names.filter((n) => n.endsWith('.partial')).length > 1;
    } catch (err) {
      return !isNotFound(err);
    }
  })();
  return streaming || has(p.incomingDir, srv.archiver);
}

export async function runCron(config: Config, servers: readonly ServerConfig[], ev: CronEvents, keepDescriptors = false): Promise<void> {
  for (const srv of servers) {
    let lock;
    try {
      lock = await acquireLock(lockPath(srv, 'cron'), 'cron');
    } catch (err) {
      if (err instanceof LockBusyError) {
        ev.info(`Another cron process is already running on server ${srv.name}. Skipping to the next server`);
        continue;
      }
      throw err;
    }
    try {
      await cronServer(config, srv, ev, keepDescriptors);
    } catch (err) {
      // One broken server must never stop maintenance (WAL archiving!) of the others.
      log.error(`cron on ${srv.name}: ${errorMessage(err)}`);
      ev.error(`${srv.name}: ${errorMessage(err)}`);
    } finally {
      lock.release();
    }
  }
  if (config.global.lock_directory_cleanup) {
    // Lock files of removed servers and finished one-off commands pile up otherwise; a lock
    // that is held is never touched (and acquireLock retakes a lock whose file went away).
    const dir = config.global.barman_lock_directory ?? config.global.barman_home;
    await cleanupLockDirectory(dir).catch((err: unknown) => log.warning(`lock directory cleanup: ${errorMessage(err)}`));
  }
}
