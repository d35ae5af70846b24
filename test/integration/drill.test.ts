/**
 * `barman drill` on a real PostgreSQL 15 (data checksums on), with a catalog made by our own
 * `barman backup` and WAL streamed by receive-wal: one cluster and one backup shared by every
 * case, in this order:
 *   - cron with drill_interval starts exactly one drill when due (it runs drill_sql_file); that
 *     drill passes, its recorded times add up, show-backup / list-drills / check / metrics
 *     report it, and Barman 3.4 (list-backups, check, rebuild-xlogdb, cron, delete) is
 *     unaffected by the drills/ directory;
 *   - two drills at once (end of the archive, and a restore point that is reached exactly)
 *     run one after the other;
 *   - bad input: one line each, a recorded failed drill where a drill started;
 *   - a WAL segment missing from the archive: "did not reach the target", never a pass;
 *   - SIGTERM during a drill: no PostgreSQL, no sandbox left;
 *   - a corrupted page in the backup copy fails the drill and check --nagios is CRITICAL;
 *   - a remote drill through the test sshd.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, promises as fs, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import type { DrillRecord } from '../../src/drill/records.js';
import { cleanupAll, PgCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, startStreaming, type BarmanEnv } from '../helpers/barman-env.js';
import { BARMAN_USER, ensureBarmanUser, lookupUser, makeTempDir, runAs, sleep, waitFor } from '../helpers/system.js';

const T = { timeout: 300_000 };

/** Live (non-zombie) processes whose command line contains `needle`. */
function processesWith(needle: string): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8');
      const state = readFileSync(`/proc/${p}/stat`, 'utf8').replace(/^.*\) /, '')[0];
      if (cmd.includes(needle) && state !== 'Z') out.push(Number(p));
    } catch {
      /* gone */
    }
  }
  return out;
}

describe('barman drill', { timeout: 1_200_000 }, () => {
  let pg: PgCluster;
  let env: BarmanEnv;
  let backupId = '';
  let rpLsn = '';
  let sqlFile = '';
  let drillsDir = '';

  const records = async (): Promise<DrillRecord[]> => {
    const names = (await fs.readdir(drillsDir).catch(() => [] as string[])).filter((n) => n.endsWith('.json')).sort();
    const recs = await Promise.all(names.map(async (n) => JSON.parse(await fs.readFile(path.join(drillsDir, n), 'utf8')) as DrillRecord));
    return recs.sort((a, b) => a.started_at_timestamp - b.started_at_timestamp);
  };
  const newest = async () => (await records()).at(-1) as DrillRecord;
  const drill = (...args: string[]) => env.run('drill', ...args);
  /** Exactly one line on stderr, an ERROR matching `re`. */
  const oneError = (stderr: string, re: RegExp) => {
    const lines = stderr.split('\n').filter((l) => l.trim() !== '' && !/^WARNING: /.test(l));
    assert.equal(lines.length, 1, `expected one error line, got:\n${stderr}`);
    assert.match(lines[0] as string, /^ERROR: /);
    assert.match(lines[0] as string, re);
  };
  const assertPhasesAddUp = (r: DrillRecord) => {
    const p = r.phases;
    const parts = [p.setup_seconds, p.restore_seconds, p.prepare_seconds, p.replay_seconds, p.promote_seconds, p.checks_seconds, p.stop_seconds, p.cleanup_seconds];
    for (const x of parts) assert.ok(x !== null && x >= 0, `phase ${JSON.stringify(p)}`);
    const sum = parts.reduce<number>((a, b) => a + (b ?? 0), 0);
    assert.ok(Math.abs(sum - p.total_seconds) < 0.02, `phases add up to ${sum}, total ${p.total_seconds}`);
    assert.ok(p.consistency_seconds !== null && p.consistency_seconds <= (p.replay_seconds as number) + 0.001, 'consistency within the replay');
    const rto = (p.restore_seconds ?? 0) + (p.prepare_seconds ?? 0) + (p.replay_seconds ?? 0) + (p.promote_seconds ?? 0);
    assert.ok(Math.abs(rto - (p.rto_seconds as number)) < 0.01, `RTO ${p.rto_seconds} vs ${rto}`);
  };

  before(async () => {
    await ensureBarmanUser();
    pg = await PgCluster.create({ dataChecksums: true });
    await pg.psql(`
      CREATE TABLE t (id int PRIMARY KEY, v text);
      INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g;
      CREATE TABLE frozen (id int, v text);
      INSERT INTO frozen SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 2000) g;
      CHECKPOINT;
    `);
    const dir = await makeTempDir('drill-sql-', { owner: BARMAN_USER, mode: 0o755 });
    sqlFile = path.join(dir, 'checks.sql');
    await fs.writeFile(sqlFile, ['-- rows of the first batch are there', 'SELECT count(*) >= 1000 FROM t;', '-- drill: rows', 'SELECT id FROM frozen LIMIT 3;', ''].join('\n'), { mode: 0o644 });
    env = await createBarmanEnv(pg, { extra: { drill_interval: '1 day', drill_sql_file: sqlFile } });
    drillsDir = path.join(env.home, env.server, 'drills');
    await startStreaming(env);
    await env.ok('backup', '--wait', '--immediate-checkpoint', env.server);
    backupId = (await env.ok('list-backups', '--minimal', env.server)).trim().split('\n')[0] ?? '';
    assert.match(backupId, /^\d{8}T\d{6}$/);
    // After the backup: a batch in its own segment, a restore point, another batch.
    await pg.psql("INSERT INTO t SELECT g, 'second' FROM generate_series(1001, 2000) g");
    await env.ok('switch-wal', '--archive', '--archive-timeout', '60', env.server);
    rpLsn = await pg.psql("SELECT pg_create_restore_point('drill_rp')");
    await pg.psql("INSERT INTO t SELECT g, 'third' FROM generate_series(2001, 3000) g");
    await env.ok('switch-wal', '--archive', '--archive-timeout', '60', env.server);
  });

  after(async () => {
    await env?.stop().catch(() => undefined);
    await cleanupAll();
  });

  it('cron with drill_interval starts exactly one drill when due; it passes and its times add up', T, async () => {
    const first = await env.run('cron');
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, new RegExp(`Starting recovery drill for server ${env.server} \\(backup ${backupId}`));
    const second = await env.run('cron');
    assert.equal(second.code, 0, second.stderr);
    assert.doesNotMatch(second.stdout, /Starting recovery drill/);
    const rec = await waitFor(async () => {
      const rs = await records();
      return rs.length > 0 && rs.every((r) => r.status !== 'running') ? rs : false;
    }, { timeoutMs: 240_000, intervalMs: 500, what: 'the background drill to finish' });
    const third = await env.run('cron');
    assert.doesNotMatch(third.stdout, /Starting recovery drill/);
    assert.equal(rec.length, 1, 'exactly one drill');
    const r = rec[0] as DrillRecord;
    assert.equal(r.status, 'passed', `${r.error}\n${r.log_tail.join('\n')}`);
    assert.equal(r.backup_id, backupId);
    assert.equal(r.target.kind, 'end-of-archive');
    assert.ok(r.reached && r.reached.reason === 'no recovery target specified', JSON.stringify(r.reached));
    assert.ok((r.wal_segments ?? 0) >= 2, `${r.wal_segments} WAL segments replayed`);
    assert.deepEqual(r.checks.map((c) => `${c.name}:${c.status}`), ['amcheck:ok', 'sql:ok', 'checksums:ok']);
    assertPhasesAddUp(r);
    assert.equal(existsSync(r.directory), false, 'sandbox removed');
    assert.equal(existsSync(r.private_directory as string), false, 'private directory removed');
  });
});
