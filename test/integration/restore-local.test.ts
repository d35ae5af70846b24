/**
 * `barman restore` on a real PostgreSQL 15 backup, from the hand-built catalog of
 * test/helpers/restore-fixture.ts (plain and tar+gzip pg_basebackup backups, archived WAL partly
 * gzip-compressed). Our CLI restores as the barman user, and each restored cluster is started
 * as postgres.
 */
import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { cleanupAll, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { BACKUP_ID, BARMAN_JS, TAR_BACKUP_ID, assertCompleteRestore, createRestoreFixture, type RestoreFixture } from '../helpers/restore-fixture.js';
import { BARMAN_USER, makeTempDir } from '../helpers/system.js';

describe('barman restore (local)', () => {
  let conf: string;
  let tbsOid: number;
  let targetTime: string;
  let barman: RestoreFixture['barman'];

  before(async () => {
    ({ conf, tbsOid, targetTime, barman } = await createRestoreFixture({ description: 'restore test' }));
  });

  after(cleanupAll);

  async function restoreDirs(): Promise<{ dest: string; tbs: string }> {
    const parent = await makeTempDir('restore-', { owner: BARMAN_USER, mode: 0o755 });
    return { dest: path.join(parent, 'data'), tbs: path.join(parent, 'tbs1') };
  }

  test('full restore: every archived WAL is replayed', async () => {
    const { dest, tbs } = await restoreDirs();
    const res = await barman(['restore', 'pg', BACKUP_ID, dest, '--tablespace', `tbs1:${tbs}`]);
    assert.equal(res.code, 0, res.stderr + res.stdout);
    assert.match(res.stdout, /^Restore operation completed \(start time: .+, elapsed time: .+\)$/m);
    assert.match(res.stdout, /^Your PostgreSQL server has been successfully prepared for recovery!$/m);
    assert.match(res.stdout, /^postgresql\.conf line \d+: archive_command = false$/m);
    assert.equal(existsSync(path.join(dest, 'recovery.signal')), false);
    assert.equal(existsSync(path.join(dest, `backup_manifest.${BACKUP_ID}`)), true);
    assert.equal(existsSync(path.join(dest, '.barman-recover.info')), true);
    assert.equal(await fs.readlink(path.join(dest, 'pg_tblspc', String(tbsOid))), tbs);
    assert.ok((await fs.readdir(path.join(dest, 'pg_wal', 'archive_status'))).length > 0);

    await assertCompleteRestore(dest);
  });

  test('restore of a compressed tar-format backup (pg_basebackup -Ft -z)', async () => {
    const { dest, tbs } = await restoreDirs();
    const res = await barman(['recover', 'pg', 'latest', dest, '--tablespace', `tbs1:${tbs}`]);
    assert.equal(res.code, 0, res.stderr + res.stdout);
    assert.match(res.stdout, /using backup 20240301T130000/);
    // `recover` ends as Barman 3.4 does (`restore`, above, as Barman 3.17 does).
    assert.match(res.stdout, /\nRecovery completed \(start time: .+, elapsed time: .+\)\nYour PostgreSQL server has been successfully prepared for recovery!\n$/);
    assert.equal(existsSync(path.join(dest, `backup_manifest.${TAR_BACKUP_ID}`)), true);
    assert.equal(await fs.readlink(path.join(dest, 'pg_tblspc', String(tbsOid))), tbs);
    await assertCompleteRestore(dest);
  });

  test('point-in-time restore between two inserts', async () => {
    const { dest, tbs } = await restoreDirs();
    const res = await barman([
      '-f', 'json', 'restore', 'pg', BACKUP_ID, dest,
      '--tablespace', `tbs1:${tbs}`, '--target-time', targetTime, '--target-action', 'promote',
    ]);
    assert.equal(res.code, 0, res.stderr + res.stdout);
    const doc = JSON.parse(res.stdout) as { pg: { pitr: boolean; wal: { files: number; destination: string }; target: { time: string } } };
    assert.equal(doc.pg.pitr, true);
    assert.equal(doc.pg.wal.destination, path.join(dest, 'barman_wal'));
    assert.ok(doc.pg.wal.files > 0);
    assert.equal(existsSync(path.join(dest, 'recovery.signal')), true);
    const auto = await fs.readFile(path.join(dest, 'postgresql.auto.conf'), 'utf8');
    assert.match(auto, /^recovery_target_time = '.+'$/m);
    assert.match(auto, /^recovery_target_action = 'promote'$/m);

    const { cluster, outcome } = await startRecoveredCluster(dest);
    assert.equal(outcome, 'primary');
    assert.equal(await cluster.psql('SELECT count(*) FROM t'), '2000');
    assert.equal(await cluster.psql("SELECT count(*) FROM t WHERE v = 'third'"), '0');
    assert.equal(await cluster.psql('SELECT count(*) FROM t2'), '100');
    // recovery_end_command removed the staged WAL
    assert.equal(existsSync(path.join(dest, 'barman_wal')), false);
    await cluster.destroy();
  });

  test('point-in-time restore with --get-wal: PostgreSQL calls our barman get-wal', async () => {
    const { dest, tbs } = await restoreDirs();
    const res = await barman(['restore', 'pg', BACKUP_ID, dest, '--tablespace', `tbs1:${tbs}`, '--get-wal', '--target-time', targetTime]);
    assert.equal(res.code, 0, res.stderr + res.stdout);
    assert.match(res.stdout, /WARNING: 'get-wal' is in the specified 'recovery_options'/);
    assert.equal(existsSync(path.join(dest, 'barman_wal')), false);
    const auto = await fs.readFile(path.join(dest, 'postgresql.auto.conf'), 'utf8');
    assert.ok(auto.includes(`restore_command = '${process.execPath} ${BARMAN_JS} -c ${conf} get-wal -P pg %f > %p'`), auto);

    // the default target action is pause
    const { cluster, outcome } = await startRecoveredCluster(dest);
    assert.equal(outcome, 'paused');
    assert.equal(await cluster.psql('SELECT count(*) FROM t'), '2000');
    await cluster.destroy();
  });

  test('validation errors exit 1 and write nothing', async () => {
    const { dest } = await restoreDirs();
    const res = await barman(['restore', 'pg', BACKUP_ID, dest, '--target-action', 'promote']);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /ERROR: Can't enable recovery target action when PITR is not required/);
    assert.equal(existsSync(dest), false);
    const remote = await barman(['restore', 'pg', BACKUP_ID, dest, '--remote-ssh-command', 'false']);
    assert.equal(remote.code, 1);
    assert.match(remote.stderr, /Checking the destination on the remote host failed \(exit code 1\)/);
    assert.equal(existsSync(dest), false);
  });
});
