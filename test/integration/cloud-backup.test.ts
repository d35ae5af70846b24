/**
 * The barman-cloud-* tools end to end on real object stores (s3rver, Azurite on 127.0.0.1) and
 * a real PostgreSQL 15 whose archive_command is our barman-cloud-wal-archive (to both stores):
 * per provider a backup, the list, a restore and a point-in-time recovery to a restore point
 * with restore_command = our barman-cloud-wal-restore, checked row by row; then both ways with
 * Barman 3.4's cloud tools on S3 (theirs recover our backup, ours recover theirs).
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { startAzurite, startS3rver, type ObjectStoreServer } from '../helpers/object-stores.js';
import { cleanupAll, PgCluster, quoteLiteral, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { POSTGRES_USER, makeTempDir, runAs } from '../helpers/system.js';
import { run } from '../../src/util/proc.js';

const REPO = path.dirname(path.dirname(BARMAN_SCRIPT));
const BIN = (name: string) => path.join(REPO, 'bin', name.endsWith('-archive') || name.endsWith('wal-restore') ? name : `${name}.js`);
const SERVER = 'pg';

interface Store {
  server: ObjectStoreServer;
  url: string;
  /** Our WAL compression for this store. */
  walFlag: string;
}

function envLines(env: Record<string, string>): string {
  return Object.entries(env)
    .map(([k, v]) => `export ${k}='${v.replace(/'/g, "'\\''")}'`)
    .join('\n');
}

/** Run one of our cloud tools as root with the store's credentials. */
async function ours(store: Store, tool: string, args: string[], extraEnv: Record<string, string> = {}) {
  return run(process.execPath, [BIN(tool), ...store.server.args, ...args], { env: { ...process.env, ...store.server.env, ...extraEnv } });
}

async function barman34(store: Store, tool: string, args: string[]) {
  return run(`/usr/bin/${tool}`, [...store.server.args, ...args], { env: { ...process.env, ...store.server.env } });
}

describe('barman-cloud tools with PostgreSQL 15', { timeout: 600_000 }, () => {
  const stores: Store[] = [];
  let pg: PgCluster;
  let work = '';
  let rows = 0;

  const insert = async (n: number) => {
    await pg.psql(`INSERT INTO t SELECT g, md5(g::text) FROM generate_series(${rows + 1}, ${rows + n}) g;`);
    rows += n;
  };

  /** A wrapper script that runs `tool` with the store's credentials (for PostgreSQL's commands). */
  const wrapper = async (name: string, store: Store, tool: string, fixed: string[]) => {
    const file = path.join(work, name);
    await fs.writeFile(file, `#!/bin/sh\n${envLines(store.server.env)}\nexec ${BIN(tool)} ${[...store.server.args, ...fixed].map((a) => `'${a}'`).join(' ')} "$@"\n`, { mode: 0o755 });
    return file;
  };

  /** Recover `dest` to restore point `rp` with `restoreCmd`, then check the table. */
  const recoverAndCount = async (dest: string, restoreCmd: string, rp: string, expected: number) => {
    await fs.appendFile(path.join(dest, 'postgresql.auto.conf'), `restore_command = '${restoreCmd} %f %p'\nrecovery_target_name = '${rp}'\nrecovery_target_action = 'promote'\narchive_mode = off\n`);
    await fs.writeFile(path.join(dest, 'recovery.signal'), '');
    const rec = await startRecoveredCluster(dest);
    try {
      assert.equal(rec.outcome, 'primary');
      assert.equal(await rec.cluster.psql('SELECT count(*), max(id) FROM t;'), `${expected}|${expected}`);
      // The tablespace came back where --tablespace put it.
      assert.equal(await rec.cluster.psql('SELECT count(*) FROM t2;'), '4321');
      assert.equal(await fs.realpath(path.join(dest, 'pg_tblspc', await rec.cluster.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'tbs';"))), await fs.realpath(`${dest}-tbs`));
    } finally {
      await rec.cluster.destroy();
    }
  };

  const waitArchivedAll = async () => {
    const wal = await pg.switchWal();
    await pg.waitArchived(wal, 120_000);
  };

  before(async () => {
    const [s3, az] = await Promise.all([startS3rver(), startAzurite()]);
    stores.push({ server: s3, url: s3.url('bkt', 'pfx'), walFlag: '-z' }, { server: az, url: az.url('cont', 'pfx'), walFlag: '--zstd' });
    work = await makeTempDir('cloud-', { owner: POSTGRES_USER, mode: 0o755 });
    const archivers: string[] = [];
    for (const [i, s] of stores.entries()) {
      const spool = path.join(work, `archive-spool-${i}`);
      archivers.push(await wrapper(`archive-${i}.sh`, s, 'barman-cloud-wal-archive', ['--spool-dir', spool, s.walFlag, s.url, SERVER]));
    }
    pg = await PgCluster.create({ archiveMode: true, archiveCommand: archivers.map((a) => `${a} %p`).join(' && ') });
    const tbs = path.join(work, 'tbs');
    await fs.mkdir(tbs);
    await runAs(POSTGRES_USER, 'true');
    await fs.chown(tbs, (await fs.stat(pg.dataDir)).uid, (await fs.stat(pg.dataDir)).gid);
    await pg.psql(`CREATE TABLESPACE tbs LOCATION ${quoteLiteral(tbs)}; CREATE TABLE t2 TABLESPACE tbs AS SELECT g AS id FROM generate_series(1, 4321) g;`);
    await pg.psql('CREATE TABLE t (id int PRIMARY KEY, v text);');
    await insert(1000);
    await waitArchivedAll();
  });

  after(async () => {
    await cleanupAll();
    await Promise.all(stores.map((s) => s.server.stop()));
  });

  for (const index of [0, 1]) {
    it(`backs up, lists, restores and recovers to a restore point (${index === 0 ? 'aws-s3' : 'azure-blob-storage'})`, async () => {
      const store = stores[index] as Store;
      const backup = await ours(store, 'barman-cloud-backup', ['-z', '-J', '3', '--immediate-checkpoint', '-h', '127.0.0.1', '-p', String(pg.port), '-U', 'postgres', '-n', `nightly-${index}`, store.url, SERVER]);
      assert.equal(backup.code, 0, backup.stderr);
      await insert(500);
      const keptRows = rows;
      const rp = `rp_${index}`;
      await pg.psql(`SELECT pg_create_restore_point(${quoteLiteral(rp)});`);
      await insert(700); // after the target: must not be recovered
      await waitArchivedAll();

      const list = await ours(store, 'barman-cloud-backup-list', [store.url, SERVER]);
      assert.equal(list.code, 0, list.stderr);
      const lines = list.stdout.trim().split('\n');
      assert.match(lines[0] as string, /^Backup ID\s+End Time\s+Begin Wal\s+Archival Status\s+Name/);
      const mine = lines.find((l) => l.includes(`nightly-${index}`));
      assert.ok(mine, list.stdout);
      const id = (mine as string).slice(0, 20).trim();
      assert.match(id, /^\d{8}T\d{6}$/);
      // One tar for the tablespace beside data.tar.gz.
      const show = JSON.parse((await ours(store, 'barman-cloud-backup-show', ['--format', 'json', store.url, SERVER, id])).stdout) as { cloud: { tablespaces: Array<[string, number, string]> } };
      assert.equal(show.cloud.tablespaces[0]?.[0], 'tbs');
      const json = JSON.parse((await ours(store, 'barman-cloud-backup-list', ['--format', 'json', store.url, SERVER])).stdout) as { backups_list: Array<Record<string, unknown>> };
      const entry = json.backups_list.find((b) => b.backup_id === id);
      assert.ok(entry);
      assert.equal(entry.status, 'DONE');
      assert.equal(entry.server_name, 'cloud');
      assert.match(String(entry.backup_label), /^'START WAL LOCATION: .*\\n/);
      assert.match(String(entry.end_time), /^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$/);

      const dest = path.join(work, `restore-${index}`);
      const restore = await ours(store, 'barman-cloud-restore', ['--tablespace', `tbs:${dest}-tbs`, store.url, SERVER, `nightly-${index}`, dest]);
      assert.equal(restore.code, 0, restore.stderr);
      const restoreCmd = await wrapper(`restore-${index}.sh`, store, 'barman-cloud-wal-restore', ['--spool-dir', path.join(work, `restore-spool-${index}`), store.url, SERVER]);
      await recoverAndCount(dest, restoreCmd, rp, keptRows);
    });
  }

  it("Barman 3.4's cloud tools recover our backup, ours recover Barman's (aws-s3)", async () => {
    const store = stores[0] as Store;
    // Ours → theirs.
    const listed = await barman34(store, 'barman-cloud-backup-list', [store.url, SERVER]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /nightly-0/);
    const dest = path.join(work, 'theirs-restore');
    const r = await barman34(store, 'barman-cloud-restore', ['--tablespace', `tbs:${dest}-tbs`, store.url, SERVER, 'nightly-0', dest]);
    assert.equal(r.code, 0, r.stderr);
    const theirWalRestore = path.join(work, 'theirs-wal-restore.sh');
    await fs.writeFile(theirWalRestore, `#!/bin/sh\n${envLines(store.server.env)}\nexec /usr/bin/barman-cloud-wal-restore ${store.server.args.join(' ')} ${store.url} ${SERVER} "$@"\n`, { mode: 0o755 });
    await recoverAndCount(dest, theirWalRestore, 'rp_0', 1500);

    // Theirs → ours: Barman's barman-cloud-backup into the same bucket and server.
    await insert(300);
    const b = await barman34(store, 'barman-cloud-backup', ['-z', '--immediate-checkpoint', '-h', '127.0.0.1', '-p', String(pg.port), '-U', 'postgres', '-n', 'theirs', store.url, SERVER]);
    assert.equal(b.code, 0, b.stderr);
    await insert(200);
    const expected = rows;
    await pg.psql("SELECT pg_create_restore_point('rp_theirs');");
    await insert(100);
    await waitArchivedAll();
    const ourList = await ours(store, 'barman-cloud-backup-list', [store.url, SERVER]);
    assert.match(ourList.stdout, /theirs/);
    // Same list and show, byte for byte, in both formats (their backups and ours side by side).
    assert.equal(ourList.stdout, (await barman34(store, 'barman-cloud-backup-list', [store.url, SERVER])).stdout);
    for (const args of [['--format', 'json', store.url, SERVER], [store.url, SERVER, 'nightly-0'], ['--format', 'json', store.url, SERVER, 'nightly-0'], [store.url, SERVER, 'theirs']]) {
      const tool = args.length === 4 && args[0] === '--format' ? 'barman-cloud-backup-list' : 'barman-cloud-backup-show';
      const mine = await ours(store, tool, args);
      const theirs = await barman34(store, tool, args);
      assert.equal(theirs.code, 0, theirs.stderr);
      assert.equal(mine.stdout, theirs.stdout, `${tool} ${args.join(' ')}`);
    }
    const dest2 = path.join(work, 'ours-restore-theirs');
    const r2 = await ours(store, 'barman-cloud-restore', ['--tablespace', `tbs:${dest2}-tbs`, store.url, SERVER, 'theirs', dest2]);
    assert.equal(r2.code, 0, r2.stderr);
    const restoreCmd = await wrapper('restore-theirs.sh', store, 'barman-cloud-wal-restore', ['--spool-dir', path.join(work, 'restore-spool-theirs'), store.url, SERVER]);
    await recoverAndCount(dest2, restoreCmd, 'rp_theirs', expected);
  });
});
