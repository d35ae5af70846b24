/**
 * The long page header that starts every WAL segment (PostgreSQL's XLogLongPageHeaderData):
 * the segment says itself how long it is (`xlp_seg_size`, set by `initdb --wal-segsize`), which
 * position it holds (`xlp_pageaddr`) and of which cluster (`xlp_sysid`). The archiver checks a
 * segment's size against its own header instead of a size remembered from a backup, so a
 * cluster with 64 MiB segments archives before its first backup exists.
 *
 * Layout (identical from PostgreSQL 11 to 18; WAL is written in the server's byte order):
 *   0  uint16 xlp_magic     2  uint16 xlp_info (XLP_LONG_HEADER = 0x0002 on a segment's first page)
 *   4  uint32 xlp_tli       8  uint64 xlp_pageaddr   16 uint32 xlp_rem_len   (20: padding to 24)
 *   24 uint64 xlp_sysid    32  uint32 xlp_seg_size   36 uint32 xlp_xlog_blcksz
 */
import { promises as fsp } from 'node:fs';
import { walToLsn } from './names.js';

/** Bytes read from the start of a segment: the whole long header. */
export const LONG_HEADER_BYTES = 40;
const XLP_LONG_HEADER = 0x0002;
/** Every xlp_magic PostgreSQL ever used has this high byte (0xD0xx, 0xD1xx). */
const MAGIC_MIN = 0xd000;
const MAGIC_MAX = 0xd1ff;

export interface SegmentHeader {
  magic: number;
  timeline: number;
  pageAddr: bigint;
  systemId: bigint;
  segSize: number;
  blockSize: number;
}

const isPowerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;

function parseWith(buf: Buffer, le: boolean): SegmentHeader | null {
  const u16 = (o: number) => (le ? buf.readUInt16LE(o) : buf.readUInt16BE(o));
  const u32 = (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const u64 = (o: number) => (le ? buf.readBigUInt64LE(o) : buf.readBigUInt64BE(o));
  const magic = u16(0);
  const info = u16(2);
  const segSize = u32(32);
  const blockSize = u32(36);
  if (magic < MAGIC_MIN || magic > MAGIC_MAX || (info & XLP_LONG_HEADER) === 0) return null;
  // PostgreSQL's limits: segments of 1 MiB to 1 GiB, pages of 1 to 64 kB, both powers of two.
  if (!isPowerOfTwo(segSize) || segSize < 1 << 20 || segSize > 1 << 30) return null;
  if (!isPowerOfTwo(blockSize) || blockSize < 1024 || blockSize > 65536) return null;
  const pageAddr = u64(8);
  if (pageAddr % BigInt(segSize) !== 0n) return null;
  return { magic, timeline: u32(4), pageAddr, systemId: u64(24), segSize, blockSize };
}

/**
 * The long page header at the start of `buf` (little-endian servers first, then big-endian),
 * or null when these bytes are not the first page of a WAL segment.
 */
export function parseSegmentHeader(buf: Buffer): SegmentHeader | null {
  if (buf.length < LONG_HEADER_BYTES) return null;
  return parseWith(buf, true) ?? parseWith(buf, false);
}

/**
 * The header of the segment file `file`, or null when the file does not start with one (too
 * short, or not WAL). A file that cannot be read throws (it is not "no header").
 */
export async function readSegmentHeader(file: string): Promise<SegmentHeader | null> {
  const fh = await fsp.open(file, 'r');
  try {
    const buf = Buffer.alloc(LONG_HEADER_BYTES);
    const { bytesRead } = await fh.read(buf, 0, LONG_HEADER_BYTES, 0);
    return parseSegmentHeader(buf.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}

/** What is wrong with a plain segment named `name` of `size` bytes starting with `header`; null when nothing. */
export function segmentProblem(name: string, size: bigint | number, header: SegmentHeader | null): string | null {
  if (header === null) return 'does not start with a WAL page header';
  if (BigInt(size) !== BigInt(header.segSize)) return `is ${size} bytes long, not a WAL segment of ${header.segSize} bytes (the size its header gives)`;
  let expected: bigint;
  try {
    expected = walToLsn(name, 0, header.segSize);
  } catch {
    return `is not a segment name that exists with ${header.segSize}-byte segments`;
  }
  if (expected !== header.pageAddr) return 'holds WAL of another position than its name says';
  return null;
}
