/**
 * barman-cloud-backup-delete's work (spec §11.2, §8): delete one backup, or every backup a
 * retention policy makes OBSOLETE (oldest first, never a kept one, never below
 * --minimum-redundancy), then the WAL files no remaining backup needs: every WAL name before
 * the oldest remaining backup's begin_wal on its timeline (history files and WAL of other
 * backups' timelines stay; with a policy, the ranges of older standalone-kept backups stay).
 * The backup's objects go first, backup.info last (so a cut delete can be run again), all in
 * batched deletes.
 */
import { decideWalCleanup, selectWalsToRemove } from '../catalog/delete.js';
import type { RetentionPolicy } from '../config/values.js';
import { obsoleteToDelete } from '../retention/policy.js';
import { deleteKeys, listAll } from '../storage/types.js';
import type { CloudBackupEntry, CloudCatalog } from './catalog.js';

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
    await deleteKeys(catalog.storage, objects, o.batchSize);
    // backup.info last: until it goes, a cut delete leaves a listed backup to delete again.
    await deleteKeys(catalog.storage, [infoKey], o.batchSize);
    ev.info?.(`Deleted backup ${entry.id}`);
    if (walKeys.length) {
      await deleteKeys(catalog.storage, walKeys, o.batchSize);
      ev.info?.(`Deleted ${walKeys.length} WAL files of backup ${entry.id}`);
    }
  }
  for (const n of wals) catalog.forgetWal(n);
  catalog.forget(entry.id);
}

/** The backups a policy makes obsolete, oldest first. */
export async function obsoleteBackups(catalog: CloudCatalog, policy: RetentionPolicy, minimumRedundancy: number, now = new Date()): Promise<CloudBackupEntry[]> {
  const entries = await catalog.backups();
  const keeps = await catalog.keeps();
  return obsoleteToDelete({ entries, keeps, policy, minimumRedundancy, now });
}
