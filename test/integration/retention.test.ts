/**
 * Retention policy end to end on real PostgreSQL 15: four streaming backups with
 * `retention_policy = REDUNDANCY 2`; list-backups marks the two oldest OBSOLETE, cron deletes
 * them and the WAL files only they needed, and the oldest backup left still recovers.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cleanupAll, PgCluster, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, readLog, startStreaming, type BarmanEnv } from '../helpers/barman-env.js';
import { sleep } from '../helpers/system.js';

describe('retention policy REDUNDANCY 2', () => {
  let pg: PgCluster;
  let env: BarmanEnv;
  const ids: string[] = [];
  /** Rows in the table when each backup started. */
  const rowsAt: number[] = [];

  const count = async (c: PgCluster) => Number(await c.psql('SELECT count(*) FROM t'));

  before(async () => {
    pg = await PgCluster.create();
    await pg.psql('CREATE TABLE t (id serial PRIMARY KEY, tag text)');
    env = await createBarmanEnv(pg, { extra: { retention_policy: 'REDUNDANCY 2' } });
    await startStreaming(env);
  });

  after(async () => {
    await env?.stop();
    await cleanupAll();
  });

  it('takes four backups', async () => {
    for (let i = 1; i <= 4; i++) {
      await pg.psql(`INSERT INTO t (tag) SELECT 'before backup ${i}' FROM generate_series(1, ${i * 10})`);
      rowsAt.push(await count(pg));
      await env.ok('backup', '--wait', '--wait-timeout', '60', '--immediate-checkpoint', env.server);
      await sleep(1100); // backup IDs have a one-second resolution
    }
    ids.push(...(await env.ok('list-backups', '--minimal', env.server)).trim().split('\n').reverse());
    assert.equal(ids.length, 4);
  });

  it('lists the two oldest as OBSOLETE before cron', async () => {
    const doc = JSON.parse(await env.ok('-f', 'json', 'list-backups', env.server)) as Record<string, { backup_id: string; status: string; retention_status: string }[]>;
    assert.deepEqual(
      doc[env.server]?.map((b) => [b.backup_id, b.status, b.retention_status]),
      [
        // Barman prints '-' for VALID backups.
        [ids[3], 'DONE', '-'],
        [ids[2], 'DONE', '-'],
        [ids[1], 'DONE', 'OBSOLETE'],
        [ids[0], 'DONE', 'OBSOLETE'],
      ],
    );
  });

  it('cron deletes them and the WALs older than the oldest remaining backup', async () => {
    const out = await env.ok('cron');
    assert.match(out, new RegExp(`Enforcing retention policy: removing backup ${ids[0]} for server ${env.server}`));
    assert.match(out, new RegExp(`Enforcing retention policy: removing backup ${ids[1]} for server ${env.server}`));
    assert.match(out, /Delete associated WAL segments:\n\t[0-9A-F]{24}/);
    assert.deepEqual((await env.ok('list-backups', '--minimal', env.server)).trim().split('\n'), [ids[3], ids[2]]);
    const show = JSON.parse(await env.ok('-f', 'json', 'show-backup', env.server, ids[2] ?? '')) as Record<string, { base_backup_information: { begin_wal: string } }>;
    const beginWal = show[env.server]?.base_backup_information.begin_wal ?? '';
    assert.match(beginWal, /^[0-9A-F]{24}$/);
    const xlogdb = await fsp.readFile(path.join(env.home, env.server, 'wals', 'xlog.db'), 'utf8');
    const names = xlogdb.trim().split('\n').map((l) => l.split('\t')[0] ?? '');
    const segments = names.filter((n) => !n.endsWith('.history'));
    assert.ok(segments.length > 0);
    assert.ok(segments.every((n) => n.slice(0, 24) >= beginWal), `WALs before ${beginWal} left: ${segments.filter((n) => n < beginWal).join(', ')}`);
    // a second cron has nothing left to delete
    assert.doesNotMatch(await env.ok('cron'), /Enforcing retention policy/);
    assert.match(await readLog(env), /barman\.retention INFO: (\[\w+\] )?Enforcing retention policy on server/);
  });

  it('the oldest backup left still recovers, to its end and to the end of the WAL', async () => {
    for (const [args, rows] of [
      [['--target-immediate', '--target-action', 'promote'], rowsAt[2]],
      [[], await count(pg)],
    ] as const) {
      if (args.length === 0) await env.ok('switch-wal', '--archive', '--archive-timeout', '60', env.server);
      const dest = await env.newDir('restore-');
      await env.ok('recover', env.server, ids[2] ?? '', dest, ...args);
      const { cluster, outcome } = await startRecoveredCluster(dest);
      try {
        assert.ok(['primary', 'paused'].includes(outcome), `outcome ${outcome}`);
        assert.equal(await count(cluster), rows);
      } finally {
        await cluster.destroy();
      }
    }
  });
});
