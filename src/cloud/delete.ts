/**
 * barman-cloud-backup-delete's work (spec §11.2, §8): delete one backup, or every backup a
 * retention policy makes OBSOLETE (oldest first, never a kept one, never below
 * --minimum-redundancy), then the WAL files no remaining backup needs: every WAL name before
 * the oldest remaining backup's begin_wal on its timeline (history files and WAL of other
 * backups' timelines stay; with a policy, the ranges of older standalone-kept backups stay).
 * backup.info is first rewritten FAILED with a delete-in-progress error (as `barman delete`
 * marks a local backup), then the backup's objects go, then its WAL files, backup.info last, all
 * in batched deletes: a delete cut half-way never leaves a backup listed (or restorable) with
 * objects missing, and the next delete, by ID or by policy, finishes it, WAL included. Barman's
 * own order (objects, backup.info, WAL, without the mark) leaves a DONE backup with missing
 * objects, or WAL files no later delete of that backup removes, after a cut.
 */
import { FAILED, serializeBackupInfo } from '../catalog/backup-info.js';
import { decideWalCleanup, selectWalsToRemove } from '../catalog/delete.js';
import type { RetentionPolicy } from '../config/values.js';
import { obsoleteToDelete } from '../retention/policy.js';
import { deleteKeys, listAll } from '../storage/types.js';
import { faultPoint } from '../util/fault.js';
import type { CloudBackupEntry, CloudCatalog } from './catalog.js';

/** backup.info error of a backup whose delete started (Barman 3.4 reads it: a FAILED backup). */
export const CLOUD_DELETE_IN_PROGRESS_ERROR = "delete in progress (if it was interrupted, run 'barman-cloud-backup-delete' again)";

/** Is this a backup whose delete started and was cut? */
export function deleteInProgress(entry: CloudBackupEntry): boolean {
  return entry.info.status === FAILED && entry.info.error === CLOUD_DELETE_IN_PROGRESS_ERROR;
}

export interface DeleteEvents {
  info?: (m: string) => void;
  /** Called instead of deleting with --dry-run: the keys that would go. */
  dryRun?: (keys: string[]) => void;
}

export interface DeleteOptions {
  dryRun: boolean;
  batchSize: number | null;
  /** Deleting by policy: standalone-kept older backups only protect their WAL range. */
  byPolicy: boolean;
}

/** Delete `entry` and the WAL files it alone needed. */
export async function deleteCloudBackup(catalog: CloudCatalog, entry: CloudBackupEntry, o: DeleteOptions, ev: DeleteEvents = {}): Promise<void> {
  const dir = catalog.layout.backupDir(entry.id);
  const infoKey = catalog.layout.backupInfoKey(entry.id);
  const objects = (await listAll(catalog.storage, dir)).map((x) => x.key).filter((k) => k !== infoKey);
  // Decide the WAL cleanup while the backup is still in the catalog.
  const entries = await catalog.backups();
  const keeps = await catalog.keeps();
  const policy = decideWalCleanup(entries, entry, { manual: !o.byPolicy, concurrent: true, keeps });
  const walPaths = await catalog.walPaths();
  const wals = policy ? selectWalsToRemove(policy, [...walPaths.keys()].map((name) => ({ name }))).sort() : [];
  const walKeys = wals.map((n) => walPaths.get(n) as string).sort();
  if (o.dryRun) {
    ev.dryRun?.([...objects, infoKey]);
    if (walKeys.length) ev.dryRun?.(walKeys);
  } else {
    // Mark first: from here on no list shows it as a backup to restore, and a cut delete is resumed.
    if (!deleteInProgress(entry)) {
      await catalog.storage.put(infoKey, Buffer.from(serializeBackupInfo({ ...entry.info, status: FAILED, error: CLOUD_DELETE_IN_PROGRESS_ERROR })));
    }
    faultPoint('cloud-delete:marked');
    await deleteKeys(catalog.storage, objects, o.batchSize, () => faultPoint('cloud-delete:objects-batch'));
    // Its WAL files before its backup.info: a delete cut anywhere leaves the marked backup.info,
    // so the next delete (by ID or by policy) finishes the WAL clean-up too.
    if (walKeys.length) await deleteKeys(catalog.storage, walKeys, o.batchSize, () => faultPoint('cloud-delete:wals-batch'));
    await deleteKeys(catalog.storage, [infoKey], o.batchSize);
    ev.info?.(`Deleted backup ${entry.id}`);
    if (walKeys.length) ev.info?.(`Deleted ${walKeys.length} WAL files of backup ${entry.id}`);
  }
  for (const n of wals) catalog.forgetWal(n);
  catalog.forget(entry.id);
}

/**
 * The backups a policy makes obsolete, and those whose delete was cut (they were obsolete or
 * deleted by ID then: finished first), oldest first.
 */
export async function obsoleteBackups(catalog: CloudCatalog, policy: RetentionPolicy, minimumRedundancy: number, now = new Date()): Promise<CloudBackupEntry[]> {
  const entries = await catalog.backups();
  const keeps = await catalog.keeps();
  const cut = entries.filter(deleteInProgress);
  const obsolete = obsoleteToDelete({ entries, keeps, policy, minimumRedundancy, now }).filter((e) => !deleteInProgress(e));
  return [...cut, ...obsolete].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}
