/**
 * replication-status on real PostgreSQL 15: a primary with our receive-wal streaming (a WAL
 * streamer) and a real hot standby (test/helpers/standby.ts) attached.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { cleanupAll, PgCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, startStreaming, type BarmanEnv } from '../helpers/barman-env.js';
import { startStandby, waitStandbyCaughtUp, type Standby } from '../helpers/standby.js';

describe('replication-status', () => {
  let pg: PgCluster;
  let standby: Standby;
  let env: BarmanEnv;

  before(async () => {
    pg = await PgCluster.create();
    standby = await startStandby(pg, { applicationName: 'hot1', slotName: 'hot1_slot' });
    env = await createBarmanEnv(pg, { extra: { conninfo: `${pg.conninfo} password=s3cr3t-pw` } });
    await startStreaming(env, 60_000);
  });

  after(async () => {
    await env?.stop();
    await cleanupAll();
  });

  it('the helper gives a streaming hot standby that replays the primary', async () => {
    assert.equal(await standby.psql('SELECT pg_is_in_recovery();'), 't');
    await pg.psql('CREATE TABLE t AS SELECT 42 AS v;');
    await waitStandbyCaughtUp(pg, standby);
    assert.equal(await standby.psql('SELECT v FROM t;'), '42');
    const rows = await pg.psqlRows("SELECT r.application_name, s.slot_name FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE r.application_name = 'hot1';");
    assert.deepEqual(rows, [['hot1', 'hot1_slot']]);
  });

  it('shows the standby and the WAL streamer with their labels', async () => {
    const out = await env.ok('replication-status', env.server);
    const lines = out.split('\n');
    assert.equal(lines[0], "Status of streaming clients for server 'pg':");
    assert.match(lines[1] ?? '', /^ {2}Current LSN on master: [0-9A-F]+\/[0-9A-F]+$/);
    assert.equal(lines[2], '  Number of streaming clients: 2');
    assert.match(out, /^ {2}\d\. Async standby$/m);
    assert.match(out, /^ {2}\d\. Async WAL streamer$/m);
    assert.match(out, /^ {5}Application name: hot1$/m);
    assert.match(out, /^ {5}Application name: barman_receive_wal$/m);
    assert.match(out, /^ {5}Replication slot: hot1_slot$/m);
    assert.match(out, /^ {5}Replication slot: barman$/m);
    assert.match(out, /^ {5}Sync stage {6}: [1-5]\/5 /m);
    assert.match(out, /^ {5}Sync stage {6}: [1-3]\/3 /m);
    assert.match(out, /^ {5}Communication {3}: TCP\/IP$/m);
    assert.match(out, /^ {5}IP Address {6}: 127\.0\.0\.1 \/ Port: \d+ \/ Host: -$/m);
    assert.match(out, /^ {5}Current state {3}: streaming \(async\)$/m);
    assert.match(out, /^ {5}Started at {6}: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?[+-]\d\d:\d\d$/m);
    assert.match(out, /^ {5}Replay LSN : [0-9A-F]+\/[0-9A-F]+ \(diff: -?\d+(\.\d)? [KMG]?i?B\)$/m);
    assert.doesNotMatch(out, /s3cr3t-pw/);
  });

  it('filters with --target', async () => {
    const hot = await env.ok('replication-status', '--target', 'hot-standby', env.server);
    assert.match(hot, /^Status of hot standby servers for server 'pg':$/m);
    assert.match(hot, /Number of hot standby servers: 1/);
    assert.match(hot, /Application name: hot1/);
    assert.doesNotMatch(hot, /barman_receive_wal/);
    const streamers = await env.ok('replication-status', '--target', 'wal-streamer', env.server);
    assert.match(streamers, /^Status of WAL streamers for server 'pg':$/m);
    assert.match(streamers, /Number of WAL streamers: 1/);
    assert.match(streamers, /Application name: barman_receive_wal/);
    assert.doesNotMatch(streamers, /hot1/);
  });

  it('prints one line per client with --minimal', async () => {
    const out = await env.ok('replication-status', '--minimal', env.server);
    const lines = out.trim().split('\n');
    assert.match(lines[0] ?? '', /^Streaming clients for master 'pg' \(LSN @ [0-9A-F]+\/[0-9A-F]+\):$/);
    assert.equal(lines.length, 3, out);
    assert.ok(lines.some((l) => /^ {2}\d\. A\) postgres@127\.0\.0\.1 S:\S+ F:\S+ R:\S+ P:0 AN:hot1$/.test(l)), out);
    assert.ok(lines.some((l) => /^ {2}\d\. W\) postgres@127\.0\.0\.1 S:\S+ W:\S+ P:0 AN:barman_receive_wal$/.test(l)), out);
  });

  it('gives JSON with -f json', async () => {
    const doc = JSON.parse(await env.ok('-f', 'json', 'replication-status', env.server)) as Record<string, Record<string, unknown>>;
    const srv = doc.pg ?? {};
    assert.match(String(srv.server_lsn), /^[0-9A-F]+\/[0-9A-F]+$/);
    const clients = srv.streaming_clients as Record<string, unknown>[];
    assert.equal(clients.length, 2);
    const names = clients.map((c) => c.name).sort();
    assert.deepEqual(names, ['Async WAL streamer', 'Async standby']);
    const hot = clients.find((c) => c.application_name === 'hot1') ?? {};
    assert.equal(hot.replication_slot, 'hot1_slot');
    assert.equal(typeof hot.replay_lsn_diff_bytes, 'number');
  });

  it('says when no client of the kind is attached', async () => {
    await standby.stop();
    await waitForNoStandby(pg);
    const out = await env.ok('replication-status', '--target', 'hot-standby', env.server);
    assert.equal(out, "Status of hot standby servers for server 'pg':\n" + out.split('\n')[1] + "\n  No hot standby servers attached\n");
    await standby.start();
  });
});

async function waitForNoStandby(pg: PgCluster): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if ((await pg.psql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'hot1';")) === '0') return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('standby still attached');
}
