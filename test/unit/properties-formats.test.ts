/**
 * Property-based tests (fast-check, fixed seed) of three more formats, beside properties.test.ts:
 *   - sync-info JSON: what a primary writes (walSyncJson, backupSyncJson, pyJsonDumps) parses
 *     back on the passive node (parsePrimaryInfo) to the same values; malformed answers are
 *     refused with one line;
 *   - tar members: what barman-wal-archive writes (writeTarStream) put-wal reads back
 *     (receiveWalTar) byte for byte; member names from outside (long, PAX, `..`, absolute,
 *     control characters) are accepted only when they are bare WAL names, and a refused stream
 *     leaves incoming/ as it was;
 *   - retention policy strings: every spelling Barman accepts (any case, any blank between the
 *     words) means the same policy here, anything else is refused; differential against Barman
 *     3.4's own regular expressions through /usr/bin/python3.
 *
 * BTS_FC_SEED / BTS_FC_RUNS override the seed and the number of runs (CI uses the defaults).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { newBackupInfo } from '../../src/catalog/backup-info.js';
import type { XlogDbEntry } from '../../src/catalog/xlogdb.js';
import { parseRetentionPolicy } from '../../src/config/values.js';
import { parsePrimaryInfo, type PrimaryBackup } from '../../src/geo/primary-info.js';
import { backupInfoFromPrimary } from '../../src/geo/primary-backup.js';
import { backupSyncJson, walSyncJson } from '../../src/geo/sync-info.js';
import { pyJsonDumps, type PyJsonValue } from '../../src/util/pyjson.js';
import { checkMemberName, receiveWalTar } from '../../src/wal/put-wal.js';
import { walName, walNameKind } from '../../src/wal/names.js';
import { writeTarStream } from '../../src/walclient/push.js';
import { BarmanError } from '../../src/util/errors.js';
import { buildTar, paxData, sumsFile, type MemberSpec } from '../faults/tar.js';
import { makeTestServer } from '../helpers/server-fixture.js';

const SEED = Number(process.env.BTS_FC_SEED ?? 20261206);
const RUNS = Number(process.env.BTS_FC_RUNS ?? 300);
/** Properties that write files: fewer runs. */
const IO_RUNS = Math.max(10, Math.floor(RUNS / 10));

const PYTHON = '/usr/bin/python3';
const hasPython = fs.existsSync(PYTHON);

let tmpRoot = '';
let serial = 0;
before(async () => {
  tmpRoot = await fsp.mkdtemp(path.join(os.tmpdir(), 'barman-props-'));
});
after(async () => {
  await fsp.rm(tmpRoot, { recursive: true, force: true });
});

/** One line, no stack: what a command prints for a refusal. */
function assertOneLine(err: unknown): void {
  assert.ok(err instanceof Error, `an Error, not ${String(err)}`);
  assert.ok(err.message.length > 0 && !err.message.includes('\n'), `one line: ${JSON.stringify(err.message)}`);
}

// ---------------------------------------------------------------------------------------------
// Generators

const walSeg = fc.record({ tli: fc.integer({ min: 1, max: 0xffffffff }), log: fc.integer({ min: 0, max: 0xffffffff }), seg: fc.integer({ min: 0, max: 0xff }) }, { noNullPrototype: true });
const segmentName = walSeg.map(({ tli, log, seg }) => walName(tli, log, seg));
/** Every kind of WAL archive name: segment, .partial, .backup label, .history. */
const anyWalName = fc.oneof(
  segmentName,
  segmentName.map((s) => `${s}.partial`),
  fc.tuple(segmentName, fc.integer({ min: 0, max: 0xffffff })).map(([s, off]) => `${s}.${off.toString(16).toUpperCase().padStart(8, '0')}.backup`),
  fc.integer({ min: 2, max: 0xffffffff }).map((t) => `${t.toString(16).toUpperCase().padStart(8, '0')}.history`),
);
const compressionArb = fc.constantFrom(null, 'gzip', 'bzip2', 'zstd', 'lz4', 'xz', 'snappy', 'custom');
/** xlog.db times: seconds with a fraction, as Python's time.time() gives them. */
const walTime = fc.oneof(fc.constant(null), fc.integer({ min: 0, max: 4_000_000_000 }), fc.integer({ min: 0, max: 4_000_000_000_000 }).map((ms) => ms / 1000));
const xlogEntry: fc.Arbitrary<XlogDbEntry> = fc.record(
  {
    name: anyWalName,
    size: fc.oneof(fc.constant(null), fc.nat({ max: 2 ** 40 })),
    time: walTime,
    compression: compressionArb,
    encryption: fc.constantFrom(null, 'gpg'),
  },
  { noNullPrototype: true },
);
const backupIdArb = fc.date({ min: new Date('2000-01-01T00:00:00Z'), max: new Date('2099-12-31T23:59:59Z'), noInvalidDate: true }).map((d) => d.toISOString().replace(/[-:]/g, '').slice(0, 15));
const statusArb = fc.constantFrom('DONE', 'FAILED', 'STARTED', 'WAITING_FOR_WALS', 'EMPTY', 'SYNCING');

/** The sync-info document a primary writes (buildSyncInfo's shape, without the disk). */
function syncDoc(lastPosition: number, lastName: string, wals: XlogDbEntry[], backups: Array<[string, string, string]>): string {
  const doc = new Map<string, PyJsonValue>();
  doc.set('last_position', lastPosition);
  doc.set('last_name', lastName);
  doc.set('backups', new Map(backups.map(([id, status, beginWal]) => [id, backupSyncJson(id, newBackupInfo({ status, begin_wal: beginWal, end_wal: beginWal, timeline: 1, version: 150004 }))])));
  doc.set('wals', wals.map(walSyncJson));
  doc.set('version', '3.4.0');
  const cfg = new Map<string, PyJsonValue>();
  cfg.set('basebackups_directory', '/var/lib/barman/pg/base');
  cfg.set('compression', 'gzip');
  cfg.set('name', 'pg');
  cfg.set('wals_directory', '/var/lib/barman/pg/wals');
  doc.set('config', cfg);
  return pyJsonDumps(doc);
}

// ---------------------------------------------------------------------------------------------

describe('property: sync-info JSON (primary writes, passive parses)', () => {
  it('round trip: positions, WAL entries and backups come back as written', () => {
    fc.assert(
      fc.property(
        fc.nat({ max: 2 ** 40 }),
        fc.array(xlogEntry, { maxLength: 12 }),
        fc.uniqueArray(fc.tuple(backupIdArb, statusArb, segmentName), { maxLength: 4, selector: ([id]) => id }),
        (pos, wals, backups) => {
          const lastName = wals.length ? (wals[wals.length - 1] as XlogDbEntry).name : '';
          const info = parsePrimaryInfo(syncDoc(pos, lastName, wals, backups));
          assert.equal(info.last_position, pos);
          assert.equal(info.last_name, lastName);
          assert.equal(info.wals.length, wals.length);
          info.wals.forEach((w, i) => {
            const e = wals[i] as XlogDbEntry;
            assert.equal(w.name, e.name);
            assert.equal(w.size, e.size);
            assert.equal(w.compression, e.compression);
            assert.equal(w.encryption, e.encryption);
            if (e.time === null) assert.equal(w.time, null);
            else assert.equal(w.time, e.time, 'Python float repr round trips exactly');
          });
          assert.deepEqual(Object.keys(info.backups).sort(), backups.map(([id]) => id).sort());
          for (const [id, status, beginWal] of backups) {
            const b = backupInfoFromPrimary(id, info.backups[id] as PrimaryBackup);
            assert.equal(b.status, status);
            assert.equal(b.begin_wal, beginWal);
            assert.equal(b.version, 150004);
          }
        },
      ),
      { seed: SEED, numRuns: RUNS },
    );
  });

  it('malformed answers are refused with one line, never half-read', () => {
    const good = JSON.parse(syncDoc(1234, '000000010000000000000002', [{ name: '000000010000000000000002', size: 16, time: 1.5, compression: null, encryption: null }], [['20240101T000000', 'DONE', '000000010000000000000002']])) as Record<string, unknown>;
    const hostileName = fc.constantFrom('../../etc/passwd', '/etc/passwd', '000000010000000000000002/../x', 'xlog.db', '', '00000001000000000000000G', '000000010000000000000002\n');
    const mutation: fc.Arbitrary<[string, (d: Record<string, unknown>) => void]> = fc.oneof(
      fc.constantFrom<[string, (d: Record<string, unknown>) => void]>(
        ['no last_position', (d) => delete d.last_position],
        ['negative last_position', (d) => (d.last_position = -1)],
        ['fractional last_position', (d) => (d.last_position = 1.5)],
        ['string last_position', (d) => (d.last_position = '12')],
        ['wals not a list', (d) => (d.wals = {})],
        ['backups a list', (d) => (d.backups = [])],
        ['config missing', (d) => delete d.config],
        ['relative wals_directory', (d) => ((d.config as Record<string, unknown>).wals_directory = 'pg/wals')],
        ['version a number', (d) => (d.version = 3.4)],
        ['bad backup id', (d) => (d.backups = { '../20240101T000000': { status: 'DONE' } })],
        ['backup without status', (d) => (d.backups = { '20240101T000000': {} })],
        ['WAL size negative', (d) => (d.wals = [{ name: '000000010000000000000002', size: -5, time: 1, compression: null }])],
        ['WAL time a string', (d) => (d.wals = [{ name: '000000010000000000000002', size: 5, time: 'now', compression: null }])],
        ['not an object', (d) => Object.keys(d).forEach((k) => delete d[k])],
      ),
      hostileName.map((n): [string, (d: Record<string, unknown>) => void] => [`WAL named ${JSON.stringify(n)}`, (d) => (d.wals = [{ name: n, size: 1, time: 1, compression: null }])]),
      hostileName.filter((n) => n !== '').map((n): [string, (d: Record<string, unknown>) => void] => [`last_name ${JSON.stringify(n)}`, (d) => (d.last_name = n)]),
    );
    fc.assert(
      fc.property(mutation, ([what, mutate]) => {
        const d = structuredClone(good);
        mutate(d);
        const text = what === 'not an object' ? '[]' : JSON.stringify(d);
        assert.throws(() => parsePrimaryInfo(text), (err: unknown) => (assertOneLine(err), true), what);
      }),
      { seed: SEED, numRuns: 100 },
    );
    // Any truncation of a good answer (a lost connection) is refused, never taken as a shorter document.
    const text = syncDoc(99, '', [], []);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: text.length - 1 }), (cut) => {
        assert.throws(() => parsePrimaryInfo(text.slice(0, cut)), (err: unknown) => (assertOneLine(err), true));
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });
});

// ---------------------------------------------------------------------------------------------

function stream(buf: Buffer): Readable {
  return Readable.from([buf]);
}

async function newServer() {
  return makeTestServer(path.join(tmpRoot, `s${++serial}`));
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('property: tar members (barman-wal-archive writes, put-wal reads)', () => {
  it('round trip: every member arrives with its name, size and bytes, whatever the sizes', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.tuple(anyWalName, fc.oneof(fc.nat({ max: 2048 }), fc.constantFrom(0, 511, 512, 513, 65536, 200_001))), { minLength: 1, maxLength: 5, selector: ([n]) => n }),
        fc.constantFrom<'sha256' | 'md5'>('sha256', 'md5'),
        async (members, checksum) => {
          const t = await newServer();
          const src = path.join(tmpRoot, `src${++serial}`);
          fs.mkdirSync(src);
          const contents = new Map<string, Buffer>();
          for (const [i, [name, size]] of members.entries()) {
            const data = Buffer.alloc(size, (i * 37 + size) & 0xff);
            if (size > 4) data.writeUInt32LE(i * 7919 + size, 0);
            fs.writeFileSync(path.join(src, name), data);
            contents.set(name, data);
          }
          const sink = new PassThrough();
          const chunks: Buffer[] = [];
          sink.on('data', (c: Buffer) => chunks.push(c));
          const written = await writeTarStream(members.map(([name, size]) => ({ name, path: path.join(src, name), size })), sink, { checksum, compression: null, workers: 0 });
          sink.end();
          assert.ok(written.complete);
          const tarBytes = Buffer.concat(chunks);
          assert.equal(tarBytes.length % 512, 0, 'whole tar blocks');
          const report = await receiveWalTar(t.srv, stream(tarBytes));
          assert.deepEqual([...report.stored].sort(), [...contents.keys()].sort());
          for (const [name, data] of contents) assert.equal(sha(fs.readFileSync(path.join(t.incoming, name))), sha(data), name);
        },
      ),
      { seed: SEED, numRuns: IO_RUNS },
    );
  });

  it('member names: only bare WAL names pass, as they are or after ./', () => {
    fc.assert(
      fc.property(anyWalName, fc.boolean(), (name, dotSlash) => {
        assert.equal(checkMemberName(dotSlash ? `./${name}` : name), name);
      }),
      { seed: SEED, numRuns: RUNS },
    );
    const piece = fc.constantFrom('..', '.', '', '/', 'etc', 'passwd', '000000010000000000000001', '\0', '\n', '\\', ' ', 'x'.repeat(120));
    fc.assert(
      fc.property(fc.array(piece, { minLength: 1, maxLength: 6 }), fc.constantFrom('/', '\\', '', '/./'), (parts, sep) => {
        const raw = parts.join(sep);
        const bare = raw.startsWith('./') ? raw.slice(2) : raw;
        try {
          const got = checkMemberName(raw);
          assert.equal(walNameKind(got), walNameKind(bare), `accepted ${JSON.stringify(raw)}`);
          assert.ok(walNameKind(got) !== null && !got.includes('/') && !got.includes('..'), `accepted ${JSON.stringify(raw)}`);
        } catch (err) {
          assert.ok(err instanceof BarmanError, String(err));
          assertOneLine(err);
        }
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });

  /** A stream whose one file member is named `name` the `how` way; its checksum names the segment itself. */
  function namedStream(name: string, how: 'ustar' | 'pax' | 'gnu', seg: string, body: Buffer): Buffer {
    let members: MemberSpec[];
    if (how === 'pax') members = [{ name: 'PaxHeader', type: 'x', data: paxData({ path: name }) }, { name: seg, data: body }];
    else if (how === 'gnu') members = [{ name: '././@LongLink', type: 'L', data: Buffer.from(`${name}\0`, 'utf8') }, { name: seg, data: body }];
    else members = [{ name: Buffer.from(name, 'utf8').subarray(0, 100).toString('latin1'), data: body }];
    // The refusal must come from the name, not from a checksum without its file.
    members.push({ name: 'SHA256SUMS', data: sumsFile([[seg, body]]) });
    return buildTar(members);
  }

  async function refusedLeavingNothing(name: string, how: 'ustar' | 'pax' | 'gnu'): Promise<void> {
    const seg = '000000010000000000000007';
    const body = Buffer.alloc(1024, 7);
    const t = await newServer();
    await assert.rejects(receiveWalTar(t.srv, stream(namedStream(name, how, seg, body))), (err: unknown) => {
      assert.ok(err instanceof BarmanError, String(err));
      assertOneLine(err);
      return true;
    }, `${how} ${JSON.stringify(name)}`);
    assert.deepEqual(fs.readdirSync(t.incoming), [], 'nothing left in incoming/, no temporary file');
    assert.ok(!fs.existsSync(path.join(path.dirname(t.incoming), seg)), 'nothing written beside incoming/');
  }

  it('hostile names (ustar, PAX, GNU long name) are refused and leave incoming/ as it was', async () => {
    const seg = '000000010000000000000007';
    const names = [`../${seg}`, `/${seg}`, `/tmp/${seg}`, `a/../${seg}`, `${seg}/`, '..', '.', `./../${seg}`, `${seg}\n`, 'xlog.db', '../../../../etc/passwd', `..\\${seg}`];
    for (const how of ['ustar', 'pax', 'gnu'] as const) {
      for (const name of names) await refusedLeavingNothing(name, how);
      // A NUL ends a ustar or GNU long name (that is just "seg"); in a PAX record it is part of the name.
      if (how === 'pax') await refusedLeavingNothing(`${seg}\0x`, how);
    }
  });

  it('long names (over the 100 bytes of a ustar header) are refused whatever they hold', async () => {
    const seg = '000000010000000000000007';
    const long = fc.oneof(
      fc.string({ minLength: 101, maxLength: 300 }).map((s) => `${s}/${seg}`),
      fc.integer({ min: 101, max: 400 }).map((n) => '0'.repeat(n)),
      fc.integer({ min: 80, max: 300 }).map((n) => `${'../'.repeat(Math.ceil(n / 3))}${seg}`),
    );
    await fc.assert(
      fc.asyncProperty(long, fc.constantFrom<'pax' | 'gnu'>('pax', 'gnu'), (name, how) => refusedLeavingNothing(name, how)),
      { seed: SEED, numRuns: IO_RUNS },
    );
  });
});

// ---------------------------------------------------------------------------------------------

const UNIT_SECONDS: Record<string, number> = { DAYS: 86400, WEEKS: 7 * 86400, MONTHS: 31 * 86400 };

/** Each letter in a random case. */
const anyCase = (word: string) => fc.array(fc.boolean(), { minLength: word.length, maxLength: word.length }).map((up) => [...word].map((ch, i) => (up[i] ? ch.toUpperCase() : ch.toLowerCase())).join(''));
const blank = fc.array(fc.constantFrom(' ', '\t'), { minLength: 1, maxLength: 3 }).map((a) => a.join(''));
const edge = fc.array(fc.constantFrom(' ', '\t'), { maxLength: 2 }).map((a) => a.join(''));

describe('property: retention policy strings', () => {
  it('every spelling Barman accepts means the same policy, and prints back canonically', () => {
    const redundancy = fc.tuple(edge, anyCase('redundancy'), blank, fc.integer({ min: 1, max: 100_000 }), edge).map(([a, w, b, n, c]) => ({ text: `${a}${w}${b}${n}${c}`, kind: 'redundancy' as const, n, unit: '' }));
    const window = fc
      .tuple(edge, anyCase('recovery'), blank, anyCase('window'), blank, anyCase('of'), blank, fc.integer({ min: 1, max: 10_000 }), blank, fc.constantFrom('day', 'week', 'month'), fc.boolean(), edge)
      .chain(([a, r, b1, w, b2, o, b3, n, b4, u, plural, c]) => anyCase(u + (plural ? 's' : '')).map((uu) => ({ text: `${a}${r}${b1}${w}${b2}${o}${b3}${n}${b4}${uu}${c}`, kind: 'window' as const, n, unit: `${u.toUpperCase()}S` })));
    fc.assert(
      fc.property(fc.oneof(redundancy, window), (g) => {
        const p = parseRetentionPolicy(g.text);
        assert.equal(p.kind, g.kind);
        if (p.kind === 'redundancy') {
          assert.equal(p.copies, g.n);
          assert.equal(p.text, `REDUNDANCY ${g.n}`);
        } else {
          assert.equal(p.amount, g.n);
          assert.equal(p.unit, g.unit);
          assert.equal(p.seconds, g.n * (UNIT_SECONDS[g.unit] ?? NaN));
          assert.equal(p.text, `RECOVERY WINDOW OF ${g.n} ${g.unit}`);
        }
        assert.deepEqual(parseRetentionPolicy(p.text), p);
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });

  it('junk is refused with one line', () => {
    const junk = fc.constantFrom(
      '', ' ', 'REDUNDANCY', 'REDUNDANCY 0', 'REDUNDANCY -1', 'REDUNDANCY 1.5', 'REDUNDANCY 2 3', 'REDUNDANCY2', 'REDUNDANCY two',
      'RECOVERY WINDOW 7 DAYS', 'RECOVERY WINDOW OF 7', 'RECOVERY WINDOW OF 0 DAYS', 'RECOVERY WINDOW OF 7 YEARS', 'RECOVERY WINDOW OF 7 HOURS',
      'RECOVERY WINDOW OF 7 DAYSS', 'RECOVERYWINDOW OF 7 DAYS', 'RECOVERY WINDOW OF7 DAYS', 'RECOVERY WINDOW OF 7DAYS', 'RECOVERY WINDOW OF -7 DAYS',
      'WINDOW OF 7 DAYS', 'REDUNDANCY 2; rm -rf /', 'REDUNDANCY 2\nREDUNDANCY 3', 'main', 'RECOVERY WINDOW OF 1e3 DAYS', 'REDUNDANCY 0x10',
    );
    fc.assert(
      fc.property(junk, (t) => {
        assert.throws(() => parseRetentionPolicy(t), (err: unknown) => (assertOneLine(err), true), JSON.stringify(t));
      }),
      { seed: SEED, numRuns: 100 },
    );
  });

  it('accepts exactly what Barman 3.4 accepts (its regular expressions, through Python)', { skip: !hasPython && 'no /usr/bin/python3' }, () => {
    // Strings near the grammar: words, digits, blanks, in any order; plus the canonical forms.
    const token = fc.constantFrom('redundancy', 'REDUNDANCY', 'recovery', 'window', 'of', 'OF', 'day', 'days', 'Weeks', 'month', 'months', 'year', '0', '1', '7', '12', '-', '.', ' ', '  ', '\t', 'x');
    const texts = fc.sample(fc.oneof(fc.array(token, { maxLength: 10 }).map((a) => a.join('')), fc.array(token, { maxLength: 10 }).map((a) => a.join(' '))), { seed: SEED, numRuns: 2000 });
    texts.push('REDUNDANCY 3', 'recovery window of 2 weeks', 'REDUNDANCY 0', 'RECOVERY WINDOW OF 0 DAYS');
    const script = [
      'import json, re, sys',
      'red = re.compile(r"^\\s*redundancy\\s+(\\d+)\\s*$", re.IGNORECASE)',
      'win = re.compile(r"^\\s*recovery\\s+window\\s+of\\s+(\\d+)\\s+(day|month|week)s?\\s*$", re.IGNORECASE)',
      'out = []',
      'for t in json.load(sys.stdin):',
      '    m = red.match(t)',
      '    w = win.match(t)',
      '    out.append(["redundancy", int(m.group(1))] if m else ["window", int(w.group(1)), w.group(2)[0].lower()] if w else None)',
      'print(json.dumps(out))',
    ].join('\n');
    const py = JSON.parse(execFileSync(PYTHON, ['-c', script], { input: JSON.stringify(texts), encoding: 'utf8' })) as Array<null | [string, number, string?]>;
    texts.forEach((t, i) => {
      const want = py[i];
      let got: [string, number, string?] | null;
      try {
        const p = parseRetentionPolicy(t);
        got = p.kind === 'redundancy' ? ['redundancy', p.copies] : ['window', p.amount, p.unit[0]?.toLowerCase()];
      } catch {
        got = null;
      }
      // Barman takes 0 (REDUNDANCY 0 keeps nothing, a window of 0 days): we refuse it with a clear line, on purpose.
      if (want !== null && want !== undefined && want[1] === 0) assert.equal(got, null, JSON.stringify(t));
      else assert.deepEqual(got, want, JSON.stringify(t));
    });
  });
});
