/**
 * The heart of the product, end to end on real PostgreSQL 15: WAL streaming started by cron,
 * a postgres-method backup, and point-in-time recovery to a time, an xid, an LSN, a restore
 * point name and `immediate`, each proven by the rows present after the recovered server starts.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { cleanupAll, PgCluster, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, startStreaming, type BarmanEnv } from '../helpers/barman-env.js';
import { sleep } from '../helpers/system.js';

describe('streaming backup and point-in-time recovery', () => {
  let pg: PgCluster;
  let env: BarmanEnv;
  let backupId = '';
  // Facts captured between phases of writes: rows visible at each target.
  const marks: Record<string, { target: string; rows: number }> = {};

  const count = async (c: PgCluster) => Number(await c.psql('SELECT count(*) FROM t'));
  const insert = (n: number, tag: string) => pg.psql(`INSERT INTO t (tag) SELECT '${tag}' FROM generate_series(1, ${n})`);

  before(async () => {
    pg = await PgCluster.create();
    await pg.psql('CREATE TABLE t (id serial PRIMARY KEY, tag text, at timestamptz DEFAULT clock_timestamp())');
    await insert(100, 'base');
    env = await createBarmanEnv(pg);
    await startStreaming(env);
  });

  after(async () => {
    await env?.stop();
    await cleanupAll();
  });

  it('takes a backup that ends DONE with --wait', async () => {
    const out = await env.ok('backup', '--wait', '--wait-timeout', '60', '--immediate-checkpoint', '--name', 'nightly', env.server);
    assert.match(out, /Starting backup using postgres method/);
    const list = await env.ok('list-backups', '--minimal', env.server);
    backupId = list.trim().split('\n')[0] ?? '';
    assert.match(backupId, /^\d{8}T\d{6}$/);
    const show = await env.ok('-f', 'json', 'list-backups', env.server);
    const parsed = JSON.parse(show) as Record<string, { backup_id: string; status: string }[]>;
    assert.equal(parsed[env.server]?.[0]?.status, 'DONE');
  });

  it('records the targets while data keeps changing', async () => {
    await insert(10, 'phase1');
    await sleep(1100);
    marks.time = { target: await pg.psql("SELECT to_char(clock_timestamp(), 'YYYY-MM-DD HH24:MI:SS.US TZH:TZM')"), rows: await count(pg) };
    await sleep(1100);
    await insert(10, 'phase2');
    // xid: the transaction that inserted phase3 rows; recovery to it (inclusive) includes them.
    const xid = await pg.psql("BEGIN; INSERT INTO t (tag) SELECT 'phase3' FROM generate_series(1, 10); SELECT txid_current(); COMMIT;");
    marks.xid = { target: xid.split('\n').find((l) => /^\d+$/.test(l)) ?? '', rows: await count(pg) };
    await insert(10, 'phase4');
    await pg.psql("SELECT pg_create_restore_point('before_phase5')");
    marks.name = { target: 'before_phase5', rows: await count(pg) };
    await insert(10, 'phase5');
    marks.lsn = { target: await pg.psql('SELECT pg_current_wal_insert_lsn()'), rows: await count(pg) };
    await insert(10, 'phase6');
    await env.ok('switch-wal', '--archive', '--archive-timeout', '60', env.server);
    assert.ok(marks.xid.target !== '');
  });

  const recoverAndCount = async (args: string[]): Promise<number> => {
    const dest = await env.newDir('restore-');
    await env.ok('recover', env.server, backupId, dest, ...args);
    const { cluster, outcome } = await startRecoveredCluster(dest);
    try {
      assert.ok(['primary', 'paused'].includes(outcome), `outcome ${outcome}`);
      return await count(cluster);
    } finally {
      await cluster.destroy();
    }
  };

  it('recovers to a time', async () => {
    assert.equal(await recoverAndCount(['--target-time', marks.time?.target ?? '', '--target-action', 'promote']), marks.time?.rows);
  });

  it('recovers to an xid', async () => {
    assert.equal(await recoverAndCount(['--target-xid', marks.xid?.target ?? '', '--target-action', 'promote']), marks.xid?.rows);
  });

  it('recovers to a restore point name', async () => {
    assert.equal(await recoverAndCount(['--target-name', marks.name?.target ?? '', '--target-action', 'promote']), marks.name?.rows);
  });

  it('recovers to an LSN', async () => {
    assert.equal(await recoverAndCount(['--target-lsn', marks.lsn?.target ?? '', '--target-action', 'promote']), marks.lsn?.rows);
  });

  it('recovers to the end of the backup with --target-immediate', async () => {
    assert.equal(await recoverAndCount(['--target-immediate', '--target-action', 'promote']), 100);
  });

  it('recovers everything without a target', async () => {
    assert.equal(await recoverAndCount([]), await count(pg));
  });

  it('refuses a target time before the end of the backup, changing nothing', async () => {
    const dest = await env.newDir('restore-bad-');
    const r = await env.run('recover', env.server, backupId, dest, '--target-time', '2000-01-01 00:00:00+00:00');
    assert.equal(r.code, 1);
    assert.equal(fs.existsSync(dest), false, 'nothing written on disk');
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /^ERROR: /);
  });

  it('rejects an unknown backup id and an unknown server with one clear line', async () => {
    const a = await env.run('recover', env.server, '20000101T000000', '/tmp/nowhere');
    assert.equal(a.code, 1);
    assert.match(a.stderr, /^ERROR: Unknown backup '20000101T000000'/);
    const b = await env.run('list-backups', 'nosuchserver');
    assert.equal(b.code, 1);
    assert.match(b.stderr, /Unknown server 'nosuchserver'/);
  });
});
