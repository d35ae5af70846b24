/**
 * The WAL block-change reader (src/wal/block-changes.ts) on WAL laid out here as PostgreSQL lays
 * it out: records of any length across pages and segments (continuation pages, long and short
 * headers, a record header split between two pages), switch records, and the damage it must
 * refuse to vouch for (a bad CRC, a gap, another timeline, an overwritten continuation, WAL that
 * ends early). Real PostgreSQL WAL is read in test/integration/wal-block-changes.test.ts.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { createCRC32 } from 'hash-wasm';
import { WalChangeReading, type WalStart } from '../../src/agent/wal-guide.js';
import { serverPaths } from '../../src/catalog/server-dirs.js';
import { loadConfig, type ServerConfig } from '../../src/config/config.js';
import { walArchivePath } from '../../src/wal/archiver.js';
import { lsnToWal } from '../../src/wal/names.js';
import { BlockChangeReader, decodeRecord, forkKey, relationFileOf, relationKey, WAL_PAGE_MAGIC, type BlockRef } from '../../src/wal/block-changes.js';

const PAGE = 8192;
/** PostgreSQL's smallest segment (initdb --wal-segsize=1). */
const SEG = 128 * PAGE;
const MAGIC = WAL_PAGE_MAGIC[15] as number;
const crc = await createCRC32(0x82f63b78);

interface RecSpec {
  rmid: number;
  info: number;
  blocks: (BlockRef & { image?: number; data?: number; sameRel?: boolean })[];
  main: Buffer;
}

/** One record's bytes (xl_prev and CRC filled in by the layout). */
function encodeRecord(r: RecSpec, prev: bigint): Buffer {
  const heads: Buffer[] = [];
  const payload: Buffer[] = [];
  let last: string | null = null;
  for (const [i, b] of r.blocks.entries()) {
    const rel = relationKey(b.spc, b.db, b.rel);
    const same = b.sameRel !== false && last === rel;
    const image = b.image ?? 0;
    const data = b.data ?? 0;
    const flags = b.fork | (image ? 0x10 : 0) | (data ? 0x20 : 0) | (same ? 0x80 : 0);
    const h = Buffer.alloc(4 + (image ? 5 : 0) + (same ? 0 : 12) + 4);
    let o = h.writeUInt8(i, 0);
    o = h.writeUInt8(flags, o);
    o = h.writeUInt16LE(data, o);
    if (image) {
      o = h.writeUInt16LE(image, o);
      o = h.writeUInt16LE(0, o);
      o = h.writeUInt8(0x02, o); // BKPIMAGE_APPLY, no hole, not compressed
    }
    if (!same) {
      o = h.writeUInt32LE(b.spc, o);
      o = h.writeUInt32LE(b.db, o);
      o = h.writeUInt32LE(b.rel, o);
    }
    h.writeUInt32LE(b.block, o);
    heads.push(h);
    payload.push(Buffer.alloc(image, 0xaa), Buffer.alloc(data, 0xbb));
    last = rel;
  }
  if (r.main.length > 0) {
    const long = r.main.length > 255;
    const h = Buffer.alloc(long ? 5 : 2);
    h.writeUInt8(long ? 254 : 255, 0);
    if (long) h.writeUInt32LE(r.main.length, 1);
    else h.writeUInt8(r.main.length, 1);
    heads.push(h);
  }
  const body = Buffer.concat([...heads, ...payload, r.main]);
  const rec = Buffer.alloc(24 + body.length);
  rec.writeUInt32LE(rec.length, 0);
  rec.writeBigUInt64LE(prev, 8);
  rec.writeUInt8(r.info, 16);
  rec.writeUInt8(r.rmid, 17);
  body.copy(rec, 24);
  crc.init();
  crc.update(rec.subarray(24));
  crc.update(rec.subarray(0, 20));
  rec.writeUInt32LE(parseInt(crc.digest('hex'), 16), 20);
  return rec;
}

interface Laid {
  segments: Buffer[];
  /** Where each record starts. */
  lsns: bigint[];
  /** The first position after the last record. */
  end: bigint;
}

/**
 * Lay records out in segments of SEG bytes from position `base` (a segment start), as
 * PostgreSQL does: 8-byte aligned, page headers (long on a segment's first page), a record that
 * does not fit continued on the next pages with XLP_FIRST_IS_CONTRECORD and xlp_rem_len, the
 * rest of a segment left after a switch record (rmid 0, info 0x40).
 */
function layout(records: RecSpec[], base = 0x3000000n, tli = 1, sysid = 7n): Laid {
  const segs: Buffer[] = [];
  const lsns: bigint[] = [];
  let pos = 0; // offset from base
  const byteAt = (off: number): [Buffer, number] => {
    const s = Math.floor(off / SEG);
    while (segs.length <= s) segs.push(Buffer.alloc(SEG));
    return [segs[s] as Buffer, off % SEG];
  };
  const pageHeader = (off: number, info: number, remLen: number): number => {
    const [seg, o] = byteAt(off);
    const long = o === 0;
    seg.writeUInt16LE(MAGIC, o);
    seg.writeUInt16LE(info | (long ? 0x2 : 0), o + 2);
    seg.writeUInt32LE(tli, o + 4);
    seg.writeBigUInt64LE(base + BigInt(off), o + 8);
    seg.writeUInt32LE(remLen, o + 16);
    if (long) {
      seg.writeBigUInt64LE(sysid, o + 24);
      seg.writeUInt32LE(SEG, o + 32);
      seg.writeUInt32LE(PAGE, o + 36);
    }
    return off + (long ? 40 : 24);
  };
  let prev = 0n;
  pos = pageHeader(0, 0, 0);
  for (const r of records) {
    pos = (pos + 7) & ~7;
    if (pos % PAGE === 0) pos = pageHeader(pos, 0, 0);
    const lsn = base + BigInt(pos);
    lsns.push(lsn);
    const rec = encodeRecord(r, prev);
    prev = lsn;
    let done = 0;
    while (done < rec.length) {
      if (pos % PAGE === 0) pos = pageHeader(pos, 0x1, rec.length - done);
      const room = PAGE - (pos % PAGE);
      const n = Math.min(room, rec.length - done);
      const [seg, o] = byteAt(pos);
      rec.copy(seg, o, done, done + n);
      done += n;
      pos += n;
    }
    if (r.rmid === 0 && (r.info & 0xf0) === 0x40) {
      // The rest of the segment: pages with headers and nothing else.
      const segEnd = (Math.floor((pos - 1) / SEG) + 1) * SEG;
      for (let p = Math.ceil(pos / PAGE) * PAGE; p < segEnd; p += PAGE) pageHeader(p, 0, 0);
      pos = segEnd;
      pageHeader(pos, 0, 0);
      pos += 40;
    }
  }
  byteAt(pos); // the segment of the end exists
  return { segments: segs, lsns, end: base + BigInt((pos + 7) & ~7) };
}

async function read(laid: Laid, start: bigint, end: bigint, base = 0x3000000n, feed?: (r: BlockChangeReader) => void) {
  const r = await BlockChangeReader.create(start, end);
  if (feed) feed(r);
  else {
    const first = Number((start - base) / BigInt(SEG));
    for (let s = first; s < laid.segments.length && !r.finished; s++) r.feedSegment(laid.segments[s] as Buffer, base + BigInt(s * SEG));
  }
  return r.result();
}

const heapUpdate = (rel: number, block: number, extra: Partial<BlockRef & { image: number; data: number }> = {}): RecSpec => ({
  rmid: 10,
  info: 0x20,
  blocks: [{ spc: 1663, db: 5, rel, fork: 0, block, data: 30, ...extra }],
  main: Buffer.alloc(14),
});

describe('WAL block changes: records laid out across pages and segments', () => {
  it('gathers every block reference of every record, whatever their sizes (fast-check)', async () => {
    const block = fc.record({
      rel: fc.integer({ min: 16384, max: 16390 }),
      fork: fc.integer({ min: 0, max: 3 }),
      block: fc.integer({ min: 0, max: 200000 }),
      image: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 8192 })),
      data: fc.integer({ min: 0, max: 300 }),
    });
    const record = fc.record({
      blocks: fc.array(block, { maxLength: 4 }),
      main: fc.oneof(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 256, max: 30000 })),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(record, { minLength: 1, maxLength: 40 }), fc.nat(), fc.nat(), async (specs, a, b) => {
        const records: RecSpec[] = specs.map((s) => ({ rmid: 10, info: 0, blocks: s.blocks.map((x) => ({ spc: 1663, db: 5, ...x })), main: Buffer.alloc(s.main, 1) }));
        const laid = layout(records);
        // Start anywhere in the WAL; end at a record boundary (or the end) after it.
        const i = a % records.length;
        const j = i + (b % (records.length - i + 1));
        const start = laid.lsns[i] as bigint;
        const end = j < records.length ? (laid.lsns[j] as bigint) : laid.end;
        const got = await read(laid, start, end);
        assert.equal(got.unusable, null);
        // Expected: the records from the first that starts in start's segment, up to end.
        const segStart = start - ((start - 0x3000000n) % BigInt(SEG));
        const want = new Map<string, Set<number>>();
        records.forEach((r, k) => {
          const lsn = laid.lsns[k] as bigint;
          if (lsn < segStart || lsn >= end) return;
          for (const x of r.blocks) {
            const key = forkKey(x.spc, x.db, x.rel, x.fork);
            if (!want.has(key)) want.set(key, new Set());
            want.get(key)?.add(x.block);
          }
        });
        assert.deepEqual(got.blocks, want);
        assert.equal(got.readTo, end);
      }),
      { numRuns: 150 },
    );
  });

  it('reaches an end on a page boundary after a record that ends within the last bytes of a page (fast-check found it)', async () => {
    const records: RecSpec[] = [
      {
        rmid: 10,
        info: 0,
        blocks: [
          { spc: 1663, db: 5, rel: 16384, fork: 0, block: 0, data: 91 },
          { spc: 1663, db: 5, rel: 16385, fork: 0, block: 0, image: 7911, data: 46 },
        ],
        main: Buffer.alloc(26, 1),
      },
    ];
    const laid = layout(records);
    assert.equal(Number(laid.end % BigInt(PAGE)), 0, 'the end is on a page boundary');
    const got = await read(laid, laid.lsns[0] as bigint, laid.end);
    assert.equal(got.unusable, null);
    assert.equal(got.readTo, laid.end);
  });

  it('reads a record whose header is split between two pages', async () => {
    // Fill the first page up to 8 bytes short of its end (a record header is 24 bytes).
    const first = 8192 - 40 - 8;
    const records: RecSpec[] = [{ rmid: 10, info: 0, blocks: [], main: Buffer.alloc(first - 24 - 5) }, heapUpdate(16384, 9)];
    const laid = layout(records);
    assert.equal(Number(laid.lsns[1] as bigint) % PAGE, PAGE - 8);
    const got = await read(laid, laid.lsns[0] as bigint, laid.end);
    assert.equal(got.unusable, null);
    assert.deepEqual([...(got.blocks.get(forkKey(1663, 5, 16384, 0)) ?? [])], [9]);
  });

  it('skips the rest of a segment after a switch record, and the continuation it starts in', async () => {
    const records: RecSpec[] = [heapUpdate(16384, 1), { rmid: 0, info: 0x40, blocks: [], main: Buffer.alloc(0) }, heapUpdate(16384, 2), { rmid: 10, info: 0, blocks: [], main: Buffer.alloc(3 * PAGE) }, heapUpdate(16384, 3)];
    const laid = layout(records);
    const got = await read(laid, laid.lsns[0] as bigint, laid.end);
    assert.equal(got.unusable, null);
    assert.deepEqual([...(got.blocks.get(forkKey(1663, 5, 16384, 0)) ?? [])].sort(), [1, 2, 3]);
    // Starting in the second segment: its first record is read; an end right after the switch is reached.
    const second = await read(laid, laid.lsns[2] as bigint, laid.end);
    assert.deepEqual([...(second.blocks.get(forkKey(1663, 5, 16384, 0)) ?? [])].sort(), [2, 3]);
    const toSwitch = await read(laid, laid.lsns[0] as bigint, laid.lsns[2] as bigint);
    assert.equal(toSwitch.unusable, null);
  });

  it('starts in a segment whose first page continues a record: the continuation is skipped', async () => {
    const records: RecSpec[] = [heapUpdate(16384, 1), { rmid: 10, info: 0, blocks: [], main: Buffer.alloc(SEG) }, heapUpdate(16384, 4)];
    const laid = layout(records);
    const start = laid.lsns[2] as bigint;
    const got = await read(laid, start, laid.end, 0x3000000n, (r) => {
      const s = Number((start - 0x3000000n) / BigInt(SEG));
      for (let k = s; k < laid.segments.length; k++) r.feedSegment(laid.segments[k] as Buffer, 0x3000000n + BigInt(k * SEG));
    });
    assert.equal(got.unusable, null);
    assert.deepEqual([...(got.blocks.get(forkKey(1663, 5, 16384, 0)) ?? [])], [4]);
  });

  it('gathers relations created or truncated and databases created or dropped', async () => {
    const create = Buffer.alloc(16);
    [1663, 5, 16500, 0].forEach((v, k) => create.writeUInt32LE(v, k * 4));
    const truncate = Buffer.alloc(20);
    [0, 1663, 5, 16501, 3].forEach((v, k) => truncate.writeUInt32LE(v, k * 4));
    const dbase = Buffer.alloc(16);
    [16600, 1663, 1, 1663].forEach((v, k) => dbase.writeUInt32LE(v, k * 4));
    const laid = layout([
      { rmid: 2, info: 0x10, blocks: [], main: create },
      { rmid: 2, info: 0x20, blocks: [], main: truncate },
      { rmid: 4, info: 0x00, blocks: [], main: dbase },
    ]);
    const got = await read(laid, laid.lsns[0] as bigint, laid.end);
    assert.equal(got.unusable, null);
    assert.deepEqual([...got.wholeRelations].sort(), ['1663/5/16500', '1663/5/16501']);
    assert.deepEqual([...got.wholeDatabases], [16600]);
    assert.equal(got.records, 3);
  });
});

describe('WAL block changes: what it refuses to vouch for', () => {
  // Over three segments: full-page images, and main data of 50 kB in each record.
  const records: RecSpec[] = Array.from({ length: 70 }, (_, k) => ({ ...heapUpdate(16384, k, { image: k % 3 === 0 ? 8000 : 0 }), main: Buffer.alloc(50000, k) }));

  it('a record whose CRC fails', async () => {
    const laid = layout(records);
    const seg = laid.segments[0] as Buffer;
    const at = Number((laid.lsns[5] as bigint) - 0x3000000n) + 30;
    seg[at] = (seg[at] ?? 0) ^ 1;
    const got = await read(laid, laid.lsns[0] as bigint, laid.end);
    assert.match(got.unusable ?? '', /fails its CRC/);
  });

  it('a missing segment, WAL that ends before the end asked for, a first segment that does not hold the start', async () => {
    const laid = layout(records);
    assert.ok(laid.segments.length >= 3, `${laid.segments.length} segments`);
    const gap = await read(laid, laid.lsns[0] as bigint, laid.end, 0x3000000n, (r) => {
      r.feedSegment(laid.segments[0] as Buffer, 0x3000000n);
      r.feedSegment(laid.segments[2] as Buffer, 0x3000000n + BigInt(2 * SEG));
    });
    assert.match(gap.unusable ?? '', /is missing/);
    const short = await read(laid, laid.lsns[0] as bigint, laid.end + 100000n);
    assert.match(short.unusable ?? '', /the WAL ends at/);
    const notFed = await read(laid, laid.lsns[0] as bigint, laid.end, 0x3000000n, (r) => r.feedSegment(laid.segments[0] as Buffer, 0x3000000n));
    assert.match(notFed.unusable ?? '', /was not all read/);
    const wrong = await read(laid, laid.end, laid.end + 10n, 0x3000000n, (r) => r.feedSegment(laid.segments[0] as Buffer, 0x3000000n));
    assert.match(wrong.unusable ?? '', /does not hold/);
  });

  it('another timeline, another cluster, an unknown version, an overwritten continuation, wal_level minimal, an end of recovery', async () => {
    const laid = layout(records);
    const other = layout(records, 0x3000000n, 2);
    const tli = await read(laid, laid.lsns[0] as bigint, laid.end, 0x3000000n, (r) => {
      r.feedSegment(laid.segments[0] as Buffer, 0x3000000n);
      r.feedSegment(other.segments[1] as Buffer, 0x3000000n + BigInt(SEG));
    });
    assert.match(tli.unusable ?? '', /switches from timeline 1 to 2/);
    const cluster = layout(records, 0x3000000n, 1, 8n);
    const sys = await read(laid, laid.lsns[0] as bigint, laid.end, 0x3000000n, (r) => {
      r.feedSegment(laid.segments[0] as Buffer, 0x3000000n);
      r.feedSegment(cluster.segments[1] as Buffer, 0x3000000n + BigInt(SEG));
    });
    assert.match(sys.unusable ?? '', /another cluster/);
    const unknown = layout(records);
    (unknown.segments[0] as Buffer).writeUInt16LE(0xd098, 0);
    assert.match((await read(unknown, unknown.lsns[0] as bigint, unknown.end)).unusable ?? '', /does not know/);
    // A file that is another segment (a recycled one, or one given at the wrong position).
    const misplaced = await read(laid, laid.lsns[0] as bigint, laid.end, 0x3000000n, (r) => {
      r.feedSegment(laid.segments[0] as Buffer, 0x3000000n);
      r.feedSegment(laid.segments[2] as Buffer, 0x3000000n + BigInt(SEG));
    });
    assert.match(misplaced.unusable ?? '', /is not that segment/);
    const over = layout(records);
    const seg1 = over.segments[1] as Buffer;
    seg1.writeUInt16LE(seg1.readUInt16LE(2) | 0x8, 2);
    assert.match((await read(over, over.lsns[0] as bigint, over.end)).unusable ?? '', /was overwritten/);
    const params = (walLevel: number) => {
      const b = Buffer.alloc(28);
      b.writeInt32LE(walLevel, 20);
      return b;
    };
    for (const [info, main, what] of [
      [0x60, params(0), /wal_level is minimal from/],
      [0x90, Buffer.alloc(16), /end of a recovery/],
    ] as const) {
      const l = layout([heapUpdate(16384, 1), { rmid: 0, info, blocks: [], main }, heapUpdate(16384, 2)]);
      assert.match((await read(l, l.lsns[0] as bigint, l.end)).unusable ?? '', what);
      // Before the start (in its segment), the same record changes nothing.
      assert.equal((await read(l, l.lsns[2] as bigint, l.end)).unusable, null);
    }
    // Other parameters changed (max_connections ...), wal_level still replica or logical: usable.
    for (const level of [1, 2]) {
      const l = layout([heapUpdate(16384, 1), { rmid: 0, info: 0x60, blocks: [], main: params(level) }, heapUpdate(16384, 2)]);
      assert.equal((await read(l, l.lsns[0] as bigint, l.end)).unusable, null);
    }
  });

  it('malformed block headers', () => {
    const rec = encodeRecord(heapUpdate(16384, 1), 0n);
    assert.deepEqual(decodeRecord(rec, 0n, true).blocks, [{ spc: 1663, db: 5, rel: 16384, fork: 0, block: 1 }]);
    const bad = Buffer.from(rec);
    bad[24] = 40; // a block id above 32
    assert.throws(() => decodeRecord(bad, 0n, true), /malformed \(block id 40\)/);
    const same = Buffer.from(rec);
    same[25] = (same[25] ?? 0) | 0x80; // SAME_REL on the first block
    assert.throws(() => decodeRecord(same, 0n, true), /malformed/);
    assert.throws(() => decodeRecord(rec.subarray(0, 30), 0n, true), /malformed \(length\)/);
  });
});

describe('relation files of a data directory', () => {
  it('names tablespace, database, relation, fork and segment; anything else is null', () => {
    assert.deepEqual(relationFileOf('base/5/16384'), { spc: 1663, db: 5, rel: 16384, fork: 0, segment: 0 });
    assert.deepEqual(relationFileOf('base/5/16384.2'), { spc: 1663, db: 5, rel: 16384, fork: 0, segment: 2 });
    assert.deepEqual(relationFileOf('base/5/16384_vm'), { spc: 1663, db: 5, rel: 16384, fork: 2, segment: 0 });
    assert.deepEqual(relationFileOf('base/5/16384_fsm.1'), { spc: 1663, db: 5, rel: 16384, fork: 1, segment: 1 });
    assert.deepEqual(relationFileOf('base/5/16384_init'), { spc: 1663, db: 5, rel: 16384, fork: 3, segment: 0 });
    assert.deepEqual(relationFileOf('global/1262'), { spc: 1664, db: 0, rel: 1262, fork: 0, segment: 0 });
    assert.deepEqual(relationFileOf('pg_tblspc/16390/PG_15_202209061/5/16400.1'), { spc: 16390, db: 5, rel: 16400, fork: 0, segment: 1 });
    for (const other of ['base/5/t3_16384', 'base/5/pg_filenode.map', 'base/5/PG_VERSION', 'global/pg_control', 'base/5/016384', 'base/5/16384.0', 'pg_wal/000000010000000000000001', 'base/5/16384_xx', 'base/pgsql_tmp/x', 'pg_tblspc/16390/5/16400']) {
      assert.equal(relationFileOf(other), null, other);
    }
  });
});

/** Read the WAL of `srv` from `r.from` to `r.to` (started, then finished at once). */
async function readWalChanges(srv: ServerConfig, r: WalStart & { to: bigint; waitMs: number }) {
  return (await WalChangeReading.start(srv, r)).finish(r.to, r.waitMs);
}

describe('WalChangeReading: the WAL between two backup starts, from a server\'s archive, incoming and streaming directories', () => {
  const base = 0x3000000n;
  const records = Array.from({ length: 400 }, (_, i) => heapUpdate(16384 + (i % 3), i * 7, { image: 8192 }));
  const laid = layout(records, base);
  const from = laid.lsns[2] as bigint;
  const to = laid.lsns[390] as bigint;
  const name = (i: number) => lsnToWal(base + BigInt(i * SEG), 1, SEG);

  /** A server whose WAL directories hold segment i as `where[i]` (absent: not on this host). */
  function server(where: ('wals-gzip' | 'incoming' | 'partial' | 'partial-cut' | null)[], streaming = true): { srv: ServerConfig; root: string } {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'wal-guide-read-'));
    const conf = path.join(root, 'barman.conf');
    fs.writeFileSync(conf, ['[barman]', `barman_home = ${root}/home`, `barman_user = ${os.userInfo().username}`, '', '[pg]', 'conninfo = host=127.0.0.1', 'backup_method = rsync', 'archiver = on', `streaming_archiver = ${streaming ? 'on' : 'off'}`, 'slot_name = barman', ''].join('\n'));
    const srv = loadConfig(conf).servers.get('pg') as ServerConfig;
    const p = serverPaths(srv);
    fs.mkdirSync(p.incomingDir, { recursive: true });
    fs.mkdirSync(p.streamingDir, { recursive: true });
    where.forEach((w, i) => {
      const seg = laid.segments[i] as Buffer;
      if (w === 'wals-gzip') {
        const f = walArchivePath(srv, name(i));
        fs.mkdirSync(path.dirname(f), { recursive: true });
        fs.writeFileSync(f, zlib.gzipSync(seg));
      } else if (w === 'incoming') fs.writeFileSync(path.join(p.incomingDir, name(i)), seg);
      else if (w === 'partial') fs.writeFileSync(path.join(p.streamingDir, `${name(i)}.partial`), seg);
      else if (w === 'partial-cut') {
        // Streamed up to a page before `to`: zeros after, as pg_receivewal leaves a .partial.
        const cut = Buffer.alloc(SEG);
        const upTo = Number((to - base) % BigInt(SEG)) - 2 * PAGE;
        seg.copy(cut, 0, 0, Math.max(0, upTo - (upTo % PAGE)));
        fs.writeFileSync(path.join(p.streamingDir, `${name(i)}.partial`), cut);
      }
    });
    return { srv, root };
  }
  const range = { from, timeline: 1, segSize: SEG, to, waitMs: 0 };
  const segs = laid.segments.length;
  assert.ok(segs >= 3, `the records span ${segs} segments`);
  const lastIndex = Number((to - base) / BigInt(SEG));
  const kinds = (last: 'partial' | 'partial-cut' | 'incoming' | null, gap = -1) =>
    Array.from({ length: lastIndex + 1 }, (_, i) => (i === gap ? null : i === lastIndex ? last : i % 2 === 0 ? ('wals-gzip' as const) : ('incoming' as const)));

  it('reads the archived (compressed), incoming and streamed (.partial) segments: the blocks of the records between the two starts', async () => {
    const { srv, root } = server(kinds('partial'));
    try {
      const c = await readWalChanges(srv, range);
      assert.equal(c.unusable, null);
      // From the start of the segment that holds `from` (records before it too: more is safe).
      assert.equal(c.records, 390);
      const want = new Map<string, Set<number>>();
      for (let i = 0; i < 390; i++) {
        const b = (records[i] as RecSpec).blocks[0] as BlockRef;
        const k = forkKey(b.spc, b.db, b.rel, b.fork);
        if (!want.has(k)) want.set(k, new Set());
        want.get(k)?.add(b.block);
      }
      assert.deepEqual(c.blocks, want);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it('unusable, with the reason: a segment missing, the last one not streamed far enough in time, a backup starting before its basis', async () => {
    for (const [where, reason] of [
      [kinds('partial', 1), /WAL file 0000000100000000000000(31|32) is not on this host$/],
      [kinds(null), /is not on this host \(streaming_archiver = on/],
      [kinds('partial-cut'), /ends at|not all read/],
    ] as const) {
      const { srv, root } = server([...where]);
      try {
        const c = await readWalChanges(srv, range);
        assert.match(c.unusable ?? '', reason);
      } finally {
        fs.rmSync(root, { recursive: true, force: true });
      }
    }
    const { srv, root } = server(kinds('partial'));
    try {
      assert.match((await readWalChanges(srv, { ...range, from: to, to: from })).unusable ?? '', /before its basis/);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it('reads the segments already here before the end is known, then the rest; records read past the end stay gathered', async () => {
    // All but the last segment here when the reading starts; the last one streamed later.
    const { srv, root } = server(kinds(null));
    try {
      const reading = await WalChangeReading.start(srv, range);
      await new Promise((resolve) => setTimeout(resolve, 200));
      fs.writeFileSync(path.join(serverPaths(srv).streamingDir, `${name(lastIndex)}.partial`), laid.segments[lastIndex] as Buffer);
      const c = await reading.finish(to, 0);
      assert.equal(c.unusable, null);
      assert.equal(c.records, 390);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
    // The segment holding the end complete and here: read whole before the end is known.
    const mid = laid.lsns.findIndex((l) => l >= base + BigInt((lastIndex - 1) * SEG) + 100n);
    const toMid = laid.lsns[mid] as bigint;
    const all = server(kinds('incoming').slice(0, lastIndex));
    try {
      const reading = await WalChangeReading.start(all.srv, range);
      await new Promise((resolve) => setTimeout(resolve, 300));
      const c = await reading.finish(toMid, 0);
      assert.equal(c.unusable, null);
      assert.ok(c.records > mid, `${c.records} records: the ones after the end too`);
      assert.equal(c.readTo, toMid);
    } finally {
      fs.rmSync(all.root, { recursive: true, force: true });
    }
  });

  it('waits for the streamed segment to reach the backup start', async () => {
    const { srv, root } = server(kinds('partial-cut'));
    try {
      const partial = path.join(serverPaths(srv).streamingDir, `${name(lastIndex)}.partial`);
      setTimeout(() => fs.writeFileSync(partial, laid.segments[lastIndex] as Buffer), 300);
      const c = await readWalChanges(srv, { ...range, waitMs: 5000 });
      assert.equal(c.unusable, null);
      assert.equal(c.records, 390);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
    // A segment before the last one still a .partial (its end not received yet): its complete
    // file is waited for.
    const before = server(kinds('partial'));
    try {
      const dir = serverPaths(before.srv).streamingDir;
      const k = lastIndex - 1;
      const archived = walArchivePath(before.srv, name(k));
      fs.rmSync(archived, { force: true });
      fs.rmSync(path.join(serverPaths(before.srv).incomingDir, name(k)), { force: true });
      fs.writeFileSync(path.join(dir, `${name(k)}.partial`), Buffer.alloc(SEG));
      setTimeout(() => {
        fs.writeFileSync(path.join(dir, name(k)), laid.segments[k] as Buffer);
        fs.rmSync(path.join(dir, `${name(k)}.partial`));
      }, 300);
      const c = await readWalChanges(before.srv, { ...range, waitMs: 5000 });
      assert.equal(c.unusable, null);
    } finally {
      fs.rmSync(before.root, { recursive: true, force: true });
    }
    // Without streaming_archiver, nothing brings the segment being written: not waited for.
    const archiving = server(kinds(null), false);
    try {
      const t0 = Date.now();
      assert.match((await readWalChanges(archiving.srv, { ...range, waitMs: 5000 })).unusable ?? '', /is not on this host/);
      assert.ok(Date.now() - t0 < 2000, 'not waited for');
    } finally {
      fs.rmSync(archiving.root, { recursive: true, force: true });
    }
    // Not there at all yet (pg_receivewal has not opened it): waited for too.
    const late = server(kinds(null));
    try {
      const partial = path.join(serverPaths(late.srv).streamingDir, `${name(lastIndex)}.partial`);
      setTimeout(() => fs.writeFileSync(partial, laid.segments[lastIndex] as Buffer), 300);
      const c = await readWalChanges(late.srv, { ...range, waitMs: 5000 });
      assert.equal(c.unusable, null);
    } finally {
      fs.rmSync(late.root, { recursive: true, force: true });
    }
  });
});
