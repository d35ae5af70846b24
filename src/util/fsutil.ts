import { promises as fsp, constants as fsc } from 'node:fs';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { faultPoint } from './fault.js';

/** Catalog permissions: only the barman user may read the catalog. */
export const DIR_MODE = 0o700;
export const FILE_MODE = 0o600;

/** fsync a directory so that a rename or unlink inside it survives a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export function fsyncDirSync(dir: string): void {
  const fd = fs.openSync(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** fsync an existing file by path. */
export async function fsyncFile(file: string): Promise<void> {
  const fh = await fsp.open(file, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Create a directory tree with catalog permissions (0700 for directories we create). */
export async function ensureDir(dir: string, mode = DIR_MODE): Promise<void> {
  await fsp.mkdir(dir, { recursive: true, mode });
}

/**
 * Durable replace: write to a temporary name, fsync, rename over `file`, fsync the directory.
 * A crash leaves either the old content or the new one, never a torn file. The temporary name
 * is unique to the writer, so two processes saving the same file never write into one temp
 * file (the last rename wins, each with complete content).
 */
let tempSeq = 0;
/** `<file>.<pid>.<n>.tmp`: unique per process and call; `*.tmp` is what cleanups recognise. */
function tempName(file: string): string {
  return `${file}.${process.pid}.${++tempSeq}.tmp`;
}

export async function writeFileAtomic(
  file: string,
  data: string | Uint8Array,
  mode = FILE_MODE,
): Promise<void> {
  const tmp = tempName(file);
  const fh = await fsp.open(tmp, 'w', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  faultPoint(`write-atomic:${path.basename(file)}:tmp-written`);
  await fsp.rename(tmp, file);
  faultPoint(`write-atomic:${path.basename(file)}:renamed`);
  await fsyncDir(path.dirname(file));
}

export function writeFileAtomicSync(file: string, data: string | Uint8Array, mode = FILE_MODE): void {
  const tmp = tempName(file);
  const fd = fs.openSync(tmp, 'w', mode);
  try {
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  faultPoint(`write-atomic:${path.basename(file)}:tmp-written`);
  fs.renameSync(tmp, file);
  faultPoint(`write-atomic:${path.basename(file)}:renamed`);
  fsyncDirSync(path.dirname(file));
}

export async function pathExists(p: string): Promise<boolean> {
  try {
    await fsp.lstat(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * Sizes of the regular files under `dir` (symlinks not followed, unreadable directories skipped),
 * as Barman measures a backup: every file (`size`), and only the files with a single link
 * (`deduplicated`), since a hard link means the bytes are shared with another backup.
 */
export async function treeSizes(dir: string): Promise<{ size: number; deduplicated: number }> {
  let size = 0;
  let deduplicated = 0;
  const walk = async (d: string): Promise<void> => {
    const entries = await fsp.readdir(d, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) {
        const st = await fsp.lstat(p);
        size += st.size;
        if (st.nlink === 1) deduplicated += st.size;
      }
    }
  };
  await walk(dir);
  return { size, deduplicated };
}

/** Total size in bytes of regular files under `dir` (symlinks not followed). */
export async function treeSize(dir: string): Promise<number> {
  return (await treeSizes(dir)).size;
}

/** True when the directory does not exist or holds no entries. */
export async function isEmptyDir(dir: string): Promise<boolean> {
  try {
    return (await fsp.readdir(dir)).length === 0;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return true;
    throw err;
  }
}
