import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  PyDateTime,
  ctime,
  formatPyDatetime,
  localNowPyDateTime,
  localOffsetSecondsAt,
  parsePyDatetime,
  pyFloatStr,
  pyStatMtime,
} from '../../src/util/pytime.js';

// Local-time behaviour is checked in a zone with DST; Node honours TZ changes at run time.
process.env.TZ = 'Europe/Rome';

describe('pyFloatStr', () => {
  // expected values produced by CPython 3.11 str(float)
  const cases: Array<[number, string]> = [
    [1718291829, '1718291829.0'],
    [1718291829.7231345, '1718291829.7231345'],
    [0.1, '0.1'],
    [1e-5, '1e-05'],
    [1e16, '1e+16'],
    [123456789.123, '123456789.123'],
    [-0, '-0.0'],
    [12, '12.0'],
    [10.376866, '10.376866'],
    [-9.999999717180685e-10, '-9.999999717180685e-10'],
    [Infinity, 'inf'],
    [NaN, 'nan'],
  ];
  for (const [x, s] of cases) it(s, () => assert.equal(pyFloatStr(x), s));
});

describe('pyStatMtime', () => {
  it('matches CPython st_mtime (sec + nsec * 1e-9), not ns / 1e9', () => {
    assert.equal(pyFloatStr(pyStatMtime(1718299029723134567n)), '1718299029.7231345');
    assert.equal(pyFloatStr(pyStatMtime(1795321486355237579n)), '1795321486.3552375');
    assert.notEqual(pyStatMtime(1795321486355237579n), Number(1795321486355237579n) / 1e9);
    assert.equal(pyFloatStr(pyStatMtime(1718299029000000000n)), '1718299029.0');
  });

  it('floors negative times like CPython', () => {
    assert.equal(pyFloatStr(pyStatMtime(-1n)), '-9.999999717180685e-10');
  });
});

describe('formatPyDatetime', () => {
  const d = new Date('2024-03-01T09:00:01.123Z');

  it('uses milliseconds as microseconds by default', () => {
    assert.equal(formatPyDatetime(d, 60), '2024-03-01 10:00:01.123000+01:00');
  });

  it('takes explicit microseconds', () => {
    assert.equal(formatPyDatetime(d, 60, 123456), '2024-03-01 10:00:01.123456+01:00');
    assert.equal(formatPyDatetime(d, 60, 7), '2024-03-01 10:00:01.000007+01:00');
  });

  it('omits the fraction when microseconds are 0', () => {
    assert.equal(formatPyDatetime(d, 60, 0), '2024-03-01 10:00:01+01:00');
    assert.equal(formatPyDatetime(new Date('2024-03-01T09:00:01Z'), 0), '2024-03-01 09:00:01+00:00');
  });

  it('negative and odd offsets', () => {
    assert.equal(formatPyDatetime(d, -300, 0), '2024-03-01 04:00:01-05:00');
    assert.equal(formatPyDatetime(d, -330, 0), '2024-03-01 03:30:01-05:30');
    assert.equal(formatPyDatetime(d, -30, 0), '2024-03-01 08:30:01-00:30');
    assert.equal(formatPyDatetime(d, 345, 0), '2024-03-01 14:45:01+05:45');
    // crossing the date line backwards
    assert.equal(formatPyDatetime(new Date('2024-03-01T02:00:00Z'), -600), '2024-02-29 16:00:00-10:00');
  });

  it('defaults to the local offset', () => {
    assert.equal(formatPyDatetime(new Date('2024-07-01T10:00:00Z')), '2024-07-01 12:00:00+02:00');
    assert.equal(formatPyDatetime(new Date('2024-01-01T10:00:00Z')), '2024-01-01 11:00:00+01:00');
  });
});

describe('PyDateTime', () => {
  const t = parsePyDatetime('2024-06-13 17:17:09.723134+02:00');

  it('keeps fields, microseconds and offset', () => {
    assert.equal(t.year, 2024);
    assert.equal(t.month, 6);
    assert.equal(t.day, 13);
    assert.equal(t.hour, 17);
    assert.equal(t.minute, 17);
    assert.equal(t.second, 9);
    assert.equal(t.microsecond, 723134);
    assert.equal(t.offsetSeconds, 7200);
    assert.equal(t.offsetMinutes, 120);
    assert.equal(t.epochMicros, 1718291829723134n);
  });

  it('timestamp(), JS Date, ISO forms', () => {
    assert.equal(pyFloatStr(t.epochSeconds), '1718291829.723134');
    assert.equal(t.epochMillis, 1718291829723);
    assert.equal(t.toDate().toISOString(), '2024-06-13T15:17:09.723Z');
    assert.equal(t.format(), '2024-06-13 17:17:09.723134+02:00');
    assert.equal(t.isoformat(), '2024-06-13T17:17:09.723134+02:00');
    assert.equal(String(t), '2024-06-13 17:17:09.723134+02:00');
    assert.equal(JSON.stringify({ t }), '{"t":"2024-06-13 17:17:09.723134+02:00"}');
  });

  it('ctime uses its own wall clock', () => {
    assert.equal(t.ctime(), 'Thu Jun 13 17:17:09 2024');
    assert.equal(ctime(t), 'Thu Jun 13 17:17:09 2024');
    assert.equal(t.withOffset(-4 * 3600).ctime(), 'Thu Jun 13 11:17:09 2024');
  });

  it('differences like timedelta.total_seconds()', () => {
    const t2 = parsePyDatetime('2024-06-13 17:17:20.1+02:00');
    assert.equal(pyFloatStr(PyDateTime.diffSeconds(t2, t)), '10.376866');
    assert.equal(t.compare(t2), -1);
    assert.equal(t2.compare(t), 1);
    assert.equal(t.compare(t.withOffset(0)), 0);
    assert.ok(t.equals(t.withOffset(-3600)));
    assert.equal(t.withOffset(0).format(), '2024-06-13 15:17:09.723134+00:00');
  });

  it('constructors', () => {
    assert.equal(PyDateTime.fromEpochMicros(1718291829723134n, 7200).format(), t.format());
    assert.equal(PyDateTime.fromEpochMicros(1718291829723134, 7200).format(), t.format());
    assert.equal(PyDateTime.fromEpochMicros(0n).format(), '1970-01-01 01:00:00+01:00');
    assert.equal(
      PyDateTime.fromFields({ year: 2024, month: 2, day: 29, hour: 23, minute: 59, second: 59, microsecond: 1 }, -3600).format(),
      '2024-02-29 23:59:59.000001-01:00',
    );
    assert.equal(PyDateTime.fromFields({ year: 2024, month: 7, day: 1 }).format(), '2024-07-01 00:00:00+02:00');
    assert.equal(PyDateTime.fromFields({ year: 2024, month: 7, day: 1 }, 0).format(), '2024-07-01 00:00:00+00:00');
    assert.equal(PyDateTime.fromDate(new Date('2024-07-01T10:00:00.5Z')).format(), '2024-07-01 12:00:00.500000+02:00');
    assert.equal(PyDateTime.fromDate(new Date('2024-07-01T10:00:00.5Z'), 0, 999999).format(), '2024-07-01 10:00:00.999999+00:00');
    assert.equal(PyDateTime.fromEpochMicros(-1n, 0).format(), '1969-12-31 23:59:59.999999+00:00');
  });

  it('year range and zero padding', () => {
    const old = PyDateTime.fromFields({ year: 999, month: 12, day: 31, hour: 23, minute: 59, second: 59, microsecond: 999999 }, 0);
    assert.equal(old.format(), '0999-12-31 23:59:59.999999+00:00');
    assert.equal(old.ctime(), 'Tue Dec 31 23:59:59 0999');
    const first = PyDateTime.fromFields({ year: 1, month: 1, day: 1 }, 0);
    assert.equal(first.format(), '0001-01-01 00:00:00+00:00');
    assert.equal(pyFloatStr(first.epochSeconds), '-62135596800.0');
    assert.equal(PyDateTime.fromFields({ year: 50, month: 1, day: 1 }, 0).format(), '0050-01-01 00:00:00+00:00');
  });

  it('rejects invalid fields and offsets', () => {
    assert.throws(() => PyDateTime.fromFields({ year: 2023, month: 2, day: 29 }, 0), RangeError);
    assert.throws(() => PyDateTime.fromFields({ year: 2024, month: 13, day: 1 }, 0), RangeError);
    assert.throws(() => PyDateTime.fromFields({ year: 2024, month: 1, day: 1, hour: 24 }, 0), RangeError);
    assert.throws(() => PyDateTime.fromFields({ year: 2024, month: 1, day: 1, microsecond: 1e6 }, 0), RangeError);
    assert.throws(() => PyDateTime.fromFields({ year: 0, month: 1, day: 1 }, 0), RangeError);
    assert.throws(() => PyDateTime.fromFields({ year: 2024, month: 1, day: 1 }, 86400), RangeError);
    assert.throws(() => PyDateTime.fromFields({ year: 2024, month: 1, day: 1 }, 0.5), RangeError);
    assert.throws(() => PyDateTime.fromDate(new Date(NaN)), RangeError);
  });

  it('offsets with seconds print as +HH:MM:SS', () => {
    const x = PyDateTime.fromFields({ year: 2024, month: 1, day: 5, hour: 3, minute: 4, second: 5, microsecond: 7 }, 5 * 3600 + 45 * 60 + 10);
    assert.equal(x.format(), '2024-01-05 03:04:05.000007+05:45:10');
    assert.equal(parsePyDatetime(x.format()).format(), x.format());
  });
});

describe('parsePyDatetime', () => {
  const same: string[] = [
    '2024-03-01 10:00:01.123456+01:00',
    '2024-03-01 10:00:01+01:00',
    '2024-03-01 10:00:01.000001-05:00',
    '2024-12-31 23:59:59.999999-00:30',
    '2024-01-05 03:04:05-05:30',
    '1999-01-01 00:00:00+00:00',
    '2024-06-13 17:17:09.723134+14:00',
    '2024-06-13 17:17:09.723134-12:00',
  ];
  for (const s of same) it(`round trips ${s}`, () => assert.equal(parsePyDatetime(s).format(), s));

  const lenient: Array<[string, string]> = [
    ['2024-03-01T10:00:01.123456+01:00', '2024-03-01 10:00:01.123456+01:00'],
    ['  2024-03-01 10:00:01.5+01:00  ', '2024-03-01 10:00:01.500000+01:00'],
    ['2024-03-01 10:00:01,25+01:00', '2024-03-01 10:00:01.250000+01:00'],
    ['2024-03-01 10:00:01.1234567+01:00', '2024-03-01 10:00:01.123456+01:00'],
    ['2024-03-01 10:00:01 +01:00', '2024-03-01 10:00:01+01:00'],
    ['2024-03-01 10:00:01+0100', '2024-03-01 10:00:01+01:00'],
    ['2024-03-01 10:00:01+01', '2024-03-01 10:00:01+01:00'],
    ['2024-03-01 10:00:01-0530', '2024-03-01 10:00:01-05:30'],
    ['2024-03-01 10:00:01Z', '2024-03-01 10:00:01+00:00'],
    ['2024-03-01T10:00:01z', '2024-03-01 10:00:01+00:00'],
    ['2024-03-01 10:00:01 UTC', '2024-03-01 10:00:01+00:00'],
    ['2024-03-01 10:00+01:00', '2024-03-01 10:00:00+01:00'],
    ['2024-3-1 9:00:01+01:00', '2024-03-01 09:00:01+01:00'],
    ['20240301T100001+01:00', '2024-03-01 10:00:01+01:00'],
    ['2024-03-01+01:00', '2024-03-01 00:00:00+01:00'],
    ['2024-03-01 10:00:01+01:00:00.000000', '2024-03-01 10:00:01+01:00'],
  ];
  for (const [input, expected] of lenient) {
    it(`lenient ${JSON.stringify(input)}`, () => assert.equal(parsePyDatetime(input).format(), expected));
  }

  it('naive values are local time (DST aware)', () => {
    const summer = parsePyDatetime('2024-07-01 12:00:00.5');
    assert.equal(summer.format(), '2024-07-01 12:00:00.500000+02:00');
    assert.equal(summer.offsetMinutes, 120);
    assert.equal(summer.toDate().toISOString(), '2024-07-01T10:00:00.500Z');
    assert.equal(parsePyDatetime('2024-01-01 12:00:00').format(), '2024-01-01 12:00:00+01:00');
    assert.equal(parsePyDatetime('2024-01-01').format(), '2024-01-01 00:00:00+01:00');
    assert.equal(parsePyDatetime('20240101T120000').format(), '2024-01-01 12:00:00+01:00');
  });

  it('ctime text', () => {
    assert.equal(parsePyDatetime('Mon Sep  2 15:12:03 2024').format(), '2024-09-02 15:12:03+02:00');
    assert.equal(parsePyDatetime('Mon Sep  2 15:12:03 2024 +00:00').format(), '2024-09-02 15:12:03+00:00');
  });

  const bad = [
    '',
    'None',
    'yesterday',
    '2024-13-01 00:00:00',
    '2023-02-29 00:00:00',
    '2024-01-01 25:00:00',
    '2024-01-01 10:61:00',
    '2024-01-01 10:00:00+25:00',
    '2024-01-01 10:00:00+01:99',
    '2024-01-01 10:00:00 CEST',
    '2024-01-01 10:00:00+01:00:00.5',
    '2024-01-01 10:00:00+01:00 junk',
  ];
  for (const s of bad) {
    it(`rejects ${JSON.stringify(s)}`, () => assert.throws(() => parsePyDatetime(s), /Cannot parse datetime/));
  }
});

describe('ctime', () => {
  it('formats a JS Date in local time with a space-padded day', () => {
    assert.equal(ctime(new Date(1725282723 * 1000)), 'Mon Sep  2 15:12:03 2024');
    assert.equal(ctime(new Date('2024-09-12T03:02:03Z')), 'Thu Sep 12 05:02:03 2024');
    assert.equal(ctime(new Date('2024-12-31T23:30:00Z')), 'Wed Jan  1 00:30:00 2025');
  });
});

describe('localNowPyDateTime', () => {
  it('is now, at the local offset, with microseconds', () => {
    const before = Date.now();
    const now = localNowPyDateTime();
    const after = Date.now();
    assert.ok(now.epochMillis >= before && now.epochMillis <= after);
    assert.equal(now.offsetSeconds, localOffsetSecondsAt(now.epochMillis));
    assert.match(now.format(), /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?[+-]\d\d:\d\d$/);
    assert.equal(parsePyDatetime(now.format()).epochMicros, now.epochMicros);
  });
});
