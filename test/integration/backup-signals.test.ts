/**
 * Ctrl-C during `barman backup --wait` on a real PostgreSQL 15: our SIGINT/SIGTERM handlers
 * replace Node's exit, so the wait itself must stop. The copy is complete: the backup stays
 * WAITING_FOR_WALS (cron completes it later) and the command ends at once, non-zero, with a
 * message that says so, releasing the backup lock.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { cleanupAll, PgCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, listBackups, type BarmanEnv } from '../helpers/barman-env.js';
import { BARMAN_USER, runAs, sleep, waitFor } from '../helpers/system.js';

describe('signals during backup --wait', () => {
  let pg: PgCluster;
  let env: BarmanEnv;

  before(async () => {
    // File archiving whose archive_command delivers nothing: the checks that `backup` runs pass
    // (the archive is not empty, PostgreSQL archives without failures), but the WAL files of the
    // backup never arrive, so --wait waits.
    pg = await PgCluster.create({ archiveMode: true, archiveCommand: '/bin/true' });
    env = await createBarmanEnv(pg, { extra: { streaming_archiver: 'off', archiver: 'on', slot_name: '', create_slot: 'manual' } });
    const wals = path.join(env.home, env.server, 'wals');
    await runAs(BARMAN_USER, 'mkdir', ['-p', '-m', '0700', path.join(wals, '0000000100000000')], { check: true });
    await runAs(BARMAN_USER, 'tee', [path.join(wals, 'xlog.db')], { input: '000000010000000000000000\t16777216\t1704103200.0\tNone\n', check: true });
  });

  after(async () => {
    await env?.stop();
    await cleanupAll();
  });

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`${signal} while waiting for WALs ends the command, the backup stays WAITING_FOR_WALS`, async () => {
      const runuser = spawn('runuser', ['-u', BARMAN_USER, '--', process.execPath, BARMAN_SCRIPT, '-c', env.configFile, 'backup', '--wait', '--immediate-checkpoint', env.server], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      runuser.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      runuser.stdout.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<number>((resolve) => runuser.on('close', (code) => resolve(code ?? -1)));
      await waitFor(async () => /Waiting for the WAL file/.test(stderr), { timeoutMs: 60_000, intervalMs: 100, what: 'backup waiting for WALs' });
      // The barman process itself (runuser's child): signal it as a terminal's Ctrl-C would.
      const ps = await runAs('root', 'pgrep', ['-P', String(runuser.pid)]);
      const pid = Number(ps.stdout.trim().split('\n')[0]);
      assert.ok(pid > 0, `barman process not found: ${ps.stdout} ${ps.stderr}`);
      const sentAt = Date.now();
      process.kill(pid, signal);
      const code = await Promise.race([exited, sleep(15_000).then(() => null)]);
      if (code === null) {
        process.kill(pid, 'SIGKILL');
        await exited;
        assert.fail(`barman ignored ${signal} while waiting for WALs\n${stderr}`);
      }
      assert.ok(Date.now() - sentAt < 10_000);
      assert.notEqual(code, 0, stderr);
      assert.match(stderr, /Interrupted while waiting for the WAL files of backup \S+ of server \S+: the copy is complete and the backup stays WAITING_FOR_WALS/);
      const backups = await listBackups(env);
      assert.equal(backups.at(-1)?.status, 'WAITING_FOR_WALS');
      // The backup lock was released: the next backup can start (and is interrupted the same way below).
    });
  }
});
