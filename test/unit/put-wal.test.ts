/**
 * put-wal's receiver (src/wal/put-wal.ts): tar streams built here with tar-stream's pack(), fed
 * to receiveWalTar on a server in a temporary barman_home. Every rejection must leave incoming/
 * exactly as it was: no new file and no temporary file.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import * as zlib from 'node:zlib';
import tar, { type Header } from 'tar-stream';
import { walArchivePath } from '../../src/wal/archiver.js';
import { PutWalDuplicateError, receiveWalTar, type PutWalReport } from '../../src/wal/put-wal.js';
import { hasProgram, prng } from '../helpers/testing.js';
import { makeTestServer, type TestServer } from '../helpers/server-fixture.js';

let tmpRoot = '';
let serial = 0;

before(async () => {
  tmpRoot = await fsp.mkdtemp(path.join(os.tmpdir(), 'barman-putwal-'));
});

after(async () => {
  await fsp.rm(tmpRoot, { recursive: true, force: true });
});

function makeServer(extra: Record<string, string> = {}): TestServer {
  return makeTestServer(path.join(tmpRoot, `t${++serial}`), extra);
}

function data(seed: number, size = 64 * 1024): Buffer {
  const rnd = prng(seed);
  const buf = Buffer.alloc(size);
  for (let i = 0; i + 4 <= size; i += 4) buf.writeUInt32LE(rnd() >>> 0, i);
  return buf;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

type Member = Partial<Header> & { name: string; body?: Buffer };

/** A tar stream as tar-stream's pack() writes it (ustar headers, PAX records when asked). */
async function buildTar(members: Member[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const c of pack) chunks.push(c as Buffer);
  })();
  for (const m of members) {
    const { body, ...header } = m;
    await new Promise<void>((resolve, reject) => {
      if (body !== undefined) pack.entry({ mtime: new Date(1_700_000_000_000), ...header, size: body.length }, body, (err) => (err ? reject(err) : resolve()));
      else pack.entry({ mtime: new Date(1_700_000_000_000), ...header }, (err) => (err ? reject(err) : resolve()));
    });
  }
  pack.finalize();
  await collected;
  return Buffer.concat(chunks);
}

/** WAL members plus their checksum file. */
function withSums(files: Array<[string, Buffer]>, opts: { file?: 'SHA256SUMS' | 'MD5SUMS'; sep?: string; extraLines?: string[] } = {}): Member[] {
  const file = opts.file ?? 'SHA256SUMS';
  const digest = file === 'MD5SUMS' ? md5 : sha256;
  const lines = files.map(([n, b]) => `${digest(b)}${opts.sep ?? ' *'}${n}\n`).join('') + (opts.extraLines ?? []).join('');
  return [...files.map(([name, body]) => ({ name, body })), { name: file, body: Buffer.from(lines) }];
}

/** Feed in 64 KiB pieces, as stdin delivers it. */
function stream(buf: Buffer): Readable {
  const pieces: Buffer[] = [];
  for (let i = 0; i < buf.length; i += 65536) pieces.push(buf.subarray(i, i + 65536));
  return Readable.from(pieces);
}

const listing = (dir: string) => (fs.existsSync(dir) ? fs.readdirSync(dir).sort() : []);

/** A rejection: the message matches and incoming/ is exactly as before (no temp file either). */
async function rejects(t: TestServer, members: Member[] | Buffer, message: RegExp): Promise<void> {
  const before = listing(t.incoming);
  const tarData = Buffer.isBuffer(members) ? members : await buildTar(members);
  await assert.rejects(receiveWalTar(t.srv, stream(tarData)), (err: Error) => {
    assert.match(err.message, message);
    assert.doesNotMatch(err.message, /\n/);
    return true;
  });
  assert.deepEqual(listing(t.incoming), before);
}

const S1 = '000000010000000000000001';
const S2 = '000000010000000000000002';
const S3 = '000000010000000000000003';

describe('receiveWalTar: accepted streams', () => {
  it('stores one segment with its content, mode 0600 and tar mtime, and nothing else', async () => {
    const t = makeServer();
    const body = data(1, 1 << 20);
    const report = await receiveWalTar(t.srv, stream(await buildTar(withSums([[S1, body]]))));
    assert.deepEqual(report.stored, [S1]);
    assert.equal(report.checksumFile, 'SHA256SUMS');
    assert.deepEqual(listing(t.incoming), [S1]);
    const file = path.join(t.incoming, S1);
    assert.ok(fs.readFileSync(file).equals(body));
    const st = fs.statSync(file);
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(st.mtimeMs, 1_700_000_000_000);
  });

  it('creates a missing incoming/ directory with mode 0700', async () => {
    const t = makeServer();
    fs.rmSync(t.incoming, { recursive: true });
    await receiveWalTar(t.srv, stream(await buildTar(withSums([[S1, data(36)]]))));
    assert.equal(fs.statSync(t.incoming).mode & 0o777, 0o700);
    assert.deepEqual(listing(t.incoming), [S1]);
  });

  it('uses the sub-second PAX mtime record when there is one', async () => {
    const t = makeServer();
    const body = data(2);
    const members = withSums([[S1, body]]);
    members[0] = { ...members[0], name: S1, pax: { mtime: '1700000123.25' } };
    await receiveWalTar(t.srv, stream(await buildTar(members)));
    assert.equal(fs.statSync(path.join(t.incoming, S1)).mtimeMs, 1_700_000_123_250);
  });

  it('stores several segments, a history, a .backup and a .partial file from one stream', async () => {
    const t = makeServer();
    const files: Array<[string, Buffer]> = [
      [S1, data(3)],
      [S2, data(4)],
      ['00000002.history', Buffer.from('1\t0/3000000\tno recovery target specified\n')],
      [`${S2}.00000028.backup`, Buffer.from('START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n')],
      [`${S3}.partial`, data(5)],
    ];
    const report = await receiveWalTar(t.srv, stream(await buildTar(withSums(files))));
    assert.deepEqual(report.stored, files.map(([n]) => n));
    assert.deepEqual(listing(t.incoming), files.map(([n]) => n).sort());
    for (const [n, b] of files) assert.ok(fs.readFileSync(path.join(t.incoming, n)).equals(b), n);
  });

  it('accepts a batch of 64 segments', async () => {
    const t = makeServer();
    const files: Array<[string, Buffer]> = [];
    for (let i = 1; i <= 64; i++) files.push([`0000000100000000000000${i.toString(16).toUpperCase().padStart(2, '0')}`, data(100 + i, 32 * 1024)]);
    const report = await receiveWalTar(t.srv, stream(await buildTar(withSums(files))));
    assert.equal(report.stored.length, 64);
    assert.equal(listing(t.incoming).length, 64);
  });

  it('accepts ./ prefixes on member and checksum names, MD5SUMS and the two-space separator', async () => {
    const t = makeServer();
    const a = data(6);
    const b = data(7);
    const members: Member[] = [
      { name: `./${S1}`, body: a },
      { name: S2, body: b },
      { name: 'MD5SUMS', body: Buffer.from(`${md5(a)}  ./${S1}\n${md5(b).toUpperCase()} *${S2}\n\n`) },
    ];
    const report = await receiveWalTar(t.srv, stream(await buildTar(members)));
    assert.equal(report.checksumFile, 'MD5SUMS');
    assert.deepEqual(listing(t.incoming), [S1, S2]);
  });

  it('accepts the two-space separator in SHA256SUMS', async () => {
    const t = makeServer();
    await receiveWalTar(t.srv, stream(await buildTar(withSums([[S1, data(8)]], { sep: '  ' }))));
    assert.deepEqual(listing(t.incoming), [S1]);
  });

  it('accepts a stream written by GNU tar --format=pax with sha256sum -b lines', { skip: !hasProgram('tar') || !hasProgram('sha256sum') }, async () => {
    const t = makeServer();
    const src = fs.mkdtempSync(path.join(tmpRoot, 'gnutar-'));
    const a = data(9, 1 << 20);
    fs.writeFileSync(path.join(src, S1), a);
    fs.writeFileSync(path.join(src, '00000002.history'), '1\t0/3000000\treason\n');
    fs.utimesSync(path.join(src, S1), 1_700_000_000.5, 1_700_000_000.5);
    const sums = spawnSync('sha256sum', ['-b', S1, '00000002.history'], { cwd: src });
    assert.equal(sums.status, 0);
    fs.writeFileSync(path.join(src, 'SHA256SUMS'), sums.stdout);
    assert.match(sums.stdout.toString(), / \*000000010000000000000001\n/);
    const tarred = spawnSync('tar', ['--format=pax', '-cf', '-', S1, '00000002.history', 'SHA256SUMS'], { cwd: src, maxBuffer: 64 << 20 });
    assert.equal(tarred.status, 0);
    const report = await receiveWalTar(t.srv, stream(tarred.stdout));
    assert.deepEqual(report.stored, [S1, '00000002.history']);
    assert.ok(fs.readFileSync(path.join(t.incoming, S1)).equals(a));
    assert.equal(fs.statSync(path.join(t.incoming, S1)).mtimeMs, 1_700_000_000_500);
  });
});

describe('receiveWalTar: rejected members (nothing stored)', () => {
  const bad: Array<[string, Member, RegExp]> = [
    ['parent traversal', { name: '../x', body: Buffer.from('x') }, /Invalid member name '\.\.\/x'.*no path separators/],
    ['absolute path', { name: `/abs/${S1}`, body: Buffer.from('x') }, /Invalid member name '\/abs\/0+10+1'/],
    ['sub-directory', { name: `a/${S1}`, body: Buffer.from('x') }, /Invalid member name 'a\/0+10+1'/],
    ['backslash', { name: `a\\${S1}`, body: Buffer.from('x') }, /Invalid member name/],
    ['PAX path with a separator', { name: S1, pax: { path: `../${S1}` }, body: Buffer.from('x') }, /Invalid member name '\.\.\/0+10+1'/],
    ['dot', { name: '.', body: Buffer.from('x') }, /Invalid member name '\.'/],
    ['dot-dot', { name: '..', body: Buffer.from('x') }, /Invalid member name '\.\.'/],
    ['./ only', { name: './', body: Buffer.from('x') }, /Invalid member name|only regular files/],
    ['non-WAL name', { name: 'postgresql.conf', body: Buffer.from('x') }, /'postgresql\.conf' of the tar stream is not a WAL file name/],
    ['symlink', { name: S1, type: 'symlink', linkname: '/etc/passwd' }, /'0+10+1' of the tar stream is a symbolic link: only regular files/],
    ['hard link', { name: S1, type: 'link', linkname: S2 }, /is a hard link: only regular files/],
    ['directory', { name: '00000001.history', type: 'directory' }, /is a directory: only regular files/],
    ['character device', { name: S1, type: 'character-device', devmajor: 1, devminor: 3 }, /is a character device/],
    ['fifo', { name: S1, type: 'fifo' }, /is a FIFO/],
  ];
  for (const [what, member, message] of bad) {
    it(`rejects a ${what}`, async () => {
      const t = makeServer();
      const good = data(10);
      // A valid member first: it must not survive the rejection of the second one.
      await rejects(t, [{ name: S2, body: good }, member, { name: 'SHA256SUMS', body: Buffer.from(`${sha256(good)} *${S2}\n`) }], message);
      assert.deepEqual(listing(t.incoming), []);
    });
  }

  it('rejects a member larger than the limit before reading its data', async () => {
    const t = makeServer();
    const tarData = await buildTar([{ name: S1, body: Buffer.from('x') }]);
    // Patch the size field (octal, 12 bytes at 124) to 2 GiB and fix the header checksum.
    tarData.write('20000000000\0', 124, 'latin1');
    tarData.fill(' ', 148, 156);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += tarData[i] ?? 0;
    tarData.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    await rejects(t, tarData.subarray(0, 1024), /is 2147483648 bytes long: more than 1073741824 bytes/);
  });

  it('honours a lower size limit', async () => {
    const t = makeServer();
    const tarData = await buildTar(withSums([[S1, data(11, 4096)]]));
    await assert.rejects(receiveWalTar(t.srv, stream(tarData), { maxMemberSize: 1024 }), /4096 bytes long: more than 1024 bytes/);
    assert.deepEqual(listing(t.incoming), []);
  });

  it('rejects the same member twice and two checksum files', async () => {
    const t = makeServer();
    const a = data(12);
    await rejects(t, [{ name: S1, body: a }, { name: S1, body: a }, { name: 'SHA256SUMS', body: Buffer.from(`${sha256(a)} *${S1}\n`) }], /'0+10+1' appears twice/);
    await rejects(t, [...withSums([[S1, a]]), { name: 'MD5SUMS', body: Buffer.from(`${md5(a)} *${S1}\n`) }], /two checksum files/);
  });

  it('rejects an empty stream', async () => {
    const t = makeServer();
    await rejects(t, [], /holds no WAL file/);
    await rejects(t, Buffer.alloc(0), /Truncated tar stream|holds no WAL file/);
  });

  it('rejects garbage', async () => {
    const t = makeServer();
    await rejects(t, Buffer.from('this is not a tar stream'.repeat(100)), /Invalid tar stream|Truncated/);
  });
});

describe('receiveWalTar: checksums', () => {
  it('rejects a wrong checksum', async () => {
    const t = makeServer();
    const a = data(13);
    const b = data(14);
    const members: Member[] = [
      { name: S1, body: a },
      { name: S2, body: b },
      { name: 'SHA256SUMS', body: Buffer.from(`${sha256(a)} *${S1}\n${sha256(a)} *${S2}\n`) },
    ];
    await rejects(t, members, new RegExp(`^Bad file checksum: '${S2}' \\(SHA256SUMS says ${sha256(a)}, received data has ${sha256(b)}\\)$`));
  });

  it('rejects a wrong MD5 checksum', async () => {
    const t = makeServer();
    await rejects(t, [{ name: S1, body: data(15) }, { name: 'MD5SUMS', body: Buffer.from(`${md5(data(16))} *${S1}\n`) }], /^Bad file checksum: '0+10+1' \(MD5SUMS says/);
  });

  it('rejects a file without checksum', async () => {
    const t = makeServer();
    const a = data(17);
    await rejects(t, [{ name: S2, body: data(18) }, ...withSums([[S1, a]])], new RegExp(`^Missing checksum for file: '${S2}'$`));
  });

  it('rejects a stream without checksum file', async () => {
    const t = makeServer();
    await rejects(t, [{ name: S1, body: data(19) }], /^Missing checksum for file: '0+10+1' \(no SHA256SUMS or MD5SUMS member\)$/);
  });

  it('rejects a checksum without file', async () => {
    const t = makeServer();
    await rejects(t, withSums([[S1, data(20)]], { extraLines: [`${sha256(Buffer.from('x'))} *${S2}\n`] }), new RegExp(`^Checksum without corresponding file: '${S2}'$`));
  });

  it('rejects malformed checksum lines', async () => {
    const t = makeServer();
    const a = data(21);
    await rejects(t, [{ name: S1, body: a }, { name: 'SHA256SUMS', body: Buffer.from(`${sha256(a)} ${S1}\n`) }], /^Invalid line 1 in SHA256SUMS/);
    await rejects(t, [{ name: S1, body: a }, { name: 'SHA256SUMS', body: Buffer.from(`${md5(a)} *${S1}\n`) }], /^Invalid line 1 in SHA256SUMS/);
  });
});

describe('receiveWalTar: duplicates', () => {
  it('accepts the same content again, from incoming/ and from the archive, without writing', async () => {
    const t = makeServer();
    const a = data(22);
    const b = data(23);
    const tarData = await buildTar(withSums([[S1, a], [S2, b]]));
    await receiveWalTar(t.srv, stream(tarData));
    // S2 is archived (gzip-compressed, as archive-wal stores it); S1 still waits in incoming/.
    const archived = walArchivePath(t.srv, S2);
    fs.mkdirSync(path.dirname(archived), { recursive: true });
    fs.writeFileSync(archived, zlib.gzipSync(b));
    fs.unlinkSync(path.join(t.incoming, S2));
    const before = fs.statSync(path.join(t.incoming, S1));

    const report: PutWalReport = await receiveWalTar(t.srv, stream(tarData));
    assert.deepEqual(report.stored, []);
    assert.deepEqual(report.alreadyPresent, [S1, S2]);
    assert.deepEqual(listing(t.incoming), [S1]);
    const afterSt = fs.statSync(path.join(t.incoming, S1));
    assert.equal(afterSt.ino, before.ino);
    assert.equal(afterSt.mtimeMs, before.mtimeMs);
    assert.ok(zlib.gunzipSync(fs.readFileSync(archived)).equals(b));
    assert.deepEqual(listing(t.errors), []);
  });

  it('a different content overwrites nothing, keeps the copy in errors/ and fails', async () => {
    const t = makeServer();
    const a = data(24);
    const b = data(25);
    await receiveWalTar(t.srv, stream(await buildTar(withSums([[S1, a]]))));
    const archived = walArchivePath(t.srv, S2);
    fs.mkdirSync(path.dirname(archived), { recursive: true });
    fs.writeFileSync(archived, b);

    const a2 = data(26);
    const b2 = data(27);
    const c = data(28);
    await assert.rejects(receiveWalTar(t.srv, stream(await buildTar(withSums([[S1, a2], [S2, b2], [S3, c]])))), (err: Error) => {
      assert.ok(err instanceof PutWalDuplicateError);
      assert.match(err.message, new RegExp(`^WAL files ${S1}, ${S2} already present in server pg with a different content: nothing was overwritten`));
      assert.deepEqual(err.report.stored, [S3]);
      assert.equal(err.report.duplicates.length, 2);
      return true;
    });
    assert.ok(fs.readFileSync(path.join(t.incoming, S1)).equals(a));
    assert.ok(fs.readFileSync(archived).equals(b));
    // The new segment of the same stream is stored: a retry would find it identical.
    assert.deepEqual(listing(t.incoming), [S1, S3]);
    const kept = listing(t.errors);
    assert.equal(kept.length, 2);
    for (const [name, body] of [[S1, a2], [S2, b2]] as const) {
      const f = kept.find((k) => k.startsWith(`${name}.`));
      assert.ok(f, name);
      assert.match(f, /^0{7}10{15}[12]\.\d{8}T\d{6}Z\.duplicate$/);
      assert.ok(fs.readFileSync(path.join(t.errors, f)).equals(body));
      assert.equal(fs.statSync(path.join(t.errors, f)).mode & 0o777, 0o600);
    }
  });
});

describe('receiveWalTar: incomplete streams and signals', () => {
  it('rejects a stream cut in the middle of a member', async () => {
    const t = makeServer();
    const tarData = await buildTar(withSums([[S1, data(29, 256 * 1024)], [S2, data(30, 256 * 1024)]]));
    await rejects(t, tarData.subarray(0, 400 * 1024), /^Truncated tar stream: the client stopped sending before the end/);
  });

  it('rejects a stream cut between two members (no end-of-archive blocks)', async () => {
    const t = makeServer();
    const tarData = await buildTar(withSums([[S1, data(31)]]));
    await rejects(t, tarData.subarray(0, tarData.length - 1024), /^Truncated tar stream \(end-of-archive marker missing\)/);
  });

  it('rejects a stream whose reader fails', async () => {
    const t = makeServer();
    const tarData = await buildTar(withSums([[S1, data(32, 256 * 1024)]]));
    const input = new Readable({
      read() {
        this.push(tarData.subarray(0, 100 * 1024));
        this.destroy(new Error('connection reset'));
      },
    });
    await assert.rejects(receiveWalTar(t.srv, input), /cannot read the tar stream: connection reset|Truncated/);
    assert.deepEqual(listing(t.incoming), []);
  });

  it('stops on abort while waiting for data, removing the temporary file', async () => {
    const t = makeServer();
    const tarData = await buildTar(withSums([[S1, data(33, 256 * 1024)]]));
    const input = new Readable({ read() {} });
    input.push(tarData.subarray(0, 100 * 1024));
    const abort = new AbortController();
    const done = receiveWalTar(t.srv, input, { signal: abort.signal });
    // Wait until the temporary file exists: the member is being received.
    for (let i = 0; i < 200 && !listing(t.incoming).some((n) => n.endsWith('.tmp')); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(listing(t.incoming).some((n) => n.startsWith('.put-wal-') && n.endsWith('.tmp')));
    abort.abort();
    await assert.rejects(done, { message: 'put-wal interrupted: no WAL file stored' });
    assert.deepEqual(listing(t.incoming), []);
  });

  it('removes temporary files left by dead put-wal processes once they are old', async () => {
    const t = makeServer();
    // PID 2^22+1 is above pid_max's maximum: never a live process.
    const stale = path.join(t.incoming, `.put-wal-4194305-${S2}.tmp`);
    const mine = path.join(t.incoming, `.put-wal-${process.pid}-${S3}.tmp`);
    fs.writeFileSync(stale, 'x');
    fs.writeFileSync(mine, 'x');
    // Recent files are kept (their process may live in another PID namespace sharing the directory).
    await receiveWalTar(t.srv, stream(await buildTar(withSums([[S1, data(34)]]))));
    assert.ok(fs.existsSync(stale));
    await receiveWalTar(t.srv, stream(await buildTar(withSums([[S2, data(35)]]))), { staleTempAgeMs: 0 });
    assert.ok(!fs.existsSync(stale));
    // A live process's (here: ours) temporary file is never touched.
    assert.deepEqual(listing(t.incoming), [`.put-wal-${process.pid}-${S3}.tmp`, S1, S2]);
  });
});
