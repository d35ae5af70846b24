/**
 * The local delta restore without PostgreSQL: DeltaApplier (one thread's work) on files in a
 * temporary directory, the plan of segments and batches, localDelta end to end on two small
 * trees, and the page range helpers of the remote delta restore (NEED bridging, read windows).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DeltaApplier, type DeltaItem } from '../../src/agent/delta-worker.js';
import { SEGMENT_PAGES, localDelta, planDelta } from '../../src/agent/local-delta.js';
import { HASH_BYTES, PAGE_SIZE, PageHasher, changedRanges, pageCount, rangeWindows } from '../../src/agent/pages.js';
import { scanTree } from '../../src/recovery/copy.js';

const SEED = '0123456789abcdef';
let dir = '';
let hasher: PageHasher;
before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'local-delta-unit-'));
  hasher = await PageHasher.create(SEED);
});
after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

let n = 0;
async function pair(src: Buffer, dest: Buffer | null): Promise<{ src: string; dest: string }> {
  n += 1;
  const s = path.join(dir, `src-${n}`);
  const d = path.join(dir, `dest-${n}`);
  await fs.writeFile(s, src);
  if (dest) await fs.writeFile(d, dest);
  return { src: s, dest: d };
}

function item(p: { src: string; dest: string }, size: number, map: Buffer | null, first = 0, end = pageCount(size), attrs: DeltaItem['attrs'] = { mode: 0o640, mtimeMs: 1_700_000_000_000 }): DeltaItem {
  return { ...p, size, first, end, map: map ? new Uint8Array(map.subarray(first * HASH_BYTES, end * HASH_BYTES)) : null, attrs };
}

describe('local delta restore: one thread', () => {
  it('writes only the pages that differ, and the result is the backup file, size, mode and time', async () => {
    const src = randomBytes(10 * PAGE_SIZE + 100);
    const dest = Buffer.from(src);
    dest[3 * PAGE_SIZE + 5] ^= 1;
    dest[7 * PAGE_SIZE] ^= 1;
    const p = await pair(src, dest);
    for (const map of [hasher.pages(src), null]) {
      await fs.writeFile(p.dest, dest);
      const written = new DeltaApplier(map ? hasher : null).apply(item(p, src.length, map));
      assert.equal(written, 2);
      assert.ok((await fs.readFile(p.dest)).equals(src));
      const st = await fs.stat(p.dest);
      assert.equal(st.mode & 0o777, 0o640);
      assert.ok(Math.abs(st.mtimeMs - 1_700_000_000_000) < 1);
    }
  });

  it('a longer, a shorter, a missing and an empty destination file all end as the backup file', async () => {
    const src = randomBytes(5 * PAGE_SIZE + 10);
    const cases: [Buffer | null, number][] = [
      [Buffer.concat([src, randomBytes(3 * PAGE_SIZE)]), 1], // longer: the short last page differs, the rest is cut
      [src.subarray(0, 2 * PAGE_SIZE), 4], // shorter
      [null, 6], // missing
      [Buffer.alloc(0), 6],
    ];
    for (const [dest, pages] of cases) {
      const p = await pair(src, dest);
      assert.equal(new DeltaApplier(hasher).apply(item(p, src.length, hasher.pages(src))), pages);
      assert.ok((await fs.readFile(p.dest)).equals(src));
    }
    // An empty backup file: an empty destination file.
    const p = await pair(Buffer.alloc(0), randomBytes(100));
    assert.equal(new DeltaApplier(hasher).apply(item(p, 0, Buffer.alloc(0))), 0);
    assert.equal((await fs.stat(p.dest)).size, 0);
  });

  it('segments touch only their pages and leave size, mode and time to the caller', async () => {
    const src = randomBytes(6 * PAGE_SIZE);
    const dest = randomBytes(6 * PAGE_SIZE);
    const p = await pair(src, dest);
    const before = await fs.stat(p.dest);
    const a = new DeltaApplier(hasher);
    assert.equal(a.apply(item(p, src.length, hasher.pages(src), 2, 4, null)), 2);
    const got = await fs.readFile(p.dest);
    assert.ok(got.subarray(2 * PAGE_SIZE, 4 * PAGE_SIZE).equals(src.subarray(2 * PAGE_SIZE, 4 * PAGE_SIZE)));
    assert.ok(got.subarray(0, 2 * PAGE_SIZE).equals(dest.subarray(0, 2 * PAGE_SIZE)));
    assert.ok(got.subarray(4 * PAGE_SIZE).equals(dest.subarray(4 * PAGE_SIZE)));
    const st = await fs.stat(p.dest);
    assert.equal(st.mode, before.mode);
    assert.equal(st.size, before.size);
  });

  it('a backup page that does not match its recorded hash is refused, not written', async () => {
    const src = randomBytes(4 * PAGE_SIZE);
    const map = hasher.pages(src);
    const damaged = Buffer.from(src);
    damaged[PAGE_SIZE + 1] ^= 0xff;
    const dest = randomBytes(4 * PAGE_SIZE);
    const p = await pair(damaged, dest);
    assert.throws(() => new DeltaApplier(hasher).apply(item(p, src.length, map)), /the backup is damaged/);
    // A damaged page that the destination already has the same way is not written: nothing refused.
    const q = await pair(damaged, damaged);
    assert.equal(new DeltaApplier(hasher).apply(item(q, src.length, map)), 0);
  });

  it('a backup file shorter than recorded is an error', async () => {
    const p = await pair(randomBytes(PAGE_SIZE), randomBytes(3 * PAGE_SIZE));
    assert.throws(() => new DeltaApplier(null).apply(item(p, 3 * PAGE_SIZE, null)), /shorter than when the restore started/);
  });
});

describe('local delta restore: trees', () => {
  it('plans large files in segments and small ones in batches, largest first', async () => {
    const root = path.join(dir, 'plan');
    await fs.mkdir(path.join(root, 'sub'), { recursive: true });
    await fs.writeFile(path.join(root, 'big'), Buffer.alloc((2 * SEGMENT_PAGES + 3) * PAGE_SIZE));
    for (let i = 0; i < 70; i++) await fs.writeFile(path.join(root, 'sub', `f${i}`), Buffer.alloc(i * 10));
    const scan = await scanTree(root);
    const plan = await planDelta([{ scan, dest: path.join(dir, 'plan-dest'), keep: [] }], null);
    assert.equal(plan.files, 71);
    assert.equal(plan.pages, 2 * SEGMENT_PAGES + 3 + 69);
    const segments = plan.tasks.filter((t) => t.items.length === 1 && t.items[0]?.attrs === null);
    assert.deepEqual(
      segments.map((t) => [t.items[0]?.first, t.items[0]?.end]),
      [
        [0, SEGMENT_PAGES],
        [SEGMENT_PAGES, 2 * SEGMENT_PAGES],
        [2 * SEGMENT_PAGES, 2 * SEGMENT_PAGES + 3],
      ],
    );
    const batches = plan.tasks.filter((t) => t.items[0]?.attrs !== null);
    assert.deepEqual(
      batches.map((t) => t.items.length),
      [64, 6],
    );
  });

  it('brings a drifted tree to the backup tree: extra entries removed, kept paths kept, files identical', async () => {
    const src = path.join(dir, 'tree-src');
    const dest = path.join(dir, 'tree-dest');
    await fs.mkdir(path.join(src, 'base', '1'), { recursive: true });
    const big = randomBytes((SEGMENT_PAGES + 5) * PAGE_SIZE);
    await fs.writeFile(path.join(src, 'base', '1', 'big'), big);
    await fs.writeFile(path.join(src, 'base', '1', 'small'), 'small file');
    await fs.writeFile(path.join(src, 'PG_VERSION'), '15\n');
    await fs.symlink('/nowhere', path.join(src, 'link'));
    await fs.cp(src, dest, { recursive: true, verbatimSymlinks: true });
    const fh = await fs.open(path.join(dest, 'base', '1', 'big'), 'r+');
    await fh.write(Buffer.alloc(10, 1), 0, 10, 3 * PAGE_SIZE);
    await fh.write(Buffer.alloc(10, 1), 0, 10, (SEGMENT_PAGES + 2) * PAGE_SIZE);
    await fh.close();
    await fs.writeFile(path.join(dest, 'junk'), 'x');
    await fs.mkdir(path.join(dest, 'extra', 'sub'), { recursive: true });
    await fs.mkdir(path.join(dest, 'pg_log'));
    await fs.writeFile(path.join(dest, 'pg_log', 'keep.log'), 'kept');
    await fs.rm(path.join(dest, 'PG_VERSION'));
    const stats = await localDelta([{ scan: await scanTree(src), dest, keep: ['pg_log'] }], { workers: 2, store: null });
    assert.equal(stats.files, 3);
    assert.equal(stats.pagesSent, 3);
    assert.ok((await fs.readFile(path.join(dest, 'base', '1', 'big'))).equals(big));
    assert.equal(await fs.readFile(path.join(dest, 'PG_VERSION'), 'utf8'), '15\n');
    assert.equal(await fs.readlink(path.join(dest, 'link')), '/nowhere');
    assert.equal(await fs.readFile(path.join(dest, 'pg_log', 'keep.log'), 'utf8'), 'kept');
    assert.deepEqual((await fs.readdir(dest)).sort(), ['PG_VERSION', 'base', 'link', 'pg_log']);
    for (const rel of ['base/1/big', 'base/1/small', 'PG_VERSION']) {
      const [a, b] = [await fs.stat(path.join(src, rel)), await fs.stat(path.join(dest, rel))];
      // Times go through futimes in seconds: equal within the float's precision.
      assert.ok(Math.abs(b.mtimeMs - a.mtimeMs) < 1, rel);
      assert.equal(b.mode, a.mode, rel);
    }
  });
});

describe('page ranges of the remote delta restore', () => {
  it('NEED joins ranges separated by fewer than `bridge` matching pages', () => {
    const basis = Buffer.alloc(12 * HASH_BYTES, 1);
    const cur = Buffer.from(basis);
    for (const p of [0, 2, 3, 7, 11]) cur[p * HASH_BYTES] = 9;
    assert.deepEqual(changedRanges(cur, basis), [[0, 1], [2, 2], [7, 1], [11, 1]]);
    assert.deepEqual(changedRanges(cur, basis, 12, 2), [[0, 4], [7, 1], [11, 1]]);
    assert.deepEqual(changedRanges(cur, basis, 12, 3), [[0, 4], [7, 1], [11, 1]]);
    assert.deepEqual(changedRanges(cur, basis, 12, 4), [[0, 12]]);
  });

  it('gathers ranges into read windows of at most `max` pages', () => {
    assert.deepEqual(rangeWindows([[0, 2], [5, 1], [9, 3]], 8), [
      { first: 0, end: 6, ranges: [[0, 2], [5, 1]] },
      { first: 9, end: 12, ranges: [[9, 3]] },
    ]);
    // A long range is split first, each piece its own window.
    assert.deepEqual(
      rangeWindows([[0, 10]], 4).map((w) => w.ranges),
      [[[0, 4]], [[4, 4]], [[8, 2]]],
    );
  });
});
