/**
 * Applying the retention policy (spec §8), what `cron` does for every server whose
 * `retention_policy` is set (retention_policy_mode is always `auto`): every OBSOLETE backup is
 * deleted, oldest first, through the same code as `barman delete` but with the retention WAL
 * rules (WALs older than the oldest remaining backup go, except the ranges of standalone-kept
 * backups). Deletions interrupted earlier (a `delete_this` annotation left behind) are finished.
 *
 * Never deleted: OBSOLETE* backups, kept backups, backups whose chain has a backup in progress,
 * and anything that would leave fewer than minimum_redundancy DONE backups (`delete` checks
 * again under its locks). A backup another process works on (busy per-backup lock) is skipped
 * until the next cron; while a backup of the server runs nothing is deleted. Nor is anything
 * while a backup.info of the server cannot be read (UnreadableCatalogError).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import type { RetentionPolicy } from '../config/values.js';
import { backupDir, loadCatalogStrict, type BackupEntry } from '../catalog/catalog.js';
import { DeleteBusyError, DeleteRefusedError, deleteBackup, hasDeleteMark } from '../catalog/delete.js';
import { serverPaths } from '../catalog/server-dirs.js';
import { faultPoint } from '../util/fault.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { isNotFound } from '../util/fsutil.js';
import { logger } from '../util/log.js';
import { readKeeps } from './keep.js';
import { obsoleteToDelete, retentionReport, type RetentionStatus } from './policy.js';

const log = logger('retention');

export interface RetentionEvents {
  info(msg: string): void;
  warning(msg: string): void;
  error?(msg: string): void;
}

export interface EnforceResult {
  /** Backups deleted (incremental descendants included), in deletion order. */
  deleted: string[];
  /** Backups that should have been deleted but were left for a later cron. */
  skipped: string[];
  removedWals: string[];
}

/** The policy that applies to the server, or null when retention is not enforced. */
export function enforcedPolicy(srv: ServerConfig): RetentionPolicy | null {
  const policy = srv.retention_policy as RetentionPolicy | null;
  if (!policy) return null;
  return policy;
}

/**
 * Retention status of every backup of `entries` (list-backups, show-backup), or null when the
 * server has no retention policy.
 */
export async function retentionStatusesOf(
  srv: ServerConfig,
  entries: readonly BackupEntry[],
  now: Date = new Date(),
): Promise<Map<string, RetentionStatus> | null> {
  const policy = enforcedPolicy(srv);
  if (!policy) return null;
  const keeps = await readKeeps(srv, entries);
  return retentionReport({ entries, keeps, policy, minimumRedundancy: srv.minimum_redundancy, now }).statuses;
}

/**
 * An "orphan" (spec §1): its backup.info is in meta/ but base/<id> is gone, or base/<id> holds
 * nothing but a legacy backup.info. Retention leaves it alone (a human should look at it).
 */
function isOrphan(srv: ServerConfig, e: BackupEntry): boolean {
  const dir = backupDir(srv, e.id);
  let items: string[];
  try {
    items = fs.readdirSync(dir);
  } catch (err) {
    // A directory that cannot be read is not an empty one: the answer is unknown.
    if (!isNotFound(err)) throw new BarmanError(`cannot read ${dir}: ${errorMessage(err)}`);
    return path.dirname(e.infoFile) === path.join(serverPaths(srv).backupDir, 'meta');
  }
  return items.length === 0 || (items.length === 1 && items[0] === 'backup.info');
}

/** Apply the retention policy of one server (see the module comment). */
export async function enforceRetention(srv: ServerConfig, ev: RetentionEvents, now: Date = new Date()): Promise<EnforceResult> {
  const result: EnforceResult = { deleted: [], skipped: [], removedWals: [] };
  const policy = enforcedPolicy(srv);
  if (!policy || srv.retention_policy_mode !== 'auto') {
    log.debug(`Retention policy not enforced for server ${srv.name}`);
    return result;
  }
  // Strict: with a backup.info we cannot read, the policy would count (and clean WALs) as if
  // that backup did not exist. UnreadableCatalogError: nothing is deleted until it is fixed.
  const entries = await loadCatalogStrict(srv);
  const keeps = await readKeeps(srv, entries);
  const input = { entries, keeps, policy, minimumRedundancy: srv.minimum_redundancy, now };
  const report = retentionReport(input);
  for (const note of report.notes) log.warning(`${srv.name}: ${note}`);
  for (const e of entries) {
    const st = report.statuses.get(e.id);
    if (st) log.debug(`Backup ${e.id} of server ${srv.name}: ${st} (status ${e.info.status}, policy ${policy.text}, minimum redundancy ${srv.minimum_redundancy})`);
  }

  // Interrupted deletions first (they are half gone already), then the obsolete backups.
  const marked: BackupEntry[] = [];
  for (const e of entries) if (await hasDeleteMark(srv, e.id)) marked.push(e);
  const markedIds = new Set(marked.map((e) => e.id));
  const obsolete = obsoleteToDelete(input, report.statuses).filter((e) => !markedIds.has(e.id));
  for (const e of entries) {
    if (report.statuses.get(e.id) === 'OBSOLETE' && !e.info.parent_backup_id && !obsolete.includes(e) && !markedIds.has(e.id)) {
      log.info(`Backup ${e.id} of server ${srv.name} is OBSOLETE but is not deleted (kept, in progress chain or minimum redundancy)`);
    }
  }

  const todo: { entry: BackupEntry; why: string }[] = [
    ...marked.map((entry) => ({ entry, why: 'finishing an interrupted delete' })),
    ...obsolete.map((entry) => ({ entry, why: `OBSOLETE for ${policy.text}` })),
  ];
  const gone = new Set<string>();
  for (const { entry, why } of todo) {
    if (gone.has(entry.id)) continue;
    if (!markedIds.has(entry.id) && isOrphan(srv, entry)) {
      const msg = `Backup ${entry.id} of server ${srv.name} is an orphan (its data directory is missing or empty): not deleted by the retention policy`;
      log.warning(msg);
      ev.warning(msg);
      result.skipped.push(entry.id);
      continue;
    }
    log.info(`Enforcing retention policy on server ${srv.name}: removing backup ${entry.id} (${why})`);
    ev.info(`Enforcing retention policy: removing backup ${entry.id} for server ${srv.name}`);
    try {
      const res = await deleteBackup(srv, entry.id, { info: (m) => ev.info(m), warning: (m) => ev.warning(m) }, { retention: true });
      for (const id of res.deletedIds) gone.add(id);
      faultPoint('retention:deleted');
      result.deleted.push(...res.deletedIds);
      result.removedWals.push(...res.removedWals);
      log.info(`Retention policy on server ${srv.name}: deleted ${res.deletedIds.join(', ')}, ${res.removedWals.length} WAL file(s) removed`);
    } catch (err) {
      result.skipped.push(entry.id);
      if (err instanceof DeleteBusyError) {
        const msg = `${errorMessage(err)} (retention policy: will retry at the next cron)`;
        log.warning(msg);
        ev.warning(msg);
        // A running backup holds the server's backup lock: nothing else can be deleted now.
        if (err.busy === 'server') break;
        continue;
      }
      if (err instanceof DeleteRefusedError) {
        log.warning(err.message);
        ev.warning(err.message);
        continue;
      }
      const msg = `Retention policy: cannot delete backup ${entry.id} of server ${srv.name}: ${errorMessage(err)}`;
      log.error(msg);
      (ev.error ?? ev.warning)(msg);
    }
  }
  return result;
}
