/**
 * Change tracking for agent incrementals: which pages of a file the WAL's block changes say to
 * read (src/agent/wal-guide.ts: guidedRead), the ranges' wire encoding, and the agent's side of
 * a READ_PAGES (serve-read.ts: serveReadPages) on real files: the listed pages, then every page
 * past the basis copy's end, each with its hash, and the size where the read ended. The WAL
 * itself, with real PostgreSQL, is read in test/integration/agent-backup.test.ts.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Decoder, Encoder } from '../../src/agent/codec.js';
import { parseFaults } from '../../src/agent/faults.js';
import { createHash } from 'node:crypto';
import { HashThread, hashFile } from '../../src/agent/hash-thread.js';
import { FILL_PAGES, PAGE_SIZE, PageHasher } from '../../src/agent/pages.js';
import { FileReceiver, type Clone, type FillGaps, type ShaOf } from '../../src/agent/receive.js';
import { FrameReader, FrameWriter, ProtocolError, T, decodePages, decodeRanges, encodeRanges, type PageRange } from '../../src/agent/protocol.js';
import { READ_CHUNK, serveReadPages, type ReadEnd } from '../../src/agent/serve-read.js';
import { MAX_TRACKED_SHARE, guidedRead, unloggedRelationOf, type WalGuide } from '../../src/agent/wal-guide.js';
import { forkKey, relationKey, type BlockChanges } from '../../src/wal/block-changes.js';

const SEG = 131072;

function guideOf(blocks: Record<string, number[]>, extra: Partial<BlockChanges> = {}, unlogged: string[] = []): WalGuide {
  const changes: BlockChanges = {
    blocks: new Map(Object.entries(blocks).map(([k, v]) => [k, new Set(v)])),
    wholeRelations: new Set(),
    wholeDatabases: new Set(),
    unusable: null,
    records: 1,
    readTo: 0n,
    ...extra,
  };
  return { changes, segmentBlocks: SEG, unlogged: new Set(unlogged) };
}

describe('guidedRead: what the WAL says to read of a file', () => {
  const main = forkKey(1663, 5, 16384, 0);

  it('lists the changed pages below the basis end as ranges, and reads from the basis end on', () => {
    const g = guideOf({ [main]: [7, 3, 4, 5, 100, 99, 250, 1] });
    assert.deepEqual(guidedRead('base/5/16384', 200 * PAGE_SIZE, g), {
      ranges: [
        [1, 1],
        [3, 3],
        [7, 1],
        [99, 2],
      ],
      from: 200,
    });
    // No change at all: nothing listed, only what is past the basis end.
    assert.deepEqual(guidedRead('base/5/16385', 10 * PAGE_SIZE, g), { ranges: [], from: 10 });
  });

  it('maps blocks to the segment file that holds them (.1, .2)', () => {
    const g = guideOf({ [main]: [5, SEG + 2, SEG + 3, 2 * SEG + 9, SEG - 1] });
    assert.deepEqual(guidedRead('base/5/16384', SEG * PAGE_SIZE, g)?.ranges, [
      [5, 1],
      [SEG - 1, 1],
    ]);
    assert.deepEqual(guidedRead('base/5/16384.1', SEG * PAGE_SIZE, g)?.ranges, [[2, 2]]);
    assert.deepEqual(guidedRead('base/5/16384.2', 20 * PAGE_SIZE, g)?.ranges, [[9, 1]]);
  });

  it('knows tablespaces and the global directory', () => {
    const g = guideOf({ [forkKey(16500, 5, 16384, 0)]: [2], [forkKey(1664, 0, 1262, 0)]: [0] });
    assert.deepEqual(guidedRead('pg_tblspc/16500/PG_15_202209061/5/16384', 4 * PAGE_SIZE, g)?.ranges, [[2, 1]]);
    assert.deepEqual(guidedRead('base/5/16384', 4 * PAGE_SIZE, g)?.ranges, []);
    assert.deepEqual(guidedRead('global/1262', 8 * PAGE_SIZE, g)?.ranges, [[0, 1]]);
  });

  it('reads whole: other files, other forks, unlogged, created or truncated relations, databases created or dropped, odd sizes, unusable WAL', () => {
    const g = guideOf({ [main]: [1] }, { wholeRelations: new Set([relationKey(1663, 5, 16390)]), wholeDatabases: new Set([16400]) }, [relationKey(1663, 5, 16391)]);
    for (const p of ['PG_VERSION', 'pg_xact/0000', 'global/pg_control', 'base/5/pg_filenode.map', 'base/5/t3_16384', 'base/5/16384_fsm', 'base/5/16384_vm', 'base/5/16384_init', 'base/5/16390', 'base/5/16390.1', 'base/5/16391', 'base/16400/16384']) {
      assert.equal(guidedRead(p, 8 * PAGE_SIZE, g), null, p);
    }
    assert.equal(guidedRead('base/5/16384', 8 * PAGE_SIZE + 100, g), null);
    assert.equal(guidedRead('base/5/16384', 8 * PAGE_SIZE, guideOf({}, { unusable: 'a gap' })), null);
    assert.notEqual(guidedRead('base/5/16384', 8 * PAGE_SIZE, g), null);
  });

  it('reads whole a file changed in more than a quarter of its pages', () => {
    const g = guideOf({ [main]: Array.from({ length: 26 }, (_, i) => i * 3) });
    assert.equal(guidedRead('base/5/16384', 100 * PAGE_SIZE, g), null);
    assert.equal(guidedRead('base/5/16384', 104 * PAGE_SIZE, g)?.ranges.length, 26);
  });

  it('init forks mark their relations unlogged', () => {
    assert.equal(unloggedRelationOf('base/5/16391_init'), relationKey(1663, 5, 16391));
    assert.equal(unloggedRelationOf('pg_tblspc/16500/PG_15_202209061/5/16391_init'), relationKey(16500, 5, 16391));
    assert.equal(unloggedRelationOf('base/5/16391'), null);
    assert.equal(unloggedRelationOf('base/5/16391_vm'), null);
  });

  it('property: the ranges are exactly the changed pages of the file below the basis end, in order, disjoint, merged', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 3 * SEG }), { maxLength: 300 }), fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: SEG }), (blocks, segment, basisPages) => {
        const g = guideOf({ [main]: blocks });
        const p = segment === 0 ? 'base/5/16384' : `base/5/16384.${segment}`;
        const r = guidedRead(p, basisPages * PAGE_SIZE, g);
        const want = [...new Set(blocks.map((b) => b - segment * SEG).filter((b) => b >= 0 && b < basisPages && b < SEG))].sort((a, b) => a - b);
        // A file changed in more than a quarter of its pages is read whole.
        if (want.length > basisPages * MAX_TRACKED_SHARE) return assert.equal(r, null);
        assert.ok(r);
        assert.equal(r.from, basisPages);
        const got = r.ranges.flatMap(([first, count]) => Array.from({ length: count }, (_, i) => first + i));
        assert.deepEqual(got, want);
        for (let i = 1; i < r.ranges.length; i++) {
          const [a, n] = r.ranges[i - 1] as PageRange;
          assert.ok(a + n < (r.ranges[i] as PageRange)[0], 'ranges merged and in order');
        }
      }),
    );
  });
});

describe('READ_PAGES ranges on the wire', () => {
  it('round-trips, and refuses ranges out of order, overlapping, empty or cut', () => {
    const ranges: PageRange[] = [
      [0, 1],
      [5, 3],
      [4_000_000, 7],
    ];
    assert.deepEqual(decodeRanges(encodeRanges(ranges)), ranges);
    assert.deepEqual(decodeRanges(encodeRanges([])), []);
    for (const bad of [
      [
        [5, 1],
        [2, 1],
      ],
      [
        [0, 4],
        [3, 1],
      ],
      [[1, 0]],
    ] as PageRange[][]) {
      assert.throws(() => decodeRanges(encodeRanges(bad)), ProtocolError);
    }
    assert.throws(() => decodeRanges(Buffer.alloc(12)), ProtocolError);
  });
});

describe('serveReadPages: the agent reads the listed pages and the tail', async () => {
  const seed = '00112233445566ff';
  const hasher = await PageHasher.create(seed);
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'wal-guide-'));
  const page = (i: number) => Buffer.alloc(PAGE_SIZE, (i * 37 + 11) & 0xff);

  /** Serve one READ_PAGES on `content`; the pages received, by number, and the READ_END. */
  async function serve(content: Buffer, ranges: PageRange[], from: number, codec: 'zstd' | 'none' = 'zstd'): Promise<{ pages: Map<number, Buffer>; end: ReadEnd }> {
    const file = path.join(dir, 'rel');
    await fsp.writeFile(file, content);
    const s = new PassThrough();
    const reader = new FrameReader(s);
    const out = new FrameWriter(s);
    const ctx = { out, hasher, encoder: new Encoder(codec, 1), faults: parseFaults(undefined) };
    const served = serveReadPages({ id: 9, path: file, from }, ranges, ctx).then(() => s.end());
    const decoder = new Decoder();
    const pages = new Map<number, Buffer>();
    let end: ReadEnd | null = null;
    for (;;) {
      const f = await reader.next();
      if (!f) break;
      if (f.type === T.PAGES) {
        const h = decodePages(f.body);
        assert.equal(h.id, 9);
        const raw = Buffer.from(decoder.decode(h.codec, h.payload, h.rawLen));
        for (let i = 0; i < h.count; i++) {
          const data = raw.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
          assert.ok(Buffer.from(hasher.page(data)).equals(h.hashes.subarray(i * 16, (i + 1) * 16)), 'page hash sent with the page');
          assert.ok(!pages.has(h.firstPage + i), 'each page once');
          pages.set(h.firstPage + i, Buffer.from(data));
        }
      } else if (f.type === T.READ_END) end = JSON.parse(f.body.toString()) as ReadEnd;
    }
    await served;
    assert.ok(end);
    return { pages, end };
  }

  it('sends the listed pages below `from`, then every page from `from` to the end', async () => {
    const content = Buffer.concat(Array.from({ length: 300 }, (_, i) => page(i)));
    const { pages, end } = await serve(
      content,
      [
        [0, 2],
        [100, 1],
        [127, 3],
        [250, 10],
      ],
      255,
    );
    const want = [0, 1, 100, 127, 128, 129, 250, 251, 252, 253, 254, ...Array.from({ length: 45 }, (_, i) => 255 + i)];
    assert.deepEqual([...pages.keys()].sort((a, b) => a - b), want);
    for (const [p, data] of pages) assert.ok(data.equals(page(p)), `page ${p}`);
    assert.equal(end.size, content.length);
    assert.equal(end.sent, want.length);
    assert.equal(end.sha256, undefined, 'no SHA-256: the backup host computes it');
  });

  it('pages a few apart travel together, and a window mostly listed travels whole', async () => {
    const content = Buffer.concat(Array.from({ length: 400 }, (_, i) => page(i)));
    // 10 and 12 bridged (one page between), 20 alone; from 200: runs of 5 pages 4 apart (not
    // bridged), more than half of their window: the window travels whole (pages 200-321).
    const runs = Array.from({ length: 14 }, (_, i): PageRange => [200 + 9 * i, 5]);
    const { pages } = await serve(content, [[10, 1], [12, 1], [20, 1], ...runs], 400);
    const got = [...pages.keys()].sort((a, b) => a - b);
    assert.deepEqual(got, [10, 11, 12, 20, ...Array.from({ length: 122 }, (_, i) => 200 + i)]);
    for (const [p, data] of pages) assert.ok(data.equals(page(p)), `page ${p}`);
  });

  it('a file that did not grow: only the listed pages, and its size; one that shrank: what is left of the listed pages, and its new size', async () => {
    const content = Buffer.concat(Array.from({ length: 20 }, (_, i) => page(i)));
    let r = await serve(content, [[3, 2]], 20, 'none');
    assert.deepEqual([...r.pages.keys()], [3, 4]);
    assert.equal(r.end.size, 20 * PAGE_SIZE);
    // Truncated to 4 pages after the backup started (recovery replays the truncation).
    r = await serve(content.subarray(0, 4 * PAGE_SIZE), [[3, 2], [10, 1]], 20, 'none');
    assert.deepEqual([...r.pages.keys()], [3]);
    assert.equal(r.end.size, 4 * PAGE_SIZE);
    // Grown by 1.5 chunks past the basis end.
    const grown = Buffer.concat(Array.from({ length: 20 + 192 }, (_, i) => page(i)));
    r = await serve(grown, [], 20);
    assert.deepEqual([...r.pages.keys()], Array.from({ length: 192 }, (_, i) => 20 + i));
    assert.equal(r.end.size, grown.length);
  });

  it('a file gone is reported vanished', async () => {
    const s = new PassThrough();
    const reader = new FrameReader(s);
    const ctx = { out: new FrameWriter(s), hasher, encoder: new Encoder('none', 1), faults: parseFaults(undefined) };
    await serveReadPages({ id: 3, path: path.join(dir, 'gone'), from: 0 }, [], ctx);
    const f = await reader.next();
    assert.equal(f?.type, T.READ_END);
    assert.deepEqual(JSON.parse(f?.body.toString() ?? ''), { id: 3, vanished: true });
  });

  it('cleans up', async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });
});

describe('a file built from the pages the WAL named: the backup host fills the rest and computes its SHA-256', async () => {
  const seed = '0123456789abcdef';
  const hasher = await PageHasher.create(seed);
  const fillThread = new HashThread(seed, 1, 4 * PAGE_SIZE);
  const shaThread = new HashThread(seed, 4, READ_CHUNK);
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'wal-guide-build-'));
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  const pageOf = (i: number, v: number) => Buffer.alloc(PAGE_SIZE, (i * 31 + v) & 0xff);
  let n = 0;

  /**
   * The basis (`pages` pages), the source (the listed pages changed, `grow` pages added), read
   * with READ_PAGES and rebuilt; what was filled (gaps per task) and read for the SHA-256.
   */
  async function build(pages: number, listed: PageRange[], grow: number, clone: Clone | null, alter: number | null = null) {
    const k = ++n;
    const basis = Buffer.concat(Array.from({ length: pages }, (_, i) => pageOf(i, 1)));
    const changed = new Set(listed.flatMap(([f, c]) => Array.from({ length: c }, (_, i) => f + i)));
    const source = Buffer.concat(Array.from({ length: pages + grow }, (_, i) => (changed.has(i) || i >= pages ? pageOf(i, 2) : pageOf(i, 1))));
    const bas = path.join(dir, `basis-${k}`);
    const src = path.join(dir, `src-${k}`);
    const dest = path.join(dir, `dest-${k}`);
    await fsp.writeFile(bas, basis);
    await fsp.writeFile(src, source);
    const map = hasher.pages(basis);
    // A basis copy altered on disk since it was recorded (its map says otherwise).
    if (alter !== null) await fsp.writeFile(bas, Buffer.concat([basis.subarray(0, alter * PAGE_SIZE), pageOf(alter, 9), basis.subarray((alter + 1) * PAGE_SIZE)]));
    const tasks: [number, number][][] = [];
    const fillGaps: FillGaps = (from, to, gaps, map, size, direct) => {
      tasks.push(gaps);
      return fillThread.fill(from, to, gaps, map, size, direct);
    };
    let readyCalls = 0;
    const shaOf: ShaOf = async (file, size, ready) => {
      const fh = await fsp.open(file, 'r');
      try {
        return await hashFile(shaThread, fh, size, 'both', (e) => (readyCalls++, ready(e)));
      } finally {
        await fh.close();
      }
    };
    const receiver = new FileReceiver(dest, 0o600, { abs: bas, size: basis.length, map, sha256: sha(basis), backupId: 'B' }, hasher, () => undefined, fsp.link, fillGaps, clone, shaOf);
    const s = new PassThrough();
    const reader = new FrameReader(s);
    const ctx = { out: new FrameWriter(s), hasher, encoder: new Encoder('zstd', 1), faults: parseFaults(undefined) };
    const served = serveReadPages({ id: k, path: src, from: pages }, listed, ctx).then(() => s.end());
    const decoder = new Decoder();
    let outcome = null;
    for (;;) {
      const f = await reader.next();
      if (!f) break;
      if (f.type === T.PAGES) {
        const h = decodePages(f.body);
        const { data, release } = decoder.decodeOwned(h.codec, h.payload, h.rawLen);
        receiver.pages(h, data, release);
      } else if (f.type === T.READ_END) outcome = await receiver.finish(JSON.parse(f.body.toString()) as ReadEnd);
    }
    await served;
    assert.ok(outcome);
    return { outcome, source, result: await fsp.readFile(dest).catch(() => null), tasks, readyCalls };
  }

  it('starts from a copy of the basis, writes the pages that arrived over it, and reads it back behind them for its SHA-256 and page hashes', async () => {
    const pages = 2 * FILL_PAGES + 300;
    const r = await build(pages, [[5, 2], [FILL_PAGES + 7, 1], [pages - 1, 1]], 3, null);
    assert.equal(r.outcome.kind, 'written');
    assert.ok(r.result?.equals(r.source), 'the rebuilt file is the source');
    if (r.outcome.kind === 'written') {
      assert.equal(r.outcome.sha256, sha(r.source));
      assert.ok(r.outcome.map.equals(hasher.pages(r.source)));
      assert.equal(r.outcome.sentPages, 4 + 3);
    }
    assert.deepEqual(r.tasks, [], 'nothing filled page by page');
    assert.ok(r.readyCalls > 0, 'the reading waited for the writing');
    // Shrunk below the basis (truncated after the backup started): the copy is cut to size.
    const shrunk = await build(40, [[3, 1]], -10, null);
    assert.ok(shrunk.result?.equals(shrunk.source));
  });

  it('a basis copy altered on disk is caught when the file is read back, copied or cloned: the file is read again whole', async () => {
    const clone: Clone = async (from, to) => {
      await fsp.copyFile(from, to, fsp.constants.COPYFILE_EXCL);
      return true;
    };
    for (const c of [null, clone]) {
      const r = await build(300, [[10, 2]], 0, c, 123);
      assert.equal(r.outcome.kind, 'refetch');
      if (r.outcome.kind === 'refetch') assert.match(r.outcome.reason, /page 123 of its copy in backup B does not match the hash recorded for it/);
      assert.equal(r.result, null, 'nothing left');
    }
  });

  it('over a clone of the basis: nothing filled, the same file and SHA-256; unchanged and not grown: the basis linked, its SHA-256', async () => {
    const clone: Clone = async (from, to) => {
      await fsp.copyFile(from, to, fsp.constants.COPYFILE_EXCL);
      return true;
    };
    const r = await build(300, [[0, 1], [150, 3]], 0, clone);
    assert.ok(r.result?.equals(r.source));
    assert.deepEqual(r.tasks, []);
    assert.equal(r.outcome.kind === 'written' && r.outcome.cloned && r.outcome.sha256, sha(r.source));
    const same = await build(50, [], 0, null);
    assert.equal(same.outcome.kind, 'linked');
    assert.equal(same.outcome.kind === 'linked' && same.outcome.sha256, sha(same.source));
  });

  it('cleans up', async () => {
    await fillThread.close();
    await shaThread.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });
});
