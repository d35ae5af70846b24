/**
 * What happens around a backup on a real PostgreSQL 15: WAITING_FOR_WALS turned into DONE by
 * cron, a backup that dies mid-way ends FAILED (and one whose process is SIGKILLed is marked
 * FAILED by cron), receive-wal comes back after a PostgreSQL restart, `get-wal` as a real
 * restore_command.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { cleanupAll, PgCluster, pgBin } from '../helpers/pg-cluster.js';
import { createBarmanEnv, listBackups, startStreaming, type BarmanEnv } from '../helpers/barman-env.js';
import { BARMAN_USER, freePort, makeTempDir, POSTGRES_USER, runAs, sleep, waitFor } from '../helpers/system.js';

describe('backup lifecycle', () => {
  let pg: PgCluster;
  let env: BarmanEnv;

  before(async () => {
    pg = await PgCluster.create();
    await pg.psql("CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 20) AS pad FROM generate_series(1, 400000) g; CREATE TABLE t (v int); INSERT INTO t VALUES (1), (2), (3);");
    env = await createBarmanEnv(pg);
    await startStreaming(env);
  });

  after(async () => {
    await env?.stop();
    await cleanupAll();
  });

  it('a backup is refused while receive-wal is stopped (as Barman); one that loses it mid-copy waits for WALs, and cron makes it DONE', async () => {
    await env.ok('receive-wal', '--stop', env.server);
    const refused = await env.run('backup', '--immediate-checkpoint', env.server);
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /^ERROR: Impossible to start the backup\. Check the log for more details, or run 'barman check pg'\n/);
    assert.match(refused.stderr, /\n\treceive-wal running: FAILED/);
    assert.deepEqual(await listBackups(env), [], 'nothing recorded');

    await startStreaming(env);
    // The backup pauses once its checks have passed and it is STARTED, before the copy: WAL
    // streaming is stopped there, so the end WAL (switched when the copy ends) cannot arrive.
    const flags = await makeTempDir('lifecycle-flag-', { owner: BARMAN_USER, mode: 0o755 });
    const go = path.join(flags, 'go');
    const child = spawn('runuser', ['-u', BARMAN_USER, '--', process.execPath, BARMAN_SCRIPT, '-c', env.configFile, 'backup', '--immediate-checkpoint', env.server], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, BARMAN_TS_FAULT: `backup:started=pause:${go}` },
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? -1)));
    await waitFor(async () => fs.access(`${go}.reached`).then(() => true, () => false), { timeoutMs: 30000, intervalMs: 50, what: 'backup STARTED' });
    await env.ok('receive-wal', '--stop', env.server);
    await fs.writeFile(go, '');
    assert.equal(await exited, 0, stderr);
    assert.match(stderr, /WAITING_FOR_WALS/);
    let backups = await listBackups(env);
    assert.equal(backups.at(0)?.status, 'WAITING_FOR_WALS');
    await waitFor(
      async () => {
        await env.ok('cron');
        backups = await listBackups(env);
        return backups.at(0)?.status === 'DONE';
      },
      { timeoutMs: 60000, intervalMs: 1000, what: 'backup DONE through cron' },
    );
  });

  it('receive-wal comes back after a PostgreSQL restart', async () => {
    await startStreaming(env);
    const pidBefore = (await fs.readFile(path.join(env.home, `.${env.server}-receive-wal.lock`), 'utf8')).trim();
    await pg.restart();
    await waitFor(
      async () => {
        await env.ok('cron');
        const r = await env.run('check', env.server);
        if (!/receive-wal running: OK/.test(r.stdout) || !/replication slot: OK/.test(r.stdout)) return false;
        const pid = (await fs.readFile(path.join(env.home, `.${env.server}-receive-wal.lock`), 'utf8')).trim();
        return pid !== pidBefore;
      },
      { timeoutMs: 60000, intervalMs: 1000, what: 'receive-wal restarted by cron' },
    );
    // And it streams: a switched WAL reaches the archive.
    await env.ok('switch-wal', '--archive', '--archive-timeout', '60', env.server);
  });

  it('a backup whose PostgreSQL dies mid-copy ends FAILED and is listed so', async () => {
    const child = spawn('runuser', ['-u', BARMAN_USER, '--', process.execPath, BARMAN_SCRIPT, '-c', env.configFile, 'backup', '--immediate-checkpoint', env.server], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? -1)));
    // Wait until the copy has started, then kill the server under it.
    await waitFor(
      async () => {
        const backups = await listBackups(env);
        return backups.some((b) => b.status === 'STARTED');
      },
      { timeoutMs: 30000, intervalMs: 50, what: 'backup STARTED' },
    );
    await pg.kill9();
    const code = await exited;
    assert.equal(code, 1, stderr);
    const backups = await listBackups(env);
    assert.equal(backups.at(0)?.status, 'FAILED');
    const failedShow = await env.run('show-backup', env.server, 'last-failed');
    assert.match(failedShow.stdout, /Status\s*: FAILED/);
    assert.match(failedShow.stdout, /Error\s*: failure/);
    const text = await env.ok('list-backups', env.server);
    assert.match(text.split('\n')[0] ?? '', / - FAILED$/);
    await pg.start();
  });

  it('a backup whose barman process is SIGKILLed is marked FAILED by the next cron', async () => {
    await startStreaming(env);
    const child = spawn('runuser', ['-u', BARMAN_USER, '--', process.execPath, BARMAN_SCRIPT, '-c', env.configFile, 'backup', env.server], {
      stdio: 'ignore',
    });
    const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
    const started = await waitFor(
      async () => (await listBackups(env)).find((b) => b.status === 'STARTED'),
      { timeoutMs: 30000, intervalMs: 50, what: 'backup STARTED' },
    );
    // Kill barman itself (runuser's child), leaving no chance to record anything.
    await runAs('root', 'pkill', ['-KILL', '-f', `${BARMAN_SCRIPT} -c ${env.configFile} backup`]);
    await runAs('root', 'pkill', ['-KILL', '-f', `pg_basebackup.*${env.home}`]);
    await exited;
    await sleep(200);
    await env.ok('cron');
    const after = (await listBackups(env)).find((b) => b.backup_id === started.backup_id);
    assert.equal(after?.status, 'FAILED');
  });

  it('started as root, barman drops to barman_user; another user is refused', async () => {
    const r = await runAs('root', process.execPath, [BARMAN_SCRIPT, '-c', env.configFile, 'rebuild-xlogdb', env.server]);
    assert.equal(r.code, 0, r.stderr);
    const barmanUid = (await fs.stat(env.home)).uid;
    for (const f of [path.join(env.home, env.server, 'wals', 'xlog.db'), path.join(env.home, `.${env.server}-xlogdb.lock`), path.join(env.root, 'barman.log')]) {
      assert.equal((await fs.stat(f)).uid, barmanUid, `${f} owned by the barman user`);
    }
    const other = await runAs(POSTGRES_USER, process.execPath, [BARMAN_SCRIPT, '-c', env.configFile, 'list-backups', env.server]);
    assert.equal(other.code, 1);
    assert.match(other.stderr, /^ERROR: barman must run as user 'barman'/);
  });

  it('get-wal works as a real restore_command', async () => {
    await pg.psql('INSERT INTO t VALUES (4), (5)');
    await env.ok('switch-wal', '--archive', '--archive-timeout', '60', env.server);
    const dest = await env.newDir('restore-getwal-');
    await env.ok('recover', env.server, 'latest', dest, '--get-wal');
    const auto = await fs.readFile(path.join(dest, 'postgresql.auto.conf'), 'utf8');
    assert.match(auto, /restore_command = '.*get-wal.*%f > %p'/);
    // The restore_command runs barman, which reads the barman catalog: start the recovered
    // server as the barman user (who owns the restored files) so that it may.
    const port = await freePort();
    await fs.appendFile(path.join(dest, 'postgresql.auto.conf'), `port = ${port}\nunix_socket_directories = '${path.dirname(dest)}'\nlisten_addresses = '127.0.0.1'\n`);
    await runAs(BARMAN_USER, pgBin('pg_ctl'), ['-D', dest, '-l', path.join(path.dirname(dest), 'log'), '-w', '-t', '120', 'start'], { check: true });
    try {
      const rows = await waitFor(
        async () => {
          const r = await runAs(BARMAN_USER, pgBin('psql'), ['-X', '-A', '-t', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-c', 'SELECT count(*) FROM t WHERE NOT pg_is_in_recovery()', 'postgres']);
          return r.code === 0 && r.stdout.trim() !== '0' ? r.stdout.trim() : undefined;
        },
        { timeoutMs: 60000, intervalMs: 250, what: 'recovered server promoted' },
      );
      assert.equal(rows, '5');
      const log = await fs.readFile(path.join(path.dirname(dest), 'log'), 'utf8');
      assert.match(log, /restored log file "[0-9A-F]{24}" from archive/);
    } finally {
      await runAs(BARMAN_USER, pgBin('pg_ctl'), ['-D', dest, '-m', 'immediate', '-w', 'stop']);
    }
  });
});
