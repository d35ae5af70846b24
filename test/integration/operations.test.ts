/**
 * Operations commands on a real installation: a PostgreSQL 15 primary whose WAL our
 * receive-wal streams (started by cron, as in production, running as the barman user).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { cleanupAll, PgCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, readLog, startStreaming, type BarmanEnv } from '../helpers/barman-env.js';
import { sleep } from '../helpers/system.js';

describe('operations commands on a streaming server', () => {
  let pg: PgCluster;
  let env: BarmanEnv;

  before(async () => {
    pg = await PgCluster.create();
    await pg.createUser('streaming_barman', { replication: true, superuser: true, password: 'int-secret-9' });
    env = await createBarmanEnv(pg, {
      extra: { streaming_conninfo: `${pg.conninfoFor('streaming_barman')} password=int-secret-9` },
    });
    await startStreaming(env, 60_000);
  });

  after(async () => {
    await env?.stop();
    await cleanupAll();
  });

  it('check-wal-archive fails once WAL has been archived', async () => {
    await env.ok('switch-wal', '--archive', '--archive-timeout', '60', env.server);
    const r = await env.run('check-wal-archive', env.server);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^ERROR: WAL archive check failed for server pg: Expected empty archive\n$/);
    assert.equal((await env.run('check-wal-archive', '--timeline', '2', env.server)).code, 0);
  });

  it('diagnose shows the live status and the archived WAL, without the password', async () => {
    const out = await env.ok('diagnose');
    const doc = JSON.parse(out) as { servers: Record<string, { status: Record<string, string>; wals: { last_archived_wal_per_timeline: Record<string, { name: string }> } }> };
    const srv = doc.servers[env.server]!;
    assert.match(srv.status.pg_version ?? '', /^15\./);
    assert.match(srv.wals.last_archived_wal_per_timeline['00000001']?.name ?? '', /^00000001[0-9A-F]{16}$/);
    assert.doesNotMatch(out, /int-secret-9/);
    assert.doesNotMatch(await readLog(env), /int-secret-9/);
  });

  it('list-processes shows receive-wal; terminate-process stops it; it is gone', async () => {
    const listed = await env.ok('list-processes', env.server);
    const m = /^(\d+) receive-wal$/m.exec(listed);
    assert.ok(m, listed);
    assert.match(listed, /^Active subprocesses for server pg:\n/);
    const pid = Number(m[1]);
    const r = await env.run('terminate-process', env.server, 'receive-wal');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `Stopped process receive-wal(${pid})\n`);
    assert.throws(() => process.kill(pid, 0), /ESRCH/);
    assert.doesNotMatch(await env.ok('list-processes', env.server), /receive-wal/);
    // Its walsender goes away too (pg_receivewal stopped with it).
    for (let i = 0; i < 100; i++) {
      if ((await pg.psql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'barman_receive_wal';")) === '0') break;
      await sleep(100);
    }
    assert.equal(await pg.psql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'barman_receive_wal';"), '0');
    const again = await env.run('terminate-process', env.server, 'receive-wal');
    assert.equal(again.code, 1);
    assert.equal(again.stderr, 'ERROR: Termination of receive-wal failed: no such process for server pg\n');
  });

  it('lock-directory-cleanup removes the now unheld receive-wal lock, and cron starts it again', async () => {
    const out = await env.ok('lock-directory-cleanup');
    assert.match(out, /Removed lock file \S+\/\.pg-receive-wal\.lock/);
    await startStreaming(env, 60_000);
    assert.match(await env.ok('list-processes', env.server), /^\d+ receive-wal$/m);
  });
});
