/**
 * Retention policy classification (spec §8) with a frozen clock, and the choice of what cron may
 * delete. Pure: no files.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseRetentionPolicy, type RetentionPolicy } from '../../src/config/values.js';
import {
  KEEP_FULL,
  KEEP_STANDALONE,
  NONE,
  OBSOLETE,
  POTENTIALLY_OBSOLETE,
  VALID,
  classifyBackups,
  obsoleteToDelete,
  pointOfRecoverability,
  retentionReport,
  type KeepTarget,
  type RetentionBackup,
  type RetentionInput,
} from '../../src/retention/policy.js';
import { PyDateTime } from '../../src/util/pytime.js';

// Window starts are computed on the local wall clock: make "local" UTC (one test switches zones).
process.env.TZ = 'UTC';

/** 2024-03-01 12:00:00 UTC */
const NOW = PyDateTime.fromFields({ year: 2024, month: 3, day: 1, hour: 12 }, 0);
const DAY = 86400;

interface B extends RetentionBackup {
  timeline: number;
}

/** A backup whose ID is its start and which ended `endDaysAgo` days (plus seconds) before NOW. */
function backup(id: string, endSecondsAgo: number | null, extra: { status?: string; parent?: string; timeline?: number } = {}): B {
  return {
    id,
    timeline: extra.timeline ?? 1,
    info: {
      status: extra.status ?? 'DONE',
      parent_backup_id: extra.parent ?? null,
      end_time: endSecondsAgo === null ? null : PyDateTime.fromEpochMicros(NOW.epochMicros - BigInt(Math.round(endSecondsAgo * 1e6)), 0),
    },
  };
}

function input(entries: B[], policy: string | RetentionPolicy, opts: { keeps?: Record<string, KeepTarget>; min?: number; now?: PyDateTime | Date } = {}): RetentionInput & { entries: B[] } {
  return {
    entries,
    keeps: new Map(Object.entries(opts.keeps ?? {})),
    policy: typeof policy === 'string' ? parseRetentionPolicy(policy) : policy,
    minimumRedundancy: opts.min ?? 0,
    now: opts.now ?? NOW,
  };
}

const classify = (...args: Parameters<typeof input>) => Object.fromEntries(classifyBackups(input(...args)));

/** Four DONE backups, one a week, the newest ended 1 day ago; IDs shuffled on purpose. */
const weekly = () => [
  backup('20240208T000000', 21 * DAY + 3600),
  backup('20240229T000000', 1 * DAY),
  backup('20240215T000000', 14 * DAY + 3600),
  backup('20240222T000000', 7 * DAY + 3600),
];

describe('retention: REDUNDANCY', () => {
  it('keeps the n newest DONE backups VALID and makes the others OBSOLETE', () => {
    assert.deepEqual(classify(weekly(), 'REDUNDANCY 2'), {
      '20240229T000000': VALID,
      '20240222T000000': VALID,
      '20240215T000000': OBSOLETE,
      '20240208T000000': OBSOLETE,
    });
    assert.deepEqual(Object.values(classify(weekly(), 'REDUNDANCY 4')), [VALID, VALID, VALID, VALID]);
    assert.deepEqual(classify(weekly(), 'redundancy 1')['20240222T000000'], OBSOLETE);
  });

  it('gives non-DONE backups `-` and does not count them; EMPTY backups are left out', () => {
    const entries = [
      ...weekly(),
      backup('20240301T000000', null, { status: 'STARTED' }),
      backup('20240226T000000', 3 * DAY, { status: 'FAILED' }),
      backup('20240227T000000', null, { status: 'WAITING_FOR_WALS' }),
      backup('20240228T000000', null, { status: 'EMPTY' }),
      backup('20240216T000000', null, { status: 'SYNCING' }),
    ];
    assert.deepEqual(classify(entries, 'REDUNDANCY 2'), {
      '20240301T000000': NONE,
      '20240229T000000': VALID,
      '20240227T000000': NONE,
      '20240226T000000': NONE,
      '20240222T000000': VALID,
      '20240216T000000': NONE,
      '20240215T000000': OBSOLETE,
      '20240208T000000': OBSOLETE,
    });
  });

  it('shows the keep status of kept backups, which count among the n', () => {
    assert.deepEqual(classify(weekly(), 'REDUNDANCY 2', { keeps: { '20240222T000000': 'full', '20240208T000000': 'standalone' } }), {
      '20240229T000000': VALID,
      '20240222T000000': KEEP_FULL,
      '20240215T000000': OBSOLETE,
      '20240208T000000': KEEP_STANDALONE,
    });
  });

  it('raises n to minimum_redundancy (with a note) and never gives OBSOLETE*', () => {
    const rep = retentionReport(input(weekly(), 'REDUNDANCY 1', { min: 3 }));
    assert.deepEqual(Object.fromEntries(rep.statuses), {
      '20240229T000000': VALID,
      '20240222T000000': VALID,
      '20240215T000000': VALID,
      '20240208T000000': OBSOLETE,
    });
    assert.deepEqual(rep.notes, ['Retention policy redundancy (1) is lower than the required minimum redundancy (3). Enforce 3.']);
    assert.deepEqual(retentionReport(input(weekly(), 'REDUNDANCY 3', { min: 3 })).notes, []);
  });

  it('orders by backup ID only, whatever the timelines and end times', () => {
    const entries = [
      backup('20240101T000000', 1 * DAY, { timeline: 1 }),
      backup('20240102T000000', 50 * DAY, { timeline: 2 }),
      backup('20240103T000000', 40 * DAY, { timeline: 3 }),
      backup('20240104T000000', 30 * DAY, { timeline: 2 }),
    ];
    assert.deepEqual(classify(entries, 'REDUNDANCY 2'), {
      '20240104T000000': VALID,
      '20240103T000000': VALID,
      '20240102T000000': OBSOLETE,
      '20240101T000000': OBSOLETE,
    });
  });
});

describe('retention: RECOVERY WINDOW', () => {
  it('keeps every backup down to the first one that ended before now − window', () => {
    // point = Feb 23 12:00; 20240222 ended Feb 22 11:00, the newest that can restore the window start
    assert.deepEqual(classify(weekly(), 'RECOVERY WINDOW OF 7 DAYS'), {
      '20240229T000000': VALID,
      '20240222T000000': VALID,
      '20240215T000000': OBSOLETE,
      '20240208T000000': OBSOLETE,
    });
    assert.deepEqual(Object.values(classify(weekly(), 'RECOVERY WINDOW OF 3 WEEKS')), [VALID, VALID, VALID, VALID]);
    assert.deepEqual(classify(weekly(), 'RECOVERY WINDOW OF 2 WEEKS')['20240208T000000'], OBSOLETE);
    // one month is 31 days: everything is within it
    assert.deepEqual(Object.values(classify(weekly(), 'RECOVERY WINDOW OF 1 MONTH')), [VALID, VALID, VALID, VALID]);
  });

  it('treats an end time exactly at the window start as inside the window', () => {
    const at = [
      backup('20240229T000000', 1 * DAY),
      backup('20240223T000000', 7 * DAY), // ends exactly at now − 7 days
      backup('20240216T000000', 14 * DAY),
      backup('20240209T000000', 21 * DAY),
    ];
    assert.deepEqual(classify(at, 'RECOVERY WINDOW OF 7 DAYS'), {
      '20240229T000000': VALID,
      '20240223T000000': VALID,
      '20240216T000000': VALID,
      '20240209T000000': OBSOLETE,
    });
    // one microsecond earlier it is the first one outside: the next older is obsolete
    const before = [backup('20240229T000000', DAY), backup('20240223T000000', 7 * DAY + 1e-6), backup('20240216T000000', 14 * DAY)];
    assert.deepEqual(classify(before, 'RECOVERY WINDOW OF 7 DAYS'), {
      '20240229T000000': VALID,
      '20240223T000000': VALID,
      '20240216T000000': OBSOLETE,
    });
    // and with the same backups, a clock one microsecond earlier moves the boundary back
    const earlier = PyDateTime.fromEpochMicros(NOW.epochMicros - 1n, 0);
    assert.equal(classify(before, 'RECOVERY WINDOW OF 7 DAYS', { now: earlier })['20240216T000000'], VALID);
  });

  it('keeps OBSOLETE* backups for minimum_redundancy, then OBSOLETE', () => {
    const entries = [
      backup('20240229T000000', 1 * DAY),
      backup('20240220T000000', 9 * DAY), // first outside the window: VALID
      backup('20240210T000000', 19 * DAY),
      backup('20240201T000000', 28 * DAY),
      backup('20240120T000000', 40 * DAY),
    ];
    const rep = retentionReport(input(entries, 'RECOVERY WINDOW OF 7 DAYS', { min: 4 }));
    assert.deepEqual(Object.fromEntries(rep.statuses), {
      '20240229T000000': VALID,
      '20240220T000000': VALID,
      '20240210T000000': POTENTIALLY_OBSOLETE,
      '20240201T000000': POTENTIALLY_OBSOLETE,
      '20240120T000000': OBSOLETE,
    });
    assert.equal(rep.notes.length, 2);
    assert.match(rep.notes[0] ?? '', /^Keeping obsolete backup 20240210T000000 \(older than 2024-02-23 12:00:00\+00:00\) due to minimum redundancy requirements \(4\)$/);
    // minimum_redundancy already met within the window: no OBSOLETE*
    assert.deepEqual(Object.values(classify(entries, 'RECOVERY WINDOW OF 7 DAYS', { min: 2 })), [VALID, VALID, OBSOLETE, OBSOLETE, OBSOLETE]);
  });

  it('shows keep statuses inside and outside the window; kept backups count for minimum_redundancy', () => {
    const entries = [
      backup('20240229T000000', 1 * DAY),
      backup('20240220T000000', 9 * DAY),
      backup('20240210T000000', 19 * DAY),
      backup('20240201T000000', 28 * DAY),
      backup('20240120T000000', 40 * DAY),
    ];
    const keeps: Record<string, KeepTarget> = { '20240229T000000': 'full', '20240210T000000': 'standalone', '20240120T000000': 'full' };
    assert.deepEqual(classify(entries, 'RECOVERY WINDOW OF 7 DAYS', { keeps, min: 3 }), {
      '20240229T000000': KEEP_FULL,
      '20240220T000000': VALID,
      '20240210T000000': KEEP_STANDALONE, // third needed backup (minimum redundancy 3)
      '20240201T000000': OBSOLETE,
      '20240120T000000': KEEP_FULL,
    });
  });

  it('skips non-DONE backups (`-`) and a DONE backup without end time does not close the window', () => {
    const entries = [
      backup('20240229T000000', 1 * DAY),
      backup('20240225T000000', 5 * DAY, { status: 'FAILED' }),
      backup('20240220T000000', null), // DONE, end time unknown
      backup('20240210T000000', 19 * DAY),
      backup('20240201T000000', 28 * DAY),
    ];
    assert.deepEqual(classify(entries, 'RECOVERY WINDOW OF 7 DAYS'), {
      '20240229T000000': VALID,
      '20240225T000000': NONE,
      '20240220T000000': VALID,
      '20240210T000000': VALID,
      '20240201T000000': OBSOLETE,
    });
  });

  it('subtracts the window on the local wall clock (as Barman does), across DST', { skip: !hasTimeZone('Europe/Paris') }, () => {
    const saved = process.env.TZ;
    process.env.TZ = 'Europe/Paris';
    try {
      // 2024-04-01 12:00 CEST (+02:00); 7 days earlier on the wall clock: 2024-03-25 12:00 CET (+01:00) = 11:00Z
      const now = PyDateTime.fromFields({ year: 2024, month: 4, day: 1, hour: 10 }, 0);
      const point = pointOfRecoverability(now, 7 * DAY);
      assert.equal(point.format(), '2024-03-25 12:00:00+01:00');
      const ended = (h: number, m: number) => PyDateTime.fromFields({ year: 2024, month: 3, day: 25, hour: h, minute: m }, 0);
      const entries: B[] = [
        { id: '20240331T000000', timeline: 1, info: { status: 'DONE', parent_backup_id: null, end_time: PyDateTime.fromFields({ year: 2024, month: 3, day: 31 }, 0) } },
        { id: '20240325T000000', timeline: 1, info: { status: 'DONE', parent_backup_id: null, end_time: ended(10, 30) } },
        { id: '20240320T000000', timeline: 1, info: { status: 'DONE', parent_backup_id: null, end_time: ended(9, 0) } },
      ];
      // 10:30Z < 11:00Z: the second backup is the first outside the window, so the third is obsolete
      // (an exact 7×24h subtraction would give 10:00Z and keep the third one)
      assert.deepEqual(Object.values(classify(entries, 'RECOVERY WINDOW OF 7 DAYS', { now })), [VALID, VALID, OBSOLETE]);
    } finally {
      if (saved === undefined) delete process.env.TZ;
      else process.env.TZ = saved;
    }
  });
});

function hasTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

describe('retention: incremental backups', () => {
  /** root A (oldest) with children A1 ← A2 and A1b; root B with child B1; root C newest. */
  const chains = (statusOf: Record<string, string> = {}) => [
    backup('20240201T000000', 28 * DAY),
    backup('20240202T000000', 27 * DAY, { parent: '20240201T000000', status: statusOf['20240202T000000'] }),
    backup('20240203T000000', 26 * DAY, { parent: '20240202T000000' }),
    backup('20240204T000000', 25 * DAY, { parent: '20240201T000000', status: statusOf['20240204T000000'] }),
    backup('20240210T000000', 19 * DAY),
    backup('20240211T000000', 18 * DAY, { parent: '20240210T000000' }),
    backup('20240229T000000', 1 * DAY),
  ];

  it('gives every backup of a chain the status of its root and does not count them', () => {
    assert.deepEqual(classify(chains({ '20240204T000000': 'FAILED' }), 'REDUNDANCY 2'), {
      '20240229T000000': VALID,
      '20240211T000000': VALID,
      '20240210T000000': VALID,
      '20240204T000000': OBSOLETE, // FAILED, but deleted with its root
      '20240203T000000': OBSOLETE,
      '20240202T000000': OBSOLETE,
      '20240201T000000': OBSOLETE,
    });
  });

  it('gives VALID to the chain of a KEEP:FULL root and of a KEEP:STANDALONE root within the policy', () => {
    const r = classify(chains(), 'REDUNDANCY 2', { keeps: { '20240201T000000': 'full', '20240210T000000': 'standalone' } });
    assert.equal(r['20240201T000000'], KEEP_FULL);
    assert.equal(r['20240202T000000'], VALID);
    assert.equal(r['20240203T000000'], VALID);
    assert.equal(r['20240210T000000'], KEEP_STANDALONE);
    assert.equal(r['20240211T000000'], VALID);
  });

  it('gives OBSOLETE to the chain of a KEEP:STANDALONE root beyond the policy', () => {
    const r = classify(chains(), 'REDUNDANCY 1', { keeps: { '20240210T000000': 'standalone' } });
    assert.equal(r['20240210T000000'], KEEP_STANDALONE);
    assert.equal(r['20240211T000000'], OBSOLETE);
    const w = classify(chains(), 'RECOVERY WINDOW OF 7 DAYS', { keeps: { '20240210T000000': 'standalone' } });
    assert.equal(w['20240210T000000'], KEEP_STANDALONE);
    assert.equal(w['20240211T000000'], OBSOLETE);
    assert.equal(w['20240201T000000'], OBSOLETE);
    assert.equal(w['20240203T000000'], OBSOLETE);
  });

  it('propagates OBSOLETE* and `-` too; a child without its root in the catalog gets nothing', () => {
    const entries = [...chains(), backup('20240120T000000', 40 * DAY, { parent: '20231201T000000' })];
    const w = classify(entries, 'RECOVERY WINDOW OF 7 DAYS', { min: 3 });
    assert.equal(w['20240210T000000'], VALID);
    assert.equal(w['20240201T000000'], POTENTIALLY_OBSOLETE);
    assert.equal(w['20240203T000000'], POTENTIALLY_OBSOLETE);
    assert.equal(w['20240120T000000'], undefined);
    const failedRoot = chains().map((b) => (b.id === '20240210T000000' ? backup(b.id, null, { status: 'FAILED' }) : b));
    assert.equal(classify(failedRoot, 'REDUNDANCY 2')['20240211T000000'], NONE);
  });
});

describe('retention: obsoleteToDelete', () => {
  const ids = (bs: readonly RetentionBackup[]) => bs.map((b) => b.id);

  it('returns the OBSOLETE full backups, oldest first', () => {
    assert.deepEqual(ids(obsoleteToDelete(input(weekly(), 'REDUNDANCY 2'))), ['20240208T000000', '20240215T000000']);
    assert.deepEqual(ids(obsoleteToDelete(input(weekly(), 'REDUNDANCY 4'))), []);
  });

  it('never returns OBSOLETE*, kept, non-DONE or incremental backups', () => {
    const entries = [
      backup('20240229T000000', 1 * DAY),
      backup('20240220T000000', 9 * DAY),
      backup('20240210T000000', 19 * DAY),
      backup('20240205T000000', 24 * DAY, { parent: '20240201T000000' }),
      backup('20240201T000000', 28 * DAY),
      backup('20240125T000000', 35 * DAY),
      backup('20240120T000000', 40 * DAY, { status: 'FAILED' }),
    ];
    const inp = input(entries, 'RECOVERY WINDOW OF 7 DAYS', { min: 3, keeps: { '20240125T000000': 'full' } });
    const st = classifyBackups(inp);
    assert.equal(st.get('20240210T000000'), POTENTIALLY_OBSOLETE);
    assert.equal(st.get('20240205T000000'), OBSOLETE);
    assert.deepEqual(ids(obsoleteToDelete(inp)), ['20240201T000000']);
    // even when a caller's statuses say OBSOLETE for everything
    const all = new Map(entries.map((e) => [e.id, OBSOLETE] as const));
    assert.deepEqual(ids(obsoleteToDelete({ ...inp, minimumRedundancy: 0 }, all)), ['20240201T000000', '20240210T000000', '20240220T000000', '20240229T000000']);
  });

  it('never deletes a chain with a backup in progress', () => {
    const entries = [
      backup('20240229T000000', 1 * DAY),
      backup('20240220T000000', 9 * DAY),
      backup('20240201T000000', 28 * DAY),
      backup('20240202T000000', null, { parent: '20240201T000000', status: 'STARTED' }),
      backup('20240125T000000', 35 * DAY),
      backup('20240126T000000', null, { parent: '20240125T000000', status: 'WAITING_FOR_WALS' }),
      backup('20240120T000000', 40 * DAY),
      backup('20240121T000000', 39 * DAY, { parent: '20240120T000000', status: 'FAILED' }),
    ];
    assert.deepEqual(ids(obsoleteToDelete(input(entries, 'REDUNDANCY 2'))), ['20240120T000000']);
  });

  it('never goes below minimum_redundancy DONE full backups', () => {
    const entries = weekly();
    const all = new Map(entries.map((e) => [e.id, OBSOLETE] as const));
    assert.deepEqual(ids(obsoleteToDelete(input(entries, 'REDUNDANCY 1', { min: 3 }), all)), ['20240208T000000']);
    assert.deepEqual(ids(obsoleteToDelete(input(entries, 'REDUNDANCY 1', { min: 4 }), all)), []);
    assert.deepEqual(ids(obsoleteToDelete(input(entries, 'REDUNDANCY 1', { min: 0 }), all)), ['20240208T000000', '20240215T000000', '20240222T000000', '20240229T000000']);
    // with the policy's own statuses, minimum_redundancy raises REDUNDANCY 1 to 2
    assert.deepEqual(ids(obsoleteToDelete(input(entries, 'REDUNDANCY 1', { min: 2 }))), ['20240208T000000', '20240215T000000']);
  });
});
