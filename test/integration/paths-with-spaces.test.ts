/**
 * Paths with spaces and shell metacharacters: PGDATA is `data dir` and a tablespace lives in
 * `ts $HOME=x;y` (a space, `$`, `=` and `;`; PostgreSQL refuses quotes there). Backed up with backup_method = rsync over a
 * real sshd (2 jobs, with a low BARMAN_TS_RANGED_MIN_BYTES so that big files go as ranged `dd`
 * reads through ssh) and with backup_method = postgres (pg_basebackup --tablespace-mapping, where
 * `=` must be escaped); each backup is recovered, into destinations whose paths are as
 * unfriendly (a `%p` that PostgreSQL must not expand in restore_command; no `$` there: pg_ctl puts the data directory in double quotes for its shell, so
 * PostgreSQL itself cannot start one whose path holds a `$`), locally with a point-in-time target (restore_command `cp` from a quoted directory)
 * and through --remote-ssh-command (rsync -s, remote scripts, ranged pushes), then started and
 * compared with the source.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cleanupAll, PgCluster, quoteLiteral, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, listBackups, startStreaming, type BarmanEnv } from '../helpers/barman-env.js';
import { startSshd, type Sshd } from '../helpers/sshd.js';
import { BARMAN_USER, ensureBarmanUser, makeTempDir, POSTGRES_USER, runAs } from '../helpers/system.js';

const UGLY = 'ts $HOME=x;y';
const CHECK = `SELECT (SELECT count(*) || ':' || sum(v) FROM in_ts) || '|' || (SELECT count(*) FROM big) || '|' || (SELECT max(tag) FROM marks)`;

describe('PGDATA and tablespace paths with spaces and shell metacharacters', { timeout: 900_000 }, () => {
  let sshd: Sshd;
  let pg: PgCluster;
  let rsyncEnv: BarmanEnv;
  let pgEnv: BarmanEnv;
  let sshToPostgres = '';
  let expected = '';

  /** A directory `name` (created, owned by `owner`) inside a fresh temp dir. */
  const uglyDir = async (prefix: string, owner: string, name: string): Promise<string> => {
    const dir = path.join(await makeTempDir(prefix, { owner, mode: 0o755 }), name);
    await runAs(owner, 'mkdir', ['-m', '0700', dir], { check: true });
    return dir;
  };

  const backup = async (env: BarmanEnv, ...args: string[]): Promise<string> => {
    await env.ok('backup', '--wait', '--wait-timeout', '120', '--immediate-checkpoint', ...args, env.server);
    const list = await listBackups(env);
    assert.equal(list[0]?.status, 'DONE', JSON.stringify(list));
    return list[0]?.backup_id ?? '';
  };

  /** Start a recovered data directory and read CHECK from it. */
  const startAndCheck = async (dest: string): Promise<string> => {
    const { cluster, outcome } = await startRecoveredCluster(dest, undefined, { extraConf: { archive_mode: 'off' } });
    try {
      assert.equal(outcome, 'primary');
      return await cluster.psql(CHECK);
    } finally {
      await cluster.destroy();
    }
  };

  before(async () => {
    await ensureBarmanUser();
    sshd = await startSshd();
    // Ranged reads of files from 1 MiB on: pgbench_accounts-like tables go through dd.
    process.env.BARMAN_TS_RANGED_MIN_BYTES = String(1024 * 1024);
    pg = await PgCluster.create({ dataDirName: 'data dir' });
    const tsDir = await uglyDir('ugly-ts-', POSTGRES_USER, UGLY);
    await pg.psql(`CREATE TABLESPACE ugly LOCATION ${quoteLiteral(tsDir)}`);
    await pg.psql(
      "CREATE TABLE in_ts (v int) TABLESPACE ugly; INSERT INTO in_ts SELECT generate_series(1, 50000); CREATE TABLE big TABLESPACE ugly AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 30000) g; CREATE TABLE marks (tag text); INSERT INTO marks VALUES ('a');",
    );
    expected = await pg.psql(CHECK);
    const fromBarman = await sshd.clientConfigFor(BARMAN_USER, [POSTGRES_USER]);
    sshToPostgres = `ssh -F ${fromBarman} postgres@127.0.0.1`;
    rsyncEnv = await createBarmanEnv(pg, { server: 'rs', extra: { backup_method: 'rsync', ssh_command: sshToPostgres, slot_name: 'barman_rs', parallel_jobs: '2' } });
    pgEnv = await createBarmanEnv(pg, { server: 'pgm', extra: { slot_name: 'barman_pgm' } });
    await startStreaming(rsyncEnv, 60_000);
    await startStreaming(pgEnv, 60_000);
  });

  after(async () => {
    await rsyncEnv?.stop().catch(() => undefined);
    await pgEnv?.stop().catch(() => undefined);
    await cleanupAll();
    await sshd?.stop();
    delete process.env.BARMAN_TS_RANGED_MIN_BYTES;
  });

  it('the source really has those paths', async () => {
    assert.match(await pg.psql('SHOW data_directory'), /\/data dir$/);
    assert.ok((await pg.psql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ugly'")).endsWith(`/${UGLY}`));
  });

  it('rsync backup (2 jobs, ranged dd reads) recovers locally with a PITR target, and remotely', async () => {
    const id = await backup(rsyncEnv);
    const info = await fs.readFile(path.join(rsyncEnv.home, 'rs', 'base', id, 'backup.info'), 'utf8');
    assert.match(info, /ts \$HOME=x/, 'the tablespace location is recorded');
    await pg.psql("INSERT INTO marks VALUES ('after the backup')");

    // Local, point in time: restore_command copies from a directory inside the ugly destination.
    const dest = path.join(await makeTempDir('ugly-dest-', { owner: BARMAN_USER, mode: 0o755 }), "dest 'x';y=50%p");
    const newTs = path.join(await makeTempDir('ugly-newts-', { owner: BARMAN_USER, mode: 0o755 }), `new ${UGLY}`);
    await rsyncEnv.ok('recover', '--target-immediate', '--target-action', 'promote', rsyncEnv.server, id, dest, '--tablespace', `ugly:${newTs}`);
    const auto = await fs.readFile(path.join(dest, 'postgresql.auto.conf'), 'utf8');
    assert.match(auto, /^restore_command = 'cp .*barman_wal.*\/%f %p'$/m);
    assert.equal(await startAndCheck(dest), expected);

    // Remote: the recovery host is reached as postgres through sshd; destination just as ugly.
    const rdest = path.join(await makeTempDir('ugly-rdest-', { owner: POSTGRES_USER, mode: 0o755 }), "remote dest 'x';y");
    const rts = path.join(await makeTempDir('ugly-rts-', { owner: POSTGRES_USER, mode: 0o755 }), `remote ${UGLY}`);
    await rsyncEnv.ok('recover', '-j', '2', rsyncEnv.server, id, rdest, '--remote-ssh-command', sshToPostgres, '--tablespace', `ugly:${rts}`);
    assert.equal(await startAndCheck(rdest), expected);
  });

  it('postgres-method backup (tablespace mapping with an escaped =) recovers', async () => {
    const id = await backup(pgEnv);
    const dest = path.join(await makeTempDir('ugly-pgdest-', { owner: BARMAN_USER, mode: 0o755 }), "pg dest 'x'=y");
    const newTs = path.join(await makeTempDir('ugly-pgts-', { owner: BARMAN_USER, mode: 0o755 }), `pg ${UGLY}`);
    await pgEnv.ok('recover', pgEnv.server, id, dest, '--tablespace', `ugly:${newTs}`);
    const check = await startAndCheck(dest);
    assert.equal(check.split('|').slice(0, 2).join('|'), expected.split('|').slice(0, 2).join('|'));
    assert.equal(check.split('|')[2], 'after the backup');
  });
});
