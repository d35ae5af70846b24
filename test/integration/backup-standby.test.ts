/**
 * Backups from a real streaming hot standby (PostgreSQL 15): barman's conninfo and
 * streaming_conninfo point at the standby, primary_conninfo at the primary, and the WAL comes
 * from the standby (receive-wal with a replication slot created on the standby). The standby
 * checks of `barman check`, with the primary up and down; a postgres-method and an rsync-method
 * backup (ssh_command through a real sshd, as postgres) that reach DONE once the end WAL
 * segment is completed by a WAL switch on the primary, and recover to the rows written on the
 * primary; and the refusals: a failing check stops `backup`, and a standby without
 * primary_conninfo is refused with one line.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cleanupAll, PgCluster, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, listBackups, readLog, startStreaming, type BarmanEnv } from '../helpers/barman-env.js';
import { startStandby, waitStandbyCaughtUp, type Standby } from '../helpers/standby.js';
import { startSshd, type Sshd } from '../helpers/sshd.js';
import { BARMAN_USER, ensureBarmanUser, POSTGRES_USER } from '../helpers/system.js';

const STANDBY_LINES_OK = ['\tPostgreSQL server is standby: OK', '\tPrimary server is not a standby: OK', '\tPrimary and standby have same system ID: OK'];
const FINGERPRINT = "SELECT count(*) || '|' || coalesce(sum(v), 0) FROM t";

describe('backup from a streaming standby', { timeout: 300_000 }, () => {
  let primary: PgCluster;
  let standby: Standby;
  let sshd: Sshd;
  let sshConfig = '';
  let env: BarmanEnv;

  const field = (text: string, key: string): string => new RegExp(`^${key}=(.*)$`, 'm').exec(text)?.[1] ?? '';
  const info = async (id: string): Promise<string> =>
    fs.readFile(path.join(env.home, env.server, 'base', id, 'backup.info'), 'utf8').catch(() => fs.readFile(path.join(env.home, env.server, 'meta', `${id}-backup.info`), 'utf8'));

  /** Rows written on the primary, replayed by the standby, and a fresh primary checkpoint (the standby's next restartpoint). */
  const writeOnPrimary = async (from: number, to: number): Promise<string> => {
    await primary.psql(`INSERT INTO t SELECT g FROM generate_series(${from}, ${to}) g`);
    await primary.checkpoint();
    await waitStandbyCaughtUp(primary, standby);
    return primary.psql(FINGERPRINT);
  };

  const backupDone = async (): Promise<string> => {
    const before = new Set((await listBackups(env)).map((b) => b.backup_id));
    const out = await env.ok('backup', '--wait', '--wait-timeout', '120', '--immediate-checkpoint', env.server);
    assert.match(out, /Backing up from a standby/);
    const created = (await listBackups(env)).filter((b) => !before.has(b.backup_id));
    assert.equal(created.length, 1, JSON.stringify(created));
    assert.equal(created[0]?.status, 'DONE');
    return created[0]?.backup_id ?? '';
  };

  const recoverFingerprint = async (id: string): Promise<string> => {
    const dest = await env.newDir('standby-restore-');
    await env.ok('recover', env.server, id, dest);
    // The copy comes from the standby: nothing of its replication set-up may make the
    // recovered server a standby again.
    await assert.rejects(fs.access(path.join(dest, 'standby.signal')));
    const { cluster, outcome } = await startRecoveredCluster(dest, undefined, { extraConf: { archive_mode: 'off' } });
    try {
      assert.equal(outcome, 'primary');
      return await cluster.psql(FINGERPRINT);
    } finally {
      await cluster.destroy();
    }
  };

  before(async () => {
    await ensureBarmanUser();
    primary = await PgCluster.create();
    await primary.psql('CREATE TABLE t (v int)');
    standby = await startStandby(primary);
    sshd = await startSshd();
    // barman logs in as postgres, the owner of the standby's data directory.
    sshConfig = await sshd.clientConfigFor(BARMAN_USER, [POSTGRES_USER]);
    env = await createBarmanEnv(standby, { server: 'sb', extra: { primary_conninfo: primary.conninfo, slot_name: 'barman_sb' } });
    await startStreaming(env, 120_000, primary);
  });

  after(async () => {
    await env?.stop();
    await cleanupAll();
    await sshd?.stop();
  });

  it('check shows the standby checks OK; the receive-wal slot lives on the standby', async () => {
    const r = await env.run('check', env.server);
    const lines = r.stdout.split('\n');
    for (const l of STANDBY_LINES_OK) assert.ok(lines.includes(l), `${l} missing in:\n${r.stdout}`);
    // In Barman's order: after wal_level, before the replication slot.
    const at = (name: string) => lines.findIndex((l) => l.startsWith(`\t${name}:`));
    assert.ok(at('wal_level') < at('PostgreSQL server is standby') && at('Primary and standby have same system ID') < at('replication slot'), r.stdout);
    assert.equal(await standby.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'barman_sb'"), '1');
    assert.equal(await primary.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'barman_sb'"), '0');
  });

  it('with the primary stopped the primary checks fail, and backup refuses to start', async () => {
    await primary.stop();
    try {
      const r = await env.run('check', env.server);
      assert.equal(r.code, 1);
      const lines = r.stdout.split('\n');
      assert.ok(lines.includes('\tPostgreSQL server is standby: OK'), r.stdout);
      assert.ok(lines.some((l) => l.startsWith('\tPrimary server is not a standby: FAILED (cannot connect to the primary server')), r.stdout);
      assert.ok(lines.some((l) => l.startsWith('\tPrimary and standby have same system ID: FAILED (')), r.stdout);
      const count = (await listBackups(env)).length;
      const b = await env.run('backup', env.server);
      assert.equal(b.code, 1, b.stderr);
      const err = b.stderr.trim().split('\n');
      assert.equal(err[0], "ERROR: Impossible to start the backup. Check the log for more details, or run 'barman check sb'");
      assert.ok(err.some((l) => l.startsWith('\tPrimary server is not a standby: FAILED')), b.stderr);
      assert.equal((await listBackups(env)).length, count, 'nothing recorded');
    } finally {
      await primary.start();
    }
  });

  it('postgres method: pg_basebackup from the standby reaches DONE through the WAL switch on the primary, and recovers', async () => {
    const expected = await writeOnPrimary(1, 1000);
    const id = await backupDone();
    const text = await info(id);
    assert.equal(field(text, 'mode'), 'postgres');
    assert.equal(field(text, 'timeline'), '1');
    assert.equal(field(text, 'systemid'), await primary.psql('SELECT system_identifier FROM pg_control_system()'));
    assert.match(field(text, 'backup_label'), /BACKUP FROM: standby/);
    assert.match(await readLog(env), new RegExp(`backup ${id} of sb: WAL switched on the primary`));
    assert.equal(await recoverFingerprint(id), expected);
  });

  it('rsync method: pg_backup_start/stop on the standby, rsync over ssh as postgres, DONE, and recovers', async () => {
    const text = await fs.readFile(env.configFile, 'utf8');
    await fs.writeFile(env.configFile, `${text.replace('backup_method = postgres', 'backup_method = rsync')}ssh_command = ssh -F ${sshConfig} postgres@127.0.0.1\n`);
    const expected = await writeOnPrimary(1001, 2500);
    const id = await backupDone();
    const meta = await info(id);
    assert.equal(field(meta, 'mode'), 'rsync-concurrent');
    assert.equal(field(meta, 'timeline'), '1');
    assert.match(field(meta, 'backup_label'), /BACKUP FROM: standby/);
    assert.equal(field(meta, 'pgdata'), standby.dataDir);
    assert.equal(await recoverFingerprint(id), expected);
  });

  it('without primary_conninfo a backup from the standby is refused with one line, recording nothing', async () => {
    const text = await fs.readFile(env.configFile, 'utf8');
    await fs.writeFile(env.configFile, text.replace(/^primary_conninfo = .*\n/m, ''));
    const count = (await listBackups(env)).length;
    const r = await env.run('backup', env.server);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /^ERROR: .*points to a standby.*set primary_conninfo/);
    assert.equal((await listBackups(env)).length, count);
  });
});
