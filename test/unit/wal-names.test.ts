import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { BarmanError } from '../../src/util/errors.js';
import {
  assertSafeWalName,
  formatLsn,
  generateSegments,
  hashDir,
  historyName,
  isAnyXlogFile,
  isBackupFileName,
  isHistoryName,
  isPartialName,
  isSegmentName,
  isWalName,
  lsnToWal,
  nextSegment,
  normalizeWalName,
  parseHistoryFile,
  parseLsn,
  parseWalName,
  previousSegment,
  segmentsPerXlogId,
  timelineOf,
  walName,
  walNameKind,
  walOffset,
  walToLsn,
} from '../../src/wal/names.js';

const MiB = 1 << 20;
const GiB = 1 << 30;
const SEG = '000000010000000A000000FF';

const isBarmanError = (err: unknown): boolean => err instanceof BarmanError;

/** Names that must never be accepted, whatever the kind of check. */
const BAD_NAMES = [
  '',
  'foo',
  '00000001000000000000000',
  '0000000100000000000000011',
  'G00000010000000000000001',
  ' 000000010000000000000001',
  '000000010000000000000001 ',
  '000000010000000000000001\n',
  '000000010000000000000001\0',
  '\u0000' + '000000010000000000000001',
  '000000010000000000000001/',
  '/000000010000000000000001',
  '../000000010000000000000001',
  '..',
  '.',
  '../../etc/passwd',
  '0000000100000000/000000010000000000000001',
  '00000001000000000000000..',
  '..0000000100000000000001',
  '000000010000000000000001.gz',
  '000000010000000000000001.partial.gz',
  '000000010000000000000001.PARTIAL',
  '000000010000000000000001.backup',
  '000000010000000000000001.0000002.backup',
  '000000010000000000000001.0000002G.backup',
  '000000010000000000000001.00000028.backup/..',
  '00000001.HISTORY',
  '0000001.history',
  '000000001.history',
  '00000001.history.tmp',
  '.00000001.history',
  '0x0000010000000000000001',
  '００００００01000000000000000001',
];

describe('classification', () => {
  test('the four kinds', () => {
    assert.equal(walNameKind(SEG), 'segment');
    assert.equal(walNameKind('000000010000000A000000FF.00000028.backup'), 'backup');
    assert.equal(walNameKind('000000010000000A000000FF.partial'), 'partial');
    assert.equal(walNameKind('0000000A.history'), 'history');
    assert.equal(walNameKind('nope'), null);
  });

  test('predicates', () => {
    const backup = '000000010000000A000000FF.00000028.backup';
    const partial = '000000010000000A000000FF.partial';
    const history = '00000002.history';
    assert.ok(isWalName(SEG) && isSegmentName(SEG));
    for (const n of [backup, partial, history]) assert.ok(!isWalName(n) && !isSegmentName(n), n);
    assert.ok(isBackupFileName(backup) && !isBackupFileName(SEG) && !isBackupFileName(partial));
    assert.ok(isPartialName(partial) && !isPartialName(SEG) && !isPartialName(backup));
    assert.ok(isHistoryName(history) && !isHistoryName(SEG));
    for (const n of [SEG, backup, partial, history]) assert.ok(isAnyXlogFile(n), n);
  });

  test('hex digits in either case are accepted', () => {
    assert.ok(isWalName('000000010000000a000000ff'));
    assert.ok(isBackupFileName('000000010000000a000000ff.0000002c.backup'));
    assert.ok(isPartialName('000000010000000a000000fF.partial'));
    assert.ok(isHistoryName('0000000a.history'));
  });

  test('bad names are rejected by every predicate', () => {
    for (const n of BAD_NAMES) {
      assert.equal(walNameKind(n), null, JSON.stringify(n));
      assert.ok(!isAnyXlogFile(n), JSON.stringify(n));
    }
  });

  test('normalizeWalName uppercases hex digits only', () => {
    assert.equal(normalizeWalName('000000010000000a000000ff'), '000000010000000A000000FF');
    assert.equal(normalizeWalName('000000010000000a000000ff.partial'), '000000010000000A000000FF.partial');
    assert.equal(normalizeWalName('000000010000000a000000ff.0000002c.backup'), '000000010000000A000000FF.0000002C.backup');
    assert.equal(normalizeWalName('0000000a.history'), '0000000A.history');
    assert.throws(() => normalizeWalName('zzz'), isBarmanError);
  });
});

describe('parse and build names', () => {
  test('parseWalName', () => {
    assert.deepEqual(parseWalName('000000020000000A000000FF'), { tli: 2, log: 10, seg: 255 });
    assert.deepEqual(parseWalName('FFFFFFFFFFFFFFFFFFFFFFFF'), { tli: 0xffffffff, log: 0xffffffff, seg: 0xffffffff });
    assert.deepEqual(parseWalName('000000020000000a000000fe.partial'), { tli: 2, log: 10, seg: 254 });
    assert.deepEqual(parseWalName('000000020000000A000000FE.00000028.backup'), { tli: 2, log: 10, seg: 254 });
    assert.throws(() => parseWalName('00000002.history'), isBarmanError);
    for (const n of BAD_NAMES) assert.throws(() => parseWalName(n), isBarmanError, JSON.stringify(n));
  });

  test('walName', () => {
    assert.equal(walName(1, 0x16, 0xb3), '0000000100000016000000B3');
    assert.equal(walName(0xffffffff, 0xffffffff, 0xffffffff), 'FFFFFFFFFFFFFFFFFFFFFFFF');
    assert.equal(walName(0, 0, 0), '000000000000000000000000');
    for (const bad of [-1, 0x100000000, 1.5, NaN, Infinity]) {
      assert.throws(() => walName(bad, 0, 0), isBarmanError);
      assert.throws(() => walName(1, bad, 0), isBarmanError);
      assert.throws(() => walName(1, 0, bad), isBarmanError);
    }
  });

  test('parseWalName and walName round-trip', () => {
    for (const n of ['000000010000000000000001', '0000000A00000BCD0000EF01', '7FFFFFFF80000000FFFFFFFE']) {
      const { tli, log, seg } = parseWalName(n);
      assert.equal(walName(tli, log, seg), n);
    }
  });

  test('timelineOf and historyName', () => {
    assert.equal(timelineOf('0000000A.history'), 10);
    assert.equal(timelineOf('0000000B0000000000000001.partial'), 11);
    assert.equal(historyName(10), '0000000A.history');
    assert.throws(() => timelineOf('x'), isBarmanError);
  });

  test('hashDir', () => {
    assert.equal(hashDir('000000010000000A000000FF'), '000000010000000A');
    assert.equal(hashDir('000000010000000a000000ff'), '000000010000000A');
    assert.equal(hashDir('000000010000000A000000FF.00000028.backup'), '000000010000000A');
    assert.equal(hashDir('000000010000000A000000FF.partial'), '000000010000000A');
    assert.equal(hashDir('00000002.history'), '');
    for (const n of BAD_NAMES) assert.throws(() => hashDir(n), isBarmanError, JSON.stringify(n));
  });
});

describe('LSN', () => {
  test('parse and format', () => {
    assert.equal(parseLsn('16/B374D848'), 0x16b374d848n);
    assert.equal(parseLsn('16/b374d848'), 0x16b374d848n);
    assert.equal(parseLsn('0/0'), 0n);
    assert.equal(parseLsn('FFFFFFFF/FFFFFFFF'), (1n << 64n) - 1n);
    assert.equal(parseLsn('00000001/00000002'), (1n << 32n) + 2n);
    assert.equal(formatLsn(0x16b374d848n), '16/B374D848');
    assert.equal(formatLsn(0n), '0/0');
    assert.equal(formatLsn(0x3000028), '0/3000028');
    assert.equal(formatLsn((1n << 64n) - 1n), 'FFFFFFFF/FFFFFFFF');
    assert.equal(formatLsn(parseLsn('00000001/00000002')), '1/2');
  });

  test('strict validation', () => {
    const bad = ['', '16', '16/', '/1', '16/B374D848/1', '123456789/0', '0/123456789', 'G/0', ' 16/0', '16/0 ',
      '16/0\n', '-1/0', '0x16/0', '16:0', '16 / 0', '1g3/0', '1_0/0'];
    for (const b of bad) assert.throws(() => parseLsn(b), isBarmanError, JSON.stringify(b));
    assert.throws(() => parseLsn(undefined as unknown as string), isBarmanError);
    assert.throws(() => formatLsn(-1n), isBarmanError);
    assert.throws(() => formatLsn(1n << 64n), isBarmanError);
    assert.throws(() => formatLsn(-1), isBarmanError);
    assert.throws(() => formatLsn(1.5), isBarmanError);
  });

  test('segments per xlogid', () => {
    assert.equal(segmentsPerXlogId(MiB), 4095);
    assert.equal(segmentsPerXlogId(16 * MiB), 255);
    assert.equal(segmentsPerXlogId(64 * MiB), 63);
    assert.equal(segmentsPerXlogId(GiB), 3);
    for (const bad of [0, -16 * MiB, 3 * MiB, MiB / 2, 2 * GiB, 16 * MiB + 1, NaN]) {
      assert.throws(() => segmentsPerXlogId(bad), isBarmanError, String(bad));
    }
  });

  const cases: Array<[number, string, number]> = [
    // segment size, name of the segment holding 16/B374D848 on timeline 1, offset
    [MiB, '000000010000001600000B37', 0x4d848],
    [16 * MiB, '0000000100000016000000B3', 0x74d848],
    [64 * MiB, '00000001000000160000002C', 0x374d848],
    [GiB, '000000010000001600000002', 0x3374d848],
  ];

  for (const [segSize, name, offset] of cases) {
    test(`LSN ↔ name with ${segSize / MiB} MiB segments`, () => {
      const lsn = parseLsn('16/B374D848');
      assert.equal(lsnToWal(lsn, 1, segSize), name);
      assert.equal(lsnToWal('16/B374D848', 1, segSize), name);
      assert.equal(walOffset(lsn, segSize), offset);
      assert.equal(walToLsn(name, offset, segSize), lsn);
      assert.equal(formatLsn(walToLsn(name, offset, segSize)), '16/B374D848');
      // segment start and the last byte of the segment
      assert.equal(walToLsn(name, 0, segSize), lsn - BigInt(offset));
      assert.equal(lsnToWal(lsn - BigInt(offset), 1, segSize), name);
      assert.equal(lsnToWal(lsn - BigInt(offset) + BigInt(segSize - 1), 1, segSize), name);
      assert.notEqual(lsnToWal(lsn - BigInt(offset) + BigInt(segSize), 1, segSize), name);
      // .partial and .backup names address the same segment
      assert.equal(walToLsn(`${name}.partial`, offset, segSize), lsn);
      assert.equal(walToLsn(`${name}.0000002C.backup`, offset, segSize), lsn);
    });

    test(`LSN ↔ name round-trip on random positions (${segSize / MiB} MiB)`, () => {
      let x = 0x9e3779b97f4a7c15n;
      const segsMax = BigInt(segmentsPerXlogId(segSize));
      for (let i = 0; i < 2000; i++) {
        x ^= (x << 13n) & 0xffffffffffffffffn;
        x ^= x >> 7n;
        x ^= (x << 17n) & 0xffffffffffffffffn;
        const lsn = x;
        const tli = (i % 7) + 1;
        const n = lsnToWal(lsn, tli, segSize);
        const { tli: t, log, seg } = parseWalName(n);
        assert.equal(t, tli);
        assert.equal(BigInt(log), lsn >> 32n);
        assert.ok(BigInt(seg) <= segsMax);
        assert.equal(walToLsn(n, walOffset(lsn, segSize), segSize), lsn);
      }
    });

    test(`last and first segment of a log (${segSize / MiB} MiB)`, () => {
      const last = segmentsPerXlogId(segSize);
      assert.equal(lsnToWal(parseLsn('5/FFFFFFFF'), 1, segSize), walName(1, 5, last));
      assert.equal(walOffset(parseLsn('5/FFFFFFFF'), segSize), segSize - 1);
      assert.equal(lsnToWal(parseLsn('6/0'), 1, segSize), walName(1, 6, 0));
      assert.equal(walToLsn(walName(1, 5, last), segSize - 1, segSize), parseLsn('5/FFFFFFFF'));
      assert.equal(walToLsn(walName(1, 0xffffffff, last), segSize - 1, segSize), (1n << 64n) - 1n);
    });
  }

  test('walToLsn rejects bad offsets and out-of-range segments', () => {
    assert.throws(() => walToLsn('000000010000000000000001', -1), isBarmanError);
    assert.throws(() => walToLsn('000000010000000000000001', 16 * MiB), isBarmanError);
    assert.throws(() => walToLsn('000000010000000000000001', 1.5), isBarmanError);
    assert.throws(() => walToLsn('000000010000000000000100', 0, 16 * MiB), isBarmanError);
    assert.equal(walToLsn('000000010000000000000100', 0, MiB), 0x10000000n);
    assert.throws(() => walToLsn('00000001.history', 0), isBarmanError);
  });

  test('default segment size is 16 MiB', () => {
    assert.equal(lsnToWal(parseLsn('0/3000028'), 1), '000000010000000000000003');
    assert.equal(walOffset(parseLsn('0/3000028')), 0x28);
    assert.equal(walToLsn('000000010000000000000003', 0x28), 0x3000028n);
  });
});

describe('segment sequences', () => {
  const take = <T>(it: Iterable<T>, n: number): T[] => {
    const out: T[] = [];
    for (const v of it) {
      if (out.length >= n) break;
      out.push(v);
    }
    return out;
  };

  test('simple range, inclusive', () => {
    assert.deepEqual([...generateSegments('000000010000000000000001', '000000010000000000000003', 16 * MiB)], [
      '000000010000000000000001',
      '000000010000000000000002',
      '000000010000000000000003',
    ]);
    assert.deepEqual([...generateSegments(SEG, SEG, 16 * MiB)], [SEG]);
  });

  test('lowercase input produces uppercase names', () => {
    assert.deepEqual([...generateSegments('000000010000000a000000fe', '000000010000000a000000ff', 16 * MiB)], [
      '000000010000000A000000FE',
      '000000010000000A000000FF',
    ]);
  });

  test('wrap to the next log after 0xFF (16 MiB)', () => {
    assert.deepEqual([...generateSegments('0000000100000001000000FE', '000000010000000200000001', 16 * MiB, 150000)], [
      '0000000100000001000000FE',
      '0000000100000001000000FF',
      '000000010000000200000000',
      '000000010000000200000001',
    ]);
  });

  test('pre-9.3 skips segment 0xFF', () => {
    assert.deepEqual([...generateSegments('0000000100000001000000FE', '000000010000000200000001', 16 * MiB, 90200)], [
      '0000000100000001000000FE',
      '000000010000000200000000',
      '000000010000000200000001',
    ]);
    // 9.3 exactly keeps it
    assert.equal([...generateSegments('0000000100000001000000FE', '000000010000000200000001', 16 * MiB, 90300)].length, 4);
  });

  test('wrap points for other segment sizes', () => {
    assert.deepEqual([...generateSegments('000000010000000100000FFF', '000000010000000200000000', MiB)], [
      '000000010000000100000FFF',
      '000000010000000200000000',
    ]);
    assert.deepEqual([...generateSegments('00000001000000010000003F', '000000010000000200000000', 64 * MiB)], [
      '00000001000000010000003F',
      '000000010000000200000000',
    ]);
    assert.deepEqual([...generateSegments('000000010000000100000002', '000000010000000200000001', GiB)], [
      '000000010000000100000002',
      '000000010000000100000003',
      '000000010000000200000000',
      '000000010000000200000001',
    ]);
  });

  test('unknown segment size allows segments up to 0x7FFFF', () => {
    assert.deepEqual([...generateSegments('00000001000000010007FFFE', '000000010000000200000000')], [
      '00000001000000010007FFFE',
      '00000001000000010007FFFF',
      '000000010000000200000000',
    ]);
    assert.deepEqual(take(generateSegments('0000000100000001000000FF'), 2), [
      '0000000100000001000000FF',
      '000000010000000100000100',
    ]);
  });

  test('end before begin yields nothing; end on another timeline throws', () => {
    assert.deepEqual([...generateSegments('000000010000000000000005', '000000010000000000000004', 16 * MiB)], []);
    assert.throws(() => [...generateSegments('000000010000000000000001', '000000020000000000000003')], isBarmanError);
    assert.throws(() => [...generateSegments('nope', '000000010000000000000003')], isBarmanError);
  });

  test('unbounded generator', () => {
    assert.deepEqual(take(generateSegments('0000000100000000000000FF', null, 16 * MiB), 3), [
      '0000000100000000000000FF',
      '000000010000000100000000',
      '000000010000000100000001',
    ]);
    // stops at the end of the LSN space
    assert.deepEqual([...generateSegments('00000001FFFFFFFF000000FE', undefined, 16 * MiB)], [
      '00000001FFFFFFFF000000FE',
      '00000001FFFFFFFF000000FF',
    ]);
  });

  test('begin may be a .partial or .backup name', () => {
    assert.deepEqual([...generateSegments('000000010000000000000001.00000028.backup', '000000010000000000000002.partial', 16 * MiB)], [
      '000000010000000000000001',
      '000000010000000000000002',
    ]);
  });

  test('a whole log of 16 MiB segments has 256 files', () => {
    const all = [...generateSegments('000000010000000300000000', '0000000100000003000000FF', 16 * MiB)];
    assert.equal(all.length, 256);
    assert.deepEqual([...all].sort(), all, 'string order is WAL order');
  });

  test('nextSegment / previousSegment', () => {
    assert.equal(nextSegment('000000010000000000000001', 16 * MiB), '000000010000000000000002');
    assert.equal(nextSegment('0000000100000000000000FF', 16 * MiB), '000000010000000100000000');
    assert.equal(nextSegment('0000000100000000000000fe.partial', 16 * MiB), '0000000100000000000000FF');
    assert.equal(nextSegment('0000000100000000000000FE', 16 * MiB, 90200), '000000010000000100000000');
    assert.equal(nextSegment('000000010000000000000FFF', MiB), '000000010000000100000000');
    assert.equal(nextSegment('000000010000000000000003', GiB), '000000010000000100000000');
    assert.equal(nextSegment('000000010000000000000001'), '000000010000000000000002');
    assert.throws(() => nextSegment('00000001FFFFFFFF000000FF', 16 * MiB), isBarmanError);

    assert.equal(previousSegment('000000010000000000000002', 16 * MiB), '000000010000000000000001');
    assert.equal(previousSegment('000000010000000100000000', 16 * MiB), '0000000100000000000000FF');
    assert.equal(previousSegment('000000010000000100000000', 16 * MiB, 90200), '0000000100000000000000FE');
    assert.equal(previousSegment('000000010000000100000000', MiB), '000000010000000000000FFF');
    assert.equal(previousSegment('000000010000000100000000', 64 * MiB), '00000001000000000000003F');
    assert.equal(previousSegment('000000010000000100000000', GiB), '000000010000000000000003');
    assert.throws(() => previousSegment('000000010000000000000000', 16 * MiB), isBarmanError);
    assert.throws(() => nextSegment('00000001.history', 16 * MiB), isBarmanError);

    for (const segSize of [MiB, 16 * MiB, 64 * MiB, GiB]) {
      let n = '000000030000002000000000';
      for (let i = 0; i < 10; i++) n = previousSegment(n, segSize);
      for (let i = 0; i < 10; i++) n = nextSegment(n, segSize);
      assert.equal(n, '000000030000002000000000');
    }
  });
});

describe('history files', () => {
  test('parse a typical file', () => {
    const text =
      '1\t0/3000000\tno recovery target specified\n' +
      '\n' +
      '# a comment\n' +
      '2\t16/B374D848\tbefore 2024-01-01 00:00:00+00\n' +
      '  3\t1F/0\tat restore point "before upgrade"  \n';
    assert.deepEqual(parseHistoryFile(text), [
      { parentTli: 1, switchpoint: 0x3000000n, reason: 'no recovery target specified' },
      { parentTli: 2, switchpoint: 0x16b374d848n, reason: 'before 2024-01-01 00:00:00+00' },
      { parentTli: 3, switchpoint: 0x1f00000000n, reason: 'at restore point "before upgrade"' },
    ]);
  });

  test('empty file, CRLF and missing reason', () => {
    assert.deepEqual(parseHistoryFile(''), []);
    assert.deepEqual(parseHistoryFile('# only a comment\n'), []);
    assert.deepEqual(parseHistoryFile('1\t0/3000000\r\n2\t0/5000000\tr\r\n'), [
      { parentTli: 1, switchpoint: 0x3000000n, reason: '' },
      { parentTli: 2, switchpoint: 0x5000000n, reason: 'r' },
    ]);
  });

  test('malformed lines throw', () => {
    for (const bad of ['x\t0/3000000\tr', '1\t03000000\tr', '1', '1\t\tr', '-1\t0/0\tr', '1\t0/G\tr', '99999999999\t0/0\tr']) {
      assert.throws(() => parseHistoryFile(bad), isBarmanError, JSON.stringify(bad));
    }
  });
});

describe('names from outside', () => {
  test('valid names pass', () => {
    for (const n of [SEG, '000000010000000a000000ff', `${SEG}.partial`, `${SEG}.00000028.backup`, '00000002.history']) {
      assert.doesNotThrow(() => assertSafeWalName(n));
    }
  });

  test('traversal and other bad names are rejected with exit code 3', () => {
    for (const n of [...BAD_NAMES, '..\\000000010000000000000001', '000000010000000000000001\\']) {
      assert.throws(
        () => assertSafeWalName(n),
        (err: unknown) => err instanceof BarmanError && err.exitCode === 3 && !err.message.includes('\n'),
        JSON.stringify(n),
      );
    }
    for (const v of [undefined, null, 42, {}, ['000000010000000000000001']]) {
      assert.throws(() => assertSafeWalName(v), isBarmanError);
    }
  });

  test('message names the value on one line', () => {
    assert.throws(
      () => assertSafeWalName('../x\ny'),
      (err: unknown) => err instanceof BarmanError && err.message === "'../x\\x0ay' is not a valid WAL file name",
    );
  });

  test('custom exit code', () => {
    assert.throws(() => assertSafeWalName('x', 1), (err: unknown) => err instanceof BarmanError && err.exitCode === 1);
  });
});
