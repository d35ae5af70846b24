/**
 * generate-manifest and verify-backup on a real backup: pg_verifybackup accepts the manifest
 * PostgreSQL sent (with WAL parsing, from the archive), and one we generate after removing it.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cleanupAll, PgCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, listBackups, startStreaming, type BarmanEnv } from '../helpers/barman-env.js';

describe('backup manifests', () => {
  let pg: PgCluster;
  let env: BarmanEnv;

  before(async () => {
    pg = await PgCluster.create();
    await pg.psql('CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g;');
    env = await createBarmanEnv(pg);
    await startStreaming(env);
  });

  after(async () => {
    await env?.stop();
    await cleanupAll();
  });

  it('verifies the manifest of a postgres backup, then a generated one', async () => {
    await env.ok('backup', '--wait', '--immediate-checkpoint', env.server);
    const id = (await listBackups(env)).at(0)?.backup_id ?? '';
    assert.ok(id);
    const first = await env.run('verify-backup', env.server, id);
    assert.equal(first.code, 0, first.stderr);
    assert.doesNotMatch(first.stderr, /WAL parsing skipped/);
    assert.match(first.stdout, /backup successfully verified/);

    const manifest = path.join(env.home, env.server, 'base', id, 'data', 'backup_manifest');
    await fs.rm(manifest);
    const gen = await env.run('generate-manifest', env.server, id);
    assert.equal(gen.code, 0, gen.stderr);
    const again = await env.run('verify-backup', env.server, id);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /backup successfully verified/);
  });
});
