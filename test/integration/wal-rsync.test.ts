/**
 * The classic file-archiver path, end to end on real PostgreSQL 15: the server's archive_command
 * is `rsync -a -e "ssh -F CFG" %p barman@127.0.0.1:INCOMING/%f`, run as postgres through a real
 * sshd, landing in the server's incoming/ directory; barman (archiver = on, no streaming
 * archiver) moves it into wals/. Proves switch-wal --archive, the archiving lines of check, and a
 * point-in-time recovery that can only succeed with WAL that travelled this way.
 */
import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cleanupAll, PgCluster, quoteLiteral, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, listBackups, type BarmanEnv } from '../helpers/barman-env.js';
import { startSshd, type Sshd } from '../helpers/sshd.js';
import { BARMAN_USER, POSTGRES_USER, ensureBarmanUser, sleep } from '../helpers/system.js';

describe('archive_command = rsync over ssh into incoming/', { timeout: 240_000 }, () => {
  let sshd: Sshd;
  let pg: PgCluster;
  let env: BarmanEnv;
  let incoming = '';
  let walsDir = '';
  let backupId = '';
  const mark = { time: '', rows: 0 };

  const count = async (c: PgCluster) => Number(await c.psql('SELECT count(*) FROM t'));
  const insert = (n: number, tag: string) => pg.psql(`INSERT INTO t (tag) SELECT '${tag}' FROM generate_series(1, ${n})`);
  const archivedStat = async () => (await pg.psql("SELECT coalesce(last_archived_wal, '') || '|' || failed_count FROM pg_stat_archiver")).split('|');

  before(async () => {
    await ensureBarmanUser();
    sshd = await startSshd();
    const sshConfig = await sshd.clientConfigFor(POSTGRES_USER, [BARMAN_USER]);
    // archive_mode needs a restart, archive_command only a reload: set it once incoming/ exists.
    pg = await PgCluster.create({ archiveMode: true });
    await pg.psql('CREATE TABLE t (id serial PRIMARY KEY, tag text, at timestamptz DEFAULT clock_timestamp())');
    await insert(100, 'base');
    env = await createBarmanEnv(pg, {
      extra: { archiver: 'on', streaming_archiver: 'off', create_slot: 'manual' },
    });
    // check creates the server directories (incoming/ among them), as the operator's first run does.
    await env.run('check', env.server);
    incoming = path.join(env.home, env.server, 'incoming');
    walsDir = path.join(env.home, env.server, 'wals');
    assert.ok(existsSync(incoming), `${incoming} was not created by barman check`);
    // PostgreSQL runs this through /bin/sh: %p is relative to the data directory.
    const archiveCommand = `rsync -a -e "ssh -F ${sshConfig}" %p ${BARMAN_USER}@127.0.0.1:${incoming}/%f`;
    await pg.psql(`ALTER SYSTEM SET archive_command = ${quoteLiteral(archiveCommand)}; SELECT pg_reload_conf();`);
  });

  after(async () => {
    await cleanupAll();
    await sshd?.stop();
  });

  it('switch-wal --archive returns once the segment went through incoming/ into wals/', async () => {
    await insert(10, 'switch');
    const out = await env.ok('switch-wal', '--archive', '--archive-timeout', '90', env.server);
    const closed = /The WAL file ([0-9A-F]{24}) has been closed/.exec(out)?.[1];
    assert.ok(closed, `no closed WAL in: ${out}`);
    assert.match(out, new RegExp(`The WAL file ${closed} has been archived for server '${env.server}'`));
    // It is in the archive, and it came from PostgreSQL's archive_command (not from streaming).
    const hashDir = path.join(walsDir, closed.slice(0, 16));
    assert.ok(existsSync(path.join(hashDir, closed)), `${closed} not in ${hashDir}`);
    const [lastArchived, failed] = await archivedStat();
    assert.ok((lastArchived ?? '') >= closed, `pg_stat_archiver last_archived_wal ${lastArchived} < ${closed}`);
    assert.equal(failed, '0', `archive_command failed:\n${pg.logTail()}\n--- sshd ---\n${sshd.log().slice(-2000)}`);
    assert.ok(!existsSync(path.join(env.home, env.server, 'streaming', closed)));
    // The archiver took everything: nothing but possible rsync temp files (dot files) remains.
    const left = (await fs.readdir(incoming)).filter((n) => !n.startsWith('.'));
    assert.deepEqual(left, []);
  });

  it('check reports archive_mode, archive_command and continuous archiving OK', async () => {
    const r = await env.run('check', env.server);
    const lines = r.stdout.split('\n');
    for (const want of ['\tarchive_mode: OK', '\tarchive_command: OK', '\tcontinuous archiving: OK']) {
      assert.ok(lines.includes(want), `missing line ${JSON.stringify(want)} in:\n${r.stdout}${r.stderr}`);
    }
  });

  it('takes a backup whose WAL arrives by rsync', async () => {
    await env.ok('backup', '--wait', '--wait-timeout', '90', '--immediate-checkpoint', env.server);
    const list = await listBackups(env);
    assert.equal(list[0]?.status, 'DONE', JSON.stringify(list));
    backupId = list[0]?.backup_id ?? '';
  });

  it('recovers to a time with WAL archived by rsync, with the right rows', async () => {
    await insert(10, 'phase1');
    await sleep(1100);
    mark.time = await pg.psql("SELECT to_char(clock_timestamp(), 'YYYY-MM-DD HH24:MI:SS.US TZH:TZM')");
    mark.rows = await count(pg);
    await sleep(1100);
    await insert(10, 'phase2');
    await env.ok('switch-wal', '--archive', '--archive-timeout', '90', env.server);

    const dest = await env.newDir('restore-');
    await env.ok('recover', env.server, backupId, dest, '--target-time', mark.time, '--target-action', 'promote');
    // The recovered server must not archive into our incoming/ (recover disables archive_command,
    // this only makes the test independent of that).
    const { cluster, outcome } = await startRecoveredCluster(dest, undefined, { extraConf: { archive_mode: 'off' } });
    try {
      assert.ok(['primary', 'paused'].includes(outcome), `outcome ${outcome}`);
      assert.equal(await count(cluster), mark.rows);
      assert.equal(await cluster.psql("SELECT count(*) FROM t WHERE tag = 'phase2'"), '0');
      assert.equal(await cluster.psql("SELECT count(*) FROM t WHERE tag = 'phase1'"), '10');
    } finally {
      await cluster.destroy();
    }
  });
});
