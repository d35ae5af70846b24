/**
 * Direct I/O (O_DIRECT) for the backup host's copies of unchanged pages: a basis read through
 * the page cache and a new file written through it cost, besides the copy itself, a page-cache
 * page for every 4 KiB on each side (reclaimed at once afterwards: nothing reads them again
 * soon), which on a virtual machine that hands freed memory back to its host was most of the
 * CPU of an incremental backup's fill. With O_DIRECT the data goes between the disk and one
 * reused buffer, and leaves the page cache to what the host is doing.
 *
 * O_DIRECT wants the buffer's address, the file offset and the length aligned (to the logical
 * block size, at most 4 KiB): the buffer is a WebAssembly memory (util/aligned.ts), offsets
 * are multiples of PostgreSQL's 8 KiB pages, and a file's short tail
 * goes through an ordinary descriptor. A file system that refuses O_DIRECT (tmpfs, some FUSE
 * file systems) gets the ordinary path.
 */
import { constants as fsc, promises as fsp } from 'node:fs';

/** Alignment this module keeps for direct transfers (offsets and lengths). */
export const DIRECT_ALIGN = 4096;

/** Close a handle being opened or open (openDirect's), if any, whatever became of it: a failure to open or to close is not the caller's concern. */
export async function closeQuietly(handle: Promise<fsp.FileHandle | null> | null | undefined): Promise<void> {
  const fh = await handle?.catch(() => null);
  await fh?.close().catch(() => undefined);
}

/** `file` opened with `flags` plus O_DIRECT; null where direct I/O is not available for it. */
export async function openDirect(file: string, flags: number): Promise<fsp.FileHandle | null> {
  const direct = (fsc as Record<string, number | undefined>).O_DIRECT;
  if (direct === undefined) return null;
  try {
    return await fsp.open(file, flags | direct);
  } catch (err) {
    // The file system does not do direct I/O: the ordinary path. Anything else is an error.
    if ((err as NodeJS.ErrnoException).code === 'EINVAL') return null;
    throw err;
  }
}

/** `n` rounded down to DIRECT_ALIGN. */
export function alignDown(n: number): number {
  return n - (n % DIRECT_ALIGN);
}

/** `n` rounded up to DIRECT_ALIGN. */
export function alignUp(n: number): number {
  return alignDown(n + DIRECT_ALIGN - 1);
}

/**
 * The rules both the asynchronous helpers below and the hashing threads' synchronous fills
 * (hash-worker.ts) follow.
 *
 * directWriteHead: how many of `len` bytes to write at `pos` from a buffer (`aligned`: its
 * address suits O_DIRECT) go through O_DIRECT: the aligned head, 0 if none. directReadLength:
 * the length of the one O_DIRECT read that fetches `len` bytes at `pos` into a buffer of
 * `room` bytes (rounded up: at the end of the file it returns what there is), 0 if it cannot be
 * made. directWriteGoesOn: whether, after a direct write of `r` bytes, the next piece may go
 * directly too (a short write leaves an unaligned rest to the ordinary descriptor).
 */
export function directWriteHead(len: number, pos: number, aligned: boolean): number {
  return aligned && pos % DIRECT_ALIGN === 0 ? alignDown(len) : 0;
}

export function directReadLength(len: number, pos: number, aligned: boolean, room: number): number {
  const l = alignUp(len);
  return aligned && pos % DIRECT_ALIGN === 0 && l <= room ? l : 0;
}

export function directWriteGoesOn(r: number): boolean {
  return r > 0 && r % DIRECT_ALIGN === 0;
}

/**
 * Write `data` at `pos` of a file open as `fh`: through `direct` (the same file opened with
 * O_DIRECT) for the aligned head when there is one and `aligned` says the buffer's address
 * suits it (bufpool.ts: directAligned), the rest (a file's short tail, or all of it) through
 * `fh`.
 */
export async function writeMaybeDirect(fh: fsp.FileHandle, direct: fsp.FileHandle | null, data: Buffer, pos: number, aligned: boolean): Promise<void> {
  let w = 0;
  const head = direct ? directWriteHead(data.length, pos, aligned) : 0;
  while (direct && w < head) {
    const { bytesWritten } = await direct.write(data, w, head - w, pos + w);
    w += bytesWritten;
    if (!directWriteGoesOn(bytesWritten)) break;
  }
  while (w < data.length) w += (await fh.write(data, w, data.length - w, pos + w)).bytesWritten;
}

/**
 * Read `len` bytes at `pos` into `whole` (from its start) of a file open as `fh`: one aligned
 * read through `direct` (the same file opened with O_DIRECT) when there is one, `aligned` says
 * the buffer's address suits it and `whole` can take the rounded-up length; what that leaves
 * (nothing, unless the file ends or the read was short) through `fh`. Returns the bytes read:
 * fewer than `len` only at the end of the file.
 */
export async function readMaybeDirect(fh: fsp.FileHandle, direct: fsp.FileHandle | null, whole: Buffer, pos: number, len: number, aligned: boolean): Promise<number> {
  let n = 0;
  const one = direct ? directReadLength(len, pos, aligned, whole.length) : 0;
  if (direct && one > 0) n = Math.min(len, (await direct.read(whole, 0, one, pos)).bytesRead);
  while (n < len) {
    const { bytesRead } = await fh.read(whole, n, len - n, pos + n);
    if (bytesRead === 0) break;
    n += bytesRead;
  }
  return n;
}
