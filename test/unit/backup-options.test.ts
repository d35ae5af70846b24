/**
 * Backup options that were accepted and ignored, now implemented: basebackup_retry_times /
 * _sleep (copy retried from scratch), parallel_jobs_start_batch_size / _period (workers started
 * in batches), primary_checkpoint_timeout (when a checkpoint is forced on the primary).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { copyWithRetries } from '../../src/backup/backup.js';
import { primaryCheckpointDue } from '../../src/backup/standby.js';
import { PyDateTime } from '../../src/util/pytime.js';
import { startBatches } from '../../src/util/pool.js';
import { basebackupArgs } from '../../src/backup/postgres-executor.js';
import { loadConfig } from '../../src/config/config.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('basebackup_retry_times: a failed copy starts again from scratch', () => {
  async function backupDir(): Promise<string> {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'barman-retry-'));
    await fsp.writeFile(path.join(dir, 'backup.info'), 'status=STARTED\n');
    return dir;
  }

  it('retries up to N times, removing what the failed attempt left (backup.info kept)', async () => {
    const dir = await backupDir();
    const warnings: string[] = [];
    const seen: string[][] = [];
    let calls = 0;
    const result = await copyWithRetries(
      dir,
      async () => {
        seen.push(fs.readdirSync(dir).sort());
        calls++;
        await fsp.mkdir(path.join(dir, 'data'), { recursive: true });
        await fsp.writeFile(path.join(dir, 'data', `half-${calls}`), 'x');
        if (calls < 3) throw new Error(`connection lost ${calls}`);
        return 'copied';
      },
      { times: 2, sleepSeconds: 0, warning: (m) => warnings.push(m) },
    );
    assert.equal(result, 'copied');
    assert.deepEqual(seen, [['backup.info'], ['backup.info'], ['backup.info']]);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'data')), ['half-3']);
    assert.equal(warnings.length, 2);
    assert.match(warnings[0] ?? '', /^Copy failed \(connection lost 1\): attempt 2 of 3 in 0 seconds/);
    await fsp.rm(dir, { recursive: true });
  });

  it('gives up after the last attempt with the last error; 0 means one attempt', async () => {
    const dir = await backupDir();
    let calls = 0;
    await assert.rejects(copyWithRetries(dir, async () => { calls++; throw new Error(`fail ${calls}`); }, { times: 1, sleepSeconds: 0 }), /fail 2/);
    assert.equal(calls, 2);
    calls = 0;
    await assert.rejects(copyWithRetries(dir, async () => { calls++; throw new Error('once'); }, { times: 0, sleepSeconds: 0 }), /once/);
    assert.equal(calls, 1);
    await fsp.rm(dir, { recursive: true });
  });

  it('a signal stops the retries, also during the pause', async () => {
    const dir = await backupDir();
    const abort = new AbortController();
    let calls = 0;
    const t0 = Date.now();
    const p = copyWithRetries(dir, async () => { calls++; throw new Error('boom'); }, { times: 5, sleepSeconds: 30, signal: abort.signal });
    setTimeout(() => abort.abort(), 50);
    await assert.rejects(p, /boom/);
    assert.equal(calls, 1);
    assert.ok(Date.now() - t0 < 10_000, 'not waiting for the 30 s pause');
    await fsp.rm(dir, { recursive: true });
  });
});

describe('parallel_jobs_start_batch_size / _period', () => {
  it('starts the first task of each worker batch by batch; later tasks at once', async () => {
    const gate = startBatches(5, 2, 0.1);
    const t0 = Date.now();
    const at: number[] = [];
    await Promise.all(Array.from({ length: 7 }, async (_, i) => {
      await gate();
      at[i] = Date.now() - t0;
    }));
    for (const i of [0, 1, 5, 6]) assert.ok((at[i] as number) < 90, `task ${i} at ${at[i]} ms`);
    for (const i of [2, 3]) assert.ok((at[i] as number) >= 95, `task ${i} at ${at[i]} ms`);
    assert.ok((at[4] as number) >= 195, `task 4 at ${at[4]} ms`);
  });

  it('with the defaults (10 per second) up to 10 workers never wait', async () => {
    const gate = startBatches(10, 10, 1);
    const t0 = Date.now();
    await Promise.all(Array.from({ length: 10 }, () => gate()));
    assert.ok(Date.now() - t0 < 500);
  });
});

describe('primary_checkpoint_timeout', () => {
  const ended = PyDateTime.fromEpochMicros(1_700_000_000_000_000n, 0);
  const waiting = { status: 'WAITING_FOR_WALS', end_time: ended, end_wal: '000000010000000000000005' };
  const srv = { primary_conninfo: 'host=primary', primary_checkpoint_timeout: 60 };
  const at = (s: number) => 1_700_000_000_000 + s * 1000;

  it('is due once the backup has waited that long for its WAL, with a primary to ask', () => {
    assert.equal(primaryCheckpointDue(srv, waiting, at(59)), false);
    assert.equal(primaryCheckpointDue(srv, waiting, at(60)), true);
    assert.equal(primaryCheckpointDue({ ...srv, primary_checkpoint_timeout: 0 }, waiting, at(3600)), false, '0: never (the default)');
    assert.equal(primaryCheckpointDue({ ...srv, primary_conninfo: null }, waiting, at(3600)), false, 'no primary_conninfo: ignored, as in Barman');
    assert.equal(primaryCheckpointDue(srv, { ...waiting, status: 'DONE' }, at(3600)), false);
    assert.equal(primaryCheckpointDue(srv, { ...waiting, end_wal: null }, at(3600)), false);
  });
});

describe('backup_compression = none (Barman 3.8+): an uncompressed tar backup', () => {
  it('gives pg_basebackup --format=tar without --compress, and compression none for backup.info', async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'barman-bcnone-'));
    try {
      const conf = path.join(dir, 'barman.conf');
      await fsp.writeFile(conf, `[barman]\nbarman_home = ${dir}/home\n\n[pg]\nconninfo = host=h\nbackup_method = postgres\narchiver = on\nbackup_compression = none\n`);
      const srv = loadConfig(conf).servers.get('pg');
      assert.ok(srv);
      const res = basebackupArgs({ srv, destDir: '/b', tablespaces: [], immediateCheckpoint: false, label: 'l' }, false);
      assert.equal(res.format, 'tar');
      assert.equal(res.compression, 'none');
      assert.ok(res.args.includes('--format=tar'));
      assert.ok(!res.args.some((a) => a.startsWith('--compress')), res.args.join(' '));
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});
