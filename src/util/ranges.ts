/**
 * Copying one big file as several byte ranges at once. rsync moves a file in one stream, so a
 * backup or a remote recovery with N jobs still copies a 1 GiB relation segment at the speed of
 * one ssh session (one core for the cipher on each side). Split into ranges, each range goes
 * through its own session and the jobs share the file.
 *
 * The ranges are read and written with `dd` on the other host (GNU coreutils: `iflag` and
 * `oflag` with `skip_bytes`/`count_bytes`/`seek_bytes`), as argument words for
 * src/util/ssh-command.ts (every word is quoted for the remote shell there).
 */

import { BarmanError } from './errors.js';

export interface ByteRange {
  offset: number;
  length: number;
}

/** Files this big or bigger are worth splitting (smaller ones: the per-session cost dominates). */
export const RANGED_COPY_MIN_BYTES = 64 * 1024 * 1024;

/** Overrides RANGED_COPY_MIN_BYTES for backups and remote restores alike (tests use small files). */
export const RANGED_MIN_ENV = 'BARMAN_TS_RANGED_MIN_BYTES';

/** The size from which a file is copied in ranges: BARMAN_TS_RANGED_MIN_BYTES or the default. */
export function rangedMinBytes(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env[RANGED_MIN_ENV];
  if (raw === undefined || raw.trim() === '') return RANGED_COPY_MIN_BYTES;
  const n = Number(raw.trim());
  if (!Number.isSafeInteger(n) || n < 1) throw new BarmanError(`Invalid ${RANGED_MIN_ENV} '${raw}': expected a positive number of bytes`);
  return n;
}

/** Ranges start on this boundary (whole pages for PostgreSQL, whole blocks for dd). */
export const RANGE_ALIGN = 1024 * 1024;

/**
 * `size` bytes as at most `parts` contiguous ranges of nearly equal length, each starting on a
 * RANGE_ALIGN boundary, covering [0, size) exactly once. An empty file is one empty range.
 */
export function splitRanges(size: number, parts: number, align = RANGE_ALIGN): ByteRange[] {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`invalid file size ${size}`);
  const blocks = Math.ceil(size / align);
  const n = Math.max(1, Math.min(Math.floor(parts), blocks));
  const out: ByteRange[] = [];
  let startBlock = 0;
  for (let i = 0; i < n; i++) {
    const endBlock = startBlock + Math.ceil((blocks - startBlock) / (n - i));
    const offset = startBlock * align;
    const end = Math.min(endBlock * align, size);
    out.push({ offset, length: end - offset });
    startBlock = endBlock;
  }
  return out;
}

/** Remote words that write bytes [offset, offset+length) of `file` to stdout (GNU dd). */
export function ddReadWords(file: string, range: ByteRange): string[] {
  return ['dd', `if=${file}`, `bs=${RANGE_ALIGN}`, 'iflag=skip_bytes,count_bytes,fullblock', `skip=${range.offset}`, `count=${range.length}`, 'status=none'];
}

/**
 * Remote words that write stdin into `file` from byte `offset` on, keeping the rest of the file
 * (conv=notrunc: the other ranges are written by other sessions at the same time).
 */
export function ddWriteWords(file: string, offset: number): string[] {
  return ['dd', `of=${file}`, `bs=${RANGE_ALIGN}`, 'iflag=fullblock', 'oflag=seek_bytes', `seek=${offset}`, 'conv=notrunc', 'status=none'];
}
