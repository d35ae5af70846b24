/**
 * Property-based tests (fast-check, fixed seed) of every parser and writer of an on-disk or wire
 * format: round trips of generated values, refusal of malformed input with a BarmanError (never
 * another exception), and, where Barman's own implementation is the reference, differential tests
 * against the real thing: Python's repr()/str()/ConfigParser and libpq's conninfo parser
 * (psycopg2), through Debian's /usr/bin/python3 (installed with the Barman 3.4 test peer).
 *
 * BTS_FC_SEED / BTS_FC_RUNS override the seed and the number of runs (CI uses the defaults).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  BACKUP_INFO_KEYS,
  KEYS_NEWER_THAN_BARMAN_34,
  needsNewerBackupInfo,
  newBackupInfo,
  parseBackupInfo,
  serializeBackupInfo,
  type BackupInfo,
} from '../../src/catalog/backup-info.js';
import { PyFloat, PyTuple, parsePyLiteral, pyDict, pyRepr, type PyValue } from '../../src/catalog/pyliteral.js';
import { formatXlogDb, parseXlogDb, parseXlogDbLine, type XlogDbEntry } from '../../src/catalog/xlogdb.js';
import { parseIni } from '../../src/config/ini.js';
import { parseRetentionPolicy, parseSize } from '../../src/config/values.js';
import { formatConninfo, parseConninfo } from '../../src/postgres/conninfo.js';
import { BarmanError } from '../../src/util/errors.js';
import { PyDateTime, parsePyDatetime, pyFloatStr } from '../../src/util/pytime.js';
import {
  formatLsn,
  hashDir,
  isWalName,
  lsnToWal,
  nextSegment,
  parseLsn,
  parseWalName,
  previousSegment,
  segmentsPerXlogId,
  walName,
  walOffset,
  walToLsn,
} from '../../src/wal/names.js';

const SEED = Number(process.env.BTS_FC_SEED ?? 20261206);
const RUNS = Number(process.env.BTS_FC_RUNS ?? 300);
fc.configureGlobal({ seed: SEED, numRuns: RUNS });

const PYTHON = '/usr/bin/python3';
const hasPython = existsSync(PYTHON);

/** Run a Python script that reads a JSON document on stdin and prints one on stdout. */
function python<T>(script: string, input: unknown): T {
  const out = execFileSync(PYTHON, ['-c', script], { input: JSON.stringify(input), encoding: 'utf8', maxBuffer: 64 << 20 });
  return JSON.parse(out) as T;
}

/** `fn` either returns or throws a BarmanError: any other exception is a defect. */
function onlyBarmanErrors(fn: () => unknown): void {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof BarmanError)) throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Generators

const anyText = fc.string({ unit: 'grapheme', maxLength: 40 });
const asciiText = fc.string({ unit: fc.constantFrom(...'abcXYZ019 _-./\'"\\\n\t\r=:%#;[]{}(),'.split('')), maxLength: 30 });
const pyString = fc.oneof(anyText, asciiText, fc.string({ unit: 'binary', maxLength: 20 }));
const pyInt = fc.oneof(fc.integer(), fc.integer({ min: -1e15, max: 1e15 }));
const pyFloatArb = fc.double({ noNaN: true, noDefaultInfinity: true }).map((x) => new PyFloat(Object.is(x, -0) ? 0 : x));

const pyValue: fc.Arbitrary<PyValue> = fc.letrec<{ value: PyValue }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    pyInt,
    pyFloatArb,
    pyString,
    fc.array(tie('value'), { maxLength: 4 }),
    fc.array(tie('value'), { maxLength: 4 }).map((items) => new PyTuple(items)),
    fc.array(fc.tuple(pyString, tie('value')), { maxLength: 4 }).map((pairs) => pyDict(pairs)),
  ),
})).value;

const walSeg = fc.record(
  {
    tli: fc.integer({ min: 1, max: 0xffffffff }),
    log: fc.integer({ min: 0, max: 0xffffffff }),
    seg: fc.integer({ min: 0, max: 0xff }),
  },
  { noNullPrototype: true },
);
const walNameArb = walSeg.map(({ tli, log, seg }) => walName(tli, log, seg));
const segSizeArb = fc.integer({ min: 20, max: 30 }).map((p) => 2 ** p); // 1 MiB .. 1 GiB

// ---------------------------------------------------------------------------------------------

describe('property: Python literals (backup.info values)', () => {
  it('parsePyLiteral(pyRepr(v)) gives v back, and its repr is stable', () => {
    fc.assert(
      fc.property(pyValue, (v) => {
        const text = pyRepr(v);
        const back = parsePyLiteral(text);
        assert.equal(pyRepr(back), text);
        assert.deepEqual(back, v);
      }),
    );
  });

  it('any text either parses or is refused with a BarmanError', () => {
    fc.assert(fc.property(fc.oneof(anyText, asciiText), (t) => onlyBarmanErrors(() => parsePyLiteral(t))));
  });

  it("pyRepr is Python's repr() for strings, ints, floats and nested containers", { skip: !hasPython && 'no /usr/bin/python3' }, () => {
    // Characters of Unicode blocks assigned long before Python 3.11's Unicode 14 and Node's ICU:
    // a character assigned in between is printed here and escaped by that Python (the reader
    // takes both forms; see pyStrRepr).
    const cps = fc.oneof(fc.integer({ min: 0, max: 0x52f }), fc.integer({ min: 0x2000, max: 0x206f }), fc.integer({ min: 0x4e00, max: 0x9fa5 }), fc.integer({ min: 0xe000, max: 0xe0ff }), fc.integer({ min: 0x1f300, max: 0x1f5ff }));
    const printable = fc.array(cps, { maxLength: 12 }).map((a) => String.fromCodePoint(...a));
    // JSON carries what Python can rebuild: strings (lone surrogates excluded), ints, floats, lists, dicts.
    const jsonable: fc.Arbitrary<unknown> = fc.letrec<{ v: unknown }>((tie) => ({
      v: fc.oneof(
        { depthSize: 'small' },
        fc.constant(null),
        fc.boolean(),
        fc.integer(),
        fc.double({ noNaN: true, noDefaultInfinity: true }).filter((x) => !Number.isInteger(x)),
        printable,
        asciiText,
        fc.array(tie('v'), { maxLength: 3 }),
        fc.dictionary(printable, tie('v'), { maxKeys: 3, noNullPrototype: true }),
      ),
    })).v;
    const samples = fc.sample(jsonable, { seed: SEED, numRuns: 400 });
    const reprs = python<string[]>('import json,sys; print(json.dumps([repr(v) for v in json.load(sys.stdin)]))', samples);
    const toPy = (v: unknown): PyValue => {
      if (v === null || typeof v === 'boolean' || typeof v === 'string') return v;
      if (typeof v === 'number') return Number.isInteger(v) ? v : new PyFloat(v);
      if (Array.isArray(v)) return v.map(toPy);
      return pyDict(Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, toPy(x)] as const));
    };
    samples.forEach((s, i) => assert.equal(pyRepr(toPy(s)), reprs[i], JSON.stringify(s)));
  });
});

describe('property: pytime (xlog.db times, backup.info datetimes)', () => {
  it('pyFloatStr round-trips every finite double and always reads as a float', () => {
    fc.assert(
      fc.property(fc.double({ noNaN: true, noDefaultInfinity: true }), (x) => {
        const s = pyFloatStr(x);
        assert.equal(Number(s), x);
        assert.match(s, /[.e]|inf/);
      }),
    );
  });

  it("pyFloatStr is Python's str(float)", { skip: !hasPython && 'no /usr/bin/python3' }, () => {
    // (-0 does not survive JSON: Python would get 0)
    const xs = fc.sample(fc.oneof(fc.double({ noNaN: true, noDefaultInfinity: true }), fc.double({ min: 1e9, max: 2e9, noNaN: true })), { seed: SEED, numRuns: 1000 }).filter((x) => !Object.is(x, -0));
    const strs = python<string[]>('import json,sys; print(json.dumps([str(float(x)) for x in json.load(sys.stdin)]))', xs);
    xs.forEach((x, i) => assert.equal(pyFloatStr(x), strs[i], String(x)));
  });

  it("PyDateTime.format() is Python's str(datetime) and parsePyDatetime reads it back", { skip: !hasPython && 'no /usr/bin/python3' }, () => {
    const arb = fc.record(
      {
        micros: fc.bigInt({ min: -62135596800000000n + 86400000000n, max: 253402214400000000n - 86400000000n }),
        offsetMinutes: fc.integer({ min: -23 * 60 - 59, max: 23 * 60 + 59 }),
      },
      { noNullPrototype: true },
    );
    const samples = fc.sample(arb, { seed: SEED, numRuns: 500 });
    const dts = samples.map((s) => PyDateTime.fromEpochMicros(s.micros, s.offsetMinutes * 60));
    const strs = python<string[]>(
      [
        'import json,sys,datetime as d',
        'epoch=d.datetime(1970,1,1,tzinfo=d.timezone.utc)',
        'out=[]',
        'for m,o in json.load(sys.stdin):',
        '  out.append(str((epoch+d.timedelta(microseconds=int(m))).astimezone(d.timezone(d.timedelta(minutes=o)))))',
        'print(json.dumps(out))',
      ].join('\n'),
      samples.map((s) => [String(s.micros), s.offsetMinutes]),
    );
    dts.forEach((dt, i) => {
      assert.equal(dt.format(), strs[i]);
      const back = parsePyDatetime(dt.format());
      assert.equal(back.epochMicros, dt.epochMicros);
      assert.equal(back.offsetSeconds, dt.offsetSeconds);
    });
  });

  it('any text is a datetime or a BarmanError', () => {
    fc.assert(fc.property(fc.oneof(anyText, asciiText, fc.string({ unit: fc.constantFrom(...'0123456789-: .+T'.split('')), maxLength: 35 })), (t) => onlyBarmanErrors(() => parsePyDatetime(t))));
  });
});

describe('property: backup.info', () => {
  const dt = fc
    .record({ micros: fc.bigInt({ min: 0n, max: 4102444800000000n }), off: fc.integer({ min: -14 * 60, max: 14 * 60 }) }, { noNullPrototype: true })
    .map(({ micros, off }) => PyDateTime.fromEpochMicros(micros, off * 60));
  const oneLine = fc.string({ unit: 'grapheme', maxLength: 30 }).map((s) => s.replace(/[\r\n\u0085\u2028\u2029\u000b\u000c\u001c-\u001e]/g, ' ').trim());
  const id = fc.date({ min: new Date('2000-01-01'), max: new Date('2099-12-31'), noInvalidDate: true }).map((d) => d.toISOString().replace(/[-:]/g, '').slice(0, 15));
  const info: fc.Arbitrary<BackupInfo> = fc
    .record(
      {
        backup_label: fc.option(pyString.filter((s) => s !== '')),
        backup_name: fc.option(oneLine.filter((s) => s !== '' && s !== 'None')),
        begin_offset: fc.option(fc.nat()),
        begin_time: fc.option(dt),
        begin_wal: fc.option(walNameArb),
        status: fc.constantFrom('EMPTY', 'STARTED', 'WAITING_FOR_WALS', 'DONE', 'FAILED', 'SYNCING'),
        error: fc.option(oneLine.filter((s) => s !== '' && s !== 'None')),
        size: fc.option(fc.nat()),
        cluster_size: fc.option(fc.nat()),
        data_checksums: fc.option(fc.constantFrom('on', 'off')),
        parent_backup_id: fc.option(id),
        children_backup_ids: fc.option(fc.array(id, { minLength: 1, maxLength: 3 })),
        encryption: fc.option(fc.constant('gpg')),
        tablespaces: fc.option(
          fc.array(fc.record({ name: oneLine.filter((s) => s !== ''), oid: fc.nat(), location: oneLine.filter((s) => s !== '') }, { noNullPrototype: true }), { minLength: 1, maxLength: 3 }),
        ),
        copy_stats: fc.option(fc.array(fc.tuple(fc.string({ maxLength: 8 }), pyFloatArb), { minLength: 1, maxLength: 3 }).map((p) => pyDict(p) as PyValue)),
        version: fc.option(fc.integer({ min: 90000, max: 190000 })),
        xlog_segment_size: segSizeArb,
      },
      { requiredKeys: ['status', 'xlog_segment_size'], noNullPrototype: true },
    )
    .map((fields) => newBackupInfo(fields as Partial<BackupInfo>));

  it('serialize → parse → serialize is stable, the values come back, and Barman 3.4 would read it', () => {
    fc.assert(
      fc.property(info, (bi) => {
        const text = serializeBackupInfo(bi);
        const back = parseBackupInfo(text);
        assert.equal(serializeBackupInfo(back), text);
        for (const k of BACKUP_INFO_KEYS) {
          if (KEYS_NEWER_THAN_BARMAN_34.has(k) && !needsNewerBackupInfo(bi)) continue;
          const want = bi[k];
          const got = back[k];
          if (want instanceof PyDateTime) assert.equal((got as PyDateTime).epochMicros, want.epochMicros, k);
          else assert.deepEqual(got, want, k);
        }
        const keys = text.split('\n').filter(Boolean).map((l) => l.slice(0, l.indexOf('=')));
        if (!needsNewerBackupInfo(bi)) for (const k of keys) assert.ok(!KEYS_NEWER_THAN_BARMAN_34.has(k as never), k);
        assert.deepEqual(keys, [...keys].sort());
      }),
    );
  });

  it('any text is a backup.info or a BarmanError', () => {
    const line = fc.oneof(
      fc.constantFrom(...BACKUP_INFO_KEYS).chain((k) => fc.oneof(anyText, asciiText).map((v) => `${k}=${v}`)),
      anyText,
      asciiText,
    );
    fc.assert(fc.property(fc.array(line, { maxLength: 8 }), (lines) => onlyBarmanErrors(() => parseBackupInfo(lines.join('\n')))));
  });
});

describe('property: xlog.db', () => {
  const entry: fc.Arbitrary<XlogDbEntry> = fc.record(
    {
      name: fc.oneof(walNameArb, walNameArb.map((n) => `${n}.00000028.backup`), fc.integer({ min: 1, max: 0xffff }).map((t) => `${t.toString(16).toUpperCase().padStart(8, '0')}.history`)),
      size: fc.option(fc.nat()),
      time: fc.option(fc.double({ min: 0, max: 4e9, noNaN: true })),
      compression: fc.option(fc.constantFrom('gzip', 'bzip2', 'xz', 'zstd', 'lz4', 'snappy', 'pigz', 'custom')),
      encryption: fc.option(fc.constant('gpg')),
    },
    { noNullPrototype: true },
  );

  it('format → parse gives every entry back exactly; lines have four columns unless encrypted', () => {
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 20 }), (entries) => {
        const text = formatXlogDb(entries);
        assert.deepEqual(parseXlogDb(text), entries);
        for (const [i, line] of text.split('\n').filter(Boolean).entries()) {
          assert.equal(line.split('\t').length, entries[i]?.encryption ? 5 : 4, line);
        }
      }),
    );
  });

  it('any line is an entry, blank, or a BarmanError', () => {
    fc.assert(fc.property(fc.oneof(anyText, asciiText, fc.array(fc.oneof(walNameArb, asciiText), { maxLength: 6 }).map((a) => a.join('\t'))), (l) => onlyBarmanErrors(() => parseXlogDbLine(l))));
  });
});

describe('property: WAL names and LSN arithmetic', () => {
  it('names and LSNs round-trip for every segment size', () => {
    fc.assert(
      fc.property(segSizeArb, fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.integer({ min: 1, max: 0xffffffff }), (segSize, lsn, tli) => {
        const name = lsnToWal(lsn, tli, segSize);
        assert.ok(isWalName(name));
        assert.equal(hashDir(name), name.slice(0, 16));
        assert.equal(walToLsn(name, walOffset(lsn, segSize), segSize), lsn);
        assert.equal(parseLsn(formatLsn(lsn)), lsn);
        const id = parseWalName(name);
        assert.equal(id.tli, tli);
        assert.ok(id.seg <= segmentsPerXlogId(segSize), name);
      }),
    );
  });

  it('nextSegment and previousSegment are inverses', () => {
    fc.assert(
      fc.property(segSizeArb, fc.integer({ min: 1, max: 0xffff }), fc.integer({ min: 1, max: 0xfffff }), fc.nat(), (segSize, tli, log, s) => {
        const seg = s % (segmentsPerXlogId(segSize) + 1);
        const name = walName(tli, log, seg);
        assert.equal(previousSegment(nextSegment(name, segSize), segSize), name);
        assert.equal(nextSegment(previousSegment(name, segSize), segSize), name);
      }),
    );
  });

  it('any text is an LSN or a BarmanError', () => {
    fc.assert(fc.property(fc.oneof(anyText, fc.string({ unit: fc.constantFrom(...'0123456789ABCDEFabcdef/xX '.split('')), maxLength: 20 })), (t) => onlyBarmanErrors(() => parseLsn(t))));
  });
});

describe('property: configuration (INI) and option values', () => {
  const keyArb = fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz_'.split('')), minLength: 1, maxLength: 12 });
  const valueArb = fc.string({ unit: fc.constantFrom(...'abcXYZ 019/._-=,"\'%()s'.split('')), maxLength: 20 }).map((v) => v.trim());
  const sectionArb = fc.string({ unit: fc.constantFrom(...'abcdefgh0123-_'.split('')), minLength: 1, maxLength: 8 });
  const doc = fc.array(fc.tuple(sectionArb, fc.array(fc.tuple(keyArb, valueArb), { maxLength: 5 })), { minLength: 1, maxLength: 4 });

  const render = (d: Array<[string, Array<[string, string]>]>) =>
    d.map(([sec, kvs]) => `[${sec}]\n${kvs.map(([k, v], i) => `${i % 2 ? k.toUpperCase() : k}${i % 3 === 1 ? ':' : ' ='} ${v}`).join('\n')}\n`).join('\n');

  it("parseIni agrees with Python's ConfigParser(strict=False, interpolation=None)", { skip: !hasPython && 'no /usr/bin/python3' }, () => {
    const samples = fc.sample(doc, { seed: SEED, numRuns: 200 });
    const texts = samples.map(render);
    const py = python<Array<Record<string, Record<string, string>>>>(
      [
        'import json,sys,configparser',
        'out=[]',
        'for t in json.load(sys.stdin):',
        '  c=configparser.ConfigParser(strict=False, interpolation=None)',
        '  c.read_string(t)',
        '  out.append({s: {k: c.get(s,k,raw=True) for k in c.options(s)} for s in c.sections()})',
        'print(json.dumps(out))',
      ].join('\n'),
      texts,
    );
    texts.forEach((t, i) => {
      const ours = parseIni(t, 'f');
      const got: Record<string, Record<string, string>> = {};
      for (const [name, sec] of ours.sections) got[name] = Object.fromEntries([...sec].map(([k, v]) => [k, v.value]));
      assert.deepEqual(got, py[i], t);
    });
  });

  it('retention policies: every accepted text prints back as itself, anything else is refused', () => {
    const good = fc.oneof(
      fc.tuple(fc.integer({ min: 1, max: 1000 }), fc.constantFrom('redundancy', 'REDUNDANCY', 'Redundancy')).map(([n, w]) => `${w} ${n}`),
      fc.tuple(fc.integer({ min: 1, max: 1000 }), fc.constantFrom('day', 'days', 'WEEK', 'weeks', 'Month', 'MONTHS')).map(([n, u]) => `recovery window of ${n} ${u}`),
    );
    fc.assert(
      fc.property(good, (t) => {
        const p = parseRetentionPolicy(t);
        assert.equal(parseRetentionPolicy(p.text).text, p.text);
      }),
    );
    fc.assert(
      fc.property(fc.oneof(anyText, asciiText), (t) => {
        try {
          parseRetentionPolicy(t);
          assert.match(t, /^\s*(redundancy\s+\d+|recovery\s+window\s+of\s+\d+\s+(day|week|month)s?)\s*$/i);
        } catch (err) {
          assert.ok(err instanceof Error);
        }
      }),
    );
  });

  it('sizes: N[k|Ki|M|Mi|G|Gi|T|Ti][B] and nothing else', () => {
    fc.assert(
      fc.property(fc.nat({ max: 1e6 }), fc.constantFrom('', 'k', 'Ki', 'M', 'Mi', 'G', 'Gi', 'T', 'Ti'), fc.boolean(), (n, unit, b) => {
        const mult: Record<string, number> = { '': 1, k: 1e3, Ki: 1024, M: 1e6, Mi: 1024 ** 2, G: 1e9, Gi: 1024 ** 3, T: 1e12, Ti: 1024 ** 4 };
        assert.equal(parseSize(`${n}${unit}${b ? 'B' : ''}`), n * (mult[unit] ?? 0));
      }),
    );
  });
});

describe('property: conninfo (libpq key=value strings)', () => {
  const key = fc.constantFrom('host', 'port', 'user', 'dbname', 'password', 'application_name', 'sslmode', 'options', 'connect_timeout', 'sslrootcert', 'service');
  const value = fc.string({ unit: fc.constantFrom(..."abc XYZ019='\\\t-_./@:=".split('')), maxLength: 16 });
  const ci = fc.dictionary(key, value, { minKeys: 1, maxKeys: 6, noNullPrototype: true });

  it('formatConninfo → parseConninfo gives the same keywords and values', () => {
    fc.assert(fc.property(ci, (c) => assert.deepEqual(parseConninfo(formatConninfo(c)), c)));
  });

  it("formatConninfo's strings mean the same to libpq (psycopg2.extensions.parse_dsn)", { skip: !hasPython && 'no /usr/bin/python3' }, () => {
    const samples = fc.sample(ci, { seed: SEED, numRuns: 300 });
    const py = python<Array<Record<string, string>>>(
      'import json,sys; from psycopg2.extensions import parse_dsn; print(json.dumps([parse_dsn(s) for s in json.load(sys.stdin)]))',
      samples.map(formatConninfo),
    );
    samples.forEach((c, i) => assert.deepEqual(py[i], c, formatConninfo(c)));
  });

  it('any text is a conninfo or a BarmanError', () => {
    fc.assert(fc.property(fc.oneof(anyText, asciiText, value), (t) => onlyBarmanErrors(() => parseConninfo(t))));
  });
});
