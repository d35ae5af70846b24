/**
 * Hook scripts (spec §9): the shared runner and its five families. The scripts are real shell
 * scripts that append their BARMAN_* environment to a log file; no PostgreSQL is needed (backup
 * hooks are driven through runBackupHooks, the function takeBackup calls).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadConfig, type ServerConfig } from '../../src/config/config.js';
import { DONE, EMPTY, FAILED, newBackupInfo } from '../../src/catalog/backup-info.js';
import { backupDir, loadCatalog, saveBackupInfo, type BackupEntry } from '../../src/catalog/catalog.js';
import { deleteBackup } from '../../src/catalog/delete.js';
import { serverPaths } from '../../src/catalog/server-dirs.js';
import { readXlogDb, withXlogDb, type XlogDbEntry } from '../../src/catalog/xlogdb.js';
import { runBackupHooks } from '../../src/backup/backup.js';
import { HookAbortError, runHooks, type HookTiming } from '../../src/hooks/hooks.js';
import { archiveWal, walArchivePath } from '../../src/wal/archiver.js';
import { pyFloatStr, pyStatMtime } from '../../src/util/pytime.js';
import { VERSION } from '../../src/version.js';
import { withSegmentHeader } from '../helpers/wal-segment.js';

let tmpRoot = '';
let serial = 0;

before(async () => {
  tmpRoot = await fsp.mkdtemp(path.join(os.tmpdir(), 'bts-hooks-'));
});
after(async () => {
  await fsp.rm(tmpRoot, { recursive: true, force: true });
});

interface Env {
  srv: ServerConfig;
  dir: string;
  conf: string;
  log: string;
  /** `/bin/sh <dump script>`: appends one record (BARMAN_* variables + EXISTS) to `log`. */
  dump: string;
}

/**
 * A server `pg` whose options are built by `options(dump, dir)`. The dump script writes a `---`
 * line, EXISTS=yes|no (does $BARMAN_FILE exist) and its sorted BARMAN_* variables.
 */
function makeEnv(options: (dump: string, dir: string) => Record<string, string>): Env {
  const dir = path.join(tmpRoot, `h${++serial}`);
  fs.mkdirSync(dir, { recursive: true });
  const log = path.join(dir, 'hooks.log');
  const script = path.join(dir, 'dump.sh');
  fs.writeFileSync(
    script,
    `#!/bin/sh\n{ echo ---; if [ -n "$BARMAN_FILE" ] && [ -e "$BARMAN_FILE" ]; then echo EXISTS=yes; else echo EXISTS=no; fi; env | grep '^BARMAN_' | sort; } >> '${log}'\n`,
  );
  const dump = `/bin/sh ${script}`;
  const conf = path.join(dir, 'barman.conf');
  const opts: Record<string, string> = { conninfo: 'host=127.0.0.1', backup_method: 'postgres', archiver: 'on', ...options(dump, dir) };
  fs.writeFileSync(conf, `[barman]\nbarman_home = ${dir}/home\n\n[pg]\n${Object.entries(opts).map(([k, v]) => `${k} = ${v}`).join('\n')}\n`);
  const srv = loadConfig(conf).servers.get('pg');
  assert.ok(srv);
  assert.deepEqual(srv.errors, []);
  for (const d of [serverPaths(srv).incomingDir, serverPaths(srv).baseDir]) fs.mkdirSync(d, { recursive: true });
  return { srv, dir, conf, log, dump };
}

/** All four scripts of `family` dump their environment. */
function allFour(family: string, dump: string): Record<string, string> {
  return {
    [`pre_${family}_script`]: dump,
    [`pre_${family}_retry_script`]: dump,
    [`post_${family}_retry_script`]: dump,
    [`post_${family}_script`]: dump,
  };
}

function records(e: Env): Array<Record<string, string>> {
  if (!fs.existsSync(e.log)) return [];
  return fs
    .readFileSync(e.log, 'utf8')
    .split('---\n')
    .filter((r) => r !== '')
    .map((r) => Object.fromEntries(r.split('\n').filter((l) => l !== '').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)])));
}

/** `<phase> <hook>` of each record. */
const sequence = (recs: Array<Record<string, string>>) => recs.map((r) => `${r.BARMAN_PHASE} ${r.BARMAN_HOOK}`);

const phasesOf = (family: string) => [`pre ${family}_script`, `pre ${family}_retry_script`, `post ${family}_retry_script`, `post ${family}_script`];

function common(e: Env, family: string, r: Record<string, string>, i: number): void {
  assert.equal(r.BARMAN_VERSION, VERSION);
  assert.equal(r.BARMAN_SERVER, 'pg');
  assert.equal(r.BARMAN_CONFIGURATION, e.conf);
  assert.equal(r.BARMAN_PHASE, i < 2 ? 'pre' : 'post');
  assert.equal(r.BARMAN_HOOK, i === 0 || i === 3 ? `${family}_script` : `${family}_retry_script`);
  assert.equal(r.BARMAN_RETRY, i === 0 || i === 3 ? '0' : '1');
}

/** Sleeps are recorded, not slept. */
function fakeTiming(): HookTiming & { slept: number[] } {
  const slept: number[] = [];
  return { attemptPauseMs: 3000, napMs: 60000, slept, sleep: async (ms) => void slept.push(ms) };
}

describe('hook runner', () => {
  it('runs pre standard then pre retry, post retry then post standard, ignoring a standard failure', async () => {
    const e = makeEnv((dump) => ({ ...allFour('archive', dump), post_archive_script: `${dump}; exit 5`, pre_archive_script: `${dump}; exit 1` }));
    const warnings: string[] = [];
    await runHooks(e.srv, 'archive', 'pre', { BARMAN_SEGMENT: 'x' }, { warning: (m) => warnings.push(m) });
    await runHooks(e.srv, 'archive', 'post', { BARMAN_SEGMENT: 'x' }, { warning: (m) => warnings.push(m) });
    const recs = records(e);
    assert.deepEqual(sequence(recs), phasesOf('archive'));
    recs.forEach((r, i) => common(e, 'archive', r, i));
    assert.equal(warnings.length, 2, 'failing standard scripts are reported, not fatal');
    assert.match(warnings[0] ?? '', /pre_archive_script returned 1/);
  });

  it('puts path_prefix first in PATH', async () => {
    const e = makeEnv((_dump, dir) => ({ path_prefix: path.join(dir, 'bin'), pre_delete_script: `echo "$PATH" > ${dir}/path` }));
    await runHooks(e.srv, 'delete', 'pre', {});
    assert.ok(fs.readFileSync(path.join(e.dir, 'path'), 'utf8').startsWith(`${path.join(e.dir, 'bin')}:`));
  });

  it('reruns a failing retry script (3 s apart, a 60 s nap after every 5 failures) until it succeeds', async () => {
    const e = makeEnv((_d, dir) => ({ pre_backup_retry_script: `echo x >> ${dir}/count; test $(wc -l < ${dir}/count) -ge 3` }));
    const t = fakeTiming();
    await runHooks(e.srv, 'backup', 'pre', {}, { timing: t });
    assert.equal(fs.readFileSync(path.join(e.dir, 'count'), 'utf8'), 'x\nx\nx\n');
    assert.deepEqual(t.slept, [3000, 3000]);

    const e2 = makeEnv((_d, dir) => ({ post_backup_retry_script: `echo x >> ${dir}/count; test $(wc -l < ${dir}/count) -ge 7` }));
    const t2 = fakeTiming();
    await runHooks(e2.srv, 'backup', 'post', {}, { timing: t2 });
    assert.deepEqual(t2.slept, [3000, 3000, 3000, 3000, 60000, 3000]);
  });

  it('62 continues; 63 aborts in the pre phase (HookAbortError) and continues in the post phase', async () => {
    const e = makeEnv((dump) => ({ pre_wal_delete_retry_script: 'exit 62', post_wal_delete_retry_script: 'exit 63', post_wal_delete_script: dump }));
    const t = fakeTiming();
    await runHooks(e.srv, 'wal_delete', 'pre', {}, { timing: t });
    await runHooks(e.srv, 'wal_delete', 'post', {}, { timing: t });
    assert.deepEqual(t.slept, []);
    assert.deepEqual(sequence(records(e)), ['post wal_delete_script'], 'the standard post script still runs after 63');

    const stop = makeEnv((dump) => ({ pre_delete_retry_script: 'exit 63', pre_delete_script: dump }));
    await assert.rejects(runHooks(stop.srv, 'delete', 'pre', {}, { timing: t }), (err: unknown) => {
      assert.ok(err instanceof HookAbortError);
      assert.equal(err.message, 'pre_delete_retry_script asked to abort the deletion (exit code 63)');
      return true;
    });
    assert.equal(records(stop).length, 1, 'the standard pre script ran before the retry script');
  });
});

describe('backup hooks', () => {
  const B0 = '20240101T000000';
  const B1 = '20240102T000000';
  const B2 = '20240103T000000';

  it('see the backup, its neighbours, its status and its error', async () => {
    const e = makeEnv((dump) => allFour('backup', dump));
    await saveBackupInfo(e.srv, B0, newBackupInfo({ status: DONE }), { create: true });
    await saveBackupInfo(e.srv, B2, newBackupInfo({ status: DONE }), { create: true });
    const info = newBackupInfo({ status: EMPTY });
    const entry: BackupEntry = { id: B1, info, infoFile: await saveBackupInfo(e.srv, B1, info, { create: true }) };
    await runBackupHooks(e.srv, 'pre', entry);
    entry.info = { ...entry.info, status: FAILED, error: 'failure copying files (boom)' };
    await saveBackupInfo(e.srv, B1, entry.info);
    await runBackupHooks(e.srv, 'post', entry);
    const recs = records(e);
    assert.deepEqual(sequence(recs), phasesOf('backup'));
    recs.forEach((r, i) => {
      common(e, 'backup', r, i);
      assert.equal(r.BARMAN_BACKUP_ID, B1);
      assert.equal(r.BARMAN_BACKUP_DIR, backupDir(e.srv, B1));
      assert.equal(r.BARMAN_BACKUP_INFO_PATH, entry.infoFile);
      assert.equal(r.BARMAN_PREVIOUS_ID, B0);
      assert.equal(r.BARMAN_NEXT_ID, B2);
      assert.equal(r.BARMAN_STATUS, i < 2 ? EMPTY : FAILED);
      assert.equal(r.BARMAN_ERROR, i < 2 ? '' : 'failure copying files (boom)');
    });
  });

  it('63 from the pre retry script aborts', async () => {
    const e = makeEnv(() => ({ pre_backup_retry_script: 'exit 63' }));
    const info = newBackupInfo({ status: EMPTY });
    const entry: BackupEntry = { id: B1, info, infoFile: await saveBackupInfo(e.srv, B1, info, { create: true }) };
    await assert.rejects(runBackupHooks(e.srv, 'pre', entry), /pre_backup_retry_script asked to abort the backup/);
  });
});

describe('archive hooks', () => {
  /** PostgreSQL's smallest segments (initdb --wal-segsize=1): the archiver reads the size from each one's header. */
  const SEGSIZE = 1 << 20;
  const W1 = '000000010000000000000001';
  const W2 = '000000010000000000000002';

  async function withSegments(e: Env, names: string[]): Promise<void> {
    for (const n of names) {
      const f = path.join(serverPaths(e.srv).incomingDir, n);
      fs.writeFileSync(f, withSegmentHeader(Buffer.alloc(SEGSIZE, 7), n));
      fs.utimesSync(f, 1700000000.25, 1700000000.25);
    }
  }

  it('run around each archived file with the documented variables', async () => {
    const e = makeEnv((dump) => allFour('archive', dump));
    await withSegments(e, [W1]);
    const src = path.join(serverPaths(e.srv).incomingDir, W1);
    const mtime = pyFloatStr(pyStatMtime(fs.statSync(src, { bigint: true }).mtimeNs));
    const report = await archiveWal(e.srv);
    assert.equal(report.archivedCount, 1);
    const recs = records(e);
    assert.deepEqual(sequence(recs), phasesOf('archive'));
    recs.forEach((r, i) => {
      common(e, 'archive', r, i);
      assert.equal(r.BARMAN_SEGMENT, W1);
      assert.equal(r.BARMAN_FILE, i < 2 ? src : walArchivePath(e.srv, W1));
      assert.equal(r.EXISTS, 'yes');
      assert.equal(r.BARMAN_SIZE, String(SEGSIZE));
      assert.equal(r.BARMAN_TIMESTAMP, mtime);
      assert.equal(r.BARMAN_COMPRESSION, '');
      assert.equal(r.BARMAN_ERROR, '');
    });
  });

  it('report the compressed size and compression after archiving', async () => {
    const e = makeEnv((dump) => ({ compression: 'gzip', post_archive_script: dump }));
    await withSegments(e, [W1]);
    await archiveWal(e.srv);
    const [r] = records(e);
    assert.ok(r);
    assert.equal(r.BARMAN_COMPRESSION, 'gzip');
    assert.equal(r.BARMAN_SIZE, String(fs.statSync(walArchivePath(e.srv, W1)).size));
  });

  it('63 from the pre retry script stops the archiving run before that file', async () => {
    const e = makeEnv((dump) => ({ pre_archive_retry_script: `${dump}; test "$BARMAN_SEGMENT" != ${W2} || exit 63` }));
    await withSegments(e, [W1, W2]);
    const report = await archiveWal(e.srv);
    assert.equal(report.stopped, true);
    assert.equal(report.archivedCount, 1);
    assert.ok(fs.existsSync(walArchivePath(e.srv, W1)));
    assert.ok(fs.existsSync(path.join(serverPaths(e.srv).incomingDir, W2)), 'the stopped file stays in incoming/');
    assert.deepEqual((await readXlogDb(e.srv)).map((w) => w.name), [W1]);
    assert.match(report.warnings.join('\n'), /pre_archive_retry_script asked to abort the archiving/);
  });
});

describe('delete and wal_delete hooks', () => {
  const B1 = '20240101T000000';
  const B2 = '20240102T000000';
  const wal = (n: number) => `0000000100000000000000${n.toString(16).toUpperCase().padStart(2, '0')}`;

  /** B1 (WAL 2), B2 (WAL 4); WALs 1..5 archived (1 and 3 gzip-labelled). */
  async function catalog(e: Env): Promise<XlogDbEntry[]> {
    await saveBackupInfo(e.srv, B1, newBackupInfo({ status: DONE, begin_wal: wal(2), end_wal: wal(2), timeline: 1 }), { create: true });
    await saveBackupInfo(e.srv, B2, newBackupInfo({ status: DONE, begin_wal: wal(4), end_wal: wal(4), timeline: 1 }), { create: true });
    const entries: XlogDbEntry[] = [];
    for (let n = 1; n <= 5; n++) {
      const f = walArchivePath(e.srv, wal(n));
      fs.mkdirSync(path.dirname(f), { recursive: true });
      fs.writeFileSync(f, `wal ${n}`);
      entries.push({ name: wal(n), size: 100 + n, time: 1700000000 + n + 0.5, compression: n % 2 ? 'gzip' : null, encryption: null });
    }
    await withXlogDb(e.srv, (db) => db.append(entries));
    return entries;
  }

  it('delete hooks wrap the deletion, wal_delete hooks wrap each removed WAL', async () => {
    const e = makeEnv((dump) => ({ ...allFour('delete', dump), ...allFour('wal_delete', dump) }));
    const wals = await catalog(e);
    const [target] = await loadCatalog(e.srv);
    assert.ok(target);
    const result = await deleteBackup(e.srv, B1);
    assert.deepEqual(result.removedWals, [wal(1), wal(2), wal(3)]);
    const recs = records(e);
    const perWal = phasesOf('wal_delete');
    assert.deepEqual(sequence(recs), [...phasesOf('delete').slice(0, 2), ...perWal, ...perWal, ...perWal, ...phasesOf('delete').slice(2)]);

    const del = [recs[0], recs[1], recs[14], recs[15]];
    del.forEach((r, i) => {
      assert.ok(r);
      common(e, 'delete', r, i);
      assert.equal(r.BARMAN_BACKUP_ID, B1);
      assert.equal(r.BARMAN_BACKUP_DIR, backupDir(e.srv, B1));
      assert.equal(r.BARMAN_BACKUP_INFO_PATH, target.infoFile);
      assert.equal(r.BARMAN_PREVIOUS_ID, '');
      assert.equal(r.BARMAN_NEXT_ID, B2);
      assert.equal(r.BARMAN_STATUS, DONE);
      assert.equal(r.BARMAN_ERROR, '');
    });
    for (let n = 1; n <= 3; n++) {
      const w = wals[n - 1];
      assert.ok(w);
      recs.slice(2 + (n - 1) * 4, 2 + n * 4).forEach((r, i) => {
        common(e, 'wal_delete', r, i);
        assert.equal(r.BARMAN_SEGMENT, w.name);
        assert.equal(r.BARMAN_FILE, walArchivePath(e.srv, w.name));
        assert.equal(r.EXISTS, i < 2 ? 'yes' : 'no', 'pre hooks run before the unlink, post hooks after');
        assert.equal(r.BARMAN_SIZE, String(w.size));
        assert.equal(r.BARMAN_TIMESTAMP, pyFloatStr(w.time ?? 0));
        assert.equal(r.BARMAN_COMPRESSION, w.compression ?? '');
        assert.equal(r.BARMAN_ERROR, '');
      });
    }
    assert.deepEqual((await readXlogDb(e.srv)).map((w) => w.name), [wal(4), wal(5)]);
  });

  it('with wal_delete hooks, each file goes before its xlog.db line (the order without hooks)', async () => {
    // Each hook records whether xlog.db still lists its segment: with files first, both the pre
    // and the post hook of every WAL see the line, so a kill between them leaves no file that
    // xlog.db forgot (the next delete or rebuild-xlogdb drops the lines of files already gone).
    const e = makeEnv((_dump, dir) => {
      const probe = `/bin/sh -c 'if grep -q "^$BARMAN_SEGMENT" ${dir}/home/pg/wals/xlog.db; then echo "$BARMAN_PHASE $BARMAN_SEGMENT listed"; else echo "$BARMAN_PHASE $BARMAN_SEGMENT gone"; fi >> ${dir}/order.log'`;
      return { pre_wal_delete_script: probe, post_wal_delete_script: probe };
    });
    await catalog(e);
    const result = await deleteBackup(e.srv, B1);
    assert.deepEqual(result.removedWals, [wal(1), wal(2), wal(3)]);
    const lines = fs.readFileSync(path.join(e.dir, 'order.log'), 'utf8').trim().split('\n');
    assert.deepEqual(lines, [1, 2, 3].flatMap((n) => [`pre ${wal(n)} listed`, `post ${wal(n)} listed`]));
    assert.deepEqual((await readXlogDb(e.srv)).map((w) => w.name), [wal(4), wal(5)]);
    for (let n = 1; n <= 3; n++) assert.ok(!fs.existsSync(walArchivePath(e.srv, wal(n))), `${wal(n)} removed`);
  });

  it('with wal_delete hooks, a file archived again while the hooks run keeps its xlog.db line', async () => {
    const e = makeEnv((_dump, dir) => {
      const again = path.join(dir, 'home', 'pg', 'wals', wal(1).slice(0, 16), wal(1));
      return { pre_wal_delete_script: `/bin/sh -c 'test "$BARMAN_SEGMENT" != ${wal(3)} || echo again > ${again}'` };
    });
    await catalog(e);
    const result = await deleteBackup(e.srv, B1);
    assert.deepEqual(result.removedWals, [wal(1), wal(2), wal(3)]);
    assert.ok(fs.existsSync(walArchivePath(e.srv, wal(1))), 'the file written again is there');
    assert.deepEqual((await readXlogDb(e.srv)).map((w) => w.name), [wal(1), wal(4), wal(5)], 'and still listed: xlog.db agrees with wals/');
  });

  it('63 from the pre delete retry script leaves the backup untouched', async () => {
    const e = makeEnv(() => ({ pre_delete_retry_script: 'exit 63' }));
    await catalog(e);
    await assert.rejects(deleteBackup(e.srv, B1), /pre_delete_retry_script asked to abort the deletion/);
    const [b1] = await loadCatalog(e.srv);
    assert.equal(b1?.info.status, DONE);
    assert.equal((await readXlogDb(e.srv)).length, 5);
  });

  it('63 from a pre wal_delete retry script stops the WAL removal and keeps the catalog of what is left', async () => {
    const e = makeEnv(() => ({ pre_wal_delete_retry_script: `test "$BARMAN_SEGMENT" != ${wal(2)} || exit 63` }));
    await catalog(e);
    await assert.rejects(deleteBackup(e.srv, B1), /pre_wal_delete_retry_script asked to abort the WAL deletion/);
    assert.ok(!fs.existsSync(walArchivePath(e.srv, wal(1))));
    assert.ok(fs.existsSync(walArchivePath(e.srv, wal(2))));
    assert.deepEqual((await readXlogDb(e.srv)).map((w) => w.name), [wal(2), wal(3), wal(4), wal(5)]);
  });
});
