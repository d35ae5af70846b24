import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createReadStream, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BarmanError } from '../../src/util/errors.js';
import {
  COMPRESSION_NAMES,
  canonicalCompression,
  compressBuffer,
  compressFile,
  compressStream,
  compressionMagic,
  crc32c,
  decompressBuffer,
  decompressFile,
  decompressStream,
  identifyCompression,
  isCompressionName,
  parseCompressionLevel,
  parseCustomMagic,
  resolveCompressionLevel,
  type CompressionName,
  type CustomCompressionConfig,
} from '../../src/wal/compression.js';
import { hasProgram, prng } from '../helpers/testing.js';

const MiB = 1 << 20;
const isBarmanError = (err: unknown): boolean => err instanceof BarmanError;

/**
 * 8 KiB pages that look like WAL: page headers, record headers, tuples of text, runs of
 * zeros (the unused tail of a switched segment), full-page images of random-looking data.
 */
function walLikeData(size: number, seed = 42): Buffer {
  const rnd = prng(seed);
  const buf = Buffer.alloc(size);
  const words = ['INSERT', 'UPDATE', 'pgbench_accounts', 'aid', 'bid', 'abalance', 'filler', 'COMMIT', 'barman', 'wal'];
  for (let page = 0; page * 8192 < size; page++) {
    const base = page * 8192;
    const end = Math.min(size, base + 8192);
    const kind = rnd() % 10;
    // page header: magic, info, timeline, page address
    if (base + 24 <= end) {
      buf.writeUInt16LE(0xd110, base);
      buf.writeUInt16LE(page === 0 ? 7 : 5, base + 2);
      buf.writeUInt32LE(1, base + 4);
      buf.writeUInt32LE(page * 8192, base + 8);
    }
    if (kind <= 1) continue; // zero page
    if (kind === 2) {
      for (let i = base + 24; i < end; i++) buf[i] = rnd() & 0xff; // full-page image
      continue;
    }
    let p = base + 24;
    const fill = kind === 3 ? base + 24 + (rnd() % 8000) : end; // partly used page
    while (p + 64 < fill) {
      buf.writeUInt32LE(40 + (rnd() % 200), p); // record length
      buf.writeUInt32LE(rnd(), p + 4); // xid
      buf.writeUInt32LE(rnd(), p + 16); // crc
      p += 24;
      const text = `${words[rnd() % words.length]} ${rnd() % 100000} ${words[rnd() % words.length]};`;
      p += buf.write(text, p, Math.min(text.length, fill - p), 'latin1');
      p += rnd() % 16; // alignment padding (zeros)
    }
  }
  return buf;
}

/** Which program each algorithm needs (null: in-process). */
const PROGRAM: Record<CompressionName, string | null> = {
  bzip2: 'bzip2',
  custom: 'gzip',
  gzip: null,
  lz4: null,
  pigz: 'pigz',
  pybzip2: 'bzip2',
  pygzip: null,
  snappy: null,
  xz: 'xz',
  zstd: null,
};

const EXPECTED_ID: Record<Exclude<CompressionName, 'custom'>, CompressionName> = {
  bzip2: 'bzip2',
  gzip: 'gzip',
  lz4: 'lz4',
  pigz: 'gzip',
  pybzip2: 'bzip2',
  pygzip: 'gzip',
  snappy: 'snappy',
  xz: 'xz',
  zstd: 'zstd',
};

const GZIP_CUSTOM: CustomCompressionConfig = { compressionFilter: 'gzip -c', decompressionFilter: 'gzip -dc' };

async function streamToBuffer(source: Readable, transform: NodeJS.ReadWriteStream): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(
    source,
    transform,
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        out.push(chunk);
        cb();
      },
    }),
  );
  return Buffer.concat(out);
}

let dir = '';
let plainPath = '';
let data: Buffer;

before(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'barman-compression-'));
  data = walLikeData(16 * MiB);
  plainPath = path.join(dir, '000000010000000000000001');
  await fsp.writeFile(plainPath, data);
});

after(async () => {
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
});

describe('registry', () => {
  test('names are sorted and aliases resolve', () => {
    assert.deepEqual([...COMPRESSION_NAMES], [...COMPRESSION_NAMES].sort());
    assert.equal(canonicalCompression('pygzip'), 'gzip');
    assert.equal(canonicalCompression('pybzip2'), 'bzip2');
    assert.equal(canonicalCompression('zstd'), 'zstd');
    assert.ok(isCompressionName('snappy'));
    assert.ok(!isCompressionName('brotli'));
    assert.ok(!isCompressionName('none'));
    assert.throws(() => canonicalCompression('brotli'), isBarmanError);
    assert.equal(compressionMagic('custom'), null);
    assert.deepEqual([...(compressionMagic('pygzip') ?? [])], [0x1f, 0x8b, 0x08]);
  });

  test('custom magic parsing', () => {
    assert.deepEqual([...parseCustomMagic('0x1f8b')], [0x1f, 0x8b]);
    assert.deepEqual([...parseCustomMagic('0XABCDEF')], [0xab, 0xcd, 0xef]);
    assert.deepEqual([...parseCustomMagic('425a')], [0x42, 0x5a]);
    for (const bad of ['', '0x', '0x1', '0xzz', 'hello', '0x1f 8b']) assert.throws(() => parseCustomMagic(bad), isBarmanError, bad);
  });
});

describe('identification by magic bytes', () => {
  const samples: Array<[number[], CompressionName]> = [
    [[0x1f, 0x8b, 0x08, 0x00, 0x00], 'gzip'],
    [[0x42, 0x5a, 0x68, 0x39, 0x31], 'bzip2'],
    [[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00], 'xz'],
    [[0x28, 0xb5, 0x2f, 0xfd, 0x20], 'zstd'],
    [[0x04, 0x22, 0x4d, 0x18, 0x64], 'lz4'],
    [[0xff, 0x06, 0x00, 0x00, 0x73, 0x4e, 0x61, 0x50, 0x70, 0x59, 0x00], 'snappy'],
  ];

  test('each algorithm from its magic', () => {
    for (const [bytes, name] of samples) assert.equal(identifyCompression(Uint8Array.from(bytes)), name);
  });

  test('gzip data is gzip, never pigz or pygzip; bzip2 never pybzip2', () => {
    assert.equal(identifyCompression(Uint8Array.of(0x1f, 0x8b, 0x08)), 'gzip');
    assert.equal(identifyCompression(Uint8Array.of(0x42, 0x5a, 0x68)), 'bzip2');
  });

  test('unknown, empty and truncated magic', () => {
    assert.equal(identifyCompression(Buffer.alloc(0)), null);
    assert.equal(identifyCompression(Uint8Array.of(0x1f, 0x8b)), null);
    assert.equal(identifyCompression(Uint8Array.of(0x1f, 0x8b, 0x09)), null);
    assert.equal(identifyCompression(data.subarray(0, 64)), null);
    assert.equal(identifyCompression(Uint8Array.of(0xff, 0x06, 0x00, 0x00, 0x73, 0x4e, 0x61, 0x50, 0x70)), null);
  });

  test('custom magic is tried in alphabetical order (after bzip2, before gzip)', () => {
    const gz = Uint8Array.of(0x1f, 0x8b, 0x08, 0x00);
    const bz = Uint8Array.of(0x42, 0x5a, 0x68, 0x39);
    assert.equal(identifyCompression(gz, { magic: '0x1f8b' }), 'custom');
    assert.equal(identifyCompression(gz, { magic: Uint8Array.of(0x1f, 0x8b) }), 'custom');
    assert.equal(identifyCompression(bz, { magic: '0x425a' }), 'bzip2');
    assert.equal(identifyCompression(Uint8Array.of(0xca, 0xfe, 0x01), { magic: '0xcafe' }), 'custom');
    assert.equal(identifyCompression(Uint8Array.of(0xca, 0xfe, 0x01), { magic: '0xcafe01ff' }), null);
  });

  test('unset custom magic: unidentified files count as custom only when asked', () => {
    const plain = data.subarray(0, 64);
    assert.equal(identifyCompression(plain, {}), null);
    assert.equal(identifyCompression(plain, { unidentifiedIsCustom: true }), 'custom');
    assert.equal(identifyCompression(Buffer.alloc(0), { unidentifiedIsCustom: true }), 'custom');
    assert.equal(identifyCompression(Uint8Array.of(0x28, 0xb5, 0x2f, 0xfd), { unidentifiedIsCustom: true }), 'zstd');
    // with a magic configured, only the magic decides
    assert.equal(identifyCompression(plain, { unidentifiedIsCustom: true, magic: '0xcafe' }), null);
  });

  test('from a file path', async () => {
    const short = path.join(dir, 'short');
    await fsp.writeFile(short, Uint8Array.of(0x28, 0xb5, 0x2f, 0xfd));
    assert.equal(await identifyCompression(short), 'zstd');
    const empty = path.join(dir, 'empty');
    await fsp.writeFile(empty, '');
    assert.equal(await identifyCompression(empty), null);
    assert.equal(await identifyCompression(plainPath), null);
    const longMagic = path.join(dir, 'long-magic');
    await fsp.writeFile(longMagic, Buffer.from('0123456789abcdefXYZ-rest-of-file'));
    const magic = `0x${Buffer.from('0123456789abcdefXYZ').toString('hex')}`;
    assert.equal(await identifyCompression(longMagic, { magic }), 'custom');
    await assert.rejects(identifyCompression(path.join(dir, 'missing')));
  });
});

describe('levels', () => {
  test('named levels per algorithm', () => {
    const table: Array<[CompressionName, number, number, number]> = [
      ['gzip', 1, 6, 9],
      ['pygzip', 1, 6, 9],
      ['pigz', 1, 6, 9],
      ['bzip2', 1, 5, 9],
      ['pybzip2', 1, 5, 9],
      ['xz', 1, 3, 5],
      ['zstd', 1, 4, 9],
      ['lz4', 0, 6, 10],
    ];
    for (const [algo, low, medium, high] of table) {
      assert.equal(resolveCompressionLevel(algo, 'low'), low, algo);
      assert.equal(resolveCompressionLevel(algo, 'medium'), medium, algo);
      assert.equal(resolveCompressionLevel(algo, 'high'), high, algo);
      assert.equal(resolveCompressionLevel(algo), medium, algo);
      assert.equal(resolveCompressionLevel(algo, null), medium, algo);
    }
    assert.equal(resolveCompressionLevel('snappy', 'high'), null);
    assert.equal(resolveCompressionLevel('custom', 5), null);
  });

  test('integers are clamped to the algorithm range', () => {
    const ranges: Array<[CompressionName, number, number]> = [
      ['gzip', 1, 9],
      ['pigz', 1, 9],
      ['bzip2', 1, 9],
      ['xz', 1, 9],
      ['zstd', -22, 22],
      ['lz4', 0, 16],
    ];
    for (const [algo, min, max] of ranges) {
      assert.equal(resolveCompressionLevel(algo, min - 1), min, algo);
      assert.equal(resolveCompressionLevel(algo, -1000), min, algo);
      assert.equal(resolveCompressionLevel(algo, max + 1), max, algo);
      assert.equal(resolveCompressionLevel(algo, 1000), max, algo);
      assert.equal(resolveCompressionLevel(algo, min), min, algo);
      assert.equal(resolveCompressionLevel(algo, max), max, algo);
      assert.equal(resolveCompressionLevel(algo, 3), Math.min(max, Math.max(min, 3)), algo);
    }
    assert.equal(resolveCompressionLevel('zstd', -5), -5);
    assert.equal(resolveCompressionLevel('gzip', 0), 1);
    assert.throws(() => resolveCompressionLevel('gzip', NaN), isBarmanError);
    assert.throws(() => resolveCompressionLevel('gzip', 'extreme' as 'low'), isBarmanError);
  });

  test('parsing the option value', () => {
    assert.equal(parseCompressionLevel('low'), 'low');
    assert.equal(parseCompressionLevel('HIGH'), 'high');
    assert.equal(parseCompressionLevel(' medium '), 'medium');
    assert.equal(parseCompressionLevel('7'), 7);
    assert.equal(parseCompressionLevel('-3'), -3);
    for (const bad of ['', 'max', '1.5', '0x3', 'low high']) assert.throws(() => parseCompressionLevel(bad), isBarmanError, bad);
  });

  test('higher levels compress better', async () => {
    const sample = data.subarray(0, 2 * MiB);
    const algos: CompressionName[] = ['gzip', 'zstd'];
    if (hasProgram('bzip2')) algos.push('bzip2');
    if (hasProgram('xz')) algos.push('xz');
    for (const algo of algos) {
      const low = await compressBuffer(sample, algo, 'low');
      const high = await compressBuffer(sample, algo, 'high');
      assert.ok(high.length <= low.length, `${algo}: high ${high.length} > low ${low.length}`);
      assert.ok(sample.equals(await decompressBuffer(high, algo)));
    }
  });
});

describe('round trips of a 16 MiB WAL-like segment', () => {
  for (const algo of COMPRESSION_NAMES) {
    if (algo === 'custom') continue;
    const program = PROGRAM[algo];
    const skip = program && !hasProgram(program) ? `${program} is not installed` : false;

    // The deprecated aliases share their implementation: a smaller file is enough for them.
    const alias = algo === 'pygzip' || algo === 'pybzip2';
    test(`${algo}: file → file, identified, bit for bit`, { skip }, async () => {
      const packed = path.join(dir, `${algo}.tmp`);
      const back = path.join(dir, `${algo}.back`);
      let source = plainPath;
      let expected = data;
      if (alias) {
        expected = data.subarray(0, 2 * MiB);
        source = path.join(dir, `${algo}.src`);
        await fsp.writeFile(source, expected);
      }
      await compressFile(source, packed, algo, 'medium');
      const stat = await fsp.stat(packed);
      assert.equal(stat.mode & 0o777, 0o600);
      assert.ok(stat.size < expected.length * 0.6, `${algo} output too large: ${stat.size}`);
      assert.equal(await identifyCompression(packed), EXPECTED_ID[algo]);
      assert.equal(await decompressFile(packed, back), EXPECTED_ID[algo]);
      assert.ok(expected.equals(await fsp.readFile(back)), `${algo} auto-detected round trip differs`);
      await fsp.rm(back);
      assert.equal(await decompressFile(packed, back, algo), algo);
      assert.ok(expected.equals(await fsp.readFile(back)), `${algo} explicit round trip differs`);
      // decompression as a stream (get-wal pipes to stdout)
      const streamed = await streamToBuffer(createReadStream(packed), decompressStream(algo));
      assert.ok(expected.equals(streamed), `${algo} stream decompression differs`);
      await fsp.rm(packed);
      await fsp.rm(back);
      if (alias) await fsp.rm(source);
    });

    test(`${algo}: stream and buffer APIs`, { skip }, async () => {
      const sample = data.subarray(3 * MiB, 5 * MiB + 12345);
      // many small writes through the compressing stream
      const pieces = Array.from({ length: 97 }, (_, i) =>
        sample.subarray(Math.floor((i * sample.length) / 97), Math.floor(((i + 1) * sample.length) / 97)),
      );
      const packed = await streamToBuffer(Readable.from(pieces), compressStream(algo, 'low'));
      assert.equal(identifyCompression(packed), EXPECTED_ID[algo]);
      assert.ok(sample.equals(await decompressBuffer(packed)), `${algo} stream → buffer differs`);
      const packed2 = await compressBuffer(sample, algo, 'high');
      assert.ok(sample.equals(await decompressBuffer(packed2, algo)), `${algo} buffer round trip differs`);
      // empty input
      const empty = await compressBuffer(Buffer.alloc(0), algo);
      assert.equal((await decompressBuffer(empty, algo)).length, 0);
    });
  }
});

describe('interoperability with the reference tools', () => {
  const tools: Array<[CompressionName, string, string[], string[]]> = [
    // algorithm, program, decompress args, compress args (file to stdout)
    ['gzip', 'gzip', ['-dc'], ['-c']],
    ['bzip2', 'bzip2', ['-dc'], ['-c']],
    ['xz', 'xz', ['-dc'], ['-c', '-1']],
    ['zstd', 'zstd', ['-dcq'], ['-cq']],
    ['lz4', 'lz4', ['-dcq'], ['-cq']],
  ];
  for (const [algo, program, dargs, cargs] of tools) {
    test(`${algo} ↔ ${program}`, { skip: hasProgram(program) ? false : `${program} is not installed` }, async () => {
      const sample = data.subarray(0, 4 * MiB);
      const ours = await compressBuffer(sample, algo);
      const r1 = spawnSync(program, dargs, { input: ours, maxBuffer: 64 * MiB });
      assert.equal(r1.status, 0, String(r1.stderr));
      assert.ok(sample.equals(r1.stdout), `${program} cannot read our ${algo}`);
      const r2 = spawnSync(program, cargs, { input: sample, maxBuffer: 64 * MiB });
      assert.equal(r2.status, 0, String(r2.stderr));
      assert.equal(identifyCompression(r2.stdout), algo);
      assert.ok(sample.equals(await decompressBuffer(r2.stdout)), `we cannot read ${program}'s ${algo}`);
    });
  }

  test('concatenated gzip members (gzip and pigz output appended)', async () => {
    const a = await compressBuffer(Buffer.from('first member '), 'gzip');
    const b = await compressBuffer(Buffer.from('second member'), 'gzip');
    assert.equal((await decompressBuffer(Buffer.concat([a, b]))).toString(), 'first member second member');
  });

  test('concatenated zstd frames, with and without a content size in their headers', async () => {
    // compressBuffer records the size (one-shot); the stream does not: both must decompress whole.
    const sized = await compressBuffer(Buffer.from('sized frame, '), 'zstd');
    const streamed = await streamToBuffer(Readable.from([Buffer.from('streamed frame')]), compressStream('zstd', 'low'));
    assert.equal((await decompressBuffer(Buffer.concat([sized, streamed]))).toString(), 'sized frame, streamed frame');
    assert.equal((await decompressBuffer(Buffer.concat([streamed, sized]), 'zstd')).toString(), 'streamed frame' + 'sized frame, ');
  });

  test('a zstd frame cut short is an error, whether or not it records its size', async () => {
    const sample = walLikeData(1 << 20, 7);
    const sized = await compressBuffer(sample, 'zstd');
    const streamed = await streamToBuffer(Readable.from([sample]), compressStream('zstd', 'low'));
    for (const [what, packed] of [['sized', sized], ['streamed', streamed]] as const) {
      for (const cut of [1, 100]) {
        await assert.rejects(decompressBuffer(packed.subarray(0, packed.length - cut), 'zstd'), isBarmanError, `${what} frame cut by ${cut}`);
        await assert.rejects(decompressBuffer(Buffer.concat([packed, packed.subarray(0, packed.length - cut)])), isBarmanError, `second ${what} frame cut by ${cut}`);
      }
    }
  });

  const python = '/usr/bin/python3';
  const pySnappy = hasProgram('python3') && spawnSync(python, ['-c', 'import snappy']).status === 0;
  test('snappy ↔ python-snappy framing', { skip: pySnappy ? false : 'python3-snappy is not installed' }, async () => {
    // Debian's python3-snappy C crc32c is broken on Python 3.11: use a pure Python one.
    const script = `
import sys, snappy, snappy.snappy as s
t = []
for n in range(256):
    c = n
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    t.append(c)
def crc(d):
    c = 0xFFFFFFFF
    for b in d:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
s._crc32c = crc
f = snappy.stream_decompress if sys.argv[1] == 'd' else snappy.stream_compress
f(sys.stdin.buffer, sys.stdout.buffer)
`;
    const sample = data.subarray(MiB, MiB + 300000);
    const ours = await compressBuffer(sample, 'snappy');
    const r1 = spawnSync(python, ['-c', script, 'd'], { input: ours, maxBuffer: 64 * MiB });
    assert.equal(r1.status, 0, String(r1.stderr));
    assert.ok(sample.equals(r1.stdout), 'python-snappy cannot read our snappy');
    const r2 = spawnSync(python, ['-c', script, 'c'], { input: sample, maxBuffer: 64 * MiB });
    assert.equal(r2.status, 0, String(r2.stderr));
    assert.ok(sample.equals(await decompressBuffer(r2.stdout)), 'we cannot read python-snappy output');
  });
});

describe('snappy details', () => {
  test('crc32c check value', () => {
    assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
    assert.equal(crc32c(Buffer.alloc(0)), 0);
    assert.equal(crc32c(Buffer.alloc(32)), 0x8a9136aa);
  });

  test('block boundaries, long runs and overlapping copies', async () => {
    const rnd = prng(7);
    const sizes = [1, 15, 16, 17, 65535, 65536, 65537, 3 * 65536 + 5];
    for (const size of sizes) {
      for (const kind of ['zeros', 'random', 'pattern']) {
        const buf = Buffer.alloc(size);
        if (kind === 'random') for (let i = 0; i < size; i++) buf[i] = rnd() & 0xff;
        if (kind === 'pattern') for (let i = 0; i < size; i++) buf[i] = 'abcab'.charCodeAt(i % 5);
        const packed = await compressBuffer(buf, 'snappy');
        assert.ok(buf.equals(await decompressBuffer(packed, 'snappy')), `${kind} ${size}`);
      }
    }
  });

  test('corruption is detected', async () => {
    const packed = await compressBuffer(data.subarray(0, 200000), 'snappy');
    const flipped = Buffer.from(packed);
    flipped[flipped.length - 100] = (flipped[flipped.length - 100] ?? 0) ^ 0x40;
    await assert.rejects(decompressBuffer(flipped, 'snappy'), isBarmanError);
    await assert.rejects(decompressBuffer(packed.subarray(0, packed.length - 3), 'snappy'), isBarmanError);
    await assert.rejects(decompressBuffer(Buffer.from('not snappy at all'), 'snappy'), isBarmanError);
    const reserved = Buffer.concat([packed.subarray(0, 10), Buffer.from([0x02, 0, 0, 0])]);
    await assert.rejects(decompressBuffer(reserved, 'snappy'), isBarmanError);
    const skippable = Buffer.concat([packed.subarray(0, 10), Buffer.from([0xfe, 3, 0, 0, 1, 2, 3]), packed.subarray(10)]);
    assert.ok(data.subarray(0, 200000).equals(await decompressBuffer(skippable, 'snappy')));
  });
});

describe('custom filters', () => {
  const skip = hasProgram('gzip') ? false : 'gzip is not installed';

  test('gzip -c / gzip -dc, paths passed as positional parameters', { skip }, async () => {
    const weird = path.join(dir, `we ird $(touch pwned) \`touch pwned2\` 'q" ;.wal`);
    await fsp.writeFile(weird, data);
    const packed = `${weird}.tmp`;
    const back = `${weird}.back`;
    await compressFile(weird, packed, 'custom', 'medium', GZIP_CUSTOM);
    assert.equal((await fsp.stat(packed)).mode & 0o777, 0o600);
    assert.equal(await identifyCompression(packed), 'gzip');
    assert.equal(await identifyCompression(packed, { ...GZIP_CUSTOM, magic: '0x1f8b' }), 'custom');
    assert.equal(await decompressFile(packed, back, 'custom', GZIP_CUSTOM), 'custom');
    assert.ok(data.equals(await fsp.readFile(back)));
    // auto-detection through the configured magic
    await fsp.rm(back);
    assert.equal(await decompressFile(packed, back, undefined, { ...GZIP_CUSTOM, magic: '0x1f8b08' }), 'custom');
    assert.ok(data.equals(await fsp.readFile(back)));
    for (const f of ['pwned', 'pwned2']) {
      await assert.rejects(fsp.access(path.join(process.cwd(), f)));
      await assert.rejects(fsp.access(path.join(dir, f)));
    }
    await Promise.all([fsp.rm(weird), fsp.rm(packed), fsp.rm(back)]);
  });

  test('custom streams and buffers', { skip }, async () => {
    const sample = data.subarray(0, 3 * MiB);
    const packed = await compressBuffer(sample, 'custom', null, GZIP_CUSTOM);
    assert.equal(identifyCompression(packed), 'gzip');
    assert.ok(sample.equals(await decompressBuffer(packed, 'custom', GZIP_CUSTOM)));
    const streamed = await streamToBuffer(Readable.from([packed]), decompressStream('custom', GZIP_CUSTOM));
    assert.ok(sample.equals(streamed));
  });

  test('unidentified data decompressed as custom when compression=custom', { skip }, async () => {
    const cat: CustomCompressionConfig = { compressionFilter: 'cat', decompressionFilter: 'cat', unidentifiedIsCustom: true };
    const packed = path.join(dir, 'cat.tmp');
    const back = path.join(dir, 'cat.back');
    await compressFile(plainPath, packed, 'custom', null, cat);
    assert.equal(await decompressFile(packed, back, undefined, cat), 'custom');
    assert.ok(data.equals(await fsp.readFile(back)));
    await Promise.all([fsp.rm(packed), fsp.rm(back)]);
  });

  test('failing or missing filters', async () => {
    const dst = path.join(dir, 'fail.tmp');
    await assert.rejects(
      compressFile(plainPath, dst, 'custom', null, { compressionFilter: 'echo oops >&2; exit 3' }),
      (err: unknown) => err instanceof BarmanError && /exit code 3: oops/.test(err.message),
    );
    await assert.rejects(fsp.access(dst), 'dst must be removed after a failure');
    await assert.rejects(compressFile(plainPath, dst, 'custom', null, {}), isBarmanError);
    await assert.rejects(decompressFile(plainPath, dst, 'custom', { compressionFilter: 'cat' }), isBarmanError);
    assert.throws(() => compressStream('custom', null, {}), isBarmanError);
    await assert.rejects(
      streamToBuffer(Readable.from([Buffer.from('x')]), decompressStream('custom', { decompressionFilter: 'cat >/dev/null; exit 5' })),
      (err: unknown) => err instanceof BarmanError && /exit code 5/.test(err.message),
    );
  });
});

describe('errors and edge cases', () => {
  test('uncompressed files are copied when nothing is identified or algo is null', async () => {
    const back = path.join(dir, 'copy.back');
    assert.equal(await decompressFile(plainPath, back), null);
    assert.ok(data.equals(await fsp.readFile(back)));
    assert.equal((await fsp.stat(back)).mode & 0o777, 0o600);
    await fsp.rm(back);
    const packed = path.join(dir, 'gz.tmp');
    await compressFile(plainPath, packed, 'gzip', 'low');
    assert.equal(await decompressFile(packed, back, null), null);
    assert.ok((await fsp.readFile(packed)).equals(await fsp.readFile(back)));
    assert.ok((await decompressBuffer(data.subarray(0, 100))).equals(data.subarray(0, 100)));
    await Promise.all([fsp.rm(packed), fsp.rm(back)]);
  });

  test('dst is truncated when it already exists', async () => {
    const dst = path.join(dir, 'existing.tmp');
    await fsp.writeFile(dst, Buffer.alloc(20 * MiB, 7));
    await compressFile(plainPath, dst, 'zstd', 'low');
    assert.ok(data.equals(await decompressBuffer(await fsp.readFile(dst))));
    await fsp.rm(dst);
  });

  test('corrupt or truncated input gives a BarmanError and no dst', async () => {
    const sample = data.subarray(0, MiB);
    const algos: CompressionName[] = ['gzip', 'zstd', 'lz4', 'snappy'];
    if (hasProgram('bzip2')) algos.push('bzip2');
    if (hasProgram('xz')) algos.push('xz');
    for (const algo of algos) {
      const packed = await compressBuffer(sample, algo);
      const truncated = packed.subarray(0, Math.floor(packed.length / 2));
      await assert.rejects(decompressBuffer(truncated, algo), isBarmanError, `${algo} truncated`);
      const src = path.join(dir, `bad-${algo}`);
      const dst = path.join(dir, `bad-${algo}.out`);
      await fsp.writeFile(src, truncated);
      await assert.rejects(decompressFile(src, dst, algo), isBarmanError, `${algo} truncated file`);
      await assert.rejects(fsp.access(dst), `${algo}: dst left behind`);
      const garbage = Buffer.concat([Buffer.from(compressionMagic(algo) ?? []), Buffer.alloc(1000, 0x5a)]);
      await assert.rejects(decompressBuffer(garbage, algo), isBarmanError, `${algo} garbage`);
      await assert.rejects(
        streamToBuffer(Readable.from([garbage]), decompressStream(algo)),
        isBarmanError,
        `${algo} garbage through a stream`,
      );
      await fsp.rm(src);
    }
  });

  test('missing source file', async () => {
    const dst = path.join(dir, 'nosrc.out');
    for (const algo of ['gzip', 'zstd', 'lz4', 'xz'] as const) {
      await assert.rejects(compressFile(path.join(dir, 'nope'), dst, algo), isBarmanError, algo);
      await assert.rejects(fsp.access(dst));
    }
    await assert.rejects(decompressFile(path.join(dir, 'nope'), dst), isBarmanError);
  });

  test('missing program gives a BarmanError', async () => {
    const saved = process.env.PATH;
    process.env.PATH = path.join(dir, 'no-such-bin');
    try {
      const dst = path.join(dir, 'noprog.out');
      await assert.rejects(compressFile(plainPath, dst, 'xz'), (err: unknown) => err instanceof BarmanError && /xz/.test(err.message));
      await assert.rejects(fsp.access(dst));
      await assert.rejects(
        streamToBuffer(Readable.from([Buffer.from('abc')]), compressStream('bzip2')),
        (err: unknown) => err instanceof BarmanError && /bzip2/.test(err.message),
      );
    } finally {
      process.env.PATH = saved;
    }
  });

  test('unknown algorithm names are rejected', async () => {
    assert.throws(() => compressStream('brotli' as CompressionName), isBarmanError);
    await assert.rejects(compressFile(plainPath, path.join(dir, 'x'), 'brotli' as CompressionName), isBarmanError);
  });
});
