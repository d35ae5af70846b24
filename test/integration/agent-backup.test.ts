/**
 * transfer_method = agent (backup_method = rsync) on real PostgreSQL 15 through a real sshd:
 * barman-agent runs as postgres on the "database host" (started through ssh_command) and sends
 * pages to barman on the backup host.
 *
 *  - a full backup, then an incremental chain across relation files that grow, shrink, are
 *    truncated, dropped and created, and a tablespace: every backup a plain copy (pg_verifybackup
 *    passes on its backup_manifest, verify-backup checks every file's SHA-256), few pages on the
 *    wire for a small change, unchanged files hard-linked; a PITR from the third incremental;
 *  - kills mid-copy (the agent, its ssh, the barman process) leave a FAILED backup, never DONE,
 *    earlier backups untouched; the next backup resumes (fewer bytes than a full one);
 *  - a page altered in transit (test fault point in the agent) fails the backup;
 *  - bad input: an agent of another protocol version, an agent that talks garbage, a file that
 *    vanishes or shrinks during the copy.
 *
 * The fault points are set in the remote command through ssh_command (`... postgres@host
 * BARMAN_TS_AGENT_FAULT=... `), so only that backup's agents see them.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { cleanupAll, PgCluster, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, listBackups, readLog, startStreaming, type BarmanEnv } from '../helpers/barman-env.js';
import { backupRecorder, createFingerprintData, FINGERPRINT, infoField, recoverFingerprint, startStreamingOnSettledData, walkLinks } from '../helpers/rsync-backup-fixture.js';
import { startSshd, type Sshd } from '../helpers/sshd.js';
import { assertSameTree, treeFacts } from '../helpers/tree-facts.js';
import type { TransferStats } from '../../src/agent/store.js';
import { BARMAN_USER, ensureBarmanUser, lookupUser, makeTempDir, POSTGRES_USER, runAs, waitFor } from '../helpers/system.js';


describe('transfer_method = agent', { timeout: 1_200_000 }, () => {
  let sshd: Sshd;
  let pg: PgCluster;
  let env: BarmanEnv;
  let tsOid = '';
  let ssh = '';
  let sshConfig = '';
  const { ids, backupDir, infoText, backup } = backupRecorder(() => env);
  const stats = async (id: string): Promise<TransferStats> => {
    const meta = JSON.parse(await fs.readFile(path.join(env.home, env.server, 'agent', id, 'meta.json'), 'utf8')) as { stats: TransferStats };
    return meta.stats;
  };
  const setSsh = async (command: string): Promise<void> => {
    const text = await fs.readFile(env.configFile, 'utf8');
    await fs.writeFile(env.configFile, text.replace(/^ssh_command = .*$/m, `ssh_command = ${command}`));
  };

  /** `barman backup ARGS` in the background as the barman user, once it is STARTED. */
  const backupInBackground = async (args: readonly string[]) => {
    const known = new Set((await listBackups(env)).map((b) => b.backup_id));
    const child = spawn('runuser', ['-u', BARMAN_USER, '--', process.execPath, BARMAN_SCRIPT, '-c', env.configFile, 'backup', ...args, env.server], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? -1)));
    const started = await waitFor(async () => (await listBackups(env)).find((b) => b.status === 'STARTED' && !known.has(b.backup_id)), {
      timeoutMs: 180_000,
      intervalMs: 100,
      what: 'backup STARTED',
    });
    return { id: started.backup_id, exited, stderr: () => stderr };
  };
  /** A pause fault: agents stop before reading a file whose path holds `match`, until release(). */
  const pauseFault = async (match: string) => {
    const dir = await makeTempDir('agent-flag-', { owner: POSTGRES_USER, mode: 0o777 });
    const flag = path.join(dir, 'go');
    return {
      spec: `pause=${match}:${flag}`,
      reached: () => waitFor(async () => existsSync(`${flag}.reached`) && (await fs.readFile(`${flag}.reached`, 'utf8')).trim(), { timeoutMs: 240_000, intervalMs: 50, what: `an agent to reach ${match}` }),
      release: () => fs.writeFile(flag, 'go\n'),
    };
  };
  /** A second agent server of the same cluster whose backups go to `baseDir` (its own slot and streaming). */
  const sideServer = (name: string, baseDir: string, extra: string[] = []): string =>
    [
      `[${name}]`,
      `conninfo = ${pg.conninfo}`,
      `streaming_conninfo = ${pg.conninfo}`,
      'backup_method = rsync',
      'transfer_method = agent',
      ...extra,
      `ssh_command = ${ssh}`,
      'streaming_archiver = on',
      `slot_name = barman_${name}`,
      'create_slot = auto',
      `basebackups_directory = ${baseDir}`,
      '',
    ].join('\n');
  /** Whether barman_home's file system clones files (then change tracking is not used). */
  let clones: boolean | null = null;
  const homeClones = async (): Promise<boolean> => {
    if (clones === null) {
      const a = path.join(env.home, '.reflink-probe');
      await fs.writeFile(a, 'x');
      clones = (await runAs('root', 'cp', ['--reflink=always', a, `${a}.2`])).code === 0;
      await fs.rm(a, { force: true });
      await fs.rm(`${a}.2`, { force: true });
    }
    return clones;
  };
  const journalLines = async (id: string): Promise<number> =>
    (await fs.readFile(path.join(env.home, env.server, 'agent', id, 'files.jsonl'), 'utf8').catch(() => '')).split('\n').filter((l) => l !== '').length;
  const pgrep = async (pattern: string): Promise<string[]> =>
    (await runAs('root', 'pgrep', ['-u', BARMAN_USER, '-f', '--', pattern])).stdout.split('\n').filter((l) => l.trim() !== '');

  before(async () => {
    await ensureBarmanUser();
    sshd = await startSshd();
    sshConfig = await sshd.clientConfigFor(BARMAN_USER, [POSTGRES_USER]);
    ssh = `ssh -F ${sshConfig} postgres@127.0.0.1`;
    pg = await PgCluster.create();
    tsOid = await createFingerprintData(pg, 'agent-ts-');
    env = await createBarmanEnv(pg, {
      server: 'ag',
      extra: { backup_method: 'rsync', transfer_method: 'agent', reuse_backup: 'link', ssh_command: ssh, slot_name: 'barman_ag', parallel_jobs: '2' },
    });
    // Relations the incremental chain grows, shrinks, truncates, drops.
    await pg.psql(
      "CREATE TABLE grow AS SELECT g, repeat('g', 200) AS pad FROM generate_series(1, 20000) g; " +
        "CREATE TABLE shrink AS SELECT g, repeat('s', 200) AS pad FROM generate_series(1, 20000) g; " +
        'CREATE TABLE emptied AS SELECT g FROM generate_series(1, 5000) g; CREATE TABLE doomed AS SELECT g FROM generate_series(1, 5000) g; ' +
        'VACUUM (FREEZE);',
    );
    await startStreamingOnSettledData(env, pg);
  });

  after(async () => {
    await env?.stop();
    await cleanupAll();
    await sshd?.stop();
  });

  it('takes a full backup: a plain copy with a backup_manifest, every file checksummed, recovering the source data', async () => {
    const expected = await pg.psql(FINGERPRINT);
    const id = await backup();
    const text = await infoText(id);
    assert.equal(infoField(text, 'mode'), 'rsync-concurrent');
    assert.match(infoField(text, 'copy_stats'), /'number_of_workers': 2/);
    const s = await stats(id);
    assert.equal(s.filesLinked + s.filesUnchanged + s.filesDelta, 0, JSON.stringify(s));
    assert.ok(s.filesFull > 100, JSON.stringify(s));
    const data = path.join(backupDir(id), 'data');
    await fs.access(path.join(data, 'backup_manifest'));
    assert.match(await fs.readFile(path.join(data, 'backup_label'), 'utf8'), /^LABEL: Barman backup ag /m);
    assert.deepEqual(await fs.readdir(path.join(data, 'pg_wal')), []);
    // The metadata is outside base/<id>: Barman's walks of the backup never see it.
    assert.ok(!(await fs.readdir(backupDir(id))).some((n) => /agent|\.jsonl|\.bin$/.test(n)));
    const verify = await env.ok('verify-backup', env.server, id);
    assert.match(verify, /checksums of \d+ files OK/);
    assert.equal(await recoverFingerprint(env, id, { owner: BARMAN_USER, tempPrefix: 'agent' }), expected);
  });

  it('copies a stopped cluster exactly as rsync does (content, modes, times, links, excludes)', async () => {
    const other = await PgCluster.create();
    const space = path.join(await makeTempDir('agent-eng-ts-', { owner: POSTGRES_USER, mode: 0o755 }), 'space');
    await runAs(POSTGRES_USER, 'mkdir', ['-m', '0700', space], { check: true });
    await other.psql(`CREATE TABLESPACE t2 LOCATION '${space}'`);
    await other.psql("CREATE TABLE a TABLESPACE t2 AS SELECT g FROM generate_series(1, 3000) g; CREATE TABLE b AS SELECT g, md5(g::text) FROM generate_series(1, 30000) g;");
    const oid = await other.psql("SELECT oid FROM pg_tablespace WHERE spcname = 't2'");
    await other.stop();
    // Things the rsync method leaves out, to be left out here too.
    await runAs(POSTGRES_USER, 'sh', ['-c', `mkdir -p ${other.dataDir}/base/pgsql_tmp && echo x > ${other.dataDir}/base/pgsql_tmp/t1 && echo l > ${other.dataDir}/pg_wal/junk && touch ${other.dataDir}/backup_label.old`], { check: true });
    const agentDest = await env.newDir('agent-engine-');
    const dataDest = path.join(agentDest, 'data');
    const out = await runAs(BARMAN_USER, process.execPath, [path.join(path.dirname(BARMAN_SCRIPT), '..', 'dist', 'test', 'helpers', 'agent-copy-main.js'), env.configFile, env.server, agentDest, other.dataDir, `${oid}:t2:${space}`]);
    assert.equal(out.code, 0, out.stderr);
    const rsyncDest = await makeTempDir('agent-engine-rsync-');
    const excludes = (await import('../../src/backup/rsync-plan.js')).PGDATA_EXCLUDES.map((e) => `--exclude=${e}`);
    await runAs('root', 'rsync', ['-a', ...excludes, `${other.dataDir}/`, `${rsyncDest}/data/`], { check: true });
    await runAs('root', 'rsync', ['-a', '--exclude=pgsql_tmp*', `${space}/`, `${rsyncDest}/${oid}/`], { check: true });
    const want = await treeFacts(path.join(rsyncDest, 'data'));
    assert.ok(want.has('global/pg_control') && !want.has('pg_wal/junk') && !want.has('base/pgsql_tmp') && want.has('pg_wal'));
    assertSameTree(await treeFacts(dataDest), want);
    assertSameTree(await treeFacts(path.join(agentDest, oid)), await treeFacts(path.join(rsyncDest, oid)));
    await other.destroy();
  });

  it('takes an incremental chain: files grow, shrink, are truncated, dropped, created, in a tablespace too; few pages travel; PITR from the third incremental', async () => {
    const full = ids[0] ?? '';
    const fullStats = await stats(full);
    const relPath = (t: string) => pg.psql(`SELECT pg_relation_filepath('${t}')`);
    const shrinkPath = await relPath('shrink');
    const accounts = await relPath('pgbench_accounts');
    const steps = [
      // 1: every kind of change at once
      "INSERT INTO grow SELECT g, repeat('h', 200) FROM generate_series(20001, 30000) g; DELETE FROM shrink WHERE g > 5000; VACUUM shrink; " +
        "TRUNCATE emptied; INSERT INTO emptied VALUES (1); DROP TABLE doomed; CREATE TABLE created AS SELECT g FROM generate_series(1, 777) g; " +
        'UPDATE in_ts SET v = v + 1 WHERE v <= 10; UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 100;',
      // 2: a few rows here and there
      'UPDATE pgbench_accounts SET abalance = abalance + 2 WHERE aid BETWEEN 50000 AND 50100; INSERT INTO created SELECT generate_series(1, 100); INSERT INTO marks VALUES (10);',
      // 3: a little OLTP
      null,
    ];
    for (const [i, sql] of steps.entries()) {
      if (sql) await pg.psql(sql);
      else await pg.pgbench(['-t', '30', '-c', '1', '-n']);
      await pg.checkpoint();
      const expected = await pg.psql(FINGERPRINT);
      const id = await backup();
      const s = await stats(id);
      assert.ok(s.filesLinked > 100, `incremental ${i + 1}: ${JSON.stringify(s)}`);
      assert.ok(s.filesDelta > 0, `incremental ${i + 1}: ${JSON.stringify(s)}`);
      assert.ok(s.bytesIn < fullStats.bytesIn / 3, `incremental ${i + 1} received ${s.bytesIn} bytes, the full ${fullStats.bytesIn}`);
      // Change tracking: the relation files changed are read only where the WAL changed them.
      // (Not where the backups' file system clones files: changed files are read whole there.)
      const tracking = (await readLog(env)).split('\n').filter((l) => l.includes('change tracking')).at(-1);
      if (!(await homeClones())) {
        assert.ok((s.filesTracked ?? 0) > 0, `incremental ${i + 1} tracked no file from the WAL: ${JSON.stringify(s)}; ${tracking}`);
        // pgbench_accounts (a few rows updated by steps 1 and 2) is read only where they are: the
        // agent's line for it says how many pages it read (the OLTP of step 3, with autovacuum
        // at work, may touch more of it).
        const accountsPages = (await fs.stat(path.join(backupDir(full), 'data', accounts))).size / 8192;
        const line = (await readLog(env)).split('\n').filter((l) => l.includes(`data/${accounts}: `)).at(-1) ?? '';
        const read = Number(/ of (\d+) pages received/.exec(line)?.[1] ?? NaN);
        if (i < 2) assert.ok(read < accountsPages / 4, `incremental ${i + 1} read ${read} of the ${accountsPages} pages of pgbench_accounts: ${line}`);
      }
      // Unchanged files are the previous backup's (same inode); the change is in the new copy.
      const prev = ids.at(-2) ?? '';
      const pgVersion = path.join('data', 'PG_VERSION');
      assert.equal((await fs.stat(path.join(backupDir(id), pgVersion))).ino, (await fs.stat(path.join(backupDir(prev), pgVersion))).ino);
      assert.notEqual((await fs.stat(path.join(backupDir(id), 'data', accounts))).ino, (await fs.stat(path.join(backupDir(prev), 'data', accounts))).ino);
      const verify = await env.ok('verify-backup', env.server, id);
      assert.match(verify, /checksums of \d+ files OK/);
      if (i === 0) {
        const before = (await fs.stat(path.join(backupDir(full), 'data', shrinkPath))).size;
        const after = (await fs.stat(path.join(backupDir(id), 'data', shrinkPath))).size;
        assert.ok(after < before, `shrink: ${after} >= ${before}`);
        assert.equal(await pg.psql(FINGERPRINT), expected);
      }
    }
    // PITR from the third incremental: to a restore point after it.
    const third = ids.at(-1) ?? '';
    await pg.psql('INSERT INTO marks VALUES (20), (21)');
    const atTarget = await pg.psql(`${FINGERPRINT} || '|' || (SELECT count(*) FROM grow) || '|' || (SELECT count(*) FROM shrink) || '|' || (SELECT count(*) FROM created) || '|' || (SELECT count(*) FROM emptied)`);
    await pg.psql("SELECT pg_create_restore_point('agent_pitr')");
    await pg.psql('INSERT INTO marks VALUES (30), (31), (32); DELETE FROM created');
    await env.ok('switch-wal', '--force', '--archive', '--archive-timeout', '60', env.server);
    const dest = await env.newDir('agent-pitr-');
    const newTs = path.join(await makeTempDir('agent-pitr-ts-', { owner: BARMAN_USER, mode: 0o755 }), 'space');
    await env.ok('recover', env.server, third, dest, '--tablespace', `extra:${newTs}`, '--target-name', 'agent_pitr', '--target-action', 'promote');
    const { cluster } = await startRecoveredCluster(dest, undefined, { extraConf: { archive_mode: 'off' } });
    try {
      const got = await cluster.psql(`${FINGERPRINT} || '|' || (SELECT count(*) FROM grow) || '|' || (SELECT count(*) FROM shrink) || '|' || (SELECT count(*) FROM created) || '|' || (SELECT count(*) FROM emptied)`);
      assert.equal(got, atTarget);
      assert.equal(await cluster.psql("SELECT count(*) FROM pg_class WHERE relname = 'doomed'"), '0');
      // Every heap page and B-tree of the recovered cluster checks out (amcheck), every heap tuple indexed.
      const corrupt = await cluster.psql(
        'CREATE EXTENSION IF NOT EXISTS amcheck; ' +
          "SELECT (SELECT count(*) FROM pg_class c, verify_heapam(c.oid) WHERE c.relkind IN ('r', 'm', 't') AND c.relpersistence = 'p') + " +
          "(SELECT count(*) FROM (SELECT bt_index_check(c.oid, true) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND c.relpersistence = 'p' AND i.indisvalid) x WHERE false)",
      );
      assert.equal(corrupt, '0');
    } finally {
      await cluster.destroy();
    }
  });

  it('without the WAL since its basis started on this host, an incremental reads its changed files whole (change tracking off, the reason logged)', async (t) => {
    if (await homeClones()) return t.skip('the backups\' file system clones files: change tracking is not used there');
    const basis = ids.at(-1) ?? '';
    const beginWal = infoField(await infoText(basis), 'begin_wal');
    const segment = path.join(env.home, env.server, 'wals', beginWal.slice(0, 16), beginWal);
    await fs.access(segment);
    await pg.psql('UPDATE pgbench_accounts SET abalance = abalance + 3 WHERE aid <= 200');
    await pg.checkpoint();
    const expected = await pg.psql(FINGERPRINT);
    await fs.rename(segment, `${segment}.aside`);
    let id = '';
    try {
      id = await backup();
    } finally {
      await fs.rename(`${segment}.aside`, segment);
    }
    const s = await stats(id);
    assert.equal(s.filesTracked ?? 0, 0, JSON.stringify(s));
    assert.ok(s.filesDelta > 0, JSON.stringify(s));
    assert.match(await readLog(env), new RegExp(`change tracking from the WAL is off for this backup \\(the changed files are read whole\\): WAL file ${beginWal} is not on this host`));
    assert.match(await env.ok('verify-backup', env.server, id), /checksums of \d+ files OK/);
    assert.equal(await pg.psql(FINGERPRINT), expected);
  });

  it('a copy killed mid-way (the agent, its ssh, the barman process) is FAILED, never DONE; the next backup resumes and fetches less', async () => {
    const full = await stats(ids[0] ?? '');
    // Backups by id and status (their WAL sizes grow as WAL is archived).
    const catalog = async () => (await listBackups(env)).map((b) => `${b.backup_id} ${b.status}`);
    const before = await catalog();
    const lastDone = ids.at(-1) ?? '';
    const lastWalk = await walkLinks(backupDir(lastDone));
    const interrupted: string[] = [];
    for (const victim of ['agent', 'ssh', 'barman'] as const) {
      const fault = await pauseFault(`${pg.dataDir}/PG_VERSION`);
      await setSsh(`${ssh} BARMAN_TS_AGENT_FAULT=${fault.spec}`);
      try {
        // reuse off: only the interrupted backup can spare fetching a file again.
        const bg = await backupInBackground(['--reuse-backup', 'off']);
        const agentPid = await fault.reached();
        await waitFor(async () => (await journalLines(bg.id)) > 10, { timeoutMs: 120_000, intervalMs: 200, what: 'received files journaled' });
        if (victim === 'agent') await runAs('root', 'kill', ['-KILL', agentPid], { check: true });
        else if (victim === 'ssh') for (const pid of await pgrep(`^ssh -F ${sshConfig} .*barman-agent`)) await runAs('root', 'kill', ['-KILL', pid]);
        else for (const pid of await pgrep(`${BARMAN_SCRIPT} -c ${env.configFile} backup`)) await runAs('root', 'kill', ['-KILL', pid]);
        const code = await bg.exited;
        assert.notEqual(code, 0, bg.stderr());
        if (victim !== 'barman') assert.match(bg.stderr(), /ERROR: .*(agent|database host)/, bg.stderr());
        assert.doesNotMatch(bg.stderr(), /\n\s+at /, 'no stack trace');
        // A killed barman leaves the backup STARTED: cron finds it without a lock holder.
        if (victim === 'barman') await env.ok('cron');
        const status = (await listBackups(env)).find((b) => b.backup_id === bg.id)?.status;
        assert.equal(status, 'FAILED', `${victim}: ${bg.stderr()}`);
        interrupted.push(bg.id);
      } finally {
        await fault.release();
        await setSsh(ssh);
      }
      // Earlier backups untouched.
      assert.deepEqual((await catalog()).filter((b) => !interrupted.some((id) => b.startsWith(id))), before);
      assert.deepEqual(await walkLinks(backupDir(lastDone)), lastWalk);
    }
    // This test's agents only (through this sshd): other tests may run agents of their own.
    await waitFor(async () => (await pgrep(`^ssh -F ${sshConfig} .*barman-agent`)).length === 0, { timeoutMs: 60_000, what: 'the interrupted agents to go' });
    const id = await backup('--reuse-backup', 'off');
    const s = await stats(id);
    assert.equal(s.resumedFrom, interrupted.at(-1));
    assert.match(await readLog(env), new RegExp(`Resuming the interrupted backup ${interrupted.at(-1) ?? ''}`));
    assert.ok(s.bytesIn < full.bytesIn / 2, `resumed backup received ${s.bytesIn} bytes, a full one ${full.bytesIn}`);
    assert.match(await env.ok('verify-backup', env.server, id), /checksums of \d+ files OK/);
  });

  it('a page altered in transit is detected: the backup is FAILED, not DONE', async () => {
    const accounts = await pg.psql("SELECT pg_relation_filepath('pgbench_accounts')");
    // Changed since every earlier backup: the agent must read it and send at least one page.
    await pg.psql('UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 1');
    await pg.checkpoint();
    await setSsh(`${ssh} BARMAN_TS_AGENT_FAULT=corrupt=${accounts}`);
    try {
      const count = (await listBackups(env)).length;
      const r = await env.run('backup', '--reuse-backup', 'off', env.server);
      assert.equal(r.code, 1, r.stdout);
      assert.match(r.stderr, /altered in transit/);
      const list = await listBackups(env);
      assert.equal(list.length, count + 1);
      assert.equal(list[0]?.status, 'FAILED');
      assert.match(infoField(await infoText(list[0]?.backup_id ?? ''), 'error'), /page \d+ of .* does not match the checksum computed where it was read/);
    } finally {
      await setSsh(ssh);
    }
  });

  it('refuses an agent of another protocol version, and one that talks garbage, before anything is written', async () => {
    const before = await listBackups(env);
    for (const [command, message] of [
      [`${ssh} BARMAN_TS_AGENT_FAULT=protocol=99`, /barman-ts agent: FAILED \(.*speaks protocol version 99, this barman-ts .* speaks version \d+: install the same barman-ts version on both hosts\)/],
      [`${ssh} echo Welcome to db1';'`, /barman-ts agent: FAILED \(.*is not a barman-ts agent: .*its output starts with "Welcome to db1"\)/],
    ] as const) {
      await setSsh(command);
      try {
        const check = await env.run('check', env.server);
        assert.equal(check.code, 1);
        assert.match(check.stdout, message);
        const r = await env.run('backup', env.server);
        assert.equal(r.code, 1);
        assert.match(r.stderr, /^ERROR: Impossible to start the backup/);
        assert.match(r.stderr, message);
        assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
        assert.deepEqual(await listBackups(env), before, 'nothing recorded');
      } finally {
        await setSsh(ssh);
      }
    }
  });

  it('a file that vanishes or changes size during the copy is skipped or copied as read; the backup is DONE and verifies', async () => {
    const junk = (n: string) => path.join(pg.dataDir, `agent_junk_${n}`);
    for (const n of ['a', 'b', 'c']) await runAs(POSTGRES_USER, 'dd', ['if=/dev/urandom', `of=${junk(n)}`, 'bs=64k', 'count=16'], { check: true });
    const fault = await pauseFault('agent_junk_');
    await setSsh(`${ssh} BARMAN_TS_AGENT_FAULT=${fault.spec}`);
    try {
      const bg = await backupInBackground(['--wait', '--wait-timeout', '120']);
      await fault.reached();
      await fs.rm(junk('a'));
      await fs.truncate(junk('b'), 100_000);
      await fs.appendFile(junk('c'), Buffer.alloc(50_000, 7));
      await fault.release();
      assert.equal(await bg.exited, 0, bg.stderr());
      ids.push(bg.id);
      const data = path.join(backupDir(bg.id), 'data');
      assert.equal(existsSync(path.join(data, 'agent_junk_a')), false);
      assert.equal((await fs.stat(path.join(data, 'agent_junk_b'))).size, 100_000);
      assert.equal((await fs.stat(path.join(data, 'agent_junk_c'))).size, 16 * 65536 + 50_000);
      assert.ok((await fs.readFile(junk('c'))).equals(await fs.readFile(path.join(data, 'agent_junk_c'))));
      assert.equal((await listBackups(env))[0]?.status, 'DONE');
      assert.match(await env.ok('verify-backup', env.server, bg.id), /checksums of \d+ files OK/);
      assert.match(await readLog(env), /agent_junk_a vanished during the copy/);
    } finally {
      await fault.release();
      await setSsh(ssh);
      for (const n of ['a', 'b', 'c']) await fs.rm(junk(n), { force: true });
    }
  });

  it('a full disk on the backup host fails the backup with one clear error; the earlier backup stays intact', async () => {
    const size = Number(await pg.psql('SELECT sum(pg_database_size(oid)) FROM pg_database'));
    const mnt = await makeTempDir('agent-full-', { owner: BARMAN_USER, mode: 0o700 });
    // A small file system of the barman user's: the first backup fits, a second full one does not.
    await runAs('root', 'mount', ['-t', 'tmpfs', '-o', `size=${Math.ceil(size * 1.5)},mode=0700,uid=${lookupUser(BARMAN_USER)?.uid ?? 0}`, 'tmpfs', mnt], { check: true });
    const original = await fs.readFile(env.configFile, 'utf8');
    try {
      await fs.writeFile(env.configFile, `${original}\n${sideServer('agfull', `${mnt}/base`)}`);
      // A backup needs a working WAL archive (receive-wal running, a first WAL archived).
      await startStreaming({ ...env, server: 'agfull' }, 120_000);
      const first = await env.run('backup', '--reuse-backup', 'off', 'agfull');
      assert.equal(first.code, 0, first.stderr);
      const firstId = (JSON.parse(await env.ok('-f', 'json', 'list-backups', 'agfull')) as Record<string, { backup_id: string }[]>).agfull?.[0]?.backup_id ?? '';
      const second = await env.run('backup', '--reuse-backup', 'off', 'agfull');
      assert.equal(second.code, 1, second.stdout);
      assert.match(second.stderr, /no space left on device/i);
      assert.doesNotMatch(second.stderr, /\n\s+at /, 'no stack trace');
      const list = (JSON.parse(await env.ok('-f', 'json', 'list-backups', 'agfull')) as Record<string, { backup_id: string; status: string }[]>).agfull ?? [];
      assert.equal(list[0]?.status, 'FAILED');
      assert.match(list[1]?.status ?? '', /^(WAITING_FOR_WALS|DONE)$/, 'the earlier backup is untouched');
      assert.equal(list.length, 2);
      assert.match(await env.ok('verify-backup', 'agfull', firstId), /checksums of \d+ files OK/);
    } finally {
      await env.run('receive-wal', '--stop', 'agfull');
      await env.run('receive-wal', '--drop-slot', 'agfull');
      await fs.writeFile(env.configFile, original);
      await runAs('root', 'umount', [mnt]);
    }
  });

  it('on a file system that clones files (XFS, reflink), a changed file shares the unchanged blocks of its basis; the backup verifies and recovers', async () => {
    const size = Number(await pg.psql('SELECT sum(pg_database_size(oid)) FROM pg_database'));
    const work = await makeTempDir('agent-xfs-', { owner: 'root', mode: 0o755 });
    const image = path.join(work, 'xfs.img');
    const mnt = path.join(work, 'mnt');
    await fs.mkdir(mnt);
    // Sparse; XFS wants 300 MB at least. Two full copies would need twice the data: a clone needs almost nothing.
    await fs.writeFile(image, '');
    await fs.truncate(image, Math.max(512 << 20, 4 * size));
    await runAs('root', 'mkfs.xfs', ['-q', '-m', 'reflink=1', image], { check: true });
    await runAs('root', 'mount', ['-o', 'loop', image, mnt], { check: true });
    const original = await fs.readFile(env.configFile, 'utf8');
    const xfs = { ...env, server: 'agxfs' };
    try {
      await fs.chown(mnt, lookupUser(BARMAN_USER)?.uid ?? 0, lookupUser(BARMAN_USER)?.gid ?? 0);
      await fs.chmod(mnt, 0o700);
      await fs.writeFile(env.configFile, `${original}\n${sideServer('agxfs', `${mnt}/base`, ['reuse_backup = link', 'parallel_jobs = 2'])}`);
      await startStreaming(xfs, 120_000);
      assert.equal((await env.run('backup', 'agxfs')).code, 0);
      const growPath = await pg.psql("SELECT pg_relation_filepath('grow')");
      await pg.psql("UPDATE grow SET pad = repeat('x', 200) WHERE g BETWEEN 100 AND 120");
      await pg.checkpoint();
      const second = await env.run('backup', 'agxfs');
      assert.equal(second.code, 0, second.stderr);
      const list = (JSON.parse(await env.ok('-f', 'json', 'list-backups', 'agxfs')) as Record<string, { backup_id: string }[]>).agxfs ?? [];
      const id = list[0]?.backup_id ?? '';
      const meta = JSON.parse(await fs.readFile(path.join(env.home, 'agxfs', 'agent', id, 'meta.json'), 'utf8')) as { stats: TransferStats };
      assert.ok((meta.stats.filesCloned ?? 0) >= 1 && meta.stats.filesCloned === meta.stats.filesDelta, JSON.stringify(meta.stats));
      assert.ok(meta.stats.pagesSent < 200, JSON.stringify(meta.stats));
      // The file of the changed table: its unchanged extents are shared with the basis copy.
      const file = path.join(mnt, 'base', id, 'data', growPath);
      const extents = (await runAs('root', 'filefrag', ['-v', file], { check: true })).stdout;
      assert.match(extents, /shared/, extents);
      assert.match(await env.ok('verify-backup', 'agxfs', id), /checksums of \d+ files OK/);
      const expected = await pg.psql(FINGERPRINT);
      assert.equal(await recoverFingerprint(xfs, id, { owner: BARMAN_USER, tempPrefix: 'agent-xfs' }), expected);
    } finally {
      await env.run('receive-wal', '--stop', 'agxfs');
      await env.run('receive-wal', '--drop-slot', 'agxfs');
      await fs.writeFile(env.configFile, original);
      await runAs('root', 'umount', [mnt]);
      await fs.rm(work, { recursive: true, force: true });
    }
  });

  it('an incremental over an earlier copy altered on disk does not carry the damage: the file is read again, the backup verifies', async () => {
    const growPath = await pg.psql("SELECT pg_relation_filepath('grow')");
    const basis = await backup();
    // One row changes (a page or two of the file); page 0 (frozen rows) does not.
    await pg.psql("UPDATE grow SET pad = repeat('u', 200) WHERE g = 15000");
    await pg.checkpoint();
    // Page 0 of the basis copy altered, in a new inode (earlier backups sharing the old one keep it).
    const file = path.join(backupDir(basis), 'data', growPath);
    const st = await fs.stat(file);
    const bytes = await fs.readFile(file);
    bytes[200] = (bytes[200] ?? 0) ^ 0xff;
    await fs.writeFile(`${file}.tmp`, bytes, { mode: st.mode });
    await fs.chown(`${file}.tmp`, st.uid, st.gid);
    await fs.utimes(`${file}.tmp`, st.atime, st.mtime);
    await fs.rename(`${file}.tmp`, file);
    const id = await backup();
    const s = await stats(id);
    // That file travels whole the second time (the first time, only its changed pages did).
    assert.ok(s.filesLinked > 100 && s.filesFull >= 1 && s.pagesSent > 1, JSON.stringify(s));
    assert.match(await readLog(env), new RegExp(`${growPath.replaceAll('/', '\\/')}: page 0 of its copy in backup ${basis} does not match the hash recorded for it \\(that copy was altered on disk\\): reading the whole file again`));
    const page0 = async (f: string) => (await fs.readFile(f)).subarray(0, 8192);
    assert.ok((await page0(path.join(backupDir(id), 'data', growPath))).equals(await page0(path.join(pg.dataDir, growPath))), 'page 0 as in the source');
    assert.match(await env.ok('verify-backup', env.server, id), /checksums of \d+ files OK/);
  });
});
