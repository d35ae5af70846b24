import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { RANGE_ALIGN } from '../../src/util/ranges.js';
import {
  copyArgs,
  dirsArgs,
  isAfterHorizon,
  listArgs,
  parseListOnly,
  PG_CONTROL,
  planTreeCopy,
  rangedCopyThreshold,
  rsyncCopySucceeded,
  splitBuckets,
  transportArgs,
  type ListedEntry,
} from '../../src/backup/rsync-plan.js';

describe('rsync plan', () => {
  it('parses rsync --list-only output (TZ=UTC), symlinks and grouped sizes', () => {
    const text = [
      'drwx------          4,096 2024/03/01 10:00:00 .',
      '-rw-------      8,192 2024/03/01 10:00:01 base/1/112',
      '-rw-------        123 2024/03/01 10:00:02 global/pg_control',
      'lrwxrwxrwx         14 2024/03/01 10:00:03 pg_tblspc/16385 -> /srv/ts one',
      '-rw-------          3 2024/03/01 10:00:04 odd\\#011name',
      'garbage line',
    ].join('\n');
    const e = parseListOnly(text);
    assert.equal(e.length, 5);
    assert.deepEqual(e[1], { name: 'base/1/112', kind: 'file', size: 8192, mtimeSec: Date.UTC(2024, 2, 1, 10, 0, 1) / 1000 });
    assert.equal(e[0]?.kind, 'dir');
    assert.deepEqual([e[3]?.name, e[3]?.kind], ['pg_tblspc/16385', 'symlink']);
    assert.equal(e[4]?.name, 'odd\tname');
  });

  it('splits files into at most N buckets of similar size, none empty', () => {
    const files = [100, 90, 50, 40, 30, 20, 10, 5].map((size, i) => ({ name: `f${i}`, size }));
    const b = splitBuckets(files, 3);
    assert.equal(b.length, 3);
    assert.deepEqual(b.flatMap((x) => x.names).sort(), files.map((f) => f.name).sort());
    const sizes = b.map((x) => x.bytes);
    assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 20, sizes.join(','));
    assert.equal(splitBuckets(files.slice(0, 2), 4).length, 2);
    assert.deepEqual(splitBuckets([], 4), []);
    assert.equal(splitBuckets(files, 1)[0]?.names.length, 8);
  });

  it('keeps pg_control out of every bucket and copies it alone, forced, as the last step', () => {
    const f = (name: string, size: number, mtimeSec = 100): ListedEntry => ({ name, kind: 'file', size, mtimeSec });
    const listing: ListedEntry[] = [
      { name: '.', kind: 'dir', size: 4096, mtimeSec: 100 },
      { name: 'global', kind: 'dir', size: 4096, mtimeSec: 100 },
      // The largest file of all: largest-first ordering would copy it first.
      f(PG_CONTROL, 1 << 30),
      f('base/1/1259', 8192),
      f('base/1/16384', 1 << 20, 2000),
      f('global/1262', 8192),
      { name: 'pg_tblspc/16385', kind: 'symlink', size: 10, mtimeSec: 100 },
    ];
    const all = ['base/1/1259', 'base/1/16384', 'global/1262', 'pg_tblspc/16385'];
    for (const jobs of [1, 2, 8]) {
      for (const inBasis of [null, () => true, (n: string) => n !== 'global/1262']) {
        const plan = planTreeCopy(listing, { jobs, horizonSec: 1000, inBasis, isPgdata: true });
        const bucketed = plan.buckets.flatMap((b) => b.names);
        assert.ok(!bucketed.includes(PG_CONTROL), `jobs ${jobs}: pg_control in a bucket`);
        assert.deepEqual(bucketed.sort(), all);
        assert.deepEqual(plan.last, { names: [PG_CONTROL], bytes: 8192, force: true, wholeFile: true });
        // In the reused backup and modified after its horizon: forced; without a basis: whole-file.
        assert.deepEqual(plan.buckets.filter((b) => b.force).flatMap((b) => b.names), inBasis ? ['base/1/16384'] : []);
        const whole = plan.buckets.filter((b) => b.wholeFile).flatMap((b) => b.names).sort();
        assert.deepEqual(whole, inBasis === null ? all : all.filter((n) => !inBasis(n)));
        assert.ok(plan.buckets.every((b) => !(b.force && b.wholeFile)));
      }
    }
    // Even when the listing has no pg_control, the data directory still ends with it.
    assert.deepEqual(planTreeCopy([f('base/1/1', 1)], { jobs: 2, horizonSec: null, inBasis: null, isPgdata: true }).last?.names, [PG_CONTROL]);
    // A tablespace has no pg_control: nothing is held back, nothing added.
    const ts = planTreeCopy([f('PG_15_1/5/global/pg_control', 3), f(PG_CONTROL, 3)], { jobs: 2, horizonSec: null, inBasis: null, isPgdata: false });
    assert.equal(ts.last, null);
    assert.equal(ts.buckets.flatMap((b) => b.names).length, 2);
  });

  it('copies big files without a basis as ranges, only with several jobs', () => {
    const MiB = 1024 * 1024;
    const f = (name: string, size: number, mtimeSec = 100): ListedEntry => ({ name, kind: 'file', size, mtimeSec });
    const listing: ListedEntry[] = [
      f('base/5/16384', 100 * MiB),
      f('base/5/16384.1', 10 * MiB),
      f('base/5/16390', 64 * MiB, 5000),
      f('base/5/1259', 8192),
      f(PG_CONTROL, 64 * MiB),
      { name: 'pg_tblspc/16385', kind: 'symlink', size: 64 * MiB, mtimeSec: 100 },
    ];
    const opts = { horizonSec: null, inBasis: null, isPgdata: true, rangedMinBytes: 64 * MiB };
    const plan = planTreeCopy(listing, { ...opts, jobs: 4 });
    assert.deepEqual(plan.ranged.map((r) => r.name), ['base/5/16384', 'base/5/16390']);
    const big = plan.ranged[0];
    assert.equal(big?.ranges.length, 4);
    assert.equal(big?.mtimeSec, 100);
    assert.equal(big?.ranges.reduce((n, r) => n + r.length, 0), 100 * MiB);
    assert.ok(big?.ranges.every((r) => r.offset % RANGE_ALIGN === 0));
    // Ranged files are in no rsync bucket; everything else still is; pg_control stays last.
    const bucketed = plan.buckets.flatMap((b) => b.names).sort();
    assert.deepEqual(bucketed, ['base/5/1259', 'base/5/16384.1', 'pg_tblspc/16385']);
    assert.deepEqual(plan.last?.names, [PG_CONTROL]);
    // One job: nothing to parallelise.
    assert.deepEqual(planTreeCopy(listing, { ...opts, jobs: 1 }).ranged, []);
    // Off (null / absent): as before.
    assert.deepEqual(planTreeCopy(listing, { ...opts, jobs: 4, rangedMinBytes: null }).ranged, []);
    assert.deepEqual(planTreeCopy(listing, { jobs: 4, horizonSec: null, inBasis: null, isPgdata: true }).ranged, []);
    // A file the reused backup has stays with rsync (delta, --link-dest), modified or not.
    const withBasis = planTreeCopy(listing, { ...opts, jobs: 4, horizonSec: 1000, inBasis: (n) => n !== 'base/5/16390' });
    assert.deepEqual(withBasis.ranged.map((r) => r.name), ['base/5/16390']);
    assert.ok(withBasis.buckets.some((b) => b.names.includes('base/5/16384') && !b.wholeFile));
    const allBased = planTreeCopy(listing, { ...opts, jobs: 4, horizonSec: 1000, inBasis: () => true });
    assert.deepEqual(allBased.ranged, []);
  });

  it('uses ranged copies only when rsync would not throttle or compress the transfer', () => {
    const ssh = { sshCommand: 'ssh postgres@pg', bwlimit: null, networkCompression: false };
    assert.equal(rangedCopyThreshold(ssh, 2, 1000), 1000);
    assert.equal(rangedCopyThreshold(ssh, 1, 1000), null);
    assert.equal(rangedCopyThreshold({ ...ssh, bwlimit: 500 }, 4, 1000), null);
    assert.equal(rangedCopyThreshold({ ...ssh, bwlimit: 0 }, 4, 1000), 1000);
    assert.equal(rangedCopyThreshold({ ...ssh, networkCompression: true }, 4, 1000), null);
    // local-rsync: -z is never passed, so compression does not matter.
    assert.equal(rangedCopyThreshold({ sshCommand: null, bwlimit: null, networkCompression: true }, 4, 1000), 1000);
    assert.equal(rangedCopyThreshold({ sshCommand: null, bwlimit: 100, networkCompression: false }, 4, 1000), null);
  });

  it('re-copies files modified at or after the reused backup started', () => {
    assert.equal(isAfterHorizon({ mtimeSec: 1000 }, null), false);
    assert.equal(isAfterHorizon({ mtimeSec: 1000 }, 1000.5), true);
    assert.equal(isAfterHorizon({ mtimeSec: 999 }, 1000.5), true);
    assert.equal(isAfterHorizon({ mtimeSec: 998 }, 1000.5), false);
  });

  it('builds transport, listing, skeleton and copy arguments', () => {
    const ssh = { sshCommand: 'ssh -F /x postgres@pg', bwlimit: 500, networkCompression: true };
    const local = { sshCommand: null, bwlimit: null, networkCompression: true };
    assert.deepEqual(transportArgs(ssh), ['-s', '-e', 'ssh -F /x postgres@pg', '--bwlimit=500', '-z']);
    assert.deepEqual(transportArgs(local), []);
    assert.deepEqual(listArgs(ssh, '/pg/data', ['/postmaster.pid']), ['--list-only', '-r', '--no-h', '-s', '-e', 'ssh -F /x postgres@pg', '--bwlimit=500', '-z', '--exclude=/postmaster.pid', ':/pg/data/']);
    assert.deepEqual(dirsArgs(local, '/pg/data', ['/pg_wal/*'], '/b/data'), ['-a', '--exclude=/pg_wal/*', '--include=*/', '--exclude=*', '/pg/data/', '/b/data/']);
    const link = copyArgs(local, '/pg/data', '/b/data', '/tmp/l', { reuse: 'link', reuseDir: '/prev/data', force: false });
    assert.deepEqual(link, ['-a', '--from0', '--files-from=/tmp/l', '--link-dest=/prev/data', '/pg/data/', '/b/data/']);
    assert.ok(!link.includes('--inplace'));
    const copy = copyArgs(ssh, '/pg/data', '/b/data', '/tmp/l', { reuse: 'copy', reuseDir: '/prev/data', force: true });
    assert.ok(copy.includes('--copy-dest=/prev/data') && copy.includes('--ignore-times') && copy.at(-2) === ':/pg/data/');
    assert.ok(!copyArgs(local, '/a', '/b', '/l', { reuse: 'link', reuseDir: null, force: false }).some((a) => a.startsWith('--link-dest')));
    const whole = copyArgs(ssh, '/a', '/b', '/l', { reuse: 'off', reuseDir: null, force: false, wholeFile: true });
    assert.ok(whole.includes('--whole-file'));
    assert.ok(!link.includes('--whole-file'));
  });

  it('accepts vanished files but not other rsync failures', () => {
    assert.equal(rsyncCopySucceeded(0, ''), true);
    assert.equal(rsyncCopySucceeded(24, 'file has vanished: "/x"'), true);
    assert.equal(
      rsyncCopySucceeded(23, 'rsync: [sender] link_stat "/pg/base/1/2" failed: No such file or directory (2)\nrsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1338)'),
      true,
    );
    assert.equal(rsyncCopySucceeded(23, 'rsync: [sender] change_dir "/pg" failed: No such file or directory (2)'), false);
    assert.equal(rsyncCopySucceeded(23, 'rsync: [receiver] mkstemp "/b/x" failed: Permission denied (13)'), false);
    assert.equal(rsyncCopySucceeded(255, 'Connection closed'), false);
  });
});
