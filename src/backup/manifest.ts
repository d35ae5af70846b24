/**
 * PostgreSQL backup manifests (`backup_manifest`, the format pg_basebackup writes and
 * pg_verifybackup checks) for backups that were not taken with one (rsync backups, postgres
 * backups taken with --no-manifest), and `verify-backup` through pg_verifybackup.
 *
 * The manifest is JSON with one file per line; its last line carries a SHA-256 of every byte
 * before that line (pg_verifybackup recomputes it over the text up to the second-last newline),
 * so the layout below is not cosmetic.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { COPY_DONE, type BackupInfo } from '../catalog/backup-info.js';
import { backupDataDir, type BackupEntry } from '../catalog/catalog.js';
import { findPgBinary, subprocessEnv } from '../postgres/binaries.js';
import { copyWals, customCompression, listArchive } from '../recovery/wal.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { lstatIfExists, statIfExists, writeFileAtomic } from '../util/fsutil.js';
import { run } from '../util/proc.js';
import { runPool } from '../util/pool.js';
import { alignedBuffer } from '../util/aligned.js';
import { generateSegments, parseLsn } from '../wal/names.js';
import { serverDecryptor } from '../catalog/encryption.js';

export const MANIFEST_NAME = 'backup_manifest';

export interface ManifestFile {
  /** Path relative to the data directory, `/`-separated (tablespaces under pg_tblspc/<oid>/). */
  path: string;
  size: number;
  mtime: Date;
  sha256: string;
}

export interface WalRange {
  timeline: number;
  startLsn: string;
  endLsn: string;
}

/** `2026-11-30 12:00:00 GMT`, the timestamp format of backup manifests. */
export function manifestTimestamp(d: Date): string {
  return `${d.toISOString().slice(0, 19).replace('T', ' ')} GMT`;
}

/** The manifest text for these files and WAL range, Manifest-Checksum included. */
export function renderManifest(files: readonly ManifestFile[], walRanges: readonly WalRange[]): string {
  const sorted = [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const fileLines = sorted.map(
    (f) =>
      `{ "Path": ${JSON.stringify(f.path)}, "Size": ${f.size}, "Last-Modified": "${manifestTimestamp(f.mtime)}", "Checksum-Algorithm": "SHA256", "Checksum": "${f.sha256}" }`,
  );
  const walLines = walRanges.map((r) => `{ "Timeline": ${r.timeline}, "Start-LSN": "${r.startLsn}", "End-LSN": "${r.endLsn}" }`);
  const body =
    '{ "PostgreSQL-Backup-Manifest-Version": 1,\n' +
    '"Files": [\n' +
    fileLines.join(',\n') +
    (fileLines.length ? '\n' : '') +
    '],\n' +
    '"WAL-Ranges": [\n' +
    walLines.join(',\n') +
    (walLines.length ? '\n' : '') +
    '],\n';
  const checksum = createHash('sha256').update(body, 'utf8').digest('hex');
  return `${body}"Manifest-Checksum": "${checksum}"}\n`;
}

/** Files pg_verifybackup never expects in a manifest (it skips them on disk too). */
const NOT_IN_MANIFEST = new Set([MANIFEST_NAME]);

/**
 * Every regular file under the data directory, following the pg_tblspc/<oid> links into the
 * tablespace directories (as pg_verifybackup does) and nothing else that is a link.
 * `ownCopy(oid)` is the backup's own copy of a tablespace when it has one: an rsync backup keeps
 * the server's link targets, which are the live tablespaces, not what was backed up.
 */
async function walkDataDir(dataDir: string, ownCopy: (oid: string) => Promise<string | null> = async () => null): Promise<{ rel: string; abs: string }[]> {
  const out: { rel: string; abs: string }[] = [];
  const walk = async (absDir: string, relDir: string, followLinks: boolean): Promise<void> => {
    const entries = await fsp.readdir(absDir, { withFileTypes: true });
    for (const e of entries) {
      const abs = path.join(absDir, e.name);
      const rel = relDir ? `${relDir}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(abs, rel, false);
      else if (e.isSymbolicLink() && followLinks) {
        const own = await ownCopy(e.name);
        if (own) {
          await walk(own, rel, false);
          continue;
        }
        const st = await statIfExists(abs);
        if (st?.isDirectory()) await walk(abs, rel, false);
      } else if (e.isFile() && !(relDir === '' && NOT_IN_MANIFEST.has(e.name))) out.push({ rel, abs });
    }
  };
  const walkTop = async (): Promise<void> => {
    const entries = await fsp.readdir(dataDir, { withFileTypes: true });
    for (const e of entries) {
      const abs = path.join(dataDir, e.name);
      if (e.name === 'pg_tblspc' && e.isDirectory()) await walk(abs, 'pg_tblspc', true);
      else if (e.isDirectory()) await walk(abs, e.name, false);
      else if (e.isFile() && !NOT_IN_MANIFEST.has(e.name)) out.push({ rel: e.name, abs });
    }
  };
  await walkTop();
  return out;
}

/** Read buffers of sha256File, kept for the next file (one per file being hashed at once). */
const spareBuffers: Buffer[] = [];

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  // Page-aligned: the kernel's copy into it costs a fraction of one into malloc's memory (util/aligned.ts).
  const buf = spareBuffers.pop() ?? alignedBuffer(1 << 20);
  try {
    const fh = await fsp.open(file, 'r');
    try {
      for (let pos = 0; ; ) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        if (bytesRead === 0) break;
        hash.update(buf.subarray(0, bytesRead));
        pos += bytesRead;
      }
    } finally {
      await fh.close();
    }
  } finally {
    spareBuffers.push(buf);
  }
  return hash.digest('hex');
}

/** The WAL range of a backup, from its backup.info. */
export function backupWalRange(id: string, info: BackupInfo): WalRange {
  const timeline = info.timeline;
  const start = info.begin_xlog;
  const end = info.end_xlog;
  if (timeline == null || !start || !end) throw new BarmanError(`backup ${id} has no complete WAL range (timeline, begin_xlog, end_xlog)`);
  return { timeline: Number(timeline), startLsn: String(start), endLsn: String(end) };
}

export interface GenerateManifestOptions {
  /** Hashing workers (files are hashed in parallel). */
  workers?: number;
  /** Replace an existing manifest instead of refusing. */
  overwrite?: boolean;
  /** Accept a backup still WAITING_FOR_WALS (autogenerate_manifest, right after the copy). */
  copyDone?: boolean;
  /** Checksums the copy already computed (manifest path → size and SHA-256): not read again. */
  known?: ReadonlyMap<string, { size: number; sha256: string }>;
}

/**
 * Write `backup_manifest` into the data directory of a DONE plain backup (or, with `copyDone`,
 * of one WAITING_FOR_WALS).
 * Returns the manifest path. Refuses when one exists already: the one pg_basebackup wrote is
 * the better witness of what the server sent.
 */
export async function generateManifest(srv: ServerConfig, { id, info }: BackupEntry, opts: GenerateManifestOptions = {}): Promise<{ file: string; files: number; bytes: number }> {
  // The manifest needs the files and the WAL range only: a backup waiting for its WALs has both
  // (the backup itself writes one then); `generate-manifest` keeps asking for DONE.
  const accepted = opts.copyDone ? COPY_DONE.has(info.status) : info.status === 'DONE';
  if (!accepted) {
    throw new BarmanError(`backup ${id} is ${info.status}: a manifest is generated for ${opts.copyDone ? 'DONE or WAITING_FOR_WALS' : 'DONE'} backups only`);
  }
  if (info.compression) throw new BarmanError(`backup ${id} is compressed (${info.compression}): a manifest can only be generated for a plain backup`);
  const dataDir = backupDataDir(srv, id);
  const target = path.join(dataDir, MANIFEST_NAME);
  if (!opts.overwrite && (await lstatIfExists(target))) {
    throw new BarmanError(`backup ${id} of server ${srv.name} already has a ${MANIFEST_NAME}`);
  }
  const range = backupWalRange(id, info);
  const found = await backupFiles(srv, { id, info });
  const files: ManifestFile[] = [];
  await runPool(found, opts.workers ?? Math.max(1, Math.min(4, os.availableParallelism())), async (f) => {
    const st = await fsp.stat(f.abs);
    const known = opts.known?.get(f.rel);
    files.push({ path: f.rel, size: st.size, mtime: st.mtime, sha256: known && known.size === st.size ? known.sha256 : await sha256File(f.abs) });
  });
  await writeFileAtomic(target, renderManifest(files, [range]));
  return { file: target, files: files.length, bytes: files.reduce((a, f) => a + f.size, 0) };
}

/**
 * The files of a plain backup as a manifest names them (relative to the data directory,
 * tablespaces under pg_tblspc/<oid>/, read from the backup's own copies), backup_manifest
 * itself left out.
 */
export async function backupFiles(srv: ServerConfig, { id, info }: Pick<BackupEntry, 'id' | 'info'>): Promise<{ rel: string; abs: string }[]> {
  const dataDir = backupDataDir(srv, id);
  const tablespaceOids = new Set((info.tablespaces ?? []).map((t) => String(t.oid)));
  const ownCopy = async (oid: string): Promise<string | null> => {
    if (!tablespaceOids.has(oid)) return null;
    const dir = backupDataDir(srv, id, Number(oid));
    return (await statIfExists(dir))?.isDirectory() ? dir : null;
  };
  return walkDataDir(dataDir, ownCopy).catch((err: unknown) => {
    throw new BarmanError(`cannot read backup ${id} data directory ${dataDir}: ${errorMessage(err)}`);
  });
}

export interface VerifyResult {
  ok: boolean;
  /** pg_verifybackup's own output (stdout + stderr), trimmed. */
  output: string;
  /** Whether WAL was parsed (the backup's WALs were found in the archive). */
  walChecked: boolean;
}

/**
 * Run pg_verifybackup on a plain backup: files against backup_manifest, and, when the WAL
 * files of the backup are all in the archive, those too (decompressed into a scratch dir,
 * because pg_verifybackup reads plain segments only).
 */
export async function verifyBackup(srv: ServerConfig, { id, info }: BackupEntry): Promise<VerifyResult> {
  if (info.compression) throw new BarmanError(`backup ${id} is compressed (${info.compression}): pg_verifybackup checks plain backups only`);
  const dataDir = backupDataDir(srv, id);
  if (!(await statIfExists(path.join(dataDir, MANIFEST_NAME)))) {
    throw new BarmanError(`backup ${id} of server ${srv.name} has no ${MANIFEST_NAME}: run 'barman generate-manifest ${srv.name} ${id}' first`);
  }
  const bin = findPgBinary('pg_verifybackup', srv.path_prefix);
  const scratch = await fsp.mkdtemp(path.join(os.tmpdir(), `barman-verify-${srv.name}-`));
  try {
    const walDir = await stageBackupWals(srv, id, info, scratch);
    const args = [...(walDir ? ['--wal-directory', walDir] : ['--no-parse-wal']), dataDir];
    const res = await run(bin, args, { env: subprocessEnv(srv.path_prefix) });
    const output = `${res.stdout}${res.stderr}`.trim();
    return { ok: res.code === 0, output, walChecked: walDir !== null };
  } finally {
    await fsp.rm(scratch, { recursive: true, force: true });
  }
}

/**
 * pg_verifybackup on the files of a plain data directory against its backup_manifest, WAL left
 * aside (`--no-parse-wal`): every file listed is there with its size and checksum, and no other.
 */
export async function verifyDataFiles(srv: ServerConfig, dataDir: string): Promise<VerifyResult> {
  const bin = findPgBinary('pg_verifybackup', srv.path_prefix);
  const res = await run(bin, ['--no-parse-wal', dataDir], { env: subprocessEnv(srv.path_prefix) });
  return { ok: res.code === 0, output: `${res.stdout}${res.stderr}`.trim(), walChecked: false };
}

/** Copy the backup's WAL segments (begin..end) into `scratch/pg_wal`; null when one is missing. */
async function stageBackupWals(srv: ServerConfig, id: string, info: BackupInfo, scratch: string): Promise<string | null> {
  const range = backupWalRange(id, info);
  if (!info.begin_wal || !info.end_wal) return null;
  const needed = [...generateSegments(info.begin_wal, info.end_wal, info.xlog_segment_size, info.version)];
  const listing = await listArchive(srv, info.begin_wal, range.timeline);
  const byName = new Map(listing.segments.map((w) => [w.name, w]));
  const files = needed.map((n) => byName.get(n));
  if (files.some((f) => f === undefined)) return null;
  parseLsn(range.endLsn); // validates the catalog value before pg_verifybackup sees it
  const walDir = path.join(scratch, 'pg_wal');
  await copyWals(files as NonNullable<(typeof files)[number]>[], walDir, { workers: 2, custom: customCompression(srv), decryptor: serverDecryptor(srv, 'A WAL file of the backup') });
  return walDir;
}
