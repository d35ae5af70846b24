/**
 * keep, list-files, the retention column of list-backups / show-backup and the retention policy
 * applied by cron, through the real CLI (`node bin/barman.js -c CONF ...`) against a synthetic
 * catalog in a temporary barman_home. PostgreSQL is not needed: conninfo points at a port where
 * nothing listens, and nothing is waiting in incoming/ so cron starts no background process.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { DONE, FAILED, newBackupInfo, writeBackupInfoFile, type BackupInfo } from '../../src/catalog/backup-info.js';
import { PyDateTime } from '../../src/util/pytime.js';
import { walName } from '../../src/wal/names.js';
import { makeCliFixture, type CliFixture } from '../helpers/cli-fixture.js';

const MiB = 1024 * 1024;
/** 2024-01-01 10:00:00 UTC */
const T0 = 1704103200;

type Fixture = CliFixture;

function makeFixture(serverOptions: Record<string, string> = {}): Promise<Fixture> {
  return makeCliFixture({
    prefix: 'barman-keep-',
    global: { log_level: 'DEBUG' },
    logFile: true,
    server: { description: '"Retention test"', conninfo: 'host=127.0.0.1 port=1 user=barman connect_timeout=5', ...serverOptions },
  });
}

const utc = (day: number, hour: number, minute: number) => PyDateTime.fromFields({ year: 2024, month: 1, day, hour, minute }, 0);

/** A DONE backup of day `DD` of January 2024 (ID 202401DDT100000), WALs begin..end of timeline 1. */
async function addBackup(f: Fixture, id: string, begin: number, end: number, extra: Partial<BackupInfo> = {}, opts: { meta?: boolean } = {}): Promise<void> {
  const dir = path.join(f.srvDir, 'base', id);
  await fsp.mkdir(path.join(dir, 'data', 'global'), { recursive: true });
  await fsp.mkdir(path.join(dir, 'data', 'base', '1'), { recursive: true });
  await fsp.mkdir(path.join(dir, 'data', 'pg_wal'), { recursive: true });
  await fsp.writeFile(path.join(dir, 'data', 'PG_VERSION'), '16\n');
  await fsp.writeFile(path.join(dir, 'data', 'global', 'pg_control'), 'control');
  await fsp.writeFile(path.join(dir, 'data', 'base', '1', '1259'), 'rel');
  await fsp.writeFile(path.join(dir, 'data', 'backup_label'), 'label');
  const day = Number(id.slice(6, 8));
  const info = newBackupInfo({
    status: DONE,
    server_name: 'pg',
    mode: 'postgres',
    version: 160002,
    pgdata: '/srv/pgdata',
    systemid: '7300000000000000001',
    timeline: 1,
    begin_wal: walName(1, 0, begin),
    end_wal: walName(1, 0, end),
    begin_offset: 40,
    end_offset: 312,
    begin_xlog: `0/${begin.toString(16).toUpperCase()}000028`,
    end_xlog: `0/${end.toString(16).toUpperCase()}000138`,
    begin_time: utc(day, 10, 0),
    end_time: utc(day, 10, 5),
    size: 10 * MiB,
    deduplicated_size: 10 * MiB,
    cluster_size: 40 * MiB,
    ...extra,
  });
  if (opts.meta) {
    await fsp.mkdir(path.join(f.srvDir, 'meta'), { recursive: true });
    await writeBackupInfoFile(path.join(f.srvDir, 'meta', `${id}-backup.info`), info);
  } else {
    await writeBackupInfoFile(path.join(dir, 'backup.info'), info);
  }
}

const HISTORY = '00000002.history';

/** WAL segments of timeline 1 (one a minute from T0), a .backup file and a history file. */
async function addWals(f: Fixture, segs: number[], labelOf: number[] = []): Promise<void> {
  const hash = path.join(f.srvDir, 'wals', '0000000100000000');
  await fsp.mkdir(hash, { recursive: true });
  let db = '';
  for (const n of segs) {
    const name = walName(1, 0, n);
    await fsp.writeFile(path.join(hash, name), 'wal');
    db += `${name}\t${MiB}\t${T0 + n * 60}.0\tgzip\tNone\n`;
    if (labelOf.includes(n)) {
      const label = `${name}.00000028.backup`;
      await fsp.writeFile(path.join(hash, label), 'label');
      db += `${label}\t250\t${T0 + n * 60 + 1}.0\tNone\tNone\n`;
    }
  }
  await fsp.writeFile(path.join(f.srvDir, 'wals', HISTORY), '1\t0/7000000\tno recovery target specified\n');
  db += `${HISTORY}\t42\t${T0 + 5000}.0\tNone\tNone\n`;
  await fsp.writeFile(path.join(f.srvDir, 'wals', 'xlog.db'), db);
}

const lines = (text: string) => text.replace(/\n$/, '').split('\n');
const B1 = '20240101T100000';
const B2 = '20240102T100000';
const B3 = '20240103T100000';
const B4 = '20240104T100000';

/** Four DONE backups (WALs 2-3, 5-6, 8-9, 11-12) and WALs 1..13 with the backup labels. */
async function fourBackups(serverOptions: Record<string, string> = {}): Promise<Fixture> {
  const f = await makeFixture(serverOptions);
  await addBackup(f, B1, 2, 3);
  await addBackup(f, B2, 5, 6);
  await addBackup(f, B3, 8, 9);
  await addBackup(f, B4, 11, 12);
  await addWals(f, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], [2, 5, 8, 11]);
  return f;
}

async function catalogState(f: Fixture): Promise<{ backups: string[]; wals: string[]; xlogdb: string[] }> {
  const backups = (await fsp.readdir(path.join(f.srvDir, 'base'))).sort();
  const wals: string[] = [];
  for (const d of (await fsp.readdir(path.join(f.srvDir, 'wals'))).sort()) {
    const p = path.join(f.srvDir, 'wals', d);
    if ((await fsp.stat(p)).isDirectory()) wals.push(...(await fsp.readdir(p)).sort());
    else if (d !== 'xlog.db') wals.push(d);
  }
  const xlogdb = lines(await fsp.readFile(path.join(f.srvDir, 'wals', 'xlog.db'), 'utf8')).map((l) => l.split('\t')[0] ?? '');
  return { backups, wals, xlogdb };
}

/** Wait until someone holds `file` locked (flock -n fails). */
async function waitUntilLocked(file: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const free = await new Promise<boolean>((res) => execFile('flock', ['-xn', file, 'true'], (err) => res(!err)));
    if (!free) return;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`${file} never got locked`);
}

const segs = (...ns: number[]) => ns.map((n) => walName(1, 0, n));
const label = (n: number) => `${walName(1, 0, n)}.00000028.backup`;

describe('keep', () => {
  it('keeps, reports and releases (classic layout: base/<id>/annotations/keep)', async () => {
    const f = await fourBackups();
    const file = path.join(f.srvDir, 'base', B2, 'annotations', 'keep');
    let r = await f.run('keep', 'pg', B2, '--status');
    assert.deepEqual([r.code, r.stdout, r.stderr], [0, 'Server pg:\n\tKeep: nokeep\n', '']);

    r = await f.run('keep', 'pg', B2, '--target', 'full');
    assert.deepEqual([r.code, r.stdout, r.stderr], [0, '', '']);
    assert.equal(await fsp.readFile(file, 'utf8'), 'full');
    assert.equal((await fsp.stat(file)).mode & 0o777, 0o600);
    r = await f.run('keep', 'pg', B2, '-s');
    assert.equal(r.stdout, 'Server pg:\n\tKeep: full\n');

    r = await f.run('keep', 'pg', 'oldest', '--target', 'standalone');
    assert.equal(r.code, 0);
    assert.equal(await fsp.readFile(path.join(f.srvDir, 'base', B1, 'annotations', 'keep'), 'utf8'), 'standalone');
    r = await f.run('-f', 'json', 'keep', 'pg', B1, '--status');
    assert.deepEqual(JSON.parse(r.stdout), { pg: { keep_status: { description: 'Keep', message: 'standalone' } } });

    // a kept backup cannot be deleted
    r = await f.run('delete', 'pg', B2);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^WARNING: Skipping delete of backup 20240102T100000 for server pg as it has a current keep request/);

    r = await f.run('keep', 'pg', B2, '--release');
    assert.deepEqual([r.code, r.stdout, r.stderr], [0, '', '']);
    await assert.rejects(fsp.access(file));
    assert.equal((await f.run('keep', 'pg', B2, '--status')).stdout, 'Server pg:\n\tKeep: nokeep\n');
    // releasing twice is fine
    assert.equal((await f.run('keep', 'pg', B2, '-r')).code, 0);
  });

  it('writes meta/<id>-keep when the backup lives in meta/', async () => {
    const f = await makeFixture();
    await addBackup(f, B1, 2, 3, {}, { meta: true });
    await fsp.mkdir(path.join(f.srvDir, 'base', B1, 'annotations'), { recursive: true });
    await fsp.writeFile(path.join(f.srvDir, 'base', B1, 'annotations', 'keep'), 'full'); // legacy, older
    const r = await f.run('keep', 'pg', B1, '--target', 'standalone');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await fsp.readFile(path.join(f.srvDir, 'meta', `${B1}-keep`), 'utf8'), 'standalone');
    await assert.rejects(fsp.access(path.join(f.srvDir, 'base', B1, 'annotations', 'keep')));
    assert.equal((await f.run('keep', 'pg', B1, '--status')).stdout, 'Server pg:\n\tKeep: standalone\n');
    assert.equal((await f.run('keep', 'pg', B1, '--release')).code, 0);
    await assert.rejects(fsp.access(path.join(f.srvDir, 'meta', `${B1}-keep`)));
  });

  it('refuses backups that are not DONE, incremental backups, and missing or conflicting options', async () => {
    const f = await makeFixture();
    await addBackup(f, B1, 2, 3);
    await addBackup(f, B2, 5, 6, { status: FAILED, error: 'failure copying files' });
    await addBackup(f, B3, 8, 9, { status: 'WAITING_FOR_WALS' });
    await addBackup(f, B4, 11, 12, { parent_backup_id: B1 });
    let r = await f.run('keep', 'pg', B2, '--target', 'full');
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `ERROR: Cannot add keep to backup ${B2} because it has status FAILED. Only backups with status DONE can be kept.\n`);
    r = await f.run('keep', 'pg', B3, '--target', 'standalone');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /because it has status WAITING_FOR_WALS\. Only backups with status DONE can be kept\./);
    r = await f.run('keep', 'pg', B4, '--target', 'full');
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `ERROR: Unable to execute the keep command on backup ${B4}: is an incremental backup.\nOnly full backups are eligible for the use of the keep command.\n`);
    for (const id of [B2, B3, B4]) await assert.rejects(fsp.access(path.join(f.srvDir, 'base', id, 'annotations')));
    // status and release work on any backup
    assert.equal((await f.run('keep', 'pg', B2, '--status')).stdout, 'Server pg:\n\tKeep: nokeep\n');

    r = await f.run('keep', 'pg', B1);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'ERROR: one of the arguments -r/--release -s/--status --target is required\n');
    r = await f.run('keep', 'pg', B1, '--target', 'full', '--release');
    assert.equal(r.code, 2);
    r = await f.run('keep', 'pg', B1, '--target', 'partial');
    assert.equal(r.code, 2);
    r = await f.run('keep', 'pg', '20231231T000000', '--status');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Unknown backup/);
    await assert.rejects(fsp.access(path.join(f.srvDir, 'base', B1, 'annotations')));
  });
});

describe('list-files', () => {
  const dataFiles = (f: Fixture, id: string) => {
    const d = path.join(f.srvDir, 'base', id);
    return [
      path.join(d, 'backup.info'),
      path.join(d, 'data', 'PG_VERSION'),
      path.join(d, 'data', 'backup_label'),
      path.join(d, 'data', 'base', '1', '1259'),
      path.join(d, 'data', 'global', 'pg_control'),
    ];
  };
  const wal = (f: Fixture, name: string) => path.join(f.srvDir, 'wals', name.endsWith('.history') ? '' : name.slice(0, 16), name);

  it('lists data, standalone (default), wal and full', async () => {
    const f = await fourBackups();
    let r = await f.run('list-files', 'pg', B2, '--target', 'data');
    assert.deepEqual([r.code, r.stderr], [0, '']);
    assert.deepEqual(lines(r.stdout), dataFiles(f, B2));

    r = await f.run('list-files', 'pg', B2);
    assert.deepEqual(lines(r.stdout), [...dataFiles(f, B2), ...segs(5, 6).map((n) => wal(f, n))]);
    assert.deepEqual(lines((await f.run('list-files', '--target', 'standalone', 'pg', B2)).stdout), lines(r.stdout));

    // from begin_wal up to the next backup's end_wal (segments only), and every history file
    const wals = [...segs(5, 6, 7, 8, 9), HISTORY].map((n) => wal(f, n));
    r = await f.run('list-files', 'pg', B2, '--target', 'wal');
    assert.deepEqual(lines(r.stdout), wals);
    r = await f.run('list-files', 'pg', B2, '--target', 'full');
    assert.deepEqual(lines(r.stdout), [...dataFiles(f, B2), ...wals]);

    // the newest backup: to the end of the archive
    r = await f.run('list-files', 'pg', 'latest', '--target', 'wal');
    assert.deepEqual(lines(r.stdout), [...segs(11, 12, 13), HISTORY].map((n) => wal(f, n)));
  });

  it('lists required WALs even when they are not archived, and empty directories on request', async () => {
    const f = await makeFixture();
    await addBackup(f, B1, 2, 4);
    await addWals(f, [2, 3]);
    let r = await f.run('list-files', 'pg', B1, '--target', 'standalone');
    assert.deepEqual(lines(r.stdout).slice(-3), segs(2, 3, 4).map((n) => wal(f, n)));
    r = await f.run('list-files', 'pg', B1, '--target', 'data', '--list-empty-directories');
    const d = path.join(f.srvDir, 'base', B1, 'data');
    assert.deepEqual(lines(r.stdout), [
      path.join(f.srvDir, 'base', B1, 'backup.info'),
      path.join(d, 'PG_VERSION'),
      path.join(d, 'backup_label'),
      path.join(d, 'base', '1', '1259'),
      path.join(d, 'global', 'pg_control'),
      path.join(d, 'pg_wal'),
    ]);
    r = await f.run('-f', 'json', 'list-files', 'pg', B1, '--target', 'data');
    assert.deepEqual(JSON.parse(r.stdout), { _INFO: dataFiles(f, B1) });
    r = await f.run('list-files', 'pg', B1, '--target', 'everything');
    assert.equal(r.code, 2);
  });
});

describe('retention in list-backups and show-backup', () => {
  it('shows KEEP:FULL and OBSOLETE (never VALID) with a REDUNDANCY policy', async () => {
    const f = await fourBackups({ retention_policy: 'REDUNDANCY 2' });
    assert.equal((await f.run('keep', 'pg', B1, '--target', 'full')).code, 0);
    let r = await f.run('list-backups', 'pg');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      lines(r.stdout).map((l) => [l.split(' - ')[0], l.split(' - ')[4]]),
      [[`pg ${B4}`, undefined], [`pg ${B3}`, undefined], [`pg ${B2}`, 'OBSOLETE'], [`pg ${B1}`, 'KEEP:FULL']],
    );
    assert.match(r.stdout, /^pg 20240102T100000 - Tue Jan  2 10:05:00 2024 - Size: 12\.0 MiB - WAL Size: 3\.0 MiB - OBSOLETE$/m);
    r = await f.run('-f', 'json', 'list-backups', 'pg');
    assert.deepEqual(
      (JSON.parse(r.stdout) as { pg: { backup_id: string; retention_status: string }[] }).pg.map((b) => [b.backup_id, b.retention_status]),
      // Barman prints '-' for VALID backups.
      [[B4, '-'], [B3, '-'], [B2, 'OBSOLETE'], [B1, 'KEEP:FULL']],
    );
    r = await f.run('show-backup', 'pg', B2);
    assert.match(r.stdout, /\n    Retention Policy     : OBSOLETE\n/);
    r = await f.run('show-backup', 'pg', B4);
    assert.match(r.stdout, /\n    Retention Policy     : VALID\n/);

    // without a policy: nothing in list-backups, `not enforced` in show-backup
    const g = await fourBackups();
    r = await g.run('list-backups', 'pg');
    assert.ok(lines(r.stdout).every((l) => !/OBSOLETE|KEEP|VALID/.test(l)));
    assert.match((await g.run('show-backup', 'pg', B2)).stdout, /\n    Retention Policy     : not enforced\n/);
  });

  it('shows OBSOLETE* for a recovery window held by minimum_redundancy', async () => {
    const f = await fourBackups({ retention_policy: 'RECOVERY WINDOW OF 1 DAY', minimum_redundancy: '3' });
    const r = await f.run('list-backups', 'pg');
    // the window start is long after every backup: the newest is the one that covers it
    assert.deepEqual(
      lines(r.stdout).map((l) => l.split(' - ')[4]),
      [undefined, 'OBSOLETE*', 'OBSOLETE*', 'OBSOLETE'],
    );
  });
});

describe('check: retention items', () => {
  it('reports retention policy settings, backup maximum age and minimum redundancy (full backups only)', async () => {
    const f = await fourBackups({ retention_policy: 'RECOVERY WINDOW OF 2 WEEKS', last_backup_maximum_age: '1 day', minimum_redundancy: '4' });
    await addBackup(f, '20240105T100000', 14, 14, { parent_backup_id: B4 });
    const r = await f.run('check', 'pg');
    assert.equal(r.code, 1);
    const out = lines(r.stdout);
    assert.ok(out.includes('\tretention policy settings: OK'), r.stdout);
    assert.ok(out.some((l) => /^\tbackup maximum age: FAILED \(interval provided: 1 day, latest backup age: \d+ days, .*\)$/.test(l)), r.stdout);
    assert.ok(out.includes('\tfailed backups: OK (there are 0 failed backups)'), r.stdout);
    assert.ok(out.includes('\tminimum redundancy requirements: OK (have 4 non-incremental backups, expected at least 4)'), r.stdout);
    const order = ['retention policy settings', 'backup maximum age', 'failed backups', 'minimum redundancy requirements'].map((n) => out.findIndex((l) => l.startsWith(`\t${n}:`)));
    assert.deepEqual([...order].sort((a, b) => a - b), order);
    const st = await f.run('status', 'pg');
    assert.match(st.stdout, /\tRetention policies: enforced \(mode: auto, retention: RECOVERY WINDOW OF 2 WEEKS, WAL retention: MAIN\)\n/);
    assert.match(st.stdout, /\tMinimum redundancy requirements: satisfied \(4\/4\)\n/);
  });

  it('an invalid retention_policy is ignored with a warning (as Barman): no policy, cron deletes nothing', async () => {
    const f = await fourBackups({ retention_policy: 'REDUNDANCY two' });
    const st = await f.run('status', 'pg');
    assert.match(st.stderr, /^WARNING: Ignoring invalid configuration value 'REDUNDANCY two' for key retention_policy in \[pg\] section: /m);
    assert.match(st.stdout, /\tRetention policies: not enforced\n/);
    const r = await f.run('cron');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await catalogState(f)).backups, [B1, B2, B3, B4]);
  });
});

describe('cron applies the retention policy', () => {
  it('REDUNDANCY 2: deletes the two oldest backups and the WALs before the oldest remaining one', async () => {
    const f = await fourBackups({ retention_policy: 'REDUNDANCY 2' });
    const r = await f.run('cron');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    const out = lines(r.stdout);
    assert.ok(out.includes(`Enforcing retention policy: removing backup ${B1} for server pg`), r.stdout);
    assert.ok(out.includes(`Enforcing retention policy: removing backup ${B2} for server pg`), r.stdout);
    assert.ok(out.indexOf(`Deleting backup ${B1} for server pg`) < out.indexOf(`Deleting backup ${B2} for server pg`));
    const state = await catalogState(f);
    assert.deepEqual(state.backups, [B3, B4]);
    const left = [...segs(8), label(8), ...segs(9, 10, 11), label(11), ...segs(12, 13)];
    assert.deepEqual(state.wals, [...left, HISTORY]);
    assert.deepEqual(state.xlogdb, [...left, HISTORY]);
    // a second cron has nothing to do
    const again = await f.run('cron');
    assert.equal(again.stdout, '');
    assert.deepEqual(await catalogState(f), state);
    const log = await fsp.readFile(path.join(path.dirname(f.home), 'barman.log'), 'utf8');
    assert.match(log, /barman\.retention INFO: \[pg\] Enforcing retention policy on server pg: removing backup 20240101T100000 \(OBSOLETE for REDUNDANCY 2\)/);
    assert.match(log, /barman\.retention DEBUG: \[pg\] Backup 20240104T100000 of server pg: VALID/);
  });

  it('never deletes a kept backup; a standalone keep protects only its own WALs', async () => {
    const f = await fourBackups({ retention_policy: 'REDUNDANCY 2' });
    assert.equal((await f.run('keep', 'pg', B1, '--target', 'standalone')).code, 0);
    const r = await f.run('cron');
    assert.equal(r.code, 0, r.stderr);
    const state = await catalogState(f);
    assert.deepEqual(state.backups, [B1, B3, B4]);
    // WAL 1 (before B1), 4 and 5..7 (B2's) go; B1's own range 2..3 stays (with its label)
    assert.deepEqual(state.wals, [...segs(2), label(2), ...segs(3, 8), label(8), ...segs(9, 10, 11), label(11), ...segs(12, 13), HISTORY]);
    assert.match(r.stdout, /Delete associated WAL segments:/);
  });

  it('a full keep keeps every WAL after the kept backup', async () => {
    const f = await fourBackups({ retention_policy: 'REDUNDANCY 2' });
    assert.equal((await f.run('keep', 'pg', B1, '--target', 'full')).code, 0);
    const before = (await catalogState(f)).wals;
    assert.equal((await f.run('cron')).code, 0);
    const state = await catalogState(f);
    assert.deepEqual(state.backups, [B1, B3, B4]);
    assert.deepEqual(state.wals, before);
  });

  it('respects minimum_redundancy above the policy', async () => {
    const f = await fourBackups({ retention_policy: 'REDUNDANCY 2', minimum_redundancy: '3' });
    assert.equal((await f.run('cron')).code, 0);
    const state = await catalogState(f);
    assert.deepEqual(state.backups, [B2, B3, B4]);
    assert.deepEqual(state.wals, [...segs(5), label(5), ...segs(6, 7, 8), label(8), ...segs(9, 10, 11), label(11), ...segs(12, 13), HISTORY]);
  });

  it('skips a backup whose lock another process holds, and deletes it at the next cron', async () => {
    const f = await fourBackups({ retention_policy: 'REDUNDANCY 3' });
    const lockFile = path.join(f.home, `.pg-${B1}.lock`);
    await fsp.writeFile(lockFile, '');
    // another process holds the per-backup lock (flock -F: the lock goes when we kill it)
    const holder = execFile('flock', ['-F', '-x', lockFile, 'sleep', '60']);
    await waitUntilLocked(lockFile);
    try {
      const r = await f.run('cron');
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /WARNING: Another action is in progress for the backup 20240101T100000 of server pg, skipping delete \(retention policy: will retry at the next cron\)/);
      assert.deepEqual((await catalogState(f)).backups, [B1, B2, B3, B4]);
    } finally {
      holder.kill();
      await new Promise((res) => holder.once('exit', res));
    }
    assert.equal((await f.run('cron')).code, 0);
    assert.deepEqual((await catalogState(f)).backups, [B2, B3, B4]);
  });

  it('does nothing without a retention policy', async () => {
    const f = await fourBackups();
    const before = await catalogState(f);
    const r = await f.run('cron');
    assert.deepEqual([r.code, r.stdout, r.stderr], [0, '', '']);
    assert.deepEqual(await catalogState(f), before);
  });
});
