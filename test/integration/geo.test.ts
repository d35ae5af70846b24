/**
 * Geo-redundancy end to end (spec §10), barman-ts on both sides: a primary backup server fed by
 * a real PostgreSQL 15 (streaming), passive nodes reaching it through a real sshd on 127.0.0.1,
 * rsync for the copies. One cluster and one primary for the whole file; each passive has its own
 * barman_home and configuration:
 *   A  syncs through `cron` alone, recovers to a point in time, follows the primary's retention,
 *      and finally takes over (primary_ssh_command removed);
 *   B  copies with a bandwidth limit, has its ssh killed in the middle, and resumes; then has a
 *      backup deleted on the primary under it;
 *   and short-lived ones for bad input.
 */
import assert from 'node:assert/strict';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createBarmanEnv, readLog, startStreaming, type BarmanEnv } from '../helpers/barman-env.js';
import { backupInfoText, backupStatuses, cronUntil, descendants, infoField, setOption, startBarman, startPrimarySshd, type PrimarySshd } from '../helpers/geo.js';
import { cleanupAll, PgCluster, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { BARMAN_USER, lookupUser, makeTempDir, runAs, sleep, waitFor } from '../helpers/system.js';
import { treeSize } from '../../src/util/fsutil.js';

describe('geo-redundancy: passive nodes mirroring a barman-ts primary', () => {
  let pg: PgCluster;
  let primary: BarmanEnv;
  let ssh: PrimarySshd;
  let passiveA: BarmanEnv;
  const ids: string[] = [];
  let target = { time: '', rows: 0 };

  const count = async (c: PgCluster) => Number(await c.psql('SELECT count(*) FROM t'));
  const insert = (n: number, tag: string) => pg.psql(`INSERT INTO t (tag) SELECT '${tag}' FROM generate_series(1, ${n})`);
  const primaryBackup = async (): Promise<string> => {
    await primary.ok('backup', '--wait', '--wait-timeout', '60', '--immediate-checkpoint', primary.server);
    const id = (await primary.ok('list-backups', '--minimal', primary.server)).trim().split('\n')[0] ?? '';
    ids.push(id);
    return id;
  };
  const passive = (extra: Record<string, string> = {}) =>
    createBarmanEnv(pg, { extra: { primary_ssh_command: ssh.sshCommand, retention_policy: 'REDUNDANCY 2', ...extra } });

  before(async () => {
    pg = await PgCluster.create();
    await pg.psql('CREATE TABLE t (id serial PRIMARY KEY, tag text, at timestamptz DEFAULT clock_timestamp())');
    // Some volume, so that a copy throttled to 2 MB/s lasts long enough to be cut.
    await pg.psql("CREATE TABLE filler AS SELECT g, md5(g::text) || md5((g * 7)::text) AS body FROM generate_series(1, 100000) g");
    await insert(100, 'base');
    primary = await createBarmanEnv(pg, { extra: { retention_policy: 'REDUNDANCY 2' } });
    await startStreaming(primary);
    ssh = await startPrimarySshd(primary.configFile);
    passiveA = await passive({ sync_lag_maximum_age: '1 hour' });
  });

  after(async () => {
    await passiveA?.stop().catch(() => undefined);
    await primary?.stop().catch(() => undefined);
    await ssh?.stop();
    await cleanupAll();
  });

  it('a passive node gets both backups DONE, with the same sizes and WAL range, through cron alone', async () => {
    await primaryBackup();
    await insert(10, 'phase1');
    await sleep(1100);
    target = { time: await pg.psql("SELECT to_char(clock_timestamp(), 'YYYY-MM-DD HH24:MI:SS.US TZH:TZM')"), rows: await count(pg) };
    await sleep(1100);
    await insert(10, 'phase2');
    await primaryBackup();
    await insert(5, 'phase3');
    await primary.ok('switch-wal', '--archive', '--archive-timeout', '60', primary.server);

    const [b1, b2] = ids as [string, string];
    await cronUntil(passiveA, async () => {
      const st = await backupStatuses(passiveA);
      return st.get(b1) === 'DONE' && st.get(b2) === 'DONE';
    }, 'both backups DONE on the passive');
    for (const id of [b1, b2]) {
      const mine = backupInfoText(passiveA.home, 'pg', id);
      const theirs = backupInfoText(primary.home, 'pg', id);
      for (const key of ['size', 'begin_wal', 'end_wal', 'begin_xlog', 'end_xlog', 'timeline', 'systemid', 'backup_label']) {
        assert.equal(infoField(mine, key), infoField(theirs, key), `${id} ${key}`);
      }
      // The files themselves: the same bytes (the backup.info aside, which each side writes).
      const data = (home: string) => treeSize(path.join(home, 'pg', 'base', id, 'data'));
      assert.equal(await data(passiveA.home), await data(primary.home), `${id} data size`);
    }
    const log = await readLog(passiveA);
    assert.match(log, /Synchronised backup \S+ of server pg: \d+ bytes received/);
    assert.ok(!existsSync(path.join(passiveA.home, 'pg', 'base', b2, '.barman-ts-sync')), 'no resume state left once DONE');
  });

  it('recovers on the passive to a time between the two backups: exactly the rows committed before it', async () => {
    const dest = await passiveA.newDir('geo-pitr-');
    await passiveA.ok('recover', 'pg', ids[0] ?? '', dest, '--target-time', target.time, '--target-action', 'promote');
    const { cluster, outcome } = await startRecoveredCluster(dest);
    try {
      assert.ok(['primary', 'paused'].includes(outcome), outcome);
      assert.equal(await count(cluster), target.rows);
    } finally {
      await cluster.destroy();
    }
  });

  it('shows the passive node in list-servers, status, check (with the sync lines, Nagios too) and metrics; backup skips it', async () => {
    assert.match(await passiveA.ok('list-servers'), /^pg - integration test server \(Passive\)$/m);
    const status = await passiveA.ok('status', 'pg');
    assert.match(status, /Passive node: True/);
    assert.match(status, /SSH command to primary server: ssh -F /);
    const check = await passiveA.run('check', 'pg');
    assert.match(check.stdout, /\tssh: OK \(Barman primary node\)/);
    assert.match(check.stdout, /\tlast sync: OK \(primary answered .* ago\)/);
    assert.match(check.stdout, /\tsync lag: OK \(\d+ WAL segments?, .* behind, interval provided: 1 hour\)/);
    assert.doesNotMatch(check.stdout, /PostgreSQL|pg_basebackup/);
    const nagios = await passiveA.run('check', '--nagios', 'pg');
    assert.match(nagios.stdout, /^BARMAN (OK|CRITICAL)/);
    const metrics = await passiveA.ok('metrics', '--no-checks', 'pg');
    assert.match(metrics, /^barman_sync_lag_seconds\{server="pg"\} \d/m);
    assert.match(metrics, /^barman_sync_lag_segments\{server="pg"\} \d+$/m);
    assert.match(metrics, /^barman_up\{server="pg"\} 0$/m);
    const backup = await passiveA.run('backup', 'pg');
    assert.equal(backup.code, 0);
    assert.equal(backup.stdout.trim(), "Skipping passive server 'pg'");
    // A tight limit makes the lag line fail (and check exit 1).
    await setOption(passiveA.configFile, 'sync_lag_maximum_age', '1 seconds');
    await sleep(1100);
    const late = await passiveA.run('check', 'pg');
    assert.equal(late.code, 1);
    assert.match(late.stdout, /\tsync lag: FAILED \(.* more than sync_lag_maximum_age \(1 second\)\)/);
    await setOption(passiveA.configFile, 'sync_lag_maximum_age', '1 hour');
  });

  it('an ssh connection killed in the middle of sync-backup leaves it FAILED; the next run completes it sending less', async () => {
    const b = await passive({ bandwidth_limit: '2000' });
    await b.ok('sync-info', '--primary', 'pg');
    const id = ids[0] ?? '';
    const dest = path.join(b.home, 'pg', 'base', id);
    const total = await treeSize(path.join(primary.home, 'pg', 'base', id));
    const run = startBarman(b, ['sync-backup', 'pg', id], { BARMAN_TS_SYNC_BUCKET_BYTES: String(1024 * 1024) });
    // Cut once some rsync runs are complete (recorded in the resume state) and half is here.
    const state = path.join(dest, '.barman-ts-sync');
    await waitFor(async () => existsSync(state) && readFileSync(state, 'utf8').length > 0 && (await treeSize(dest)) > total / 2, {
      timeoutMs: 90_000,
      what: 'half of the backup copied',
    });
    assert.equal(infoField(backupInfoText(b.home, 'pg', id), 'status'), 'SYNCING');
    // The ssh of each rsync run, listed then killed: one may end in between (ESRCH), the next
    // one started is then killed instead.
    let killed = 0;
    for (let attempt = 0; killed === 0 && attempt < 100; attempt++) {
      for (const p of descendants(run.child.pid ?? -1).filter((d) => d.comm === 'ssh')) {
        try {
          process.kill(p.pid, 'SIGKILL');
          killed++;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
        }
      }
      if (killed === 0) await sleep(20);
    }
    assert.ok(killed > 0, 'an ssh to the primary was running, and was killed');
    const cut = await run.done;
    assert.equal(cut.code, 1, cut.stderr);
    assert.match(cut.stderr, new RegExp(`^ERROR: failure syncing server pg backup ${id}: `, 'm'));
    const failed = backupInfoText(b.home, 'pg', id);
    assert.equal(infoField(failed, 'status'), 'FAILED');
    assert.match(infoField(failed, 'error'), new RegExp(`^failure syncing server pg backup ${id}: `));

    await setOption(b.configFile, 'bandwidth_limit', null);
    await b.ok('sync-backup', 'pg', id);
    const status = infoField(backupInfoText(b.home, 'pg', id), 'status');
    assert.ok(['WAITING_FOR_WALS', 'DONE'].includes(status), status);
    const logB = await readLog(b);
    const m = /Synchronised backup \S+ of server pg: (\d+) bytes received .*\((\d+) files, (\d+) already copied by an earlier run\)/.exec(logB);
    assert.ok(m, 'resume logged');
    assert.ok(Number(m[1]) < total * 0.8, `resumed run received ${m[1]} of ${total} bytes\n${logB.split('\n').filter((l) => /sync|rsync|backup:/.test(l)).slice(-40).join('\n')}`);
    assert.ok(Number(m[3]) > 0, 'files recorded by the cut run are not sent again');
    // The WAL files come with sync-wals; then the backup is DONE.
    await b.ok('sync-wals', 'pg');
    await b.ok('check-backup', 'pg', id);
    assert.equal(infoField(backupInfoText(b.home, 'pg', id), 'status'), 'DONE');

  });

  it('follows a backup deleted on the primary by retention, under its own retention policy', async () => {
    await insert(5, 'phase4');
    const b3 = await primaryBackup();
    await insert(5, 'phase5');
    await primary.ok('cron'); // REDUNDANCY 2: the oldest backup goes on the primary
    const onPrimary = [...(await backupStatuses(primary)).keys()].sort();
    assert.deepEqual(onPrimary, [ids[1], b3].sort());
    await cronUntil(passiveA, async () => {
      const st = await backupStatuses(passiveA);
      return st.get(b3) === 'DONE' && st.size === 2;
    }, 'the new backup synced and the oldest one removed by the local retention policy');
    assert.deepEqual([...(await backupStatuses(passiveA)).keys()].sort(), onPrimary);
  });

  it('a passive node that keeps one backup copies only the newest, and its WAL without waiting for the older one', async () => {
    const onPrimary = [...(await backupStatuses(primary)).keys()].sort();
    assert.ok(onPrimary.length >= 2, `the primary has several backups: ${onPrimary.join(' ')}`);
    const newest = onPrimary.at(-1) ?? '';
    const one = await passive({ retention_policy: 'REDUNDANCY 1' });
    try {
      await one.ok('sync-info', '--primary', one.server);
      await one.ok('sync-backup', one.server, newest);
      // The older backups would be obsolete at once here: sync-wals does not wait for them.
      await one.ok('sync-wals', one.server);
      await one.ok('check-backup', one.server, newest);
      assert.deepEqual([...(await backupStatuses(one)).entries()], [[newest, 'DONE']]);
      await one.ok('cron');
      assert.deepEqual([...(await backupStatuses(one)).entries()], [[newest, 'DONE']], 'cron copies no backup that retention would drop');
    } finally {
      await one.stop().catch(() => undefined);
    }
  });

  it('a backup deleted on the primary during its copy is FAILED on the passive node, then removed by cron', async () => {
    const d = await passive({ bandwidth_limit: '2000' });
    await d.ok('sync-info', '--primary', 'pg');
    const id = ids.at(-1) ?? '';
    const dest = path.join(d.home, 'pg', 'base', id);
    const run = startBarman(d, ['sync-backup', 'pg', id]);
    await waitFor(async () => existsSync(dest) && (await treeSize(dest)) > 2 * 1024 * 1024, { timeoutMs: 60_000, what: 'copy started' });
    await primary.ok('delete', 'pg', id);
    const gone = await run.done;
    assert.equal(gone.code, 1, gone.stdout);
    assert.match(gone.stderr, new RegExp(`^ERROR: failure syncing server pg backup ${id}: `, 'm'));
    assert.equal(infoField(backupInfoText(d.home, 'pg', id), 'status'), 'FAILED');
    await setOption(d.configFile, 'bandwidth_limit', null);
    await cronUntil(d, async () => !existsSync(dest), 'the failed copy removed');
    ids.pop();
  });

  it('refuses bad input with one clear line and leaves the catalog as it was', async () => {
    const c = await passive();
    const info = path.join(c.home, 'pg', 'primary.info');
    // A LAST_WAL the primary no longer has: Barman's warning, then the full list.
    const stale = await c.run('sync-info', '--primary', 'pg', '000000010000000000000001');
    assert.equal(stale.code, 0, stale.stderr);
    assert.match(stale.stderr, /^WARNING: sync-info is out of sync\. Self-recovery procedure started: requesting full synchronisation from primary server pg$/m);
    assert.match(stale.stdout, /^\{\n {4}"last_position": \d+,/);
    const saved = readFileSync(info, 'utf8');
    const fake = async (name: string, script: string) => {
      const file = path.join(c.root, name);
      await runAs(BARMAN_USER, 'tee', [file], { input: `#!/bin/sh\n${script}\n`, check: true });
      await fs.chmod(file, 0o755);
      return file;
    };
    const truncated = await fake('truncated.sh', `head -c 300 '${info}'`);
    const garbage = await fake('garbage.sh', `printf '{"last_position": 0, "last_name": "../../etc/passwd", "backups": {}, "wals": [], "version": "x", "config": {}}'`);
    const cases: [string, RegExp][] = [
      [`${ssh.sshCommand} -p 1`, /^ERROR: sync-info execution on remote primary server pg failed: .*(refused|port 1)/],
      ['/nonexistent/ssh barman@nowhere', /^ERROR: sync-info execution on remote primary server pg failed: .*not found/],
      [truncated, /^ERROR: sync-info of remote primary server pg returned an unusable answer: not JSON/],
      [garbage, /^ERROR: sync-info of remote primary server pg returned an unusable answer: last_name: not a WAL file name/],
    ];
    for (const [command, expected] of cases) {
      await setOption(c.configFile, 'primary_ssh_command', command);
      const r = await c.run('sync-info', '--primary', 'pg');
      assert.equal(r.code, 1, command);
      assert.match(r.stderr, expected);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.equal(readFileSync(info, 'utf8'), saved, 'primary.info unchanged');
      const cron = await c.run('cron');
      assert.equal(cron.code, 1);
      assert.match(cron.stderr, /ERROR: Failed to retrieve the primary node status: /);
    }
    assert.deepEqual([...(await backupStatuses(c)).keys()], []);
    // sync-backup of a backup the primary does not have; sync-wals refusing another compression.
    const none = await c.run('sync-backup', 'pg', '20000101T000000');
    assert.equal(none.code, 1);
    assert.match(none.stderr, /^ERROR: Backup 20000101T000000 is absent on pg server$/m);
    const bad = await c.run('sync-backup', 'pg', '../x');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^ERROR: Invalid backup ID/m);
    await setOption(c.configFile, 'compression', 'gzip');
    const comp = await c.run('sync-wals', 'pg');
    assert.equal(comp.code, 1);
    assert.match(comp.stderr, /^ERROR: WAL synchronisation for server pg failed with: Compression method on server pg \(None\) does not match local compression method \(gzip\)$/m);
    // On a server that is not passive.
    const notPassive = await primary.run('sync-wals', 'pg');
    assert.equal(notPassive.code, 1);
    assert.match(notPassive.stderr, /^ERROR: server pg is not passive$/m);
  });

  it('a full disk on the passive node leaves the copy FAILED, never DONE', async (t) => {
    const e = await passive();
    const small = await makeTempDir('geo-full-', { owner: BARMAN_USER, mode: 0o700 });
    const mounted = await runAs('root', 'mount', ['-t', 'tmpfs', '-o', `size=4m,mode=0700,uid=${lookupUser(BARMAN_USER)?.uid ?? 0}`, 'tmpfs', small]);
    if (mounted.code !== 0) {
      t.skip(`cannot mount a small tmpfs here: ${mounted.stderr.trim()}`);
      return;
    }
    try {
      await setOption(e.configFile, 'basebackups_directory', small);
      await e.ok('sync-info', '--primary', 'pg');
      const id = ids.at(-1) ?? '';
      const r = await e.run('sync-backup', 'pg', id);
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`^ERROR: failure syncing server pg backup ${id}: .*No space left on device`, 'm'));
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.equal(infoField(readFileSync(path.join(small, id, 'backup.info'), 'utf8'), 'status'), 'FAILED');
    } finally {
      await runAs('root', 'umount', [small]);
    }
  });

  it('takes over: without primary_ssh_command the passive node backs up PostgreSQL and recovers', async () => {
    // The runbook of the README, step by step.
    await primary.stop(); // the primary site is gone: its WAL streaming stops
    await passiveA.ok('cron'); // one last sync while its backup server still answers
    await setOption(passiveA.configFile, 'primary_ssh_command', null);
    assert.doesNotMatch(await passiveA.ok('list-servers'), /Passive/);
    await startStreaming(passiveA); // cron, then check until receive-wal and the slot are OK
    await passiveA.ok('switch-wal', '--force', '--archive', '--archive-timeout', '60', 'pg');
    await insert(7, 'after-takeover');
    const rows = await count(pg);
    const before = new Set((await backupStatuses(passiveA)).keys());
    await passiveA.ok('backup', '--wait', '--wait-timeout', '60', '--immediate-checkpoint', 'pg');
    const st = await backupStatuses(passiveA);
    const fresh = [...st.keys()].filter((id) => !before.has(id));
    assert.equal(fresh.length, 1);
    assert.equal(st.get(fresh[0] ?? ''), 'DONE');
    const dest = await passiveA.newDir('geo-takeover-');
    await passiveA.ok('recover', 'pg', fresh[0] ?? '', dest);
    const { cluster } = await startRecoveredCluster(dest);
    try {
      assert.equal(await count(cluster), rows);
    } finally {
      await cluster.destroy();
    }
  });
});
