import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ddReadWords, ddWriteWords, RANGE_ALIGN, splitRanges } from '../../src/util/ranges.js';
import { remoteCommandLine } from '../../src/util/ssh-command.js';

const MiB = 1024 * 1024;

function assertCovers(size: number, ranges: { offset: number; length: number }[]): void {
  let next = 0;
  for (const r of ranges) {
    assert.equal(r.offset, next, 'contiguous');
    assert.equal(r.offset % RANGE_ALIGN, 0, 'aligned');
    next = r.offset + r.length;
  }
  assert.equal(next, size, 'covers the whole file');
}

test('splitRanges covers the file exactly, aligned, in at most `parts` ranges', () => {
  for (const size of [0, 1, MiB - 1, MiB, MiB + 1, 64 * MiB, 1024 * MiB, 1024 * MiB - 8192, 300 * MiB + 12345]) {
    for (const parts of [1, 2, 3, 4, 7, 16]) {
      const ranges = splitRanges(size, parts);
      assert.ok(ranges.length >= 1 && ranges.length <= parts, `${size}/${parts}`);
      assertCovers(size, ranges);
    }
  }
});

test('splitRanges: nearly equal parts, never more parts than blocks', () => {
  assert.deepEqual(splitRanges(1024 * MiB, 2), [
    { offset: 0, length: 512 * MiB },
    { offset: 512 * MiB, length: 512 * MiB },
  ]);
  assert.equal(splitRanges(3 * MiB, 8).length, 3);
  assert.deepEqual(splitRanges(0, 4), [{ offset: 0, length: 0 }]);
  const lengths = splitRanges(100 * MiB + 5, 3).map((r) => r.length);
  assert.ok(Math.max(...lengths) - Math.min(...lengths) <= 2 * MiB);
});

test('splitRanges refuses nonsense sizes', () => {
  assert.throws(() => splitRanges(-1, 2), RangeError);
  assert.throws(() => splitRanges(1.5, 2), RangeError);
});

test('dd words keep a hostile file name one quoted word', () => {
  const line = remoteCommandLine(ddReadWords("/data/it's; rm -rf /", { offset: 2 * MiB, length: MiB }));
  assert.match(line, /^dd 'if=\/data\/it'\\''s; rm -rf \/' bs=1048576 iflag=skip_bytes,count_bytes,fullblock skip=2097152 count=1048576 status=none$/);
  assert.deepEqual(ddWriteWords('/x', 5), ['dd', 'of=/x', 'bs=1048576', 'iflag=fullblock', 'oflag=seek_bytes', 'seek=5', 'conv=notrunc', 'status=none']);
});
