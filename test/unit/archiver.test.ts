import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { acquireLock, LockBusyError } from '../../src/catalog/lock.js';
import { lockPath } from '../../src/catalog/server-dirs.js';
import { parseXlogDb, readXlogDb, type XlogDbEntry } from '../../src/catalog/xlogdb.js';
import { archiveWal, walArchivePath, type ArchiveReport, type ArchiveSource } from '../../src/wal/archiver.js';
import { decompressBuffer, identifyCompression, type CompressionName } from '../../src/wal/compression.js';
import { pyFloatStr, pyStatMtime } from '../../src/util/pytime.js';
import { hasProgram, prng } from '../helpers/testing.js';
import { makeTestServer, type TestServer } from '../helpers/server-fixture.js';
import { withSegmentHeader, writeSparseSegment } from '../helpers/wal-segment.js';

const SEG = 16 << 20;
let tmpRoot = '';
let serial = 0;

before(async () => {
  tmpRoot = await fsp.mkdtemp(path.join(os.tmpdir(), 'barman-archiver-'));
});

after(async () => {
  await fsp.rm(tmpRoot, { recursive: true, force: true });
});

/**
 * A buffer that looks like WAL segment `name` (16 MiB by default): its long page header (what the
 * archiver checks), page headers, records, zero and random pages.
 */
function walLike(seed: number, size = SEG, name = S1): Buffer {
  const rnd = prng(seed);
  const buf = Buffer.alloc(size);
  const words = ['INSERT', 'UPDATE', 'pgbench_accounts', 'aid', 'abalance', 'COMMIT', 'barman'];
  for (let base = 0; base < size; base += 8192) {
    buf.writeUInt16LE(0xd110, base);
    buf.writeUInt32LE(seed, base + 4);
    buf.writeUInt32LE(base, base + 8);
    const kind = rnd() % 10;
    if (kind <= 2) continue;
    if (kind === 3) {
      for (let i = base + 24; i < base + 8192; i += 4) buf.writeUInt32LE(rnd(), i);
      continue;
    }
    let p = base + 24;
    while (p + 64 < base + 8192) {
      buf.writeUInt32LE(rnd(), p);
      p += 8;
      const t = `${words[rnd() % words.length]} ${rnd() % 100000};`;
      p += buf.write(t, p, 'latin1') + (rnd() % 8);
    }
  }
  return withSegmentHeader(buf, name);
}

function makeServer(extra: Record<string, string> = {}): TestServer {
  return makeTestServer(path.join(tmpRoot, `t${++serial}`), extra);
}

/** Small test segments: PostgreSQL's smallest segment size (initdb --wal-segsize=1). */
const MIB = 1 << 20;

function put(dir: string, name: string, data: Buffer | string, mtime?: number): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, data);
  if (mtime !== undefined) fs.utimesSync(file, mtime, mtime);
  return file;
}

interface Recorded {
  report: ArchiveReport;
  sources: Array<[ArchiveSource, number]>;
  files: string[];
  errors: string[];
  warnings: string[];
}

async function archive(t: TestServer): Promise<Recorded> {
  const rec: Omit<Recorded, 'report'> = { sources: [], files: [], errors: [], warnings: [] };
  const report = await archiveWal(t.srv, {
    onSource: (s, b) => rec.sources.push([s, b]),
    onFile: (n) => rec.files.push(n),
    onError: (m) => rec.errors.push(m),
    onWarning: (m) => rec.warnings.push(m),
  });
  return { report, ...rec };
}

function xlogLines(t: TestServer): XlogDbEntry[] {
  return parseXlogDb(fs.readFileSync(path.join(t.wals, 'xlog.db'), 'utf8'));
}

const mode = (p: string) => (fs.statSync(p).mode & 0o777).toString(8);

const S1 = '000000010000000000000001';
const S2 = '000000010000000000000002';
const S3 = '000000010000000000000003';
const S4 = '000000010000000000000004';

describe('walArchivePath', () => {
  it('puts segments, .backup and .partial files in hash dirs and history files at the root', () => {
    const t = makeServer();
    assert.equal(walArchivePath(t.srv, S1), path.join(t.wals, '0000000100000000', S1));
    assert.equal(walArchivePath(t.srv, `${S1}.00000028.backup`), path.join(t.wals, '0000000100000000', `${S1}.00000028.backup`));
    assert.equal(walArchivePath(t.srv, `${S1}.partial`), path.join(t.wals, '0000000100000000', `${S1}.partial`));
    assert.equal(walArchivePath(t.srv, '00000002.history'), path.join(t.wals, '00000002.history'));
  });
});

describe('file archiver (incoming/)', () => {
  it('archives segments, backup labels and history files without compression', async () => {
    const t = makeServer();
    const data = [walLike(1), walLike(2, SEG, S2)];
    put(t.incoming, S2, data[1] as Buffer, 1718291830.5);
    put(t.incoming, S1, data[0] as Buffer, 1718291829.25);
    put(t.incoming, `${S2}.00000028.backup`, 'START WAL LOCATION: 0/2000028\n');
    put(t.incoming, '00000002.history', '1\t0/3000000\tno recovery target specified\n');
    const srcStat = fs.statSync(path.join(t.incoming, S1), { bigint: true });
    const inode = fs.statSync(path.join(t.incoming, S1)).ino;

    const r = await archive(t);
    assert.deepEqual(r.sources, [['file archival', 0]]);
    assert.deepEqual(r.files, [S1, S2, `${S2}.00000028.backup`, '00000002.history']); // sorted listing order
    assert.deepEqual(r.errors, []);
    assert.equal(r.report.archivedCount, 4);
    assert.deepEqual(fs.readdirSync(t.incoming), []);

    const hash = path.join(t.wals, '0000000100000000');
    assert.deepEqual(fs.readFileSync(path.join(hash, S1)), data[0]);
    assert.deepEqual(fs.readFileSync(path.join(hash, S2)), data[1]);
    assert.ok(fs.existsSync(path.join(hash, `${S2}.00000028.backup`)));
    assert.ok(fs.existsSync(path.join(t.wals, '00000002.history')), 'history at the root of wals/');
    assert.equal(fs.statSync(path.join(hash, S1)).ino, inode, 'compression none: moved, not copied');

    const lines = xlogLines(t);
    assert.deepEqual(
      lines.map((l) => [l.name, l.size, l.compression, l.encryption]),
      [
        [S1, SEG, null, null],
        [S2, SEG, null, null],
        [`${S2}.00000028.backup`, 30, null, null],
        ['00000002.history', 41, null, null],
      ],
    );
    const l1 = lines[0] as XlogDbEntry;
    assert.equal(l1.time, pyStatMtime(srcStat.mtimeNs));
    assert.match(fs.readFileSync(path.join(t.wals, 'xlog.db'), 'utf8'), new RegExp(`^${S1}\\t16777216\\t${pyFloatStr(l1.time as number).replace('.', '\\.')}\\tNone$`, 'm'));
  });

  it('creates directories 0700 and files 0600', async () => {
    const t = makeServer({ compression: 'gzip' });
    fs.chmodSync(put(t.incoming, S1, walLike(3)), 0o644);
    fs.chmodSync(put(t.incoming, '00000002.history', '1\t0/3000000\treason\n'), 0o664);
    put(t.incoming, 'garbage.txt', 'x');
    await archive(t);
    assert.equal(mode(t.wals), '700');
    assert.equal(mode(path.join(t.wals, '0000000100000000')), '700');
    assert.equal(mode(t.errors), '700');
    assert.equal(mode(walArchivePath(t.srv, S1)), '600');
    assert.equal(mode(walArchivePath(t.srv, '00000002.history')), '600');
    assert.equal(mode(path.join(t.wals, 'xlog.db')), '600');

    const t2 = makeServer();
    fs.chmodSync(put(t2.incoming, S1, walLike(4)), 0o644);
    await archive(t2);
    assert.equal(mode(walArchivePath(t2.srv, S1)), '600', 'stored as is: permissions tightened');
  });

  it('moves unknown files to errors/ with a .unknown suffix and skips .tmp files', async () => {
    const t = makeServer();
    put(t.incoming, 'not-a-wal', 'hello');
    put(t.incoming, `${S1}.gz`, 'compressed by someone');
    put(t.incoming, `${S2}.tmp`, 'being written');
    fs.mkdirSync(path.join(t.incoming, S3)); // a directory with a WAL name
    put(t.incoming, S1, walLike(5));
    const r = await archive(t);
    assert.deepEqual(r.files, [S1]);
    assert.equal(r.warnings.length, 3);
    assert.deepEqual(r.report.sources[0]?.unknown, [S3, `${S1}.gz`, 'not-a-wal'].sort());
    const errs = fs.readdirSync(t.errors).sort();
    assert.equal(errs.length, 3);
    for (const n of errs) assert.match(n, /^.+\.\d{8}T\d{6}Z\.unknown$/);
    assert.ok(errs.some((n) => n.startsWith('not-a-wal.')));
    assert.deepEqual(fs.readdirSync(t.incoming), [`${S2}.tmp`], '.tmp left alone');
  });

  it('honours archiver_batch_size', async () => {
    const t = makeServer({ archiver_batch_size: '2' });
    for (const n of [S1, S2, S3, S4]) put(t.incoming, n, walLike(6, MIB, n));
    const r1 = await archive(t);
    assert.deepEqual(r1.sources, [['file archival', 2]]);
    assert.deepEqual(r1.files, [S1, S2]);
    assert.equal(r1.report.sources[0]?.remaining, 2);
    const r2 = await archive(t);
    assert.deepEqual(r2.files, [S3, S4]);
    const r3 = await archive(t);
    assert.deepEqual(r3.files, []);
    assert.deepEqual(xlogLines(t).map((l) => l.name), [S1, S2, S3, S4]);
  });

  it('drops an identical duplicate silently, moves a different one to errors/ with .duplicate', async () => {
    const t = makeServer({ compression: 'gzip' });
    const data = walLike(7);
    put(t.incoming, S1, data);
    put(t.incoming, S2, walLike(8, SEG, S2));
    await archive(t);
    const stored = fs.readFileSync(walArchivePath(t.srv, S1));

    put(t.incoming, S1, data); // same content (the archive holds it gzipped)
    const other = walLike(9, SEG, S2);
    put(t.incoming, S2, other); // different content
    const r = await archive(t);
    assert.deepEqual(r.files, []);
    assert.deepEqual(r.errors, [`${S2} is already present in server pg. File moved to errors directory.`]);
    assert.deepEqual(r.report.sources[0]?.matchingDuplicates, [S1]);
    assert.deepEqual(r.report.sources[0]?.duplicates, [S2]);
    assert.deepEqual(fs.readdirSync(t.incoming), []);
    const errs = fs.readdirSync(t.errors);
    assert.equal(errs.length, 1);
    assert.match(errs[0] as string, new RegExp(`^${S2}\\.\\d{8}T\\d{6}Z\\.duplicate$`));
    assert.deepEqual(fs.readFileSync(path.join(t.errors, errs[0] as string)), other);
    assert.deepEqual(fs.readFileSync(walArchivePath(t.srv, S1)), stored, 'archived copy untouched');
    assert.deepEqual(xlogLines(t).map((l) => l.name), [S1, S2], 'no new catalog line');
  });

  it('compares a pre-compressed duplicate after decompression', async () => {
    const t = makeServer({ compression: 'zstd' });
    const data = walLike(10, MIB);
    put(t.incoming, S1, data);
    await archive(t);
    put(t.incoming, S1, zlib.gzipSync(data));
    const r = await archive(t);
    assert.deepEqual(r.errors, []);
    assert.deepEqual(r.report.sources[0]?.matchingDuplicates, [S1]);
    assert.deepEqual(fs.readdirSync(t.incoming), []);
  });

  it('adds the missing catalog line of an archived file found again as a matching duplicate', async () => {
    // What a crash between putting the file in place and appending its line leaves behind.
    const t = makeServer();
    const data = walLike(11, MIB);
    put(t.incoming, S1, data);
    await archive(t);
    fs.writeFileSync(path.join(t.wals, 'xlog.db'), '');
    put(t.incoming, S1, data);
    const r = await archive(t);
    assert.deepEqual(r.errors, []);
    assert.deepEqual(xlogLines(t).map((l) => [l.name, l.size]), [[S1, MIB]]);
  });

  it('stores files that arrive compressed as they are', async () => {
    const t = makeServer({ compression: 'zstd' });
    const data = walLike(12);
    const gz = zlib.gzipSync(data, { level: 1 });
    put(t.incoming, S1, gz);
    await archive(t);
    assert.deepEqual(fs.readFileSync(walArchivePath(t.srv, S1)), gz);
    assert.deepEqual(xlogLines(t).map((l) => [l.name, l.size, l.compression]), [[S1, gz.length, 'gzip']]);
  });

  it('writes to <server>-xlog.db when it exists', async () => {
    const t = makeServer();
    fs.mkdirSync(t.wals, { recursive: true });
    fs.writeFileSync(path.join(t.wals, 'pg-xlog.db'), '');
    put(t.incoming, S1, walLike(13, MIB));
    await archive(t);
    assert.ok(!fs.existsSync(path.join(t.wals, 'xlog.db')));
    assert.deepEqual(parseXlogDb(fs.readFileSync(path.join(t.wals, 'pg-xlog.db'), 'utf8')).map((l) => l.name), [S1]);
  });

  it('rebuilds a missing catalog before adding to an existing archive', async () => {
    const t = makeServer();
    put(t.incoming, S1, walLike(14, MIB));
    await archive(t);
    fs.unlinkSync(path.join(t.wals, 'xlog.db'));
    put(t.incoming, S2, walLike(15, MIB, S2));
    await archive(t);
    assert.deepEqual(xlogLines(t).map((l) => l.name), [S1, S2]);
  });

  it('refuses to run while another archive-wal holds the lock', async () => {
    const t = makeServer();
    const lock = await acquireLock(lockPath(t.srv, 'archiveWal'), 'archive-wal');
    try {
      await assert.rejects(archiveWal(t.srv), LockBusyError);
    } finally {
      lock.release();
    }
    await archiveWal(t.srv);
  });
});

describe('streaming archiver (streaming/)', () => {
  it('archives all but the last .partial file, then the file archiver runs', async () => {
    const t = makeServer({ streaming_archiver: 'on', slot_name: 'barman', streaming_conninfo: 'host=127.0.0.1' });
    put(t.streaming, S1, walLike(20, MIB));
    put(t.streaming, `${S2}.partial`, walLike(21, MIB, S2)); // left by a timeline switch
    put(t.streaming, '00000002.history', '1\t0/3000000\treason\n');
    put(t.streaming, '000000020000000000000003.partial', walLike(22, MIB, '000000020000000000000003')); // being written
    put(t.streaming, `${S4}.tmp`, 'x');
    put(t.incoming, S4, walLike(23, MIB, S4));
    const r = await archive(t);
    assert.deepEqual(r.sources, [
      ['streaming', 0],
      ['file archival', 0],
    ]);
    assert.deepEqual(r.files, [S1, `${S2}.partial`, '00000002.history', S4]);
    assert.deepEqual(fs.readdirSync(t.streaming).sort(), [`${S4}.tmp`, '000000020000000000000003.partial']);
    // partial files are stored as they are
    assert.deepEqual(fs.readFileSync(walArchivePath(t.srv, `${S2}.partial`)), walLike(21, MIB, S2));
  });

  it('archives every complete segment when there is no .partial file (pg_receivewal renames only complete ones)', async () => {
    const t = makeServer({ streaming_archiver: 'on', slot_name: 'barman', streaming_conninfo: 'host=127.0.0.1', archiver: 'off', compression: 'gzip' });
    for (const n of [S1, S2, S3]) put(t.streaming, n, walLike(24, MIB, n));
    const r = await archive(t);
    assert.deepEqual(r.sources, [['streaming', 0]]);
    assert.deepEqual(r.files, [S1, S2, S3]);
    assert.deepEqual(fs.readdirSync(t.streaming), []);
    assert.equal(await identifyCompression(walArchivePath(t.srv, S1)), 'gzip');
    // the segment pg_receivewal is writing stays
    put(t.streaming, `${S4}.partial`, Buffer.alloc(100));
    const r2 = await archive(t);
    assert.deepEqual(r2.files, []);
    assert.deepEqual(fs.readdirSync(t.streaming), [`${S4}.partial`]);
  });

  it('uses streaming_archiver_batch_size and drops segments already archived through incoming/', async () => {
    const t = makeServer({ streaming_archiver: 'on', slot_name: 'barman', streaming_conninfo: 'host=127.0.0.1', streaming_archiver_batch_size: '1' });
    const d1 = walLike(25, MIB);
    put(t.streaming, S1, d1);
    put(t.streaming, S2, walLike(26, MIB, S2));
    put(t.streaming, `${S3}.partial`, Buffer.alloc(10));
    put(t.incoming, S1, d1);
    const r = await archive(t);
    assert.deepEqual(r.sources, [
      ['streaming', 1],
      ['file archival', 0],
    ]);
    assert.deepEqual(r.files, [S1]);
    assert.deepEqual(r.report.sources[1]?.matchingDuplicates, [S1]);
    assert.deepEqual(fs.readdirSync(t.incoming), []);
    assert.equal(r.report.sources[0]?.remaining, 1);
  });
});

describe('compression', () => {
  const algos: CompressionName[] = ['gzip', 'zstd', 'lz4', 'snappy', 'bzip2', 'xz'];
  for (const algo of algos) {
    const program = algo === 'bzip2' || algo === 'xz' ? algo : null;
    it(`stores ${algo}-compressed files identified by their magic bytes`, { skip: program !== null && !hasProgram(program) ? `${program} not installed` : false }, async () => {
      const t = makeServer({ compression: algo, compression_level: 'low' });
      // external programs are slow: a smaller file is enough to check them
      const data = walLike(30, program ? 2 << 20 : SEG);
        put(t.incoming, S1, data);
      put(t.incoming, '00000002.history', '1\t0/3000000\treason\n');
      const r = await archive(t);
      assert.deepEqual(r.errors, []);
      const stored = fs.readFileSync(walArchivePath(t.srv, S1));
      assert.equal(identifyCompression(stored), algo);
      assert.ok(stored.length < data.length / 2, `${algo} compressed to ${stored.length}`);
      assert.deepEqual(await decompressBuffer(stored), data);
      const lines = await readXlogDb(t.srv);
      assert.deepEqual(lines.map((l) => [l.name, l.compression]), [
        [S1, algo],
        ['00000002.history', algo],
      ]);
      assert.equal(lines[0]?.size, stored.length);
      assert.ok(!fs.readdirSync(path.join(t.wals, '0000000100000000')).some((n) => n.endsWith('.tmp')));
    });
  }

  it('runs a custom compression filter', { skip: hasProgram('gzip') ? false : 'gzip not installed' }, async () => {
    const t = makeServer({ compression: 'custom', custom_compression_filter: 'gzip -c', custom_decompression_filter: 'gzip -dc', custom_compression_magic: '0x1f8b' });
    const data = walLike(31, MIB);
    put(t.incoming, S1, data);
    const r = await archive(t);
    assert.deepEqual(r.errors, []);
    assert.deepEqual(zlib.gunzipSync(fs.readFileSync(walArchivePath(t.srv, S1))), data);
  });

  it('archives 200 segments quickly with compression none', async () => {
    const t = makeServer();
    // Sparse 16 MiB segments (a header and holes) keep the test from writing 3.2 GB: with
    // compression none the archiver reads only the header (fsync, link, unlink).
    for (let i = 1; i <= 200; i++) {
      const name = `0000000100000000000000${i.toString(16).toUpperCase().padStart(2, '0')}`;
      writeSparseSegment(path.join(t.incoming, name), name);
    }
    const t0 = performance.now();
    const r = await archive(t);
    const ms = performance.now() - t0;
    assert.equal(r.files.length, 200);
    assert.equal(xlogLines(t).length, 200);
    assert.deepEqual(fs.readdirSync(t.incoming), []);
    assert.ok(ms < 5_000, `took ${ms.toFixed(0)} ms`);
    process.stderr.write(`# archived 200 segments (compression none) in ${ms.toFixed(0)} ms\n`);
  });
});
