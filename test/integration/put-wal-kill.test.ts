/**
 * `barman put-wal` through the real CLI, started as root and dropping to the barman user as in
 * production (sshd runs it as barman directly; the result is the same): a valid stream end to
 * end (then archive-wal), `--test`, and the ways a transfer dies half-way: SIGKILL, SIGTERM, and
 * a client that stops sending. None may leave in incoming/ a file that archive-wal would take.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import tar from 'tar-stream';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { parseXlogDb } from '../../src/catalog/xlogdb.js';
import { BARMAN_USER, ensureBarmanUser, isRoot, makeTempDir, removeTempDirs, sleep, waitFor } from '../helpers/system.js';
import { prng } from '../helpers/testing.js';
import { withSegmentHeader } from '../helpers/wal-segment.js';

const SEG = 16 << 20;
const SRV = 'pg';

interface Env {
  conf: string;
  incoming: string;
  wals: string;
  errors: string;
}

interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

let counter = 0;

/** A fresh barman_home owned by the barman user, and a configuration with server `pg`. */
async function makeEnv(): Promise<Env> {
  const ids = await ensureBarmanUser();
  const root = await makeTempDir(`putwal-${++counter}-`, { owner: BARMAN_USER, mode: 0o755 });
  const home = path.join(root, 'home');
  await fsp.mkdir(home, { mode: 0o700 });
  await fsp.chown(home, ids.uid, ids.gid);
  const conf = path.join(root, 'barman.conf');
  await fsp.writeFile(
    conf,
    ['[barman]', `barman_home = ${home}`, `barman_user = ${BARMAN_USER}`, '', `[${SRV}]`, 'conninfo = host=127.0.0.1 port=1', 'backup_method = postgres', 'archiver = on', ''].join('\n'),
  );
  const srvDir = path.join(home, SRV);
  return { conf, incoming: path.join(srvDir, 'incoming'), wals: path.join(srvDir, 'wals'), errors: path.join(srvDir, 'errors') };
}

function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, TZ: 'UTC', ...extra };
  // The test runner's variable would make the child think it is a test file.
  delete e.NODE_TEST_CONTEXT;
  return e;
}

/** Start `barman -c CONF args...`; the caller feeds stdin. */
function startCli(env: Env, args: string[], extraEnv: NodeJS.ProcessEnv = {}) {
  const child = spawn(process.execPath, [BARMAN_SCRIPT, '-c', env.conf, ...args], { env: childEnv(extraEnv), stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  // The child may exit before reading everything we send: not an error of the test.
  child.stdin.on('error', () => undefined);
  const done = new Promise<CliRun>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { child, done };
}

async function cli(env: Env, args: string[], input?: Buffer, extraEnv: NodeJS.ProcessEnv = {}): Promise<CliRun> {
  const { child, done } = startCli(env, args, extraEnv);
  child.stdin.end(input);
  return done;
}

/** Segment `name` (its page header first: archive-wal checks it), distinct per seed. */
function segment(seed: number, name = S1): Buffer {
  const rnd = prng(seed);
  const buf = Buffer.alloc(SEG);
  // Page-like structure; the content itself does not matter, only that it is distinct per seed.
  for (let off = 0; off < SEG; off += 8192) for (let i = 0; i < 256; i += 4) buf.writeUInt32LE(rnd() >>> 0, off + i);
  return withSegmentHeader(buf, name);
}

async function tarOf(files: Array<[string, Buffer]>): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const c of pack) chunks.push(c as Buffer);
  })();
  const sums = files.map(([n, b]) => `${createHash('sha256').update(b).digest('hex')} *${n}\n`).join('');
  for (const [name, body] of [...files, ['SHA256SUMS', Buffer.from(sums)] as [string, Buffer]]) {
    await new Promise<void>((resolve, reject) => pack.entry({ name, size: body.length, mtime: new Date() }, body, (err) => (err ? reject(err) : resolve())));
  }
  pack.finalize();
  await collected;
  return Buffer.concat(chunks);
}

const listing = (dir: string) => (fs.existsSync(dir) ? fs.readdirSync(dir).sort() : []);
/** What archive-wal's file archiver would pick up (it skips dot-files and *.tmp). */
const archivable = (dir: string) => listing(dir).filter((n) => !n.startsWith('.') && !n.endsWith('.tmp'));
const walFiles = (walsDir: string) => listing(walsDir).filter((n) => n !== 'xlog.db');
const xlogLines = (walsDir: string) => {
  const f = path.join(walsDir, 'xlog.db');
  return fs.existsSync(f) ? parseXlogDb(fs.readFileSync(f, 'utf8')) : [];
};

/** Feed `data` slowly and return once the CLI's temporary file has `minBytes`. */
async function feedUntilReceiving(child: ReturnType<typeof startCli>['child'], env: Env, data: Buffer, minBytes: number): Promise<string> {
  let stop = false;
  const feeding = (async () => {
    for (let off = 0; off < data.length && !stop; off += 256 * 1024) {
      if (!child.stdin.write(data.subarray(off, off + 256 * 1024))) await new Promise((r) => child.stdin.once('drain', r));
      await sleep(20);
    }
  })();
  try {
    return await waitFor(
      async () => {
        const tmp = listing(env.incoming).find((n) => n.startsWith('.put-wal-') && n.endsWith('.tmp'));
        return tmp !== undefined && fs.statSync(path.join(env.incoming, tmp)).size >= minBytes ? tmp : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 20, what: 'put-wal to write its temporary file' },
    );
  } finally {
    stop = true;
    await feeding.catch(() => undefined);
  }
}

const S1 = '000000010000000000000001';
const S2 = '000000010000000000000002';

describe('put-wal CLI', { skip: !isRoot() && 'needs root (runs barman as the barman user)', timeout: 300_000 }, () => {
  let seg1: Buffer;
  let seg2: Buffer;
  let tar12: Buffer;

  before(async () => {
    seg1 = segment(1);
    seg2 = segment(2, S2);
    tar12 = await tarOf([
      [S1, seg1],
      [S2, seg2],
    ]);
  });

  after(removeTempDirs);

  test('--test answers without reading standard input', async () => {
    const env = await makeEnv();
    const { child, done } = startCli(env, ['put-wal', '--test', SRV]);
    // stdin stays open: --test must not wait for it.
    const r = await done;
    child.stdin.destroy();
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `Ready to accept WAL files for the server ${SRV}\n`);
    assert.equal(r.stderr, '');
  });

  test("rejects 'all' and unknown servers", async () => {
    const env = await makeEnv();
    const all = await cli(env, ['put-wal', 'all'], Buffer.alloc(0));
    assert.equal(all.code, 1);
    assert.match(all.stderr, /ERROR: You cannot use 'all' in a single server context/);
    const unknown = await cli(env, ['put-wal', 'nope'], Buffer.alloc(0), { SSH_CONNECTION: '192.0.2.7 50000 192.0.2.1 22' });
    assert.equal(unknown.code, 1);
    assert.equal(unknown.stderr, "ERROR: Unknown server 'nope' (SSH host: 192.0.2.7)\n");
  });

  test('stores a valid stream durably, archive-wal archives it, a resend is accepted', async () => {
    const env = await makeEnv();
    const r = await cli(env, ['put-wal', SRV], tar12);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '');
    assert.deepEqual(listing(env.incoming), [S1, S2]);
    assert.ok(fs.readFileSync(path.join(env.incoming, S1)).equals(seg1));
    const st = fs.statSync(path.join(env.incoming, S2));
    assert.equal(st.mode & 0o777, 0o600);
    const barman = fs.statSync(env.incoming);
    assert.equal(st.uid, barman.uid, 'written by the barman user');

    const a = await cli(env, ['archive-wal', SRV]);
    assert.equal(a.code, 0, a.stderr);
    assert.deepEqual(listing(env.incoming), []);
    assert.deepEqual(xlogLines(env.wals).map((e) => e.name), [S1, S2]);

    // PostgreSQL retries archive_command after a lost answer: the same stream again is fine.
    const again = await cli(env, ['put-wal', SRV], tar12);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(listing(env.incoming), []);
  });

  test('a different copy of an archived segment fails and overwrites nothing', async () => {
    const env = await makeEnv();
    assert.equal((await cli(env, ['put-wal', SRV], tar12)).code, 0);
    assert.equal((await cli(env, ['archive-wal', SRV])).code, 0);
    const r = await cli(env, ['put-wal', SRV], await tarOf([[S1, segment(3)]]), { SSH_CONNECTION: '192.0.2.7 50000 192.0.2.1 22' });
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`^ERROR: WAL file ${S1} already present in server ${SRV} with a different content: nothing was overwritten, .* \\(SSH host: 192\\.0\\.2\\.7\\)\\n$`));
    assert.deepEqual(listing(env.incoming), []);
    assert.equal(listing(env.errors).length, 1);
    assert.equal((await cli(env, ['get-wal', SRV, S1])).code, 0);
  });

  test('SIGKILL in the middle of a segment leaves nothing archive-wal would take', async () => {
    const env = await makeEnv();
    const { child, done } = startCli(env, ['put-wal', SRV]);
    const tmp = await feedUntilReceiving(child, env, tar12.subarray(0, 12 << 20), 2 << 20);
    assert.ok(child.kill('SIGKILL'));
    const r = await done;
    assert.equal(r.signal, 'SIGKILL');
    // The temporary file may stay (nothing can run on SIGKILL), but only under a name nobody archives.
    assert.deepEqual(archivable(env.incoming), []);
    assert.ok(listing(env.incoming).every((n) => n === tmp), `unexpected files: ${listing(env.incoming).join(', ')}`);

    const a = await cli(env, ['archive-wal', SRV]);
    assert.equal(a.code, 0, a.stderr);
    assert.deepEqual(walFiles(env.wals), []);
    assert.deepEqual(xlogLines(env.wals), []);
    assert.deepEqual(listing(env.errors), [], 'the temporary file is not treated as an unknown file');

    // The client's retry goes through; the dead process's file is left alone while recent.
    const retry = await cli(env, ['put-wal', SRV], tar12);
    assert.equal(retry.code, 0, retry.stderr);
    assert.deepEqual(archivable(env.incoming), [S1, S2]);
  });

  test('SIGTERM in the middle of a segment removes the temporary file and fails', async () => {
    const env = await makeEnv();
    const { child, done } = startCli(env, ['put-wal', SRV]);
    await feedUntilReceiving(child, env, tar12.subarray(0, 12 << 20), 2 << 20);
    child.kill('SIGTERM');
    const r = await done;
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'ERROR: put-wal interrupted: no WAL file stored\n');
    assert.deepEqual(listing(env.incoming), []);
  });

  test('a client that stops sending (stdin closed mid-stream) stores nothing', async () => {
    const env = await makeEnv();
    const { child, done } = startCli(env, ['put-wal', SRV]);
    await feedUntilReceiving(child, env, tar12.subarray(0, 20 << 20), 1 << 20);
    child.stdin.end();
    const r = await done;
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^ERROR: Truncated tar stream: the client stopped sending before the end; no WAL file stored\n$/);
    assert.deepEqual(listing(env.incoming), []);
  });
});
