/**
 * Destructive paths on an incomplete catalog (unreadable backup.info) and stale writes of
 * backup.info (check-backup, markStaleBackups, saveBackupInfo on a deleted backup).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import nodeFs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadConfig, type ServerConfig } from '../../src/config/config.js';
import { DONE, FAILED, STARTED, WAITING_FOR_WALS, newBackupInfo, readBackupInfoFile, serializeBackupInfo, writeBackupInfoFile, type BackupInfo } from '../../src/catalog/backup-info.js';
import { classicInfoFile, loadCatalog, saveBackupInfo } from '../../src/catalog/catalog.js';
import { deleteBackup } from '../../src/catalog/delete.js';
import { acquireLock } from '../../src/catalog/lock.js';
import { backupLockPath, lockPath, serverPaths } from '../../src/catalog/server-dirs.js';
import { appendXlogDb, readXlogDb } from '../../src/catalog/xlogdb.js';
import { checkBackup } from '../../src/backup/check-backup.js';
import { markStaleBackups, purgeWalsBeforeFirstBackup } from '../../src/backup/backup.js';
import { enforceRetention } from '../../src/retention/enforce.js';
import { BarmanError } from '../../src/util/errors.js';
import { walArchivePath } from '../../src/wal/archiver.js';

let tmpRoot = '';
let serial = 0;

before(() => {
  tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'bts-integrity-'));
});

after(() => {
  fs.rmSync(tmpRoot, { recursive: true, force: true });
});

function server(extra: Record<string, string> = {}): ServerConfig {
  const dir = path.join(tmpRoot, `s${++serial}`);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'barman.conf');
  const opts = { conninfo: 'host=127.0.0.1 port=1', backup_method: 'postgres', ...extra };
  fs.writeFileSync(file, `[barman]\nbarman_home = ${dir}/home\n[pg]\n${Object.entries(opts).map(([k, v]) => `${k} = ${v}`).join('\n')}\n`);
  const srv = loadConfig(file).servers.get('pg');
  assert.ok(srv);
  return srv;
}

const seg = (n: number) => `00000001000000000000000${n.toString(16).toUpperCase()}`;
const A = '20240101T000000';
const B = '20240102T000000';
const C = '20240103T000000';

/** A backup with some data, WALs begin..end of timeline 1. */
async function addBackup(srv: ServerConfig, id: string, status: string, begin: number, end: number, extra: Partial<BackupInfo> = {}): Promise<void> {
  const data = path.join(serverPaths(srv).baseDir, id, 'data');
  fs.mkdirSync(data, { recursive: true });
  fs.writeFileSync(path.join(data, 'PG_VERSION'), '15\n');
  await saveBackupInfo(
    srv,
    id,
    newBackupInfo({ status, mode: 'postgres', version: 150000, timeline: 1, begin_wal: seg(begin), end_wal: seg(end), ...extra }),
    { create: true },
  );
}

/** A damaged backup.info (a line that is no `key=value`): unreadable for us. */
async function addUnreadableBackup(srv: ServerConfig, id: string): Promise<string> {
  await addBackup(srv, id, DONE, 1, 1);
  const file = classicInfoFile(srv, id);
  fs.appendFileSync(file, 'half a line written before the disk fills\n');
  return file;
}

/** Segments `from..to` archived (files + xlog.db lines). */
async function archive(srv: ServerConfig, from: number, to: number): Promise<void> {
  const lines = [];
  for (let n = from; n <= to; n++) lines.push({ name: seg(n), size: 5, time: 1.5, compression: null, encryption: null });
  // Lines first: a missing xlog.db is rebuilt from wals/ before the append.
  await appendXlogDb(srv, lines);
  for (let n = from; n <= to; n++) {
    const f = walArchivePath(srv, seg(n));
    fs.mkdirSync(path.dirname(f), { recursive: true });
    fs.writeFileSync(f, `wal ${n}`);
  }
}

const archivedNames = async (srv: ServerConfig) => (await readXlogDb(srv)).map((e) => e.name);
const statusOf = async (srv: ServerConfig, id: string) => (await readBackupInfoFile(classicInfoFile(srv, id))).status;

describe('strict catalog for destructive operations', () => {
  it('loadCatalog({ strict: true }) names the unreadable backup.info; the lenient load skips it', async () => {
    const srv = server();
    await addBackup(srv, B, DONE, 2, 2);
    const bad = await addUnreadableBackup(srv, A);
    const problems: string[] = [];
    assert.deepEqual((await loadCatalog(srv, problems)).map((e) => e.id), [B]);
    assert.equal(problems.length, 1);
    await assert.rejects(loadCatalog(srv, { strict: true }), (err: Error) => {
      assert.ok(err instanceof BarmanError);
      assert.ok(err.message.includes(bad), err.message);
      assert.ok(!err.message.includes('\n'));
      return true;
    });
  });

  it('delete refuses while an older backup.info is unreadable, and removes nothing', async () => {
    // Old behaviour: A was skipped, B looked like the oldest backup, and deleting it removed
    // the WALs before C's begin_wal, which A needs.
    const srv = server();
    const bad = await addUnreadableBackup(srv, A);
    await addBackup(srv, B, DONE, 2, 2);
    await addBackup(srv, C, DONE, 4, 4);
    await archive(srv, 1, 5);
    await assert.rejects(deleteBackup(srv, B), (err: Error) => err instanceof BarmanError && err.message.includes(bad));
    assert.deepEqual(await archivedNames(srv), [1, 2, 3, 4, 5].map(seg));
    for (let n = 1; n <= 5; n++) assert.ok(fs.existsSync(walArchivePath(srv, seg(n))));
    assert.equal(await statusOf(srv, B), DONE);
    assert.ok(fs.existsSync(path.join(serverPaths(srv).baseDir, B, 'data', 'PG_VERSION')));
  });

  it('the WAL purge after a first backup keeps everything when another backup.info is unreadable', async () => {
    const srv = server();
    const bad = await addUnreadableBackup(srv, A);
    await addBackup(srv, B, WAITING_FOR_WALS, 3, 3);
    await archive(srv, 1, 3);
    const warnings: string[] = [];
    const entry = (await loadCatalog(srv)).find((e) => e.id === B);
    assert.ok(entry);
    await purgeWalsBeforeFirstBackup(srv, entry, { warning: (m) => warnings.push(m) });
    assert.deepEqual(await archivedNames(srv), [1, 2, 3].map(seg));
    assert.equal(warnings.length, 1);
    assert.ok(warnings[0]?.includes(bad));

    // Once the file is readable again, B is not the first backup: still nothing to purge.
    fs.rmSync(path.join(serverPaths(srv).baseDir, A), { recursive: true });
    await purgeWalsBeforeFirstBackup(srv, entry, {});
    assert.deepEqual(await archivedNames(srv), [3].map(seg), 'a real first backup still purges');
  });

  it('retention enforcement deletes nothing while a backup.info is unreadable', async () => {
    const srv = server({ retention_policy: 'REDUNDANCY 1' });
    const bad = await addUnreadableBackup(srv, A);
    await addBackup(srv, B, DONE, 2, 2);
    await addBackup(srv, C, DONE, 4, 4);
    await archive(srv, 1, 5);
    const ev = { info: () => undefined, warning: () => undefined };
    await assert.rejects(enforceRetention(srv, ev), (err: Error) => err instanceof BarmanError && err.message.includes(bad));
    assert.equal(await statusOf(srv, B), DONE);
    assert.deepEqual(await archivedNames(srv), [1, 2, 3, 4, 5].map(seg));
  });
});

describe('no stale writes of backup.info', () => {
  it('saveBackupInfo refuses to bring back a deleted backup unless asked to create one', async () => {
    const srv = server();
    await addBackup(srv, B, DONE, 2, 2);
    const info = (await loadCatalog(srv))[0]?.info as BackupInfo;
    fs.rmSync(path.join(serverPaths(srv).baseDir, B), { recursive: true });
    await assert.rejects(saveBackupInfo(srv, B, info), BarmanError);
    assert.ok(!fs.existsSync(path.join(serverPaths(srv).baseDir, B)));
    await saveBackupInfo(srv, B, info, { create: true });
    assert.equal(await statusOf(srv, B), DONE);
  });

  it('check-backup does not resurrect a backup deleted after it was loaded', async () => {
    const srv = server();
    await addBackup(srv, B, WAITING_FOR_WALS, 2, 3);
    await archive(srv, 2, 4);
    const [entry] = await loadCatalog(srv); // e.g. cron's load...
    assert.ok(entry);
    fs.rmSync(path.join(serverPaths(srv).baseDir, B), { recursive: true }); // ...then `barman delete`
    assert.equal(await checkBackup(srv, entry), 'gone');
    assert.ok(!fs.existsSync(path.join(serverPaths(srv).baseDir, B)), 'no base/<id>/ re-created');
    assert.deepEqual(await loadCatalog(srv), []);
  });

  it('check-backup works on the current backup.info, not on the copy it was given', async () => {
    const srv = server();
    await addBackup(srv, B, WAITING_FOR_WALS, 2, 3);
    await archive(srv, 2, 4);
    const [entry] = await loadCatalog(srv);
    assert.ok(entry);
    // Meanwhile a delete started: it marked the backup FAILED.
    await writeBackupInfoFile(classicInfoFile(srv, B), { ...entry.info, status: FAILED, error: 'delete in progress' });
    assert.equal(await checkBackup(srv, entry), 'unchanged');
    assert.equal(await statusOf(srv, B), FAILED);
    assert.equal(entry.info.status, FAILED, 'the entry is refreshed');
  });

  it('check-backup skips a backup whose per-backup lock is held', async () => {
    const srv = server();
    await addBackup(srv, B, WAITING_FOR_WALS, 2, 3);
    await archive(srv, 2, 4);
    const [entry] = await loadCatalog(srv);
    assert.ok(entry);
    const lock = await acquireLock(backupLockPath(srv, B), 'backup action');
    try {
      assert.equal(await checkBackup(srv, entry), 'busy');
      assert.equal(await statusOf(srv, B), WAITING_FOR_WALS);
    } finally {
      lock.release();
    }
    assert.equal(await checkBackup(srv, entry), 'done');
    assert.equal(await statusOf(srv, B), DONE);
  });

  it('markStaleBackups marks a dead STARTED backup FAILED, and nothing while a backup runs', async () => {
    const srv = server();
    await addBackup(srv, B, STARTED, 2, 2);
    const lock = await acquireLock(lockPath(srv, 'backup'), 'backup');
    try {
      assert.deepEqual(await markStaleBackups(srv), []);
      assert.equal(await statusOf(srv, B), STARTED);
    } finally {
      lock.release();
    }
    assert.deepEqual(await markStaleBackups(srv), [B]);
    assert.equal(await statusOf(srv, B), FAILED);
  });

  it('markStaleBackups never overwrites a backup that finished after the catalog was read', async () => {
    const realWriteFileSync = nodeFs.writeFileSync;
    const srv = server();
    await addBackup(srv, B, STARTED, 2, 2);
    const infoFile = classicInfoFile(srv, B);
    const finished: BackupInfo = { ...(await readBackupInfoFile(infoFile)), status: WAITING_FOR_WALS };
    // The backup is running (it holds the server's backup lock)...
    const backupLock = await acquireLock(lockPath(srv, 'backup'), 'backup');
    // ...and finishes just after markStaleBackups has read its backup.info (the catalog is read
    // with readFileSync): it writes the final backup.info and releases the lock.
    const realReadFileSync = nodeFs.readFileSync;
    let finishedNow = false;
    nodeFs.readFileSync = function (this: unknown, ...args: Parameters<typeof realReadFileSync>) {
      const res = (realReadFileSync as (...a: unknown[]) => unknown).apply(nodeFs, args);
      if (!finishedNow && String(args[0]) === infoFile) {
        finishedNow = true;
        realWriteFileSync(infoFile, serializeBackupInfo(finished));
        backupLock.release();
      }
      return res;
    } as typeof realReadFileSync;
    syncBuiltinESMExports();
    try {
      assert.deepEqual(await markStaleBackups(srv), []);
    } finally {
      nodeFs.readFileSync = realReadFileSync;
      syncBuiltinESMExports();
      backupLock.release();
    }
    assert.ok(finishedNow);
    assert.equal(await statusOf(srv, B), WAITING_FOR_WALS);
  });
});
