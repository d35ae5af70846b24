/**
 * barman-cloud-wal-restore's work: find a WAL file in `<server>/wals/<hash dir>/` under its
 * exact name or with a compression extension (a `.partial` one only when nothing else is
 * there and it is allowed; `.backup` labels are skipped), check it, decompress it and write it
 * where PostgreSQL asked.
 *
 * Checks before anything is written: the object's length as announced, the SHA-256 recorded
 * in its metadata by barman-cloud-wal-archive (barman-ts), the compression's own checksums,
 * and a segment's size (a power of two of at least 1 MiB). A file that fails never reaches
 * WAL_DEST: it is written under a temporary name and renamed only when whole and verified.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ObjectInfo, ObjectStorage } from '../storage/types.js';
import { readAll } from '../storage/types.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { decompressBuffer, type CompressionName } from '../wal/compression.js';
import { isBackupFileName, nextSegment, walNameKind } from '../wal/names.js';
import type { CloudLayout } from './layout.js';
import { parseWalObjectName } from './layout.js';
import { SHA256_METADATA } from './wal-archive.js';

export interface FoundWal {
  key: string;
  compression: CompressionName | null;
}

/** Pick the object for `name` among the keys of its directory (see the module comment). */
export function pickWal(dir: string, name: string, keys: readonly string[], allowPartial: boolean, warn: (m: string) => void = () => undefined): FoundWal | null {
  let partial: FoundWal | null = null;
  for (const key of keys) {
    if (!key.startsWith(dir + name)) continue;
    const parsed = parseWalObjectName(key.slice(dir.length));
    if (!parsed) {
      warn(`Unknown WAL file: ${key}`);
      continue;
    }
    if (parsed.name === name) return { key, compression: parsed.compression };
    if (isBackupFileName(parsed.name)) continue;
    if (parsed.name === `${name}.partial` && allowPartial && partial === null) partial = { key, compression: parsed.compression };
  }
  return partial;
}

/** Object keys right under a WAL directory. */
export async function listWalDir(storage: ObjectStorage, dir: string): Promise<ObjectInfo[]> {
  return (await storage.list(dir, '/')).objects;
}

/** A WAL segment's size: a power of two between 1 MiB and 1 GiB (wal_segment_size). */
function validSegmentSize(n: number): boolean {
  return n >= 1 << 20 && n <= 1 << 30 && (n & (n - 1)) === 0;
}

/** Download, verify and decompress one WAL object into memory. */
export async function fetchWal(storage: ObjectStorage, found: FoundWal, name: string): Promise<Buffer> {
  const res = await storage.get(found.key);
  if (!res) throw new BarmanError(`WAL object ${found.key} disappeared`, 1);
  let data: Buffer;
  try {
    data = await readAll(res);
  } catch (err) {
    throw new BarmanError(`download of ${found.key} interrupted: ${errorMessage(err)}`, 4);
  }
  if (data.length !== res.size) throw new BarmanError(`download of ${found.key} incomplete: ${data.length} of ${res.size} bytes`, 4);
  const recorded = res.metadata[SHA256_METADATA];
  if (recorded && createHash('sha256').update(data).digest('hex') !== recorded) {
    throw new BarmanError(`WAL object ${found.key} is corrupted: its SHA-256 differs from the one recorded when it was archived`, 4);
  }
  let plain: Buffer;
  try {
    plain = found.compression ? await decompressBuffer(data, found.compression) : data;
  } catch (err) {
    throw new BarmanError(`WAL object ${found.key} is corrupted: ${errorMessage(err)}`, 4);
  }
  if (walNameKind(name) === 'segment' && !found.key.includes('.partial') && !validSegmentSize(plain.length)) {
    throw new BarmanError(`WAL object ${found.key} is corrupted or truncated: ${plain.length} bytes is not a WAL segment size`, 4);
  }
  return plain;
}

/** Write `data` to `dest` through a temporary name in its directory (fsync when `durable`). */
export async function writeWalFile(dest: string, data: Buffer, durable: boolean): Promise<void> {
  const tmp = path.join(path.dirname(dest), `.${path.basename(dest)}.${process.pid}.tmp`);
  try {
    const fh = await fsp.open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(data);
      if (durable) await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, dest);
  } catch (err) {
    await fsp.unlink(tmp).catch(() => undefined);
    throw new BarmanError(`cannot write ${dest}: ${errorMessage(err)}`, 4);
  }
}

export interface RestoreOutcome {
  found: FoundWal | null;
  /** Keys of the directory listing (for prefetch planning). */
  listing: string[];
  /** Every segment of the plan's `ahead` reached the spool. */
  aheadDone: boolean;
}

/**
 * Segments to fetch into a spool along with the one asked for, decided once the directory is
 * listed (and before the download starts, so that a background prefetch can be started then).
 */
export type AheadPlan = (listing: string[], found: FoundWal) => Promise<{ spool: string; ahead: string[] } | null>;

/**
 * Restore `name` into `dest`; found null means "not in the archive" (exit 1). With `plan`, the
 * segments it names are downloaded at the same time into its spool (same checks, fsynced,
 * renamed in when whole); their failures are not errors (aheadDone false), the next call
 * downloads for itself.
 */
export async function restoreWal(
  storage: ObjectStorage,
  layout: CloudLayout,
  name: string,
  dest: string,
  allowPartial: boolean,
  warn: (m: string) => void,
  plan?: AheadPlan,
): Promise<RestoreOutcome> {
  const dir = layout.walDir(name);
  const listing = (await listWalDir(storage, dir)).map((o) => o.key);
  const found = pickWal(dir, name, listing, allowPartial, warn);
  if (!found) return { found, listing, aheadDone: true };
  const extra = plan ? await plan(listing, found) : null;
  const ahead = (extra?.ahead ?? []).map(async (n) => {
    const f = pickWal(layout.walDir(n), n, listing, false);
    if (!f || !extra) return false;
    try {
      await writeWalFile(path.join(extra.spool, n), await fetchWal(storage, f, n), true);
      return true;
    } catch {
      return false;
    }
  });
  const own = (async () => writeWalFile(dest, await fetchWal(storage, found, name), false))();
  const [settled, ...aheadOk] = await Promise.allSettled([own, ...ahead]);
  if (settled?.status === 'rejected') throw settled.reason;
  return { found, listing, aheadDone: aheadOk.every((r) => r.status === 'fulfilled' && r.value) };
}

/** The segments after `name` (same timeline) present in its directory listing, in order, at most `n`. */
export function nextInListing(layout: CloudLayout, name: string, listing: readonly string[], n: number): string[] {
  if (walNameKind(name) !== 'segment') return [];
  const dir = layout.walDir(name);
  const out: string[] = [];
  let cur = name;
  for (let i = 0; i < n; i++) {
    cur = nextSegment(cur);
    if (layout.walDir(cur) !== dir) break;
    if (!pickWal(dir, cur, listing, false)) break;
    out.push(cur);
  }
  return out;
}
