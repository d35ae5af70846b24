import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DONE, FAILED, WAITING_FOR_WALS } from '../../src/catalog/backup-info.js';
import {
  archiveTotals,
  childTimelinesFromHistories,
  computeWalStats,
  indexWals,
  lowerBound,
  upperBound,
  type BackupRef,
  type WalRecord,
} from '../../src/reporting/wal-stats.js';
import { walName } from '../../src/wal/names.js';

const SEG = 16 * 1024 * 1024;
const w = (seg: number, size = 1000, time: number | null = 1000 + seg * 10, tli = 1): WalRecord => ({ name: walName(tli, 0, seg), size, time });
const b = (id: string, begin: number, end: number, status = DONE, tli = 1): BackupRef => ({
  id,
  info: { status, begin_wal: walName(tli, 0, begin), end_wal: walName(tli, 0, end), timeline: tli, xlog_segment_size: SEG },
});

describe('binary search helpers', () => {
  const names = ['A', 'C', 'C', 'E'];
  it('lowerBound / upperBound', () => {
    assert.equal(lowerBound(names, 'C'), 1);
    assert.equal(upperBound(names, 'C'), 3);
    assert.equal(lowerBound(names, 'B'), 1);
    assert.equal(upperBound(names, 'Z'), 4);
    assert.equal(lowerBound(names, '0'), 0);
    assert.equal(lowerBound([], 'x'), 0);
  });
});

describe('indexWals', () => {
  it('groups segments by timeline, sorts when needed and ignores other files', () => {
    const ix = indexWals([
      w(3),
      w(1),
      { name: '00000002.history', size: 50, time: 1 },
      { name: `${walName(1, 0, 1)}.00000028.backup`, size: 300, time: 1 },
      w(2, 1000, 1, 2),
      w(1, 5, 7), // duplicate: the last line wins
    ]);
    assert.deepEqual([...ix.keys()].sort(), [1, 2]);
    const t1 = ix.get(1);
    assert.deepEqual(t1?.names, [walName(1, 0, 1), walName(1, 0, 3)]);
    assert.deepEqual([...(t1?.cumSize ?? [])], [0, 5, 1005]);
    assert.deepEqual(t1?.times, [7, 1030]);
  });
});

describe('computeWalStats', () => {
  const wals = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((s) => w(s));

  it('counts begin..end and the WALs until the next backup end_wal', () => {
    const stats = computeWalStats([b('20240101T000000', 2, 3), b('20240102T000000', 6, 7)], wals);
    const s1 = stats.get('20240101T000000');
    assert.equal(s1?.walNum, 2);
    assert.equal(s1?.walSize, 2000);
    // 4, 5, 6, 7
    assert.equal(s1?.walUntilNextNum, 4);
    assert.equal(s1?.walUntilNextSize, 4000);
    assert.equal(s1?.walFirst, walName(1, 0, 2));
    assert.equal(s1?.walLast, walName(1, 0, 7));
    // 6 WALs over 50 seconds
    assert.equal(s1?.walRatePerSecond, 6 / 50);
    const s2 = stats.get('20240102T000000');
    assert.equal(s2?.walNum, 2);
    // newest backup: everything after end_wal
    assert.equal(s2?.walUntilNextNum, 3);
    assert.equal(s2?.walLast, walName(1, 0, 10));
  });

  it('skips backups that are not usable when looking for the next one', () => {
    const stats = computeWalStats([b('20240101T000000', 2, 3), b('20240102T000000', 4, 5, FAILED), b('20240103T000000', 6, 7, WAITING_FOR_WALS)], wals);
    assert.equal(stats.get('20240101T000000')?.walUntilNextNum, 4);
    // a FAILED backup's stats are still computed, up to the next usable one
    assert.equal(stats.get('20240102T000000')?.walUntilNextNum, 2);
  });

  it('computes compression ratios', () => {
    const half = [1, 2, 3, 4].map((s) => w(s, SEG / 2));
    const stats = computeWalStats([b('20240101T000000', 1, 2)], half);
    assert.equal(stats.get('20240101T000000')?.walCompressionRatio, 0.5);
    assert.equal(stats.get('20240101T000000')?.walUntilNextCompressionRatio, 0.5);
  });

  it('gives zeros without WALs or without begin/end', () => {
    const stats = computeWalStats(
      [b('20240101T000000', 1, 2), { id: '20240102T000000', info: { status: FAILED, begin_wal: null, end_wal: null, timeline: null, xlog_segment_size: SEG } }],
      [],
    );
    assert.deepEqual(
      { n: stats.get('20240101T000000')?.walNum, r: stats.get('20240101T000000')?.walRatePerSecond, c: stats.get('20240101T000000')?.walCompressionRatio },
      { n: 0, r: 0, c: 0 },
    );
    assert.equal(stats.get('20240102T000000')?.walSize, 0);
  });

  it('keeps other timelines out unless they branch off the backup', () => {
    const mixed = [...wals, w(8, 1000, 2000, 2), w(9, 1000, 2010, 2)];
    const plain = computeWalStats([b('20240101T000000', 9, 10)], mixed);
    assert.equal(plain.get('20240101T000000')?.walUntilNextNum, 0);
    const children = childTimelinesFromHistories(new Map([[2, '1\t0/8000000\tno recovery target specified\n']]));
    assert.deepEqual([...children], [[1, [{ tli: 2, switchpoint: 0x8000000n }]]]);
    const withChild = computeWalStats([b('20240101T000000', 9, 10)], mixed, children);
    assert.equal(withChild.get('20240101T000000')?.walUntilNextNum, 2);
    assert.deepEqual(withChild.get('20240101T000000')?.childTimelines, [2]);
    // a timeline that forked before the backup ended cannot start from it
    const late = computeWalStats([{ id: 'x', info: { ...(b('x', 9, 10).info), end_xlog: '0/A000100' } }], mixed, children);
    assert.equal(late.get('x')?.walUntilNextNum, 0);
    assert.deepEqual(late.get('x')?.childTimelines, []);
    const early = computeWalStats([{ id: 'x', info: { ...(b('x', 6, 7).info), end_xlog: '0/7000100' } }], mixed, children);
    assert.deepEqual(early.get('x')?.childTimelines, [2]);
  });

  it('follows the descent through several timelines', () => {
    const children = childTimelinesFromHistories(
      new Map([
        [2, '1\t0/5000000\treason\n'],
        [3, '1\t0/5000000\treason\n2\t0/9000000\treason\n'],
      ]),
    );
    assert.deepEqual(children.get(1)?.map((c) => c.tli), [2, 3]);
    assert.deepEqual(children.get(2), [{ tli: 3, switchpoint: 0x9000000n }]);
  });

  it('is fast for 1,000 backups and 200,000 WALs', () => {
    const big: WalRecord[] = [];
    for (let i = 0; i < 200_000; i++) big.push({ name: walName(1, Math.floor(i / 256), i % 256), size: 4096, time: i });
    const backups: BackupRef[] = [];
    for (let k = 0; k < 1000; k++) {
      const begin = k * 200;
      const id = `2024${String(1000 + k).padStart(4, '0')}T000000`;
      backups.push({
        id,
        info: {
          status: DONE,
          begin_wal: walName(1, Math.floor(begin / 256), begin % 256),
          end_wal: walName(1, Math.floor((begin + 2) / 256), (begin + 2) % 256),
          timeline: 1,
          xlog_segment_size: SEG,
        },
      });
    }
    const t0 = performance.now();
    const stats = computeWalStats(backups, big);
    const ms = performance.now() - t0;
    assert.equal(stats.size, 1000);
    assert.equal(stats.get(backups[0]?.id ?? '')?.walNum, 3);
    assert.equal(stats.get(backups[0]?.id ?? '')?.walUntilNextNum, 200);
    // A guard against quadratic work (minutes), not a speed measurement: a loaded CI machine
    // may take several times the ~100 ms it takes here.
    assert.ok(ms < 20_000, `took ${ms} ms`);
  });
});

describe('archiveTotals', () => {
  it('sums the segments only', () => {
    assert.deepEqual(archiveTotals([w(1, 10), w(2, 20), { name: '00000002.history', size: 5, time: 0 }]), { count: 2, size: 30 });
  });
});
