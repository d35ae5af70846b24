/**
 * check-wal-archive, list-processes, terminate-process, lock-directory-cleanup and the error
 * paths of replication-status through the real CLI, on a synthetic barman_home (no PostgreSQL).
 * Lock holders are real processes holding real flock locks (test/helpers below).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkArchiveUsable, parseTimelineArg } from '../../src/wal/check-wal-archive.js';
import { taskOfLockFile } from '../../src/operations/processes.js';
import { renderReplicationConsole, syncStage, type ReplicationClient } from '../../src/reporting/replication.js';
import { makeCliFixture, type CliFixture } from '../helpers/cli-fixture.js';

const LOCK_MODULE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'catalog', 'lock.js');

const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

/** A process that takes `file` with our lock module (flock + PID) and sleeps until killed. */
async function holdLock(file: string): Promise<ChildProcess> {
  const code = `const { acquireLock } = await import(${JSON.stringify(LOCK_MODULE)}); await acquireLock(${JSON.stringify(file)}, 'test'); console.log('locked'); setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => (String(d).includes('locked') ? resolve() : undefined));
    child.on('exit', (c) => reject(new Error(`lock holder exited with ${c}`)));
  });
  return child;
}

const fixture = (server: Record<string, string> = {}) =>
  makeCliFixture({ prefix: 'barman-ops-', server: { conninfo: 'host=127.0.0.1 port=1 user=barman password=opsecret connect_timeout=2', ...server } });

async function writeXlogDb(f: CliFixture, names: string[]): Promise<void> {
  await fsp.mkdir(path.join(f.srvDir, 'wals'), { recursive: true });
  await fsp.writeFile(path.join(f.srvDir, 'wals', 'xlog.db'), names.map((n) => `${n}\t100\t1704103200.0\tNone\n`).join(''));
}

describe('check-wal-archive', () => {
  it('pure rule: empty archive without timeline; no WAL of timeline >= N with one', () => {
    assert.doesNotThrow(() => checkArchiveUsable([]));
    assert.throws(() => checkArchiveUsable(['000000010000000000000001']), /^WalArchiveContentError: Expected empty archive$|Expected empty archive/);
    assert.doesNotThrow(() => checkArchiveUsable(['000000010000000000000001', '00000001.history'], 2));
    assert.throws(() => checkArchiveUsable(['000000010000000000000001', '00000002.history'], 2), /Found 1 file in WAL archive equal to or newer than timeline 2/);
    assert.throws(() => checkArchiveUsable(['000000030000000000000001', '000000030000000000000002'], 2), /Found 2 files/);
    assert.throws(() => checkArchiveUsable(['junk'], 1), /Unexpected file junk found in WAL archive/);
    assert.throws(() => parseTimelineArg('0'), /malformed timeline 0/);
    assert.throws(() => parseTimelineArg('x'), /malformed timeline x/);
    assert.equal(parseTimelineArg('12'), 12);
  });

  it('passes on a server that never archived, creating nothing', async () => {
    const f = await fixture();
    const r = await f.run('check-wal-archive', 'pg');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'Server pg:\n - WAL archive check for server pg passed\n');
    assert.equal(existsSync(path.join(f.srvDir, 'wals')), false);
    const j = await f.run('-f', 'json', 'check-wal-archive', 'pg');
    assert.deepEqual(JSON.parse(j.stdout), { pg: 'WAL archive check for server pg passed' });
  });

  it('fails on an archive holding WALs, honours --timeline, rejects bad input', async () => {
    const f = await fixture();
    await writeXlogDb(f, ['000000010000000000000001', '000000010000000000000002', '00000002.history', '000000020000000000000003']);
    const r = await f.run('check-wal-archive', 'pg');
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'ERROR: WAL archive check failed for server pg: Expected empty archive\n');
    const t2 = await f.run('check-wal-archive', '--timeline', '2', 'pg');
    assert.equal(t2.code, 1);
    assert.match(t2.stderr, /^ERROR: WAL archive check failed for server pg: Found 2 files in WAL archive equal to or newer than timeline 2\n$/);
    const t3 = await f.run('check-wal-archive', '--timeline', '3', 'pg');
    assert.equal(t3.code, 0, t3.stderr);
    const bad = await f.run('check-wal-archive', '--timeline', 'abc', 'pg');
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
    const unknown = await f.run('check-wal-archive', 'nosuch');
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /Unknown server 'nosuch'/);
  });
});

describe('list-processes / terminate-process', () => {
  it('maps lock file names to tasks', () => {
    assert.equal(taskOfLockFile('pg', '.pg-receive-wal.lock'), 'receive-wal');
    assert.equal(taskOfLockFile('pg', '.pg-backup.lock'), 'backup');
    assert.equal(taskOfLockFile('pg', '.pg-20240101T100000-sync-backup.lock'), 'sync-backup');
    assert.equal(taskOfLockFile('pg', '.pg-xlogdb.lock'), null);
    assert.equal(taskOfLockFile('pg', '.pg-20240101T100000.lock'), null);
    assert.equal(taskOfLockFile('pg', '.pg2-backup.lock'), null);
  });

  it('lists held locks only, terminates one, fails clearly on a task that does not run', async () => {
    const f = await fixture();
    // A leftover lock file (no holder) must not be listed.
    await fsp.writeFile(path.join(f.home, '.pg-cron.lock'), '999999\n');
    const empty = await f.run('list-processes', 'pg');
    assert.equal(empty.code, 0, empty.stderr);
    assert.equal(empty.stdout, 'No active subprocesses found for server pg.\n');

    const holder = await holdLock(path.join(f.home, '.pg-receive-wal.lock'));
    const listed = await f.run('list-processes', 'pg');
    assert.equal(listed.stdout, `Active subprocesses for server pg:\n${holder.pid} receive-wal\n`);
    const json = await f.run('-f', 'json', 'list-processes', 'pg');
    assert.deepEqual(JSON.parse(json.stdout), { pg: [{ pid: holder.pid, name: 'receive-wal' }] });

    const none = await f.run('terminate-process', 'pg', 'backup');
    assert.equal(none.code, 1);
    assert.equal(none.stderr, 'ERROR: Termination of backup failed: no such process for server pg\n');

    const exited = new Promise((r) => holder.on('exit', r));
    const term = await f.run('terminate-process', 'pg', 'receive-wal');
    assert.equal(term.code, 0, term.stderr);
    assert.equal(term.stdout, `Stopped process receive-wal(${holder.pid})\n`);
    await exited;
    assert.equal((await f.run('list-processes', 'pg')).stdout, 'No active subprocesses found for server pg.\n');
  });
});

describe('lock-directory-cleanup', () => {
  it('removes the lock files nobody holds and keeps the held ones', async () => {
    const f = await fixture();
    const stale = ['.pg-backup.lock', '.pg-20240101T100000.lock', '.gone-cron.lock'].map((n) => path.join(f.home, n));
    for (const s of stale) await fsp.writeFile(s, '12345\n');
    const other = path.join(f.home, 'not-a-lock.txt');
    await fsp.writeFile(other, 'x');
    const held = path.join(f.home, '.pg-receive-wal.lock');
    const holder = await holdLock(held);
    const r = await f.run('lock-directory-cleanup');
    assert.equal(r.code, 0, r.stderr);
    for (const s of stale) {
      assert.equal(existsSync(s), false, s);
      assert.match(r.stdout, new RegExp(`^Removed lock file ${s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
    }
    assert.ok(existsSync(held));
    assert.ok(existsSync(other));
    assert.doesNotMatch(r.stdout, /receive-wal/);
    // The holder still holds it.
    assert.match((await f.run('list-processes', 'pg')).stdout, new RegExp(`${holder.pid} receive-wal`));
    holder.kill('SIGKILL');
  });
});

describe('replication-status without PostgreSQL', () => {
  it('reports an unreachable server in one line, exit 1, no password', async () => {
    const f = await fixture();
    const r = await f.run('replication-status', 'pg');
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /^ERROR: Unable to connect to server pg: /);
    assert.doesNotMatch(r.stderr + r.stdout, /opsecret/);
    const bad = await f.run('replication-status', '--target', 'nope', 'pg');
    assert.equal(bad.code, 2);
  });

  it('renders sync stages and the empty case', () => {
    const c: ReplicationClient = {
      pid: 42, usename: 'u', application_name: 'a', client_addr: null, client_hostname: null, client_port: null,
      backend_start: '2024-01-01 10:00:00+00:00', backend_xmin: null, state: 'streaming',
      sent_lsn: '0/3000000', write_lsn: '0/3000000', flush_lsn: '0/3000000', replay_lsn: '0/2FFFC00',
      sync_priority: 1, sync_state: 'sync', slot_name: null, current_lsn: '0/3000000',
    };
    assert.equal(syncStage(c), '4/5 2-safe');
    assert.equal(syncStage({ ...c, replay_lsn: null }), '3/3 Remote write');
    assert.equal(syncStage({ ...c, replay_lsn: null, write_lsn: '0/2000000' }), '2/3 WAL Sent (min)');
    assert.equal(syncStage({ ...c, flush_lsn: '0/1', write_lsn: '0/1', sent_lsn: '0/1' }), '1/5 1-safe');
    const lines = renderReplicationConsole('pg', 'all', { serverLsn: '0/3000000', clients: [c] }, false);
    assert.deepEqual(lines.slice(0, 8), [
      "Status of streaming clients for server 'pg':",
      '  Current LSN on master: 0/3000000',
      '  Number of streaming clients: 1',
      '',
      '  1. #1 Sync standby',
      '     Application name: a',
      '     Sync stage      : 4/5 2-safe',
      '     Communication   : Unix domain socket',
    ]);
    assert.ok(lines.includes('     Replay LSN : 0/2FFFC00 (diff: -1.0 KiB)'));
    assert.deepEqual(renderReplicationConsole('pg', 'wal-streamer', { serverLsn: null, clients: [] }, true), [
      "Wal streamers for slave 'pg':",
      '  No WAL streamers attached',
    ]);
  });
});
