/**
 * `barman check` on a real PostgreSQL 15: each check driven to OK and to FAILED by a real
 * condition (PostgreSQL stopped, receive-wal stopped, slot dropped, files in errors/, an aged
 * backup, a broken ssh_command, a failing archive_command, a server that never answers), with
 * the exact lines, exit codes and Nagios output.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { newBackupInfo, serializeBackupInfo } from '../../src/catalog/backup-info.js';
import { PyDateTime } from '../../src/util/pytime.js';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { createBarmanEnv, startStreaming, type BarmanEnv } from '../helpers/barman-env.js';
import { cleanupAll, PgCluster } from '../helpers/pg-cluster.js';
import { BARMAN_USER, runAs, sleep, waitFor } from '../helpers/system.js';

describe('barman check on a real server', () => {
  let pg: PgCluster;
  let env: BarmanEnv;
  let hangServer: net.Server;
  const hung: net.Socket[] = [];

  /** A configuration made of the test one plus extra server sections (and keys for [pg]). */
  async function configWith(name: string, pgExtra: Record<string, string>, sections: Record<string, Record<string, string>> = {}): Promise<string> {
    let text = await fsp.readFile(env.configFile, 'utf8');
    text += Object.entries(pgExtra).map(([k, v]) => `${k} = ${v}\n`).join('');
    for (const [sec, kv] of Object.entries(sections)) text += `\n[${sec}]\n${Object.entries(kv).map(([k, v]) => `${k} = ${v}`).join('\n')}\n`;
    const file = path.join(env.root, `${name}.conf`);
    await runAs(BARMAN_USER, 'tee', [file], { input: text, check: true });
    return file;
  }
  const barman = (config: string, ...args: string[]) => runAs(BARMAN_USER, process.execPath, [BARMAN_SCRIPT, '-c', config, ...args]);
  const lines = (stdout: string) => stdout.split('\n');

  before(async () => {
    pg = await PgCluster.create({ archiveMode: true, archiveCommand: 'true' });
    env = await createBarmanEnv(pg, { extra: { archiver: 'on' } });
    await startStreaming(env, 60_000);
    hangServer = net.createServer((s) => hung.push(s)); // accepts, never answers
    await new Promise<void>((resolve) => hangServer.listen(0, '127.0.0.1', resolve));
  });

  after(async () => {
    for (const s of hung) s.destroy();
    hangServer?.close();
    await env?.stop();
    await cleanupAll();
  });

  it('all checks OK on a healthy server, in order, exit 0, Nagios OK with perfdata', async () => {
    // Until a WAL has been archived, `WAL archive` fails: switch one and let cron archive it.
    await pg.psql('CREATE TABLE t AS SELECT 1 AS x');
    await pg.switchWal();
    const r = await waitFor(
      async () => {
        await env.run('cron');
        const c = await env.run('check', env.server);
        return c.code === 0 ? c : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 1000 },
    );
    assert.deepEqual(lines(r.stdout), [
      'Server pg:',
      '\tPostgreSQL: OK',
      '\tsuperuser or standard user with backup privileges: OK',
      '\tPostgreSQL streaming: OK',
      '\twal_level: OK',
      '\treplication slot: OK',
      '\tdirectories: OK',
      '\tretention policy settings: OK',
      '\tbackup maximum age: OK (no last_backup_maximum_age provided)',
      '\tbackup minimum size: OK (0 B)',
      '\twal maximum age: OK (no last_wal_maximum_age provided)',
      '\twal size: OK (0 B)',
      '\tcompression settings: OK',
      '\tfailed backups: OK (there are 0 failed backups)',
      '\tminimum redundancy requirements: OK (have 0 backups, expected at least 0)',
      '\tpg_basebackup: OK',
      '\tpg_basebackup compatible: OK',
      '\tpg_basebackup supports tablespaces mapping: OK',
      '\tsystemid coherence: OK (no system Id stored on disk)',
      '\tarchive_mode: OK',
      '\tarchive_command: OK',
      '\tcontinuous archiving: OK',
      '\tpg_receivexlog: OK',
      '\tpg_receivexlog compatible: OK',
      '\treceive-wal running: OK',
      '\tarchiver errors: OK',
      '',
    ]);
    const n = await env.run('check', '--nagios', env.server);
    assert.equal(n.stdout, 'BARMAN OK - Ready to serve the Espresso backup for pg|pg=0B pg_wals=0B\n');
    assert.equal(n.code, 0);
    const j = await env.run('-f', 'json', 'check', env.server);
    const doc = JSON.parse(j.stdout) as Record<string, Record<string, { status: string; hint: string }>>;
    assert.deepEqual(doc.pg?.receive_wal_running, { status: 'OK', hint: '' });
    assert.deepEqual(doc.pg?.backup_minimum_size, { status: 'OK', hint: '0 B' });
  });

  it('archiver errors: files in errors/ fail the check with counts', async () => {
    const errors = path.join(env.home, 'pg', 'errors');
    for (const f of ['000000010000000000000001.20240101T000000.duplicate', '000000010000000000000002.20240101T000000.duplicate', 'junk.20240101T000000.unknown']) {
      await runAs(BARMAN_USER, 'touch', [path.join(errors, f)], { check: true });
    }
    const r = await env.run('check', env.server);
    assert.ok(lines(r.stdout).includes('\tarchiver errors: FAILED (duplicates: 2, unknown: 1)'), r.stdout);
    assert.equal(r.code, 1);
    const n = await env.run('check', '--nagios', env.server);
    assert.equal(n.stdout, 'BARMAN CRITICAL - server pg has issues * pg FAILED: archiver errors|pg=0B pg_wals=0B\npg.archiver errors: FAILED (duplicates: 2, unknown: 1)\n');
    assert.equal(n.code, 2);
    await runAs(BARMAN_USER, 'sh', ['-c', `rm -f ${errors}/*`], { check: true });
    assert.ok(lines((await env.run('check', env.server)).stdout).includes('\tarchiver errors: OK'));
  });

  it('backup maximum age: no backup, an aged backup, a recent backup', async () => {
    const cfg = await configWith('age', { last_backup_maximum_age: '1 day' });
    let r = await barman(cfg, 'check', 'pg');
    assert.ok(lines(r.stdout).includes('\tbackup maximum age: FAILED (interval provided: 1 day, latest backup age: No available backups)'), r.stdout);
    assert.equal(r.code, 1);
    const writeBackup = async (id: string, endEpoch: number) => {
      const dir = path.join(env.home, 'pg', 'base', id);
      await runAs(BARMAN_USER, 'mkdir', ['-p', '-m', '0700', dir], { check: true });
      const d = new Date(endEpoch * 1000);
      const endTime = PyDateTime.fromFields(
        { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate(), hour: d.getUTCHours(), minute: d.getUTCMinutes(), second: d.getUTCSeconds() },
        0,
      );
      const info = newBackupInfo({ status: 'DONE', end_time: endTime, begin_time: endTime, size: 1000, begin_wal: '000000010000000000000001', end_wal: '000000010000000000000001', timeline: 1 });
      await runAs(BARMAN_USER, 'tee', [path.join(dir, 'backup.info')], { input: serializeBackupInfo(info), check: true });
      return dir;
    };
    const now = Math.floor(Date.now() / 1000);
    const old = await writeBackup('20000101T000000', now - 3 * 86400);
    r = await barman(cfg, 'check', 'pg');
    assert.ok(r.stdout.includes('\tbackup maximum age: FAILED (interval provided: 1 day, latest backup age: 3 days'), r.stdout);
    assert.ok(lines(r.stdout).includes('\tbackup minimum size: OK (1000 B)'), r.stdout);
    const young = await writeBackup('20000102T000000', now - 3600);
    r = await barman(cfg, 'check', 'pg');
    assert.match(r.stdout, /\tbackup maximum age: OK \(interval provided: 1 day, latest backup age: 1 hour(, \d+ seconds?)?\)\n/);
    await runAs(BARMAN_USER, 'rm', ['-rf', old, young], { check: true });
  });

  it('continuous archiving fails while archive_command fails, and recovers', async () => {
    await pg.psql("ALTER SYSTEM SET archive_command = 'false'");
    await pg.psql('SELECT pg_reload_conf()');
    await sleep(500);
    await pg.psql('INSERT INTO t SELECT 2');
    await pg.switchWal();
    await waitFor(async () => Number(await pg.psql('SELECT failed_count FROM pg_stat_archiver')) > 0, { timeoutMs: 60_000, intervalMs: 500 });
    const failing = await pg.psql('SELECT last_failed_wal FROM pg_stat_archiver');
    let r = await env.run('check', env.server);
    assert.equal(r.stderr, '');
    assert.match(r.stdout, new RegExp(`\\tcontinuous archiving: FAILED \\(archive_command failed for WAL ${failing} \\(failures: \\d+\\)\\)\\n`));
    assert.equal(r.code, 1);
    await pg.psql("ALTER SYSTEM SET archive_command = 'true'");
    await pg.psql('SELECT pg_reload_conf()');
    await waitFor(async () => (await pg.psql("SELECT last_archived_time > last_failed_time FROM pg_stat_archiver")) === 't', { timeoutMs: 90_000, intervalMs: 500 });
    r = await env.run('check', env.server);
    assert.ok(lines(r.stdout).includes('\tcontinuous archiving: OK'), r.stdout);
  });

  it('receive-wal stopped, slot dropped, then restored', async () => {
    await env.stop();
    let r = await waitFor(async () => {
      const c = await env.run('check', env.server);
      return c.stdout.includes('receive-wal running: FAILED') ? c : undefined;
    }, { timeoutMs: 30_000, intervalMs: 500 });
    assert.ok(lines(r.stdout).includes('\treceive-wal running: FAILED (See the Barman log file for more details)'), r.stdout);
    assert.ok(lines(r.stdout).includes("\treplication slot: FAILED (slot 'barman' not active: is 'receive-wal' running?)"), r.stdout);
    assert.equal(r.code, 1);
    await env.ok('receive-wal', '--drop-slot', env.server);
    r = await env.run('check', env.server);
    assert.ok(lines(r.stdout).includes("\treplication slot: FAILED (replication slot 'barman' doesn't exist. Please execute 'barman receive-wal --create-slot pg')"), r.stdout);
    // The new slot starts at the current position; the streamed position kept in streaming/ may
    // already be recycled by a checkpoint (pg_receivewal would then stop at once, every time):
    // `--reset` forgets it, as Barman's documentation says to after a slot is lost.
    await env.ok('receive-wal', '--reset', env.server);
    await startStreaming(env, 60_000); // cron: create_slot = auto, receive-wal restarted
    r = await env.run('check', env.server);
    assert.ok(lines(r.stdout).includes('\treplication slot: OK') && lines(r.stdout).includes('\treceive-wal running: OK'), r.stdout);
  });

  it('PostgreSQL stopped: FAILED, exit 1, Nagios CRITICAL exit 2', async () => {
    await env.stop();
    await pg.stop();
    try {
      const r = await env.run('check', env.server);
      assert.ok(lines(r.stdout).includes('\tPostgreSQL: FAILED'), r.stdout);
      assert.equal(r.code, 1);
      const n = await env.run('check', '--nagios', env.server);
      assert.equal(n.code, 2);
      // As Barman: with the main connection down nothing else of PostgreSQL is checked.
      assert.match(n.stdout, /^BARMAN CRITICAL - server pg has issues \* pg FAILED: PostgreSQL, (?!PostgreSQL streaming)/);
      assert.ok(lines(n.stdout).includes('pg.PostgreSQL: FAILED'), n.stdout);
    } finally {
      await pg.start();
      await startStreaming(env, 60_000);
    }
    assert.ok(lines((await env.run('check', env.server)).stdout).includes('\tPostgreSQL: OK'));
  });

  it('ssh: a failing command, a working one, one that prints', async () => {
    const rs = (ssh: string) => ({ conninfo: pg.conninfo, backup_method: 'rsync', ssh_command: ssh, archiver: 'on', streaming_archiver: 'off' });
    const cfg = await configWith('ssh', {}, { bad: rs('false'), good: rs(`sh -c 'exec "$@"' sh`), noisy: rs(`sh -c 'echo Welcome; exec "$@"' sh`) });
    const r = await barman(cfg, 'check', 'bad', 'good', 'noisy');
    const out = lines(r.stdout);
    const section = (name: string) => out.slice(out.indexOf(`Server ${name}:`) + 1).filter((l, i, a) => a.slice(0, i + 1).every((x) => x.startsWith('\t')));
    assert.ok(section('bad').includes("\tssh: FAILED (Connection failed using 'false' return code 1)"), r.stdout);
    assert.ok(section('good').includes('\tssh: OK (PostgreSQL server)'), r.stdout);
    assert.ok(!section('good').some((l) => l.startsWith('\tssh output clean')), r.stdout);
    assert.ok(section('noisy').includes('\tssh: OK (PostgreSQL server)'), r.stdout);
    assert.ok(section('noisy').includes('\tssh output clean: FAILED (the configured ssh_command must not add anything to the remote command output)'), r.stdout);
    // Servers are checked in name order.
    assert.deepEqual(out.filter((l) => l.startsWith('Server ')), ['Server bad:', 'Server good:', 'Server noisy:']);
  });

  it('check timeout: a server that accepts and never answers', async () => {
    const port = (hangServer.address() as net.AddressInfo).port;
    const cfg = await configWith('hang', {}, {
      hang: { conninfo: `host=127.0.0.1 port=${port} user=barman dbname=postgres`, backup_method: 'postgres', archiver: 'on', streaming_archiver: 'off', check_timeout: '2' },
    });
    const t0 = Date.now();
    const r = await barman(cfg, 'check', 'hang');
    const elapsed = Date.now() - t0;
    const out = lines(r.stdout);
    assert.equal(out.at(-2), '\tcheck timeout: FAILED (barman check command timed out)', r.stdout);
    assert.equal(r.code, 1);
    assert.ok(elapsed < 30_000, `check took ${elapsed} ms`);
    // --check-timeout on the command line wins over the configuration.
    const r2 = await barman(cfg, 'check', '--check-timeout', '1', 'hang');
    assert.equal(lines(r2.stdout).at(-2), '\tcheck timeout: FAILED (barman check command timed out)');
  });
});
