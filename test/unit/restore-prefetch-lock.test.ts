import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { PREFETCH_LOCK, PREFETCH_START, releasePrefetchLockSync, waitForPrefetch } from '../../src/walclient/restore-prefetch.js';

const spool = mkdtempSync(path.join(tmpdir(), 'prefetch-lock-'));
after(() => rmSync(spool, { recursive: true, force: true }));

/** A pid that existed and is gone (a child that already exited). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

describe('background prefetch lock', () => {
  it('a call that misses removes the lock of a prefetch that was killed, instead of waiting for it', async () => {
    const lock = path.join(spool, PREFETCH_LOCK);
    writeFileSync(lock, `${deadPid()}\n000000010000000000000005\n`);
    const t0 = Date.now();
    assert.equal(await waitForPrefetch(spool, '000000010000000000000006'), false);
    assert.ok(Date.now() - t0 < 5000);
    assert.equal(existsSync(lock), false, 'the stale lock is gone: the launcher can start prefetches again');
  });

  it('a stopped prefetch removes its own lock and the start claim, never another holder\'s lock', () => {
    const lock = path.join(spool, PREFETCH_LOCK);
    const start = path.join(spool, PREFETCH_START);
    writeFileSync(lock, `${process.pid}\n000000010000000000000005\n`);
    writeFileSync(start, '');
    releasePrefetchLockSync(spool);
    assert.equal(existsSync(lock), false);
    assert.equal(existsSync(start), false);
    writeFileSync(lock, `${process.pid + 1}\n000000010000000000000005\n`);
    releasePrefetchLockSync(spool);
    assert.equal(existsSync(lock), true);
  });
});
