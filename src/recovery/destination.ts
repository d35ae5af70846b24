/**
 * Where a restore writes: the one restore pipeline (recover.ts) validates, selects backup and
 * WAL and computes every settings text, and hands the writing to a destination. A
 * LocalDestination writes into directories of this host; a RemoteDestination
 * (remote-destination.ts) checks and writes on the recovery host through the
 * `--remote-ssh-command`.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Tablespace } from '../catalog/backup-info.js';
import { FILE_MODE, lstatIfExists, pathExists, readdirIfExists, readTextIfExists, statIfExists, writeFileAtomic } from '../util/fsutil.js';
import { run } from '../util/proc.js';
import { BarmanError } from '../util/errors.js';
import { runPool } from '../util/pool.js';
import type { CustomCompressionConfig } from '../wal/compression.js';
import type { ServerDecryptor } from '../catalog/encryption.js';
import {
  copyTree,
  EarlyWriteback,
  excluder,
  extractTar,
  listTarArchives,
  scanTree,
  syncFilesystems,
  type TarArchive,
  type TarDecryption,
  type TreeScan,
} from './copy.js';
import { checkDestination, checkEmptyOrAbsent } from './options.js';
import { copyWals, writeDoneFiles, type ArchivedWal } from './wal.js';
import { localDelta } from '../agent/local-delta.js';
import type { PushTree } from '../agent/restore-push.js';
import type { StoreReader } from '../agent/store.js';

/** Files and directories of the backup that are never restored (anchored at the data dir). */
export const DATA_EXCLUDES: readonly string[] = [
  'pg_log/*',
  'log/*',
  'pg_xlog/*',
  'pg_wal/*',
  'postmaster.pid',
  'postmaster.opts',
  'recovery.conf',
  'recovery.signal',
  'standby.signal',
  'tablespace_map',
  // tablespace links are recreated to the (possibly relocated) locations
  'pg_tblspc/*',
];

/**
 * The WAL directory entries themselves, never taken from the backup: in an rsync backup
 * `pg_wal` may be a symlink (to wherever the source kept its WAL), and a copied link would make
 * the restore write WAL into that place on the destination host (possibly another cluster's
 * live pg_wal). The destination always gets a real directory instead.
 */
export const WAL_DIRS: readonly string[] = ['pg_wal', 'pg_xlog'];

/**
 * Delta restore into an existing data directory: what the excludes protect there but a
 * restored server must not find, cleared explicitly (rsync's --delete-excluded would also
 * remove the server logs, which an administrator wants to keep). Signal files, recovery.conf
 * and tablespace_map change how the server starts; postmaster.* belong to the old server.
 * The contents of pg_wal/pg_xlog and the pg_tblspc links go too (see clearForDelta).
 */
export const DELTA_CLEARED_FILES: readonly string[] = ['postmaster.pid', 'postmaster.opts', 'recovery.conf', 'recovery.signal', 'standby.signal', 'tablespace_map'];

/**
 * Local delta restore: remove from an existing data directory what DELTA_CLEARED_FILES names,
 * the WAL of another history (a symlinked WAL directory loses the link only: its target is not
 * ours to empty) and the pg_tblspc links (recreated for the backup's tablespaces). Server logs
 * (log/, pg_log/) stay.
 */
export async function clearForDelta(dest: string): Promise<void> {
  for (const f of DELTA_CLEARED_FILES) await fsp.rm(path.join(dest, f), { force: true, recursive: true });
  for (const w of WAL_DIRS) {
    const dir = path.join(dest, w);
    const st = await lstatIfExists(dir);
    if (st === null) continue;
    if (!st.isDirectory()) {
      await fsp.rm(dir, { force: true });
      continue;
    }
    for (const name of await fsp.readdir(dir)) await fsp.rm(path.join(dir, name), { force: true, recursive: true });
  }
  const tblspc = path.join(dest, 'pg_tblspc');
  for (const name of await readdirIfExists(tblspc)) {
    const st = await lstatIfExists(path.join(tblspc, name));
    if (st?.isSymbolicLink()) await fsp.rm(path.join(tblspc, name), { force: true });
  }
}

/** A scan without the top-level WAL directory entries (and what is under them). */
export function withoutWalDirs(scan: TreeScan): TreeScan {
  const top = (rel: string) => rel.split('/')[0] ?? rel;
  return { ...scan, entries: scan.entries.filter((e) => !WAL_DIRS.includes(top(e.rel))) };
}

/** `<dest>/<walName>/archive_status` as real directories (a symlink at `<walName>` is replaced). */
export async function ensureRealWalDir(dest: string, walName: string): Promise<void> {
  const dir = path.join(dest, walName);
  const st = await lstatIfExists(dir);
  if (st !== null && !st.isDirectory()) await fsp.rm(dir, { force: true });
  await fsp.mkdir(path.join(dir, 'archive_status'), { recursive: true, mode: 0o700 });
}

/** What is restored where (paths on the destination host). */
export interface RestoreLayout {
  dest: string;
  /** Tablespaces with their (possibly relocated) locations. */
  tablespaces: readonly Tablespace[];
  /** `pg_wal` (>= 10) or `pg_xlog`. */
  walName: string;
  backupId: string;
  /** --staging-wal-directory (PITR without get-wal), if any. */
  stagingWal: string | null;
}

/** The base backup on this host. */
export interface BackupSource {
  /** base/<id>/data */
  dataDir: string;
  tarFormat: boolean;
  /** Plain backups: base/<id>/<oid> per tablespace OID. */
  tablespaceDir: (oid: number) => string;
}

/** transfer_method = agent: barman-ts agents write the files (src/agent/restore-push.ts). */
export interface AgentCopyOptions {
  codec: string;
  level: number;
  /** The backup's agent metadata (page maps), if it has any. */
  store: StoreReader | null;
}

export interface CopyOptions {
  delta: boolean;
  /** Set: a remote restore, or a local delta restore, goes through barman-ts agents. */
  agent?: AgentCopyOptions;
  workers: number;
  env: NodeJS.ProcessEnv;
  /** Tar backups: gzip decompressor program (pigz) when available. */
  gzipProgram?: string;
  /** Encrypted tar backups (`.gpg`): gpg and the passphrase. */
  decrypt?: TarDecryption;
  onProgress?: (done: number, total: number) => void;
}

export interface BaseCopyStats {
  method: 'copy' | 'tar' | 'rsync' | 'agent';
  files: number;
  bytes: number;
}

export interface WalPlacement {
  /** Directory on the destination host. */
  walDest: string;
  /** Also create `<pg_wal>/archive_status/<name>.done` (WAL placed in pg_wal). */
  doneFiles: boolean;
  workers: number;
  custom: CustomCompressionConfig;
  /** Encrypted WAL: how to decrypt it. */
  decryptor?: ServerDecryptor;
  onFile?: () => void;
}

/** The decryption an encrypted tar archive needs (an error when the restore has none). */
export function tarDecryption(archive: TarArchive, opts: Pick<CopyOptions, 'decrypt'>): TarDecryption | undefined {
  if (!archive.encrypted) return undefined;
  if (!opts.decrypt) throw new BarmanError(`${archive.file} is encrypted (gpg) but the backup is not recorded as encrypted: cannot restore it`);
  return opts.decrypt;
}

/** A local file's text and permission bits, or null when it is not there (other errors throw). */
export async function readTextWithMode(file: string): Promise<{ text: string; mode: number } | null> {
  const st = await statIfExists(file);
  const text = st === null ? null : await readTextIfExists(file);
  return st === null || text === null ? null : { text, mode: st.mode & 0o7777 };
}

/**
 * Copy (decompressing) archived WAL into the local directory `dir` as `p` asks, with the
 * archive_status `.done` files when they go into pg_wal. Returns the bytes written.
 */
export async function copyWalsTo(files: readonly ArchivedWal[], dir: string, p: WalPlacement): Promise<number> {
  const bytes = await copyWals(files, dir, { workers: p.workers, custom: p.custom, decryptor: p.decryptor, onFile: () => p.onFile?.() });
  if (p.doneFiles) await writeDoneFiles(dir, files.map((f) => f.name));
  return bytes;
}

/** A file written by the pipeline: path relative to the destination directory. */
export interface RestoredFile {
  rel: string;
  text: string;
  mode: number;
  /** A byte-exact copy of this restored file (rel) instead of `text`: `.origin` copies. */
  copyOf?: string;
}

export interface RestoreDestination {
  readonly where: 'local' | 'remote';
  /** Validation: running server, emptiness, permissions. Writes nothing. */
  check(delta: boolean): Promise<void>;
  /** Copy the base backup and tablespaces, link pg_tblspc (or leave it to finish()). */
  copyBase(source: BackupSource, opts: CopyOptions): Promise<BaseCopyStats>;
  /** A file of the restored data directory as restored (before any change), null if absent. */
  readRestored(rel: string): Promise<{ text: string; mode: number } | null>;
  /** Put WAL files (decompressed) where recovery reads them; returns their bytes. */
  placeWals(files: readonly ArchivedWal[], p: WalPlacement): Promise<number>;
  /**
   * Write `files` (settings, .origin copies, .barman-recover.info), make everything durable,
   * and only then the signal file (recovery.signal / standby.signal), if any.
   */
  finish(files: readonly RestoredFile[], signal: string | null): Promise<'syncfs' | 'fsync' | 'remote'>;
  /** Remove temporary files (always called). */
  cleanup(): Promise<void>;
}

async function writeSmallFile(file: string, text: string, mode = FILE_MODE): Promise<void> {
  const fh = await fsp.open(file, 'w', mode);
  try {
    await fh.writeFile(text);
  } finally {
    await fh.close();
  }
  // open() only applies the mode to a new file
  await fsp.chmod(file, mode);
}

/** rsync arguments of a local delta restore: excluded paths are protected, not deleted. */
export function deltaRsyncArgs(src: string, dst: string, excludes: readonly string[]): string[] {
  return ['-rlpt', '--delete', '--checksum', ...excludes.map((e) => `--exclude=/${e.replace(/^\/+/, '')}`), `${src}/`, `${dst}/`];
}

/** Delta restore: rsync with checksums into an existing directory. */
async function rsyncInto(src: string, dst: string, excludes: readonly string[], env: NodeJS.ProcessEnv): Promise<void> {
  await fsp.mkdir(dst, { recursive: true, mode: 0o700 });
  const args = deltaRsyncArgs(src, dst, excludes);
  const res = await run('rsync', args, { env });
  if (res.code !== 0) {
    const detail = (res.stderr.trim() || res.stdout.trim()).split('\n').slice(-1)[0] ?? '';
    throw new BarmanError(`rsync of ${src} into ${dst} failed with exit code ${res.code}${detail ? `: ${detail}` : ''}`);
  }
}

/** Restore into directories of this host. */
export class LocalDestination implements RestoreDestination {
  readonly where = 'local' as const;

  constructor(
    private readonly layout: RestoreLayout,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  async check(delta: boolean): Promise<void> {
    await checkDestination(this.layout.dest, this.layout.tablespaces, { delta });
    if (this.layout.stagingWal) await checkEmptyOrAbsent(this.layout.stagingWal, 'staging WAL directory');
  }

  async copyBase(source: BackupSource, opts: CopyOptions): Promise<BaseCopyStats> {
    const { dest, tablespaces, walName } = this.layout;
    const stats: BaseCopyStats = { method: opts.delta ? 'rsync' : source.tarFormat ? 'tar' : 'copy', files: 0, bytes: 0 };
    if (source.tarFormat) {
      const tars = await listTarArchives(source.dataDir);
      const jobs: (TarArchive & { dest: string; size: number; excludes: readonly string[] })[] = [];
      const base = tars.get(null);
      if (!base) throw new BarmanError(`No base.tar in ${source.dataDir}`);
      jobs.push({ ...base, dest, size: (await fsp.stat(base.file)).size, excludes: DATA_EXCLUDES });
      for (const t of tablespaces) {
        const tar = tars.get(t.oid);
        if (!tar) throw new BarmanError(`No tar archive for tablespace ${t.name} (oid ${t.oid}) in ${source.dataDir}`);
        jobs.push({ ...tar, dest: t.location, size: (await fsp.stat(tar.file)).size, excludes: [] });
      }
      const total = jobs.reduce((s, j) => s + j.size, 0);
      let done = 0;
      opts.onProgress?.(0, total);
      await fsp.mkdir(dest, { recursive: true, mode: 0o700 });
      await fsp.chmod(dest, 0o700);
      await runPool(jobs, opts.workers, async (j) => {
        await extractTar(j.file, j.dest, j.compression, j.excludes, opts.env, j.compression === 'gzip' ? opts.gzipProgram : undefined, tarDecryption(j, opts));
        done += j.size;
        stats.files += 1;
        stats.bytes += j.size;
        opts.onProgress?.(done, total);
      });
      // backup_manifest sits next to the tar files
      const manifest = path.join(source.dataDir, 'backup_manifest');
      if (await pathExists(manifest)) await fsp.copyFile(manifest, path.join(dest, 'backup_manifest'));
    } else {
      await this.copyTrees(source, opts, stats);
    }
    await ensureRealWalDir(dest, walName);
    // tablespace links, to the restored locations
    if (tablespaces.length > 0) {
      const tblspc = path.join(dest, 'pg_tblspc');
      await fsp.mkdir(tblspc, { recursive: true, mode: 0o700 });
      for (const t of tablespaces) {
        const link = path.join(tblspc, String(t.oid));
        await fsp.rm(link, { force: true, recursive: false }).catch(() => undefined);
        await fsp.symlink(t.location, link);
      }
    }
    const manifest = path.join(dest, 'backup_manifest');
    if (await pathExists(manifest)) await fsp.rename(manifest, path.join(dest, `backup_manifest.${this.layout.backupId}`));
    return stats;
  }

  /** Plain backups: the data directory and the tablespaces, copied, or delta-restored (agents or rsync). */
  private async copyTrees(source: BackupSource, opts: CopyOptions, stats: BaseCopyStats): Promise<void> {
    const { dest, tablespaces } = this.layout;
    const scans: { scan: TreeScan; dest: string }[] = [];
    scans.push({ scan: await scanTree(source.dataDir, excluder(DATA_EXCLUDES)), dest });
    for (const t of tablespaces) {
      const src = source.tablespaceDir(t.oid);
      if (!(await pathExists(src))) throw new BarmanError(`The data of tablespace ${t.name} (oid ${t.oid}) is missing: ${src} does not exist`);
      scans.push({ scan: await scanTree(src), dest: t.location });
    }
    const total = scans.reduce((s, x) => s + x.scan.totalBytes, 0);
    let done = 0;
    opts.onProgress?.(0, total);
    if (opts.delta) await clearForDelta(dest);
    if (opts.delta && opts.agent) {
      // The WAL directory itself is not taken from the backup (see WAL_DIRS): made below.
      const trees = scans.map(({ scan, dest: to }, i): PushTree => ({
        scan: to === dest ? withoutWalDirs(scan) : scan,
        dest: to,
        keep: to === dest ? [...DATA_EXCLUDES, ...WAL_DIRS] : [],
        storePrefix: i === 0 ? 'data' : String(tablespaces[i - 1]?.oid),
      }));
      // Backup and destination both here: threads of this process compare and write (local-delta.ts).
      const pushed = await localDelta(trees, { workers: opts.workers, store: opts.agent.store, onProgress: opts.onProgress });
      stats.method = 'agent';
      stats.files = pushed.files;
      stats.bytes = pushed.bytes;
      scans.length = 0;
    }
    for (const { scan, dest: to } of scans) {
      if (opts.delta) {
        await rsyncInto(scan.root, to, to === dest ? [...DATA_EXCLUDES, ...WAL_DIRS] : [], opts.env);
        done += scan.totalBytes;
        stats.files += scan.fileCount;
        stats.bytes += scan.totalBytes;
        opts.onProgress?.(done, total);
        continue;
      }
      const writeback = new EarlyWriteback(to, opts.env);
      const st = await copyTree(scan, to, {
        workers: opts.workers,
        dirsInsteadOfLinks: new Set(['pg_wal', 'pg_xlog']),
        onBytes: (n) => {
          done += n;
          writeback.add(n);
          opts.onProgress?.(done, total);
        },
      });
      await writeback.drain();
      stats.files += st.files;
      stats.bytes += st.bytes;
    }
  }

  async readRestored(rel: string): Promise<{ text: string; mode: number } | null> {
    return readTextWithMode(path.resolve(this.layout.dest, rel));
  }

  async placeWals(files: readonly ArchivedWal[], p: WalPlacement): Promise<number> {
    return copyWalsTo(files, p.walDest, p);
  }

  async finish(files: readonly RestoredFile[], signal: string | null): Promise<'syncfs' | 'fsync'> {
    const { dest, tablespaces, stagingWal } = this.layout;
    for (const f of files) {
      if (f.copyOf !== undefined) await fsp.copyFile(path.resolve(dest, f.copyOf), path.resolve(dest, f.rel));
      else await writeSmallFile(path.resolve(dest, f.rel), f.text, f.mode);
    }
    // Nothing is reported restored before it is on stable storage, and the signal file comes
    // last: a crash before this point leaves a directory PostgreSQL never starts in recovery.
    const trees = [dest, ...tablespaces.map((t) => t.location), ...(stagingWal ? [stagingWal] : [])];
    const how = await syncFilesystems(trees, trees.map((t) => path.dirname(t)), this.env);
    if (signal !== null) await writeFileAtomic(path.join(dest, signal), '', FILE_MODE);
    return how;
  }

  async cleanup(): Promise<void> {
    /* nothing staged locally */
  }
}
