/**
 * The WAL a restore needs (spec §7): history files, then segments from the backup's begin_wal
 * on the timelines recovery will follow, stopping where the target allows; copied out of the
 * archive decompressed, in parallel.
 */
import { promises as fsp } from 'node:fs';
import { isNotFound, readdirIfExists } from '../util/fsutil.js';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { serverPaths } from '../catalog/server-dirs.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { decompressBuffer, decompressFile, identifyCompression, type CustomCompressionConfig } from '../wal/compression.js';
import type { ServerDecryptor } from '../catalog/encryption.js';
import { gpgDecryptFile, gpgDecryptToBuffer, isEncryptedFile } from '../util/gpg.js';
import {
  generateSegments,
  isHistoryName,
  isWalName,
  lsnToWal,
  parseHistoryFile,
  parseWalName,
  timelineOf,
} from '../wal/names.js';
import { runPool } from '../util/pool.js';
import type { RecoveryTarget, TargetTli } from './options.js';
import { parseXlogDb, xlogDbPath } from '../catalog/xlogdb.js';

export interface ArchivedWal {
  name: string;
  /** Absolute path in the archive. */
  path: string;
  /** From xlog.db when known (`gpg`), else null. */
  encryption?: string | null;
}

export interface ArchiveListing {
  history: ArchivedWal[];
  /** Sorted by name. */
  segments: ArchivedWal[];
}

/** name → encryption from xlog.db (read-only, no lock: recovery never changes the catalog). */
async function encryptionByName(srv: ServerConfig): Promise<Map<string, { encryption: string | null }>> {
  const file = xlogDbPath(srv);
  let text: string;
  try {
    text = await fsp.readFile(file, 'latin1');
  } catch (err) {
    // Without an xlog.db nothing is known to be encrypted; one that cannot be read is an error.
    if (isNotFound(err)) return new Map();
    throw new BarmanError(`cannot read ${file}: ${errorMessage(err)}`);
  }
  try {
    const entries = parseXlogDb(text, file);
    return new Map(entries.map((e) => [e.name, { encryption: e.encryption ?? null }]));
  } catch {
    return new Map(); // a damaged line: as before, nothing is known to be encrypted
  }
}

/**
 * List the archive from `beginWal` on: every history file, and the segments (not `.partial`,
 * not `.backup`) whose name is >= beginWal on timelines <= maxTli.
 */
export async function listArchive(srv: ServerConfig, beginWal: string, maxTli: number): Promise<ArchiveListing> {
  const walsDir = serverPaths(srv).walsDir;
  const db = await encryptionByName(srv);
  const names = await fsp.readdir(walsDir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [] as string[];
    throw new BarmanError(`cannot read the WAL archive ${walsDir}: ${errorMessage(err)}`);
  });
  const describe = (name: string, file: string): ArchivedWal => ({ name, path: file, encryption: db.get(name)?.encryption ?? null });
  const history = names.filter(isHistoryName).filter((n) => timelineOf(n) <= maxTli).sort().map((n) => describe(n, path.join(walsDir, n)));
  const beginDir = beginWal.slice(0, 16);
  const dirs = names.filter((n) => /^[0-9A-F]{16}$/.test(n) && n >= beginDir && parseInt(n.slice(0, 8), 16) <= maxTli);
  const perDir = await Promise.all(
    dirs.map(async (d) => {
      // A directory that cannot be read is never an empty one: its WALs would go missing.
      const inDir = await readdirIfExists(path.join(walsDir, d));
      return inDir.filter((n) => isWalName(n) && n.toUpperCase() >= beginWal).map((n) => describe(n.toUpperCase(), path.join(walsDir, d, n)));
    }),
  );
  const segments = perDir.flat().sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { history, segments };
}

/**
 * The timeline recovery ends on. Not given: PostgreSQL's default, `latest` since 12 (for a
 * PITR) and `current` before; a restore without PITR replays the backup's timeline only.
 */
export function resolveTargetTli(tli: TargetTli | null, backupTli: number, version: number, pitr: boolean, historyTlis: readonly number[]): number {
  const latest = Math.max(backupTli, ...historyTlis);
  if (!pitr) return backupTli;
  const effective: TargetTli = tli ?? (version >= 120000 ? 'latest' : 'current');
  if (effective === 'current') return backupTli;
  if (effective === 'latest') return latest;
  return effective;
}

/**
 * Timelines recovery goes through to reach `targetTli`, each with the last position it is
 * followed to (null = to its end): from the target's history file. Null when the history
 * file is not available (then every timeline <= target is kept).
 */
export function timelineAncestry(targetTli: number, historyText: string | null): Map<number, bigint | null> | null {
  const out = new Map<number, bigint | null>([[targetTli, null]]);
  if (targetTli === 1) return out;
  if (historyText === null) return null;
  for (const e of parseHistoryFile(historyText)) out.set(e.parentTli, e.switchpoint);
  return out;
}

export interface WalSelectionInput {
  beginWal: string;
  endWal: string | null;
  segSize: number;
  version: number;
  target: RecoveryTarget;
  targetTli: number;
  /** From timelineAncestry (null = unknown). */
  ancestry: ReadonlyMap<number, bigint | null> | null;
  listing: ArchiveListing;
}

export interface WalSelection {
  history: ArchivedWal[];
  segments: ArchivedWal[];
  /** Segments between begin_wal and end_wal that are not in the archive. */
  missing: string[];
}

/** Pure selection of the files to copy (see module comment). */
export function selectRequiredWals(s: WalSelectionInput): WalSelection {
  const history = s.listing.history.filter((h) => timelineOf(h.name) <= s.targetTli);
  const segments: ArchivedWal[] = [];
  const end = s.endWal;
  const lsnStop = s.target.lsn !== null ? lsnToWal(s.target.lsn, 1, s.segSize).slice(8) : null;
  const ancestorStop = new Map<number, string>();
  for (const [tli, switchpoint] of s.ancestry ?? []) {
    if (switchpoint !== null) ancestorStop.set(tli, lsnToWal(switchpoint, tli, s.segSize).slice(8));
  }
  for (const w of s.listing.segments) {
    if (w.name < s.beginWal) continue;
    const tli = parseWalName(w.name).tli;
    if (tli > s.targetTli) continue;
    if (s.ancestry !== null && !s.ancestry.has(tli)) continue;
    const stop = ancestorStop.get(tli);
    if (stop !== undefined && w.name.slice(8) > stop) continue; // past the switch to the child timeline
    if (s.target.immediate && end !== null && w.name > end) break;
    if (lsnStop !== null && w.name.slice(8) > lsnStop && (end === null || w.name > end)) continue;
    // No cut for a target time: archival times are not a reliable bound (copies, resyncs), and
    // a missing segment would end recovery before the target.
    segments.push(w);
  }
  const missing: string[] = [];
  if (end !== null && parseWalName(end).tli === parseWalName(s.beginWal).tli) {
    const have = new Set(segments.map((w) => w.name));
    for (const name of generateSegments(s.beginWal, end, s.segSize, s.version)) {
      if (!have.has(name)) missing.push(name);
    }
  }
  return { history, segments, missing };
}

/** The compression settings of a server, for the decompressor. */
export function customCompression(srv: ServerConfig): CustomCompressionConfig {
  return {
    decompressionFilter: srv.custom_decompression_filter,
    magic: srv.custom_compression_magic,
    unidentifiedIsCustom: srv.compression === 'custom',
  };
}

export interface WalCopyOptions {
  workers: number;
  custom: CustomCompressionConfig;
  /** Encrypted WAL (encryption = gpg): gpg and the passphrase, asked for at the first such file. */
  decryptor?: ServerDecryptor;
  onFile?: (name: string) => void;
}

/** `decryptor`, or the error saying why an encrypted file cannot be read. */
function needDecryptor(w: ArchivedWal, decryptor: ServerDecryptor | undefined): ServerDecryptor {
  if (!decryptor) throw new BarmanError(`WAL file ${w.name} is encrypted (gpg): encryption_passphrase_command is needed to restore it`);
  return decryptor;
}

/**
 * The content of an archived text file (a timeline history file) with its encryption and
 * compression undone.
 */
export async function readArchivedText(file: string, custom: CustomCompressionConfig, decryptor?: ServerDecryptor): Promise<string> {
  let data: Buffer;
  if (await isEncryptedFile(file)) {
    const d = needDecryptor({ name: path.basename(file), path: file }, decryptor);
    data = await gpgDecryptToBuffer(d.gpg(), file, await d.passphrase());
  } else {
    data = await fsp.readFile(file);
  }
  const algo = identifyCompression(data, { ...custom, unidentifiedIsCustom: false });
  return (algo === null ? data : await decompressBuffer(data, algo, custom)).toString('utf8');
}

/**
 * Copy WAL files into `destDir` under their plain names, decrypted and decompressed (both
 * detected from the content, as the archive keeps plain names whatever was done to a file).
 * An encrypted file is decrypted into a temporary name in `destDir` first.
 */
export async function copyWals(files: readonly ArchivedWal[], destDir: string, opts: WalCopyOptions): Promise<number> {
  await fsp.mkdir(destDir, { recursive: true, mode: 0o700 });
  let bytes = 0;
  await runPool(files, opts.workers, async (w) => {
    const dst = path.join(destDir, w.name);
    const decrypted = path.join(destDir, `.${w.name}.decrypted.tmp`);
    try {
      let src = w.path;
      if (w.encryption === 'gpg' || (await isEncryptedFile(w.path))) {
        const d = needDecryptor(w, opts.decryptor);
        await gpgDecryptFile(d.gpg(), w.path, decrypted, await d.passphrase());
        src = decrypted;
      }
      const algo = await identifyCompression(src, opts.custom);
      if (algo === null && src === decrypted) {
        await fsp.rename(decrypted, dst);
      } else if (algo === null) {
        await fsp.copyFile(w.path, dst, fsp.constants.COPYFILE_EXCL);
        await fsp.chmod(dst, 0o600);
      } else {
        await decompressFile(src, dst, algo, opts.custom);
      }
      // Read the size first: `bytes += await …` would add to a stale total while other
      // workers finish in between.
      const { size } = await fsp.stat(dst);
      bytes += size;
    } catch (err) {
      throw new BarmanError(`cannot copy WAL file ${w.name} to ${destDir}: ${errorMessage(err)}`);
    } finally {
      await fsp.unlink(decrypted).catch(() => undefined);
    }
    opts.onFile?.(w.name);
  });
  return bytes;
}

/** `archive_status/<wal>.done` for WAL placed in pg_wal (so PostgreSQL never re-archives them). */
export async function writeDoneFiles(walDir: string, names: readonly string[]): Promise<void> {
  const status = path.join(walDir, 'archive_status');
  await fsp.mkdir(status, { recursive: true, mode: 0o700 });
  await runPool(names, 16, async (n) => {
    const fh = await fsp.open(path.join(status, `${n}.done`), 'w', 0o600);
    await fh.close();
  });
}
