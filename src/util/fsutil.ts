import { promises as fsp, constants as fsc } from 'node:fs';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { faultPoint } from './fault.js';
import { BarmanError, errorMessage } from './errors.js';

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

/**
 * True for the errors that mean "nothing is at this path": ENOENT, or ENOTDIR (a component on
 * the way is a file). Every other error (EACCES, EIO, ELOOP, ...) means the answer is unknown
 * and must not be taken for "absent" (the project's rule: only ENOENT means "not there").
 */
export function isNotFound(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** `what <path>: <reason>` as a BarmanError, for an fs error that is not "not found". */
export function fsFailure(what: string, p: string, err: unknown): BarmanError {
  return new BarmanError(`cannot ${what} ${p}: ${errorMessage(err)}`);
}

/** Whether something (anything, symlinks not followed) is at `p`; throws on any error but "not found". */
export async function pathExists(p: string): Promise<boolean> {
  return (await lstatIfExists(p)) !== null;
}

/** Synchronous pathExists (what fs.existsSync should have been: it says false on EACCES and EIO). */
export function pathExistsSync(p: string): boolean {
  return lstatIfExistsSync(p) !== null;
}

/** `fn()`, or null when it fails with "not found"; any other failure is a BarmanError about `p`. */
async function orNullIfMissing<T>(what: string, p: string, fn: () => Promise<T>): Promise<T | null> {
  try {
    return await fn();
  } catch (err) {
    if (isNotFound(err)) return null;
    throw fsFailure(what, p, err);
  }
}

function orNullIfMissingSync<T>(what: string, p: string, fn: () => T): T | null {
  try {
    return fn();
  } catch (err) {
    if (isNotFound(err)) return null;
    throw fsFailure(what, p, err);
  }
}

/** stat (following symlinks), or null when nothing is there; other errors throw a BarmanError. */
export const statIfExists = (p: string): Promise<fs.Stats | null> => orNullIfMissing('access', p, () => fsp.stat(p));
/** lstat, or null when nothing is there; other errors throw a BarmanError. */
export const lstatIfExists = (p: string): Promise<fs.Stats | null> => orNullIfMissing('access', p, () => fsp.lstat(p));
export const statIfExistsSync = (p: string): fs.Stats | null => orNullIfMissingSync('access', p, () => fs.statSync(p));
export const lstatIfExistsSync = (p: string): fs.Stats | null => orNullIfMissingSync('access', p, () => fs.lstatSync(p));

/**
 * The entries of `dir`, or [] when it does not exist; any other error throws a BarmanError, and
 * so does a `dir` that exists but is not a directory (ENOTDIR about the path itself).
 */
export async function readdirIfExists(dir: string): Promise<string[]> {
  const names = await orNullIfMissing('read directory', dir, () => fsp.readdir(dir));
  if (names === null && (await lstatIfExists(dir)) !== null) throw new BarmanError(`cannot read directory ${dir}: not a directory`);
  return names ?? [];
}

export function readdirIfExistsSync(dir: string): string[] {
  const names = orNullIfMissingSync('read directory', dir, () => fs.readdirSync(dir));
  if (names === null && lstatIfExistsSync(dir) !== null) throw new BarmanError(`cannot read directory ${dir}: not a directory`);
  return names ?? [];
}

/** A text file's content, or null when it does not exist; any other error throws a BarmanError. */
export const readTextIfExists = (file: string): Promise<string | null> => orNullIfMissing('read', file, () => fsp.readFile(file, 'utf8'));
/** A file's bytes, or null when it does not exist; any other error throws a BarmanError. */
export const readFileIfExists = (file: string): Promise<Buffer | null> => orNullIfMissing('read', file, () => fsp.readFile(file));
export const readTextIfExistsSync = (file: string): string | null => orNullIfMissingSync('read', file, () => fs.readFileSync(file, 'utf8'));

/** Remove a file; false when it was not there. Other errors throw as they are. */
export async function unlinkIfExists(file: string): Promise<boolean> {
  try {
    await fsp.unlink(file);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/**
 * Sizes of the regular files under `dir` (symlinks not followed; an unreadable directory is an
 * error, a directory removed meanwhile counts as empty),
 * as Barman measures a backup: every file (`size`), and only the files with a single link
 * (`deduplicated`), since a hard link means the bytes are shared with another backup.
 */
export async function treeSizes(dir: string): Promise<{ size: number; deduplicated: number }> {
  let size = 0;
  let deduplicated = 0;
  const walk = async (d: string): Promise<void> => {
    let entries: fs.Dirent[];
    try {
      entries = await fsp.readdir(d, { withFileTypes: true });
    } catch (err) {
      if (isNotFound(err)) return;
      throw fsFailure('read directory', d, err);
    }
    // The files of a directory are looked at together (a data directory has a thousand of them:
    // one after the other, each stat waits for its turn in the thread pool).
    const files = entries.filter((e) => e.isFile());
    for (let i = 0; i < files.length; i += 64) {
      const stats = await Promise.all(files.slice(i, i + 64).map((e) => lstatIfExists(path.join(d, e.name))));
      for (const st of stats) {
        if (st === null) continue;
        size += st.size;
        if (st.nlink === 1) deduplicated += st.size;
      }
    }
    for (const e of entries) if (e.isDirectory()) await walk(path.join(d, e.name));
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
    if (isNotFound(err)) return true;
    throw err;
  }
}
