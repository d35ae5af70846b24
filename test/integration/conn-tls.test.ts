/**
 * Our own PostgreSQL connections follow libpq, against a PostgreSQL 15 that accepts TLS only
 * (`ssl = on`, `hostnossl ... reject`, certificates made by the test with openssl): each of
 * these conninfo strings passes `barman check` (our connection, pg_receivewal's streaming) and
 * takes a backup (pg_basebackup gets the same string):
 *   - no sslmode at all (libpq's default `prefer`: TLS when the server offers it);
 *   - `sslmode=verify-full sslrootcert=CA`, host name checked (host=localhost, hostaddr=127.0.0.1);
 *   - `service=NAME` from ~/.pg_service.conf of the barman user, its password from ~/.pgpass;
 *   - client-certificate authentication (`cert` in pg_hba.conf, sslcert/sslkey);
 *   - a postgresql:// URI with two hosts, the first one down, target_session_attrs=read-write.
 * And the refusals libpq makes: sslmode=disable, verify-full against a CA that signed nothing
 * here, a ~/.pgpass readable by others (libpq's permission rule).
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { cleanupAll, PgCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, type BarmanEnv } from '../helpers/barman-env.js';
import { createTestPki, type TestPki } from '../helpers/tls.js';
import { BARMAN_USER, ensureBarmanUser, freePort, makeTempDir, runAs, sleep, type ExecResult } from '../helpers/system.js';

const PW_USER = 'pwuser';
const PW = 'pw-s3cret';
const CERT_USER = 'certuser';

describe('libpq connections to a TLS-only PostgreSQL', { timeout: 600_000 }, () => {
  let pki: TestPki;
  let pg: PgCluster;
  let env: BarmanEnv;
  /** HOME of the barman user for these runs: ~/.pg_service.conf and ~/.pgpass live there. */
  let home = '';
  const servers: Record<string, string> = {};

  /** `barman -c CONF ...` as the barman user with HOME = the test's home. */
  const barman = (...args: string[]): Promise<ExecResult> =>
    runAs(BARMAN_USER, 'env', [`HOME=${home}`, process.execPath, BARMAN_SCRIPT, '-c', env.configFile, ...args], { timeoutMs: 180_000 });
  const addServer = async (name: string, conninfo: string): Promise<void> => {
    servers[name] = conninfo;
    const section = [
      `[${name}]`,
      `conninfo = ${conninfo}`,
      `streaming_conninfo = ${conninfo}`,
      'backup_method = postgres',
      'streaming_archiver = on',
      `slot_name = ${name}`,
      'create_slot = auto',
    ].join('\n');
    await fs.appendFile(env.configFile, `\n${section}\n`);
  };
  const checkLines = async (name: string) => {
    const r = await barman('check', name);
    return { ...r, text: `exit ${r.code}\n${r.stdout}${r.stderr}` };
  };

  before(async () => {
    await ensureBarmanUser();
    pki = await createTestPki();
    const tls = [
      'hostnossl all         all        0.0.0.0/0     reject',
      'hostnossl replication all        0.0.0.0/0     reject',
      `hostssl   all         ${CERT_USER}   127.0.0.1/32  cert`,
      `hostssl   replication ${CERT_USER}   127.0.0.1/32  cert`,
      `hostssl   all         ${PW_USER}     127.0.0.1/32  scram-sha-256`,
      `hostssl   replication ${PW_USER}     127.0.0.1/32  scram-sha-256`,
    ];
    // Local (Unix socket) connections stay trusted: the harness administers the server that way too.
    pg = await PgCluster.create({ extraConf: pki.serverConf, extraHba: tls });
    await pg.createUser(CERT_USER, { superuser: true, replication: true });
    await pg.createUser(PW_USER, { superuser: true, replication: true, password: PW });
    await pg.psql('CREATE TABLE t AS SELECT generate_series(1, 1000) AS x');

    const port = pg.port;
    const ca = pki.caCert;
    env = await createBarmanEnv(pg, { server: 'plain', extra: { conninfo: `host=127.0.0.1 port=${port} user=postgres dbname=postgres`, streaming_conninfo: `host=127.0.0.1 port=${port} user=postgres dbname=postgres`, slot_name: 'plain' } });
    servers.plain = `host=127.0.0.1 port=${port} user=postgres dbname=postgres`;
    await addServer('verify', `host=localhost hostaddr=127.0.0.1 port=${port} user=postgres dbname=postgres sslmode=verify-full sslrootcert=${ca}`);
    await addServer('service', 'service=tlsprod');
    const cert = await pki.clientCert(CERT_USER, BARMAN_USER);
    await addServer('cert', `host=localhost hostaddr=127.0.0.1 port=${port} user=${CERT_USER} dbname=postgres sslmode=verify-full sslrootcert=${ca} sslcert=${cert.cert} sslkey=${cert.key}`);
    const down = await freePort();
    await addServer('twohosts', `postgresql://postgres@127.0.0.1:${down},127.0.0.1:${port}/postgres?target_session_attrs=read-write`);

    home = await makeTempDir('barman-home-', { owner: BARMAN_USER, mode: 0o700 });
    const service = `[tlsprod]\nhost=localhost\nhostaddr=127.0.0.1\nport=${port}\nuser=${PW_USER}\ndbname=postgres\nsslmode=verify-full\nsslrootcert=${ca}\n`;
    await runAs(BARMAN_USER, 'tee', [path.join(home, '.pg_service.conf')], { input: service, check: true });
    await runAs(BARMAN_USER, 'tee', [path.join(home, '.pgpass')], { input: `*:*:*:${PW_USER}:${PW}\n`, check: true });
    await runAs(BARMAN_USER, 'chmod', ['0600', path.join(home, '.pgpass')], { check: true });

    // receive-wal for every server (pg_receivewal with each conninfo), then every check passes.
    const r = await barman('cron');
    assert.equal(r.code, 0, r.stderr);
  });

  after(async () => {
    for (const name of Object.keys(servers)) await barman('receive-wal', '--stop', name).catch(() => undefined);
    await cleanupAll();
  });

  /**
   * `barman check NAME` passes (retried for up to a minute while cron's receive-wal starts and
   * streams its first WAL file), then a backup is DONE.
   */
  const checkAndBackup = async (name: string): Promise<void> => {
    let last = '';
    const deadline = Date.now() + 60_000;
    for (;;) {
      const c = await checkLines(name);
      last = c.text;
      if (c.code === 0 || /PostgreSQL: FAILED/.test(c.stdout) || Date.now() > deadline) break;
      // `WAL archive` passes once a WAL file has been streamed and archived.
      await pg.switchWal();
      await barman('cron');
      await sleep(500);
    }
    assert.match(last, /^exit 0\n/, last);
    assert.match(last, /PostgreSQL: OK/);
    assert.match(last, /PostgreSQL streaming: OK/);
    assert.match(last, /superuser or standard user with backup privileges: OK/);
    const b = await barman('backup', '--wait', '--wait-timeout', '120', '--immediate-checkpoint', name);
    assert.equal(b.code, 0, `${b.stdout}\n${b.stderr}`);
    const list = JSON.parse((await barman('-f', 'json', 'list-backups', name)).stdout) as Record<string, { status: string }[]>;
    assert.equal(list[name]?.[0]?.status, 'DONE', JSON.stringify(list));
  };

  it('conninfo without sslmode: libpq prefers TLS, the TLS-only server lets it in', async () => {
    await checkAndBackup('plain');
    // The server saw TLS from barman's own session and from pg_receivewal's.
    const ssl = await pg.psql("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.application_name = 'barman_receive_wal' AND a.usename = 'postgres'");
    assert.ok(Number(ssl) >= 1, `pg_receivewal over TLS: ${ssl}`);
  });

  it('sslmode=verify-full with sslrootcert, host name checked', async () => {
    await checkAndBackup('verify');
  });

  it('service= from ~/.pg_service.conf, the password from ~/.pgpass', async () => {
    await checkAndBackup('service');
  });

  it('client-certificate authentication (sslcert, sslkey)', async () => {
    await checkAndBackup('cert');
  });

  it('a URI with two hosts, the first one down, target_session_attrs=read-write', async () => {
    await checkAndBackup('twohosts');
  });

  it('libpq refusals: sslmode=disable, a CA that signed nothing, a ~/.pgpass others can read', async () => {
    const conf = `${await fs.readFile(env.configFile, 'utf8')}
[nossl]
conninfo = host=127.0.0.1 port=${pg.port} user=postgres dbname=postgres sslmode=disable
backup_method = postgres
archiver = on
[wrongca]
conninfo = host=localhost hostaddr=127.0.0.1 port=${pg.port} user=postgres dbname=postgres sslmode=verify-full sslrootcert=${pki.otherCaCert}
backup_method = postgres
archiver = on
`;
    await runAs(BARMAN_USER, 'tee', [env.configFile], { input: conf, check: true });
    for (const name of ['nossl', 'wrongca']) {
      const c = await checkLines(name);
      assert.notEqual(c.code, 0, c.text);
      assert.match(c.stdout, /PostgreSQL: FAILED/, c.text);
    }
    const log = await fs.readFile(path.join(env.root, 'barman.log'), 'utf8');
    assert.match(log, /no pg_hba\.conf entry .* no encryption|rejects connection .* no encryption/, 'the server refused the unencrypted connection');
    assert.match(log, /certificate verify failed/, 'libpq refused the server certificate');

    await runAs(BARMAN_USER, 'chmod', ['0640', path.join(home, '.pgpass')], { check: true });
    try {
      const c = await checkLines('service');
      assert.match(c.stdout, /PostgreSQL: FAILED/, c.text);
    } finally {
      await runAs(BARMAN_USER, 'chmod', ['0600', path.join(home, '.pgpass')], { check: true });
    }
  });
});
