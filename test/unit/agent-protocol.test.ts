import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { Decoder, Encoder } from '../../src/agent/codec.js';
import {
  CODEC,
  FrameReader,
  FrameWriter,
  GREETING,
  MAX_FRAME,
  ProtocolError,
  T,
  decodeNeed,
  decodePages,
  decodeWithBinary,
  encodeNeed,
  encodePages,
  encodeWithBinary,
} from '../../src/agent/protocol.js';

/** Feed `data` to a reader in chunks of the given sizes (cycled), then end. */
function feed(data: Buffer, sizes: number[]): FrameReader {
  const s = new PassThrough();
  const r = new FrameReader(s);
  let off = 0;
  let i = 0;
  const step = () => {
    if (off >= data.length) return s.end();
    const n = sizes[i++ % sizes.length] as number;
    s.write(data.subarray(off, off + n));
    off += n;
    setImmediate(step);
  };
  step();
  return r;
}

async function collect(write: (w: FrameWriter) => Promise<void>): Promise<Buffer> {
  const s = new PassThrough();
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  const w = new FrameWriter(s);
  await write(w);
  s.end();
  await new Promise((r) => s.on('end', r));
  return Buffer.concat(chunks);
}

describe('agent protocol framing', () => {
  it('reads back frames written, whatever the chunking', async () => {
    const big = Buffer.alloc(300_000, 7);
    const bytes = await collect(async (w) => {
      await w.json(T.HELLO, { protocol: 1, version: 'x' });
      await w.send(T.PAGES, Buffer.from([1, 2]), big);
      await w.send(T.BYE);
    });
    for (const sizes of [[1], [3, 7, 1000], [bytes.length]]) {
      const r = feed(Buffer.concat([GREETING, bytes]), sizes);
      assert.equal(await r.greeting(), true);
      const a = await r.next();
      assert.equal(a?.type, T.HELLO);
      assert.deepEqual(JSON.parse(a?.body.toString() ?? ''), { protocol: 1, version: 'x' });
      const b = await r.next();
      assert.equal(b?.type, T.PAGES);
      assert.equal(b?.body.length, 2 + big.length);
      assert.ok(b?.body.subarray(2).equals(big));
      assert.equal((await r.next())?.type, T.BYE);
      assert.equal(await r.next(), null);
      assert.equal(r.bytes, GREETING.length + bytes.length);
    }
  });

  it('quotes what came instead of the greeting', async () => {
    const r = feed(Buffer.from('Welcome to db1!\nLast login: never\n'), [5]);
    await assert.rejects(r.greeting(), (err: Error) => err instanceof ProtocolError && /output starts with "Welcome to db1!"/.test(err.message));
    assert.equal(await feed(Buffer.alloc(0), [1]).greeting(), null, 'no output at all');
    await assert.rejects(feed(GREETING.subarray(0, 5), [2]).greeting(), ProtocolError);
  });

  it('refuses an impossible length and a frame cut short', async () => {
    const huge = Buffer.alloc(5);
    huge.writeUInt32BE(MAX_FRAME + 1, 0);
    await assert.rejects(feed(huge, [5]).next(), /unexpected bytes instead of a message/);
    const cut = await collect((w) => w.send(T.PAGES, Buffer.alloc(100)));
    await assert.rejects(feed(cut.subarray(0, 50), [50]).next(), /ended in the middle of a message/);
    await assert.rejects(feed(cut.subarray(0, 3), [3]).next(), /ended in the middle of a message/);
  });

  it('encodes pages, needs and JSON+binary bodies', () => {
    const hashes = Buffer.alloc(32, 9);
    const body = Buffer.concat(encodePages({ id: 7, firstPage: 1000, count: 2, codec: CODEC.zstd, rawLen: 12000 }, hashes, Buffer.from('payload')));
    const p = decodePages(body);
    assert.deepEqual([p.id, p.firstPage, p.count, p.codec, p.rawLen], [7, 1000, 2, CODEC.zstd, 12000]);
    assert.ok(p.hashes.equals(hashes));
    assert.equal(p.payload.toString(), 'payload');
    assert.throws(() => decodePages(body.subarray(0, 20)), ProtocolError);
    assert.deepEqual(decodeNeed(encodeNeed(3, [[0, 2], [10, 1]])), { id: 3, ranges: [[0, 2], [10, 1]] });
    assert.deepEqual(decodeNeed(encodeNeed(4, [])), { id: 4, ranges: [] });
    assert.throws(() => decodeNeed(Buffer.alloc(9)), ProtocolError);
    const { value, bin } = decodeWithBinary<{ a: number }>(Buffer.concat(encodeWithBinary({ a: 1 }, Buffer.from([1, 2, 3]))), 'X');
    assert.deepEqual(value, { a: 1 });
    assert.deepEqual([...bin], [1, 2, 3]);
    assert.throws(() => decodeWithBinary(Buffer.from([0, 0, 0, 9, 1]), 'X'), ProtocolError);
  });
});

describe('agent codecs', () => {
  const text = Buffer.from('a page of PostgreSQL '.repeat(2000));
  for (const name of ['zstd', 'lz4', 'none'] as const) {
    it(`${name} round-trips and says when it did not compress`, () => {
      const enc = new Encoder(name, 1);
      const dec = new Decoder();
      const out = enc.encode(text);
      assert.equal(out.codec, CODEC[name]);
      if (name !== 'none') assert.ok(out.payload.length < text.length / 10);
      assert.ok(dec.decode(out.codec, out.payload, text.length).equals(text));
      const noise = Buffer.from(Array.from({ length: 4096 }, (_v, i) => (i * 2654435761) >>> 24));
      const raw = enc.encode(noise);
      assert.ok(dec.decode(raw.codec, raw.payload, noise.length).equals(noise));
    });
  }

  it('rejects data that does not decode or has the wrong length', () => {
    const dec = new Decoder();
    assert.throws(() => dec.decode(CODEC.zstd, Buffer.from('garbage'), 10), ProtocolError);
    assert.throws(() => dec.decode(CODEC.none, Buffer.alloc(5), 6), ProtocolError);
    const z = new Encoder('zstd', 1).encode(Buffer.alloc(8192));
    assert.throws(() => dec.decode(z.codec, z.payload, 8191), ProtocolError);
    assert.throws(() => dec.decode(99, Buffer.alloc(1), 1), ProtocolError);
  });
});

describe('agent buffer reuse', () => {
  it('borrowed frames stay intact until the next read, whatever the chunking', async () => {
    const a = Buffer.alloc(200_000, 1);
    const b = Buffer.alloc(150_000, 2);
    const bytes = await collect(async (w) => {
      await w.send(T.PAGES, a);
      await w.send(T.PAGES, b);
      await w.send(T.BYE);
    });
    for (const sizes of [[4096], [bytes.length]]) {
      const r = feed(bytes, sizes);
      const fa = await r.next(true);
      assert.ok(fa?.body.equals(a));
      const fb = await r.next(true);
      assert.ok(fb?.body.equals(b));
      assert.equal((await r.next(true))?.type, T.BYE);
    }
  });

  it('decodeOwned results survive later decodes until released, and are reused after', () => {
    const enc = new Encoder('zstd', 1);
    const dec = new Decoder();
    const one = Buffer.alloc(65536, 3);
    const two = Buffer.alloc(65536, 4);
    const e1 = enc.encode(one);
    const d1 = dec.decodeOwned(e1.codec, e1.payload, one.length);
    e1.release?.();
    const e2 = enc.encode(two);
    const d2 = dec.decodeOwned(e2.codec, e2.payload, two.length);
    assert.ok(d1.data.equals(one), 'the first result is not overwritten by the second decode');
    assert.ok(d2.data.equals(two));
    d1.release();
    const d3 = dec.decodeOwned(CODEC.none, two, two.length);
    assert.equal(d3.data.buffer, d1.data.buffer, 'a released buffer is handed out again');
    assert.ok(d3.data.equals(two));
    assert.throws(() => dec.decodeOwned(CODEC.zstd, Buffer.from('garbage'), 10), ProtocolError);
    assert.throws(() => dec.decodeOwned(99, Buffer.alloc(1), 1), ProtocolError);
  });

  it('sendThen releases a pooled payload only once it is written', async () => {
    const s = new PassThrough({ highWaterMark: 16 });
    const w = new FrameWriter(s);
    let released = 0;
    const sent = w.sendThen(() => (released += 1), T.PAGES, Buffer.alloc(100_000, 5));
    await new Promise((r) => setImmediate(r));
    assert.equal(released, 0, 'not released while the stream still holds it');
    let got = 0;
    s.on('data', (c: Buffer) => (got += c.length));
    await sent;
    await new Promise((r) => setImmediate(r));
    assert.equal(released, 1);
    assert.equal(got, 5 + 100_000);
  });

  it('BufferPool: small requests get buffers of their size class, large ones a megabyte or more, both reused', async () => {
    const { BufferPool, SMALL_MAX, smallClass } = await import('../../src/agent/bufpool.js');
    assert.equal(smallClass(1), 8192);
    assert.equal(smallClass(8192), 8192);
    assert.equal(smallClass(8193), 16384);
    assert.equal(smallClass(SMALL_MAX), SMALL_MAX);
    const pool = new BufferPool(1 << 20, 2, 2);
    const page = pool.take(8192);
    assert.equal(page.length, 8192);
    pool.give(page);
    assert.equal(pool.take(5000), page, 'reused for a request of the same class');
    const mid = pool.take(9000);
    assert.equal(mid.length, 16384);
    const big = pool.take(SMALL_MAX + 1);
    assert.equal(big.length, 1 << 20);
    pool.give(big);
    assert.equal(pool.take(200_000), big);
    // Kept up to `keepSmall` per class; a buffer of no class (a subarray's length) is dropped.
    const three = [pool.take(8192), pool.take(8192), pool.take(8192)];
    for (const b of three) pool.give(b);
    const again = [pool.take(8192), pool.take(8192), pool.take(8192)];
    assert.equal(again.filter((b) => three.includes(b)).length, 2);
    pool.give(Buffer.alloc(10_000));
    assert.notEqual(pool.take(10_000).length, 10_000);
  });

  it('BufferPool with aligned large buffers: a slab of `keep` blocks fit for direct I/O, reused, then ordinary buffers', async () => {
    const { BufferPool, directAligned } = await import('../../src/agent/bufpool.js');
    const pool = new BufferPool(1 << 20, 2, 2, true);
    const a = pool.take(1 << 20);
    const b = pool.take(300_000);
    assert.equal(a.length, 1 << 20);
    assert.ok(directAligned(a) && directAligned(b) && directAligned(a.subarray(0, 5000)));
    assert.ok(!directAligned(a.subarray(100)), 'a view from inside a block is not aligned');
    const c = pool.take(1 << 20);
    assert.ok(!directAligned(c), 'the slab is spent: an ordinary buffer');
    assert.ok(!directAligned(pool.take(8192)), 'small requests are ordinary buffers');
    pool.give(a);
    assert.equal(pool.take(1 << 20), a);
    assert.ok(!directAligned(Buffer.alloc(1 << 20)));
    // Decoded pages land in aligned buffers (the backup host writes them with O_DIRECT).
    const raw = Buffer.alloc(1 << 20, 7);
    const enc = new Encoder('zstd', 1).encode(raw);
    const { data, release } = new Decoder().decodeOwned(enc.codec, enc.payload, raw.length);
    assert.ok(directAligned(data) && data.equals(raw));
    release();
  });

  it('ByteBudget holds a reservation back while the budget is spent', async () => {
    const { ByteBudget } = await import('../../src/agent/bufpool.js');
    const budget = new ByteBudget(100);
    await budget.reserve(80);
    let second = false;
    const p = budget.reserve(50).then(() => (second = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(second, false);
    budget.free(80);
    await p;
    assert.equal(second, true);
    budget.free(50);
    await budget.reserve(500); // more than the whole budget still passes, alone
    budget.free(500);
  });
});
