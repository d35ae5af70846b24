/**
 * Synthetic WAL segments that pass the archiver's header check (src/wal/segment-header.ts): the
 * first 40 bytes are a little-endian XLogLongPageHeaderData for the segment's name and size, as
 * PostgreSQL 15 writes it. The rest is the caller's.
 */
import * as fs from 'node:fs';
import { walToLsn } from '../../src/wal/names.js';

export const TEST_SYSTEM_ID = 7_300_000_000_000_000_001n;

/** The long page header of segment `name` in a cluster with `segSize`-byte segments. */
export function segmentHeader(name: string, segSize = 16 << 20, systemId = TEST_SYSTEM_ID): Buffer {
  const h = Buffer.alloc(40);
  h.writeUInt16LE(0xd110, 0); // xlp_magic of PostgreSQL 15
  h.writeUInt16LE(0x0006, 2); // XLP_LONG_HEADER | XLP_BKP_REMOVABLE
  h.writeUInt32LE(parseInt(name.slice(0, 8), 16), 4);
  h.writeBigUInt64LE(walToLsn(name.slice(0, 24), 0, segSize), 8);
  h.writeBigUInt64LE(systemId, 24);
  h.writeUInt32LE(segSize, 32);
  h.writeUInt32LE(8192, 36);
  return h;
}

/** `data` with the header of segment `name` (of `data.length` bytes) written over its start. */
export function withSegmentHeader(data: Buffer, name: string): Buffer {
  const out = Buffer.from(data);
  segmentHeader(name, data.length).copy(out, 0);
  return out;
}

/** A segment file of `segSize` bytes that holds its header and nothing else (sparse: no disk used). */
export function writeSparseSegment(file: string, name: string, segSize = 16 << 20): void {
  const fd = fs.openSync(file, 'w', 0o600);
  try {
    fs.writeSync(fd, segmentHeader(name, segSize), 0, 40, 0);
    fs.ftruncateSync(fd, segSize);
  } finally {
    fs.closeSync(fd);
  }
}
