/**
 * Every PostgreSQL major version our users run, 12 to 18 (15 is Debian's; the others' server
 * binaries come from npm through scripts/install-pg-versions.mjs). For each version, on a small
 * cluster of that version, through one shared sshd:
 *   - WAL shipped by barman-wal-archive (archive_command, ssh to put-wal), archive-wal;
 *   - `barman check` passes with backup_method = rsync; a standard user granted this version's
 *     backup functions has backup privileges (Barman's rule), one without has not;
 *   - an rsync backup (the version's backup API: pg_start_backup/pg_stop_backup before 15,
 *     pg_backup_start/pg_backup_stop after) is DONE;
 *   - on 12 to 15 a backup_method = postgres backup too (Debian's pg_basebackup 15 serves them);
 *     on 16 and later `check` says that the client programs are older than the server;
 *   - a point-in-time recovery to a time between two batches of rows: the recovered cluster
 *     starts with that version's binaries and has exactly the rows committed before the target.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PgConnection } from '../../src/postgres/connection.js';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { cleanupAll, PG_MAJORS, PgCluster, quoteLiteral, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, listBackups, type BarmanEnv } from '../helpers/barman-env.js';
import { startSshd, type Sshd } from '../helpers/sshd.js';
import { BARMAN_USER, POSTGRES_USER, ensureBarmanUser, makeTempDir, runAs, sleep } from '../helpers/system.js';

const ARCHIVE_CLIENT = path.join(path.dirname(path.dirname(BARMAN_SCRIPT)), 'bin', 'barman-wal-archive');
/** The last major version Debian's pg_basebackup / pg_receivewal (15) can serve. */
const CLIENT_MAJOR = 15;
/** BTS_PG_VERSIONS=12,18 limits the run to some versions (while working on one). */
const MAJORS = process.env.BTS_PG_VERSIONS ? PG_MAJORS.filter((m) => process.env.BTS_PG_VERSIONS?.split(',').map(Number).includes(m)) : PG_MAJORS;
const ROWS = `SELECT string_agg(batch || ':' || n, ',' ORDER BY batch) FROM (SELECT batch, count(*) AS n FROM t GROUP BY batch) c`;

describe('PostgreSQL 12 to 18', { timeout: 900_000, concurrency: 2 }, () => {
  let sshd: Sshd;
  /** postgres -> barman (barman-wal-archive) */
  let walSsh = '';
  /** barman -> postgres (rsync backups) */
  let rsyncSsh = '';

  before(async () => {
    await ensureBarmanUser();
    sshd = await startSshd();
    walSsh = await sshd.clientConfigFor(POSTGRES_USER, [BARMAN_USER]);
    rsyncSsh = await sshd.clientConfigFor(BARMAN_USER, [POSTGRES_USER]);
  });

  after(async () => {
    await cleanupAll();
    await sshd?.stop();
  });

  for (const major of MAJORS) {
    describe(`PostgreSQL ${major}`, { concurrency: 1 }, () => {
      let pg: PgCluster;
      let env: BarmanEnv;
      let serverSection = '';
      const backups: { method: string; id: string }[] = [];
      let target = '';

      /** The configuration with backup_method switched (the catalog is the same). */
      const setMethod = async (method: 'rsync' | 'postgres') => {
        const text = await fs.readFile(env.configFile, 'utf8');
        await fs.writeFile(env.configFile, text.replace(/^backup_method = .*$/m, `backup_method = ${method}`));
      };
      /** Close the current WAL segment and wait until it went through barman-wal-archive and archive-wal. */
      const shipWal = async () => {
        const out = await env.ok('switch-wal', '--force', '--archive', '--archive-timeout', '120', env.server);
        assert.match(out, /has been archived/, out);
      };

      before(async () => {
        pg = await PgCluster.create({ version: major, archiveMode: true });
        env = await createBarmanEnv(pg, {
          server: `pg${major}`,
          extra: {
            backup_method: 'rsync',
            ssh_command: `ssh -F ${rsyncSsh} postgres@127.0.0.1`,
            archiver: 'on',
            streaming_archiver: 'off',
            create_slot: 'manual',
          },
        });
        serverSection = env.server;
        await env.run('check', env.server); // creates incoming/ and the other server directories
        const spool = await makeTempDir(`walspool-${major}-`, { owner: POSTGRES_USER, mode: 0o700 });
        const archiveCommand = [ARCHIVE_CLIENT, '-c', env.configFile, '--ssh-config', walSsh, '--spool-dir', spool, '-U', BARMAN_USER, '127.0.0.1', serverSection, '%p'].join(' ');
        await pg.psql(`ALTER SYSTEM SET archive_command = ${quoteLiteral(archiveCommand)}; SELECT pg_reload_conf();`);
        await pg.psql('CREATE TABLE t (id serial PRIMARY KEY, batch int NOT NULL); INSERT INTO t (batch) SELECT 1 FROM generate_series(1, 100);');
      });

      after(async () => {
        await pg?.destroy();
      });

      it('barman-wal-archive ships its WAL; check passes', async () => {
        assert.equal(await pg.psql('SHOW server_version_num').then((v) => Math.floor(Number(v) / 10000)), major);
        await shipWal();
        const r = await env.run('check', env.server);
        assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
        // (`WAL archive` shows only when failing: nothing archived yet.)
        for (const line of ['PostgreSQL: OK', 'superuser or standard user with backup privileges: OK', 'archive_mode: OK', 'archive_command: OK', 'continuous archiving: OK', 'ssh: OK (PostgreSQL server)']) {
          assert.ok(r.stdout.includes(`\t${line}`), `no '${line}' in:\n${r.stdout}`);
        }
      });

      it("a standard user with this version's backup functions granted has backup privileges; one without has not", async () => {
        const fns =
          major >= 15
            ? ['pg_backup_start(text, boolean)', 'pg_backup_stop(boolean)']
            : ['pg_start_backup(text, boolean, boolean)', 'pg_stop_backup()', 'pg_stop_backup(boolean, boolean)'];
        await pg.psql(
          [
            'CREATE ROLE bk LOGIN; CREATE ROLE nobk LOGIN; GRANT pg_monitor TO bk, nobk;',
            ...[...fns, 'pg_switch_wal()', 'pg_create_restore_point(text)'].map((f) => `GRANT EXECUTE ON FUNCTION ${f} TO bk;`),
          ].join('\n'),
        );
        for (const [role, expected] of [['bk', true], ['nobk', false]] as const) {
          const conn = await PgConnection.connect(pg.conninfoFor(role));
          try {
            assert.equal(await conn.hasBackupPrivileges(), expected, role);
          } finally {
            await conn.close();
          }
        }
      });

      it('rsync backup DONE', async () => {
        await env.ok('backup', '--wait', '--wait-timeout', '120', '--immediate-checkpoint', env.server);
        const b = (await listBackups(env))[0];
        assert.equal(b?.status, 'DONE');
        const info = await fs.readFile(path.join(env.home, env.server, 'base', b.backup_id, 'backup.info'), 'utf8');
        assert.match(info, /^mode=rsync-concurrent$/m);
        assert.match(info, new RegExp(`^version=${major}\\d{4}$`, 'm'));
        backups.push({ method: 'rsync', id: b.backup_id });
      });

      if (major <= CLIENT_MAJOR) {
        it(`postgres method (pg_basebackup ${CLIENT_MAJOR}) backup DONE`, async () => {
          await setMethod('postgres');
          try {
            const c = await env.run('check', env.server);
            assert.equal(c.code, 0, `${c.stdout}${c.stderr}`);
            assert.ok(c.stdout.includes('\tpg_basebackup compatible: OK'), c.stdout);
            await env.ok('backup', '--wait', '--wait-timeout', '120', '--immediate-checkpoint', env.server);
            const b = (await listBackups(env))[0];
            assert.equal(b?.status, 'DONE');
            backups.push({ method: 'postgres', id: b.backup_id });
          } finally {
            await setMethod('rsync');
          }
        });
      } else {
        it(`check says pg_basebackup ${CLIENT_MAJOR} is older than the server`, async () => {
          await setMethod('postgres');
          try {
            const c = await env.run('check', env.server);
            assert.equal(c.code, 1, c.stdout);
            assert.match(
              c.stdout,
              new RegExp(`\\tpg_basebackup compatible: FAILED \\(PostgreSQL version: ${major}, pg_basebackup version: ${CLIENT_MAJOR}\\.\\d+: the client programs are older than the server`),
            );
          } finally {
            await setMethod('rsync');
          }
        });
      }

      it('point-in-time recovery: the recovered cluster starts and has exactly the rows before the target', async () => {
        await pg.psql('INSERT INTO t (batch) SELECT 2 FROM generate_series(1, 100);');
        target = await pg.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00:00'");
        await sleep(1100);
        await pg.psql('INSERT INTO t (batch) SELECT 3 FROM generate_series(1, 100);');
        await shipWal();
        assert.equal(await pg.psql(ROWS), '1:100,2:100,3:100');
        for (const b of backups) {
          const dest = await env.newDir(`pitr-${major}-${b.method}-`);
          await env.ok('recover', '--target-time', target, '--target-action', 'promote', env.server, b.id, dest);
          const { cluster, outcome } = await startRecoveredCluster(dest, undefined, { extraConf: { archive_mode: 'off' } });
          try {
            assert.equal(cluster.major, major);
            assert.equal(outcome, 'primary', `${b.method} backup`);
            assert.equal(await cluster.psql(ROWS), '1:100,2:100', `${b.method} backup`);
          } finally {
            await cluster.destroy();
          }
        }
      });
    });
  }
});
