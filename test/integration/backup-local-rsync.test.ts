/**
 * backup_method = local-rsync on real PostgreSQL 15: barman on the database host, run as the
 * postgres OS user (barman_user = postgres), rsync reading PGDATA and a tablespace directly.
 * With autogenerate_manifest = true each backup gets a backup_manifest that pg_verifybackup
 * accepts (verify-backup); `--no-manifest` overrides it. A first backup with -j 2, a second
 * with reuse_backup = link (hard links to the first), the second recovered, started and
 * compared with the source; deleting the first makes the second's shared files its own
 * (deduplicated_size recomputed).
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cleanupAll, PgCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, listBackups, startStreaming, type BarmanEnv } from '../helpers/barman-env.js';
import { backupRecorder, createFingerprintData, startStreamingOnSettledData, FINGERPRINT, infoField, recoverFingerprint, walkLinks } from '../helpers/rsync-backup-fixture.js';
import { POSTGRES_USER } from '../helpers/system.js';

describe('backup_method = local-rsync as the postgres user', { timeout: 600_000 }, () => {
  let pg: PgCluster;
  let env: BarmanEnv;
  let tsOid = '';
  const { ids, backupDir, infoText, backup } = backupRecorder(() => env);

  before(async () => {
    pg = await PgCluster.create();
    tsOid = await createFingerprintData(pg, 'lrsync-ts-');
    env = await createBarmanEnv(pg, { osUser: POSTGRES_USER, server: 'lr', extra: { slot_name: 'barman_lr', autogenerate_manifest: 'true' } });
    await startStreamingOnSettledData(env, pg);
  });

  after(async () => {
    await env?.stop();
    await cleanupAll();
  });

  it('backs up with -j 2, writes a backup_manifest that verify-backup accepts', async () => {
    const id = await backup('-j', '2');
    const text = await infoText(id);
    assert.equal(infoField(text, 'mode'), 'rsync-concurrent');
    assert.match(infoField(text, 'copy_stats'), /'number_of_workers': 2/);
    assert.equal(infoField(text, 'deduplicated_size'), infoField(text, 'size'));
    const data = path.join(backupDir(id), 'data');
    assert.match(await fs.readFile(path.join(data, 'backup_label'), 'utf8'), /^LABEL: Barman backup lr /m);
    await fs.access(path.join(data, 'backup_manifest'));
    // The manifest counts in the backup's size (it is one of its files).
    assert.ok(Number(infoField(text, 'size')) > (await fs.stat(path.join(data, 'backup_manifest'))).size);
    // The tablespace link points at the backup's own copy, not at the live tablespace.
    assert.equal(await fs.readlink(path.join(data, 'pg_tblspc', tsOid)), path.join(backupDir(id), tsOid));
    const manifest = await fs.readFile(path.join(data, 'backup_manifest'), 'utf8');
    assert.match(manifest, new RegExp(`"Path": "pg_tblspc/${tsOid}/PG_15_`));
    // Everything belongs to the postgres user (barman_user), 0700 directories.
    const st = await fs.stat(backupDir(id));
    assert.equal(st.mode & 0o777, 0o700);
    const r = await env.run('verify-backup', env.server, 'latest');
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.doesNotMatch(r.stderr, /WAL parsing skipped/);
  });

  it('reuse_backup = link hard-links the unchanged files; the backup recovers to the source data', async (t) => {
    const first = ids[0] ?? '';
    await fs.appendFile(env.configFile, 'reuse_backup = link\n');
    await pg.psql('UPDATE pgbench_branches SET bbalance = bbalance + 11; INSERT INTO marks VALUES (2), (3);');
    await pg.pgbench(['-t', '20', '-c', '1', '-n']);
    const expected = await pg.psql(FINGERPRINT);
    const id = await backup('-j', '2');
    const text = await infoText(id);
    const size = Number(infoField(text, 'size'));
    const dedup = Number(infoField(text, 'deduplicated_size'));
    const walk = await walkLinks(path.join(backupDir(id), 'data'));
    const tsWalk = await walkLinks(path.join(backupDir(id), tsOid));
    t.diagnostic(`data: ${walk.linked}/${walk.files} files linked, tablespace ${tsWalk.linked}/${tsWalk.files}, deduplicated_size ${dedup} of ${size}`);
    assert.ok(walk.linked > walk.files / 2, `only ${walk.linked} of ${walk.files} files are hard links`);
    assert.ok(tsWalk.linked > 0, 'tablespace files are linked too');
    assert.ok(dedup < size / 2, `deduplicated_size ${dedup} vs size ${size}`);
    const pgVersion = path.join('data', 'PG_VERSION');
    assert.equal((await fs.stat(path.join(backupDir(id), pgVersion))).ino, (await fs.stat(path.join(backupDir(first), pgVersion))).ino);
    // show-backup tells what the links saved (Barman 3.4: Incremental size, saving as -NN.NN%).
    const show = await env.ok('show-backup', env.server, id);
    assert.match(show, /^ {4}Incremental size {5}: \S+ \S+ \(-\d+\.\d\d%\)$/m);
    // The manifest of a backup made of links is still right.
    const v = await env.run('verify-backup', env.server, id);
    assert.equal(v.code, 0, `${v.stdout}\n${v.stderr}`);

    assert.equal(await recoverFingerprint(env, id, { owner: POSTGRES_USER, tempPrefix: 'lrsync' }), expected);
  });

  it('--no-manifest overrides autogenerate_manifest', async () => {
    const id = await backup('--no-manifest', '--reuse-backup', 'off');
    await assert.rejects(fs.access(path.join(backupDir(id), 'data', 'backup_manifest')));
    const r = await env.run('verify-backup', env.server, id);
    assert.notEqual(r.code, 0);
  });

  it('deleting the first backup makes the shared files of the second its own (deduplicated_size)', async () => {
    const [first = '', second = ''] = ids;
    const before = Number(infoField(await infoText(second), 'deduplicated_size'));
    await env.ok('delete', env.server, first);
    const text = await infoText(second);
    const after = Number(infoField(text, 'deduplicated_size'));
    assert.ok(after > before, `deduplicated_size ${before} -> ${after}`);
    // The third backup did not reuse the second: nothing is shared any more.
    assert.equal(after, Number(infoField(text, 'size')));
    assert.equal(infoField(text, 'status'), 'DONE');
  });

  it('as another user than postgres, the backup fails with one line saying why, no data copied', async (t) => {
    const other = await createBarmanEnv(pg, { server: 'lrb', extra: { backup_method: 'local-rsync', slot_name: 'barman_lrb' } });
    try {
      await startStreaming(other);
      const r = await other.run('backup', '--immediate-checkpoint', other.server);
      assert.equal(r.code, 1, r.stdout);
      t.diagnostic(r.stderr.trim());
      assert.match(r.stderr, /^ERROR: lrb: .*local-rsync: user barman cannot read .*PostgreSQL OS user/m, r.stderr);
      const list = await listBackups(other);
      assert.ok(list.every((b) => b.status !== 'DONE' && b.status !== 'WAITING_FOR_WALS'), JSON.stringify(list));
      for (const b of list) {
        const data = path.join(other.home, other.server, 'base', b.backup_id, 'data');
        assert.deepEqual(await fs.readdir(data).catch(() => []), []);
      }
    } finally {
      await other.stop();
    }
  });
});
