/**
 * Geo-redundancy with the real Barman 3.4 (Debian's package) on the other side, both ways, on one
 * PostgreSQL 15 cluster (one replication slot per primary):
 *   - Barman 3.4 primary → barman-ts passive: our cron syncs its backup and WAL, we recover to a
 *     point in time from them;
 *   - barman-ts primary → Barman 3.4 passive: Barman's cron syncs ours, Barman recovers.
 * And our `sync-info` document, byte for byte against Barman 3.4's on the same catalog.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createBarmanEnv, startStreaming, type BarmanEnv } from '../helpers/barman-env.js';
import { BARMAN34, backupStatuses, cronUntil, startPrimarySshd, type PrimarySshd } from '../helpers/geo.js';
import { cleanupAll, PgCluster, pgBinDir, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { BARMAN_USER, makeTempDir, runAs, sleep, waitFor, type ExecResult } from '../helpers/system.js';
import { BARMAN_SCRIPT } from '../../src/util/self.js';

const WALS = ['000000010000000000000009', '00000001000000000000000A', '00000001000000000000000A.00000028.backup', '00000001000000000000000B'];

/** The name on the last line of an xlog.db. */
async function lastCatalogued(file: string): Promise<string> {
  const lines = (await fs.readFile(file, 'utf8')).trim().split('\n');
  return (lines.at(-1) ?? '').split('\t')[0] ?? '';
}

/** A Barman 3.4 installation: barman_home and configuration under a fresh directory of the barman user. */
async function barman34Env(server: Record<string, string>): Promise<{ home: string; conf: string; run: (...a: string[]) => Promise<ExecResult> }> {
  const root = await makeTempDir('barman34-', { owner: BARMAN_USER, mode: 0o755 });
  const home = path.join(root, 'home');
  const conf = path.join(root, 'barman.conf');
  const text = [
    '[barman]',
    `barman_home = ${home}`,
    `barman_user = ${BARMAN_USER}`,
    `log_file = ${root}/barman.log`,
    'log_level = DEBUG',
    '',
    '[pg]',
    ...Object.entries(server).map(([k, v]) => `${k} = ${v}`),
    '',
  ].join('\n');
  await runAs(BARMAN_USER, 'mkdir', ['-m', '0700', home], { check: true });
  await runAs(BARMAN_USER, 'tee', [conf], { input: text, check: true });
  return { home, conf, run: (...a: string[]) => runAs(BARMAN_USER, BARMAN34, ['-c', conf, ...a]) };
}

describe('sync-info: the same document as Barman 3.4', () => {
  it('prints the positions, backups and WAL list byte for byte, and the configuration keys with the same values', async () => {
    const root = await makeTempDir('geo-syncinfo-');
    const home = path.join(root, 'home');
    const backup = path.join(home, 'pg', 'base', '20240105T100000');
    await fs.mkdir(backup, { recursive: true });
    await fs.mkdir(path.join(home, 'pg', 'wals'), { recursive: true });
    const conf = path.join(root, 'barman.conf');
    await fs.writeFile(
      conf,
      `[barman]\nbarman_home = ${home}\nbarman_user = root\nlog_file = ${root}/barman.log\n\n[pg]\ndescription = "compare"\nconninfo = host=127.0.0.1 port=1 password=secret\n` +
        'backup_method = rsync\nssh_command = ssh postgres@db\narchiver = on\nretention_policy = RECOVERY WINDOW OF 2 WEEKS\n' +
        'backup_options = concurrent_backup\nlast_backup_maximum_age = 36 hours\nreuse_backup = link\nbandwidth_limit = 1000\n',
    );
    // A backup.info as Barman 3.4 writes it (it refuses the keys it does not know).
    await fs.writeFile(
      path.join(backup, 'backup.info'),
      [
        "backup_label='START WAL LOCATION: 0/A000028 (file 00000001000000000000000A)\\nCHECKPOINT LOCATION: 0/A000060\\nLABEL: caf\u00e9\\n'",
        'begin_offset=40',
        'begin_time=2024-01-05 10:00:00.123456+00:00',
        'begin_wal=00000001000000000000000A',
        'begin_xlog=0/A000028',
        'compression=None',
        'config_file=/srv/pgdata/postgresql.conf',
        "copy_stats={'copy_time': 1.5, 'total_time': 2.0, 'number_of_workers': 2}",
        'deduplicated_size=1000',
        'end_offset=256',
        'end_time=2024-01-05 10:05:00+00:00',
        'end_wal=00000001000000000000000A',
        'end_xlog=0/A000100',
        'error=None',
        'hba_file=/srv/pgdata/pg_hba.conf',
        'ident_file=/srv/pgdata/pg_ident.conf',
        'included_files=None',
        'mode=rsync-concurrent',
        'pgdata=/srv/pgdata',
        'server_name=pg',
        'size=1000',
        'status=DONE',
        'systemid=7000000000000000000',
        "tablespaces=[('tbs1', 16385, '/srv/tbs1')]",
        'timeline=1',
        'version=150004',
        'xlog_segment_size=16777216',
        '',
      ].join('\n'),
    );
    await fs.writeFile(
      path.join(home, 'pg', 'wals', 'xlog.db'),
      WALS.map((w, i) => `${w}\t${i === 2 ? 300 : 16777216}\t${1704448800 + i * 1.25}\t${i === 3 ? 'gzip' : 'None'}\n`).join(''),
    );
    const theirs = (...a: string[]) => runAs('root', BARMAN34, ['-c', conf, 'sync-info', 'pg', ...a]);
    const ours = (...a: string[]) => runAs('root', process.execPath, [BARMAN_SCRIPT, '-c', conf, 'sync-info', 'pg', ...a]);
    for (const args of [[], ['00000001000000000000000A'], ['00000001000000000000000A', '42'], ['00000001000000000000000B', '9999']]) {
      const [a, b] = [await theirs(...args), await ours(...args)];
      assert.equal(b.code, a.code, `${args.join(' ')}: ${b.stderr}`);
      const head = (t: string) => t.slice(0, t.indexOf('    "version"'));
      assert.equal(head(b.stdout), head(a.stdout), args.join(' '));
      const ca = (JSON.parse(a.stdout) as { config: Record<string, unknown> }).config;
      const cb = (JSON.parse(b.stdout) as { config: Record<string, unknown> }).config;
      const keys = Object.keys(ca);
      assert.deepEqual(Object.keys(cb).slice(0, keys.length), keys, 'Barman 3.4 keys first, in its order');
      for (const k of keys) {
        if (k === 'backup_compression_workers') continue; // its default changed after 3.4 (None → 0)
        if (k === 'conninfo' || k === 'streaming_conninfo') assert.equal(cb[k], 'host=127.0.0.1 port=1 password=*REDACTED*');
        else assert.deepEqual(cb[k], ca[k], k);
      }
    }
    for (const args of [['000000010000000000000001'], ['00000001000000000000000F']]) {
      const [a, b] = [await theirs(...args), await ours(...args)];
      assert.equal(a.code, 1);
      assert.equal(b.code, 1);
      assert.equal(b.stderr, a.stderr);
    }
  });
});

describe('geo-redundancy with Barman 3.4', () => {
  let pg: PgCluster;
  const count = async (c: PgCluster) => Number(await c.psql('SELECT count(*) FROM t'));
  const insert = (n: number, tag: string) => pg.psql(`INSERT INTO t (tag) SELECT '${tag}' FROM generate_series(1, ${n})`);
  const stamp = () => pg.psql("SELECT to_char(clock_timestamp(), 'YYYY-MM-DD HH24:MI:SS.US TZH:TZM')");
  const stops: (() => Promise<unknown>)[] = [];

  before(async () => {
    pg = await PgCluster.create();
    await pg.psql('CREATE TABLE t (id serial PRIMARY KEY, tag text)');
    await insert(50, 'base');
  });

  after(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    await cleanupAll();
  });

  it('a barman-ts passive mirrors a Barman 3.4 primary and recovers from it to a point in time', async () => {
    const primary = await barman34Env({
      description: '"Barman 3.4 primary"',
      conninfo: pg.conninfo,
      streaming_conninfo: pg.conninfo,
      backup_method: 'postgres',
      streaming_archiver: 'on',
      slot_name: 'b34',
      create_slot: 'auto',
      path_prefix: pgBinDir(),
    });
    stops.push(() => primary.run('receive-wal', '--stop', 'pg'));
    await waitFor(
      async () => {
        await primary.run('cron');
        return /receive-wal running: OK/.test((await primary.run('check', 'pg')).stdout);
      },
      { timeoutMs: 60_000, intervalMs: 1000, what: "Barman 3.4's receive-wal" },
    );
    const sw = await primary.run('switch-wal', '--force', '--archive', '--archive-timeout', '60', 'pg');
    assert.equal(sw.code, 0, sw.stderr);
    const bk = await primary.run('backup', '--wait', 'pg');
    assert.equal(bk.code, 0, bk.stderr + bk.stdout);
    await insert(10, 'after-backup');
    await sleep(1100);
    const target = { time: await stamp(), rows: await count(pg) };
    await sleep(1100);
    await insert(10, 'later');
    assert.equal((await primary.run('switch-wal', '--force', '--archive', '--archive-timeout', '60', 'pg')).code, 0);
    const id = (await primary.run('list-backups', '--minimal', 'pg')).stdout.trim().split('\n')[0] ?? '';

    const ssh = await startPrimarySshd(primary.conf, 'barman34');
    stops.push(() => ssh.stop());
    const passive = await createBarmanEnv(pg, { extra: { primary_ssh_command: ssh.sshCommand, slot_name: 'unused' } });
    const lastWal = await lastCatalogued(path.join(primary.home, 'pg', 'wals', 'xlog.db'));
    const xlog = path.join(passive.home, 'pg', 'wals', 'xlog.db');
    await cronUntil(
      passive,
      async () => (await backupStatuses(passive)).get(id) === 'DONE' && (await fs.readFile(xlog, 'utf8').catch(() => '')).includes(lastWal),
      "Barman 3.4's backup DONE here, with its WAL files",
    );
    const dest = await passive.newDir('geo-b34-');
    await passive.ok('recover', 'pg', id, dest, '--target-time', target.time, '--target-action', 'promote');
    const { cluster } = await startRecoveredCluster(dest);
    try {
      assert.equal(await count(cluster), target.rows);
    } finally {
      await cluster.destroy();
    }
  });

  it('a Barman 3.4 passive mirrors a barman-ts primary and recovers from it to a point in time', async () => {
    const primary: BarmanEnv = await createBarmanEnv(pg, { extra: { slot_name: 'bts' } });
    stops.push(() => primary.stop());
    await startStreaming(primary);
    await primary.ok('backup', '--wait', '--wait-timeout', '60', '--immediate-checkpoint', 'pg');
    const id = (await primary.ok('list-backups', '--minimal', 'pg')).trim().split('\n')[0] ?? '';
    await insert(10, 'after-ts-backup');
    await sleep(1100);
    const target = { time: await stamp(), rows: await count(pg) };
    await sleep(1100);
    await insert(10, 'later-ts');
    await primary.ok('switch-wal', '--archive', '--archive-timeout', '60', 'pg');

    const lastWal = await lastCatalogued(path.join(primary.home, 'pg', 'wals', 'xlog.db'));
    const ssh: PrimarySshd = await startPrimarySshd(primary.configFile, 'barman-ts');
    stops.push(() => ssh.stop());
    const passive = await barman34Env({ description: '"Barman 3.4 passive"', primary_ssh_command: ssh.sshCommand, archiver: 'on' });
    const deadline = Date.now() + 90_000;
    for (;;) {
      const cron = await passive.run('cron');
      const list = await passive.run('list-backups', 'pg');
      // DONE backups show their end time and sizes; the WAL of the target must be there too.
      const xlog = await fs.readFile(path.join(passive.home, 'pg', 'wals', 'xlog.db'), 'utf8').catch(() => '');
      if (new RegExp(`^pg ${id} - .*Size:`, 'm').test(list.stdout) && xlog.includes(lastWal)) break;
      if (Date.now() > deadline) throw new Error(`Barman 3.4 passive did not sync: ${cron.stdout}${cron.stderr}\n${list.stdout}${list.stderr}`);
      await sleep(1000);
    }
    const show = await passive.run('show-backup', 'pg', id);
    assert.match(show.stdout, /Status\s+: DONE/);
    const dest = path.join(await makeTempDir('geo-b34-restore-', { owner: BARMAN_USER, mode: 0o755 }), 'data');
    const rec = await passive.run('recover', 'pg', id, dest, '--target-time', target.time, '--target-action', 'promote');
    assert.equal(rec.code, 0, rec.stderr + rec.stdout);
    const { cluster } = await startRecoveredCluster(dest);
    try {
      assert.equal(await count(cluster), target.rows);
    } finally {
      await cluster.destroy();
    }
  });
});
