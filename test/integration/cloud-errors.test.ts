/**
 * barman-cloud-* on bad input and failures, against real s3rver and Azurite: invalid names,
 * an unreachable endpoint, wrong credentials, a missing bucket, a non-empty restore directory,
 * objects truncated or altered in storage (detected, never written as good), an upload cut in
 * the middle; retention (REDUNDANCY / RECOVERY WINDOW, keep, minimum redundancy, WAL cleanup,
 * --dry-run) on synthetic catalogs; the archive launcher's fast path; unique backup IDs.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { newBackupInfo, serializeBackupInfo } from '../../src/catalog/backup-info.js';
import { claimBackupId } from '../../src/cloud/backup.js';
import { CloudLayout } from '../../src/cloud/layout.js';
import { writeSums } from '../../src/cloud/integrity.js';
import { AzureStorage } from '../../src/storage/azure.js';
import { S3Storage } from '../../src/storage/s3.js';
import { getBuffer, listAll, type ObjectStorage } from '../../src/storage/types.js';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { run } from '../../src/util/proc.js';
import { parsePyDatetime } from '../../src/util/pytime.js';
import { createHash } from 'node:crypto';
import { startAzurite, startS3rver, type ObjectStoreServer } from '../helpers/object-stores.js';
import { cleanupAll, PgCluster } from '../helpers/pg-cluster.js';
import { freePort, makeTempDir, removeTempDirs, sleep } from '../helpers/system.js';

const REPO = path.dirname(path.dirname(BARMAN_SCRIPT));
const SH_LAUNCHERS = new Set(['barman-cloud-wal-archive', 'barman-cloud-wal-restore']);
const BIN = (name: string) => path.join(REPO, 'bin', SH_LAUNCHERS.has(name) ? name : `${name}.js`);
const SECRET = 'wrong-secret-Zq81xK';

let s3: ObjectStoreServer;
let az: ObjectStoreServer;
let work = '';

async function tool(server: ObjectStoreServer, name: string, args: string[], env: Record<string, string> = {}) {
  const started = Date.now();
  const sh = SH_LAUNCHERS.has(name);
  const res = await run(sh ? BIN(name) : process.execPath, [...(sh ? [] : [BIN(name)]), ...server.args, ...args], {
    env: { ...process.env, ...server.env, ...env },
    timeoutMs: 60_000,
  });
  return { ...res, ms: Date.now() - started };
}

async function storageOf(server: ObjectStoreServer, container: string): Promise<ObjectStorage> {
  Object.assign(process.env, server.env);
  return server.provider === 'aws-s3' ? S3Storage.open({ bucket: container, endpointUrl: server.endpoint }) : new AzureStorage({ container });
}

/** A WAL-sized file of random bytes named `name` in `dir`. */
async function walFile(dir: string, name: string): Promise<string> {
  await fs.mkdir(dir, { recursive: true });
  const file = path.join(dir, name);
  await fs.writeFile(file, randomBytes(16 << 20));
  return file;
}

before(async () => {
  [s3, az] = await Promise.all([startS3rver(), startAzurite()]);
  work = await makeTempDir('cloud-errors-');
});

after(async () => {
  await cleanupAll();
  await Promise.all([s3?.stop(), az?.stop()]);
  await removeTempDirs();
});

describe('barman-cloud-wal-archive / -wal-restore on bad input', () => {
  it('refuses names that are not WAL names with exit 3, storing nothing', async () => {
    const f = path.join(work, 'not-a-wal');
    await fs.writeFile(f, 'x');
    const a = await tool(s3, 'barman-cloud-wal-archive', ['s3://names/p', 'srv', f]);
    assert.equal(a.code, 3, a.stderr);
    assert.match(a.stderr, /is an invalid name for a WAL file/);
    assert.equal(a.stderr.trim().split('\n').length, 1);
    const r = await tool(s3, 'barman-cloud-wal-restore', ['s3://names/p', 'srv', '../etc/passwd', path.join(work, 'out')]);
    assert.equal(r.code, 3, r.stderr);
    assert.equal(await (await storageOf(s3, 'names')).containerExists(), false);
  });

  it('gives up on an unreachable endpoint quickly with exit 2', async () => {
    const port = await freePort();
    const wal = await walFile(path.join(work, 'unreach'), '000000010000000000000001');
    const args = ['--endpoint-url', `http://127.0.0.1:${port}`, 's3://b/p', 'srv'];
    const a = await run(BIN('barman-cloud-wal-archive'), ['--push-ahead', '0', ...args, wal], { env: { ...process.env, ...s3.env } });
    assert.equal(a.code, 2, a.stderr);
    assert.match(a.stderr, /Can't connect to cloud provider/);
    const l = await run(process.execPath, [BIN('barman-cloud-backup-list'), ...args], { env: { ...process.env, ...s3.env } });
    assert.equal(l.code, 2, l.stderr);
    const azArgs = ['--cloud-provider', 'azure-blob-storage', `http://127.0.0.1:${port}/devstoreaccount1/c/p`, 'srv'];
    const conn = (az.env.AZURE_STORAGE_CONNECTION_STRING as string).replace(/:\d+\//, `:${port}/`);
    const started = Date.now();
    const z = await run(process.execPath, [BIN('barman-cloud-backup-list'), ...azArgs], { env: { ...process.env, AZURE_STORAGE_CONNECTION_STRING: conn } });
    assert.equal(z.code, 2, z.stderr);
    assert.ok(Date.now() - started < 30_000);
  });

  it('reports wrong credentials in one line without printing the secret', async () => {
    const wal = await walFile(path.join(work, 'creds'), '000000010000000000000001');
    // s3rver checks the access key ID (not SigV4 signatures): a key it does not know.
    const a = await tool(s3, 'barman-cloud-wal-archive', ['--push-ahead', '0', 's3://creds/p', 'srv', wal], { AWS_ACCESS_KEY_ID: 'AKIAUNKNOWN', AWS_SECRET_ACCESS_KEY: SECRET });
    assert.equal(a.code, 4, a.stderr);
    assert.match(a.stderr, /access denied/);
    assert.equal(a.stderr.trim().split('\n').length, 1, a.stderr);
    assert.ok(!a.stderr.includes(SECRET));
    const badConn = (az.env.AZURE_STORAGE_CONNECTION_STRING as string).replace(/AccountKey=[^;]+/, `AccountKey=${Buffer.from(SECRET).toString('base64')}`);
    const z = await tool(az, 'barman-cloud-backup-list', [az.url('cont'), 'srv'], { AZURE_STORAGE_CONNECTION_STRING: badConn });
    assert.equal(z.code, 4, z.stderr);
    assert.match(z.stderr, /access denied/);
    assert.ok(!z.stderr.includes(Buffer.from(SECRET).toString('base64')));
  });

  it('creates a missing bucket when archiving; reading from one that is missing is exit 1', async () => {
    for (const server of [s3, az]) {
      const url = server.url('fresh', 'p');
      const r = await tool(server, 'barman-cloud-wal-restore', [url, 'srv', '000000010000000000000001', path.join(work, 'never')]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /Bucket fresh does not exist/);
      assert.equal((await tool(server, 'barman-cloud-backup-list', [url, 'srv'])).code, 1);
      assert.equal((await tool(server, 'barman-cloud-check-wal-archive', [url, 'srv'])).code, 0);
      const wal = await walFile(path.join(work, `fresh-${server.provider}`), '000000010000000000000001');
      const a = await tool(server, 'barman-cloud-wal-archive', ['--push-ahead', '0', url, 'srv', wal]);
      assert.equal(a.code, 0, a.stderr);
      const st = await storageOf(server, 'fresh');
      assert.deepEqual((await listAll(st, 'p/')).map((o) => o.key), ['p/srv/wals/0000000100000000/000000010000000000000001']);
      const c = await tool(server, 'barman-cloud-check-wal-archive', [url, 'srv']);
      assert.equal(c.code, 1, c.stderr);
      assert.match(c.stderr, /Expected empty archive/);
      assert.equal((await tool(server, 'barman-cloud-check-wal-archive', ['--timeline', '2', url, 'srv'])).code, 0);
    }
  });

  it('never hands over an altered or truncated WAL object', async () => {
    const dir = path.join(work, 'alter');
    const wal = await walFile(dir, '000000010000000000000002');
    const url = s3.url('alter', 'p');
    assert.equal((await tool(s3, 'barman-cloud-wal-archive', ['--push-ahead', '0', '-z', url, 'srv', wal])).code, 0);
    const st = await storageOf(s3, 'alter');
    const key = 'p/srv/wals/0000000100000000/000000010000000000000002.gz';
    const res = await st.get(key);
    assert.ok(res);
    const good = await getBuffer(st, key);
    assert.ok(good);
    const dest = path.join(dir, 'RECOVERYXLOG');
    // Altered, checksum metadata kept: the SHA-256 says so.
    const altered = Buffer.from(good);
    altered[good.length >> 1] = (altered[good.length >> 1] as number) ^ 0xff;
    await st.put(key, altered, { metadata: res.metadata });
    let r = await tool(s3, 'barman-cloud-wal-restore', ['--prefetch', '0', url, 'srv', '000000010000000000000002', dest]);
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /corrupted/);
    assert.equal(existsSync(dest), false);
    // Truncated, no metadata (as Barman's tools store it): gzip's own check says so.
    await st.put(key, good.subarray(0, good.length - 1000));
    r = await tool(s3, 'barman-cloud-wal-restore', ['--prefetch', '0', url, 'srv', '000000010000000000000002', dest]);
    assert.equal(r.code, 4, r.stderr);
    assert.equal(existsSync(dest), false);
    // Uncompressed and cut short: not a segment size.
    await st.put('p/srv/wals/0000000100000000/000000010000000000000003', randomBytes(5_000_000));
    r = await tool(s3, 'barman-cloud-wal-restore', ['--prefetch', '0', url, 'srv', '000000010000000000000003', dest]);
    assert.equal(r.code, 4, r.stderr);
    assert.equal(existsSync(dest), false);
  });

  it('uses a .partial object only when the complete one is missing and --no-partial is not given', async () => {
    const st = await storageOf(s3, 'partial');
    await st.createContainer();
    const seg = randomBytes(16 << 20);
    await st.put('p/srv/wals/0000000100000000/000000010000000000000005.partial', seg);
    await st.put('p/srv/wals/0000000100000000/000000010000000000000004.00000028.backup', Buffer.from('label'));
    const url = s3.url('partial', 'p');
    const dest = path.join(work, 'partial-dest');
    assert.equal((await tool(s3, 'barman-cloud-wal-restore', ['--prefetch', '0', '--no-partial', url, 'srv', '000000010000000000000005', dest])).code, 1);
    assert.equal((await tool(s3, 'barman-cloud-wal-restore', ['--prefetch', '0', url, 'srv', '000000010000000000000004', dest])).code, 1);
    const r = await tool(s3, 'barman-cloud-wal-restore', ['--prefetch', '0', url, 'srv', '000000010000000000000005', dest]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await fs.readFile(dest), seg);
  });

  it("exchanges WAL with Barman 3.4's tools both ways on Azurite (Python Azure SDK)", async () => {
    const dir = path.join(work, 'az34');
    const wal = await walFile(dir, '000000010000000000000001');
    const url = az.url('interop', 'p');
    const theirs = (t: string, args: string[]) => run(`/usr/bin/${t}`, [...az.args, ...args], { env: { ...process.env, ...az.env } });
    const ar = await tool(az, 'barman-cloud-wal-archive', ['--push-ahead', '0', '-z', url, 'ours', wal]);
    assert.equal(ar.code, 0, ar.stderr);
    const r = await theirs('barman-cloud-wal-restore', [url, 'ours', '000000010000000000000001', path.join(dir, 'a')]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await fs.readFile(path.join(dir, 'a')), await fs.readFile(wal));
    const a = await theirs('barman-cloud-wal-archive', ['-j', url, 'theirs', wal]);
    assert.equal(a.code, 0, a.stderr);
    const o = await tool(az, 'barman-cloud-wal-restore', ['--prefetch', '0', url, 'theirs', '000000010000000000000001', path.join(dir, 'b')]);
    assert.equal(o.code, 0, o.stderr);
    assert.deepEqual(await fs.readFile(path.join(dir, 'b')), await fs.readFile(wal));
    // As Barman's pre_archive_retry_script: the file comes from BARMAN_FILE.
    const hook = { BARMAN_HOOK: 'archive_retry_script', BARMAN_PHASE: 'pre', BARMAN_FILE: wal };
    const h = await tool(az, 'barman-cloud-wal-archive', ['--snappy', url, 'hooked'], hook);
    assert.equal(h.code, 0, h.stderr);
    const st = await storageOf(az, 'interop');
    assert.ok(await st.get('p/hooked/wals/0000000100000000/000000010000000000000001.snappy'));
    const wrong = await tool(az, 'barman-cloud-wal-archive', [url, 'hooked'], { ...hook, BARMAN_PHASE: 'post' });
    assert.equal(wrong.code, 4);
    assert.match(wrong.stderr, /unsupported hook script: post_archive_retry_script/);
  });

  it('answers a pushed-ahead segment from the launcher, without Node or a request', async () => {
    const dir = path.join(work, 'fast', 'pg_wal');
    await fs.mkdir(path.join(dir, 'archive_status'), { recursive: true });
    const first = await walFile(dir, '000000010000000000000010');
    const second = await walFile(dir, '000000010000000000000011');
    await fs.writeFile(path.join(dir, 'archive_status', '000000010000000000000011.ready'), '');
    const spool = path.join(work, 'fast', 'spool');
    const args = ['--spool-dir', spool, '--zstd', s3.url('fast', 'p'), 'srv'];
    const a = await run(BIN('barman-cloud-wal-archive'), [...s3.args, ...args, first], { env: { ...process.env, ...s3.env } });
    assert.equal(a.code, 0, a.stderr);
    assert.ok(existsSync(path.join(spool, 'markers', '000000010000000000000011')), a.stderr);
    // Same arguments but an endpoint that cannot answer: only the marker can make this succeed.
    const deadArgs = [...s3.args.slice(0, -1), `http://127.0.0.1:${await freePort()}`];
    const viaMarker = await run(BIN('barman-cloud-wal-archive'), [...deadArgs, ...args, second], { env: { ...process.env, ...s3.env } });
    assert.equal(viaMarker.code, 2, 'a marker of another destination (endpoint) must not answer');
    // A PATH with what the launcher uses (stat, rm) but no node: only the sh fast path can succeed.
    const tools = path.join(work, 'fast', 'bin');
    await fs.mkdir(tools, { recursive: true });
    for (const t of ['stat', 'rm', 'readlink']) await fs.symlink(`/usr/bin/${t}`, path.join(tools, t)).catch(async () => fs.symlink(`/bin/${t}`, path.join(tools, t)));
    const b = await run(BIN('barman-cloud-wal-archive'), [...s3.args, ...args, second], { env: { ...process.env, ...s3.env, PATH: tools } });
    assert.equal(b.code, 0, `launcher fast path (no node on PATH): ${b.stderr}`);
    assert.equal(existsSync(path.join(spool, 'markers', '000000010000000000000011')), false);
    const st = await storageOf(s3, 'fast');
    assert.equal((await listAll(st, 'p/srv/wals/')).length, 2);
  });
});

// ---------------------------------------------------------------------------------------------
// Synthetic catalogs: restore checks and retention

interface FakeBackup {
  id: string;
  beginWal: string;
  endTime: string;
  status?: string;
  name?: string;
}

async function putBackup(st: ObjectStorage, layout: CloudLayout, b: FakeBackup, tarBody: Buffer): Promise<void> {
  const info = newBackupInfo({
    status: b.status ?? 'DONE',
    server_name: 'cloud',
    backup_name: b.name ?? null,
    begin_wal: b.beginWal,
    end_wal: b.beginWal,
    timeline: 1,
    version: 150000,
    begin_time: parsePyDatetime(b.endTime),
    end_time: parsePyDatetime(b.endTime),
    begin_xlog: '0/0',
    end_xlog: '0/0',
  });
  const key = layout.tarKey(b.id, 'data', 0, null);
  await st.put(key, tarBody);
  await writeSums(st, layout.sumsKey(b.id), [{ key, size: tarBody.length, sha256: createHash('sha256').update(tarBody).digest('hex') }]);
  await st.put(layout.backupInfoKey(b.id), Buffer.from(serializeBackupInfo(info)));
}

async function smallTar(): Promise<Buffer> {
  const src = path.join(work, 'tarsrc');
  await fs.mkdir(path.join(src, 'global'), { recursive: true });
  await fs.writeFile(path.join(src, 'PG_VERSION'), '15\n');
  await fs.writeFile(path.join(src, 'global', 'pg_control'), randomBytes(8192));
  await fs.writeFile(path.join(src, 'big'), randomBytes(300_000));
  const out = path.join(work, 'small.tar');
  const r = await run('tar', ['-c', '-f', out, '-C', src, '.']);
  assert.equal(r.code, 0, r.stderr);
  return fs.readFile(out);
}

describe('barman-cloud-restore on bad input', () => {
  it('refuses a non-empty directory and leaves nothing behind for an altered or cut archive', async () => {
    const st = await storageOf(s3, 'restore');
    await st.createContainer();
    const layout = new CloudLayout('p', 'srv');
    const tarBody = await smallTar();
    await putBackup(st, layout, { id: '20240101T010000', beginWal: '000000010000000000000002', endTime: '2024-01-01 01:00:00+00:00' }, tarBody);
    const url = s3.url('restore', 'p');
    const full = path.join(work, 'restore-full');
    await fs.mkdir(full);
    await fs.writeFile(path.join(full, 'keepme'), 'x');
    let r = await tool(s3, 'barman-cloud-restore', [url, 'srv', 'latest', full]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /not empty/);
    assert.deepEqual(await fs.readdir(full), ['keepme']);
    // A missing bucket (looked up beside the first listing): Barman's line, exit 1, nothing made.
    const nowhere = path.join(work, 'restore-nobucket');
    r = await tool(s3, 'barman-cloud-restore', [s3.url('restore-missing', 'p'), 'srv', 'latest', nowhere]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /Bucket restore-missing does not exist/);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.equal(existsSync(nowhere), false);
    // A good restore first.
    const ok = path.join(work, 'restore-ok');
    r = await tool(s3, 'barman-cloud-restore', [url, 'srv', '20240101T010000', ok]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await fs.readFile(path.join(ok, 'PG_VERSION'), 'utf8'), '15\n');
    assert.ok(existsSync(path.join(ok, 'pg_wal')));
    // Altered in the bucket (same length): the recorded SHA-256 catches it.
    const key = layout.tarKey('20240101T010000', 'data', 0, null);
    const altered = Buffer.from(tarBody);
    altered[150_000] = (altered[150_000] as number) ^ 1;
    await st.put(key, altered);
    const bad = path.join(work, 'restore-bad');
    r = await tool(s3, 'barman-cloud-restore', [url, 'srv', 'latest', bad]);
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /corrupted/);
    assert.equal(existsSync(bad), false);
    // Cut short: tar and the recorded size catch it; an existing empty directory stays empty.
    await st.put(key, tarBody.subarray(0, 100_000));
    await fs.mkdir(bad);
    r = await tool(s3, 'barman-cloud-restore', [url, 'srv', 'latest', bad]);
    assert.equal(r.code, 4, r.stderr);
    assert.deepEqual(await fs.readdir(bad), []);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  });
});

describe('barman-cloud-backup-delete and -keep (retention)', () => {
  for (const which of ['aws-s3', 'azure-blob-storage']) {
    it(`deletes by policy and by ID, honours keep and minimum redundancy, cleans WAL (${which})`, async () => {
      const server = which === 'aws-s3' ? s3 : az;
      const st = await storageOf(server, 'retention');
      await st.createContainer();
      const layout = new CloudLayout('p', 'srv');
      const tarBody = Buffer.from('not really a tar');
      const backups: FakeBackup[] = [
        { id: '20240101T000000', beginWal: '000000010000000000000002', endTime: '2024-01-01 00:10:00+00:00' },
        { id: '20240102T000000', beginWal: '000000010000000000000005', endTime: '2024-01-02 00:10:00+00:00' },
        { id: '20240103T000000', beginWal: '000000010000000000000008', endTime: '2024-01-03 00:10:00+00:00', status: 'FAILED' },
        { id: '20240104T000000', beginWal: '00000001000000000000000A', endTime: '2024-01-04 00:10:00+00:00' },
        { id: '20240105T000000', beginWal: '00000001000000000000000C', endTime: '2024-01-05 00:10:00+00:00', name: 'friday' },
      ];
      for (const b of backups) await putBackup(st, layout, b, tarBody);
      const wals = ['000000010000000000000001', '000000010000000000000002', '000000010000000000000003.00000028.backup', '000000010000000000000004', '000000010000000000000006', '00000001000000000000000B', '00000001000000000000000D'];
      for (const w of wals) await st.put(layout.walKey(w, 'gzip'), Buffer.from('w'));
      await st.put(layout.walKey('00000002.history', null), Buffer.from('1\t0/5000000\tno reason\n'));
      const url = server.url('retention', 'p');
      const ids = async () => (await st.list(layout.basePrefix, '/')).prefixes.map((p) => p.slice(layout.basePrefix.length, -1)).sort();
      const walNames = async () => (await listAll(st, layout.walsPrefix)).map((o) => o.key.slice(o.key.lastIndexOf('/') + 1)).sort();

      // Keep the oldest: never deleted, by policy or by ID.
      assert.equal((await tool(server, 'barman-cloud-backup-keep', ['--target', 'standalone', url, 'srv', '20240101T000000'])).code, 0);
      assert.equal((await tool(server, 'barman-cloud-backup-keep', ['-s', url, 'srv', 'oldest'])).stdout, 'Keep: standalone\n');
      assert.equal((await tool(server, 'barman-cloud-backup-keep', ['--target', 'full', url, 'srv', '20240103T000000'])).code, 1, 'FAILED backups cannot be kept');
      const byId = await tool(server, 'barman-cloud-backup-delete', ['-b', '20240101T000000', url, 'srv']);
      assert.equal(byId.code, 1, byId.stderr);
      assert.match(byId.stderr, /has a current keep request/);

      // --dry-run deletes nothing.
      const dry = await tool(server, 'barman-cloud-backup-delete', ['-r', 'REDUNDANCY 2', '--dry-run', url, 'srv']);
      assert.equal(dry.code, 0, dry.stderr);
      assert.match(dry.stdout, /Skipping deletion of objects .*20240102T000000/);
      assert.equal((await ids()).length, 5);

      // REDUNDANCY 2: 0105 and 0104 are needed; 0102 goes; 0101 is kept; FAILED 0103 is no DONE backup.
      const red = await tool(server, 'barman-cloud-backup-delete', ['-r', 'REDUNDANCY 2', '--batch-size', '2', url, 'srv']);
      assert.equal(red.code, 0, red.stderr);
      assert.deepEqual(await ids(), ['20240101T000000', '20240103T000000', '20240104T000000', '20240105T000000']);
      // WAL before the next backup's begin_wal goes, except the kept backup's own range and history files.
      assert.deepEqual(await walNames(), ['000000010000000000000002.gz', '00000001000000000000000B.gz', '00000001000000000000000D.gz', '00000002.history']);

      // Minimum redundancy: a window that makes everything obsolete still leaves 2 DONE backups.
      const win = await tool(server, 'barman-cloud-backup-delete', ['-r', 'RECOVERY WINDOW OF 1 DAYS', '-m', '2', url, 'srv']);
      assert.equal(win.code, 0, win.stderr);
      assert.deepEqual(await ids(), ['20240101T000000', '20240103T000000', '20240104T000000', '20240105T000000']);
      const win1 = await tool(server, 'barman-cloud-backup-delete', ['-r', 'RECOVERY WINDOW OF 1 DAYS', '-m', '1', url, 'srv']);
      assert.equal(win1.code, 0, win1.stderr);
      assert.deepEqual(await ids(), ['20240101T000000', '20240103T000000', '20240105T000000']);

      // By name, once the keep is released; the list of Barman's console format hides FAILED.
      assert.equal((await tool(server, 'barman-cloud-backup-keep', ['-r', url, 'srv', '20240101T000000'])).code, 0);
      const m = await tool(server, 'barman-cloud-backup-delete', ['-b', 'friday', '-m', '2', url, 'srv']);
      assert.equal(m.code, 1, `minimum redundancy protects the last backups: ${m.stderr}`);
      assert.equal((await tool(server, 'barman-cloud-backup-delete', ['-b', 'friday', url, 'srv'])).code, 0);
      const list = await tool(server, 'barman-cloud-backup-list', [url, 'srv']);
      assert.deepEqual(list.stdout.trim().split('\n').slice(1).map((l) => l.slice(0, 15)), ['20240101T000000']);
    });
  }

  it('a delete cut between objects leaves the backup FAILED (never listed with objects missing), and the next delete finishes it', async () => {
    const st = await storageOf(s3, 'cutdelete');
    await st.createContainer();
    const layout = new CloudLayout('p', 'srv');
    const backups: FakeBackup[] = [
      { id: '20240101T000000', beginWal: '000000010000000000000002', endTime: '2024-01-01 00:10:00+00:00' },
      { id: '20240102T000000', beginWal: '000000010000000000000005', endTime: '2024-01-02 00:10:00+00:00' },
    ];
    for (const b of backups) await putBackup(st, layout, b, Buffer.from('not really a tar'));
    for (const w of ['000000010000000000000001', '000000010000000000000002', '000000010000000000000005']) await st.put(layout.walKey(w, 'gzip'), Buffer.from('w'));
    const url = s3.url('cutdelete', 'p');
    const faultLog = path.join(work, 'cutdelete-fired.log');
    // Killed after the first object of the oldest backup (data.tar) is gone, before its checksums file.
    const cut = await tool(s3, 'barman-cloud-backup-delete', ['-b', '20240101T000000', '--batch-size', '1', url, 'srv'], { BARMAN_TS_FAULT: 'cloud-delete:objects-batch=kill', BARMAN_TS_FAULT_LOG: faultLog });
    assert.equal(cut.signal, 'SIGKILL', cut.stderr);
    assert.match(await fs.readFile(faultLog, 'utf8'), /cloud-delete:objects-batch kill/);
    // Not in the console list, FAILED with the reason in the JSON one, and not restorable.
    const list = await tool(s3, 'barman-cloud-backup-list', [url, 'srv']);
    assert.deepEqual(list.stdout.trim().split('\n').slice(1).map((l) => l.slice(0, 15)), ['20240102T000000']);
    const json = JSON.parse((await tool(s3, 'barman-cloud-backup-list', ['--format', 'json', url, 'srv'])).stdout) as { backups_list: Array<{ backup_id: string; status: string; error?: string }> };
    const cutOne = json.backups_list.find((b) => b.backup_id === '20240101T000000');
    assert.equal(cutOne?.status, 'FAILED');
    assert.match(cutOne?.error ?? '', /delete in progress/);
    // Barman 3.4 reads the mark: a FAILED backup, hidden from its console list too.
    const py = await run('/usr/bin/barman-cloud-backup-list', [...s3.args, '--format', 'json', url, 'srv'], { env: { ...process.env, ...s3.env } });
    assert.equal(py.code, 0, py.stderr);
    const pyList = JSON.parse(py.stdout) as { backups_list: Array<{ backup_id: string; status: string }> };
    assert.deepEqual(pyList.backups_list.map((b) => `${b.backup_id} ${b.status}`), ['20240101T000000 FAILED', '20240102T000000 DONE']);
    const restore = await tool(s3, 'barman-cloud-restore', [url, 'srv', '20240101T000000', path.join(work, 'cutdelete-restore')]);
    assert.equal(restore.code, 1, restore.stderr);
    // The next delete by policy finishes it (and its WAL), leaving the newest backup whole.
    const again = await tool(s3, 'barman-cloud-backup-delete', ['-r', 'REDUNDANCY 1', url, 'srv']);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual((await listAll(st, 'p/srv/base/')).map((o) => o.key.split('/')[3]).filter((id, i, a) => a.indexOf(id) === i), ['20240102T000000']);
    assert.deepEqual((await listAll(st, 'p/srv/wals/')).map((o) => o.key.slice(o.key.lastIndexOf('/') + 1)), ['000000010000000000000005.gz']);
  });

  it('two backups starting in the same second get two IDs', async () => {
    const st = await storageOf(s3, 'ids');
    await st.createContainer();
    const layout = new CloudLayout('', 'srv');
    const frozen = new Date('2024-05-01T10:00:00.100Z');
    let calls = 0;
    const clock = () => new Date(frozen.getTime() + Math.floor(calls++ / 4) * 1000);
    const [a, b] = await Promise.all([claimBackupId(st, layout, clock), claimBackupId(st, layout, clock)]);
    assert.notEqual(a, b);
    // A later backup whose clock starts in the same second sees the claims and moves on to a
    // free second (each attempt reads the clock twice: the ID, then the wait).
    let later = 0;
    const c = await claimBackupId(st, layout, () => new Date(frozen.getTime() + Math.floor(later++ / 2) * 1000));
    assert.ok(c !== a && c !== b, `${c} is new beside ${a} and ${b}`);
  });
});

describe('barman-cloud-backup cut in the middle', { timeout: 600_000 }, () => {
  it('leaves no backup listed after kill -9, and a FAILED one hidden from the console list after SIGTERM', async () => {
    const pg = await PgCluster.create();
    await pg.psql("CREATE TABLE big AS SELECT g, md5(g::text) || md5((g+1)::text) AS v FROM generate_series(1, 150000) g;");
    const url = s3.url('cut', 'p');
    const args = ['--max-bandwidth', '1MB', '-h', '127.0.0.1', '-p', String(pg.port), '-U', 'postgres', url, 'srv'];
    const seen = new Set<string>();
    for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
      const { spawn } = await import('node:child_process');
      const child = spawn(process.execPath, [BIN('barman-cloud-backup'), ...s3.args, ...args], { env: { ...process.env, ...s3.env }, stdio: 'ignore' });
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      // Cut once the upload runs: the backup has claimed its ID, then a little more.
      const st = await storageOf(s3, 'cut');
      const deadline = Date.now() + 60_000;
      const claims = async () => (await st.containerExists()) && (await listAll(st, 'p/srv/base/')).some((o) => o.key.includes('barman-ts.claim') && !seen.has(o.key));
      while (!(await claims())) {
        assert.ok(Date.now() < deadline, 'the backup never started');
        await sleep(200);
      }
      for (const o of await listAll(st, 'p/srv/base/')) seen.add(o.key);
      await sleep(2000);
      child.kill(signal);
      const code = await exited;
      if (signal === 'SIGTERM') assert.equal(code, 1);
    }
    const list = await tool(s3, 'barman-cloud-backup-list', [url, 'srv']);
    assert.equal(list.code, 0, list.stderr);
    assert.equal(list.stdout.trim().split('\n').length, 1, list.stdout);
    const json = JSON.parse((await tool(s3, 'barman-cloud-backup-list', ['--format', 'json', url, 'srv'])).stdout) as { backups_list: Array<{ status: string; error: string }> };
    assert.deepEqual(json.backups_list.map((b) => b.status), ['FAILED']);
    assert.match(json.backups_list[0]?.error ?? '', /^failure uploading data \(.*interrupted/);
    // PostgreSQL is not left in backup mode: another backup can start and finish, here split
    // in parts of about 2 MB (-S), gzip-compressed; ours and Barman 3.4 restore the same tree.
    // (Not snappy here: Debian 12's python3-snappy fails in Barman's decompression.)
    const ok = await tool(s3, 'barman-cloud-backup', ['-z', '-S', '2MB', '--immediate-checkpoint', '-h', '127.0.0.1', '-p', String(pg.port), '-U', 'postgres', '-n', 'split', url, 'srv']);
    assert.equal(ok.code, 0, ok.stderr);
    const st = await storageOf(s3, 'cut');
    const parts = (await listAll(st, 'p/srv/base/')).map((o) => o.key.slice(o.key.lastIndexOf('/') + 1)).filter((n) => n.startsWith('data'));
    assert.ok(parts.includes('data.tar.gz') && parts.includes('data_0001.tar.gz') && parts.includes('data_0002.tar.gz'), parts.join(' '));
    const listed = JSON.parse((await tool(s3, 'barman-cloud-backup-list', ['--format', 'json', url, 'srv'])).stdout) as { backups_list: Array<{ backup_id: string; backup_name?: string }> };
    const id = listed.backups_list.find((b) => b.backup_name === 'split')?.backup_id as string;
    const mine = path.join(work, 'split-ours');
    const theirs = path.join(work, 'split-theirs');
    const r1 = await tool(s3, 'barman-cloud-restore', [url, 'srv', 'split', mine]);
    assert.equal(r1.code, 0, r1.stderr);
    const r2 = await run('/usr/bin/barman-cloud-restore', [...s3.args, url, 'srv', id, theirs], { env: { ...process.env, ...s3.env } });
    assert.equal(r2.code, 0, r2.stderr);
    const tree = async (root: string) => (await run('find', [root, '-printf', '%P %s\n'])).stdout.split('\n').sort().join('\n');
    assert.equal(await tree(mine), await tree(theirs));
    assert.ok((await fs.stat(path.join(mine, 'global', 'pg_control'))).size > 0);
    assert.ok(existsSync(path.join(mine, 'backup_label')));

    // As Barman's post_backup_retry_script: a backup that is not DONE is exit 63 (ABORT_STOP);
    // a DONE one is uploaded with its backup.info unchanged, and restores to the same tree.
    const backupDir = path.join(work, 'barman-catalog', '20240601T120000');
    await fs.mkdir(backupDir, { recursive: true });
    assert.equal((await run('cp', ['-a', mine, path.join(backupDir, 'data')])).code, 0);
    const infoText = serializeBackupInfo(newBackupInfo({ status: 'DONE', server_name: 'main', version: 150000, timeline: 1, begin_wal: '000000010000000000000003', end_wal: '000000010000000000000003', end_time: parsePyDatetime('2024-06-01 12:05:00+00:00'), mode: 'rsync-concurrent' }));
    await fs.writeFile(path.join(backupDir, 'backup.info'), infoText);
    const hookEnv = { BARMAN_HOOK: 'backup_retry_script', BARMAN_PHASE: 'post', BARMAN_BACKUP_DIR: backupDir, BARMAN_BACKUP_ID: '20240601T120000' };
    const notDone = await tool(s3, 'barman-cloud-backup', [s3.url('hook', 'p'), 'main'], { ...hookEnv, BARMAN_STATUS: 'FAILED' });
    assert.equal(notDone.code, 63, notDone.stderr);
    const up = await tool(s3, 'barman-cloud-backup', ['--snappy', s3.url('hook', 'p'), 'main'], { ...hookEnv, BARMAN_STATUS: 'DONE' });
    assert.equal(up.code, 0, up.stderr);
    const hookSt = await storageOf(s3, 'hook');
    assert.equal((await getBuffer(hookSt, 'p/main/base/20240601T120000/backup.info'))?.toString(), infoText);
    const fromHook = path.join(work, 'hook-restore');
    const r3 = await tool(s3, 'barman-cloud-restore', [s3.url('hook', 'p'), 'main', '20240601T120000', fromHook]);
    assert.equal(r3.code, 0, r3.stderr);
    assert.equal(await tree(fromHook), await tree(mine));
    await pg.destroy();
  });
});
