/**
 * Backup options on real PostgreSQL 15 that barman-ts used to accept and ignore:
 *  - basebackup_retry_times / _sleep: a pg_basebackup that fails once (a wrapper found first
 *    through path_prefix) is run again from scratch and the backup ends DONE, without what the
 *    failed attempt left;
 *  - primary_checkpoint_timeout: the CHECKPOINT + WAL switch forced on the primary moves it
 *    past the backup's end WAL file, and is not repeated once it has.
 */
import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { forcePrimaryCheckpoint } from '../../src/backup/standby.js';
import { PgConnection } from '../../src/postgres/connection.js';
import { lsnToWal, parseLsn } from '../../src/wal/names.js';
import { createBarmanEnv, listBackups, startStreaming, type BarmanEnv } from '../helpers/barman-env.js';
import { cleanupAll, PgCluster, pgBin } from '../helpers/pg-cluster.js';
import { BARMAN_USER, makeTempDir } from '../helpers/system.js';

describe('backup options', () => {
  let pg: PgCluster;
  let env: BarmanEnv;
  let wrapperDir = '';

  before(async () => {
    pg = await PgCluster.create();
    await pg.psql('CREATE TABLE t AS SELECT generate_series(1, 100) AS v');
    wrapperDir = await makeTempDir('pgbb-wrapper-', { owner: BARMAN_USER, mode: 0o755 });
    // A copy (--pgdata) fails the first time, after writing into the backup directory; the
    // real program does everything else (`check` runs --version).
    const script = [
      '#!/bin/sh',
      `marker=${wrapperDir}/calls`,
      'case "$*" in *--pgdata=*) echo call >> "$marker";; *) exec ' + pgBin('pg_basebackup') + ' "$@";; esac',
      'if [ "$(wc -l < "$marker")" -eq 1 ]; then',
      '  for a in "$@"; do case "$a" in --pgdata=*) mkdir -p "${a#--pgdata=}" && echo half > "${a#--pgdata=}/left-by-failed-attempt";; esac; done',
      '  echo "pg_basebackup: error: could not receive data from WAL stream: server closed the connection unexpectedly" >&2',
      '  exit 1',
      'fi',
      `exec ${pgBin('pg_basebackup')} "$@"`,
      '',
    ].join('\n');
    await fs.writeFile(path.join(wrapperDir, 'pg_basebackup'), script, { mode: 0o755 });
    await fs.chown(path.join(wrapperDir, 'pg_basebackup'), (await fs.stat(wrapperDir)).uid, (await fs.stat(wrapperDir)).gid);
    env = await createBarmanEnv(pg, {
      server: 'retry',
      extra: { slot_name: 'barman_retry', path_prefix: wrapperDir, basebackup_retry_times: '2', basebackup_retry_sleep: '1' },
    });
    await startStreaming(env);
  });

  after(async () => {
    await env?.stop();
    await cleanupAll();
  });

  it('basebackup_retry_times: the copy is retried from scratch and the backup is DONE', async () => {
    const r = await env.run('backup', '--wait', '--wait-timeout', '90', '--immediate-checkpoint', env.server);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stderr, /Copy failed \(pg_basebackup: could not receive data from WAL stream: server closed the connection unexpectedly\): attempt 2 of 3 in 1 seconds/);
    assert.equal((await fs.readFile(path.join(wrapperDir, 'calls'), 'utf8')).trim().split('\n').length, 2);
    const [b] = await listBackups(env);
    assert.equal(b?.status, 'DONE');
    const data = path.join(env.home, env.server, 'base', b?.backup_id ?? '', 'data');
    assert.ok(existsSync(path.join(data, 'PG_VERSION')));
    assert.equal(existsSync(path.join(data, 'left-by-failed-attempt')), false);
  });

  it('--no-retry: the same failure makes the backup FAILED at once', async () => {
    await fs.rm(path.join(wrapperDir, 'calls'), { force: true });
    const r = await env.run('backup', '--no-retry', env.server);
    assert.equal(r.code, 1);
    assert.doesNotMatch(r.stderr, /Copy failed/);
    assert.equal((await fs.readFile(path.join(wrapperDir, 'calls'), 'utf8')).trim().split('\n').length, 1);
    const [b] = await listBackups(env);
    assert.equal(b?.status, 'FAILED');
  });

  it('primary_checkpoint_timeout: the forced checkpoint moves the primary past the end WAL, once', async () => {
    const conn = await PgConnection.connect(pg.conninfo, { applicationName: 'test' });
    try {
      // Some WAL first: right after a switch (an earlier test's), the position is the first byte
      // of the next file, which pg_walfile_name() still calls the old one.
      await conn.query('INSERT INTO t VALUES (0)');
      const endWal = lsnToWal(parseLsn(await conn.currentLsn()), 1);
      assert.equal(await forcePrimaryCheckpoint({ primary_conninfo: pg.conninfo }, endWal), true);
      // The write position is now in a later file: endWal is complete (and can be archived).
      const now = lsnToWal(parseLsn(await conn.currentLsn()), 1);
      assert.ok(now > endWal, `${now} after ${endWal}`);
      assert.equal(await forcePrimaryCheckpoint({ primary_conninfo: pg.conninfo }, endWal), false, 'already past it');
    } finally {
      await conn.close();
    }
  });

  it('wal_conninfo: the replication slot is checked on the WAL host', async () => {
    const original = await fs.readFile(env.configFile, 'utf8');
    try {
      await fs.writeFile(env.configFile, `${original}wal_conninfo = ${pg.conninfo}\n`);
      assert.match((await env.run('check', env.server)).stdout, /\treplication slot: OK/);
      await fs.writeFile(env.configFile, `${original}wal_conninfo = host=127.0.0.1 port=1 dbname=postgres connect_timeout=3\n`);
      const r = await env.run('check', env.server);
      assert.match(r.stdout, /\treplication slot: FAILED \(cannot ask the WAL host \(wal_conninfo\) about slot 'barman_retry': /);
      assert.match(r.stdout, /\tPostgreSQL: OK/, 'the main connection is not blamed');
    } finally {
      await fs.writeFile(env.configFile, original);
    }
  });
});
