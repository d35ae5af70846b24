/**
 * What `barman cron` does for a passive server (spec §10), in place of WAL archiving: ask the
 * primary (`sync-info` from the last synced xlog.db position, saved as primary.info), start at
 * most one `sync-backup` in the background, for the oldest backup that needs one, then
 * `sync-wals` when WAL files are listed. Both run as separate processes, so cron returns at once;
 * check-backup and the local retention policy follow in cron as for any server.
 *
 * A backup needs a sync-backup when the primary has it and it is not here (or only as a failed or
 * interrupted copy), unless the local retention policy would delete it at once; a failed local
 * copy of a backup the primary no longer has needs one too (it removes it). A local copy left
 * SYNCING by a process that died is marked FAILED first.
 */
import type { ServerConfig } from '../config/config.js';
import { COPY_DONE, FAILED, SYNCING } from '../catalog/backup-info.js';
import { loadCatalog, readBackupEntry, saveBackupInfo, BackupGoneError } from '../catalog/catalog.js';
import { acquireLock, isLockHeld, LockBusyError, type HeldLock } from '../catalog/lock.js';
import { lockPath, syncBackupLockPath } from '../catalog/server-dirs.js';
import { readKeeps } from '../retention/keep.js';
import { errorMessage } from '../util/errors.js';
import { logger } from '../util/log.js';
import { fetchPrimaryInfo, readSyncWalsInfo } from './primary-info.js';
import { decideSync, isLocallyObsolete } from './primary-backup.js';

const log = logger('sync');

export interface SyncCronEvents {
  info(msg: string): void;
  warning(msg: string): void;
  error(msg: string): void;
}

/** Starts `barman <args>` in the background (cron's spawnBackground). */
export type Spawner = (args: string[]) => void;

/**
 * SYNCING backups whose sync-backup process is gone (killed, host rebooted): FAILED, under the
 * sync lock and read again, so a copy that just finished is never overwritten.
 */
export async function markStaleSyncs(srv: ServerConfig): Promise<string[]> {
  const marked: string[] = [];
  for (const e of (await loadCatalog(srv)).filter((x) => x.info.status === SYNCING)) {
    let lock: HeldLock;
    try {
      lock = await acquireLock(syncBackupLockPath(srv, e.id), 'sync-backup');
    } catch (err) {
      if (err instanceof LockBusyError) continue;
      throw err;
    }
    try {
      const now = await readBackupEntry(srv, e.id);
      if (now?.info.status !== SYNCING) continue;
      const error = `failure syncing server ${srv.name} backup ${e.id}: the sync-backup process died before the copy was complete`;
      await saveBackupInfo(srv, e.id, { ...now.info, status: FAILED, error });
      marked.push(e.id);
    } catch (err) {
      if (!(err instanceof BackupGoneError)) throw err;
    } finally {
      lock.release();
    }
  }
  return marked;
}

/** The passive part of `barman cron` for one server (see the module comment). */
export async function syncCron(srv: ServerConfig, ev: SyncCronEvents, spawn: Spawner): Promise<void> {
  for (const id of await markStaleSyncs(srv)) {
    ev.warning(`Backup ${id} of server ${srv.name} was being synchronised by a process that is gone: marked FAILED`);
  }
  let primary;
  try {
    const synced = readSyncWalsInfo(srv);
    primary = (await fetchPrimaryInfo(srv, synced.lastWal, synced.lastPosition, ev)).info;
  } catch (err) {
    log.error(`sync-info of ${srv.name}: ${errorMessage(err)}`);
    ev.error(`Failed to retrieve the primary node status: ${errorMessage(err)}`);
    return;
  }

  const local = await loadCatalog(srv);
  const remoteIds = Object.keys(primary.backups);
  const localDone = new Set(local.filter((e) => COPY_DONE.has(e.info.status)).map((e) => e.id));
  // Failed or interrupted local copies the primary no longer has: sync-backup removes them.
  const leftovers = local.filter((e) => !(e.id in primary.backups) && (e.info.status === FAILED || e.info.status === SYNCING)).map((e) => e.id);
  // Removals first (quick, and they free space), then copies, oldest first.
  const candidates = [...leftovers.sort(), ...remoteIds.filter((id) => !localDone.has(id)).sort()];
  if (remoteIds.length === 0 && leftovers.length === 0) {
    ev.info(`No backup synchronisation required for server ${srv.name}`);
  } else {
    const keeps = srv.retention_policy ? await readKeeps(srv, local) : new Map();
    const now = new Date();
    for (const id of candidates) {
      const remote = primary.backups[id];
      const mine = local.find((e) => e.id === id)?.info ?? null;
      const d = decideSync(srv.name, id, remote !== undefined, mine, primary.config.name, () => (remote ? isLocallyObsolete(srv, id, remote, local, keeps, now) : false));
      if (d.kind === 'nothing' || d.kind === 'refuse') {
        log.debug(`${srv.name}: ${d.message}`);
        continue;
      }
      if (await isLockHeld(syncBackupLockPath(srv, id))) {
        ev.info(`A synchronisation process for backup ${id} on server ${srv.name} is already in progress`);
        break;
      }
      ev.info(`Starting copy of backup ${id} for server ${srv.name}`);
      spawn(['sync-backup', srv.name, id]);
      break;
    }
  }

  if (primary.wals.length === 0) {
    ev.info(`No WAL synchronisation required for server ${srv.name}`);
    return;
  }
  if (await isLockHeld(lockPath(srv, 'syncWal'))) {
    ev.info(`WAL synchronisation already running for server ${srv.name}`);
    return;
  }
  ev.info(`Started copy of WAL files for server ${srv.name}`);
  spawn(['sync-wals', srv.name]);
}
