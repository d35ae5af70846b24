/**
 * The agent's copy logic without ssh or PostgreSQL: serveRead (the agent reading a file against
 * a basis map) talking through real frames to FileReceiver (the backup host rebuilding it), the
 * page maps, the journal of received files, the rsync-style excludes, the listing, the faults.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { Decoder, Encoder } from '../../src/agent/codec.js';
import { parseFaults } from '../../src/agent/faults.js';
import { FILL_PAGES, HASH_BYTES, PAGE_SIZE, PageHasher, changedRanges, newSeed, pageCount, samePage, sendRuns, splitRanges } from '../../src/agent/pages.js';
import { FrameReader, FrameWriter, T, decodePages, decodePassed } from '../../src/agent/protocol.js';
import { FileReceiver, type Clone, type FillGaps, type ReceiveOutcome } from '../../src/agent/receive.js';
import { HashThread, hashFile } from '../../src/agent/hash-thread.js';
import { alignedBuffer, alignedSharedBuffer } from '../../src/util/aligned.js';
import { DIRECT_ALIGN, directReadLength, directWriteGoesOn, directWriteHead, openDirect, readMaybeDirect, writeMaybeDirect } from '../../src/agent/direct-io.js';
import { READ_CHUNK, serveRead, type ReadEnd } from '../../src/agent/serve-read.js';
import { parseJournal } from '../../src/agent/store.js';
import { walkTree, type WireEntry } from '../../src/agent/walk.js';
import { PGDATA_EXCLUDES, rsyncExcluder } from '../../src/backup/rsync-plan.js';

let dir = '';
let hasher: PageHasher;
let thread: HashThread;
before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'agent-unit-'));
  hasher = await PageHasher.create('0123456789abcdef');
  thread = new HashThread('0123456789abcdef', 3, 4 * PAGE_SIZE);
});
after(async () => {
  await thread.close();
  await fs.rm(dir, { recursive: true, force: true });
});

/** The backup host's fills from a basis, in the hashing thread (a buffer of 4 pages: in pieces), through O_DIRECT where the file system has it. */
const fillGaps: FillGaps = (from, to, gaps, map, size, direct) => thread.fill(from, to, gaps, map, size, direct);

/** Deterministic pseudo-random bytes. */
function bytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

let seq = 0;
/**
 * `source` read by the agent against `basis` (null: no basis), rebuilt by the receiver; returns
 * the outcome, the rebuilt bytes and the pages that travelled.
 */
async function transfer(
  source: Buffer | null,
  basis: Buffer | null,
  corrupt = false,
  basisOnDisk: Buffer | null = basis,
  clone: Clone | null = null,
): Promise<{ outcome: ReceiveOutcome; result: Buffer | null; sent: number; shared: boolean; fills: number }> {
  const n = ++seq;
  const src = path.join(dir, `src-${n}`);
  const bas = path.join(dir, `basis-${n}`);
  const dest = path.join(dir, `dest-${n}`);
  if (source) await fs.writeFile(src, source);
  if (basisOnDisk) await fs.writeFile(bas, basisOnDisk);
  const map = basis ? hasher.pages(basis) : Buffer.alloc(0);
  const pipe = new PassThrough();
  const out = new FrameWriter(pipe);
  const reader = new FrameReader(pipe);
  let shared = false;
  let fills = 0;
  const receiver = new FileReceiver(
    dest,
    0o600,
    basis ? { abs: bas, size: basis.length, map, sha256: '', backupId: 'B' } : null,
    hasher,
    () => undefined,
    async (from, to) => {
      shared = true;
      await fs.link(from, to);
    },
    (...args) => {
      fills++;
      return fillGaps(...args);
    },
    clone,
  );
  const faults = parseFaults(corrupt ? `corrupt=src-${n}` : undefined);
  const decoder = new Decoder();
  let sent = 0;
  const consume = (async (): Promise<ReceiveOutcome> => {
    for (;;) {
      const f = await reader.next();
      if (!f) throw new Error('no READ_END');
      if (f.type === T.PAGES) {
        const h = decodePages(f.body);
        sent += h.count;
        const { data, release } = decoder.decodeOwned(h.codec, h.payload, h.rawLen);
        receiver.pages(h, data, release);
      } else if (f.type === T.PASSED) receiver.passed(decodePassed(f.body).page);
      else if (f.type === T.READ_END) return receiver.finish(JSON.parse(f.body.toString()) as ReadEnd);
    }
  })();
  const [, outcome] = await Promise.all([serveRead({ id: n, path: src }, map, { out, hasher, encoder: new Encoder('zstd', 1), faults }), consume]);
  const result = await fs.readFile(dest).catch(() => null);
  return { outcome, result, sent, shared, fills };
}

describe('agent copy against a basis', () => {
  const base = bytes(20 * PAGE_SIZE + 100, 1);

  it('sends every page without a basis, and records the SHA-256 and page map', async () => {
    const r = await transfer(base, null);
    assert.equal(r.outcome.kind, 'written');
    assert.ok(r.result?.equals(base));
    assert.equal(r.sent, 21);
    if (r.outcome.kind === 'written') {
      assert.equal(r.outcome.size, base.length);
      assert.ok(r.outcome.map.equals(hasher.pages(base)));
      assert.match(r.outcome.sha256, /^[0-9a-f]{64}$/);
    }
  });

  it('sends only changed pages and rebuilds the whole file', async () => {
    const changed = Buffer.from(base);
    changed.fill(0x55, 3 * PAGE_SIZE + 10, 3 * PAGE_SIZE + 20);
    changed.fill(0x66, 15 * PAGE_SIZE, 17 * PAGE_SIZE);
    const r = await transfer(changed, base);
    assert.ok(r.result?.equals(changed));
    assert.equal(r.sent, 3);
    assert.equal(r.outcome.kind, 'written');
  });

  it('reads a file of several chunks in chunks (the hashing thread), with the same results as a small file', async () => {
    // 2.5 chunks of READ_CHUNK: small files are read in one go on the main thread instead.
    const big = bytes(2 * READ_CHUNK + READ_CHUNK / 2 + 100, 3);
    const whole = await transfer(big, null);
    assert.ok(whole.result?.equals(big));
    assert.equal(whole.sent, pageCount(big.length));
    assert.equal(whole.outcome.kind === 'written' && whole.outcome.sha256, createHash('sha256').update(big).digest('hex'));
    const changed = Buffer.from(big);
    // One page in the first chunk, two pages 6 apart in the second (not joined), the last byte.
    for (const at of [5 * PAGE_SIZE, READ_CHUNK + 2 * PAGE_SIZE, READ_CHUNK + 9 * PAGE_SIZE, big.length - 1]) changed[at] = (changed[at] ?? 0) ^ 0xff;
    const r = await transfer(changed, big);
    assert.ok(r.result?.equals(changed));
    assert.equal(r.sent, 4);
    assert.equal(r.outcome.kind === 'written' && r.outcome.sha256, createHash('sha256').update(changed).digest('hex'));
    // Most pages of the first chunk changed (two runs): the whole chunk travels, in one message.
    const perChunk = READ_CHUNK / PAGE_SIZE;
    const dense = Buffer.from(big);
    for (const p of [...Array.from({ length: perChunk / 2 + 6 }, (_, i) => i), perChunk - 20]) dense[p * PAGE_SIZE + 7] = (dense[p * PAGE_SIZE + 7] ?? 0) ^ 1;
    const d = await transfer(dense, big);
    assert.ok(d.result?.equals(dense));
    assert.equal(d.sent, perChunk);
    // A basis page altered on disk in the third chunk, far from any page that travelled: found
    // when it is filled in, and the file is read again.
    const damaged = Buffer.from(big);
    damaged[2 * READ_CHUNK + 3 * PAGE_SIZE] = (damaged[2 * READ_CHUNK + 3 * PAGE_SIZE] ?? 0) ^ 1;
    const x = await transfer(changed, big, false, damaged);
    assert.equal(x.outcome.kind, 'refetch');
    if (x.outcome.kind === 'refetch') assert.match(x.outcome.reason, new RegExp(`page ${2 * perChunk + 3} of its copy`));
    assert.equal(x.result, null);
  });

  it('handles files that grew, shrank, were emptied, or are unchanged (hard link)', async () => {
    const grown = Buffer.concat([base, bytes(5 * PAGE_SIZE, 2)]);
    const g = await transfer(grown, base);
    assert.ok(g.result?.equals(grown));
    assert.equal(g.sent, 6, 'the short last page and the new ones');
    const shrunk = base.subarray(0, 7 * PAGE_SIZE);
    const s = await transfer(shrunk, base);
    assert.ok(s.result?.equals(shrunk));
    assert.equal(s.sent, 0);
    const cut = base.subarray(0, 7 * PAGE_SIZE + 5);
    const c = await transfer(cut, base);
    assert.ok(c.result?.equals(cut));
    assert.equal(c.sent, 1);
    const e = await transfer(Buffer.alloc(0), base);
    assert.equal(e.result?.length, 0);
    const same = await transfer(base, base);
    assert.equal(same.outcome.kind, 'linked');
    assert.ok(same.shared && same.result?.equals(base));
    assert.equal(same.sent, 0);
  });

  it('asks for the file again when the basis copy is damaged, and refuses a page altered in transit', async () => {
    const changed = Buffer.from(base);
    changed[0] = (changed[0] ?? 0) ^ 1;
    const n = seq + 1;
    // The basis file on disk no longer matches its map: damaged after it was recorded.
    const src = path.join(dir, `src-${n}`);
    await fs.writeFile(src, changed);
    const r = await (async () => {
      const damaged = Buffer.from(base);
      damaged[10 * PAGE_SIZE] = (damaged[10 * PAGE_SIZE] ?? 0) ^ 1;
      const bas = path.join(dir, `basis-dmg`);
      await fs.writeFile(bas, damaged);
      const pipe = new PassThrough();
      const reader = new FrameReader(pipe);
      const receiver = new FileReceiver(path.join(dir, 'dest-dmg'), 0o600, { abs: bas, size: base.length, map: hasher.pages(base), sha256: '', backupId: 'B' }, hasher, () => undefined, fs.link, fillGaps);
      const decoder = new Decoder();
      const consume = (async () => {
        for (;;) {
          const f = await reader.next();
          if (f?.type === T.PAGES) {
            const h = decodePages(f.body);
            const { data, release } = decoder.decodeOwned(h.codec, h.payload, h.rawLen);
            receiver.pages(h, data, release);
          } else if (f?.type === T.PASSED) receiver.passed(decodePassed(f.body).page);
          else if (f?.type === T.READ_END) return receiver.finish(JSON.parse(f.body.toString()) as ReadEnd);
        }
      })();
      const [, o] = await Promise.all([serveRead({ id: 1, path: src }, hasher.pages(base), { out: new FrameWriter(pipe), hasher, encoder: new Encoder('lz4'), faults: parseFaults('') }), consume]);
      return o;
    })();
    assert.equal(r?.kind, 'refetch');
    await assert.rejects(transfer(base, null, true), /does not match the checksum computed where it was read: the data was altered in transit/);
  });

  it('fills the pages that did not travel from the basis, each checked: a basis altered on disk is never carried into the new file', async () => {
    const changed = Buffer.from(base);
    changed.fill(0x77, 2 * PAGE_SIZE, 3 * PAGE_SIZE);
    // Altered in a page that did not change: that page does not match its hash in the basis map.
    const damaged = Buffer.from(base);
    damaged[12 * PAGE_SIZE + 5] = (damaged[12 * PAGE_SIZE + 5] ?? 0) ^ 0x10;
    const r = await transfer(changed, base, false, damaged);
    assert.equal(r.outcome.kind, 'refetch');
    if (r.outcome.kind === 'refetch') assert.match(r.outcome.reason, /page 12 of its copy in backup B does not match the hash recorded for it \(that copy was altered on disk\)/);
    assert.equal(r.result, null, 'what was built is removed');
    // Shorter on disk than recorded: not copied at all.
    const short = await transfer(changed, base, false, base.subarray(0, 4 * PAGE_SIZE));
    assert.equal(short.outcome.kind, 'refetch');
    // Altered only in a page that changed since: overwritten by the page that arrived, and right.
    const overwritten = Buffer.from(base);
    overwritten[2 * PAGE_SIZE + 1] = (overwritten[2 * PAGE_SIZE + 1] ?? 0) ^ 0x10;
    const ok = await transfer(changed, base, false, overwritten);
    assert.equal(ok.outcome.kind, 'written');
    assert.ok(ok.result?.equals(changed));
    if (ok.outcome.kind === 'written') {
      assert.equal(ok.outcome.sha256, createHash('sha256').update(changed).digest('hex'));
      assert.ok(ok.outcome.map.equals(hasher.pages(changed)));
    }
  });

  it('reports a file that is gone', async () => {
    const r = await transfer(null, base);
    assert.equal(r.outcome.kind, 'vanished');
    assert.equal(r.result, null);
  });
});

describe('hashing a file in the hashing thread (read ahead)', () => {
  it('gives the page map and the SHA-256 of the first bytes of a file, whatever its size', async () => {
    // Buffers of 4 pages, 3 of them: sizes around the buffer and pipeline boundaries.
    for (const size of [0, 1, PAGE_SIZE, 4 * PAGE_SIZE, 4 * PAGE_SIZE + 1, 11 * PAGE_SIZE + 7, 40 * PAGE_SIZE]) {
      const data = bytes(size, size + 9);
      const file = path.join(dir, `hash-${size}`);
      await fs.writeFile(file, data);
      const fh = await fs.open(file, 'r');
      try {
        const both = await hashFile(thread, fh, size, 'both');
        assert.equal(both.bytes, size);
        assert.ok(both.map.equals(hasher.pages(data)), `map of ${size} bytes`);
        assert.equal(both.sha256, createHash('sha256').update(data).digest('hex'), `SHA-256 of ${size} bytes`);
        const sha = await hashFile(thread, fh, size, 'sha');
        assert.equal(sha.sha256, both.sha256);
        assert.equal(sha.map.length, 0);
        // A limit past the end stops at the end; a limit inside the file stops there.
        const pages = await hashFile(thread, fh, size + 5 * PAGE_SIZE, 'pages');
        assert.equal(pages.bytes, size);
        assert.ok(pages.map.equals(hasher.pages(data)));
        assert.equal(pages.sha256, '');
        const half = Math.floor(size / 2);
        const part = await hashFile(thread, fh, half, 'both');
        assert.equal(part.sha256, createHash('sha256').update(data.subarray(0, half)).digest('hex'));
      } finally {
        await fh.close();
      }
    }
  });
});

describe('page maps', () => {
  it('hash per seed and per page, the last page over its own bytes', async () => {
    const data = bytes(2 * PAGE_SIZE + 1, 3);
    const map = hasher.pages(data);
    assert.equal(map.length, 3 * HASH_BYTES);
    assert.ok(Buffer.from(hasher.page(data.subarray(2 * PAGE_SIZE))).equals(map.subarray(2 * HASH_BYTES)));
    const other = await PageHasher.create(newSeed());
    assert.ok(!other.pages(data).equals(map));
    await assert.rejects(PageHasher.create('nope'));
    assert.equal(pageCount(0), 0);
    assert.equal(pageCount(PAGE_SIZE + 1), 2);
  });

  it('compare maps into ranges of changed pages', () => {
    const a = Buffer.alloc(6 * HASH_BYTES, 1);
    const b = Buffer.from(a.subarray(0, 4 * HASH_BYTES));
    b[HASH_BYTES] = 2;
    assert.ok(samePage(a, 0, b, 0) && !samePage(a, 1, b, 1) && !samePage(a, 5, b, 5));
    assert.deepEqual(changedRanges(a, b), [[1, 1], [4, 2]]);
    assert.deepEqual(changedRanges(a, a), []);
    assert.deepEqual(splitRanges([[0, 5], [10, 2]], 2), [[0, 2], [2, 2], [4, 1], [10, 2]]);
  });

  it('joins runs of changed pages separated by fewer than `bridge` unchanged ones', () => {
    // Basis: 12 pages of hash 1; the chunk starts at page 2 of the file and has 10 pages.
    const basis = Buffer.alloc(12 * HASH_BYTES, 1);
    const chunk = Buffer.alloc(10 * HASH_BYTES, 1);
    for (const p of [0, 2, 3, 7, 9]) chunk[p * HASH_BYTES] = 9;
    assert.deepEqual(sendRuns(chunk, basis, 2, 10), [[0, 1], [2, 4], [7, 8], [9, 10]]);
    assert.deepEqual(sendRuns(chunk, basis, 2, 10, 1), [[0, 1], [2, 4], [7, 8], [9, 10]]);
    assert.deepEqual(sendRuns(chunk, basis, 2, 10, 2), [[0, 4], [7, 10]]);
    assert.deepEqual(sendRuns(chunk, basis, 2, 10, 3), [[0, 4], [7, 10]]);
    assert.deepEqual(sendRuns(chunk, basis, 2, 10, 4), [[0, 10]]);
    // Pages the basis does not have (a file that grew) always travel; nothing changed: nothing.
    assert.deepEqual(sendRuns(Buffer.alloc(10 * HASH_BYTES, 1), basis, 4, 10, 4), [[8, 10]]);
    assert.deepEqual(sendRuns(Buffer.alloc(10 * HASH_BYTES, 1), basis, 2, 10, 4), []);
    // No basis at all (a new file): one run of every page.
    assert.deepEqual(sendRuns(chunk, Buffer.alloc(0), 0, 10, 4), [[0, 10]]);
  });
});

describe('agent journal, excludes, listing, faults', () => {
  it('keeps complete, valid journal lines whose map is on disk', () => {
    const ok = { p: 'data/a', s: 1, m: 2, h: 'a'.repeat(64), o: 0, n: 1 };
    const text = [JSON.stringify(ok), JSON.stringify({ ...ok, p: 'data/b', o: 16 }), 'garbage', JSON.stringify({ ...ok, p: 'data/c', o: 32, n: 2 }), '{"p":"data/torn"'].join('\n');
    assert.deepEqual(
      parseJournal(text, 48).map((r) => r.p),
      ['data/a', 'data/b'],
    );
    assert.deepEqual(parseJournal(`${JSON.stringify({ ...ok, h: 'xyz' })}\n`, 100), []);
  });

  it('reads the rsync method excludes as rsync does', () => {
    const ex = rsyncExcluder(PGDATA_EXCLUDES);
    for (const rel of ['postmaster.pid', 'pg_wal/000000010000000000000001', 'pg_replslot/x', 'base/pgsql_tmp', 'base/5/pgsql_tmp12', 'pgsql_tmp', 'global/pg_internal.init', 'backup_label', 'recovery.signal'])
      assert.ok(ex(rel), rel);
    for (const rel of ['pg_wal', 'pg_replslot', 'base/postmaster.pid', 'base/5/1234', 'global/pg_control', 'backup_label.older', 'PG_VERSION']) assert.ok(!ex(rel), rel);
    assert.ok(rsyncExcluder(['a/b'])('x/a/b'));
  });

  it('lists a tree, symlinks unfollowed, excluded directories not entered', async () => {
    const root = path.join(dir, 'tree');
    await fs.mkdir(path.join(root, 'base', 'pgsql_tmp'), { recursive: true });
    await fs.mkdir(path.join(root, 'pg_wal'));
    await fs.writeFile(path.join(root, 'pg_wal', 'seg'), 'x');
    await fs.writeFile(path.join(root, 'base', 'pgsql_tmp', 't'), 'x');
    await fs.writeFile(path.join(root, 'base', 'f'), 'hello');
    await fs.symlink('/nowhere', path.join(root, 'link'));
    const got: WireEntry[] = [];
    const n = await walkTree(root, rsyncExcluder(PGDATA_EXCLUDES), async (e) => void got.push(...e), 2);
    assert.equal(n, 4);
    assert.deepEqual(
      got.map((e) => [e[0], e[1], e[2], e[5]]),
      [
        ['base', 'd', 0, undefined],
        ['link', 'l', 0, '/nowhere'],
        ['pg_wal', 'd', 0, undefined],
        ['base/f', 'f', 5, undefined],
      ],
    );
  });

  it('parses fault points (inert without the variable)', () => {
    assert.deepEqual(parseFaults(undefined), { protocol: null, corrupt: null, pause: null });
    assert.deepEqual(parseFaults('protocol=7,corrupt=base/5,pause=/a/b:/tmp/f'), { protocol: 7, corrupt: 'base/5', pause: { match: '/a/b', flag: '/tmp/f' } });
  });
});

describe('transfer_method = agent refusals', () => {
  it('needs backup_method = rsync and an ssh_command, said in one line', async () => {
    const { refuseAgentTransfer } = await import('../../src/backup/backup.js');
    assert.doesNotThrow(() => refuseAgentTransfer({ transfer_method: 'rsync', backup_method: 'local-rsync', ssh_command: null }));
    assert.doesNotThrow(() => refuseAgentTransfer({ transfer_method: 'agent', backup_method: 'rsync', ssh_command: 'ssh pg' }));
    assert.throws(() => refuseAgentTransfer({ transfer_method: 'agent', backup_method: 'local-rsync', ssh_command: null }), /^BarmanError: transfer_method = agent needs backup_method = rsync \(this server has local-rsync\)$/);
    assert.throws(() => refuseAgentTransfer({ transfer_method: 'agent', backup_method: 'rsync', ssh_command: null }), /needs ssh_command/);
  });
});

describe('fills from a basis through direct I/O', () => {
  it('gives the same file as the ordinary path, short tail and ranges of any length included, and still checks every page', async () => {
    const base = bytes(13 * PAGE_SIZE + 1234, 7);
    const bas = path.join(dir, 'direct-basis');
    await fs.writeFile(bas, base);
    const map = hasher.pages(base);
    const gaps: [number, number][] = [
      [0, 1],
      [2, 7],
      [9, 14],
    ];
    const results: Buffer[] = [];
    for (const direct of [false, true]) {
      const dest = path.join(dir, `direct-dest-${String(direct)}`);
      const from = await fs.open(bas, 'r');
      const to = await fs.open(dest, 'w');
      const dFrom = direct ? await openDirect(bas, fs.constants.O_RDONLY) : null;
      const dTo = direct ? await openDirect(dest, fs.constants.O_WRONLY) : null;
      try {
        const r = await thread.fill(from.fd, to.fd, gaps, map, base.length, dFrom && dTo ? { from: dFrom.fd, to: dTo.fd } : null);
        assert.deepEqual(r, { bytes: 10 * PAGE_SIZE + 1234, bad: null });
      } finally {
        for (const fh of [from, to, dFrom, dTo]) await fh?.close();
      }
      const got = await fs.readFile(dest);
      assert.equal(got.length, base.length);
      for (const [a, b] of gaps) assert.ok(got.subarray(a * PAGE_SIZE, b * PAGE_SIZE).equals(base.subarray(a * PAGE_SIZE, b * PAGE_SIZE)), `pages ${a}-${b}`);
      results.push(got);
    }
    assert.ok((results[0] as Buffer).equals(results[1] as Buffer));
    // A basis page altered on disk is found through the direct path too.
    const damaged = Buffer.from(base);
    damaged[5 * PAGE_SIZE + 3] ^= 0xff;
    await fs.writeFile(bas, damaged);
    const from = await fs.open(bas, 'r');
    const dest = path.join(dir, 'direct-dest-damaged');
    const to = await fs.open(dest, 'w');
    const dFrom = await openDirect(bas, fs.constants.O_RDONLY);
    const dTo = await openDirect(dest, fs.constants.O_WRONLY);
    try {
      const r = await thread.fill(from.fd, to.fd, gaps, map, base.length, dFrom && dTo ? { from: dFrom.fd, to: dTo.fd } : null);
      assert.equal(r.bad, 5);
    } finally {
      for (const fh of [from, to, dFrom, dTo]) await fh?.close();
    }
  });
});

describe('changed files started as clones of the basis (reflink)', () => {
  const base = bytes(20 * PAGE_SIZE + 100, 21);
  /** A clone as the file system makes it: the same bytes (a copy here); `calls` counts them. */
  const cloning = (ok: boolean) => {
    const calls: string[] = [];
    const clone: Clone = async (from, to) => {
      calls.push(from);
      if (!ok) return false;
      await fs.copyFile(from, to, fs.constants.COPYFILE_EXCL);
      return true;
    };
    return { calls, clone };
  };

  it('writes only the pages that arrived over the clone: nothing filled, the same file as without it', async () => {
    const changed = Buffer.from(base);
    changed.fill(0x55, 3 * PAGE_SIZE + 10, 3 * PAGE_SIZE + 20);
    changed.fill(0x66, 15 * PAGE_SIZE, 17 * PAGE_SIZE);
    const grown = Buffer.concat([base, bytes(5 * PAGE_SIZE, 22)]);
    for (const source of [changed, grown, base.subarray(0, 7 * PAGE_SIZE), base.subarray(0, 7 * PAGE_SIZE + 5), Buffer.alloc(0)]) {
      const c = cloning(true);
      const r = await transfer(source, base, false, base, c.clone);
      const plain = await transfer(source, base);
      assert.equal(r.outcome.kind, 'written');
      assert.ok(r.result?.equals(source), `${source.length} bytes rebuilt`);
      assert.equal(c.calls.length, 1);
      assert.equal(r.fills, 0, 'nothing read from the basis');
      assert.equal(r.sent, plain.sent);
      assert.deepEqual(r.outcome, { ...plain.outcome, cloned: true });
    }
  });

  it('still hard-links an unchanged file, and fills as before where the file system cannot clone', async () => {
    const c = cloning(true);
    const same = await transfer(base, base, false, base, c.clone);
    assert.equal(same.outcome.kind, 'linked');
    assert.equal(c.calls.length, 0);
    const changed = Buffer.from(base);
    changed.fill(0x77, 2 * PAGE_SIZE, 3 * PAGE_SIZE);
    const no = cloning(false);
    const r = await transfer(changed, base, false, base, no.clone);
    assert.equal(no.calls.length, 1);
    assert.ok(r.fills > 0);
    assert.ok(r.result?.equals(changed));
  });

  it('never clones a basis whose size is not the one recorded: the file is read again', async () => {
    const changed = Buffer.from(base);
    changed.fill(0x77, 2 * PAGE_SIZE, 3 * PAGE_SIZE);
    const c = cloning(true);
    const short = await transfer(changed, base, false, base.subarray(0, 4 * PAGE_SIZE), c.clone);
    assert.equal(short.outcome.kind, 'refetch');
    if (short.outcome.kind === 'refetch') assert.match(short.outcome.reason, /has 32768 bytes, 163940 recorded/);
    assert.equal(c.calls.length, 0);
    assert.equal(short.result, null);
  });
});

describe('fills gathered into large tasks', () => {
  it('joins the ranges the agent passes a chunk at a time into one range per FILL_PAGES', async () => {
    const perChunk = READ_CHUNK / PAGE_SIZE;
    const pages = 2 * FILL_PAGES + 3 * perChunk;
    const base = bytes(pages * PAGE_SIZE, 11);
    const bas = path.join(dir, 'joined-basis');
    await fs.writeFile(bas, base);
    const calls: [number, number][][] = [];
    const recording: FillGaps = (from, to, gaps, map, size, direct) => {
      calls.push(gaps.map(([a, b]) => [a, b]));
      return fillGaps(from, to, gaps, map, size, direct);
    };
    const dest = path.join(dir, 'joined-dest');
    const receiver = new FileReceiver(dest, 0o600, { abs: bas, size: base.length, map: hasher.pages(base), sha256: '', backupId: 'B' }, hasher, () => undefined, fs.link, recording);
    // The agent read every chunk and sent nothing: PASSED after each one.
    for (let p = perChunk; p <= pages; p += perChunk) receiver.passed(p);
    // The file shrank by one page since: not a hard link, the rest filled from the basis.
    const size = base.length - PAGE_SIZE;
    const out = await receiver.finish({ id: 1, size, sha256: 'x', mtimeMs: Date.now() });
    assert.equal(out.kind, 'written');
    assert.deepEqual(calls, [[[0, FILL_PAGES]], [[FILL_PAGES, 2 * FILL_PAGES]], [[2 * FILL_PAGES, pages]]]);
    assert.ok((await fs.readFile(dest)).equals(base.subarray(0, size)));
  });
});

describe('aligned buffers', () => {
  it('are page-aligned views of their own memory, of the size asked; the shared ones reach a worker thread', async () => {
    for (const n of [8192, 1 << 20, (1 << 20) + 100]) {
      const b = alignedBuffer(n);
      assert.equal(b.length, n);
      assert.equal(b.byteOffset, 0);
      assert.equal(b.buffer.byteLength % 65536, 0);
    }
    const s = alignedSharedBuffer(1 << 20);
    assert.ok(s instanceof SharedArrayBuffer);
    assert.equal(s.byteLength, 1 << 20);
    const { Worker } = await import('node:worker_threads');
    const w = new Worker('const { workerData, parentPort } = require("node:worker_threads"); new Uint8Array(workerData)[5] = 42; parentPort.postMessage(0);', { eval: true, workerData: s });
    await new Promise((resolve) => w.once('message', resolve));
    await w.terminate();
    assert.equal(new Uint8Array(s)[5], 42);
  });
});

describe('reads and writes through direct I/O', () => {
  it('follows one set of alignment rules', () => {
    const A = DIRECT_ALIGN;
    assert.equal(directWriteHead(5 * A + 77, 8192, true), 5 * A, 'the aligned head goes directly, the tail does not');
    assert.equal(directWriteHead(A - 1, 0, true), 0);
    assert.equal(directWriteHead(3 * A, 100, true), 0, 'an unaligned offset: nothing directly');
    assert.equal(directWriteHead(3 * A, 0, false), 0, 'an unaligned buffer: nothing directly');
    assert.equal(directReadLength(A + 1, 0, true, 2 * A), 2 * A, 'rounded up');
    assert.equal(directReadLength(A + 1, 0, true, A + 1), 0, 'no room for the rounded length');
    assert.equal(directReadLength(A, 512, true, 4 * A), 0);
    assert.equal(directReadLength(A, 0, false, 4 * A), 0);
    assert.ok(directWriteGoesOn(2 * A));
    assert.ok(!directWriteGoesOn(0) && !directWriteGoesOn(A + 512));
  });

  it('reads and writes the same bytes as the ordinary path, a short tail and an unaligned buffer included', async () => {
    const data = bytes(5 * PAGE_SIZE + 777, 11);
    const file = path.join(dir, 'direct-rw');
    const fh = await fs.open(file, 'w+');
    const direct = await openDirect(file, fs.constants.O_RDWR);
    try {
      const aligned = alignedBuffer(1 << 16);
      data.copy(aligned);
      // Aligned buffer: the head directly, the 777-byte tail through the ordinary descriptor.
      await writeMaybeDirect(fh, direct, aligned.subarray(0, data.length), 0, true);
      // An ordinary buffer (not aligned): all through the ordinary descriptor.
      await writeMaybeDirect(fh, direct, Buffer.from(data), data.length, false);
      const back = alignedBuffer(1 << 16);
      assert.equal(await readMaybeDirect(fh, direct, back, 0, data.length, true), data.length);
      assert.ok(back.subarray(0, data.length).equals(data));
      const other = Buffer.alloc(1 << 16);
      assert.equal(await readMaybeDirect(fh, direct, other, data.length, data.length, false), data.length);
      assert.ok(other.subarray(0, data.length).equals(data));
      // Past the end of the file: what there is.
      assert.equal(await readMaybeDirect(fh, direct, back, PAGE_SIZE * 8, PAGE_SIZE * 4, true), 2 * data.length - PAGE_SIZE * 8);
    } finally {
      await direct?.close();
      await fh.close();
    }
    assert.ok((await fs.readFile(file)).equals(Buffer.concat([data, data])));
  });
});
