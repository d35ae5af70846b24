/**
 * Local copy of a base backup into the restore destination, built for speed: a restore into an
 * empty directory needs no rsync delta logic, so files are copied by a pool of concurrent
 * `copyFile` calls (libuv uses copy_file_range/sendfile: the data never goes through
 * JavaScript), modes and times are preserved like `cp -a`, and durability costs one `syncfs`
 * per file system at the end instead of one fsync per file.
 *
 * Compressed backups (pg_basebackup tar format) are extracted with the `tar` program.
 */
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { lstatIfExists, pathExists, readdirIfExists, statIfExists } from '../util/fsutil.js';
import type { Dirent, Stats } from 'node:fs';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { gpgDecryptStream, type GpgRunner } from '../util/gpg.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { runPool } from '../util/pool.js';
import { run } from '../util/proc.js';

export type EntryKind = 'dir' | 'file' | 'symlink';

export interface TreeEntry {
  /** Path relative to the tree root, `/`-separated, never empty (the root is not listed). */
  rel: string;
  kind: EntryKind;
  size: number;
  mode: number;
  atimeMs: number;
  mtimeMs: number;
  uid: number;
  gid: number;
  /** Target of a symbolic link. */
  link?: string;
}

export interface TreeScan {
  root: string;
  rootMode: number;
  rootAtimeMs: number;
  rootMtimeMs: number;
  rootUid: number;
  rootGid: number;
  entries: TreeEntry[];
  totalBytes: number;
  fileCount: number;
}

/** Decides whether a path (relative to the root, `/`-separated) is left out of the copy. */
export type ExcludeFn = (rel: string, kind: EntryKind) => boolean;

/**
 * Simple anchored rsync-like patterns: `pg_wal/*` (contents of a top-level directory, the
 * directory itself kept), `postmaster.pid` (one top-level file). `*` matches within one
 * path component.
 */
export function excluder(patterns: readonly string[]): ExcludeFn {
  const res = patterns.map((p) => {
    const body = p
      .replace(/^\/+/, '')
      .split('*')
      .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('[^/]*');
    return new RegExp(`^${body}$`);
  });
  return (rel) => res.some((re) => re.test(rel));
}

function kindOf(d: Dirent | Stats): EntryKind | null {
  if (d.isDirectory()) return 'dir';
  if (d.isFile()) return 'file';
  if (d.isSymbolicLink()) return 'symlink';
  return null; // sockets, fifos, devices: never part of a data directory worth restoring
}

/**
 * List a tree (symlinks not followed), in an order where every directory comes before its
 * contents. Excluded directories are not descended into.
 */
export async function scanTree(root: string, exclude: ExcludeFn = () => false): Promise<TreeScan> {
  let rootStat: Stats;
  try {
    rootStat = await fsp.stat(root);
  } catch (err) {
    throw new BarmanError(`cannot read backup directory ${root}: ${errorMessage(err)}`);
  }
  if (!rootStat.isDirectory()) throw new BarmanError(`${root} is not a directory`);
  const entries: TreeEntry[] = [];
  let totalBytes = 0;
  let fileCount = 0;
  const walk = async (dirRel: string): Promise<void> => {
    const abs = dirRel === '' ? root : path.join(root, dirRel);
    const names = (await fsp.readdir(abs)).sort();
    const stats = await Promise.all(names.map((n) => fsp.lstat(path.join(abs, n))));
    const subdirs: string[] = [];
    for (let i = 0; i < names.length; i++) {
      const st = stats[i] as Stats;
      const rel = dirRel === '' ? (names[i] as string) : `${dirRel}/${names[i] as string}`;
      const kind = kindOf(st);
      if (kind === null || exclude(rel, kind)) continue;
      const e: TreeEntry = { rel, kind, size: kind === 'file' ? st.size : 0, mode: st.mode & 0o7777, atimeMs: st.atimeMs, mtimeMs: st.mtimeMs, uid: st.uid, gid: st.gid };
      if (kind === 'symlink') e.link = await fsp.readlink(path.join(abs, names[i] as string));
      if (kind === 'file') {
        totalBytes += st.size;
        fileCount += 1;
      }
      entries.push(e);
      if (kind === 'dir') subdirs.push(rel);
    }
    // siblings in parallel: stat latency dominates on a cold cache
    await Promise.all(subdirs.map((d) => walk(d)));
  };
  await walk('');
  // parents before children whatever the completion order of the parallel walk
  entries.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  return {
    root,
    rootMode: rootStat.mode & 0o7777,
    rootAtimeMs: rootStat.atimeMs,
    rootMtimeMs: rootStat.mtimeMs,
    rootUid: rootStat.uid,
    rootGid: rootStat.gid,
    entries,
    totalBytes,
    fileCount,
  };
}

export interface CopyTreeOptions {
  /** Concurrent file copies (default 4). */
  workers?: number;
  /** Called after each file with the bytes it added. */
  onBytes?: (bytes: number) => void;
  /** Directory entries that must not be replaced by the source (e.g. symlinked pg_wal). */
  dirsInsteadOfLinks?: ReadonlySet<string>;
  /** Keep owners and groups, as `cp -a` does (default: when running as root). */
  preserveOwner?: boolean;
}

export interface CopyStats {
  files: number;
  bytes: number;
  dirs: number;
  symlinks: number;
}


const toSeconds = (ms: number): number => ms / 1000;

/**
 * Copy a scanned tree into `dst` (which may exist, empty). Directories are created first,
 * files copied concurrently (largest first, so the big relation segments start early), then
 * directory modes and times are applied bottom-up, as `cp -a` leaves them. Nothing is
 * fsynced here: see `syncFilesystems`.
 */
export async function copyTree(scan: TreeScan, dst: string, opts: CopyTreeOptions = {}): Promise<CopyStats> {
  const stats: CopyStats = { files: 0, bytes: 0, dirs: 0, symlinks: 0 };
  const owner = opts.preserveOwner ?? process.getuid?.() === 0;
  const chown = async (p: string, e: { uid: number; gid: number }): Promise<void> => {
    if (owner) await fsp.lchown(p, e.uid, e.gid);
  };
  await fsp.mkdir(dst, { recursive: true, mode: 0o700 });
  const dirs: TreeEntry[] = [];
  const files: TreeEntry[] = [];
  for (const e of scan.entries) {
    if (e.kind === 'dir' || (e.kind === 'symlink' && opts.dirsInsteadOfLinks?.has(e.rel))) {
      // Owner-writable while we fill it; the real mode is applied at the end.
      await fsp.mkdir(path.join(dst, e.rel), { mode: 0o700 });
      dirs.push(e.kind === 'dir' ? e : { ...e, kind: 'dir', mode: 0o700 });
      stats.dirs += 1;
    } else if (e.kind === 'symlink') {
      await fsp.symlink(e.link ?? '', path.join(dst, e.rel));
      await chown(path.join(dst, e.rel), e);
      await fsp.lutimes(path.join(dst, e.rel), toSeconds(e.atimeMs), toSeconds(e.mtimeMs)).catch(() => undefined);
      stats.symlinks += 1;
    } else {
      files.push(e);
    }
  }
  files.sort((a, b) => b.size - a.size);
  await runPool(files, opts.workers ?? 4, async (f) => {
    const from = path.join(scan.root, f.rel);
    const to = path.join(dst, f.rel);
    try {
      // COPYFILE_EXCL: the destination was checked empty; never overwrite something unexpected.
      await fsp.copyFile(from, to, fsp.constants.COPYFILE_EXCL);
      await chown(to, f);
      await fsp.chmod(to, f.mode);
      await fsp.utimes(to, toSeconds(f.atimeMs), toSeconds(f.mtimeMs));
    } catch (err) {
      throw new BarmanError(`cannot copy ${from} to ${to}: ${errorMessage(err)}`);
    }
    stats.files += 1;
    stats.bytes += f.size;
    opts.onBytes?.(f.size);
  });
  for (const d of dirs.reverse()) {
    const p = path.join(dst, d.rel);
    await chown(p, d);
    await fsp.chmod(p, d.mode);
    await fsp.utimes(p, toSeconds(d.atimeMs), toSeconds(d.mtimeMs));
  }
  await chown(dst, { uid: scan.rootUid, gid: scan.rootGid });
  await fsp.chmod(dst, scan.rootMode);
  await fsp.utimes(dst, toSeconds(scan.rootAtimeMs), toSeconds(scan.rootMtimeMs));
  return stats;
}

// ---------------------------------------------------------------------------------------------
// Tar extraction (backups taken with backup_compression: base.tar.gz, <oid>.tar.zst, ...)

export type TarCompression = 'gzip' | 'lz4' | 'zstd' | 'none';

const TAR_NAME_RE = /^(base|\d+)\.tar(?:\.(gz|lz4|zst))?(\.gpg)?$/;

export interface TarName {
  oid: number | null;
  compression: TarCompression;
  /** `.gpg` suffix: encrypted with gpg (encryption = gpg, Barman 3.14+). */
  encrypted: boolean;
}

/** `base.tar.gz` → { oid: null, compression: 'gzip' }, `16385.tar.zst.gpg` → { oid: 16385, ..., encrypted }. */
export function parseTarName(name: string): TarName | null {
  const m = TAR_NAME_RE.exec(name);
  if (!m) return null;
  const compression: TarCompression = m[2] === 'gz' ? 'gzip' : m[2] === 'lz4' ? 'lz4' : m[2] === 'zst' ? 'zstd' : 'none';
  return { oid: m[1] === 'base' ? null : Number(m[1]), compression, encrypted: m[3] !== undefined };
}

export interface TarArchive {
  file: string;
  compression: TarCompression;
  encrypted: boolean;
}

/** The tar archives of a tar-format backup, keyed by tablespace OID (null = the data directory). */
export async function listTarArchives(dataDir: string): Promise<Map<number | null, TarArchive>> {
  const out = new Map<number | null, TarArchive>();
  for (const name of await fsp.readdir(dataDir)) {
    const t = parseTarName(name);
    if (!t) continue;
    if (out.has(t.oid)) throw new BarmanError(`Two tar archives for the same ${t.oid === null ? 'data directory' : `tablespace (oid ${t.oid})`} in ${dataDir}`);
    out.set(t.oid, { file: path.join(dataDir, name), compression: t.compression, encrypted: t.encrypted });
  }
  return out;
}

/** Is this data directory a tar-format backup (base.tar[.gz|.lz4|.zst][.gpg] and no PG_VERSION)? */
export async function isTarBackup(dataDir: string): Promise<boolean> {
  const names = await readdirIfExists(dataDir);
  return !names.includes('PG_VERSION') && names.some((n) => parseTarName(n)?.oid === null);
}

/**
 * tar arguments to extract `file` into `dest`: GNU tar, members matching the anchored
 * `excludes` skipped, permissions kept. Ownership follows tar's default, like the plain copy:
 * kept when running as root, the running user (barman) otherwise.
 */
export function tarExtractArgs(file: string, dest: string, compression: TarCompression, excludes: readonly string[], decompressor?: string): string[] {
  const args = ['-x', '-f', file, '-C', dest, '--preserve-permissions', '--anchored'];
  for (const e of excludes) args.push(`--exclude=${e.replace(/^\/+/, '')}`, `--exclude=./${e.replace(/^\/+/, '')}`);
  return [...args, ...tarDecompressArgs(compression, decompressor)];
}

/** The GNU tar option that reads a tar compressed with `compression` (tar detects no lz4 by itself). */
export function tarDecompressArgs(compression: TarCompression, decompressor?: string): string[] {
  switch (compression) {
    case 'gzip':
      return [decompressor ? `--use-compress-program=${decompressor}` : '-z'];
    case 'zstd':
      return ['--use-compress-program=zstd'];
    case 'lz4':
      return ['--use-compress-program=lz4'];
    case 'none':
      return [];
  }
}

/** How an encrypted tar file is read: gpg and the passphrase (encryption_passphrase_command). */
export interface TarDecryption {
  gpg: GpgRunner;
  passphrase: Uint8Array;
}

export async function extractTar(
  file: string,
  dest: string,
  compression: TarCompression,
  excludes: readonly string[],
  env: NodeJS.ProcessEnv,
  decompressor?: string,
  decrypt?: TarDecryption,
): Promise<void> {
  await fsp.mkdir(dest, { recursive: true, mode: 0o700 });
  if (decrypt) return extractDecrypted(file, dest, compression, excludes, env, decompressor, decrypt);
  const res = await run('tar', tarExtractArgs(file, dest, compression, excludes, decompressor), { env });
  if (res.code !== 0) {
    const detail = (res.stderr.trim() || res.stdout.trim()).split('\n').slice(-1)[0] ?? '';
    throw new BarmanError(`cannot extract ${file} into ${dest}: tar exited with code ${res.code}${detail ? `: ${detail}` : ''}`);
  }
}

/**
 * An encrypted tar file: `gpg --decrypt` streams into tar's standard input, so the decrypted
 * archive never exists as a file (no staging space, no clear copy left behind). A failure of
 * either side stops the other.
 */
async function extractDecrypted(
  file: string,
  dest: string,
  compression: TarCompression,
  excludes: readonly string[],
  env: NodeJS.ProcessEnv,
  decompressor: string | undefined,
  decrypt: TarDecryption,
): Promise<void> {
  const dec = gpgDecryptStream(decrypt.gpg, file, decrypt.passphrase);
  const tar = spawn('tar', tarExtractArgs('-', dest, compression, excludes, decompressor), { env, stdio: ['pipe', 'ignore', 'pipe'] });
  let tarErr = '';
  tar.stderr.setEncoding('utf8').on('data', (d: string) => (tarErr = (tarErr + d).slice(-4096)));
  const tarDone = new Promise<number | null>((resolve, reject) => {
    tar.on('error', (err) => reject(new BarmanError(`cannot run tar: ${err.message}`)));
    tar.on('close', (code) => resolve(code));
  });
  const fed = pipeline(dec.stream, tar.stdin).catch((err: unknown) => err);
  const [gpgResult, tarCode] = await Promise.all([
    dec.done.then(
      () => null,
      (err: unknown) => {
        tar.kill('SIGTERM');
        return err;
      },
    ),
    tarDone.then((code) => {
      if (code !== 0) dec.kill();
      return code;
    }),
  ]);
  await fed;
  if (gpgResult !== null) throw gpgResult;
  if (tarCode !== 0) {
    const detail = tarErr.trim().split('\n').slice(-1)[0] ?? '';
    throw new BarmanError(`cannot extract ${file} into ${dest}: tar exited with code ${tarCode}${detail ? `: ${detail}` : ''}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Durability

/**
 * Make the restored `trees` durable, with the directory entries of their `parents`: one
 * `sync -f` (syncfs(2), which also reports write-back errors since Linux 5.8) per file system.
 * If `sync -f` is not available, fall back to fsyncing every file and directory of the trees
 * (in parallel) and the parent directories.
 */
export async function syncFilesystems(
  trees: readonly string[],
  parents: readonly string[] = [],
  env: NodeJS.ProcessEnv = process.env,
): Promise<'syncfs' | 'fsync'> {
  const byDev = new Map<number, string>();
  for (const p of [...trees, ...parents]) {
    // Never created: nothing to sync there. Any other error is one (data may not be durable).
    const st = await statIfExists(p);
    if (st !== null && !byDev.has(st.dev)) byDev.set(st.dev, p);
  }
  let ok = true;
  await Promise.all(
    [...byDev.values()].map(async (p) => {
      const res = await run('sync', ['-f', p], { env }).catch(() => null);
      if (!res || res.code !== 0) ok = false;
    }),
  );
  if (ok) return 'syncfs';
  for (const t of trees) await fsyncTree(t);
  for (const p of parents) if (await pathExists(p)) await fsyncPath(p);
  return 'fsync';
}

async function fsyncPath(p: string): Promise<void> {
  const fh = await fsp.open(p, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** fsync every file and directory of a tree (symlinks are covered by their directory). */
export async function fsyncTree(root: string, workers = 16): Promise<void> {
  const items: string[] = [];
  const walk = async (d: string): Promise<void> => {
    items.push(d);
    for (const e of await fsp.readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) items.push(p);
    }
  };
  const st = await lstatIfExists(root);
  if (st === null) return;
  if (!st.isDirectory()) {
    if (st.isFile()) items.push(root);
  } else {
    await walk(root);
  }
  await runPool(items, workers, fsyncPath);
}

/**
 * Starts write-back while the copy is still running: each time `chunkBytes` more bytes have
 * been copied (and no earlier round is in flight) it runs `sync -f` on the destination, so the
 * disk writes overlap with the copy and the final, authoritative sync has little left to do.
 * Failures are ignored here: `syncFilesystems` afterwards is what guarantees durability.
 */
export class EarlyWriteback {
  private pending = 0;
  private inflight: Promise<void> | null = null;
  rounds = 0;

  constructor(
    private readonly target: string,
    private readonly env: NodeJS.ProcessEnv = process.env,
    private readonly chunkBytes = 128 * 1024 * 1024,
  ) {}

  add(bytes: number): void {
    this.pending += bytes;
    this.kick();
  }

  private kick(): void {
    if (this.inflight !== null || this.pending < this.chunkBytes) return;
    this.pending = 0;
    this.rounds += 1;
    this.inflight = run('sync', ['-f', this.target], { env: this.env })
      .then(
        () => undefined,
        () => undefined,
      )
      .then(() => {
        this.inflight = null;
        this.kick();
      });
  }

  /** Wait for the round in flight, if any. */
  async drain(): Promise<void> {
    while (this.inflight !== null) await this.inflight;
  }

  /**
   * No more rounds: the copy is over. Resolves when the round in flight (if any) is done, so
   * that the final sync can run beside it instead of after it (it would only wait for the same
   * pages, then flush again).
   */
  stop(): Promise<void> {
    this.pending = Number.NEGATIVE_INFINITY;
    return this.drain();
  }
}
