/**
 * Smoke test of the integration harness itself: real clusters, pg_basebackup, recovery of a
 * copy "restored" by the barman user, point-in-time recovery target actions, crash restart; and
 * `npm test` run by another user than root failing with its reason.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { PgCluster, cleanupAll, pgBin, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { BARMAN_USER, POSTGRES_USER, chownR, ensureBarmanUser, freePort, makeTempDir, runAs } from '../helpers/system.js';

describe('integration harness', () => {
  let src: PgCluster;
  let archiveDir: string;
  let baseBackup: string;

  before(async () => {
    await ensureBarmanUser();
    archiveDir = await makeTempDir('archive-', { owner: POSTGRES_USER, mode: 0o700 });
    src = await PgCluster.create({
      archiveMode: true,
      // Written by the administrator of the test cluster: PostgreSQL runs it through a shell.
      archiveCommand: `test ! -f ${archiveDir}/%f && cp %p ${archiveDir}/%f`,
    });
    await src.psql(`
      CREATE TABLE t (id int PRIMARY KEY, v text);
      INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g;
    `);
    const parent = await makeTempDir('basebackup-', { owner: POSTGRES_USER });
    baseBackup = path.join(parent, 'data');
    await runAs(POSTGRES_USER, pgBin('pg_basebackup'), ['-d', src.conninfo, '-D', baseBackup, '-X', 'stream', '-c', 'fast'], {
      check: true,
    });
  });

  after(cleanupAll);

  /** A copy of the base backup owned by barman, as `barman recover` would leave it. */
  async function restoredCopy(): Promise<string> {
    const parent = await makeTempDir('restore-', { owner: BARMAN_USER });
    const dest = path.join(parent, 'data');
    await runAs('root', 'cp', ['-a', baseBackup, dest], { check: true });
    await chownR(dest, BARMAN_USER);
    await fs.chmod(dest, 0o750);
    return dest;
  }

  test('source cluster answers psql and has a conninfo', async () => {
    assert.equal(await src.psql('SELECT count(*) FROM t'), '1000');
    assert.equal(src.conninfo, `host=127.0.0.1 port=${src.port} user=postgres dbname=postgres`);
    assert.equal(await src.psql('SHOW wal_level'), 'replica');
    assert.equal(await src.psql('SHOW fsync'), 'on');
    assert.deepEqual(await src.psqlRows('SELECT 1, 2 UNION ALL SELECT 3, 4'), [['1', '2'], ['3', '4']]);
    await src.createUser('barman_test', { superuser: true });
    await src.createDatabase('appdb', 'barman_test');
    assert.equal(await src.psql('SELECT current_user', 'appdb'), 'postgres');
  });

  test('a base backup restored by barman starts on another port with the rows', async () => {
    const copy = await restoredCopy();
    const port = await freePort();
    const { cluster, outcome } = await startRecoveredCluster(copy, port);
    assert.equal(outcome, 'primary');
    assert.equal(cluster.port, port);
    assert.notEqual(cluster.port, src.port);
    assert.equal(await cluster.psql('SELECT count(*) FROM t'), '1000');
    assert.equal(await cluster.psql('SELECT pg_is_in_recovery()'), 'f');
    await cluster.destroy();
  });

  test('point-in-time recovery: promote, pause and shutdown target actions', async (t) => {
    await src.psql(`
      INSERT INTO t SELECT g, 'second' FROM generate_series(1001, 2000) g;
      SELECT pg_create_restore_point('rp1');
      INSERT INTO t SELECT g, 'third' FROM generate_series(2001, 3000) g;
    `);
    await src.waitArchived(await src.switchWal());

    const recover = async (action: string) => {
      const copy = await restoredCopy();
      await fs.writeFile(path.join(copy, 'recovery.signal'), '');
      return startRecoveredCluster(copy, undefined, {
        extraConf: {
          restore_command: `cp ${archiveDir}/%f %p`,
          recovery_target_name: 'rp1',
          recovery_target_action: action,
          archive_mode: 'off',
        },
      });
    };

    await t.test('promote', async () => {
      const { cluster, outcome } = await recover('promote');
      assert.equal(outcome, 'primary');
      assert.equal(await cluster.psql('SELECT count(*) FROM t'), '2000');
      assert.equal(await cluster.psql('SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)'), '00000002');
      await cluster.destroy();
    });
    await t.test('pause', async () => {
      const { cluster, outcome } = await recover('pause');
      assert.equal(outcome, 'paused');
      assert.equal(await cluster.psql('SELECT count(*) FROM t'), '2000');
      assert.equal(await cluster.psql('SELECT pg_is_in_recovery()'), 't');
      await cluster.destroy();
    });
    await t.test('shutdown', async () => {
      const { cluster, outcome } = await recover('shutdown');
      assert.equal(outcome, 'shutdown');
      assert.equal(await cluster.isRunning(), false);
      await cluster.destroy();
    });
  });

  test('kill9 then start performs crash recovery', async () => {
    await src.psql('INSERT INTO t VALUES (5000, $$committed before the crash$$)');
    await src.kill9();
    assert.equal(await src.isRunning(), false);
    await src.start();
    assert.equal(await src.psql('SELECT v FROM t WHERE id = 5000'), 'committed before the crash');
    await src.restart();
    assert.equal(await src.isRunning(), true);
    await src.stop();
    assert.equal(await src.isRunning(), false);
  });
});

describe('npm test as another user than root', () => {
  test('fails with the reason and the way out instead of skipping the integration tests', async () => {
    await ensureBarmanUser();
    const runner = path.join(path.dirname(path.dirname(BARMAN_SCRIPT)), 'scripts', 'run-tests.mjs');
    // Only this file: the unit phase has nothing to run, the integration phase cannot.
    const r = await runAs(BARMAN_USER, process.execPath, [runner, 'integration/harness.test'], { timeoutMs: 60_000 });
    assert.equal(r.code, 1, `${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /ERROR: 1 integration test file\(s\) cannot run: not running as root/);
    assert.match(r.stderr, /npm run test:unit/);
    assert.match(r.stdout, /integration +FAILED \(cannot run\)/);
  });
});
