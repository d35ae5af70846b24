/**
 * `barman metrics` against a real PostgreSQL 15 with WAL streaming and a DONE backup: the
 * server is up, receive-wal runs, the backup is counted and the WAL lag is a finite figure.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cleanupAll, PgCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, startStreaming, type BarmanEnv } from '../helpers/barman-env.js';
import { metricValues } from '../helpers/prometheus.js';

describe('barman metrics on a streaming server', { timeout: 300_000 }, () => {
  let pg: PgCluster;
  let env: BarmanEnv;

  before(async () => {
    pg = await PgCluster.create();
    env = await createBarmanEnv(pg);
    await startStreaming(env, 120_000); // generous: the machine is shared
    await env.ok('backup', '--wait', '--wait-timeout', '120', '--immediate-checkpoint', env.server);
  });

  after(async () => {
    await env?.stop();
    await cleanupAll();
  });

  it('reports up, receive-wal, the DONE backup and a finite WAL lag', async () => {
    const out = await env.ok('metrics', env.server);
    const v = metricValues(out);
    const s = `server="${env.server}"`;
    assert.equal(v.get(`barman_up{${s}}`), 1, out);
    assert.equal(v.get(`barman_receive_wal_running{${s}}`), 1, out);
    assert.ok((v.get(`barman_backups{${s},status="DONE"}`) ?? 0) >= 1, out);
    const age = v.get(`barman_last_backup_age_seconds{${s}}`);
    assert.ok(age !== undefined && Number.isFinite(age) && age >= 0, out);
    assert.ok((v.get(`barman_last_backup_size_bytes{${s}}`) ?? 0) > 0, out);
    for (const name of ['barman_wal_archive_lag_segments', 'barman_wal_archive_lag_seconds']) {
      const lag = v.get(`${name}{${s}}`);
      assert.ok(lag !== undefined && Number.isFinite(lag) && lag >= 0, `${name}: ${out}`);
    }
    assert.equal(v.get(`barman_archiver_failed_total{${s}}`), 0, out);
    assert.equal(v.get(`barman_check_ok{check="PostgreSQL",${s}}`), 1, out);
    assert.equal(v.get(`barman_check_ok{check="receive-wal running",${s}}`), 1, out);
  });

  it('-o writes a 0644 file that node_exporter can read', async () => {
    const file = path.join(env.root, 'barman.prom');
    await env.ok('-q', 'metrics', '--no-checks', '-o', file, 'all');
    const st = await fsp.stat(file);
    assert.equal(st.mode & 0o777, 0o644);
    const v = metricValues(await fsp.readFile(file, 'utf8'));
    assert.equal(v.get(`barman_up{server="${env.server}"}`), 1);
  });
});
