/**
 * transfer_method = agent on the restore side, and from a standby, on real PostgreSQL 15:
 * barman backs up a streaming standby through the agent (ssh_command, as postgres), then
 *  - a local delta restore (--delta-restore, the agent run locally) over an older restore, with
 *    extra and damaged files, gives exactly the files of a full restore of the same backup, and
 *    sends few pages;
 *  - a remote restore through the agent (--remote-ssh-command), then a remote delta restore over
 *    it, give the same files too, and start with the right rows;
 *  - Barman 3.4 (/usr/bin/barman) reads the catalog: list-backups, list-files (the same files as
 *    ours: the agent's metadata is outside base/<id>), check-backup, recover, delete; the
 *    metadata of the backup Barman deleted is swept by the next agent backup.
 */
import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cleanupAll, PgCluster, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, listBackups, readLog, startStreaming, type BarmanEnv } from '../helpers/barman-env.js';
import { createFingerprintData, FINGERPRINT } from '../helpers/rsync-backup-fixture.js';
import { startStandby, waitStandbyCaughtUp, type Standby } from '../helpers/standby.js';
import { startSshd, type Sshd } from '../helpers/sshd.js';
import { assertSameTree, treeFacts as facts } from '../helpers/tree-facts.js';
import { BARMAN_USER, ensureBarmanUser, makeTempDir, POSTGRES_USER, runAs } from '../helpers/system.js';

/** Files written by the restore itself (settings, WAL), whose times are the restore's own. */
const WRITTEN_BY_RESTORE = /^(pg_wal\/|postgresql\.auto\.conf|postgresql\.conf|\.barman-recover\.info)/;

const treeFacts = (root: string) => facts(root, WRITTEN_BY_RESTORE);

describe('transfer_method = agent: standby backups, delta and remote restores, Barman 3.4', { timeout: 600_000 }, () => {
  let primary: PgCluster;
  let standby: Standby;
  let sshd: Sshd;
  let ssh = '';
  let env: BarmanEnv;
  let tsOid = '';
  const backups: { id: string; fingerprint: string }[] = [];
  let fullB = '';
  const PKG_BARMAN = '/usr/bin/barman';

  const backupStandby = async (): Promise<string> => {
    await primary.checkpoint();
    await waitStandbyCaughtUp(primary, standby);
    const fingerprint = await standby.psql(FINGERPRINT);
    const out = await env.ok('backup', '--wait', '--wait-timeout', '120', '--immediate-checkpoint', env.server);
    assert.match(out, /Backing up from a standby/);
    const list = await listBackups(env);
    assert.equal(list[0]?.status, 'DONE', JSON.stringify(list));
    const id = list[0]?.backup_id ?? '';
    backups.push({ id, fingerprint });
    return id;
  };
  /** Restore `id` (tablespace `extra` into `ts`) into `dest`; extra recover arguments. */
  const restore = (id: string, dest: string, ts: string, ...args: string[]) => env.ok('recover', env.server, id, dest, '--tablespace', `extra:${ts}`, ...args);
  const pagesSent = async (): Promise<[number, number]> => {
    const m = [...(await readLog(env)).matchAll(/agent restore: \d+ files, (\d+) of (\d+) pages sent/g)].at(-1);
    return [Number(m?.[1]), Number(m?.[2])];
  };

  before(async () => {
    await ensureBarmanUser();
    primary = await PgCluster.create();
    tsOid = await createFingerprintData(primary, 'agent-r-ts-');
    await primary.psql('CREATE TABLE churn AS SELECT g, md5(g::text) AS h FROM generate_series(1, 50000) g; VACUUM (FREEZE);');
    // The standby's copy of the tablespace goes elsewhere on this same host.
    const tsDir = await primary.psql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'extra'");
    const standbyTs = path.join(await makeTempDir('agent-r-sbts-', { owner: POSTGRES_USER, mode: 0o755 }), 'space');
    standby = await startStandby(primary, { basebackupArgs: ['-T', `${tsDir}=${standbyTs}`] });
    sshd = await startSshd();
    const cfg = await sshd.clientConfigFor(BARMAN_USER, [POSTGRES_USER]);
    ssh = `ssh -F ${cfg} postgres@127.0.0.1`;
    env = await createBarmanEnv(standby, {
      server: 'ags',
      extra: { primary_conninfo: primary.conninfo, slot_name: 'barman_ags', backup_method: 'rsync', transfer_method: 'agent', reuse_backup: 'link', ssh_command: ssh, parallel_jobs: '2' },
    });
    // A standby cannot switch WAL: the primary's switch reaches the archive through the standby.
    await startStreaming(env, 120_000, primary);
  });

  after(async () => {
    await env?.stop();
    await cleanupAll();
    await sshd?.stop();
  });

  it('backs up a standby through the agent, then an incremental after changes on the primary', async () => {
    const a = await backupStandby();
    assert.match(await env.ok('verify-backup', env.server, a), /checksums of \d+ files OK/);
    await primary.psql(
      "UPDATE churn SET h = 'changed' WHERE g BETWEEN 100 AND 300; DELETE FROM churn WHERE g > 45000; VACUUM churn; " +
        'INSERT INTO marks VALUES (5); CREATE TABLE fresh AS SELECT generate_series(1, 1000) g; UPDATE in_ts SET v = -v WHERE v < 50;',
    );
    fullB = await backupStandby();
    assert.match(await env.ok('verify-backup', env.server, fullB), /checksums of \d+ files OK/);
    assert.match(await readLog(env), /agent copy: .* sent in part/);
  });

  it('a local delta restore over an older restore gives the files of a full restore, sending few pages', async () => {
    const [a, b] = backups;
    assert.ok(a && b);
    const root = await makeTempDir('agent-delta-', { owner: BARMAN_USER, mode: 0o755 });
    const full = path.join(root, 'full');
    const delta = path.join(root, 'delta');
    await restore(b.id, full, path.join(root, 'full-ts'));
    await restore(a.id, delta, path.join(root, 'delta-ts'));
    // The older restore drifted: an extra file and directory, a damaged relation page, a lost file.
    const churn = await primary.psql("SELECT pg_relation_filepath('churn')");
    await runAs(BARMAN_USER, 'sh', ['-c', `echo x > ${delta}/base/junk && mkdir -p ${delta}/extra_dir/sub && echo y > ${delta}/extra_dir/sub/f`], { check: true });
    const fh = await fs.open(path.join(delta, churn), 'r+');
    await fh.write(Buffer.alloc(100, 0xee), 0, 100, 8192 * 3);
    await fh.close();
    await fs.rm(path.join(delta, 'PG_VERSION'));
    await restore(b.id, delta, path.join(root, 'delta-ts'), '--delta-restore');
    // The restores differ only in where their tablespace links point.
    const links = (k: string) => k.startsWith('pg_tblspc/');
    assertSameTree(await treeFacts(delta), await treeFacts(full), links);
    assert.equal(await fs.readlink(path.join(delta, 'pg_tblspc', tsOid)), path.join(root, 'delta-ts'));
    assertSameTree(await treeFacts(path.join(root, 'delta-ts')), await treeFacts(path.join(root, 'full-ts')));
    const [sent, total] = await pagesSent();
    assert.ok(sent > 0 && sent < total / 3, `delta restore sent ${sent} of ${total} pages`);
    const { cluster } = await startRecoveredCluster(delta, undefined, { extraConf: { archive_mode: 'off' } });
    try {
      assert.equal(await cluster.psql(FINGERPRINT), b.fingerprint);
    } finally {
      await cluster.destroy();
    }
  });

  it('a remote restore through the agent, then a remote delta restore over it, give the same files and rows', async () => {
    const [a, b] = backups;
    assert.ok(a && b);
    const root = await makeTempDir('agent-remote-', { owner: BARMAN_USER, mode: 0o755 });
    const full = path.join(root, 'full');
    await restore(b.id, full, path.join(root, 'full-ts'));
    const remoteRoot = await makeTempDir('agent-remote-pg-', { owner: POSTGRES_USER, mode: 0o755 });
    const dest = path.join(remoteRoot, 'data');
    const ts = path.join(remoteRoot, 'ts');
    await restore(a.id, dest, ts, '--remote-ssh-command', ssh, '-j', '2');
    const [sentA, totalA] = await pagesSent();
    assert.equal(sentA, totalA, 'a restore into an empty directory sends every page');
    await restore(b.id, dest, ts, '--remote-ssh-command', ssh, '--delta-restore');
    const [sentB, totalB] = await pagesSent();
    assert.ok(sentB < totalB / 3, `remote delta restore sent ${sentB} of ${totalB} pages`);
    assertSameTree(await treeFacts(dest), await treeFacts(full), (k) => k.startsWith('pg_tblspc/'));
    assert.equal(await fs.readlink(path.join(dest, 'pg_tblspc', tsOid)), ts);
    assertSameTree(await treeFacts(ts), await treeFacts(path.join(root, 'full-ts')));
    const { cluster } = await startRecoveredCluster(dest, undefined, { extraConf: { archive_mode: 'off' } });
    try {
      assert.equal(await cluster.psql(FINGERPRINT), b.fingerprint);
    } finally {
      await cluster.destroy();
    }
  });

  it('Barman 3.4 reads the catalog: list-backups, list-files, check-backup, recover, delete; the next agent backup sweeps what it left', { skip: !existsSync(PKG_BARMAN) && 'Barman 3.4 is not installed' }, async () => {
    const [a, b] = backups;
    assert.ok(a && b);
    const b34 = (...args: string[]) => runAs(BARMAN_USER, PKG_BARMAN, ['-c', env.configFile, ...args]);
    // backup.info keys and xlog.db columns newer than Barman 3.4 (which it refuses) are the
    // catalog writers' business, not the agent's: left out here, so only the agent's files are tried.
    for (const { id } of backups) {
      const file = path.join(env.home, env.server, 'base', id, 'backup.info');
      const text = await fs.readFile(file, 'utf8');
      await fs.writeFile(file, text.replace(/^(children_backup_ids|cluster_size|data_checksums|encryption|parent_backup_id|summarize_wal)=.*\n/gm, ''));
    }
    const xlogdb = path.join(env.home, env.server, 'wals', 'xlog.db');
    const lines = (await fs.readFile(xlogdb, 'utf8')).split('\n').map((l) => l.split('\t').slice(0, 4).join('\t'));
    await fs.writeFile(xlogdb, lines.join('\n'));
    const list = await b34('list-backups', env.server);
    assert.equal(list.code, 0, list.stderr);
    for (const { id } of backups) assert.match(list.stdout, new RegExp(`${env.server} ${id} .* Size: `));
    const theirs = await b34('list-files', '--target', 'data', env.server, b.id);
    assert.equal(theirs.code, 0, theirs.stderr);
    const ours = await env.ok('list-files', '--target', 'data', env.server, b.id);
    assert.deepEqual(theirs.stdout.trim().split('\n').sort(), ours.trim().split('\n').sort());
    assert.doesNotMatch(theirs.stdout, /agent|maps\.bin|files\.jsonl/);
    const check = await b34('check-backup', env.server, b.id);
    assert.equal(check.code, 0, check.stderr);
    const root = await makeTempDir('agent-b34-', { owner: BARMAN_USER, mode: 0o755 });
    const theirsDir = path.join(root, 'b34');
    const oursDir = path.join(root, 'ours');
    const rec = await b34('recover', env.server, b.id, theirsDir, '--tablespace', `extra:${path.join(root, 'b34-ts')}`);
    assert.equal(rec.code, 0, rec.stderr);
    await env.ok('recover', env.server, b.id, oursDir, '--tablespace', `extra:${path.join(root, 'ours-ts')}`);
    const data = (facts: Map<string, string>) => new Map([...facts].filter(([k]) => k.startsWith('base/') || k.startsWith('global/')));
    assertSameTree(data(await treeFacts(theirsDir)), data(await treeFacts(oursDir)));
    assertSameTree(await treeFacts(path.join(root, 'b34-ts')), await treeFacts(path.join(root, 'ours-ts')));
    // Barman deletes the older backup and leaves our metadata behind; the next agent backup sweeps it.
    const del = await b34('delete', env.server, a.id);
    assert.equal(del.code, 0, del.stderr);
    assert.ok(existsSync(path.join(env.home, env.server, 'agent', a.id)));
    await backupStandby();
    assert.equal(existsSync(path.join(env.home, env.server, 'agent', a.id)), false);
    assert.ok(existsSync(path.join(env.home, env.server, 'agent', b.id)));
  });
});
