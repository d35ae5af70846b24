/**
 * WAL shipping through our own clients over a real sshd (test/helpers/sshd.ts), end to end on
 * PostgreSQL 15:
 *   archive_command = bin/barman-wal-archive … 127.0.0.1 SRV %p   (run by PostgreSQL as postgres)
 *     → ssh barman@127.0.0.1 barman put-wal SRV → incoming/ → archive-wal → wals/
 *   restore_command = bin/barman-wal-restore -p 8 … 127.0.0.1 SRV %f %p
 *     → ssh barman@127.0.0.1 barman get-wal --batch 8 → spool → pg_wal
 *
 * Proves: the --test call; a burst of segments all reaching incoming/ and the archive, most of
 * them pushed ahead in one ssh session and then served by the sh fast path (markers); the
 * archiving lines of `barman check`; client-side zstd/lz4 segments kept compressed in the archive
 * and catalogued as such; a point-in-time recovery that can only succeed with WAL fetched by our
 * restore client, with part of it served from the spool; and the restore client's exit codes.
 */
import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { cleanupAll, PgCluster, quoteLiteral, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, listBackups, readLog, type BarmanEnv } from '../helpers/barman-env.js';
import { startSshd, type Sshd } from '../helpers/sshd.js';
import { BARMAN_USER, POSTGRES_USER, ensureBarmanUser, freePort, makeTempDir, runAs, sleep } from '../helpers/system.js';

const REPO = path.dirname(path.dirname(BARMAN_SCRIPT));
const ARCHIVE_CLIENT = path.join(REPO, 'bin', 'barman-wal-archive');
const RESTORE_CLIENT = path.join(REPO, 'bin', 'barman-wal-restore');
const SEGMENT_RE = /^[0-9A-F]{24}$/;
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
const LZ4_MAGIC = Buffer.from([0x04, 0x22, 0x4d, 0x18]);
const BURST = 10;

describe('barman-wal-archive / barman-wal-restore over a real sshd', { timeout: 300_000 }, () => {
  let sshd: Sshd;
  let sshConfig = '';
  let archiveSpool = '';
  let restoreSpool = '';
  let pg: PgCluster;
  let env: BarmanEnv;
  let incoming = '';
  let walsDir = '';
  let backupId = '';

  const srvName = () => env.server;
  const archiveCommand = (...extra: string[]) =>
    [ARCHIVE_CLIENT, '-c', env.configFile, '--ssh-config', sshConfig, '--spool-dir', archiveSpool, ...extra, '-U', BARMAN_USER, '127.0.0.1', srvName(), '%p'].join(' ');
  const setArchiveCommand = async (cmd: string) => {
    await pg.psql(`ALTER SYSTEM SET archive_command = ${quoteLiteral(cmd)}; SELECT pg_reload_conf();`);
    // The archiver adopts a new archive_command when it wakes up for the reload (SIGHUP).
    await sleep(1000);
  };
  const archiverStat = async () => {
    const [count, failed, last] = (await pg.psql("SELECT archived_count, failed_count, coalesce(last_archived_wal, '') FROM pg_stat_archiver")).split('|');
    return { archived: Number(count), failed: Number(failed), last: last ?? '' };
  };
  /** Like PgCluster.waitArchived, but a failed archive_command fails at once (with its log). */
  const waitArchivedNoFailure = async (name: string, failedBefore: number, timeoutMs = 120_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const st = await archiverStat();
      if (st.failed > failedBefore) assert.fail(`archive_command failed:\n${pg.logTail()}`);
      if (st.last.slice(0, 24) >= name) return;
      if (Date.now() > deadline) assert.fail(`${name} not archived within ${timeoutMs} ms:\n${pg.logTail()}`);
      await sleep(200);
    }
  };
  const insert = (n: number, tag: string) => pg.psql(`INSERT INTO t (tag) SELECT '${tag}' FROM generate_series(1, ${n})`);
  const archivedPath = (name: string) => path.join(walsDir, name.slice(0, 16), name);
  const xlogdbLine = async (name: string) =>
    (await fs.readFile(path.join(walsDir, 'xlog.db'), 'utf8')).split('\n').find((l) => l.startsWith(`${name}\t`)) ?? '';
  /** put-wal processes (= ssh sessions) that stored files, from "Received WAL file" log lines. */
  const putWalSessions = async () => {
    const pids = new Set<string>();
    const names = new Set<string>();
    for (const m of (await readLog(env)).matchAll(/\[(\d+)\] \S+ INFO: .*Received WAL file ([0-9A-F]{24})/g)) {
      pids.add(m[1] ?? '');
      names.add(m[2] ?? '');
    }
    return { pids, names };
  };
  /** Source ports of the ssh logins accepted so far (one per session). */
  const sshLogins = () => new Set([...sshd.log().matchAll(/Accepted publickey for \S+ from 127\.0\.0\.1 port (\d+)/g)].map((m) => m[1] ?? ''));
  const restoreAs = (args: string[]) => runAs(POSTGRES_USER, RESTORE_CLIENT, ['-c', env.configFile, '--ssh-config', sshConfig, '--spool-dir', restoreSpool, ...args], { timeoutMs: 60_000 });

  before(async () => {
    await ensureBarmanUser();
    sshd = await startSshd();
    sshConfig = await sshd.clientConfigFor(POSTGRES_USER, [BARMAN_USER]);
    // The marker spool vouches for stored data: the launcher trusts it only when it is private
    // to the WAL files' owner (0700, owned by postgres).
    archiveSpool = await makeTempDir('walarchive-spool-', { owner: POSTGRES_USER, mode: 0o700 });
    restoreSpool = path.join(await makeTempDir('walrestore-', { owner: POSTGRES_USER, mode: 0o755 }), 'spool');
    // archive_mode on without an archive_command: PostgreSQL keeps the segments `.ready`
    // until the command is set, which makes the burst below deterministic.
    pg = await PgCluster.create({ archiveMode: true });
    await pg.psql('CREATE TABLE t (id serial PRIMARY KEY, tag text, at timestamptz DEFAULT clock_timestamp())');
    await insert(100, 'base');
    env = await createBarmanEnv(pg, { extra: { archiver: 'on', streaming_archiver: 'off', create_slot: 'manual' } });
    // check creates the server directories (incoming/ among them), as the operator's first run does.
    await env.run('check', env.server);
    incoming = path.join(env.home, env.server, 'incoming');
    walsDir = path.join(env.home, env.server, 'wals');
    assert.ok(existsSync(incoming), `${incoming} was not created by barman check`);
  });

  after(async () => {
    await cleanupAll();
    await sshd?.stop();
  });

  it('barman-wal-archive --test reaches put-wal --test through sshd', async () => {
    const r = await runAs(POSTGRES_USER, ARCHIVE_CLIENT, ['--test', '-c', env.configFile, '--ssh-config', sshConfig, '-U', BARMAN_USER, '127.0.0.1', env.server, 'pg_wal/x'], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, `--test failed: ${r.stdout}${r.stderr}\n--- sshd ---\n${sshd.log().slice(-2000)}`);
    assert.match(r.stdout + r.stderr, new RegExp(`Ready to accept WAL files for the server ${env.server}`));
    const bad = await runAs(POSTGRES_USER, ARCHIVE_CLIENT, ['--test', '-c', env.configFile, '--ssh-config', sshConfig, '-U', BARMAN_USER, '127.0.0.1', 'no-such-server', 'pg_wal/x'], { timeoutMs: 60_000 });
    assert.notEqual(bad.code, 0, 'an unknown server must fail the test');
  });

  it('a burst of segments is pushed ahead in one session and reaches incoming/ and the archive', async (t) => {
    const before = await archiverStat();
    const sessionsBefore = (await putWalSessions()).pids.size;
    // BURST segments closed while no archive_command is set: they all wait as `.ready`.
    const burst: string[] = [];
    for (let i = 0; i < BURST; i++) {
      await insert(200, `burst${i}`);
      burst.push(await pg.switchWal());
    }
    assert.ok(burst.every((n) => SEGMENT_RE.test(n)), burst.join(','));
    assert.equal(new Set(burst).size, BURST, `each switch closes a new segment: ${burst.join(',')}`);

    await setArchiveCommand(archiveCommand());
    const last = burst[burst.length - 1] ?? '';
    await waitArchivedNoFailure(last, before.failed);
    const afterStat = await archiverStat();
    assert.equal(afterStat.failed, before.failed, `archive_command failed:\n${pg.logTail()}`);
    const calls = afterStat.archived - before.archived;
    assert.ok(calls >= BURST, `pg_stat_archiver counted ${calls} archived files, expected >= ${BURST}`);

    // Every segment is in incoming/, stored by put-wal …
    const inIncoming = new Set(await fs.readdir(incoming));
    for (const n of burst) assert.ok(inIncoming.has(n), `${n} missing from incoming/ (${[...inIncoming].join(',')})`);
    const { pids, names } = await putWalSessions();
    for (const n of burst) assert.ok(names.has(n), `put-wal did not log ${n}`);
    // … by far fewer ssh sessions than archive_command calls: the rest were answered from
    // markers by the sh launcher without Node or ssh.
    const sessions = pids.size - sessionsBefore;
    t.diagnostic(`${calls} archive_command calls, ${sessions} put-wal session(s)`);
    assert.ok(sessions >= 1 && sessions <= 2, `${sessions} put-wal sessions for ${calls} archive_command calls`);
    // Every marker was consumed (each one by a fast-path call).
    const markerDir = path.join(archiveSpool, env.server);
    assert.deepEqual((await fs.readdir(markerDir)).filter((n) => !n.startsWith('.')), []);

    // archive-wal moves them into the archive.
    await env.ok('archive-wal', env.server);
    for (const n of burst) assert.ok(existsSync(archivedPath(n)), `${n} not archived`);
    assert.deepEqual((await fs.readdir(incoming)).filter((n) => !n.startsWith('.')), []);
  });

  it('switch-wal --archive waits for a segment shipped by barman-wal-archive', async () => {
    await insert(10, 'switch');
    const out = await env.ok('switch-wal', '--archive', '--archive-timeout', '90', env.server);
    const closed = /The WAL file ([0-9A-F]{24}) has been closed/.exec(out)?.[1];
    assert.ok(closed, `no closed WAL in: ${out}`);
    assert.match(out, new RegExp(`The WAL file ${closed} has been archived for server '${env.server}'`));
    assert.ok(existsSync(archivedPath(closed)));
    assert.ok((await putWalSessions()).names.has(closed), `${closed} did not come through put-wal`);
  });

  it('check reports archive_mode, archive_command and continuous archiving OK', async () => {
    const r = await env.run('check', env.server);
    const lines = r.stdout.split('\n');
    for (const want of ['\tarchive_mode: OK', '\tarchive_command: OK', '\tcontinuous archiving: OK']) {
      assert.ok(lines.includes(want), `missing line ${JSON.stringify(want)} in:\n${r.stdout}${r.stderr}`);
    }
  });

  it('takes a base backup whose WAL arrives through put-wal', async () => {
    await env.ok('backup', '--wait', '--wait-timeout', '90', '--immediate-checkpoint', env.server);
    const list = await listBackups(env);
    assert.equal(list[0]?.status, 'DONE', JSON.stringify(list));
    backupId = list[0]?.backup_id ?? '';
  });

  for (const [flag, algo, magic] of [['--zstd', 'zstd', ZSTD_MAGIC], ['--lz4', 'lz4', LZ4_MAGIC]] as const) {
    it(`segments compressed by the client (${flag}) are archived as ${algo}, not recompressed`, async () => {
      await setArchiveCommand(archiveCommand(flag));
      await insert(500, `compressed-${algo}`);
      const out = await env.ok('switch-wal', '--archive', '--archive-timeout', '90', env.server);
      const closed = /The WAL file ([0-9A-F]{24}) has been closed/.exec(out)?.[1] ?? '';
      assert.ok(existsSync(archivedPath(closed)), `${closed} not archived: ${out}`);
      const head = Buffer.alloc(magic.length);
      const fh = await fs.open(archivedPath(closed), 'r');
      try {
        await fh.read(head, 0, head.length, 0);
      } finally {
        await fh.close();
      }
      assert.deepEqual(head, magic, `${closed} is not stored as ${algo}`);
      const fields = (await xlogdbLine(closed)).split('\t');
      assert.equal(fields[3], algo, `xlog.db line for ${closed}: ${fields.join(' | ')}`);
      assert.ok(Number(fields[1]) < 16 * 1024 * 1024, `compressed size ${fields[1]}`);
      // get-wal gives back a whole plain segment.
      const dest = path.join(await makeTempDir('getwal-', { owner: BARMAN_USER }), closed);
      await env.ok('get-wal', '-o', path.dirname(dest), env.server, closed);
      assert.equal((await fs.stat(dest)).size, 16 * 1024 * 1024);
    });
  }

  it('recovers to a time with restore_command = barman-wal-restore -p 8, rows compared', async (t) => {
    // Mixed archive after the backup: the segments of the compression cases above (zstd, lz4),
    // then plain ones for the rows around the target.
    await setArchiveCommand(archiveCommand());
    // Enough segments between the backup and the target for prefetch to matter.
    for (let i = 0; i < 6; i++) {
      await insert(100, `replay${i}`);
      await pg.switchWal();
    }
    await insert(10, 'phase1');
    await sleep(1100);
    const targetTime = await pg.psql("SELECT to_char(clock_timestamp(), 'YYYY-MM-DD HH24:MI:SS.US TZH:TZM')");
    const rowsAtTarget = Number(await pg.psql('SELECT count(*) FROM t'));
    await sleep(1100);
    await insert(10, 'phase2');
    await env.ok('switch-wal', '--archive', '--archive-timeout', '90', env.server);

    const dest = await env.newDir('restore-');
    // --get-wal: no WAL is copied; its restore_command (`barman get-wal` run locally as barman)
    // is replaced by our client, as on a PostgreSQL host that reaches Barman through ssh.
    await env.ok('recover', env.server, backupId, dest, '--get-wal', '--target-time', targetTime, '--target-action', 'promote');
    const autoConf = path.join(dest, 'postgresql.auto.conf');
    const written = await fs.readFile(autoConf, 'utf8');
    assert.match(written, /^restore_command = '.*get-wal.*%f > %p'$/m, written);
    assert.equal(existsSync(path.join(dest, 'barman_wal')), false, 'no WAL copy with --get-wal');
    const restoreCommand = [RESTORE_CLIENT, '-c', env.configFile, '--ssh-config', sshConfig, '-U', BARMAN_USER, '-p', '8', '--spool-dir', restoreSpool, '127.0.0.1', env.server, '%f', '%p'].join(' ');
    // Instrumentation around our client: which requests found their file in the spool (the sh
    // fast path then serves it with a mv, no Node, no ssh).
    const hitLog = path.join(path.dirname(restoreSpool), 'spool-hits');
    const instrumented = `[ -f ${restoreSpool}/%f ] && echo %f >> ${hitLog}; ${restoreCommand}`;
    const replaced = written
      .split('\n')
      .filter((l) => !/^# The 'barman get-wal' command/.test(l))
      .map((l) => (l.startsWith('restore_command = ') ? `restore_command = ${quoteLiteral(instrumented)}` : l))
      .join('\n');
    await fs.writeFile(autoConf, replaced);

    const loginsBefore = sshLogins();
    const { cluster, outcome } = await startRecoveredCluster(dest, undefined, { extraConf: { archive_mode: 'off' }, timeoutMs: 150_000 });
    try {
      assert.ok(['primary', 'paused'].includes(outcome), `outcome ${outcome}`);
      assert.equal(Number(await cluster.psql('SELECT count(*) FROM t')), rowsAtTarget);
      assert.equal(await cluster.psql("SELECT count(*) FROM t WHERE tag = 'phase1'"), '10');
      assert.equal(await cluster.psql("SELECT count(*) FROM t WHERE tag = 'phase2'"), '0');
      assert.equal(await cluster.psql("SELECT count(*) FROM t WHERE tag = 'compressed-zstd'"), '500');
      assert.equal(await cluster.psql("SELECT count(*) FROM t WHERE tag = 'compressed-lz4'"), '500');
      assert.equal(await cluster.psql("SELECT count(*) FROM t WHERE tag LIKE 'replay%'"), '600');
      // Segments restored by restore_command vs ssh sessions opened meanwhile: the spool
      // (prefetched by get-wal --batch, handed over by the sh fast path) served the difference.
      const log = await fs.readFile(cluster.logFile, 'utf8');
      const restored = new Set([...log.matchAll(/restored log file "([0-9A-F]{24})" from archive/g)].map((m) => m[1]));
      const sessions = [...sshLogins()].filter((p) => !loginsBefore.has(p)).length;
      const hits = (await fs.readFile(hitLog, 'utf8').catch(() => '')).split('\n').filter(Boolean);
      t.diagnostic(`${restored.size} segments restored, ${hits.length} from the spool, ${sessions} ssh sessions`);
      assert.ok(restored.size >= 8, `only ${restored.size} segments restored:\n${cluster.logTail()}`);
      assert.ok(hits.length >= restored.size / 2, `${hits.length} of ${restored.size} segments came from the spool`);
      for (const h of hits) assert.ok(restored.has(h), `spool hit ${h} was not a restored segment`);
      assert.ok(sessions < restored.size, `${sessions} ssh sessions for ${restored.size} restored segments`);
    } finally {
      await cluster.destroy();
    }
  });

  it('barman-wal-restore exit codes: 1 missing WAL, 3 bad name, 2 ssh failure', async () => {
    const destDir = await makeTempDir('walrestore-dest-', { owner: POSTGRES_USER });
    const missing = await restoreAs(['-U', BARMAN_USER, '127.0.0.1', env.server, '0000000100000000000000FE', path.join(destDir, 'a')]);
    assert.equal(missing.code, 1, `missing WAL: ${missing.stderr}`);
    assert.match(missing.stderr, /not found/);
    const badName = await restoreAs(['-U', BARMAN_USER, '127.0.0.1', env.server, 'not-a-wal', path.join(destDir, 'b')]);
    assert.equal(badName.code, 3, `bad name: ${badName.stderr}`);
    const closedPort = await freePort();
    const noSsh = await restoreAs(['-U', BARMAN_USER, '--port', String(closedPort), '127.0.0.1', env.server, '0000000100000000000000FE', path.join(destDir, 'c')]);
    assert.equal(noSsh.code, 2, `wrong ssh port: ${noSsh.stderr}`);
    assert.deepEqual((await fs.readdir(destDir)).sort(), [], 'nothing written at WAL_DEST on failure');
  });

  it('leaves no put-wal temporary file in incoming/', async () => {
    assert.deepEqual((await fs.readdir(incoming)).filter((n) => n.startsWith('.put-wal-')), []);
  });
});
