/**
 * The WAL block-change reader (src/wal/block-changes.ts) on the WAL of real PostgreSQL clusters:
 *   - PostgreSQL 15 (Debian's, with its pg_waldump): a workload of inserts, updates, deletes,
 *     VACUUM (a truncation), TRUNCATE, CREATE INDEX, a tablespace, CREATE DATABASE with both
 *     strategies, a 200 kB logical message (a record across pages), a WAL switch and full-page
 *     images after a checkpoint: the records and the block references read are exactly
 *     pg_waldump's, and the relations and databases created or truncated are gathered;
 *   - every other major version from 12 to 18: the same workload's WAL is read whole, the block
 *     of an updated row is among the changes, the truncated and created ones are gathered.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { BlockChangeReader, forkKey, relationKey, type BlockChanges } from '../../src/wal/block-changes.js';
import { formatLsn, lsnToWal, parseLsn } from '../../src/wal/names.js';
import { cleanupAll, PG_MAJORS, pgBin, PgCluster } from '../helpers/pg-cluster.js';
import { makeTempDir, POSTGRES_USER, runAs } from '../helpers/system.js';

const SEG = 16 * 1024 * 1024;

/** The workload; returns what a reader must find in its WAL. */
async function workload(pg: PgCluster): Promise<{ updated: string; truncated: string[]; databases: number[] }> {
  const ts = await makeTempDir('wal-changes-ts-', { owner: POSTGRES_USER, mode: 0o700 });
  await pg.psql(
    "CREATE TABLE t (id int PRIMARY KEY, pad text); INSERT INTO t SELECT g, repeat('p', 100) FROM generate_series(1, 20000) g; " +
      "CREATE TABLE shrinking AS SELECT g FROM generate_series(1, 50000) g; CREATE TABLE emptied AS SELECT g FROM generate_series(1, 1000) g;",
  );
  await pg.psql(`CREATE TABLESPACE extra LOCATION '${ts}'`);
  await pg.psql("CREATE TABLE far (id int) TABLESPACE extra; INSERT INTO far SELECT generate_series(1, 5000); CHECKPOINT;");
  // After the checkpoint: full-page images.
  await pg.psql("UPDATE t SET pad = 'u' WHERE id = 15000; DELETE FROM t WHERE id % 7 = 0; CREATE INDEX ON t (pad);");
  await pg.psql('SELECT pg_switch_wal()');
  await pg.psql("SELECT pg_logical_emit_message(false, 'bts', repeat('m', 200000))");
  await pg.psql('DELETE FROM shrinking WHERE g > 100; VACUUM shrinking; TRUNCATE emptied;');
  const strategies = pg.major >= 15 ? [' STRATEGY file_copy', ' STRATEGY wal_log'] : [''];
  for (const [k, s] of strategies.entries()) await pg.psql(`CREATE DATABASE d${k}${s}`);
  const databases = (await pg.psql("SELECT oid FROM pg_database WHERE datname LIKE 'd_' ORDER BY 1")).split('\n').map(Number);
  const db = Number(await pg.psql("SELECT oid FROM pg_database WHERE datname = current_database()"));
  const [page = ''] = (await pg.psql("SELECT (ctid::text::point)[0]::int FROM t WHERE id = 15000")).split('\n');
  const node = async (rel: string) => pg.psql(`SELECT pg_relation_filenode('${rel}')`);
  return {
    updated: `${forkKey(1663, db, Number(await node('t')), 0)}:${page}`,
    truncated: [relationKey(1663, db, Number(await node('shrinking'))), relationKey(1663, db, Number(await node('emptied')))],
    databases,
  };
}

/** Read the cluster's own WAL from `start` to `end` (segments in pg_wal). */
async function readWal(pg: PgCluster, start: bigint, end: bigint): Promise<BlockChanges> {
  const r = await BlockChangeReader.create(start, end);
  for (let seg = start - (start % BigInt(SEG)); !r.finished && seg <= end; seg += BigInt(SEG)) {
    r.feedSegment(await fs.readFile(path.join(pg.dataDir, 'pg_wal', lsnToWal(seg, 1))), seg);
  }
  return r.result();
}

async function run(pg: PgCluster) {
  // A slot keeps the WAL from here (the workload's checkpoints would recycle it).
  await pg.psql("SELECT pg_create_physical_replication_slot('bts_keep', true)");
  // A record boundary, and one after the workload (the insert position: the next record starts there).
  const start = parseLsn(await pg.psql('SELECT pg_current_wal_insert_lsn()'));
  const expected = await workload(pg);
  const end = parseLsn(await pg.psql('SELECT pg_current_wal_insert_lsn()'));
  await pg.psql('SELECT pg_switch_wal()');
  return { start, end, expected, changes: await readWal(pg, start, end) };
}

function assertFound(c: BlockChanges, expected: Awaited<ReturnType<typeof workload>>): void {
  assert.equal(c.unusable, null);
  const [fork = '', page = ''] = expected.updated.split(':');
  assert.ok(c.blocks.get(fork)?.has(Number(page)), `block ${page} of ${fork}`);
  for (const rel of expected.truncated) assert.ok(c.wholeRelations.has(rel), `${rel} created or truncated`);
  for (const db of expected.databases) assert.ok(c.wholeDatabases.has(db), `database ${db}`);
}

describe('WAL block changes on real PostgreSQL WAL', { timeout: 600_000 }, () => {
  after(cleanupAll);

  it('PostgreSQL 15: the same records and block references as pg_waldump', async () => {
    const pg = await PgCluster.create();
    const { start, end, expected, changes } = await run(pg);
    assertFound(changes, expected);
    // pg_waldump from the start of the first segment (the reader's first record is its first too).
    const from = start - (start % BigInt(SEG));
    const dump = await runAs(POSTGRES_USER, pgBin('pg_waldump'), ['-p', path.join(pg.dataDir, 'pg_wal'), '-s', formatLsn(from), '-e', formatLsn(end)], { check: true });
    const lines = dump.stdout.split('\n').filter((l) => l.startsWith('rmgr:'));
    assert.equal(changes.records, lines.length);
    const want = new Map<string, Set<number>>();
    const forks: Record<string, number> = { fsm: 1, vm: 2, init: 3 };
    for (const m of dump.stdout.matchAll(/blkref #\d+: rel (\d+)\/(\d+)\/(\d+)(?: fork (\w+))? blk (\d+)/g)) {
      const key = forkKey(Number(m[1]), Number(m[2]), Number(m[3]), m[4] ? (forks[m[4]] as number) : 0);
      if (!want.has(key)) want.set(key, new Set());
      want.get(key)?.add(Number(m[5]));
    }
    assert.ok(want.size > 10);
    assert.deepEqual(changes.blocks, want);
    for (const m of dump.stdout.matchAll(/desc: (?:CREATE|TRUNCATE) (?:base\/(\d+)|pg_tblspc\/(\d+)\/[^/]+\/(\d+))\/(\d+)/g)) {
      const key = m[1] ? relationKey(1663, Number(m[1]), Number(m[4])) : relationKey(Number(m[2]), Number(m[3]), Number(m[4]));
      assert.ok(changes.wholeRelations.has(key), `${key} (${m[0]})`);
    }
    await pg.destroy();
  });

  for (const major of PG_MAJORS.filter((m) => m !== 15)) {
    it(`PostgreSQL ${major}: its WAL is read whole, with the changed blocks, relations and databases`, async () => {
      const pg = await PgCluster.create({ version: major });
      const { expected, changes } = await run(pg);
      assertFound(changes, expected);
      await pg.destroy();
    });
  }
});
