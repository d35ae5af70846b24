/**
 * One conformance suite for every storage driver (src/storage): posix on a temp dir, aws-s3 on
 * a real s3rver and azure-blob-storage on a real Azurite, both on 127.0.0.1. Whatever the
 * backup, restore, retention and WAL code relies on is asserted here once for all of them.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { AzureStorage } from '../../src/storage/azure.js';
import { PosixStorage } from '../../src/storage/posix.js';
import { S3Storage } from '../../src/storage/s3.js';
import { deleteKeys, getBuffer, listAll, readAll, StorageError, type ObjectStorage } from '../../src/storage/types.js';
import { ObjectWriter } from '../../src/storage/upload.js';
import { startAzurite, startS3rver, type ObjectStoreServer } from '../helpers/object-stores.js';
import { freePort, makeTempDir, removeTempDirs } from '../helpers/system.js';

interface Driver {
  name: string;
  make(container: string): Promise<ObjectStorage>;
}

const servers: ObjectStoreServer[] = [];
const drivers: Driver[] = [];
let seq = 0;

before(async () => {
  const [s3, az] = await Promise.all([startS3rver(), startAzurite()]);
  servers.push(s3, az);
  Object.assign(process.env, s3.env, az.env);
  const posixRoot = await makeTempDir('posix-storage');
  drivers.push(
    { name: 'posix', make: async (c) => new PosixStorage(`${posixRoot}/${c}`) },
    { name: 'aws-s3', make: (c) => S3Storage.open({ bucket: c, endpointUrl: s3.endpoint }) },
    { name: 'azure-blob-storage', make: async (c) => new AzureStorage({ container: c }) },
  );
});

after(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  await removeTempDirs();
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function fresh(d: Driver): Promise<ObjectStorage> {
  const st = await d.make(`conf-${process.pid}-${++seq}`);
  await st.createContainer();
  return st;
}

for (const name of ['posix', 'aws-s3', 'azure-blob-storage']) {
  describe(`storage driver ${name}`, () => {
    const driver = () => drivers.find((d) => d.name === name) as Driver;

    test('a container is missing until created; creating it twice is fine', async () => {
      const st = await driver().make(`missing-${process.pid}-${++seq}`);
      assert.equal(await st.containerExists(), false);
      await st.createContainer();
      await st.createContainer();
      assert.equal(await st.containerExists(), true);
      await st.close();
    });

    test('put and get round-trip bytes and metadata; a missing key reads as null', async () => {
      const st = await fresh(driver());
      const body = randomBytes(70_000);
      await st.put('srv/wals/0000000100000000/000000010000000000000001.gz', body, { metadata: { sha256: sha(body) }, tags: [['k', 'v']] });
      const got = await st.get('srv/wals/0000000100000000/000000010000000000000001.gz');
      assert.ok(got);
      assert.equal(got.size, body.length);
      assert.equal(got.metadata.sha256, sha(body));
      assert.deepEqual(await readAll(got), body);
      assert.equal(await st.get('srv/wals/0000000100000000/000000010000000000000002.gz'), null);
      // An empty object and a key with spaces and plus signs.
      await st.put('srv/odd name+x/empty', Buffer.alloc(0));
      assert.deepEqual(await getBuffer(st, 'srv/odd name+x/empty'), Buffer.alloc(0));
      await st.close();
    });

    test('list by prefix: every level, or one level with directories', async () => {
      const st = await fresh(driver());
      const keys = ['p/base/20240101T000000/backup.info', 'p/base/20240101T000000/data.tar', 'p/base/20240102T000000/backup.info', 'p/wals/0000000100000000/000000010000000000000001', 'p/wals/00000002.history', 'q/other'];
      for (const k of keys) await st.put(k, Buffer.from(k));
      const all = (await listAll(st, 'p/')).map((o) => o.key).sort();
      assert.deepEqual(all, keys.filter((k) => k.startsWith('p/')).sort());
      const one = await st.list('p/base/', '/');
      assert.deepEqual(one.prefixes.sort(), ['p/base/20240101T000000/', 'p/base/20240102T000000/']);
      assert.deepEqual(one.objects, []);
      const wals = await st.list('p/wals/', '/');
      assert.deepEqual(wals.prefixes, ['p/wals/0000000100000000/']);
      assert.deepEqual(wals.objects.map((o) => o.key), ['p/wals/00000002.history']);
      assert.equal(wals.objects[0]?.size, 'p/wals/00000002.history'.length);
      // A prefix that is not a "directory" boundary.
      assert.deepEqual((await listAll(st, 'p/base/20240101T000000/d')).map((o) => o.key), ['p/base/20240101T000000/data.tar']);
      assert.deepEqual((await st.list('nothing/', '/')).objects, []);
      await st.close();
    });

    test('streamed multipart upload with parallel parts keeps the bytes and their order', async () => {
      const st = await fresh(driver());
      const part = st.capabilities.minPartSize;
      const data = randomBytes(part * 2 + 12345);
      const w = new ObjectWriter(st, 'big/data.tar', { partSize: part, jobs: 3 });
      // Odd-sized writes so that parts are cut inside writes.
      for (let off = 0; off < data.length; off += 300_001) await w.write(data.subarray(off, Math.min(data.length, off + 300_001)));
      const res = await w.end();
      assert.equal(res.parts, 3);
      assert.equal(res.size, data.length);
      assert.equal(res.sha256, sha(data));
      const got = await getBuffer(st, 'big/data.tar');
      assert.ok(got);
      assert.equal(sha(got), sha(data));
      // Smaller than one part: a single put.
      const small = new ObjectWriter(st, 'big/small', { partSize: part, jobs: 2 });
      await small.write(Buffer.from('hello'));
      assert.equal((await small.end()).parts, 1);
      assert.deepEqual(await getBuffer(st, 'big/small'), Buffer.from('hello'));
      await st.close();
    });

    test('an aborted multipart upload leaves nothing visible', async () => {
      const st = await fresh(driver());
      const part = st.capabilities.minPartSize;
      const w = new ObjectWriter(st, 'cut/data.tar', { partSize: part, jobs: 2 });
      await w.write(randomBytes(part + 10));
      await w.abort();
      assert.equal(await st.get('cut/data.tar'), null);
      assert.deepEqual((await listAll(st, 'cut/')).map((o) => o.key), []);
      await st.close();
    });

    test('batched deletes remove what is named, ignore missing keys, keep the rest', async () => {
      const st = await fresh(driver());
      const keys = Array.from({ length: 7 }, (_, i) => `d/wals/0000000100000000/00000001000000000000000${i}`);
      for (const k of keys) await st.put(k, Buffer.from('x'));
      await st.put('d/wals/00000002.history', Buffer.from('h'));
      await deleteKeys(st, [...keys.slice(0, 5), 'd/wals/0000000100000000/nope'], 2);
      assert.deepEqual((await listAll(st, 'd/')).map((o) => o.key).sort(), [...keys.slice(5), 'd/wals/00000002.history'].sort());
      await st.deleteBatch([]);
      await st.close();
    });
  });
}

describe('storage errors', () => {
  test('an unreachable endpoint fails fast with a network error', async () => {
    const port = await freePort();
    const s3 = await S3Storage.open({ bucket: 'b', endpointUrl: `http://127.0.0.1:${port}`, maxAttempts: 2 });
    const started = Date.now();
    await assert.rejects(s3.containerExists(), (err: unknown) => err instanceof StorageError && err.kind === 'network' && err.exitCode === 2);
    process.env.AZURE_STORAGE_CONNECTION_STRING = servers[1]?.env.AZURE_STORAGE_CONNECTION_STRING.replace(/:\d+\//, `:${port}/`);
    const az = new AzureStorage({ container: 'ccc', maxTries: 2 });
    await assert.rejects(az.containerExists(), (err: unknown) => err instanceof StorageError && err.kind === 'network');
    process.env.AZURE_STORAGE_CONNECTION_STRING = servers[1]?.env.AZURE_STORAGE_CONNECTION_STRING;
    assert.ok(Date.now() - started < 20_000, `took ${Date.now() - started} ms`);
  });

  test('wrong credentials are an access-denied error that does not echo the secret', async () => {
    const saved = { ...process.env };
    try {
      // s3rver checks the access key ID, not SigV4 signatures: an unknown key, on an existing bucket.
      const good = await S3Storage.open({ bucket: 'auth-bucket', endpointUrl: servers[0]?.endpoint });
      await good.createContainer();
      process.env.AWS_ACCESS_KEY_ID = 'AKIAUNKNOWN';
      process.env.AWS_SECRET_ACCESS_KEY = 'not-the-secret-xyz';
      const s3 = await S3Storage.open({ bucket: 'auth-bucket', endpointUrl: servers[0]?.endpoint });
      await assert.rejects(s3.put('k', Buffer.from('x')), (err: unknown) => err instanceof StorageError && err.kind === 'auth' && !err.message.includes('not-the-secret-xyz'));
      await assert.rejects(s3.containerExists(), (err: unknown) => err instanceof StorageError && err.kind === 'auth');
      process.env.AZURE_STORAGE_CONNECTION_STRING = (saved.AZURE_STORAGE_CONNECTION_STRING ?? '').replace(/AccountKey=[^;]+/, 'AccountKey=bm90LXRoZS1rZXk=');
      const az = new AzureStorage({ container: 'ccc' });
      await assert.rejects(az.containerExists(), (err: unknown) => err instanceof StorageError && err.kind === 'auth' && !err.message.includes('bm90LXRoZS1rZXk='));
    } finally {
      process.env.AWS_SECRET_ACCESS_KEY = saved.AWS_SECRET_ACCESS_KEY;
      process.env.AWS_ACCESS_KEY_ID = saved.AWS_ACCESS_KEY_ID;
      process.env.AZURE_STORAGE_CONNECTION_STRING = saved.AZURE_STORAGE_CONNECTION_STRING;
    }
  });
});
