/**
 * The backup catalog of one server in a bucket, as Barman's CloudBackupCatalog reads it:
 * backups are the "directories" under `base/` with a readable backup.info (a directory
 * without one is not a backup: an upload in progress or cut), WAL files are every WAL-like
 * name under `wals/` (with one compression extension), keep requests are
 * `base/<ID>/annotations/keep`.
 */
import { parseBackupInfo, type BackupInfo } from '../catalog/backup-info.js';
import { resolveBackupId, type BackupEntry } from '../catalog/catalog.js';
import type { KeepTarget } from '../catalog/delete.js';
import type { ObjectStorage } from '../storage/types.js';
import { getBuffer } from '../storage/types.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { mapPool } from '../util/pool.js';
import { parseTarName, parseWalObjectName, type CloudLayout, type TarCompression } from './layout.js';

export interface CloudBackupEntry extends BackupEntry {
  id: string;
  info: BackupInfo;
}

export interface BackupFile {
  /** null for PGDATA (`data`), the tablespace oid otherwise. */
  oid: number | null;
  /** Object keys: the main tar, then its continuation parts, in order. */
  keys: string[];
  compression: TarCompression | null;
}

export class CloudCatalog {
  private backupsCache: CloudBackupEntry[] | null = null;
  private walCache: Map<string, string> | null = null;
  private keepCache: Map<string, true> | null = null;
  readonly unreadable: string[] = [];

  constructor(
    readonly storage: ObjectStorage,
    readonly layout: CloudLayout,
    private readonly warn: (m: string) => void = () => undefined,
  ) {}

  /** backup.info of one backup; null when there is none. */
  async readBackupInfo(id: string): Promise<BackupInfo | null> {
    const buf = await getBuffer(this.storage, this.layout.backupInfoKey(id));
    return buf ? parseBackupInfo(buf.toString('utf8'), `${id}/backup.info`) : null;
  }

  /** Every backup with a readable backup.info, oldest first (cached). */
  async backups(): Promise<CloudBackupEntry[]> {
    if (this.backupsCache) return this.backupsCache;
    const listing = await this.storage.list(this.layout.basePrefix, '/');
    const ids = listing.prefixes.sort().map((dir) => dir.slice(this.layout.basePrefix.length, -1));
    // A few backup.info reads at a time: one round trip each.
    const infos = await mapPool(ids, 8, async (id): Promise<BackupInfo | null | Error> => {
      try {
        return await this.readBackupInfo(id);
      } catch (err) {
        if ((err as { kind?: string }).kind === 'network') throw err;
        return err instanceof Error ? err : new Error(String(err));
      }
    });
    const out: CloudBackupEntry[] = [];
    ids.forEach((id, i) => {
      const info = infos[i];
      if (info instanceof Error) {
        this.warn(`Unable to open backup.info file for ${id}: ${errorMessage(info)}`);
        this.unreadable.push(id);
      } else if (info) {
        out.push({ id, info, infoFile: this.layout.backupInfoKey(id) });
      }
    });
    this.backupsCache = out;
    return out;
  }

  forget(id: string): void {
    if (this.backupsCache) this.backupsCache = this.backupsCache.filter((e) => e.id !== id);
  }

  /** WAL name → object key, for every WAL-like object under wals/ (cached). */
  async walPaths(): Promise<Map<string, string>> {
    if (this.walCache) return this.walCache;
    const out = new Map<string, string>();
    for (const o of (await this.storage.list(this.layout.walsPrefix)).objects) {
      const base = o.key.slice(o.key.lastIndexOf('/') + 1);
      const parsed = parseWalObjectName(base);
      if (parsed) out.set(parsed.name, o.key);
    }
    this.walCache = out;
    return out;
  }

  forgetWal(name: string): void {
    this.walCache?.delete(name);
  }

  /** Resolve a BACKUP_ID argument: an ID, a shortcut or a backup name. */
  async resolve(arg: string): Promise<CloudBackupEntry> {
    return resolveBackupId({ name: this.layout.server }, await this.backups(), arg) as CloudBackupEntry;
  }

  private async keepIndex(): Promise<Map<string, true>> {
    if (this.keepCache) return this.keepCache;
    const out = new Map<string, true>();
    for (const o of (await this.storage.list(this.layout.basePrefix)).objects) {
      const parts = o.key.slice(this.layout.basePrefix.length).split('/');
      if (parts.length === 3 && parts[1] === 'annotations' && parts[2] === 'keep') out.set(parts[0] as string, true);
    }
    this.keepCache = out;
    return out;
  }

  /** The keep target of a backup (`useCache`: one listing for all backups, as Barman). */
  async keepTarget(id: string, useCache = true): Promise<KeepTarget | null> {
    if (useCache && !(await this.keepIndex()).has(id)) return null;
    const buf = await getBuffer(this.storage, this.layout.keepKey(id));
    if (buf === null) return null;
    const t = buf.toString('utf8').split('\n')[0]?.trim();
    return t === 'full' ? 'full' : 'standalone';
  }

  async keeps(): Promise<Map<string, KeepTarget>> {
    const out = new Map<string, KeepTarget>();
    for (const id of (await this.keepIndex()).keys()) {
      const t = await this.keepTarget(id);
      if (t) out.set(id, t);
    }
    return out;
  }

  async setKeep(id: string, target: KeepTarget): Promise<void> {
    await this.storage.put(this.layout.keepKey(id), Buffer.from(target, 'utf8'));
    this.keepCache?.set(id, true);
  }

  async releaseKeep(id: string): Promise<void> {
    await this.storage.deleteBatch([this.layout.keepKey(id)]);
    this.keepCache?.delete(id);
  }

  /**
   * The tar objects of a backup: `data` and one per tablespace of backup.info, each with its
   * continuation parts. Missing ones throw unless `allowMissing`.
   */
  async backupFiles(entry: CloudBackupEntry, allowMissing = false): Promise<BackupFile[]> {
    const dir = this.layout.backupDir(entry.id);
    const wanted: Array<{ base: string; oid: number | null }> = [{ base: 'data', oid: null }, ...(entry.info.tablespaces ?? []).map((t) => ({ base: String(t.oid), oid: t.oid }))];
    const found = new Map<string, { parts: Map<number, string>; compression: TarCompression | null }>();
    for (const o of (await this.storage.list(dir, '/')).objects) {
      const parsed = parseTarName(o.key.slice(dir.length));
      if (!parsed) continue;
      const f = found.get(parsed.base) ?? { parts: new Map<number, string>(), compression: parsed.compression };
      f.parts.set(parsed.part, o.key);
      found.set(parsed.base, f);
    }
    const out: BackupFile[] = [];
    for (const w of wanted) {
      const f = found.get(w.base);
      if (!f || !f.parts.has(0)) {
        if (allowMissing) continue;
        throw new BarmanError(`Missing file ${dir}${w.base}.* for server ${this.layout.server}`, 1);
      }
      const keys = [...f.parts.entries()].sort((a, b) => a[0] - b[0]).map(([, k]) => k);
      out.push({ oid: w.oid, keys, compression: f.compression });
    }
    return out;
  }
}
