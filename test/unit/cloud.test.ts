/**
 * Pure logic of the barman-cloud-* tools: URLs, object names, sizes and tags, Barman's
 * include/exclude rules, the choice of a WAL object, backup.info for Barman 3.4, and the
 * JSON / console shapes of barman-cloud-backup-list.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { newBackupInfo, parseBackupInfo, serializeBackupInfo } from '../../src/catalog/backup-info.js';
import { pyDict, pyFloat } from '../../src/catalog/pyliteral.js';
import { parseCloudUrl } from '../../src/cloud/connect.js';
import { CloudLayout, parseTarName, parseWalObjectName, tarName } from '../../src/cloud/layout.js';
import { backupJson, listLines, pyJsonDumps } from '../../src/cloud/report.js';
import { matcher, EXCLUDE_LIST, PGDATA_EXCLUDE_LIST } from '../../src/cloud/tar-upload.js';
import { nextInListing, pickWal } from '../../src/cloud/wal-restore.js';
import { parseSize, parseTags } from '../../src/cli/cloud/common.js';
import { buildConninfo } from '../../src/cli/cloud/backup.js';
import { BarmanError } from '../../src/util/errors.js';
import { parsePyDatetime } from '../../src/util/pytime.js';

describe('cloud URLs', () => {
  it('reads s3 and Azure URLs as Barman does', () => {
    assert.deepEqual(parseCloudUrl('s3://bucket/a/b/', 'aws-s3'), { provider: 'aws-s3', container: 'bucket', prefix: 'a/b', accountUrl: null });
    assert.deepEqual(parseCloudUrl('s3://bucket', 'aws-s3'), { provider: 'aws-s3', container: 'bucket', prefix: '', accountUrl: null });
    assert.deepEqual(parseCloudUrl('https://acct.blob.core.windows.net/cont/x/y', 'azure-blob-storage', {}), {
      provider: 'azure-blob-storage',
      container: 'cont',
      prefix: 'x/y',
      accountUrl: 'https://acct.blob.core.windows.net',
    });
    assert.deepEqual(parseCloudUrl('http://127.0.0.1:10000/devstoreaccount1/cont/p', 'azure-blob-storage', { AZURE_STORAGE_CONNECTION_STRING: 'x' }).container, 'cont');
  });

  it('refuses bad URLs, emulators without a connection string and google-cloud-storage with exit 3', () => {
    const exit3 = (fn: () => unknown) => assert.throws(fn, (e: unknown) => e instanceof BarmanError && e.exitCode === 3);
    exit3(() => parseCloudUrl('https://bucket/path', 'aws-s3'));
    exit3(() => parseCloudUrl('http://127.0.0.1:10000/devstoreaccount1/cont', 'azure-blob-storage', {}));
    exit3(() => parseCloudUrl('gs://bucket/path', 'google-cloud-storage'));
    assert.throws(() => parseCloudUrl('gs://b', 'google-cloud-storage'), /not supported yet/);
  });
});

describe('cloud object names', () => {
  const layout = new CloudLayout('pfx', 'pg');
  it('names WAL objects with their hash dir and compression extension', () => {
    assert.equal(layout.walKey('000000010000000A000000FF', 'gzip'), 'pfx/pg/wals/000000010000000A/000000010000000A000000FF.gz');
    assert.equal(layout.walKey('00000002.history', null), 'pfx/pg/wals/00000002.history');
    assert.equal(layout.walKey('000000010000000000000001', 'zstd'), 'pfx/pg/wals/0000000100000000/000000010000000000000001.zst');
    assert.equal(new CloudLayout('', 'pg').backupInfoKey('20240101T000000'), 'pg/base/20240101T000000/backup.info');
    assert.throws(() => new CloudLayout('', '../x'), BarmanError);
  });

  it('reads WAL object names back, one extension at most', () => {
    assert.deepEqual(parseWalObjectName('000000010000000000000001.lz4'), { name: '000000010000000000000001', compression: 'lz4' });
    assert.deepEqual(parseWalObjectName('000000010000000000000001.partial.gz'), { name: '000000010000000000000001.partial', compression: 'gzip' });
    assert.deepEqual(parseWalObjectName('00000003.history'), { name: '00000003.history', compression: null });
    assert.equal(parseWalObjectName('000000010000000000000001.gz.gz'), null);
    assert.equal(parseWalObjectName('backup.info'), null);
  });

  it('names tars and their continuation parts', () => {
    assert.equal(tarName('data', 0, 'gz'), 'data.tar.gz');
    assert.equal(tarName('16385', 2, null), '16385_0002.tar');
    assert.deepEqual(parseTarName('data_0012.tar.snappy'), { base: 'data', part: 12, compression: 'snappy' });
    assert.equal(parseTarName('data.tar.zst'), null);
    assert.equal(parseTarName('barman-ts.sha256'), null);
  });
});

describe('cloud option values', () => {
  it("parses sizes with Barman's units (kB/MB... base 1024, KiB/MiB... base 1000)", () => {
    assert.equal(parseSize('100GB', '-S'), 100 * 1024 ** 3);
    assert.equal(parseSize('4MB', '-S'), 4 << 20);
    assert.equal(parseSize('1MiB', '-S'), 1_000_000);
    assert.equal(parseSize('512', '-S'), 512);
    assert.throws(() => parseSize('lots', '-S'), (e: unknown) => e instanceof BarmanError && e.exitCode === 3);
  });

  it('parses k,v tags as CSV', () => {
    assert.deepEqual(parseTags(['a,b', '"x,y",z']), [['a', 'b'], ['x,y', 'z']]);
    assert.equal(parseTags(undefined), null);
    assert.throws(() => parseTags(['a,b,c']), /Invalid tag format/);
  });

  it("builds Barman's conninfo from -h/-p/-U/-d", () => {
    assert.equal(buildConninfo({ host: '/run/pg', port: '5433', user: 'bob', dbname: 'postgres' }), 'host=/run/pg port=5433 user=bob dbname=postgres');
    assert.equal(buildConninfo({ dbname: 'host=x dbname=y' }), 'host=x dbname=y');
    assert.equal(buildConninfo({ dbname: "my db" }), "dbname='my db'");
  });
});

describe("Barman's include/exclude rules", () => {
  const pgdata = matcher([...PGDATA_EXCLUDE_LIST, ...EXCLUDE_LIST, '/pg_tblspc/16385']);
  it('excludes what pg_basebackup does, anchored or anywhere', () => {
    assert.equal(pgdata('pg_wal/000000010000000000000001', false), true);
    assert.equal(pgdata('pg_wal', true), false);
    assert.equal(pgdata('global/pg_control', false), true);
    assert.equal(pgdata('base/1/pgsql_tmp', true), true);
    assert.equal(pgdata('base/16384/pg_internal.init', false), true);
    assert.equal(pgdata('postmaster.pid', false), true);
    assert.equal(pgdata('pg_stat_tmp/global.stat', false), true);
    assert.equal(pgdata('pg_tblspc/16385', false), true);
    assert.equal(pgdata('pg_tblspc/16386', false), false);
    assert.equal(pgdata('base/16384/16385', false), false);
    assert.equal(pgdata('x/pg_wal/y', false), false, 'anchored rules match at the root only');
  });

  it('keeps only the PG_<major>_* directory of a tablespace', () => {
    const exclude = matcher(['/*', ...EXCLUDE_LIST]);
    const include = matcher(['/PG_15_*']);
    const allowed = (rel: string, dir: boolean) => include(rel, dir) || !exclude(rel, dir);
    assert.equal(allowed('PG_15_202209061', true), true);
    assert.equal(allowed('PG_15_202209061/16384/16400', false), true);
    assert.equal(allowed('PG_14_202107181', true), false);
    assert.equal(allowed('lost+found', true), false);
  });

  it('honours directory-only rules', () => {
    const m = matcher(['cache/']);
    assert.equal(m('a/cache', true), true);
    assert.equal(m('a/cache', false), false);
  });
});

describe('choice of the WAL object', () => {
  const dir = 'p/pg/wals/0000000100000000/';
  const keys = [
    `${dir}000000010000000000000003.00000028.backup.gz`,
    `${dir}000000010000000000000003.gz`,
    `${dir}000000010000000000000004.partial`,
    `${dir}000000010000000000000005`,
    `${dir}000000010000000000000006.zst`,
  ];
  it('takes the exact or compressed name, skips .backup, and .partial only as a fallback', () => {
    assert.deepEqual(pickWal(dir, '000000010000000000000003', keys, true), { key: `${dir}000000010000000000000003.gz`, compression: 'gzip' });
    assert.deepEqual(pickWal(dir, '000000010000000000000005', keys, true), { key: `${dir}000000010000000000000005`, compression: null });
    assert.deepEqual(pickWal(dir, '000000010000000000000004', keys, true), { key: `${dir}000000010000000000000004.partial`, compression: null });
    assert.equal(pickWal(dir, '000000010000000000000004', keys, false), null);
    assert.equal(pickWal(dir, '000000010000000000000007', keys, true), null);
  });

  it('plans the prefetch of the segments that follow in the listing', () => {
    const layout = new CloudLayout('p', 'pg');
    assert.deepEqual(nextInListing(layout, '000000010000000000000004', keys, 5), ['000000010000000000000005', '000000010000000000000006']);
    assert.deepEqual(nextInListing(layout, '000000010000000000000002', keys, 5), ['000000010000000000000003']);
    assert.deepEqual(nextInListing(layout, '00000002.history', keys, 5), []);
  });
});

describe('backup.info and list output for Barman 3.4', () => {
  const info = newBackupInfo({
    status: 'DONE',
    server_name: 'cloud',
    backup_name: 'nightly',
    begin_wal: '000000010000000000000002',
    begin_time: parsePyDatetime('2024-03-01 10:00:01.123456+00:00'),
    end_time: parsePyDatetime('2024-03-01 10:05:02+00:00'),
    backup_label: "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nLABEL: it's\n",
    copy_stats: pyDict([['copy_time', pyFloat(2)], ['number_of_workers', 4]]),
    tablespaces: [{ name: 'tbs', oid: 16385, location: '/srv/tbs' }],
    data_checksums: 'on',
    cluster_size: 12345,
    version: 150002,
    timeline: 1,
  });

  it('cloud backup.info has only the 29 keys Barman 3.4 loads', () => {
    const text = serializeBackupInfo(info);
    const keys = text.trim().split('\n').map((l) => l.slice(0, l.indexOf('=')));
    // 29 keys, less snapshots_info which Barman too leaves out when it is None.
    assert.equal(keys.length, 28);
    assert.ok(!keys.includes('snapshots_info'));
    for (const k of ['children_backup_ids', 'cluster_size', 'data_checksums', 'encryption', 'parent_backup_id', 'summarize_wal']) assert.ok(!keys.includes(k), k);
    assert.equal(parseBackupInfo(text).backup_name, 'nightly');
  });

  it("renders the JSON of 3.4's to_json (repr label, ctime, float text, backup_id last)", () => {
    const json = pyJsonDumps(backupJson('20240301T100001', parseBackupInfo(serializeBackupInfo(info))));
    assert.ok(json.startsWith(`{"backup_label": "\\"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\\\\nLABEL: it's\\\\n\\"", "backup_name": "nightly", "begin_offset": null, "begin_time": "Fri Mar  1 10:00:01 2024"`), json);
    assert.match(json, /"copy_stats": \{"copy_time": 2\.0, "number_of_workers": 4\}/);
    assert.match(json, /"tablespaces": \[\["tbs", 16385, "\/srv\/tbs"\]\]/);
    assert.ok(json.endsWith(', "xlog_segment_size": 16777216, "backup_id": "20240301T100001"}'), json);
    assert.equal(pyJsonDumps('é'), '"\\u00e9"');
  });

  it('lists DONE backups only, with keep status and name, in fixed columns', () => {
    const failed = newBackupInfo({ status: 'FAILED' });
    const lines = listLines(
      [
        { id: '20240301T100001', info },
        { id: '20240302T100001', info: failed },
      ],
      new Map([['20240301T100001', 'full' as const]]),
    );
    assert.deepEqual(lines, [
      'Backup ID           End Time                 Begin Wal                     Archival Status  Name                ',
      '20240301T100001     2024-03-01 10:05:02      000000010000000000000002      KEEP:FULL        nightly             ',
    ]);
  });
});

describe('a cloud backup interrupted while reading a file', () => {
  it('fails with the interruption, closing each file once (no EBADF from a second close)', async () => {
    const { mkdtemp, rm, writeFile } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const path = await import('node:path');
    const { randomBytes } = await import('node:crypto');
    const { statSync } = await import('node:fs');
    const { CloudTarUploader } = await import('../../src/cloud/tar-upload.js');
    const { PosixStorage } = await import('../../src/storage/posix.js');
    const dir = await mkdtemp(path.join(tmpdir(), 'cloud-abort-'));
    const uncaught: unknown[] = [];
    const onUncaught = (e: unknown) => uncaught.push(e);
    process.on('uncaughtException', onUncaught);
    try {
      const file = path.join(dir, 'big');
      await writeFile(file, randomBytes(6 << 20));
      const storage = new PosixStorage(path.join(dir, 'store'));
      await storage.createContainer();
      for (let round = 0; round < 20; round++) {
        const abort = new AbortController();
        const tar = new CloudTarUploader(
          { storage, layout: new CloudLayout('', 'srv'), backupId: `20240101T0000${String(round).padStart(2, '0')}`, compression: null, maxArchiveSize: 1 << 30, partSize: 5 << 20, jobs: 1, throttle: null, tags: null },
          'data',
          abort.signal,
        );
        // Interrupted after a few chunks (SIGTERM's handler aborts the signal).
        setTimeout(() => abort.abort(), round % 4);
        await assert.rejects(tar.addPath(file, 'big', statSync(file)), (err: Error) => {
          assert.ok(err instanceof BarmanError && /interrupted/.test(err.message), `the interruption, not ${String(err)}`);
          return true;
        });
        await tar.abort(new Error('interrupted'));
      }
      await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(uncaught, []);
    } finally {
      process.off('uncaughtException', onUncaught);
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('WAL restore with segments fetched ahead into the spool', () => {
  it('restores the segment asked for, spools the planned ones, and reports a bad one without failing', async () => {
    const fs = await import('node:fs/promises');
    const os = await import('node:os');
    const path = await import('node:path');
    const { PosixStorage } = await import('../../src/storage/posix.js');
    const { restoreWal } = await import('../../src/cloud/wal-restore.js');
    const root = await fs.mkdtemp(path.join(os.tmpdir(), 'cloud-ahead-'));
    try {
      const storage = new PosixStorage(path.join(root, 'bucket'));
      const layout = new CloudLayout('p', 'pg');
      const seg = (i: number) => `00000001000000000000000${i}`;
      const body = (i: number) => Buffer.alloc(1 << 20, i);
      for (const i of [1, 2, 3]) await storage.put(layout.walKey(seg(i), null), body(i));
      // Segment 4 is cut short in the bucket: not a segment size.
      await storage.put(layout.walKey(seg(4), null), Buffer.alloc(1000, 4));
      const spool = path.join(root, 'spool');
      await fs.mkdir(spool);
      const dest = path.join(root, 'RECOVERYXLOG');
      let planned: string[] = [];
      const out = await restoreWal(storage, layout, seg(1), dest, true, () => undefined, async (listing) => {
        planned = nextInListing(layout, seg(1), listing, 3);
        return { spool, ahead: planned };
      });
      assert.deepEqual(planned, [seg(2), seg(3), seg(4)]);
      assert.ok((await fs.readFile(dest)).equals(body(1)));
      assert.ok((await fs.readFile(path.join(spool, seg(2)))).equals(body(2)));
      assert.ok((await fs.readFile(path.join(spool, seg(3)))).equals(body(3)));
      assert.equal(out.aheadDone, false);
      assert.deepEqual((await fs.readdir(spool)).sort(), [seg(2), seg(3)]);
      // All good: aheadDone.
      const again = await restoreWal(storage, layout, seg(2), dest, true, () => undefined, async () => ({ spool, ahead: [seg(3)] }));
      assert.equal(again.aheadDone, true);
      assert.ok((await fs.readFile(dest)).equals(body(2)));
    } finally {
      await fs.rm(root, { recursive: true, force: true });
    }
  });
});

describe('barman-cloud-wal-archive into a bucket that does not exist yet', () => {
  it('creates it when the store answers "no such bucket", or breaks the connection (EPIPE), and stores the WAL', async () => {
    const fs = await import('node:fs/promises');
    const os = await import('node:os');
    const path = await import('node:path');
    const { PosixStorage } = await import('../../src/storage/posix.js');
    const { StorageError } = await import('../../src/storage/types.js');
    const { archiveWal } = await import('../../src/cloud/wal-archive.js');
    const root = await fs.mkdtemp(path.join(os.tmpdir(), 'cloud-nobucket-'));
    try {
      const wal = path.join(root, '000000010000000000000001');
      await fs.writeFile(wal, Buffer.alloc(1 << 20, 7));
      for (const [i, kind] of (['missing-container', 'network'] as const).entries()) {
        const storage = new PosixStorage(path.join(root, `bucket${i}`));
        let created = false;
        let puts = 0;
        // The store as seen through the network: a PUT into the missing bucket fails as `kind`.
        const store = Object.create(storage) as typeof storage;
        store.containerExists = async () => created;
        store.createContainer = async () => {
          created = true;
          await storage.createContainer();
        };
        store.put = async (key, body, opts) => {
          puts++;
          if (!created) throw new StorageError(`cannot upload ${key}: ${kind === 'network' ? 'cannot reach the object store (write EPIPE)' : 'no such bucket'}`, kind, 2);
          return storage.put(key, body, opts);
        };
        const layout = new CloudLayout('p', 'pg');
        const out = await archiveWal({ storage: store, layout, compression: null, level: null, tags: null, historyTags: null }, wal, null);
        assert.equal(out.key, layout.walKey('000000010000000000000001', null));
        assert.equal(puts, 2, kind);
        const got = await storage.get(out.key);
        assert.ok(got, kind);
        got.body.destroy();
      }
      // A network error with the bucket there is the network's: reported, no second try.
      const storage = new PosixStorage(path.join(root, 'bucket-up'));
      await storage.createContainer();
      const down = Object.create(storage) as typeof storage;
      down.put = async () => {
        throw new StorageError('cannot upload: cannot reach the object store (ECONNRESET)', 'network', 2);
      };
      await assert.rejects(archiveWal({ storage: down, layout: new CloudLayout('p', 'pg'), compression: null, level: null, tags: null, historyTags: null }, wal, null), /cannot reach the object store/);
    } finally {
      await fs.rm(root, { recursive: true, force: true });
    }
  });
});
