/**
 * `barman metrics`: values computed from a synthetic catalog (backups, xlog.db, errors/) match
 * it, with PostgreSQL and the checks replaced; then through the real CLI against a server that
 * does not answer (up = 0), and the atomic `-o` file.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { DONE, FAILED, WAITING_FOR_WALS, type BackupInfo } from '../../src/catalog/backup-info.js';
import { loadConfig, type ServerConfig } from '../../src/config/config.js';
import { archiveFacts, collectMetrics, errorKind, walLagSegments } from '../../src/reporting/metrics.js';
import type { PgFacts } from '../../src/reporting/server-status.js';
import { walName } from '../../src/wal/names.js';
import { addSyntheticBackup } from '../helpers/catalog-fixture.js';
import { makeCliFixture, type CliFixture } from '../helpers/cli-fixture.js';
import { metricValues } from '../helpers/prometheus.js';

const MiB = 1024 * 1024;
/** 2024-01-01 10:00:00 UTC */
const T0 = 1704103200;

/** A backup of day DD of its id whose WAL is segment DD. */
async function addBackup(f: CliFixture, id: string, status: string, size: number, extra: Partial<BackupInfo> = {}): Promise<void> {
  const wal = walName(1, 0, Number(id.slice(6, 8)));
  await addSyntheticBackup(f.srvDir, id, { status, size, begin_wal: wal, end_wal: wal, ...extra });
}

/** Segments `segs` of timeline 1, archived one a minute from T0, `n` MiB each on disk. */
async function addXlogDb(f: CliFixture, segs: number[]): Promise<void> {
  await fsp.mkdir(path.join(f.srvDir, 'wals'), { recursive: true });
  let db = '';
  for (const n of segs) db += `${walName(1, 0, n)}\t${n * MiB}\t${T0 + n * 60}.0\tgzip\n`;
  // Not segments: must not count.
  db += `00000002.history\t40\t${T0 + 9999}.0\tNone\n`;
  db += `${walName(1, 0, 1)}.00000028.backup\t300\t${T0 + 9999}.0\tNone\n`;
  await fsp.writeFile(path.join(f.srvDir, 'wals', 'xlog.db'), db);
}

async function fixture(server: Record<string, string> = {}): Promise<{ f: CliFixture; srv: ServerConfig }> {
  const f = await makeCliFixture({
    prefix: 'barman-metrics-',
    global: { log_level: 'ERROR' },
    server: { conninfo: 'host=127.0.0.1 port=1 user=barman password=secret connect_timeout=5', check_timeout: '5', ...server },
  });
  await addBackup(f, '20240101T100000', DONE, 10 * MiB);
  await addBackup(f, '20240102T100000', FAILED, 1 * MiB);
  await addBackup(f, '20240103T100000', DONE, 20 * MiB);
  await addBackup(f, '20240104T100000', WAITING_FOR_WALS, 30 * MiB);
  await addXlogDb(f, [1, 2, 3, 4, 5]);
  await fsp.mkdir(path.join(f.srvDir, 'errors'), { recursive: true });
  for (const n of ['A.duplicate', 'B.duplicate', 'C.unknown', 'D.error', 'E.wrong']) await fsp.writeFile(path.join(f.srvDir, 'errors', n), 'x');
  const srv = loadConfig(f.configFile).servers.get('pg');
  assert.ok(srv);
  return { f, srv };
}

const NOW = (T0 + 3 * 86400) * 1000; // 2024-01-04 10:00:00 UTC
const upFacts: PgFacts = {
  version: '15.4',
  currentWal: walName(1, 0, 9),
  archiver: { archivedCount: 10, lastArchivedWal: null, lastArchivedTime: null, failedCount: 3, lastFailedWal: null, lastFailedTime: null, statsReset: null },
};

describe('metrics from the catalog', () => {
  it('match the backups, xlog.db, errors/, PostgreSQL and the checks', async () => {
    const { srv } = await fixture();
    const text = await collectMetrics([srv], {
      now: () => NOW,
      pgFacts: async () => upFacts,
      checks: async () => [
        { name: 'PostgreSQL', ok: true },
        { name: 'WAL archive', ok: false },
      ],
      receiveWalRunning: async () => true,
    });
    const v = metricValues(text);
    const s = 'server="pg"';
    assert.equal(v.get(`barman_up{${s}}`), 1);
    // Newest DONE: 20240103T100000, ended 2024-01-03 10:05 UTC, 23 h 55 min before NOW.
    assert.equal(v.get(`barman_last_backup_age_seconds{${s}}`), 86400 - 300);
    assert.equal(v.get(`barman_last_backup_timestamp_seconds{${s}}`), T0 + 2 * 86400 + 300);
    assert.equal(v.get(`barman_last_backup_size_bytes{${s}}`), 20 * MiB);
    assert.equal(v.get(`barman_backups{${s},status="DONE"}`), 2);
    assert.equal(v.get(`barman_backups{${s},status="FAILED"}`), 1);
    assert.equal(v.get(`barman_backups{${s},status="WAITING_FOR_WALS"}`), 1);
    assert.equal(v.get(`barman_backups{${s},status="STARTED"}`), 0);
    // Newest archived segment 5, PostgreSQL writes 9: 6, 7, 8 are complete and not archived.
    assert.equal(v.get(`barman_wal_archive_lag_segments{${s}}`), 3);
    assert.equal(v.get(`barman_wal_archive_lag_seconds{${s}}`), NOW / 1000 - (T0 + 5 * 60));
    assert.equal(v.get(`barman_wal_archive_segments{${s}}`), 5);
    assert.equal(v.get(`barman_wal_archive_size_bytes{${s}}`), 15 * MiB);
    assert.equal(v.get(`barman_archiver_failed_total{${s}}`), 3);
    assert.equal(v.get(`barman_archiver_errors{kind="duplicate",${s}}`), 2);
    assert.equal(v.get(`barman_archiver_errors{kind="unknown",${s}}`), 1);
    assert.equal(v.get(`barman_archiver_errors{kind="failure",${s}}`), 1);
    assert.equal(v.get(`barman_archiver_errors{kind="not_relevant",${s}}`), 1);
    assert.equal(v.get(`barman_receive_wal_running{${s}}`), 1);
    assert.equal(v.get(`barman_check_ok{check="PostgreSQL",${s}}`), 1);
    assert.equal(v.get(`barman_check_ok{check="WAL archive",${s}}`), 0);
    // Every family has HELP and TYPE.
    assert.match(text, /^# HELP barman_up .+$/m);
    assert.match(text, /^# TYPE barman_archiver_failed_total counter$/m);
    assert.match(text, /^# TYPE barman_backups gauge$/m);
  });

  it('a server that does not answer gives up = 0 and its catalog metrics within check_timeout', async () => {
    const { srv } = await fixture({ check_timeout: '1' });
    const never = new Promise<never>(() => undefined);
    const started = Date.now();
    const text = await collectMetrics([srv], { now: () => NOW, pgFacts: () => never, checks: () => never, receiveWalRunning: async () => false });
    // Bounded by check_timeout (1 s), with a wide margin for a loaded machine.
    assert.ok(Date.now() - started < 20000);
    const v = metricValues(text);
    assert.equal(v.get('barman_up{server="pg"}'), 0);
    assert.equal(v.get('barman_backups{server="pg",status="DONE"}'), 2);
    assert.equal(v.get('barman_last_backup_size_bytes{server="pg"}'), 20 * MiB);
    assert.equal(v.has('barman_wal_archive_lag_segments{server="pg"}'), false, 'no lag without PostgreSQL');
    assert.equal(v.has('barman_archiver_failed_total{server="pg"}'), false);
    const checks = [...v.entries()].filter(([k]) => k.startsWith('barman_check_ok'));
    assert.equal(checks.length, 1);
    assert.match(checks[0]?.[0] ?? '', /timed out/);
    assert.equal(checks[0]?.[1], 0);
  });

  it('without backups or xlog.db: no age, no lag, zero counts', async () => {
    const f = await makeCliFixture({ prefix: 'barman-metrics-empty-', server: { conninfo: 'host=127.0.0.1 port=1' } });
    const srv = loadConfig(f.configFile).servers.get('pg') as ServerConfig;
    const v = metricValues(await collectMetrics([srv], { pgFacts: async () => upFacts, receiveWalRunning: async () => false }, { checks: false }));
    assert.equal(v.get('barman_up{server="pg"}'), 1);
    assert.equal(v.get('barman_backups{server="pg",status="DONE"}'), 0);
    assert.equal(v.has('barman_last_backup_age_seconds{server="pg"}'), false);
    assert.equal(v.has('barman_wal_archive_lag_segments{server="pg"}'), false);
    // Reading only: no xlog.db was created.
    await assert.rejects(fsp.stat(path.join(f.srvDir, 'wals', 'xlog.db')));
  });
});

describe('metrics helpers', () => {
  it('lag in segments across a log file boundary', () => {
    assert.equal(walLagSegments('000000010000000100000002', '0000000100000000000000FF', 16 * MiB), 2);
    assert.equal(walLagSegments(walName(1, 0, 6), walName(1, 0, 5), 16 * MiB), 0);
    assert.equal(walLagSegments(walName(1, 0, 5), walName(1, 0, 5), 16 * MiB), 0);
    // 64 MiB segments: 64 per log file.
    assert.equal(walLagSegments('000000010000000100000001', '00000001000000000000003F', 64 * MiB), 1);
  });

  it('newest segment and time from xlog.db', () => {
    const facts = archiveFacts([
      { name: walName(1, 0, 2), size: 10, time: 200, compression: null, encryption: null },
      { name: walName(2, 0, 1), size: 5, time: 100, compression: null, encryption: null },
      { name: '00000002.history', size: 1, time: 999, compression: null, encryption: null },
    ]);
    assert.deepEqual(facts, { newestSegment: walName(2, 0, 1), newestTime: 200, segments: 2, bytes: 15 });
  });

  it('errors/ kinds', () => {
    assert.equal(errorKind('000000010000000000000001.duplicate'), 'duplicate');
    assert.equal(errorKind('x.unknown'), 'unknown');
    assert.equal(errorKind('x.error'), 'failure');
    assert.equal(errorKind('x.whatever'), 'not_relevant');
  });
});

describe('barman metrics (CLI)', () => {
  it('prints the exposition for an unreachable server (up = 0) with catalog values', async () => {
    const { f } = await fixture({ check_timeout: '3' });
    const r = await f.run('metrics', 'pg');
    assert.equal(r.code, 0, r.stderr);
    const v = metricValues(r.stdout);
    assert.equal(v.get('barman_up{server="pg"}'), 0);
    assert.equal(v.get('barman_backups{server="pg",status="DONE"}'), 2);
    assert.equal(v.get('barman_wal_archive_segments{server="pg"}'), 5);
    assert.equal(v.get('barman_check_ok{check="PostgreSQL",server="pg"}'), 0);
    assert.doesNotMatch(r.stdout + r.stderr, /secret/);
  });

  it('-o writes the file atomically, mode 0644, nothing else left in the directory', async () => {
    const { f } = await fixture();
    const dir = path.join(f.root, 'textfile');
    await fsp.mkdir(dir);
    const file = path.join(dir, 'barman.prom');
    await fsp.writeFile(file, 'old\n');
    const r = await f.run('metrics', '--no-checks', '-o', file);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '');
    assert.deepEqual(await fsp.readdir(dir), ['barman.prom']);
    assert.equal((await fsp.stat(file)).mode & 0o777, 0o644);
    const v = metricValues(await fsp.readFile(file, 'utf8'));
    assert.equal(v.get('barman_backups{server="pg",status="FAILED"}'), 1);
    assert.equal(v.has('barman_check_ok{check="PostgreSQL",server="pg"}'), false);
  });

  it('-o into a missing directory: one error line, exit 1, nothing created', async () => {
    const { f } = await fixture();
    const file = path.join(f.root, 'missing', 'barman.prom');
    const r = await f.run('metrics', '--no-checks', '-o', file);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /^ERROR: cannot write metrics file .*barman\.prom/);
    await assert.rejects(fsp.stat(path.join(f.root, 'missing')));
  });

  it('unknown server: error, exit 1', async () => {
    const { f } = await fixture();
    const r = await f.run('metrics', '--no-checks', 'nosuch');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Unknown server 'nosuch'/);
  });
});
