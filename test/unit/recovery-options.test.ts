import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DONE, FAILED, STARTED, WAITING_FOR_WALS, newBackupInfo, type BackupInfo } from '../../src/catalog/backup-info.js';
import type { BackupEntry } from '../../src/catalog/catalog.js';
import {
  NO_TARGET,
  checkBackupForRestore,
  checkDestination,
  checkEmptyOrAbsent,
  chooseAutoBackup,
  hasStopTarget,
  isPitr,
  isPostmasterAlive,
  normalizeDestination,
  parseRecoveryTarget,
  parseTablespaceRules,
  parseTargetTime,
  parseTargetTli,
  runningPostmaster,
  tablespaceTargets,
  type RecoveryTarget,
} from '../../src/recovery/options.js';
import { BarmanError } from '../../src/util/errors.js';
import { parsePyDatetime } from '../../src/util/pytime.js';

process.env.TZ = 'Europe/Rome';

const err = (re: RegExp) => (e: unknown) => e instanceof BarmanError && re.test(e.message);

function backup(id: string, init: Partial<BackupInfo> = {}): BackupEntry {
  return {
    id,
    infoFile: `/nowhere/${id}-backup.info`,
    info: newBackupInfo({
      status: DONE,
      version: 150004,
      timeline: 1,
      begin_wal: '000000010000000000000002',
      end_wal: '000000010000000000000002',
      begin_xlog: '0/2000028',
      end_xlog: '0/2000100',
      begin_time: parsePyDatetime('2024-03-01 10:00:00+01:00'),
      end_time: parsePyDatetime('2024-03-01 10:05:00+01:00'),
      ...init,
    }),
  };
}

describe('parseRecoveryTarget', () => {
  it('accepts no target at all', () => {
    const { target, warnings } = parseRecoveryTarget({});
    assert.deepEqual(target, NO_TARGET);
    assert.deepEqual(warnings, []);
    assert.equal(isPitr(target), false);
  });

  it('refuses more than one target among time/xid/lsn/name/immediate', () => {
    const pairs = [
      { targetTime: '2024-03-01 10:00:00+00:00', targetXid: '100' },
      { targetLsn: '0/3000000', targetName: 'rp' },
      { targetImmediate: true, targetName: 'rp' },
      { targetImmediate: true, targetTime: '2024-03-01 10:00:00+00:00' },
    ];
    for (const p of pairs) assert.throws(() => parseRecoveryTarget(p), err(/more than one recovery target/));
  });

  it('parses each kind of target', () => {
    const t = parseRecoveryTarget({ targetTime: '2024-03-01 10:00:00.5+02:00' }).target;
    assert.equal(t.time?.format(), '2024-03-01 10:00:00.500000+02:00');
    assert.equal(parseRecoveryTarget({ targetXid: '1234' }).target.xid, '1234');
    assert.equal(parseRecoveryTarget({ targetLsn: '0/3000060' }).target.lsn, '0/3000060');
    assert.equal(parseRecoveryTarget({ targetName: 'before upgrade' }).target.name, 'before upgrade');
    assert.equal(parseRecoveryTarget({ targetImmediate: true }).target.immediate, true);
    for (const k of [{ targetXid: '1' }, { targetLsn: '0/1' }, { targetName: 'x' }, { targetImmediate: true }]) {
      const target = parseRecoveryTarget(k).target;
      assert.equal(isPitr(target), true);
      assert.equal(hasStopTarget(target), true);
    }
  });

  it('validates xid and lsn syntax', () => {
    assert.throws(() => parseRecoveryTarget({ targetXid: 'abc' }), err(/Invalid --target-xid/));
    assert.throws(() => parseRecoveryTarget({ targetLsn: '0-3000060' }), err(/Invalid --target-lsn/));
    assert.throws(() => parseRecoveryTarget({ targetTime: 'yesterday' }), err(/Unable to parse the target time/));
  });

  it('reads a naive target time in the local time zone, with a warning', () => {
    const { target, warnings } = parseRecoveryTarget({ targetTime: '2024-07-01 12:00:00' });
    assert.equal(target.time?.format(), '2024-07-01 12:00:00+02:00'); // Europe/Rome in summer
    assert.equal(warnings.length, 1);
    assert.match(warnings[0] ?? '', /No time zone has been specified/);
    assert.equal(parseTargetTime('2024-01-01 12:00:00').naive, true);
    assert.equal(parseTargetTime('2024-01-01 12:00:00Z').naive, false);
    assert.equal(parseTargetTime('2024-01-01 12:00:00-05:00').naive, false);
    assert.equal(parseTargetTime('2024-01-01T12:00:00+0100').naive, false);
  });

  it('parses --target-tli as a number, current or latest', () => {
    assert.equal(parseTargetTli('3'), 3);
    assert.equal(parseTargetTli('current'), 'current');
    assert.equal(parseTargetTli('latest'), 'latest');
    for (const bad of ['0', '-1', 'newest', '1.5', '']) assert.throws(() => parseTargetTli(bad), err(/Invalid --target-tli/));
    const t = parseRecoveryTarget({ targetTli: 'latest' }).target;
    assert.equal(isPitr(t), true, 'a timeline alone makes a PITR');
    assert.equal(hasStopTarget(t), false);
  });

  it('needs a target for --target-action', () => {
    assert.throws(() => parseRecoveryTarget({ targetAction: 'promote' }), err(/^Can't enable recovery target action when PITR is not required$/));
    assert.throws(() => parseRecoveryTarget({ targetAction: 'promote', targetTli: '2' }), err(/Can't enable recovery target action/));
    assert.equal(parseRecoveryTarget({ targetAction: 'shutdown', targetName: 'x' }).target.action, 'shutdown');
    assert.throws(() => parseRecoveryTarget({ targetAction: 'explode', targetName: 'x' }), err(/Invalid --target-action/));
  });

  it('accepts --exclusive only with time, xid or lsn', () => {
    assert.throws(() => parseRecoveryTarget({ exclusive: true }), err(/--exclusive can only be used/));
    assert.throws(() => parseRecoveryTarget({ exclusive: true, targetName: 'x' }), err(/--exclusive can only be used/));
    assert.throws(() => parseRecoveryTarget({ exclusive: true, targetImmediate: true }), err(/--exclusive can only be used/));
    assert.equal(parseRecoveryTarget({ exclusive: true, targetXid: '5' }).target.exclusive, true);
    assert.equal(parseRecoveryTarget({ exclusive: true, targetLsn: '0/5' }).target.exclusive, true);
  });
});

describe('checkBackupForRestore', () => {
  const target = (o: Parameters<typeof parseRecoveryTarget>[0]): RecoveryTarget => parseRecoveryTarget(o).target;

  it('accepts only WAITING_FOR_WALS and DONE backups', () => {
    checkBackupForRestore('A', backup('A').info, NO_TARGET);
    checkBackupForRestore('A', backup('A', { status: WAITING_FOR_WALS }).info, NO_TARGET);
    for (const status of [FAILED, STARTED, 'EMPTY', 'SYNCING']) {
      assert.throws(() => checkBackupForRestore('A', backup('A', { status }).info, NO_TARGET), err(new RegExp(`status is ${status}`)));
    }
  });

  it('refuses a target time before the end of the backup', () => {
    const info = backup('A').info;
    assert.throws(
      () => checkBackupForRestore('A', info, target({ targetTime: '2024-03-01 10:04:59+01:00' })),
      err(/target time 2024-03-01 10:04:59\+01:00 is before the backup end time 2024-03-01 10:05:00\+01:00/),
    );
    // same instant in another zone is fine
    checkBackupForRestore('A', info, target({ targetTime: '2024-03-01 09:05:00+00:00' }));
  });

  it('refuses a target LSN before the end of the backup', () => {
    assert.throws(() => checkBackupForRestore('A', backup('A').info, target({ targetLsn: '0/2000000' })), err(/target LSN/));
    checkBackupForRestore('A', backup('A').info, target({ targetLsn: '0/2000100' }));
  });

  it('applies the PostgreSQL version rules', () => {
    assert.throws(() => checkBackupForRestore('A', backup('A', { version: 90624 }).info, target({ targetLsn: '0/3000000' })), err(/PostgreSQL 10/));
    assert.throws(() => checkBackupForRestore('A', backup('A', { version: 90324 }).info, target({ targetImmediate: true })), err(/9\.4/));
    assert.throws(() => checkBackupForRestore('A', backup('A', { version: 90424 }).info, target({ targetName: 'x', targetAction: 'promote' })), err(/only 'pause'/));
    checkBackupForRestore('A', backup('A', { version: 90424 }).info, target({ targetName: 'x', targetAction: 'pause' }));
    assert.throws(() => checkBackupForRestore('A', backup('A', { version: 90024 }).info, target({ targetName: 'x', targetAction: 'pause' })), err(/9\.1/));
    assert.throws(() => checkBackupForRestore('A', backup('A', { version: 80424 }).info, NO_TARGET, { standbyMode: true }), err(/9\.0/));
  });

  it('refuses a target timeline older than the backup', () => {
    assert.throws(() => checkBackupForRestore('A', backup('A', { timeline: 3 }).info, target({ targetTli: '2' })), err(/timeline 2 is before the timeline 3/));
    checkBackupForRestore('A', backup('A', { timeline: 3 }).info, target({ targetTli: '3' }));
  });
});

describe('chooseAutoBackup', () => {
  const entries = [
    backup('20240101T000000', { end_time: parsePyDatetime('2024-01-01 00:10:00+00:00'), end_xlog: '0/2000100', timeline: 1 }),
    backup('20240102T000000', { end_time: parsePyDatetime('2024-01-02 00:10:00+00:00'), end_xlog: '0/5000100', timeline: 1 }),
    backup('20240103T000000', { status: FAILED, end_time: parsePyDatetime('2024-01-03 00:10:00+00:00'), end_xlog: '0/7000100', timeline: 2 }),
    backup('20240104T000000', { end_time: parsePyDatetime('2024-01-04 00:10:00+00:00'), end_xlog: '0/9000100', timeline: 2 }),
    backup('20240105T000000', { status: WAITING_FOR_WALS, end_time: parsePyDatetime('2024-01-05 00:10:00+00:00'), end_xlog: '0/B000100', timeline: 2 }),
  ];
  const pick = (o: Parameters<typeof parseRecoveryTarget>[0]) => chooseAutoBackup(entries, parseRecoveryTarget(o).target, 'pg').id;

  it('takes the latest usable backup without a target', () => {
    assert.equal(pick({}), '20240105T000000');
  });

  it('takes the newest backup that ended before the target time', () => {
    assert.equal(pick({ targetTime: '2024-01-03 12:00:00+00:00' }), '20240102T000000');
    assert.equal(pick({ targetTime: '2024-01-04 00:10:00+00:00' }), '20240104T000000', 'an end time equal to the target is fine');
    assert.throws(() => pick({ targetTime: '2023-12-31 00:00:00+00:00' }), err(/No backup of server 'pg' is suitable/));
  });

  it('takes the newest backup that ended before the target LSN', () => {
    assert.equal(pick({ targetLsn: '0/8000000' }), '20240102T000000');
    assert.equal(pick({ targetLsn: '0/9000100' }), '20240104T000000');
  });

  it('restricts the choice to the requested timeline', () => {
    assert.equal(pick({ targetTli: '1' }), '20240102T000000');
    assert.equal(pick({ targetTli: '1', targetTime: '2024-01-05 00:00:00+00:00' }), '20240102T000000');
    assert.equal(pick({ targetTli: '2', targetLsn: '0/A000000' }), '20240104T000000');
    assert.equal(pick({ targetTli: 'latest' }), '20240105T000000');
    assert.throws(() => pick({ targetTli: '7' }), err(/on timeline 7/));
  });

  it('refuses other kinds of target', () => {
    for (const o of [{ targetXid: '5' }, { targetName: 'x' }, { targetImmediate: true }]) {
      assert.throws(() => pick(o), err(/only --target-time and --target-lsn/));
    }
  });
});

describe('tablespace rules', () => {
  const known = [
    { name: 'tbs1', oid: 16385, location: '/srv/tbs1' },
    { name: 'tbs2', oid: 16386, location: '/srv/tbs2' },
  ];

  it('maps NAME:LOCATION for known tablespaces', () => {
    const m = parseTablespaceRules(['tbs1:/new/one', 'tbs2:/new/two:with:colons'], known);
    assert.equal(m.get('tbs1'), '/new/one');
    assert.equal(m.get('tbs2'), '/new/two:with:colons');
    assert.deepEqual(tablespaceTargets(known, new Map([['tbs2', '/x']])), [
      { name: 'tbs1', oid: 16385, location: '/srv/tbs1' },
      { name: 'tbs2', oid: 16386, location: '/x' },
    ]);
    assert.deepEqual(tablespaceTargets(null, new Map()), []);
  });

  it('refuses malformed rules and unknown names', () => {
    assert.throws(() => parseTablespaceRules(['tbs1'], known), err(/Invalid tablespace relocation rule 'tbs1'/));
    assert.throws(() => parseTablespaceRules([':/x'], known), err(/Invalid tablespace relocation rule/));
    assert.throws(() => parseTablespaceRules(['tbs1:'], known), err(/Invalid tablespace relocation rule/));
    assert.throws(() => parseTablespaceRules(['nope:/x'], known), err(/Invalid tablespace name 'nope' \(the backup has: tbs1, tbs2\)/));
    assert.throws(() => parseTablespaceRules(['nope:/x'], null), err(/has no tablespaces/));
    assert.throws(() => parseTablespaceRules(['tbs1:/a', 'tbs1:/b'], known), err(/relocated twice/));
  });
});

describe('destination checks', () => {
  it("refuses a destination containing ':'", () => {
    assert.throws(() => normalizeDestination('host:/var/lib/pg'), err(/cannot contain ':'/));
    assert.equal(normalizeDestination('/a/b/../c'), '/a/c');
  });

  it('accepts absent or empty directories and refuses non-empty ones', async () => {
    const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'rec-opt-'));
    try {
      await checkEmptyOrAbsent(path.join(tmp, 'missing'), 'destination directory');
      await checkEmptyOrAbsent(tmp, 'destination directory');
      await fsp.writeFile(path.join(tmp, 'f'), 'x');
      await assert.rejects(checkEmptyOrAbsent(tmp, 'destination directory'), err(/is not empty/));
      await assert.rejects(checkEmptyOrAbsent(path.join(tmp, 'f'), 'destination directory'), err(/not a directory/));
      // tablespace locations too, unless delta restore
      const dest = path.join(tmp, 'dest');
      const ts = [{ name: 'tbs1', oid: 1, location: tmp }];
      await assert.rejects(checkDestination(dest, ts, { delta: false }), err(/location of tablespace 'tbs1'/));
      await checkDestination(dest, ts, { delta: true });
    } finally {
      await fsp.rm(tmp, { recursive: true, force: true });
    }
  });

  it('refuses a directory with a running postmaster, ignores a stale postmaster.pid', async () => {
    const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'rec-pid-'));
    try {
      // this test process is not a postgres server: a pid file naming it is stale
      await fsp.writeFile(path.join(tmp, 'postmaster.pid'), `${process.pid}\n${tmp}\n`);
      assert.equal(await runningPostmaster(tmp), null);
      await fsp.writeFile(path.join(tmp, 'postmaster.pid'), '999999999\n');
      assert.equal(await runningPostmaster(tmp), null);
      assert.equal(isPostmasterAlive(0), false);
      assert.equal(isPostmasterAlive(-5), false);
      // a live process that looks like a postmaster
      const child = spawn('bash', ['-c', 'exec -a postgres-fake sleep 30'], { stdio: 'ignore' });
      try {
        await new Promise((r) => setTimeout(r, 200));
        await fsp.writeFile(path.join(tmp, 'postmaster.pid'), `${child.pid}\n${tmp}\n`);
        assert.equal(await runningPostmaster(tmp), child.pid);
        await assert.rejects(checkDestination(tmp, [], { delta: true }), err(/running PostgreSQL server \(PID \d+\)/));
      } finally {
        child.kill('SIGKILL');
      }
    } finally {
      await fsp.rm(tmp, { recursive: true, force: true });
    }
  });
});
