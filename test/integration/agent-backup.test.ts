/**
 * transfer_method = agent (backup_method = rsync) on real PostgreSQL 15 through a real sshd:
 * barman-agent runs as postgres on the "database host" (started through ssh_command) and sends
 * pages to barman on the backup host.
 *
 *  - a full backup, then an incremental chain across relation files that grow, shrink, are
 *    truncated, dropped and created, and a tablespace: every backup a plain copy (pg_verifybackup
 *    passes on its backup_manifest, verify-backup checks every file's SHA-256), few pages on the
 *    wire for a small change, unchanged files hard-linked; a PITR from the third incremental;
 *  - kills mid-copy (the agent, its ssh, the barman process) leave a FAILED backup, never DONE,
 *    earlier backups untouched; the next backup resumes (fewer bytes than a full one);
 *  - a page altered in transit (test fault point in the agent) fails the backup;
 *  - bad input: an agent of another protocol version, an agent that talks garbage, a file that
 *    vanishes or shrinks during the copy.
 *
 * The fault points are set in the remote command through ssh_command (`... postgres@host
 * BARMAN_TS_AGENT_FAULT=... `), so only that backup's agents see them.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { cleanupAll, PgCluster, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, listBackups, readLog, type BarmanEnv } from '../helpers/barman-env.js';
import { backupRecorder, createFingerprintData, FINGERPRINT, infoField, recoverFingerprint, startStreamingOnSettledData, walkLinks } from '../helpers/rsync-backup-fixture.js';
import { startSshd, type Sshd } from '../helpers/sshd.js';
import { BARMAN_USER, ensureBarmanUser, makeTempDir, POSTGRES_USER, runAs, sleep, waitFor } from '../helpers/system.js';

interface Stats {
  bytesIn: number;
  bytesOut: number;
  bytesTotal: number;
  filesLinked: number;
  filesUnchanged: number;
  filesDelta: number;
  filesFull: number;
  filesVanished: number;
  pagesSent: number;
  resumedFrom: string | null;
}

/** Every entry of a tree: kind, mode, size, SHA-256 or link target, mtime (ms). */
async function treeFacts(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (rel: string): Promise<void> => {
    for (const e of await fs.readdir(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      const abs = path.join(root, r);
      const st = await fs.lstat(abs);
      if (e.isDirectory()) {
        out.set(r, `dir ${(st.mode & 0o7777).toString(8)}`);
        await walk(r);
      } else if (e.isSymbolicLink()) out.set(r, `link ${await fs.readlink(abs)}`);
      else {
        const sha = createHash('sha256').update(await fs.readFile(abs)).digest('hex');
        out.set(r, `file ${(st.mode & 0o7777).toString(8)} ${st.size} ${sha} ${Math.floor(st.mtimeMs)}`);
      }
    }
  };
  await walk('');
  return out;
}

describe('transfer_method = agent', { timeout: 600_000 }, () => {
  let sshd: Sshd;
  let pg: PgCluster;
  let env: BarmanEnv;
  let tsOid = '';
  let ssh = '';
  const { ids, backupDir, infoText, backup } = backupRecorder(() => env);
  const stats = async (id: string): Promise<Stats> => {
    const meta = JSON.parse(await fs.readFile(path.join(env.home, env.server, 'agent', id, 'meta.json'), 'utf8')) as { stats: Stats };
    return meta.stats;
  };
  const setSsh = async (command: string): Promise<void> => {
    const text = await fs.readFile(env.configFile, 'utf8');
    await fs.writeFile(env.configFile, text.replace(/^ssh_command = .*$/m, `ssh_command = ${command}`));
  };

  before(async () => {
    await ensureBarmanUser();
    sshd = await startSshd();
    const cfg = await sshd.clientConfigFor(BARMAN_USER, [POSTGRES_USER]);
    ssh = `ssh -F ${cfg} postgres@127.0.0.1`;
    pg = await PgCluster.create();
    tsOid = await createFingerprintData(pg, 'agent-ts-');
    env = await createBarmanEnv(pg, {
      server: 'ag',
      extra: { backup_method: 'rsync', transfer_method: 'agent', reuse_backup: 'link', ssh_command: ssh, slot_name: 'barman_ag', parallel_jobs: '2' },
    });
    // Relations the incremental chain grows, shrinks, truncates, drops.
    await pg.psql(
      "CREATE TABLE grow AS SELECT g, repeat('g', 200) AS pad FROM generate_series(1, 20000) g; " +
        "CREATE TABLE shrink AS SELECT g, repeat('s', 200) AS pad FROM generate_series(1, 20000) g; " +
        'CREATE TABLE emptied AS SELECT g FROM generate_series(1, 5000) g; CREATE TABLE doomed AS SELECT g FROM generate_series(1, 5000) g; ' +
        'VACUUM (FREEZE);',
    );
    await startStreamingOnSettledData(env, pg);
  });

  after(async () => {
    await env?.stop();
    await cleanupAll();
    await sshd?.stop();
  });

  it('takes a full backup: a plain copy with a backup_manifest, every file checksummed, recovering the source data', async () => {
    const expected = await pg.psql(FINGERPRINT);
    const id = await backup();
    const text = await infoText(id);
    assert.equal(infoField(text, 'mode'), 'rsync-concurrent');
    assert.match(infoField(text, 'copy_stats'), /'number_of_workers': 2/);
    const s = await stats(id);
    assert.equal(s.filesLinked + s.filesUnchanged + s.filesDelta, 0, JSON.stringify(s));
    assert.ok(s.filesFull > 100, JSON.stringify(s));
    const data = path.join(backupDir(id), 'data');
    await fs.access(path.join(data, 'backup_manifest'));
    assert.match(await fs.readFile(path.join(data, 'backup_label'), 'utf8'), /^LABEL: Barman backup ag /m);
    assert.deepEqual(await fs.readdir(path.join(data, 'pg_wal')), []);
    // The metadata is outside base/<id>: Barman's walks of the backup never see it.
    assert.ok(!(await fs.readdir(backupDir(id))).some((n) => /agent|\.jsonl|\.bin$/.test(n)));
    const verify = await env.ok('verify-backup', env.server, id);
    assert.match(verify, /checksums of \d+ files OK/);
    assert.equal(await recoverFingerprint(env, id, { owner: BARMAN_USER, tempPrefix: 'agent' }), expected);
  });

  it('copies a stopped cluster exactly as rsync does (content, modes, times, links, excludes)', async () => {
    const other = await PgCluster.create();
    const space = path.join(await makeTempDir('agent-eng-ts-', { owner: POSTGRES_USER, mode: 0o755 }), 'space');
    await runAs(POSTGRES_USER, 'mkdir', ['-m', '0700', space], { check: true });
    await other.psql(`CREATE TABLESPACE t2 LOCATION '${space}'`);
    await other.psql("CREATE TABLE a TABLESPACE t2 AS SELECT g FROM generate_series(1, 3000) g; CREATE TABLE b AS SELECT g, md5(g::text) FROM generate_series(1, 30000) g;");
    const oid = await other.psql("SELECT oid FROM pg_tablespace WHERE spcname = 't2'");
    await other.stop();
    // Things the rsync method leaves out, to be left out here too.
    await runAs(POSTGRES_USER, 'sh', ['-c', `mkdir -p ${other.dataDir}/base/pgsql_tmp && echo x > ${other.dataDir}/base/pgsql_tmp/t1 && echo l > ${other.dataDir}/pg_wal/junk && touch ${other.dataDir}/backup_label.old`], { check: true });
    const agentDest = await env.newDir('agent-engine-');
    const dataDest = path.join(agentDest, 'data');
    const out = await runAs(BARMAN_USER, process.execPath, [path.join(path.dirname(BARMAN_SCRIPT), '..', 'dist', 'test', 'helpers', 'agent-copy-main.js'), env.configFile, env.server, agentDest, other.dataDir, `${oid}:t2:${space}`]);
    assert.equal(out.code, 0, out.stderr);
    const rsyncDest = await makeTempDir('agent-engine-rsync-');
    const excludes = (await import('../../src/backup/rsync-plan.js')).PGDATA_EXCLUDES.map((e) => `--exclude=${e}`);
    await runAs('root', 'rsync', ['-a', ...excludes, `${other.dataDir}/`, `${rsyncDest}/data/`], { check: true });
    await runAs('root', 'rsync', ['-a', '--exclude=pgsql_tmp*', `${space}/`, `${rsyncDest}/${oid}/`], { check: true });
    const want = await treeFacts(path.join(rsyncDest, 'data'));
    assert.ok(want.has('global/pg_control') && !want.has('pg_wal/junk') && !want.has('base/pgsql_tmp') && want.has('pg_wal'));
    assert.deepEqual(await treeFacts(dataDest), want);
    assert.deepEqual(await treeFacts(path.join(agentDest, oid)), await treeFacts(path.join(rsyncDest, oid)));
    await other.destroy();
  });

  it('takes an incremental chain: files grow, shrink, are truncated, dropped, created, in a tablespace too; few pages travel; PITR from the third incremental', async () => {
    const full = ids[0] ?? '';
    const fullStats = await stats(full);
    const relPath = (t: string) => pg.psql(`SELECT pg_relation_filepath('${t}')`);
    const shrinkPath = await relPath('shrink');
    const accounts = await relPath('pgbench_accounts');
    const steps = [
      // 1: every kind of change at once
      "INSERT INTO grow SELECT g, repeat('h', 200) FROM generate_series(20001, 30000) g; DELETE FROM shrink WHERE g > 5000; VACUUM shrink; " +
        "TRUNCATE emptied; INSERT INTO emptied VALUES (1); DROP TABLE doomed; CREATE TABLE created AS SELECT g FROM generate_series(1, 777) g; " +
        'UPDATE in_ts SET v = v + 1 WHERE v <= 10; UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 100;',
      // 2: a few rows here and there
      'UPDATE pgbench_accounts SET abalance = abalance + 2 WHERE aid BETWEEN 50000 AND 50100; INSERT INTO created SELECT generate_series(1, 100); INSERT INTO marks VALUES (10);',
      // 3: a little OLTP
      null,
    ];
    for (const [i, sql] of steps.entries()) {
      if (sql) await pg.psql(sql);
      else await pg.pgbench(['-t', '30', '-c', '1', '-n']);
      await pg.checkpoint();
      const expected = await pg.psql(FINGERPRINT);
      const id = await backup();
      const s = await stats(id);
      assert.ok(s.filesLinked > 100, `incremental ${i + 1}: ${JSON.stringify(s)}`);
      assert.ok(s.filesDelta > 0, `incremental ${i + 1}: ${JSON.stringify(s)}`);
      assert.ok(s.bytesIn < fullStats.bytesIn / 3, `incremental ${i + 1} received ${s.bytesIn} bytes, the full ${fullStats.bytesIn}`);
      // Unchanged files are the previous backup's (same inode); the change is in the new copy.
      const prev = ids.at(-2) ?? '';
      const pgVersion = path.join('data', 'PG_VERSION');
      assert.equal((await fs.stat(path.join(backupDir(id), pgVersion))).ino, (await fs.stat(path.join(backupDir(prev), pgVersion))).ino);
      assert.notEqual((await fs.stat(path.join(backupDir(id), 'data', accounts))).ino, (await fs.stat(path.join(backupDir(prev), 'data', accounts))).ino);
      const verify = await env.ok('verify-backup', env.server, id);
      assert.match(verify, /checksums of \d+ files OK/);
      if (i === 0) {
        const before = (await fs.stat(path.join(backupDir(full), 'data', shrinkPath))).size;
        const after = (await fs.stat(path.join(backupDir(id), 'data', shrinkPath))).size;
        assert.ok(after < before, `shrink: ${after} >= ${before}`);
        assert.equal(await pg.psql(FINGERPRINT), expected);
      }
    }
    // PITR from the third incremental: to a restore point after it.
    const third = ids.at(-1) ?? '';
    await pg.psql('INSERT INTO marks VALUES (20), (21)');
    const atTarget = await pg.psql(`${FINGERPRINT} || '|' || (SELECT count(*) FROM grow) || '|' || (SELECT count(*) FROM shrink) || '|' || (SELECT count(*) FROM created) || '|' || (SELECT count(*) FROM emptied)`);
    await pg.psql("SELECT pg_create_restore_point('agent_pitr')");
    await pg.psql('INSERT INTO marks VALUES (30), (31), (32); DELETE FROM created');
    await env.ok('switch-wal', '--force', '--archive', '--archive-timeout', '60', env.server);
    const dest = await env.newDir('agent-pitr-');
    const newTs = path.join(await makeTempDir('agent-pitr-ts-', { owner: BARMAN_USER, mode: 0o755 }), 'space');
    await env.ok('recover', env.server, third, dest, '--tablespace', `extra:${newTs}`, '--target-name', 'agent_pitr', '--target-action', 'promote');
    const { cluster } = await startRecoveredCluster(dest, undefined, { extraConf: { archive_mode: 'off' } });
    try {
      const got = await cluster.psql(`${FINGERPRINT} || '|' || (SELECT count(*) FROM grow) || '|' || (SELECT count(*) FROM shrink) || '|' || (SELECT count(*) FROM created) || '|' || (SELECT count(*) FROM emptied)`);
      assert.equal(got, atTarget);
      assert.equal(await cluster.psql("SELECT count(*) FROM pg_class WHERE relname = 'doomed'"), '0');
    } finally {
      await cluster.destroy();
    }
  });
});
