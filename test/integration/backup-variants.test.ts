/**
 * Backup variants of the postgres method on real PostgreSQL 15: a cluster with a tablespace
 * (plain format, tablespace mapped into the backup and remapped on recovery) and a compressed
 * tar backup (backup_compression = gzip), each recovered and started.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cleanupAll, PgCluster, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, startStreaming, type BarmanEnv } from '../helpers/barman-env.js';
import { spawn } from 'node:child_process';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { BARMAN_USER, makeTempDir, POSTGRES_USER, runAs } from '../helpers/system.js';
import { writeSparseSegment } from '../helpers/wal-segment.js';

describe('backup variants', () => {
  let pg: PgCluster;
  let plain: BarmanEnv;
  let gzip: BarmanEnv;
  let hooks: BarmanEnv;
  let tsDir = '';

  before(async () => {
    pg = await PgCluster.create();
    tsDir = path.join(await makeTempDir('ts-', { owner: POSTGRES_USER, mode: 0o755 }), 'space');
    await fs.mkdir(tsDir, { mode: 0o700 });
    await fs.chown(tsDir, (await fs.stat(path.dirname(tsDir))).uid, (await fs.stat(path.dirname(tsDir))).gid);
    await pg.psql(`CREATE TABLESPACE extra LOCATION '${tsDir}'`);
    await pg.psql("CREATE TABLE in_ts (v int) TABLESPACE extra; INSERT INTO in_ts SELECT generate_series(1, 1234); CREATE TABLE plain_t AS SELECT generate_series(1, 99) v;");
    plain = await createBarmanEnv(pg, { server: 'plainsrv', extra: { slot_name: 'barman_plain' } });
    gzip = await createBarmanEnv(pg, {
      server: 'gzsrv',
      extra: { slot_name: 'barman_gz', backup_compression: 'gzip', backup_compression_format: 'tar', backup_compression_level: '1' },
    });
    const dump = (file: string) => `sh -c 'env | grep ^BARMAN_ | sort >> ${file}; echo ---- >> ${file}'`;
    hooks = await createBarmanEnv(pg, { server: 'hooksrv', extra: { slot_name: 'barman_hooks' } });
    const hookLog = path.join(hooks.root, 'hooks.log');
    for (const k of ['pre_backup_script', 'pre_backup_retry_script', 'post_backup_retry_script', 'post_backup_script']) {
      await fs.appendFile(hooks.configFile, `${k} = ${dump(hookLog)}\n`);
    }
    // The other families log to their own files, so that each test reads only its own.
    for (const family of ['archive', 'delete', 'wal_delete', 'recovery']) {
      for (const k of [`pre_${family}_script`, `post_${family}_script`]) {
        await fs.appendFile(hooks.configFile, `${k} = ${dump(path.join(hooks.root, `${family}.log`))}\n`);
      }
    }
    await startStreaming(plain);
    await startStreaming(gzip);
    await startStreaming(hooks);
  });

  after(async () => {
    await plain?.stop();
    await gzip?.stop();
    await hooks?.stop();
    await cleanupAll();
  });

  it('backs up a tablespace into base/<id>/<oid> and recovers it to a new location', async () => {
    await plain.ok('backup', '--wait', '--wait-timeout', '60', '--immediate-checkpoint', plain.server);
    const show = JSON.parse(await plain.ok('-f', 'json', 'show-backup', plain.server, 'latest')) as Record<string, { tablespaces: { name: string; oid: number }[] }>;
    const ts = show[plain.server]?.tablespaces?.[0];
    assert.equal(ts?.name, 'extra');
    const oid = String(ts?.oid);
    const id = (await plain.ok('list-backups', '--minimal', plain.server)).trim().split('\n')[0] ?? '';
    await fs.access(path.join(plain.home, plain.server, 'base', id, oid));

    const dest = await plain.newDir('restore-ts-');
    const newTs = path.join(await makeTempDir('newts-', { owner: BARMAN_USER, mode: 0o755 }), 'space');
    await plain.ok('recover', plain.server, 'latest', dest, '--tablespace', `extra:${newTs}`);
    assert.equal(await fs.readlink(path.join(dest, 'pg_tblspc', oid)), newTs);
    const { cluster } = await startRecoveredCluster(dest);
    try {
      assert.equal(await cluster.psql('SELECT count(*) FROM in_ts'), '1234');
      assert.equal(await cluster.psql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'extra'"), newTs);
    } finally {
      await cluster.destroy();
    }
  });

  it('runs backup hook scripts around a real backup with the documented variables', async () => {
    const log = path.join(hooks.root, 'hooks.log');
    await hooks.ok('backup', '--wait', '--wait-timeout', '60', '--immediate-checkpoint', hooks.server);
    const text = await fs.readFile(log, 'utf8');
    const blocks = text.split('----\n').filter((b) => b.trim() !== '');
    const vars = blocks.map((b) => Object.fromEntries(b.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)])));
    assert.deepEqual(vars.map((v) => `${v.BARMAN_HOOK}:${v.BARMAN_PHASE}`), ['backup_script:pre', 'backup_retry_script:pre', 'backup_retry_script:post', 'backup_script:post']);
    const id = (await hooks.ok('list-backups', '--minimal', hooks.server)).trim().split('\n')[0] ?? '';
    for (const v of vars) {
      assert.equal(v.BARMAN_SERVER, hooks.server);
      assert.equal(v.BARMAN_BACKUP_ID, id);
      assert.equal(v.BARMAN_CONFIGURATION, hooks.configFile);
      assert.equal(v.BARMAN_BACKUP_DIR, path.join(hooks.home, hooks.server, 'base', id));
    }
    assert.equal(vars[0]?.BARMAN_STATUS, 'EMPTY');
    assert.equal(vars[0]?.BARMAN_RETRY, '0');
    assert.equal(vars[1]?.BARMAN_RETRY, '1');
    assert.equal(vars[3]?.BARMAN_STATUS, 'DONE');
    assert.equal(vars[3]?.BARMAN_ERROR, '');
  });

  const readHookLog = async (family: string): Promise<Record<string, string>[]> => {
    const text = await fs.readFile(path.join(hooks.root, `${family}.log`), 'utf8').catch(() => '');
    return text
      .split('----\n')
      .filter((b) => b.trim() !== '')
      .map((b) => Object.fromEntries(b.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)])));
  };

  it('runs archive hook scripts around every WAL archived from a real server', async () => {
    await hooks.ok('switch-wal', '--archive', '--archive-timeout', '60', hooks.server);
    const vars = await readHookLog('archive');
    const pre = vars.filter((v) => v.BARMAN_PHASE === 'pre');
    const post = vars.filter((v) => v.BARMAN_PHASE === 'post');
    assert.ok(pre.length > 0 && pre.length === post.length, `${pre.length} pre / ${post.length} post`);
    for (const v of vars) {
      assert.equal(v.BARMAN_HOOK, 'archive_script');
      assert.equal(v.BARMAN_SERVER, hooks.server);
      assert.match(v.BARMAN_SEGMENT ?? '', /^[0-9A-F]{24}$/);
      assert.equal(v.BARMAN_SIZE, '16777216');
      assert.match(v.BARMAN_TIMESTAMP ?? '', /^\d+\.\d+$/);
      assert.equal(v.BARMAN_COMPRESSION, '');
      assert.equal(v.BARMAN_RETRY, '0');
    }
    assert.equal(pre[0]?.BARMAN_FILE, path.join(hooks.home, hooks.server, 'streaming', pre[0]?.BARMAN_SEGMENT ?? ''));
    const seg = post[0]?.BARMAN_SEGMENT ?? '';
    assert.equal(post[0]?.BARMAN_FILE, path.join(hooks.home, hooks.server, 'wals', seg.slice(0, 16), seg));
  });

  it('runs recovery hook scripts around a real recovery', async () => {
    const dest = await hooks.newDir('restore-hooks-');
    const newTs = path.join(await makeTempDir('hookts-', { owner: BARMAN_USER, mode: 0o755 }), 'space');
    await hooks.ok('recover', hooks.server, 'latest', dest, '--tablespace', `extra:${newTs}`, '--target-immediate');
    const vars = await readHookLog('recovery');
    assert.deepEqual(vars.map((v) => v.BARMAN_PHASE), ['pre', 'post']);
    const id = (await hooks.ok('list-backups', '--minimal', hooks.server)).trim().split('\n')[0] ?? '';
    for (const v of vars) {
      assert.equal(v.BARMAN_HOOK, 'recovery_script');
      assert.equal(v.BARMAN_BACKUP_ID, id);
      assert.equal(v.BARMAN_DESTINATION_DIRECTORY, dest);
      assert.equal(v.BARMAN_TABLESPACES, JSON.stringify({ extra: newTs }));
      assert.equal(v.BARMAN_REMOTE_COMMAND, '');
      assert.match(v.BARMAN_RECOVER_OPTIONS ?? '', /"target_immediate":\s*true/);
    }
  });

  it('runs delete and WAL delete hook scripts around a real delete', async () => {
    // A second backup, then deleting the first one removes the WALs only it needed.
    await hooks.ok('backup', '--wait', '--wait-timeout', '60', '--immediate-checkpoint', hooks.server);
    const ids = (await hooks.ok('list-backups', '--minimal', hooks.server)).trim().split('\n');
    const oldest = ids.at(-1) ?? '';
    await hooks.ok('delete', hooks.server, oldest);
    const del = await readHookLog('delete');
    assert.deepEqual(del.map((v) => v.BARMAN_PHASE), ['pre', 'post']);
    for (const v of del) {
      assert.equal(v.BARMAN_HOOK, 'delete_script');
      assert.equal(v.BARMAN_BACKUP_ID, oldest);
      assert.equal(v.BARMAN_NEXT_ID, ids.at(-2));
      assert.equal(v.BARMAN_PREVIOUS_ID, '');
      assert.equal(v.BARMAN_BACKUP_DIR, path.join(hooks.home, hooks.server, 'base', oldest));
    }
    const wal = await readHookLog('wal_delete');
    assert.ok(wal.length >= 2, `wal_delete hooks: ${wal.length}`);
    for (const v of wal) {
      assert.equal(v.BARMAN_HOOK, 'wal_delete_script');
      assert.match(v.BARMAN_SEGMENT ?? '', /^[0-9A-F]{24}$/);
      assert.ok(v.BARMAN_SEGMENT! < (await hooks.ok('-f', 'json', 'show-backup', hooks.server, ids.at(-2) ?? '')).match(/"begin_wal": ?"([0-9A-F]{24})"/)![1]!);
    }
  });

  it('a hanging archive hook of one server does not hold up archiving of another', async () => {
    const env = await createBarmanEnv(pg, { server: 'hang', extra: { streaming_archiver: 'off', archiver: 'on', pre_archive_script: 'sleep 60' } });
    await fs.appendFile(env.configFile, `\n[quick]\nconninfo = ${pg.conninfo}\nbackup_method = postgres\narchiver = on\n`);
    const seg = '0000000900000000000000A1';
    for (const srv of ['hang', 'quick']) {
      await env.ok('check', srv).catch(() => undefined); // creates the directories
      const file = path.join(env.home, srv, 'incoming', seg);
      writeSparseSegment(file, seg); // a 16 MiB segment: its page header, then holes
      await fs.chown(file, (await fs.stat(env.home)).uid, (await fs.stat(env.home)).gid);
    }
    const hanging = spawn('runuser', ['-u', BARMAN_USER, '--', process.execPath, BARMAN_SCRIPT, '-c', env.configFile, 'archive-wal', 'hang'], { stdio: 'ignore', detached: true });
    try {
      await new Promise((r) => setTimeout(r, 1000));
      const started = Date.now();
      await env.ok('archive-wal', 'quick');
      assert.ok(Date.now() - started < 10000, 'quick archived without waiting for the hung hook');
      await fs.access(path.join(env.home, 'quick', 'wals', seg.slice(0, 16), seg));
      // ...and cron is not held up either.
      const cronStart = Date.now();
      await env.ok('cron');
      assert.ok(Date.now() - cronStart < 10000);
      await assert.rejects(fs.access(path.join(env.home, 'hang', 'wals', seg.slice(0, 16), seg)));
    } finally {
      if (hanging.pid) process.kill(-hanging.pid, 'SIGKILL');
      await runAs('root', 'pkill', ['-KILL', '-f', `${env.configFile} archive-wal`]);
      await runAs('root', 'pkill', ['-KILL', '-f', 'sleep 60']);
    }
  });

  it('rejects a tablespace rule for an unknown tablespace, writing nothing', async () => {
    const dest = await plain.newDir('restore-bad-ts-');
    const r = await plain.run('recover', plain.server, 'latest', dest, '--tablespace', 'nosuch:/tmp/x');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^ERROR: .*nosuch/m);
    await assert.rejects(fs.access(dest));
  });

  it('takes a gzip-compressed tar backup and recovers it', async () => {
    await gzip.ok('backup', '--wait', '--wait-timeout', '60', '--immediate-checkpoint', gzip.server);
    const id = (await gzip.ok('list-backups', '--minimal', gzip.server)).trim().split('\n')[0] ?? '';
    const files = await fs.readdir(path.join(gzip.home, gzip.server, 'base', id, 'data'));
    assert.ok(files.includes('base.tar.gz'), files.join(','));
    const info = await fs.readFile(path.join(gzip.home, gzip.server, 'base', id, 'backup.info'), 'utf8');
    assert.match(info, /^compression=gzip$/m);
    assert.match(info, /^status=DONE$/m);
    const dest = await gzip.newDir('restore-gz-');
    const newTs = path.join(await makeTempDir('gzts-', { owner: BARMAN_USER, mode: 0o755 }), 'space');
    await gzip.ok('recover', gzip.server, id, dest, '--tablespace', `extra:${newTs}`);
    const { cluster } = await startRecoveredCluster(dest);
    try {
      assert.equal(await cluster.psql('SELECT count(*) FROM plain_t'), '99');
      assert.equal(await cluster.psql('SELECT count(*) FROM in_ts'), '1234');
    } finally {
      await cluster.destroy();
    }
  });
});
