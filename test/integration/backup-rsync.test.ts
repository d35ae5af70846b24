/**
 * backup_method = rsync on real PostgreSQL 15, through a real sshd (barman logs in as postgres,
 * as `ssh_command = ssh postgres@pg` does in production): the concurrent backup API with 1 and 4
 * copy jobs (each recovered and compared with the source), a tablespace in base/<id>/<oid>,
 * reuse_backup = link sharing unchanged files with the previous backup, and a copy killed
 * mid-way leaving a FAILED backup, a free lock and the earlier backups as they were.
 * BARMAN_TS_RANGED_MIN_BYTES is lowered to 4 MiB so that backups with several jobs copy the big
 * tables (pgbench_accounts, big) as ranges read in parallel (src/backup/ranged-copy.ts): their
 * mode, mtime and hard-linking by the next backup are checked, and a dropped ssh session of a
 * ranged read fails the backup like a dropped rsync. Keepalive queries run on the session that
 * holds the backup open, and terminating that session mid-copy fails the backup within seconds.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { cleanupAll, PgCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, listBackups, readLog, type BarmanEnv } from '../helpers/barman-env.js';
import { backupRecorder, createFingerprintData, startStreamingOnSettledData, FINGERPRINT, infoField, recoverFingerprint, walkLinks } from '../helpers/rsync-backup-fixture.js';
import { startSshd, type Sshd } from '../helpers/sshd.js';
import { BARMAN_USER, ensureBarmanUser, POSTGRES_USER, runAs, sleep, waitFor } from '../helpers/system.js';

/**
 * `barman backup ARGS` started in the background as the barman user; resolves once the backup
 * is recorded as STARTED (the copy is then under way and can be interrupted).
 */
async function backupInBackground(env: BarmanEnv, args: readonly string[]) {
  const child = spawn('runuser', ['-u', BARMAN_USER, '--', process.execPath, BARMAN_SCRIPT, '-c', env.configFile, 'backup', ...args, env.server], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? -1)));
  const started = await waitFor(async () => (await listBackups(env)).find((b) => b.status === 'STARTED'), {
    timeoutMs: 60_000,
    intervalMs: 100,
    what: 'backup STARTED',
  });
  return { started, exited, stderr: () => stderr };
}

/** PIDs of the barman user's processes whose command line matches `pattern`, once there are any. */
function barmanProcesses(pattern: string, what: string, intervalMs: number): Promise<string[]> {
  return waitFor(
    async () => {
      const r = await runAs('root', 'pgrep', ['-u', BARMAN_USER, '-f', '--', pattern]);
      const found = r.stdout.split('\n').filter((l) => l.trim() !== '');
      return found.length > 0 ? found : undefined;
    },
    { timeoutMs: 60_000, intervalMs, what },
  );
}

describe('backup_method = rsync over ssh', { timeout: 600_000 }, () => {
  let sshd: Sshd;
  let pg: PgCluster;
  let env: BarmanEnv;
  let tsOid = '';
  let sshConfig = '';
  /** base/<db>/<relfilenode> of table big (~24 MiB, frozen: unchanged after the setup). */
  let bigPath = '';
  const { ids, backupDir, infoText, backup } = backupRecorder(() => env);
  const recover = (id: string) => recoverFingerprint(env, id, { owner: BARMAN_USER, tempPrefix: 'rsync' });

  before(async () => {
    await ensureBarmanUser();
    sshd = await startSshd();
    // The barman user logs in as postgres: rsync reads PGDATA with the server's owner's rights.
    sshConfig = await sshd.clientConfigFor(BARMAN_USER, [POSTGRES_USER]);
    // Inherited by every barman run (runuser keeps the environment).
    process.env.BARMAN_TS_RANGED_MIN_BYTES = String(4 * 1024 * 1024);
    pg = await PgCluster.create();
    tsOid = await createFingerprintData(pg, 'rsync-ts-');
    await pg.psql("CREATE TABLE big AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 100000) g; VACUUM (FREEZE) big;");
    bigPath = await pg.psql("SELECT pg_relation_filepath('big')");
    env = await createBarmanEnv(pg, {
      server: 'rs',
      extra: { backup_method: 'rsync', ssh_command: `ssh -F ${sshConfig} postgres@127.0.0.1`, slot_name: 'barman_rs' },
    });
    await startStreamingOnSettledData(env, pg);
  });

  after(async () => {
    await env?.stop();
    await cleanupAll();
    await sshd?.stop();
  });

  it('backs up with 1 and with 4 jobs; both recover to the source data, the tablespace in base/<id>/<oid>', async () => {
    const expected = await pg.psql(FINGERPRINT);
    const one = await backup('-j', '1');
    const four = await backup('--jobs', '4');
    for (const id of [one, four]) {
      const text = await infoText(id);
      assert.equal(infoField(text, 'mode'), 'rsync-concurrent');
      assert.match(infoField(text, 'backup_label'), /START WAL LOCATION/);
      assert.match(infoField(text, 'tablespaces'), new RegExp(`\\('extra', ${tsOid}, `));
      assert.match(infoField(text, 'copy_stats'), /'copy_time': [\d.]+, 'total_time': [\d.]+, 'number_of_workers': \d, 'analysis_time'/);
      assert.equal(infoField(text, 'deduplicated_size'), infoField(text, 'size'), 'no reuse: nothing shared');
      const data = path.join(backupDir(id), 'data');
      assert.match(await fs.readFile(path.join(data, 'backup_label'), 'utf8'), /^LABEL: Barman backup rs /m);
      assert.match(await fs.readFile(path.join(data, 'tablespace_map'), 'utf8'), new RegExp(`^${tsOid} `));
      await fs.access(path.join(data, 'PG_VERSION'));
      await assert.rejects(fs.access(path.join(data, 'postmaster.pid')));
      assert.deepEqual(await fs.readdir(path.join(data, 'pg_wal')), []);
      const tsContent = await fs.readdir(path.join(backupDir(id), tsOid));
      assert.ok(tsContent.some((n) => n.startsWith('PG_15_')), tsContent.join(','));
    }
    assert.match(infoField(await infoText(four), 'copy_stats'), /'number_of_workers': 4/);
    // With 4 jobs the big tables were read as ranges; the copies look like rsync's: 0600, same mtime.
    assert.match(await readLog(env), /pgdata: .*, 2 big files in 8 ranged reads/);
    const srcStat = await fs.stat(path.join(pg.dataDir, bigPath), { bigint: true });
    for (const id of [one, four]) {
      const st = await fs.stat(path.join(backupDir(id), 'data', bigPath), { bigint: true });
      assert.equal(st.size, srcStat.size, id);
      assert.equal(Number(st.mode & 0o777n), 0o600, id);
      assert.equal(st.mtimeNs, srcStat.mtimeNs, `${id}: mtime of the copy`);
    }
    assert.ok((await fs.readFile(path.join(backupDir(four), 'data', bigPath))).equals(await fs.readFile(path.join(pg.dataDir, bigPath))));
    assert.equal(await recover(one), expected);
    assert.equal(await recover(four), expected);
  });

  it('reuse_backup = link shares the unchanged files with the previous backup and recovers the change', async (t) => {
    const previous = ids.at(-1) ?? '';
    await pg.psql('UPDATE pgbench_branches SET bbalance = bbalance + 7; INSERT INTO marks VALUES (2), (3);');
    await pg.pgbench(['-t', '20', '-c', '1', '-n']);
    const expected = await pg.psql(FINGERPRINT);
    const id = await backup('--reuse-backup', '-j', '2');
    const text = await infoText(id);
    const size = Number(infoField(text, 'size'));
    const dedup = Number(infoField(text, 'deduplicated_size'));
    const walk = await walkLinks(path.join(backupDir(id), 'data'));
    const tsWalk = await walkLinks(path.join(backupDir(id), tsOid));
    t.diagnostic(`data: ${walk.linked}/${walk.files} files linked, tablespace: ${tsWalk.linked}/${tsWalk.files}, deduplicated_size ${dedup} of ${size}`);
    for (const line of (await readLog(env)).split('\n').filter((l) => /rsync jobs$/.test(l)).slice(-2)) t.diagnostic(line);
    assert.ok(walk.linked > walk.files / 2, `only ${walk.linked} of ${walk.files} files are hard links`);
    assert.ok(tsWalk.linked > 0, 'the tablespace files are linked too');
    assert.ok(dedup < size / 2, `deduplicated_size ${dedup} vs size ${size}`);
    // The linked files are those of the previous backup (same inode).
    const pgVersion = path.join('data', 'PG_VERSION');
    assert.equal((await fs.stat(path.join(backupDir(id), pgVersion))).ino, (await fs.stat(path.join(backupDir(previous), pgVersion))).ino);
    // The big file, copied as ranges by the previous backup (-j 4), is shared as well.
    const big = path.join('data', bigPath);
    const bigStat = await fs.stat(path.join(backupDir(id), big));
    assert.equal(bigStat.ino, (await fs.stat(path.join(backupDir(previous), big))).ino, 'the ranged copy is hard-linked');
    assert.ok(bigStat.nlink >= 2);
    assert.equal(await recover(id), expected);
  });

  it('a copy killed mid-way leaves the backup FAILED, the lock free and the previous backups untouched', async () => {
    const before = await listBackups(env);
    const last = ids.at(-1) ?? '';
    const lastInfo = await infoText(last);
    const lastWalk = await walkLinks(backupDir(last));
    const { started, exited, stderr } = await backupInBackground(env, ['--bwlimit', '500', '-j', '2', '--reuse-backup', 'off']);
    // The copy workers: rsync processes writing into the new backup's data directory.
    const target = path.join(backupDir(started.backup_id), 'data');
    const pids = await barmanProcesses(`--files-from=.* ${target}/`, 'rsync copy workers', 100);
    await sleep(1000);
    for (const pid of pids) await runAs('root', 'kill', ['-KILL', pid]);
    const code = await exited;
    assert.equal(code, 1, stderr());
    const failed = (await listBackups(env)).find((b) => b.backup_id === started.backup_id);
    assert.equal(failed?.status, 'FAILED');
    assert.match(infoField(await infoText(started.backup_id), 'error'), /failure copying files/);
    // Earlier backups as they were.
    assert.deepEqual((await listBackups(env)).filter((b) => b.backup_id !== started.backup_id), before);
    assert.equal(await infoText(last), lastInfo);
    assert.deepEqual(await walkLinks(backupDir(last)), lastWalk);
    // The lock was released: the next backup runs, and reuses the last DONE backup, not the failed one.
    const next = await backup('--reuse-backup', 'link');
    assert.ok(next > started.backup_id);
    const w = await walkLinks(path.join(backupDir(next), 'data'));
    assert.ok(w.linked > w.files / 2, `${w.linked} of ${w.files} linked`);
  });

  it('a dropped ssh session of a ranged read leaves the backup FAILED, the lock free and the previous backups untouched', async () => {
    const before = await listBackups(env);
    const last = ids.at(-1) ?? '';
    const lastInfo = await infoText(last);
    const lastWalk = await walkLinks(backupDir(last));
    // The ranged reads (dd through ssh) are held back a few seconds, long enough to cut their ssh;
    // pipefail: the wrapper fails as its ssh does.
    const wrapper = path.join(env.root, 'slow-dd-ssh');
    const ssh = `ssh -F ${sshConfig} postgres@127.0.0.1`;
    await fs.writeFile(
      wrapper,
      `#!/bin/bash\nset -o pipefail\ncase "$*" in\n  *"dd if="*) ${ssh} "$@" | { sleep 5; exec cat; } ;;\n  *) exec ${ssh} "$@" ;;\nesac\n`,
      { mode: 0o755 },
    );
    const original = await fs.readFile(env.configFile, 'utf8');
    await fs.writeFile(env.configFile, original.replace(/^ssh_command = .*$/m, `ssh_command = ${wrapper}`));
    try {
      const { started, exited, stderr } = await backupInBackground(env, ['-j', '2', '--reuse-backup', 'off']);
      // The ssh clients of the ranged reads.
      const pids = await barmanProcesses(`^ssh .* dd if=${pg.dataDir}/`, 'ranged reads through ssh', 50);
      for (const pid of pids) await runAs('root', 'kill', ['-KILL', pid]);
      const code = await exited;
      assert.equal(code, 1, stderr());
      const failed = (await listBackups(env)).find((b) => b.backup_id === started.backup_id);
      assert.equal(failed?.status, 'FAILED');
      assert.match(infoField(await infoText(started.backup_id), 'error'), /failure copying files \(ranged copy of .* failed with exit code/);
      assert.deepEqual((await listBackups(env)).filter((b) => b.backup_id !== started.backup_id), before);
      assert.equal(await infoText(last), lastInfo);
      assert.deepEqual(await walkLinks(backupDir(last)), lastWalk);
      // No reader left behind.
      const left = await runAs('root', 'pgrep', ['-u', BARMAN_USER, '-f', '--', `dd if=${pg.dataDir}/`]);
      assert.equal(left.stdout.trim(), '', 'ranged readers still running');
    } finally {
      await fs.writeFile(env.configFile, original);
    }
    // The lock was released: the next backup runs.
    const next = await backup('-j', '2', '--reuse-backup', 'off');
    assert.ok(next > last);
  });

  // Regression: when the session is killed while a keepalive query is on its way, the server's
  // reset reaches libuv as a poll error that the libpq binding ignored, and the query waited for
  // the 60 s keepalive deadline (about one run in three); PgConnection.query now makes pg-native
  // read once a second while it waits.
  it('keepalive queries run on the session holding the backup; losing it mid-copy fails the backup at once', async (t) => {
    const before = await listBackups(env);
    // At 300 KB/s the copy would take minutes.
    const { started, exited, stderr } = await backupInBackground(env, ['--bwlimit', '300', '-j', '1', '--reuse-backup', 'off', '--keepalive-interval', '1']);
    // The backup's session, idle between keepalive queries (its last query is the keepalive's).
    const pid = await waitFor(
      async () => (await pg.psql("SELECT pid FROM pg_stat_activity WHERE application_name = 'barman' AND backend_type = 'client backend' AND query = 'SELECT 1'")) || undefined,
      { timeoutMs: 60_000, intervalMs: 200, what: 'a keepalive query on the backup session' },
    );
    const target = path.join(backupDir(started.backup_id), 'data');
    await barmanProcesses(`--files-from=.* ${target}/`, 'rsync copy workers', 100);
    const t0 = Date.now();
    assert.equal(await pg.psql(`SELECT pg_terminate_backend(${pid})`), 't');
    const code = await exited;
    const seconds = (Date.now() - t0) / 1000;
    t.diagnostic(`noticed after ${seconds} s`);
    assert.equal(code, 1, stderr());
    assert.ok(seconds < 30, `the backup took ${seconds} s to notice the lost session`);
    assert.match(stderr(), /connection to PostgreSQL lost/);
    const failed = (await listBackups(env)).find((b) => b.backup_id === started.backup_id);
    assert.equal(failed?.status, 'FAILED');
    assert.match(infoField(await infoText(started.backup_id), 'error'), /connection to PostgreSQL lost/);
    assert.deepEqual((await listBackups(env)).filter((b) => b.backup_id !== started.backup_id), before);
    const left = await runAs('root', 'pgrep', ['-u', BARMAN_USER, '-f', '--', `--files-from=.* ${target}/`]);
    assert.equal(left.stdout.trim(), '', 'rsync workers still running');
  });

  it('refuses exclusive_backup on PostgreSQL 15 with one clear line, recording nothing', async () => {
    await fs.appendFile(env.configFile, 'backup_options = exclusive_backup\n');
    try {
      const count = (await listBackups(env)).length;
      const r = await env.run('backup', env.server);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /exclusive backups do not exist in PostgreSQL 15/);
      assert.equal((await listBackups(env)).length, count, 'nothing recorded');
    } finally {
      const text = await fs.readFile(env.configFile, 'utf8');
      await fs.writeFile(env.configFile, text.replace('backup_options = exclusive_backup\n', ''));
    }
  });
});
