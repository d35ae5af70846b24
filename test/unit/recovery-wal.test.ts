import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { parseRecoveryTarget, type TargetOptions } from '../../src/recovery/options.js';
import {
  copyWals,
  resolveTargetTli,
  selectRequiredWals,
  timelineAncestry,
  writeDoneFiles,
  type ArchiveListing,
  type ArchivedWal,
} from '../../src/recovery/wal.js';
import { parseXlogDb } from '../../src/catalog/xlogdb.js';


function seg(name: string): ArchivedWal {
  return { name, path: `/arch/${name}` };
}

// Backup on timeline 1: begin 000000010000000000000002, end ...03.
// Timeline 2 forked from timeline 1 at 0/6000100 (inside segment 06).
const listing: ArchiveListing = {
  history: [{ name: '00000002.history', path: '/arch/00000002.history' }],
  segments: [
    seg('000000010000000000000002'),
    seg('000000010000000000000003'),
    seg('000000010000000000000004'),
    seg('000000010000000000000005'),
    seg('000000010000000000000006'),
    seg('000000010000000000000007'), // archived by the old primary after the fork
    seg('000000020000000000000006'),
    seg('000000020000000000000007'),
    seg('000000020000000000000008'),
  ],
};
const history2 = '1\t0/6000100\tno recovery target specified\n';

function select(t: TargetOptions, opts: { targetTli?: number; ancestry?: Map<number, bigint | null> | null; pitr?: boolean } = {}) {
  const target = parseRecoveryTarget(t).target;
  const targetTli = opts.targetTli ?? 1;
  return selectRequiredWals({
    beginWal: '000000010000000000000002',
    endWal: '000000010000000000000003',
    segSize: 16 << 20,
    version: 150000,
    target,
    targetTli,
    ancestry: opts.ancestry === undefined ? timelineAncestry(targetTli, targetTli === 2 ? history2 : null) : opts.ancestry,
    listing,
  });
}
const names = (s: { segments: ArchivedWal[] }) => s.segments.map((w) => w.name.slice(7));

describe('required WAL selection', () => {
  it('copies everything on the backup timeline for a plain restore', () => {
    const s = select({});
    assert.deepEqual(names(s), ['10000000000000002', '10000000000000003', '10000000000000004', '10000000000000005', '10000000000000006', '10000000000000007']);
    assert.deepEqual(s.history, [], 'history files of later timelines are not needed on timeline 1');
    assert.deepEqual(s.missing, []);
  });

  it('stops after end_wal for --target-immediate', () => {
    assert.deepEqual(names(select({ targetImmediate: true })), ['10000000000000002', '10000000000000003']);
  });

  it('stops after the segment of the target LSN', () => {
    assert.deepEqual(names(select({ targetLsn: '0/4FFFFFF' })), ['10000000000000002', '10000000000000003', '10000000000000004']);
    assert.deepEqual(names(select({ targetLsn: '0/7000000', targetTli: '2' }, { targetTli: 2 })), [
      '10000000000000002',
      '10000000000000003',
      '10000000000000004',
      '10000000000000005',
      '10000000000000006',
      '20000000000000006',
      '20000000000000007',
    ]);
  });

  it('copies everything after the backup for a target time (archival times are no bound)', () => {
    assert.deepEqual(names(select({ targetTime: '2024-03-01 10:15:00+00:00' })), names(select({})));
  });

  it('follows the history of the target timeline', () => {
    const s = select({ targetTli: '2' }, { targetTli: 2 });
    assert.deepEqual(s.history.map((h) => h.name), ['00000002.history']);
    // segment 07 of timeline 1 is past the fork: not needed
    assert.deepEqual(names(s), [
      '10000000000000002',
      '10000000000000003',
      '10000000000000004',
      '10000000000000005',
      '10000000000000006',
      '20000000000000006',
      '20000000000000007',
      '20000000000000008',
    ]);
    assert.deepEqual(names(select({ targetTime: '2024-03-01 10:45:00+00:00', targetTli: '2' }, { targetTli: 2 })), names(s));
  });

  it('keeps every timeline up to the target when the history is unknown', () => {
    const s = select({ targetTli: '2' }, { targetTli: 2, ancestry: null });
    assert.equal(names(s).includes('10000000000000007'), true);
    assert.equal(names(s).length, 9);
  });

  it('reports segments of the backup missing from the archive', () => {
    const target = parseRecoveryTarget({}).target;
    const s = selectRequiredWals({
      beginWal: '000000010000000000000001',
      endWal: '000000010000000000000003',
      segSize: 16 << 20,
      version: 150000,
      target,
      targetTli: 1,
      ancestry: null,
      listing,
    });
    assert.deepEqual(s.missing, ['000000010000000000000001']);
  });
});

describe('target timeline', () => {
  it('resolves current, latest, numbers and the defaults', () => {
    assert.equal(resolveTargetTli('current', 2, 150000, true, [2, 3, 4]), 2);
    assert.equal(resolveTargetTli('latest', 2, 150000, true, [2, 3, 4]), 4);
    assert.equal(resolveTargetTli(3, 2, 150000, true, [2, 3, 4]), 3);
    assert.equal(resolveTargetTli(null, 2, 150000, true, [3]), 3, 'PostgreSQL >= 12 follows the latest timeline by default');
    assert.equal(resolveTargetTli(null, 2, 110000, true, [3]), 2, 'PostgreSQL < 12 stays on the current one');
    assert.equal(resolveTargetTli(null, 2, 150000, false, [3]), 2, 'a plain restore replays the backup timeline');
    assert.equal(resolveTargetTli('latest', 5, 150000, true, []), 5);
  });

  it('reads the ancestry from a history file', () => {
    const a = timelineAncestry(3, '1\t0/3000000\treason\n2\t0/5000000\treason\n');
    assert.deepEqual([...(a ?? [])], [[3, null], [1, 0x3000000n], [2, 0x5000000n]]);
    assert.deepEqual([...(timelineAncestry(1, null) ?? [])], [[1, null]]);
    assert.equal(timelineAncestry(2, null), null);
  });
});

describe('xlog.db', () => {
  it('gives names and encryption (the catalog reader recovery uses)', () => {
    const entries = parseXlogDb('000000010000000000000002\t16777216\t1718291829.5\tgzip\tNone\n00000002.history\t42\t1718291900.0\tNone\tgpg\n\n');
    const db = new Map(entries.map((e) => [e.name, e.encryption]));
    assert.equal(db.get('000000010000000000000002'), null);
    assert.equal(db.get('00000002.history'), 'gpg');
    assert.equal(db.size, 2);
  });
});

describe('WAL copy', () => {
  it('decompresses what is compressed, copies the rest, writes .done files', async () => {
    const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'rec-wal-'));
    try {
      const arch = path.join(tmp, 'arch');
      await fsp.mkdir(arch);
      const a = Buffer.alloc(1 << 16, 7);
      const b = Buffer.alloc(1 << 16, 9);
      await fsp.writeFile(path.join(arch, '000000010000000000000002'), gzipSync(a));
      await fsp.writeFile(path.join(arch, '000000010000000000000003'), b);
      await fsp.writeFile(path.join(arch, '00000002.history'), history2);
      const files = ['00000002.history', '000000010000000000000002', '000000010000000000000003'].map((n) => ({ name: n, path: path.join(arch, n) }));
      const dest = path.join(tmp, 'pg_wal');
      const bytes = await copyWals(files, dest, { workers: 2, custom: {} });
      assert.equal(bytes, a.length + b.length + history2.length);
      assert.deepEqual(await fsp.readFile(path.join(dest, '000000010000000000000002')), a);
      assert.deepEqual(await fsp.readFile(path.join(dest, '000000010000000000000003')), b);
      assert.equal((await fsp.stat(path.join(dest, '000000010000000000000003'))).mode & 0o777, 0o600);
      await writeDoneFiles(dest, ['000000010000000000000002']);
      assert.deepEqual(await fsp.readdir(path.join(dest, 'archive_status')), ['000000010000000000000002.done']);
      await assert.rejects(copyWals([{ ...files[1]!, encryption: 'gpg' }], path.join(tmp, 'x'), { workers: 1, custom: {} }), /encrypted/);
    } finally {
      await fsp.rm(tmp, { recursive: true, force: true });
    }
  });
});
