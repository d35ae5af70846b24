/**
 * Recovery drills, pure parts: the sandbox configuration, the SQL checks file, the target
 * verification, the schedule, the check line, the records and their reports, and the host
 * helpers that run locally (directory checks, free space, the PostgreSQL programs lookup).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DONE, FAILED, newBackupInfo } from '../../src/catalog/backup-info.js';
import type { BackupEntry } from '../../src/catalog/catalog.js';
import { drillCheckLine } from '../../src/checks/drill-checks.js';
import { interruptedDrills } from '../../src/drill/cleanup.js';
import { drillId, hostKey, loginCandidates, neededBytes, normalizeDir } from '../../src/drill/plan.js';
import { FIND_BINDIR_SCRIPT, LocalHost, parseDfOutput, parseState, PAUSED_AT_TARGET, sandboxDirProblem } from '../../src/drill/host.js';
import {
  describeTarget,
  effectiveStatus,
  lastDrills,
  loadDrillRecords,
  saveDrillRecord,
  drillsDir,
  type DrillRecord,
  type DrillTargetRecord,
} from '../../src/drill/records.js';
import { checksumsEnabled, hotStandbySettings, postgresArgv, privateFiles, sandboxSettings, type SandboxConfigInput } from '../../src/drill/sandbox-config.js';
import { loginProblem, psqlError } from '../../src/drill/sandbox.js';
import { drillDue } from '../../src/drill/schedule.js';
import { judgeRows, lastStartedStatement, parseCsv, parseSqlChecks, psqlStatementArgs, rowsByStatement, statementMarker } from '../../src/drill/sql-checks.js';
import { diagnoseRecoveryLog, lastHistoryEntry, targetRecord, verifyTarget, walOfLastByte } from '../../src/drill/target.js';
import { drillGauges } from '../../src/reporting/drill-metrics.js';
import { drillSummaryLines, listDrillLine, showBackupDrillLines } from '../../src/reporting/drills.js';
import { parseRecoveryTarget, type TargetOptions } from '../../src/recovery/options.js';
import { restoreCommandValue } from '../../src/recovery/settings.js';
import { SCRIPT_DONE } from '../../src/recovery/remote-shell.js';
import { parsePyDatetime } from '../../src/util/pytime.js';
import { makeTestServer } from '../helpers/server-fixture.js';

process.env.TZ = 'UTC';

const tmpRoots: string[] = [];
function tmp(prefix: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tmpRoots.push(d);
  return d;
}
after(() => {
  for (const d of tmpRoots) fs.rmSync(d, { recursive: true, force: true });
});

const target = (o: TargetOptions) => parseRecoveryTarget(o).target;

function cfg(version: number, t: TargetOptions = {}, extra: Partial<SandboxConfigInput> = {}): SandboxConfigInput {
  return {
    version,
    bindir: '/usr/lib/postgresql/15/bin',
    dataDir: '/drills/pg-x',
    privateDir: '/tmp/barman-drill-abc',
    port: 5999,
    restoreCommand: "barman get-wal -P pg %f > %p",
    target: target(t),
    ...extra,
  };
}

function record(over: Partial<DrillRecord> = {}): DrillRecord {
  return {
    format: 1,
    id: '20240501T120000-42',
    server: 'pg',
    backup_id: '20240501T000000',
    status: 'passed',
    error: null,
    started_at: '2024-05-01 12:00:00.000000+00:00',
    started_at_timestamp: 1714564800,
    ended_at: '2024-05-01 12:00:30.000000+00:00',
    ended_at_timestamp: 1714564830,
    pid: 999_999_999,
    host: 'local',
    directory: '/drills/x',
    directory_created: true,
    private_directory: '/tmp/barman-drill-x',
    postmaster_pid: null,
    port: 5999,
    kept: false,
    postgres: { version: 150002, bindir: '/usr/lib/postgresql/15/bin' },
    target: { kind: 'end-of-archive', value: null, exclusive: false, tli: null, end_wal: '000000010000000000000007' },
    reached: { lsn: '0/7000108', timeline: 1, new_timeline: 2, last_commit_time: '2024-05-01 11:59:00.000000+00:00', reason: 'no recovery target specified', wal: '000000010000000000000007' },
    wal_segments: 5,
    bytes_restored: 30 * 1024 * 1024,
    phases: {
      wait_seconds: 0,
      setup_seconds: 0.1,
      restore_seconds: 10,
      prepare_seconds: 0.2,
      replay_seconds: 5,
      consistency_seconds: 1,
      promote_seconds: 0.3,
      checks_seconds: 4,
      stop_seconds: 0.2,
      cleanup_seconds: 0.2,
      total_seconds: 20,
      rto_seconds: 15.5,
      overhead_seconds: 1,
    },
    checks: [
      { name: 'amcheck', status: 'ok', detail: 'heap and B-tree indexes of 2 database(s): no corruption', seconds: 3 },
      { name: 'checksums', status: 'ok', detail: '100 blocks verified', seconds: 1 },
    ],
    log_tail: [],
    ...over,
  };
}

describe('drill sandbox configuration', () => {
  it('forces everything that could reach production or the archive off, on the command line', () => {
    const s = new Map(sandboxSettings(cfg(150002)));
    assert.equal(s.get('listen_addresses'), '');
    assert.equal(s.get('unix_socket_directories'), '/tmp/barman-drill-abc');
    assert.equal(s.get('unix_socket_permissions'), '0700');
    assert.equal(s.get('port'), '5999');
    assert.equal(s.get('archive_mode'), 'off');
    assert.equal(s.get('archive_command'), '');
    assert.equal(s.get('archive_library'), '');
    assert.equal(s.get('restore_command'), 'barman get-wal -P pg %f > %p');
    assert.equal(s.get('primary_conninfo'), '');
    assert.equal(s.get('primary_slot_name'), '');
    assert.equal(s.get('synchronous_standby_names'), '');
    assert.equal(s.get('max_logical_replication_workers'), '0');
    assert.equal(s.get('shared_preload_libraries'), '');
    assert.equal(s.get('external_pid_file'), '');
    assert.equal(s.get('ssl'), 'off');
    assert.equal(s.get('hot_standby'), 'on');
    assert.equal(s.get('recovery_target_action'), 'pause');
    assert.equal(s.get('recovery_target_timeline'), 'latest');
    assert.equal(s.get('lc_messages'), 'C');
    assert.equal(s.get('hba_file'), '/tmp/barman-drill-abc/pg_hba.conf');
    assert.equal(s.get('data_directory'), '/drills/pg-x');
    assert.equal(s.get('config_file'), '/tmp/barman-drill-abc/postgresql.conf');
    // No target at all: replay the archive to its end; none of them set, not even empty.
    for (const k of ['recovery_target', 'recovery_target_lsn', 'recovery_target_name', 'recovery_target_time', 'recovery_target_xid']) assert.equal(s.has(k), false, k);
    assert.equal(s.has('stats_temp_directory'), false);
  });

  it('sets only the drill target, with inclusive and timeline', () => {
    const names = (t: TargetOptions) => sandboxSettings(cfg(150002, t)).filter(([k]) => k.startsWith('recovery_target'));
    assert.deepEqual(names({ targetName: 'rp' }), [
      ['recovery_target_name', 'rp'],
      ['recovery_target_inclusive', 'on'],
      ['recovery_target_timeline', 'latest'],
      ['recovery_target_action', 'pause'],
    ]);
    assert.deepEqual(names({ targetXid: '77', exclusive: true, targetTli: '2' }).slice(0, 3), [
      ['recovery_target_xid', '77'],
      ['recovery_target_inclusive', 'off'],
      ['recovery_target_timeline', '2'],
    ]);
    assert.deepEqual(names({ targetImmediate: true })[0], ['recovery_target', 'immediate']);
    assert.deepEqual(names({ targetLsn: '0/3000060' })[0], ['recovery_target_lsn', '0/3000060']);
    assert.deepEqual(names({ targetTime: '2024-05-01 12:00:00+00:00' })[0], ['recovery_target_time', '2024-05-01 12:00:00+00:00']);
  });

  it('knows version differences and appends the control file minimums', () => {
    const v14 = new Map(sandboxSettings(cfg(140005, {}, { controlSettings: [['max_connections', '300']] })));
    assert.equal(v14.has('archive_library'), false);
    assert.equal(v14.get('stats_temp_directory'), 'pg_stat_tmp');
    assert.equal(v14.get('max_connections'), '300');
    const argv = postgresArgv(cfg(150002));
    assert.equal(argv[0], '/usr/lib/postgresql/15/bin/postgres');
    assert.deepEqual(argv.slice(1, 5), ['-c', 'config_file=/tmp/barman-drill-abc/postgresql.conf', '-c', 'data_directory=/drills/pg-x']);
    assert.ok(argv.includes("restore_command=barman get-wal -P pg %f > %p"));
    const files = privateFiles(cfg(150002));
    assert.deepEqual(files.map((f) => f.name), ['postgresql.conf', 'pg_hba.conf', 'pg_ident.conf']);
    assert.match(files[0]?.text ?? '', /^include_if_exists '\/drills\/pg-x\/postgresql\.conf'$/m);
    assert.equal(files[1]?.text, 'local all all trust\n');
  });

  it('reads hot standby minimums and checksums from pg_controldata', () => {
    const text = [
      'pg_control version number:            1300',
      'max_connections setting:              120',
      'max_worker_processes setting:         8',
      'max_wal_senders setting:              10',
      'max_prepared_xacts setting:           0',
      'max_locks_per_xact setting:           64',
      'Data page checksum version:           1',
    ].join('\n');
    assert.deepEqual(hotStandbySettings(text), [
      ['max_connections', '120'],
      ['max_worker_processes', '8'],
      ['max_wal_senders', '10'],
      ['max_prepared_transactions', '0'],
      ['max_locks_per_transaction', '64'],
    ]);
    assert.equal(checksumsEnabled(text), true);
    assert.equal(checksumsEnabled('Data page checksum version:           0'), false);
    assert.equal(checksumsEnabled(''), false);
  });

  it('the restore command is the one the restore writes (get-wal, barman-wal-restore)', () => {
    const base = { version: 150000, serverName: 'pg', target: target({}), standbyMode: false, walDir: null, barmanCommand: ['barman', '-c', '/etc/b.conf'], barmanUser: 'barman' };
    assert.equal(restoreCommandValue({ ...base, getWal: true }), 'barman -c /etc/b.conf get-wal -P pg %f > %p');
    assert.equal(
      restoreCommandValue({ ...base, getWal: true, remoteGetWal: { barmanHost: 'bk.example', port: 2222, parallel: 1 } }),
      'barman-wal-restore -P -U barman --port 2222 bk.example pg %f %p',
    );
    assert.equal(restoreCommandValue({ ...base, getWal: false }), null);
    assert.equal(restoreCommandValue({ ...base, getWal: false, walDir: '/r/barman_wal' }), 'cp /r/barman_wal/%f %p');
  });
});

describe('drill SQL checks file', () => {
  it('splits statements outside strings, identifiers, dollar quotes and comments', () => {
    const text = [
      "SELECT ';' = ';';",
      'SELECT $$ a; b $$ <> \'\';  -- trailing; comment',
      "SELECT E'it\\'s; fine' IS NOT NULL; /* block; /* nested; */ still */",
      'SELECT "odd;name" FROM (SELECT true AS "odd;name") x',
      '',
    ].join('\n');
    const st = parseSqlChecks(text, 'f.sql');
    assert.deepEqual(st.map((s) => s.sql), ["SELECT ';' = ';'", "SELECT $$ a; b $$ <> ''", "SELECT E'it\\'s; fine' IS NOT NULL", 'SELECT "odd;name" FROM (SELECT true AS "odd;name") x']);
    assert.deepEqual(st.map((s) => s.line), [1, 2, 3, 4]);
    assert.ok(st.every((s) => s.expect === 'true' && s.database === null));
  });

  it('reads expectation and database directives', () => {
    const text = ['-- drill: rows', 'SELECT 1;', '-- Drill: No Rows', 'SELECT 1 WHERE false;', '-- drill: database appdb', 'SELECT true;', '-- drill: any', 'SET work_mem = 1000;', ''].join('\n');
    const st = parseSqlChecks(text);
    assert.deepEqual(st.map((s) => [s.expect, s.database, s.line]), [
      ['rows', null, 2],
      ['no rows', null, 4],
      ['true', 'appdb', 6],
      ['any', 'appdb', 8],
    ]);
  });

  it('refuses meta-commands, unterminated quotes, unknown or dangling directives, empty files', () => {
    const bad = (text: string, re: RegExp) => assert.throws(() => parseSqlChecks(text, 'x.sql'), re);
    bad('SELECT 1;\n\\! rm -rf /\n', /x\.sql line 2: psql meta-commands/);
    bad("SELECT 'abc;\n", /line 1: unterminated string/);
    bad('SELECT $tag$ abc;\n', /unterminated dollar-quoted string \$tag\$/);
    bad('SELECT 1 /* abc', /unterminated \/\* comment/);
    bad('SELECT "abc', /unterminated quoted identifier/);
    bad('-- drill: sometimes\nSELECT 1;', /line 1: unknown directive 'sometimes'/);
    bad('-- drill: rows\n-- drill: any\nSELECT 1;', /two expectations/);
    bad('SELECT 1;\n-- drill: rows\n', /expectation directive without a statement/);
    bad('-- nothing here\n;\n', /holds no SQL statement/);
  });

  it('psql runs one -c per statement, after its marker; the output is judged per statement', () => {
    const args = psqlStatementArgs([{ sql: 'SELECT true' }, { sql: 'SELECT 1' }], 3);
    assert.deepEqual(args.slice(6), ['-c', `\\echo ${statementMarker(3)}`, '-c', 'SELECT true', '-c', `\\echo ${statementMarker(4)}`, '-c', 'SELECT 1']);
    assert.ok(args.includes('--csv') && args.includes('ON_ERROR_STOP=1'));
    const out = `${statementMarker(3)}\nt\n${statementMarker(4)}\n1,"two, with ""quotes""\nand a newline"\n3,\n`;
    const rows = rowsByStatement(out);
    assert.deepEqual(rows.get(3), [['t']]);
    assert.deepEqual(rows.get(4), [['1', 'two, with "quotes"\nand a newline'], ['3', '']]);
    assert.equal(lastStartedStatement(out), 4);
    assert.equal(lastStartedStatement('nothing'), null);
    assert.deepEqual(parseCsv('a,b\n"c"\n'), [['a', 'b'], ['c']]);
    assert.equal(judgeRows('true', [['t']]), null);
    assert.match(judgeRows('true', [['f']]) ?? '', /returned 'f' \(expected true\)/);
    assert.match(judgeRows('true', []) ?? '', /returned 0 rows/);
    assert.match(judgeRows('true', [['t', 'x']]) ?? '', /returned 't,x'/);
    assert.equal(judgeRows('rows', [['1']]), null);
    assert.match(judgeRows('rows', []) ?? '', /no row/);
    assert.equal(judgeRows('no rows', []), null);
    assert.match(judgeRows('no rows', [['1'], ['2']]) ?? '', /2 row\(s\)/);
    assert.equal(judgeRows('any', [['whatever']]), null);
  });
});

describe('drill target verification', () => {
  const reached = (over: Partial<NonNullable<DrillRecord['reached']>> = {}) => ({
    lsn: '0/7000108',
    timeline: 1,
    new_timeline: 2,
    last_commit_time: '2024-05-01 11:59:00.000000+00:00',
    reason: 'no recovery target specified',
    wal: '000000010000000000000007',
    ...over,
  });

  it('end of the archive: the newest archived segment must be reached, on its timeline', () => {
    const t = targetRecord(target({}), '000000010000000000000007');
    assert.equal(t.kind, 'end-of-archive');
    assert.equal(verifyTarget(t, reached()).ok, true);
    const short = verifyTarget(t, reached({ wal: '000000010000000000000005', lsn: '0/5000100' }));
    assert.equal(short.ok, false);
    assert.match(short.message, /^Recovery did not reach the target \(end of the archive \(000000010000000000000007\)\): it stopped at 0\/5000100 on timeline 1.*the archive goes on to 000000010000000000000007/);
    assert.equal(verifyTarget(targetRecord(target({}), '000000020000000000000006'), reached()).ok, false, 'a timeline behind');
    assert.equal(verifyTarget(targetRecord(target({}), '000000010000000000000007'), reached({ reason: 'at restore point "x"' })).ok, false);
  });

  it('named targets must be PostgreSQL\'s own reason for stopping', () => {
    assert.equal(verifyTarget(targetRecord(target({ targetName: 'rp1' })), reached({ reason: 'at restore point "rp1"' })).ok, true);
    assert.equal(verifyTarget(targetRecord(target({ targetName: 'rp1' })), reached({ reason: 'at restore point "rp2"' })).ok, false);
    assert.equal(verifyTarget(targetRecord(target({ targetName: 'rp1' })), reached({ reason: null })).ok, false);
    assert.equal(verifyTarget(targetRecord(target({ targetXid: '742' })), reached({ reason: 'after transaction 742' })).ok, true);
    assert.equal(verifyTarget(targetRecord(target({ targetXid: '742' })), reached({ reason: 'after transaction 7421' })).ok, false);
    assert.equal(verifyTarget(targetRecord(target({ targetImmediate: true })), reached({ reason: 'reached consistency' })).ok, true);
    const lsn = targetRecord(target({ targetLsn: '0/7000100' }));
    assert.equal(verifyTarget(lsn, reached({ reason: 'after LSN 0/7000100' })).ok, true);
    assert.equal(verifyTarget(lsn, reached({ reason: 'after LSN 0/7000100', lsn: '0/60000D8' })).ok, false, 'short of the LSN');
  });

  it('a time target: PostgreSQL stopped at a commit, and no later commit was replayed', () => {
    const t = targetRecord(target({ targetTime: '2024-05-01 12:00:00+00:00' }));
    assert.equal(t.value, '2024-05-01 12:00:00+00:00');
    const te = parsePyDatetime('2024-05-01 12:00:00+00:00').epochSeconds;
    const ok = verifyTarget(t, reached({ reason: 'before 2024-05-01 12:00:01.5+00' }), { lastCommitEpoch: te - 1, targetEpoch: te });
    assert.equal(ok.ok, true, ok.message);
    assert.equal(verifyTarget(t, reached({ reason: 'before 2024-05-01 12:00:01.5+00' }), { lastCommitEpoch: te + 1, targetEpoch: te }).ok, false);
    assert.equal(verifyTarget(t, reached({ reason: 'no recovery target specified' }), { lastCommitEpoch: null, targetEpoch: te }).ok, false);
  });

  it('helpers: the WAL of the last byte, the history file, the log diagnosis', () => {
    assert.equal(walOfLastByte('0/8000000', 1, 16 << 20), '000000010000000000000007');
    assert.equal(walOfLastByte('0/7000108', 3, 16 << 20), '000000030000000000000007');
    assert.deepEqual(lastHistoryEntry('1\t0/3000000\tno recovery target specified\n\n2\t0/5000108\tat restore point "x"\n'), {
      parentTli: 2,
      switchpoint: 0x5000108n,
      reason: 'at restore point "x"',
    });
    assert.equal(lastHistoryEntry('garbage'), null);
    const log = [
      '2024-05-01 12:00:00.000 UTC [1] LOG:  redo done at 0/5000108 system usage: CPU: user: 0.00 s',
      '2024-05-01 12:00:00.000 UTC [1] LOG:  last completed transaction was at log time 2024-05-01 11:00:00.123+00',
      '2024-05-01 12:00:00.000 UTC [1] FATAL:  recovery ended before configured recovery target was reached',
    ].join('\n');
    assert.equal(diagnoseRecoveryLog(log, 'restore point "x"'), 'Recovery did not reach the target (restore point "x"): the archive ended at 0/5000108, last commit 2024-05-01 11:00:00.123+00');
    assert.equal(diagnoseRecoveryLog('x FATAL:  could not locate required checkpoint record\n', 'y'), 'The sandbox PostgreSQL stopped during recovery: could not locate required checkpoint record');
    assert.match(diagnoseRecoveryLog('', 'y'), /no FATAL message/);
  });

  it('describes targets for people', () => {
    const d = (o: TargetOptions, end: string | null = null) => describeTarget(targetRecord(target(o), end));
    assert.equal(d({}, '000000010000000000000007'), 'end of the archive (000000010000000000000007)');
    assert.equal(d({ targetName: 'rp' }), 'restore point "rp"');
    assert.equal(d({ targetXid: '5', exclusive: true }), 'transaction 5 (exclusive)');
    assert.equal(d({ targetLsn: '0/1', targetTli: '2' }), 'LSN 0/1 on timeline 2');
    assert.equal(d({ targetImmediate: true }), 'end of the backup (immediate)');
    const withTli: DrillTargetRecord = { kind: 'time', value: 'T', exclusive: false, tli: null, end_wal: null };
    assert.equal(describeTarget(withTli), 'time T');
  });
});

describe('drill schedule and check line', () => {
  const entry = (id: string, status = DONE): BackupEntry => ({ id, info: newBackupInfo({ status }), infoFile: `/x/${id}` });
  const entries = [entry('20240501T000000'), entry('20240502T000000'), entry('20240503T000000', FAILED)];
  const day = 86400;
  const now = 1714564800 + 10 * day;
  const dead = () => false;
  const rec = (over: Partial<DrillRecord>) => record(over);

  it('due when no drill of the server succeeded within the interval, for the newest DONE backup', () => {
    assert.deepEqual(drillDue(null, entries, [], now, dead), { due: false, reason: 'drill_interval is not set', backupId: null });
    assert.deepEqual(drillDue(7 * day, [], [], now, dead).due, false);
    const d = drillDue(7 * day, entries, [], now, dead);
    assert.equal(d.due, true);
    assert.equal(d.backupId, '20240502T000000');
    // A success of any backup within the interval: not due.
    const recent = rec({ backup_id: '20240501T000000', ended_at_timestamp: now - day, started_at_timestamp: now - day - 60 });
    assert.equal(drillDue(7 * day, entries, [recent], now, dead).due, false);
    const old = rec({ ended_at_timestamp: now - 8 * day, started_at_timestamp: now - 8 * day - 60 });
    assert.equal(drillDue(7 * day, entries, [old], now, dead).due, true);
    // A failed drill of the newest backup is not retried within the interval.
    const failed = rec({ status: 'failed', backup_id: '20240502T000000', started_at_timestamp: now - 3600, ended_at_timestamp: now - 3500 });
    const no = drillDue(7 * day, entries, [old, failed], now, dead);
    assert.equal(no.due, false);
    assert.match(no.reason, /backup 20240502T000000 was drilled 1 hour.* ago \(failed\): waiting for a new backup/);
    // A running drill whose process lives: not due; a dead one does not count as running.
    const running = rec({ status: 'running', ended_at_timestamp: null, started_at_timestamp: now - 8 * day });
    assert.equal(drillDue(7 * day, entries, [running], now, () => true).reason, 'a drill is running');
    assert.equal(drillDue(7 * day, entries, [running], now, dead).due, true);
  });

  it('check line: only for servers with drills, fails on a failed last drill or a stale success', () => {
    const none = { drill_interval: null, drill_max_age: null };
    assert.equal(drillCheckLine(none, [], now, dead), null);
    const passed = rec({ ended_at_timestamp: now - 2 * 3600 });
    const ok = drillCheckLine(none, [passed], now, dead);
    assert.deepEqual(ok, { name: 'recovery drill', ok: true, hint: 'last drill passed 2 hours ago (backup 20240501T000000, RTO 15.5 s)' });
    assert.deepEqual(drillCheckLine({ drill_interval: 7 * day, drill_max_age: null }, [], now, dead), { name: 'recovery drill', ok: true, hint: 'no drill yet' });
    const maxAge = { drill_interval: null, drill_max_age: 7 * day };
    assert.deepEqual(drillCheckLine(maxAge, [], now, dead), { name: 'recovery drill', ok: false, hint: 'no successful drill, drill_max_age is 7 days' });
    const stale = rec({ ended_at_timestamp: now - 9 * day });
    assert.match(drillCheckLine(maxAge, [stale], now, dead)?.hint ?? '', /^last successful drill 9 days ago, more than drill_max_age \(7 days\)$/);
    const failed = rec({ status: 'failed', error: 'Check failed: amcheck: corruption found', ended_at_timestamp: now - 60 });
    const bad = drillCheckLine(none, [passed, failed], now, dead);
    assert.equal(bad?.ok, false);
    assert.equal(bad?.hint, 'last drill (backup 20240501T000000, 1 minute ago) failed: Check failed: amcheck: corruption found');
    const interrupted = rec({ status: 'running', ended_at_timestamp: null, started_at_timestamp: now - 60 });
    assert.match(drillCheckLine(none, [passed, interrupted], now, dead)?.hint ?? '', /failed: its process died/);
    assert.equal(drillCheckLine(none, [passed, interrupted], now, () => true)?.ok, true, 'a running drill does not count yet');
  });
});

describe('drill records and reports', () => {
  it('are saved atomically under drills/ and read back; foreign or broken files are skipped', async () => {
    const { srv } = makeTestServer(tmp('drill-records-'));
    assert.deepEqual(await loadDrillRecords(srv), []);
    const a = record({ id: '20240501T120000-42' });
    const b = record({ id: '20240502T120000-43', started_at_timestamp: a.started_at_timestamp + 86400, status: 'failed', error: 'boom' });
    await saveDrillRecord(srv, b);
    await saveDrillRecord(srv, a);
    const dir = drillsDir(srv);
    assert.equal(dir, path.join(srv.backup_directory, 'drills'));
    assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
    assert.equal(fs.statSync(path.join(dir, `${a.id}.json`)).mode & 0o777, 0o600);
    fs.writeFileSync(path.join(dir, '20240503T120000-44.json'), '{ not json');
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'hello');
    const problems: string[] = [];
    const got = await loadDrillRecords(srv, problems);
    assert.deepEqual(got.map((r) => r.id), [a.id, b.id]);
    assert.equal(problems.length, 1);
    assert.match(problems[0] ?? '', /Skipping drill result .*20240503T120000-44\.json/);
    await assert.rejects(saveDrillRecord(srv, record({ id: '../evil' })), /invalid drill id/);
    assert.deepEqual(lastDrills(got), { last: b, lastPassed: a });
    const stale = record({ id: '20240504T120000-45', status: 'running' });
    assert.deepEqual(interruptedDrills([a, stale, record({ status: 'running', host: 'ssh x' })], 'local', () => false), [stale]);
    assert.deepEqual(interruptedDrills([stale], 'local', () => true), []);
    assert.equal(effectiveStatus(record({ status: 'running' }), () => false), 'interrupted');
    assert.equal(effectiveStatus(record({ status: 'running' }), () => true), 'running');
  });

  it('list-drills, show-backup and summary lines', () => {
    const r = record();
    assert.equal(listDrillLine(r, () => false), 'pg 20240501T120000-42 - backup 20240501T000000 - Wed May  1 12:00:00 2024 - PASSED - RTO 15.50 s - target: end of the archive (000000010000000000000007)');
    const f = record({ status: 'failed', error: 'Recovery did not reach the target' });
    assert.match(listDrillLine(f, () => false), / - FAILED - target: end of the archive .* - Recovery did not reach the target$/);
    assert.match(listDrillLine(record({ status: 'running' }), () => false), / - INTERRUPTED - target: /);
    assert.deepEqual(showBackupDrillLines([]), { lines: [], json: null });
    const show = showBackupDrillLines([f, r], () => false);
    assert.equal(show.lines[0], '  Recovery drills (barman-ts):');
    assert.ok(show.lines.includes('    Last drill           : PASSED (20240501T120000-42, started 2024-05-01 12:00:00.000000+00:00)'), show.lines.join('\n'));
    assert.ok(show.lines.includes('    RTO                  : 15.50 s (restore 10.00 s, replay 5.00 s of 5 WAL, promote 0.30 s)'));
    assert.ok(show.lines.includes('    Drills               : 2 (1 passed, 1 failed)'));
    assert.equal(show.lines.at(-1), '');
    assert.equal((show.json as { passed: number }).passed, 1);
    const summary = drillSummaryLines(r);
    assert.equal(summary[0], 'Recovery drill 20240501T120000-42 of backup 20240501T000000 of server pg: PASSED');
    assert.ok(summary.includes('  Checks           : 4.00 s (amcheck OK, checksums OK)'), summary.join('\n'));
    assert.ok(summary.includes('  Total            : 20.00 s (drill overhead 1.00 s)'));
  });

  it('metrics gauges: last result, last success time, age and RTO', async () => {
    const { srv } = makeTestServer(tmp('drill-metrics-'));
    const { Registry } = await import('prom-client');
    const reg = new Registry();
    const g = await drillGauges(reg);
    await g.collect(srv, 0);
    assert.doesNotMatch(await reg.metrics(), /^barman_drill_\w+\{/m, 'nothing for a server never drilled');
    await saveDrillRecord(srv, record());
    await saveDrillRecord(srv, record({ id: '20240502T120000-43', started_at_timestamp: 1714651200, status: 'failed', error: 'x' }));
    await g.collect(srv, (1714564830 + 100) * 1000);
    const text = await reg.metrics();
    assert.match(text, /^barman_drill_last_result\{server="pg"\} 0$/m);
    assert.match(text, /^barman_drill_last_success_timestamp_seconds\{server="pg"\} 1714564830$/m);
    assert.match(text, /^barman_drill_last_success_age_seconds\{server="pg"\} 100$/m);
    assert.match(text, /^barman_drill_last_success_rto_seconds\{server="pg"\} 15.5$/m);
  });
});

describe('drill helpers', () => {
  it('free space needed, ids, host keys, login candidates', () => {
    const plain = newBackupInfo({ size: 1000 * 1024 * 1024 });
    assert.deepEqual(neededBytes(plain), { data: 1000 * 1024 * 1024, needed: Math.ceil(1100 * 1024 * 1024) + 128 * 1024 * 1024, estimated: false });
    const gz = newBackupInfo({ size: 100, compression: 'gzip' });
    assert.equal(neededBytes(gz).data, 300);
    assert.equal(neededBytes(gz).estimated, true);
    assert.equal(neededBytes(newBackupInfo({ size: 100, compression: 'gzip', cluster_size: 500 })).data, 500);
    assert.equal(drillId(new Date(2024, 4, 1, 2, 3, 4), 77), '20240501T020304-77');
    assert.equal(normalizeDir('/srv/drill/', false), '/srv/drill');
    assert.equal(normalizeDir('rel', false), path.resolve('rel'));
    assert.throws(() => normalizeDir('rel', true), /must be an absolute path on the remote host/);
    assert.throws(() => normalizeDir('host:/x', false), /cannot contain ':'/);
    assert.equal(hostKey(null), 'local');
    assert.match(hostKey('ssh postgres@db'), /^[0-9a-f]{12}$/);
    assert.notEqual(hostKey('ssh postgres@db'), hostKey('ssh postgres@db2'));
    const { srv } = makeTestServer(tmp('drill-login-'), { conninfo: 'host=db user=barman dbname=appdb', streaming_conninfo: 'host=db user=streaming_barman' });
    assert.deepEqual(loginCandidates(srv), { users: ['barman', 'streaming_barman', 'postgres', null], dbs: ['appdb', 'postgres', 'template1'] });
  });

  it('poll output, login problems and psql errors', () => {
    assert.equal(parseState('alive\n'), null, 'no marker: the script did not finish');
    assert.deepEqual(parseState(`dead\npm:\n${SCRIPT_DONE}\n`), { alive: false, pm: '', paused: false });
    assert.deepEqual(parseState(`alive\npm:standby \npaused\n${SCRIPT_DONE}\n`), { alive: true, pm: 'standby', paused: true });
    const roleMissing = 'psql: error: connection to server on socket "/tmp/x/.s.PGSQL.1" failed: FATAL:  role "barman" does not exist';
    assert.equal(loginProblem(roleMissing), 'role');
    assert.equal(loginProblem('... FATAL:  database "appdb" does not exist'), 'database');
    assert.equal(loginProblem('FATAL:  the database system is starting up'), null);
    assert.equal(psqlError('psql:<stdin>:1: ERROR:  relation "x" does not exist\nLINE 1: ...'), 'ERROR: relation "x" does not exist');
  });

  it('df output and directory problems', () => {
    assert.deepEqual(parseDfOutput(`dir:/srv\nFilesystem 1024-blocks Used Available Capacity Mounted on\n/dev/vda 1000 10 900 2% /\n${SCRIPT_DONE}\n`, '/srv/x'), { dir: '/srv', bytes: 900 * 1024 });
    assert.throws(() => parseDfOutput('nothing', '/x'), /unexpected df output/);
    assert.equal(sandboxDirProblem({ index: 0, code: 'RUNNING', pid: 12 }, '/d', ' on the remote host'), "The drill directory '/d' on the remote host is the data directory of a running PostgreSQL server (PID 12): a drill never touches it");
    assert.match(sandboxDirProblem({ index: 0, code: 'NOTEMPTY' }, '/d'), /is not empty: a drill restores only into an empty or new directory$/);
  });

  it('local host: the postmaster state in-process (alive, postmaster.pid status, pause in the log)', async () => {
    const host = new LocalHost(process.env);
    const root = tmp('drill-state-');
    const pidFile = path.join(root, 'postmaster.pid');
    const log = path.join(root, 'postgresql.log');
    assert.deepEqual(await host.postmasterState(process.pid, pidFile, log), { alive: true, pm: '', paused: false });
    fs.writeFileSync(pidFile, `${process.pid}\n/data\n1\n5432\n/tmp\n\n  1 2\nstandby \n`);
    fs.writeFileSync(log, `x LOG:  consistent recovery state reached\n${'y'.repeat(70000)}\nz LOG:  ${PAUSED_AT_TARGET}\n`);
    assert.deepEqual(await host.postmasterState(process.pid, pidFile, log), { alive: true, pm: 'standby', paused: true });
    assert.equal((await host.postmasterState(2 ** 22 + 12345, pidFile, log)).alive, false);
  });

  it('local host: directory checks, free space, files, removal', async () => {
    const host = new LocalHost(process.env);
    const root = tmp('drill-host-');
    await host.checkSandboxDir(path.join(root, 'new', 'deep'));
    fs.mkdirSync(path.join(root, 'empty'));
    await host.checkSandboxDir(path.join(root, 'empty'));
    fs.mkdirSync(path.join(root, 'full'));
    fs.writeFileSync(path.join(root, 'full', 'x'), '');
    await assert.rejects(host.checkSandboxDir(path.join(root, 'full')), /drill directory .* is not empty/);
    fs.writeFileSync(path.join(root, 'file'), '');
    await assert.rejects(host.checkSandboxDir(path.join(root, 'file')), /exists and is not a directory/);
    const free = await host.freeBytes(path.join(root, 'not', 'yet'));
    assert.equal(free.dir, root);
    assert.ok(free.bytes > 0);
    await host.writeFile(path.join(root, 'full', 'y'), 'hello');
    assert.equal(await host.readFile(path.join(root, 'full', 'y')), 'hello');
    assert.equal(await host.readFile(path.join(root, 'full', 'nope')), null);
    await host.remove(path.join(root, 'full'), 'contents');
    assert.deepEqual(fs.readdirSync(path.join(root, 'full')), []);
    await host.remove(path.join(root, 'full'), 'all');
    assert.equal(fs.existsSync(path.join(root, 'full')), false);
    assert.equal(await host.exists(root), true);
    const priv = await host.makePrivateDir();
    tmpRoots.push(priv);
    assert.match(priv, /^\/tmp\/barman-drill-/);
    assert.equal(fs.statSync(priv).mode & 0o777, 0o700);
  });

  it('finds the bin directory of the wanted major version: path_prefix first, complete installations only', () => {
    const root = tmp('drill-bindir-');
    const fake = (dir: string, version: string, programs: readonly string[]) => {
      fs.mkdirSync(dir, { recursive: true });
      for (const p of programs) {
        const body = p === 'postgres' ? `#!/bin/sh\necho "postgres (PostgreSQL) ${version}"\n` : '#!/bin/sh\nexit 0\n';
        fs.writeFileSync(path.join(dir, p), body, { mode: 0o755 });
      }
    };
    const all = ['postgres', 'pg_ctl', 'psql', 'pg_amcheck', 'pg_checksums', 'pg_controldata'];
    fake(path.join(root, 'v97'), '97.1', all);
    fake(path.join(root, 'v98-incomplete'), '98.2 (Debian)', all.filter((p) => p !== 'pg_amcheck'));
    fake(path.join(root, 'v98'), '98beta1', all);
    const find = (major: number, dirs: string[]) => execFileSync('/bin/sh', ['-c', FIND_BINDIR_SCRIPT, 'sh', String(major), ...dirs], { encoding: 'utf8' }).trim();
    assert.equal(find(98, [path.join(root, 'v97'), path.join(root, 'v98-incomplete'), path.join(root, 'v98')]), path.join(root, 'v98'));
    const missing = find(99, [path.join(root, 'v97')]);
    assert.match(missing, /^NOTFOUND /);
    assert.ok(missing.includes(`${path.join(root, 'v97')}/postgres:97`), missing);
    assert.ok(find(98, [path.join(root, 'v98-incomplete')]).includes(`${path.join(root, 'v98-incomplete')}/pg_amcheck:missing`));
  });
});
