/** The progress line's text (pure): bar, percentage, amounts, rate and ETA. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { formatEta, formatProgress, progressLine } from '../../src/cli/progress.js';

const MiB = 1024 * 1024;

describe('progress formatting', () => {
  it('bytes: half done in 10 s → rate and ETA 10 s', () => {
    const text = formatProgress({ label: 'pg: copying', done: 50 * MiB, total: 100 * MiB, elapsedMs: 10_000, unit: 'bytes' }, 10);
    assert.equal(text, 'pg: copying [#####.....]  50% 50.0 MiB/100.0 MiB 5.0 MiB/s ETA 0:10');
  });

  it('files: rate in files per second', () => {
    const text = formatProgress({ label: 'WAL', done: 30, total: 120, elapsedMs: 3000, unit: 'files' }, 4);
    assert.equal(text, 'WAL [#...]  25% 30/120 files 10.0 files/s ETA 0:09');
  });

  it('no rate nor ETA before there is history, 100% at the end', () => {
    assert.match(formatProgress({ label: 'x', done: 0, total: 10, elapsedMs: 0, unit: 'bytes' }), /  0% 0 B\/10 B -- ETA --:--$/);
    assert.match(formatProgress({ label: 'x', done: 10, total: 10, elapsedMs: 100, unit: 'bytes' }), /100% 10 B\/10 B -- ETA 0:00$/);
  });

  it('done beyond total (a growing copy) is capped; unknown total has no ETA', () => {
    assert.match(formatProgress({ label: 'x', done: 20, total: 10, elapsedMs: 1000, unit: 'files' }, 2), /^x \[##\] 100% 10\/10 files/);
    assert.match(formatProgress({ label: 'x', done: 5, total: 0, elapsedMs: 1000, unit: 'files' }), /  0% 5\/0 files 5\.0 files\/s ETA --:--$/);
  });

  it('ETA over an hour has hours', () => {
    assert.equal(formatEta(3725), '1:02:05');
    assert.equal(formatEta(59.6), '1:00');
    assert.equal(formatEta(-3), '0:00');
  });

  it('a disabled line writes nothing', () => {
    const writes: unknown[] = [];
    const orig = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: unknown) => {
      writes.push(chunk);
      return true;
    }) as typeof process.stderr.write;
    try {
      const bar = progressLine('x', { enabled: false });
      bar.update(1, 2);
      bar.update(2, 2);
      bar.end();
    } finally {
      process.stderr.write = orig;
    }
    assert.deepEqual(writes, []);
  });
});
