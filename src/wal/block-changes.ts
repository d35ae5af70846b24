/**
 * Which relation blocks the WAL says were changed between two positions: the records of a run of
 * WAL segments are read in order (across page and segment boundaries, continuation records,
 * long and short page headers, switch records), each checked (page address, timeline, system
 * identifier, CRC-32C, link to the previous record), and their block references are gathered.
 * What changes files without naming blocks is gathered apart: relations created or truncated
 * (smgr), databases created, copied or dropped (dbase). Anything this reader cannot vouch for (a
 * timeline switch, wal_level set to minimal, an overwritten continuation record, a
 * gap, a record it cannot parse, a PostgreSQL version it does not know) makes the result
 * unusable, with the reason: the caller then reads everything, as without change tracking.
 *
 * This is what an incremental backup needs to know which pages of a file changed since an earlier
 * backup started without reading the file (PostgreSQL 17's WAL summaries record the same). Not
 * in the WAL, so never in the result: the free space map (not WAL-logged), visibility map bits
 * cleared by heap records (the VM block is not referenced), unlogged and temporary relations,
 * pages added by bulk extension and not yet used, and hint bits without checksums or
 * wal_log_hints. Callers read those files (or those pages) whole.
 *
 * Layouts (PostgreSQL 12 to 18, the server's byte order; only little-endian is read here):
 *   page header   0 u16 magic, 2 u16 info, 4 u32 tli, 8 u64 pageaddr, 16 u32 rem_len (24 bytes;
 *                 40 with the long header: 24 u64 sysid, 32 u32 seg_size, 36 u32 blcksz)
 *   record        0 u32 tot_len, 4 u32 xid, 8 u64 prev, 16 u8 info, 17 u8 rmid, 20 u32 crc (24),
 *                 then block headers, their images and data, then the main data
 *   block header  u8 id (0-32), u8 fork_flags, u16 data_len, [image: u16 len, u16 hole_offset,
 *                 u8 bimg_info, (u16 hole_length if compressed with a hole)], [RelFileNode: u32
 *                 spc, u32 db, u32 rel unless SAME_REL], u32 block
 */
import CRC32C from 'crc-32/crc32c.js';
import { createCRC32, type IHasher } from 'hash-wasm';
import { formatLsn } from './names.js';
import { parseSegmentHeader } from './segment-header.js';

const XLP_FIRST_IS_CONTRECORD = 0x0001;
const XLP_LONG_HEADER = 0x0002;
const XLP_FIRST_IS_OVERWRITE_CONTRECORD = 0x0008;
const SHORT_HEADER = 24;
const LONG_HEADER = 40;
const RECORD_HEADER = 24;
/** offsetof(XLogRecord, xl_crc): the CRC covers the data after the header, then the header up to it. */
const CRC_OFFSET = 20;
const CRC32C_POLYNOMIAL = 0x82f63b78;
/** The end of a reader whose end is not known yet: past any position. */
const UNKNOWN_END = (1n << 64n) - 1n;
/**
 * Records up to this size get their CRC from crc-32 (plain JavaScript: no call into WebAssembly,
 * about 0.3 µs for a small record); larger ones (full-page images) from hash-wasm (twice as fast
 * per byte). Most records of an OLTP load are small: the CRC was half the reading time.
 */
const SMALL_RECORD = 1024;
const crc32cJs = CRC32C.buf;
/** XLogRecordMaxSize. */
const MAX_RECORD = 1020 * 1024 * 1024;

const BLOCK_ID_MAX = 32;
const BLOCK_ID_DATA_SHORT = 255;
const BLOCK_ID_DATA_LONG = 254;
const BLOCK_ID_ORIGIN = 253;
const BLOCK_ID_TOPLEVEL_XID = 252;
const BKPBLOCK_FORK_MASK = 0x0f;
const BKPBLOCK_HAS_IMAGE = 0x10;
const BKPBLOCK_SAME_REL = 0x80;
const BKPIMAGE_HAS_HOLE = 0x01;

const RM_XLOG_ID = 0;
const RM_SMGR_ID = 2;
const RM_DBASE_ID = 4;
const XLOG_SWITCH = 0x40;
const XLOG_PARAMETER_CHANGE = 0x60;
const XLOG_END_OF_RECOVERY = 0x90;
const XLOG_OVERWRITE_CONTRECORD = 0xd0;
const WAL_LEVEL_REPLICA = 1;
const XLOG_SMGR_CREATE = 0x10;
const XLOG_SMGR_TRUNCATE = 0x20;

/** xlp_magic of each PostgreSQL major version this reader knows (XLOG_PAGE_MAGIC). */
export const WAL_PAGE_MAGIC: Readonly<Record<number, number>> = { 12: 0xd101, 13: 0xd106, 14: 0xd10d, 15: 0xd110, 16: 0xd113, 17: 0xd116, 18: 0xd118 };
const KNOWN_MAGIC = new Map(Object.entries(WAL_PAGE_MAGIC).map(([v, m]) => [m, Number(v)]));

const maxAlign = (n: number): number => (n + 7) & ~7;

export interface BlockRef {
  spc: number;
  db: number;
  rel: number;
  fork: number;
  block: number;
}

export interface WalRecord {
  lsn: bigint;
  rmid: number;
  info: number;
  blocks: BlockRef[];
  mainData: Buffer;
}

/** A relation: "spc/db/rel" (tablespace, database and relfilenode OIDs). */
export const relationKey = (spc: number, db: number, rel: number): string => `${spc}/${db}/${rel}`;
/** A fork of a relation: "spc/db/rel/fork". */
export const forkKey = (spc: number, db: number, rel: number, fork: number): string => `${spc}/${db}/${rel}/${fork}`;

export interface BlockChanges {
  /** Blocks referenced by a record, per fork ("spc/db/rel/fork"). */
  blocks: Map<string, Set<number>>;
  /** Relations created or truncated ("spc/db/rel"): every fork read whole. */
  wholeRelations: Set<string>;
  /** Databases created, copied or dropped (OID): every file of theirs read whole. */
  wholeDatabases: Set<number>;
  /** Why these changes cannot be relied on (null: they can). */
  unusable: string | null;
  records: number;
  /** The first position not read (the end asked for, once reached). */
  readTo: bigint;
}

/** Decode one record's block headers (its payloads are skipped); throws a message on a malformed record. */
export function decodeRecord(rec: Buffer, lsn: bigint, pg15: boolean): WalRecord {
  const totLen = rec.readUInt32LE(0);
  const malformed = (what: string): never => {
    throw new Error(`the WAL record at ${formatLsn(lsn)} is malformed (${what})`);
  };
  if (totLen !== rec.length || totLen < RECORD_HEADER) malformed('length');
  let pos = RECORD_HEADER;
  let remaining = totLen - RECORD_HEADER;
  let dataTotal = 0;
  let mainLen = 0;
  const blocks: BlockRef[] = [];
  let rel: [number, number, number] | null = null;
  const need = (n: number): void => {
    if (remaining < n) malformed('block headers');
  };
  while (remaining > dataTotal) {
    need(1);
    const id = rec[pos] as number;
    pos += 1;
    remaining -= 1;
    if (id === BLOCK_ID_DATA_SHORT) {
      need(1);
      mainLen = rec[pos] as number;
      pos += 1;
      remaining -= 1;
      dataTotal += mainLen;
      break;
    }
    if (id === BLOCK_ID_DATA_LONG) {
      need(4);
      mainLen = rec.readUInt32LE(pos);
      pos += 4;
      remaining -= 4;
      dataTotal += mainLen;
      break;
    }
    if (id === BLOCK_ID_ORIGIN || id === BLOCK_ID_TOPLEVEL_XID) {
      const n = id === BLOCK_ID_ORIGIN ? 2 : 4;
      need(n);
      pos += n;
      remaining -= n;
      continue;
    }
    if (id > BLOCK_ID_MAX) malformed(`block id ${id}`);
    need(3);
    const flags = rec[pos] as number;
    dataTotal += rec.readUInt16LE(pos + 1);
    pos += 3;
    remaining -= 3;
    if (flags & BKPBLOCK_HAS_IMAGE) {
      need(5);
      dataTotal += rec.readUInt16LE(pos);
      const bimgInfo = rec[pos + 4] as number;
      pos += 5;
      remaining -= 5;
      // The hole's length is stored only for a compressed image (else the image says it).
      const compressed = pg15 ? (bimgInfo & 0x1c) !== 0 : (bimgInfo & 0x02) !== 0;
      if (bimgInfo & BKPIMAGE_HAS_HOLE && compressed) {
        need(2);
        pos += 2;
        remaining -= 2;
      }
    }
    if (!(flags & BKPBLOCK_SAME_REL)) {
      need(12);
      rel = [rec.readUInt32LE(pos), rec.readUInt32LE(pos + 4), rec.readUInt32LE(pos + 8)];
      pos += 12;
      remaining -= 12;
    } else if (!rel) malformed('SAME_REL without a previous relation');
    need(4);
    const [spc, db, relNumber] = rel as [number, number, number];
    blocks.push({ spc, db, rel: relNumber, fork: flags & BKPBLOCK_FORK_MASK, block: rec.readUInt32LE(pos) });
    pos += 4;
    remaining -= 4;
  }
  if (remaining !== dataTotal) malformed('data lengths');
  return { lsn, rmid: rec[17] as number, info: rec[16] as number, blocks, mainData: rec.subarray(totLen - mainLen) };
}

/** A record being gathered across pages. */
interface Pending {
  lsn: bigint;
  buf: Buffer;
  have: number;
}

/**
 * Reads the records of WAL segments fed in order, from the segment holding `start` until the
 * first record at or past `end`, and gathers the blocks they change (BlockChanges). Records
 * before `start` in its segment are gathered too: more blocks, never fewer.
 */
export class BlockChangeReader {
  private readonly changes: BlockChanges = { blocks: new Map(), wholeRelations: new Set(), wholeDatabases: new Set(), unusable: null, records: 0, readTo: 0n };
  private pending: Pending | null = null;
  private magic = 0;
  private pg15 = false;
  private tli = 0;
  private sysid = 0n;
  private segSize = 0;
  private pageSize = 0;
  /** The next segment expected (its first byte's position). */
  private nextSegment: bigint | null = null;
  private prevRecord: bigint | null = null;
  private done = false;
  /** An XLOG_SWITCH was read: the rest of its segment holds no record. */
  private switched = false;

  private constructor(
    readonly start: bigint,
    private endAt: bigint,
    private readonly crc: IHasher,
  ) {
    this.changes.readTo = start;
  }

  /** `end` null: not known yet (setEnd); segments are read whole until then. */
  static async create(start: bigint, end: bigint | null): Promise<BlockChangeReader> {
    return new BlockChangeReader(start, end ?? UNKNOWN_END, await createCRC32(CRC32C_POLYNOMIAL));
  }

  private endText(): string {
    return this.endAt === UNKNOWN_END ? 'the position asked for' : formatLsn(this.endAt);
  }

  /**
   * Where to stop, once known (created without it). Records already read past it stay
   * gathered: more blocks, never fewer.
   */
  setEnd(end: bigint): void {
    if (this.endAt !== UNKNOWN_END) throw new Error('the end of the WAL to read is already set');
    this.endAt = end;
    if (this.changes.readTo >= end) {
      this.changes.readTo = end;
      this.done = true;
    }
  }

  /** Everything up to `end` was read (or the result is unusable): no more segments needed. */
  get finished(): boolean {
    return this.done;
  }

  private fail(reason: string): void {
    this.changes.unusable ??= reason;
    this.done = true;
  }

  /**
   * The segment starting at position `segStart` (a whole segment; a streamed .partial file is one
   * too, zeros past what was written). The first must hold `start`; then each the next one.
   */
  feedSegment(seg: Buffer, segStart: bigint): void {
    if (this.done) return;
    try {
      this.readSegment(seg, segStart);
    } catch (err) {
      this.fail((err as Error).message);
    }
  }

  private readSegment(seg: Buffer, segStart: bigint): void {
    if (this.nextSegment !== null && segStart !== this.nextSegment) {
      throw new Error(`WAL from ${formatLsn(this.nextSegment)} is missing (the next segment given starts at ${formatLsn(segStart)})`);
    }
    this.switched = false;
    this.readLongHeader(seg, segStart);
    if (this.nextSegment === null && !(this.start >= segStart && this.start < segStart + BigInt(this.segSize))) {
      throw new Error(`the first WAL segment given (at ${formatLsn(segStart)}) does not hold ${formatLsn(this.start)}`);
    }
    if (seg.length !== this.segSize) throw new Error(`a WAL segment at ${formatLsn(segStart)} has ${seg.length} bytes, not ${this.segSize}`);
    this.nextSegment = segStart + BigInt(this.segSize);
    for (let off = 0; off < seg.length && !this.done && !this.switched; off += this.pageSize) {
      this.readPage(seg.subarray(off, off + this.pageSize), segStart + BigInt(off));
    }
    if (this.switched) {
      // After a switch record the segment holds nothing more: read to its end.
      this.changes.readTo = this.nextSegment;
      if (this.endAt <= this.nextSegment) {
        this.changes.readTo = this.endAt;
        this.done = true;
      }
    }
  }

  private readLongHeader(seg: Buffer, segStart: bigint): void {
    const h = parseSegmentHeader(seg);
    if (!h || h.pageAddr !== segStart) throw new Error(`the file given for the WAL segment at ${formatLsn(segStart)} is not that segment`);
    const version = KNOWN_MAGIC.get(h.magic);
    if (version === undefined || seg.readUInt16LE(0) !== h.magic) {
      throw new Error(`the WAL segment at ${formatLsn(segStart)} is of a PostgreSQL version or byte order this reader does not know (page magic 0x${h.magic.toString(16)})`);
    }
    if (this.magic === 0) {
      this.magic = h.magic;
      this.pg15 = version >= 15;
      this.sysid = h.systemId;
      this.segSize = h.segSize;
      this.pageSize = h.blockSize;
      this.tli = h.timeline;
    } else if (h.magic !== this.magic || h.systemId !== this.sysid) {
      throw new Error(`the WAL segment at ${formatLsn(segStart)} is of another cluster or PostgreSQL version`);
    }
  }

  private readPage(page: Buffer, pageLsn: bigint): void {
    const info = page.readUInt16LE(2);
    const valid = page.readUInt16LE(0) === this.magic && page.readBigUInt64LE(8) === pageLsn;
    if (!valid) {
      // Past the WAL written (zeros) or an older segment's page (recycled file).
      if (!this.pending && pageLsn >= this.endAt) {
        // Every record before it was read (an end on a page boundary: not one the WAL gives).
        this.changes.readTo = this.endAt;
        return void (this.done = true);
      }
      throw new Error(`the WAL ends at ${formatLsn(pageLsn)}, before ${this.endText()}`);
    }
    if (page.readUInt32LE(4) !== this.tli) throw new Error(`the WAL switches from timeline ${this.tli} to ${page.readUInt32LE(4)} at ${formatLsn(pageLsn)}`);
    if (info & XLP_FIRST_IS_OVERWRITE_CONTRECORD) throw new Error(`a WAL record continued at ${formatLsn(pageLsn)} was overwritten (after a crash)`);
    let pos = info & XLP_LONG_HEADER ? LONG_HEADER : SHORT_HEADER;
    const remLen = page.readUInt32LE(16);
    if (this.pending) {
      const p = this.pending;
      if (!(info & XLP_FIRST_IS_CONTRECORD) || remLen !== p.buf.length - p.have) throw new Error(`the WAL record at ${formatLsn(p.lsn)} is not continued at ${formatLsn(pageLsn)}`);
      const n = Math.min(remLen, page.length - pos);
      page.copy(p.buf, p.have, pos, pos + n);
      p.have += n;
      pos += n;
      if (p.have < p.buf.length) return;
      this.pending = null;
      this.record(p.buf, p.lsn);
      if (this.done || this.switched) return;
      pos = maxAlign(pos);
    } else if (info & XLP_FIRST_IS_CONTRECORD) {
      // The end of a record that started before what we read: skipped.
      if (remLen >= page.length - pos) return;
      pos = maxAlign(pos + remLen);
    }
    while (pos < page.length) {
      const lsn = pageLsn + BigInt(pos);
      if (lsn >= this.endAt) {
        this.changes.readTo = this.endAt;
        this.done = true;
        return;
      }
      const totLen = page.readUInt32LE(pos);
      if (totLen === 0) throw new Error(`the WAL ends at ${formatLsn(lsn)}, before ${this.endText()}`);
      if (totLen < RECORD_HEADER || totLen > MAX_RECORD) throw new Error(`the WAL record at ${formatLsn(lsn)} has an invalid length`);
      if (totLen > page.length - pos) {
        this.pending = { lsn, buf: Buffer.allocUnsafe(totLen), have: page.length - pos };
        page.copy(this.pending.buf, 0, pos);
        return;
      }
      this.record(page.subarray(pos, pos + totLen), lsn);
      if (this.done || this.switched) return;
      pos = maxAlign(pos + totLen);
    }
  }

  /** CRC-32C of a record: the data after the header, then the header up to the CRC field. */
  private recordCrc(rec: Buffer): number {
    if (rec.length <= SMALL_RECORD) return crc32cJs(rec.subarray(0, CRC_OFFSET), crc32cJs(rec.subarray(RECORD_HEADER))) >>> 0;
    this.crc.init();
    this.crc.update(rec.subarray(RECORD_HEADER));
    this.crc.update(rec.subarray(0, CRC_OFFSET));
    return parseInt(this.crc.digest('hex'), 16);
  }

  private record(rec: Buffer, lsn: bigint): void {
    if (this.recordCrc(rec) !== rec.readUInt32LE(CRC_OFFSET)) throw new Error(`the WAL record at ${formatLsn(lsn)} fails its CRC`);
    const prev = rec.readBigUInt64LE(8);
    if (this.prevRecord !== null && prev !== this.prevRecord) throw new Error(`the WAL record at ${formatLsn(lsn)} does not follow the one at ${formatLsn(this.prevRecord)}`);
    this.prevRecord = lsn;
    const r = decodeRecord(rec, lsn, this.pg15);
    this.gather(r);
    this.changes.readTo = lsn + BigInt(rec.length);
    if (r.rmid === RM_XLOG_ID && (r.info & 0xf0) === XLOG_SWITCH) this.switched = true;
  }

  /**
   * The forks of the last blocks gathered, with their sets and last block: records mostly follow
   * on the same few relations (a table and its indexes) and often on the same block.
   */
  private readonly recent: { spc: number; db: number; rel: number; fork: number; set: Set<number>; block: number }[] = [];

  private forkOf(b: BlockRef): { set: Set<number>; block: number } {
    const recent = this.recent;
    for (let i = 0; i < recent.length; i++) {
      const l = recent[i] as (typeof recent)[number];
      if (l.rel === b.rel && l.db === b.db && l.spc === b.spc && l.fork === b.fork) return l;
    }
    const key = forkKey(b.spc, b.db, b.rel, b.fork);
    let set = this.changes.blocks.get(key);
    if (!set) this.changes.blocks.set(key, (set = new Set()));
    const l = { spc: b.spc, db: b.db, rel: b.rel, fork: b.fork, set, block: -1 };
    if (recent.length >= 4) recent.pop();
    recent.unshift(l);
    return l;
  }

  private gather(r: WalRecord): void {
    const c = this.changes;
    c.records += 1;
    for (const b of r.blocks) {
      const l = this.forkOf(b);
      if (l.block !== b.block) {
        l.set.add(b.block);
        l.block = b.block;
      }
    }
    const kind = r.info & 0xf0;
    const main = r.mainData;
    // Before `start` (read only because they share its segment), records add blocks and nothing else.
    if (r.rmid === RM_XLOG_ID && r.lsn >= this.start) {
      // xl_parameter_change: wal_level is its sixth int; minimal skips the WAL of new relations.
      if (kind === XLOG_PARAMETER_CHANGE && (main.length < 24 || main.readInt32LE(20) < WAL_LEVEL_REPLICA)) throw new Error(`wal_level is minimal from ${formatLsn(r.lsn)}`);
      if (kind === XLOG_END_OF_RECOVERY || kind === XLOG_OVERWRITE_CONTRECORD) throw new Error(`the WAL records the end of a recovery at ${formatLsn(r.lsn)}`);
    } else if (r.rmid === RM_SMGR_ID) {
      // xl_smgr_create: RelFileNode, fork; xl_smgr_truncate: block, RelFileNode, flags.
      const at = kind === XLOG_SMGR_CREATE ? 0 : kind === XLOG_SMGR_TRUNCATE ? 4 : -1;
      if (at < 0 || main.length < at + 12) throw new Error(`the smgr record at ${formatLsn(r.lsn)} is not understood`);
      c.wholeRelations.add(relationKey(main.readUInt32LE(at), main.readUInt32LE(at + 4), main.readUInt32LE(at + 8)));
    } else if (r.rmid === RM_DBASE_ID) {
      // Every dbase record (create by copy or by WAL, drop) starts with the database's OID.
      if (main.length < 4) throw new Error(`the dbase record at ${formatLsn(r.lsn)} is not understood`);
      c.wholeDatabases.add(main.readUInt32LE(0));
    }
  }

  /** What was gathered; unusable unless every record up to `end` was read. */
  result(): BlockChanges {
    if (!this.changes.unusable && this.changes.readTo < this.endAt) {
      this.changes.unusable = `the WAL up to ${this.endText()} was not all read (read up to ${formatLsn(this.changes.readTo)})`;
    }
    return this.changes;
  }
}

/** Relation files in a data directory: PostgreSQL's names for them. */
export interface RelationFile {
  spc: number;
  db: number;
  rel: number;
  /** 0 main, 1 fsm, 2 vm, 3 init. */
  fork: number;
  /** The 1 GiB segment (.1, .2 ...; 0 for the first). */
  segment: number;
}

const FORKS: Readonly<Record<string, number>> = { '': 0, _fsm: 1, _vm: 2, _init: 3 };
const REL_NAME = /^([1-9][0-9]*)(_fsm|_vm|_init)?(?:\.([1-9][0-9]*))?$/;
const OID_NAME = /^[1-9][0-9]*$/;
const DEFAULTTABLESPACE_OID = 1663;
const GLOBALTABLESPACE_OID = 1664;

/**
 * The relation file a path of a data directory names (`base/DB/REL[_fork][.seg]`,
 * `global/REL...`, `pg_tblspc/SPC/PG_*_* /DB/REL...`), or null for any other file (temporary
 * relations `tNNN_NNN` included: they are not WAL-logged).
 */
export function relationFileOf(relPath: string): RelationFile | null {
  const parts = relPath.split('/');
  let spc: number;
  let db: number;
  let name: string;
  if (parts.length === 3 && parts[0] === 'base' && OID_NAME.test(parts[1] as string)) {
    [spc, db, name] = [DEFAULTTABLESPACE_OID, Number(parts[1]), parts[2] as string];
  } else if (parts.length === 2 && parts[0] === 'global') {
    [spc, db, name] = [GLOBALTABLESPACE_OID, 0, parts[1] as string];
  } else if (parts.length === 5 && parts[0] === 'pg_tblspc' && OID_NAME.test(parts[1] as string) && (parts[2] as string).startsWith('PG_') && OID_NAME.test(parts[3] as string)) {
    [spc, db, name] = [Number(parts[1]), Number(parts[3]), parts[4] as string];
  } else return null;
  const m = REL_NAME.exec(name);
  if (!m) return null;
  return { spc, db, rel: Number(m[1]), fork: FORKS[m[2] ?? ''] as number, segment: m[3] ? Number(m[3]) : 0 };
}
