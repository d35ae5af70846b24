/**
 * barman-wal-archive's compression worker pool: members compressed in worker threads come back
 * bit for bit, with the digest of exactly what is sent; a failing or crashing worker fails the
 * push with exit code 2 and never produces a stream with a checksum member; the pool never
 * keeps the process alive.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { BarmanError } from '../../src/util/errors.js';
import { decompressBuffer, type CompressionName } from '../../src/wal/compression.js';
import { CompressPool } from '../../src/walclient/compress-pool.js';
import { autoWorkers, writeTarStream, type PushMember } from '../../src/walclient/push.js';
import { collect, untar } from '../helpers/wal-tar.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL_MODULE = pathToFileURL(path.resolve(HERE, '../../src/walclient/compress-pool.js')).href;
const PUSH_MODULE = pathToFileURL(path.resolve(HERE, '../../src/walclient/push.js')).href;

let tmp = '';
before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'bts-cpool-'));
});
after(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

const seg = (n: number) => `00000001000000000000${n.toString(16).toUpperCase().padStart(4, '0')}`;
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** WAL-like content: compressible runs mixed with random bytes, `size` long. */
function walLike(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  for (let off = 0; off < size; off += 8192) {
    const page = off / 8192 + seed;
    if (page % 3 === 0) randomBytes(Math.min(2048, size - off)).copy(b, off);
    else b.fill(page & 0xff, off, Math.min(off + 8192, size));
  }
  return b;
}

async function writeMembers(count: number, size: number): Promise<{ members: PushMember[]; contents: Buffer[] }> {
  const dir = await fsp.mkdtemp(path.join(tmp, 'wal-'));
  const members: PushMember[] = [];
  const contents: Buffer[] = [];
  for (let i = 1; i <= count; i++) {
    const data = walLike(size + i, i);
    await fsp.writeFile(path.join(dir, seg(i)), data);
    members.push({ name: seg(i), path: path.join(dir, seg(i)), size: data.length });
    contents.push(data);
  }
  return { members, contents };
}

describe('compression pool', () => {
  it('round-trips every in-process algorithm bit for bit, with the digest of what it returns', async () => {
    const pool = new CompressPool(2);
    try {
      const original = walLike(3 * 1024 * 1024 + 5, 7);
      const algos: Array<CompressionName | null> = ['zstd', 'lz4', 'gzip', 'snappy', null];
      const results = await Promise.all(
        algos.map((compression) => pool.pack(Buffer.from(original), { compression, level: 'low', checksum: 'sha256' })),
      );
      for (const [i, r] of results.entries()) {
        assert.equal(r.digest, sha256(r.data), `digest for ${algos[i]}`);
        const back = await decompressBuffer(r.data, algos[i] ?? null);
        assert.ok(back.equals(original), `round trip for ${algos[i]}`);
      }
      const md5 = await pool.pack(Buffer.from('abc'), { compression: null, level: null, checksum: 'md5' });
      assert.equal(md5.digest, createHash('md5').update('abc').digest('hex'));
    } finally {
      await pool.close();
    }
  });

  it('takes a buffer that is a slice of a larger allocation (a file read into size + 1 bytes)', async () => {
    const pool = new CompressPool(1);
    try {
      const whole = Buffer.allocUnsafe(1 << 20);
      walLike(whole.length, 3).copy(whole);
      const slice = whole.subarray(0, whole.length - 1);
      const expected = Buffer.from(slice);
      const r = await pool.pack(slice, { compression: 'zstd', level: 'low', checksum: 'sha256' });
      assert.ok((await decompressBuffer(r.data, 'zstd')).equals(expected));
    } finally {
      await pool.close();
    }
  });

  it('rejects a failing job with a BarmanError of exit code 2 and keeps serving others', async () => {
    const pool = new CompressPool(1);
    try {
      // custom compression needs a configured filter: the worker's compressBuffer throws.
      await assert.rejects(pool.pack(Buffer.from('x'), { compression: 'custom', level: null, checksum: 'sha256' }), (e: unknown) => e instanceof BarmanError && e.exitCode === 2);
      const ok = await pool.pack(Buffer.from('y'), { compression: null, level: null, checksum: 'sha256' });
      assert.equal(ok.data.toString(), 'y');
    } finally {
      await pool.close();
    }
  });

  it('rejects pending and later jobs when a worker dies', async () => {
    const crashing = new URL('data:text/javascript,import { parentPort } from "node:worker_threads"; parentPort.on("message", () => process.exit(7));');
    const pool = new CompressPool(1, crashing);
    try {
      await assert.rejects(pool.pack(Buffer.from('x'), { compression: 'zstd', level: null, checksum: 'sha256' }), (e: unknown) => e instanceof BarmanError && e.exitCode === 2 && /exited with code 7/.test(e.message));
      await assert.rejects(pool.pack(Buffer.from('x'), { compression: 'zstd', level: null, checksum: 'sha256' }), (e: unknown) => e instanceof BarmanError && e.exitCode === 2);
    } finally {
      await pool.close();
    }
    await assert.rejects(pool.pack(Buffer.from('x'), { compression: null, level: null, checksum: 'sha256' }), BarmanError);
  });

  it('never keeps the process alive, closed or not', async () => {
    for (const close of [true, false]) {
      const script = `
        const { CompressPool } = await import(${JSON.stringify(POOL_MODULE)});
        const pool = new CompressPool(2);
        const r = await pool.pack(Buffer.alloc(100000, 1), { compression: 'zstd', level: 'low', checksum: 'sha256' });
        if (r.data.length === 0) process.exit(3);
        ${close ? 'await pool.close();' : ''}
        console.log('done');`;
      const file = path.join(tmp, `exit-${close}.mjs`);
      await fsp.writeFile(file, script);
      const res = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(res.signal, null, `close=${close}: the process had to be killed (still running after 60 s)`);
      assert.equal(res.status, 0, res.stderr);
      assert.equal(res.stdout.trim(), 'done');
    }
  });
});

describe('tar stream with compression workers', () => {
  it('starts workers only to compress more than one file', () => {
    assert.equal(autoWorkers(null, 64), 0);
    assert.equal(autoWorkers('zstd', 1), 0);
    assert.equal(autoWorkers('zstd', 2), 1);
    const many = autoWorkers('zstd', 64);
    assert.ok(many >= 1 && many <= 2);
  });

  for (const workers of [1, 2]) {
    it(`sends compressed members in order, each with the checksum of its bytes (${workers} worker(s))`, async () => {
      const { members, contents } = await writeMembers(7, 1024 * 1024);
      const { sink, data } = collect();
      const res = await writeTarStream(members, sink, { checksum: 'sha256', compression: 'zstd', compressionLevel: 'low', workers });
      assert.equal(res.complete, true);
      assert.deepEqual(res.sent.map((m) => m.name), members.map((m) => m.name));
      const entries = await untar(data());
      assert.deepEqual(entries.map((e) => e.name), [...members.map((m) => m.name), 'SHA256SUMS']);
      const sums = entries.slice(0, -1).map((e) => `${sha256(e.data)} *${e.name}\n`).join('');
      assert.equal(entries[entries.length - 1]?.data.toString(), sums);
      for (const [i, e] of entries.slice(0, -1).entries()) {
        assert.ok((await decompressBuffer(e.data)).equals(contents[i] as Buffer), `member ${e.name}`);
      }
    });
  }

  it('uses workers for plain members too when asked (digest computed there)', async () => {
    const { members, contents } = await writeMembers(3, 300 * 1024);
    const { sink, data } = collect();
    await writeTarStream(members, sink, { checksum: 'md5', workers: 2 });
    const entries = await untar(data());
    for (const [i, c] of contents.entries()) assert.ok(entries[i]?.data.equals(c));
    const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
    assert.equal(entries[3]?.name, 'MD5SUMS');
    assert.equal(entries[3]?.data.toString(), contents.map((c, i) => `${md5(c)} *${seg(i + 1)}\n`).join(''));
  });

  it('a compression failure abandons the stream: exit code 2, no checksum member, no end blocks', async () => {
    const { members } = await writeMembers(4, 64 * 1024);
    const { sink, data } = collect();
    await assert.rejects(
      writeTarStream(members, sink, { checksum: 'sha256', compression: 'custom', workers: 2 }),
      (e: unknown) => e instanceof BarmanError && e.exitCode === 2,
    );
    const sent = data();
    assert.ok(!sent.includes(Buffer.from('SHA256SUMS')), 'no checksum member may be sent');
    // put-wal refuses a stream without the two zero blocks that end an archive.
    assert.ok(sent.length === 0 || !sent.subarray(-1024).equals(Buffer.alloc(1024)));
  });

  it('a failed push always settles: the process never runs dry with it pending (which would exit 0)', async () => {
    // Seen with Node 20: awaiting terminate() of a worker busy in native code never settled.
    const { members } = await writeMembers(4, 64 * 1024);
    const file = path.join(tmp, 'fail-push.mjs');
    await fsp.writeFile(
      file,
      `import { PassThrough } from 'node:stream';
      const { writeTarStream } = await import(${JSON.stringify(PUSH_MODULE)});
      const sink = new PassThrough();
      sink.resume();
      try {
        await writeTarStream(${JSON.stringify(members)}, sink, { checksum: 'sha256', compression: 'custom', workers: 2 });
        console.log('resolved');
      } catch (e) {
        console.log('rejected', e.exitCode);
      }`,
    );
    for (let i = 0; i < 12; i++) {
      const res = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(res.stdout.trim(), 'rejected 2', `run ${i}: exit ${res.status}, ${res.stderr}`);
      assert.equal(res.status, 0);
    }
  });
});
