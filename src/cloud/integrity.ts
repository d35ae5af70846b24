/**
 * The checksums barman-ts records beside a backup's objects: `base/<ID>/barman-ts.sha256`,
 * lines `<sha256> <size> <object name>` (name relative to the backup directory), written before
 * backup.info. barman-cloud-restore streams each archive through a hash and refuses the
 * restore when an object differs from what was uploaded (truncated, altered). Barman's tools
 * ignore the file; backups without it (Barman's) are restored on the compression's and tar's
 * own checks only.
 */
import type { ObjectStorage } from '../storage/types.js';
import { getBuffer } from '../storage/types.js';

export interface ObjectSum {
  sha256: string;
  size: number;
}

export async function writeSums(storage: ObjectStorage, key: string, objects: ReadonlyArray<{ key: string; size: number; sha256: string }>): Promise<void> {
  const dir = key.slice(0, key.lastIndexOf('/') + 1);
  const text = objects.map((o) => `${o.sha256} ${o.size} ${o.key.slice(dir.length)}\n`).join('');
  await storage.put(key, Buffer.from(text));
}

/** Sums by object name (relative to the backup directory); null when the backup has none. */
export async function readSums(storage: ObjectStorage, key: string): Promise<Map<string, ObjectSum> | null> {
  const buf = await getBuffer(storage, key);
  if (!buf) return null;
  const out = new Map<string, ObjectSum>();
  for (const line of buf.toString('utf8').split('\n')) {
    const m = /^([0-9a-f]{64}) (\d+) (.+)$/.exec(line);
    if (m) out.set(m[3] as string, { sha256: m[1] as string, size: Number(m[2]) });
  }
  return out;
}
