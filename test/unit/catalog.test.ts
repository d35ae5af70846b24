import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { loadConfig, type ServerConfig } from '../../src/config/config.js';
import { newBackupInfo, serializeBackupInfo, writeBackupInfoFile } from '../../src/catalog/backup-info.js';
import {
  backupExtrasFile,
  infoFileFor,
  loadCatalog,
  readBackupEntry,
  resolveBackupId,
  saveBackupInfo,
  validateBackupName,
  backupDataDir,
} from '../../src/catalog/catalog.js';
import { evaluateBackup } from '../../src/backup/check-backup.js';
import { basebackupArgs } from '../../src/backup/postgres-executor.js';
import { manifestWalRanges, parseBackupLabel } from '../../src/postgres/backup-label.js';

// Every temporary directory made here, removed when the file's tests are done.
const made: string[] = [];
after(() => made.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

function server(extra = ''): ServerConfig {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bts-cat-'));
  made.push(dir);
  const file = path.join(dir, 'barman.conf');
  fs.writeFileSync(file, `[barman]\nbarman_home = ${dir}/home\n[pg]\nconninfo = host=h user=u\nbackup_method = postgres\n${extra}`);
  const srv = loadConfig(file).servers.get('pg');
  assert.ok(srv);
  return srv;
}

async function addBackup(srv: ServerConfig, id: string, status: string, extra: Partial<Parameters<typeof newBackupInfo>[0]> = {}): Promise<void> {
  await saveBackupInfo(srv, id, newBackupInfo({ status, mode: 'postgres', ...extra }), { create: true });
}

describe('backup ID shortcuts and names', () => {
  it('resolves latest/last, oldest/first, last-failed, latest-full, names and IDs', async () => {
    const srv = server();
    await addBackup(srv, '20260101T000000', 'FAILED');
    await addBackup(srv, '20260102T000000', 'DONE', { backup_name: 'monday' });
    await addBackup(srv, '20260103T000000', 'WAITING_FOR_WALS');
    await addBackup(srv, '20260104T000000', 'FAILED');
    await addBackup(srv, '20260105T000000', 'STARTED');
    const cat = await loadCatalog(srv);
    assert.equal(cat.length, 5);
    const r = (a: string) => resolveBackupId(srv, cat, a).id;
    assert.equal(r('latest'), '20260103T000000');
    assert.equal(r('last'), '20260103T000000');
    assert.equal(r('oldest'), '20260102T000000');
    assert.equal(r('first'), '20260102T000000');
    assert.equal(r('last-failed'), '20260104T000000');
    assert.equal(r('latest-full'), '20260103T000000');
    assert.equal(r('monday'), '20260102T000000');
    assert.equal(r('20260105T000000'), '20260105T000000');
    assert.throws(() => r('failed'), /Unknown backup 'failed'/);
    assert.throws(() => r('20990101T000000'), /Unknown backup '20990101T000000' for server 'pg'/);
  });

  it('refuses ambiguous names and reserved names', async () => {
    const srv = server();
    await addBackup(srv, '20260101T000000', 'DONE', { backup_name: 'x' });
    await addBackup(srv, '20260102T000000', 'DONE', { backup_name: 'x' });
    const cat = await loadCatalog(srv);
    assert.throws(() => resolveBackupId(srv, cat, 'x'), /Multiple backups/);
    assert.throws(() => validateBackupName('latest'), /not allowed/);
    assert.throws(() => validateBackupName('20260101T000000'), /not allowed/);
    assert.doesNotThrow(() => validateBackupName('nightly'));
  });

  it('reports no available backups clearly', async () => {
    const srv = server();
    assert.throws(() => resolveBackupId(srv, [], 'latest'), /There are no available backups for server 'pg'/);
  });
});

describe('catalog layouts', () => {
  it('reads meta/<id>-backup.info over base/<id>/backup.info and writes back where it read', async () => {
    const srv = server();
    const id = '20260101T000000';
    await addBackup(srv, id, 'DONE', { backup_name: 'classic' });
    const meta = path.join(srv.backup_directory, 'meta');
    fs.mkdirSync(meta, { recursive: true });
    await writeBackupInfoFile(path.join(meta, `${id}-backup.info`), newBackupInfo({ status: 'DONE', backup_name: 'meta' }));
    const cat = await loadCatalog(srv);
    assert.equal(cat[0]?.info.backup_name, 'meta');
    assert.equal(infoFileFor(srv, id), path.join(meta, `${id}-backup.info`));
  });

  it('writes the classic layout with 0600 files in 0700 directories', async () => {
    const srv = server();
    const file = await saveBackupInfo(srv, '20260101T000000', newBackupInfo({ status: 'DONE' }), { create: true });
    assert.equal(file, path.join(srv.basebackups_directory, '20260101T000000', 'backup.info'));
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.equal(fs.statSync(path.dirname(file)).mode & 0o777, 0o700);
    assert.equal(fs.readFileSync(file, 'utf8'), serializeBackupInfo(newBackupInfo({ status: 'DONE' })));
  });

  it('skips an unreadable backup.info with a problem note', async () => {
    const srv = server();
    await addBackup(srv, '20260101T000000', 'DONE');
    fs.mkdirSync(path.join(srv.basebackups_directory, '20260102T000000'), { recursive: true });
    fs.writeFileSync(path.join(srv.basebackups_directory, '20260102T000000', 'backup.info'), 'status=DONE\nsize=1.5\n');
    const problems: string[] = [];
    const cat = await loadCatalog(srv, problems);
    assert.equal(cat.length, 1);
    assert.match(problems[0] ?? '', /20260102T000000/);
  });

  it("keeps what Barman 3.4's backup.info cannot hold in .barman-ts/backup.json and reads it back", async () => {
    const srv = server();
    const id = '20260101T000000';
    const file = await saveBackupInfo(srv, id, newBackupInfo({ status: 'DONE', mode: 'postgres', cluster_size: 4096, data_checksums: 'on' }), { create: true });
    const text = fs.readFileSync(file, 'utf8');
    assert.doesNotMatch(text, /^(cluster_size|data_checksums|summarize_wal|children_backup_ids|parent_backup_id|encryption)=/m);
    const extras = backupExtrasFile(srv, id);
    assert.equal(extras, path.join(srv.basebackups_directory, id, '.barman-ts', 'backup.json'));
    assert.deepEqual(JSON.parse(fs.readFileSync(extras, 'utf8')), { cluster_size: 4096, data_checksums: 'on' });
    assert.equal(fs.statSync(extras).mode & 0o777, 0o600);
    assert.equal(fs.statSync(path.dirname(extras)).mode & 0o777, 0o700);
    const [entry] = await loadCatalog(srv);
    assert.equal(entry?.info.cluster_size, 4096);
    assert.equal(entry?.info.data_checksums, 'on');
    assert.equal(entry?.info.summarize_wal, null);
    const again = await readBackupEntry(srv, id);
    assert.equal(again?.info.cluster_size, 4096);
    // an unchanged set is not written again
    const before = fs.statSync(extras).mtimeMs;
    fs.utimesSync(extras, 1, 1);
    assert.ok(again);
    await saveBackupInfo(srv, id, { ...again.info, status: 'FAILED' });
    assert.equal(fs.statSync(extras).mtimeMs, 1000);
    assert.ok(before > 1000);
  });

  it('an incremental backup keeps the newer keys in backup.info itself; no extras file', async () => {
    const srv = server();
    const id = '20260102T000000';
    const file = await saveBackupInfo(srv, id, newBackupInfo({ status: 'DONE', mode: 'postgres', cluster_size: 4096, parent_backup_id: '20260101T000000' }), { create: true });
    assert.match(fs.readFileSync(file, 'utf8'), /^cluster_size=4096$/m);
    assert.equal(fs.existsSync(backupExtrasFile(srv, id)), false);
  });

  it('an extras file that is not JSON, or holds wrong types, is ignored', async () => {
    const srv = server();
    await addBackup(srv, '20260101T000000', 'DONE');
    await addBackup(srv, '20260102T000000', 'DONE');
    fs.mkdirSync(path.dirname(backupExtrasFile(srv, '20260101T000000')));
    fs.writeFileSync(backupExtrasFile(srv, '20260101T000000'), '{not json');
    fs.mkdirSync(path.dirname(backupExtrasFile(srv, '20260102T000000')));
    fs.writeFileSync(backupExtrasFile(srv, '20260102T000000'), '{"cluster_size": "big", "data_checksums": 1}');
    const cat = await loadCatalog(srv);
    assert.deepEqual(cat.map((e) => [e.info.cluster_size, e.info.data_checksums]), [[null, null], [null, null]]);
  });

  it('never creates base/<id>/ for the extras of a backup whose directory is gone', async () => {
    const srv = server();
    const id = '20260101T000000';
    const meta = path.join(srv.backup_directory, 'meta');
    fs.mkdirSync(meta, { recursive: true });
    fs.writeFileSync(path.join(meta, `${id}-backup.info`), 'status=DONE\n');
    await saveBackupInfo(srv, id, newBackupInfo({ status: 'FAILED', cluster_size: 1 }));
    assert.equal(fs.existsSync(path.join(srv.basebackups_directory, id)), false);
  });

  it('knows layout v1 and v2 data directories', () => {
    const srv = server();
    const id = '20260101T000000';
    assert.equal(backupDataDir(srv, id), path.join(srv.basebackups_directory, id, 'data'));
    assert.equal(backupDataDir(srv, id, 16385), path.join(srv.basebackups_directory, id, '16385'));
    fs.mkdirSync(path.join(srv.basebackups_directory, id, 'pgdata'), { recursive: true });
    assert.equal(backupDataDir(srv, id, 16385), path.join(srv.basebackups_directory, id, 'pgdata', 'pg_tblspc', '16385'));
  });
});

describe('check-backup decisions', () => {
  const seg = (n: number) => `0000000100000000000000${n.toString(16).toUpperCase().padStart(2, '0')}`;
  const archive = (srv: ServerConfig, n: number) => {
    const d = path.join(srv.wals_directory, '0000000100000000');
    fs.mkdirSync(d, { recursive: true });
    fs.writeFileSync(path.join(d, seg(n)), 'x');
  };
  const waiting = () => newBackupInfo({ status: 'WAITING_FOR_WALS', begin_wal: seg(2), end_wal: seg(4), timeline: 1, version: 150000 });

  it('stays WAITING_FOR_WALS while the end WAL is not archived', async () => {
    const srv = server();
    assert.equal((await evaluateBackup(srv, waiting())).status, 'WAITING_FOR_WALS');
    archive(srv, 2);
    archive(srv, 3);
    assert.equal((await evaluateBackup(srv, waiting())).status, 'WAITING_FOR_WALS');
  });

  it('becomes DONE when begin..end are all archived', async () => {
    const srv = server();
    for (const n of [2, 3, 4]) archive(srv, n);
    assert.equal((await evaluateBackup(srv, waiting())).status, 'DONE');
  });

  it('fails when a needed WAL is missing while later ones exist', async () => {
    const srv = server();
    for (const n of [2, 4, 5]) archive(srv, n);
    const res = await evaluateBackup(srv, waiting());
    assert.equal(res.status, 'FAILED');
    assert.equal(res.error, `At least one WAL file is missing. The first missing WAL file is ${seg(3)}`);
  });

  it('leaves DONE and FAILED backups alone', async () => {
    const srv = server();
    assert.equal((await evaluateBackup(srv, newBackupInfo({ status: 'FAILED', begin_wal: seg(2), end_wal: seg(2), timeline: 1 }))).status, 'FAILED');
  });
});

describe('pg_basebackup invocation', () => {
  it('plain format, no WAL, tablespaces mapped, application_name set', () => {
    const srv = server('streaming_conninfo = host=h user=s\n');
    const { args, format } = basebackupArgs(
      { srv, destDir: '/b/base/ID', tablespaces: [{ name: 'ts', oid: 16400, location: '/srv/ts' }], immediateCheckpoint: true, label: 'lbl' },
      false,
    );
    assert.equal(format, 'plain');
    assert.ok(args.includes('--dbname=host=h user=s application_name=barman_streaming_backup'));
    assert.ok(args.includes('--wal-method=none'));
    assert.ok(args.includes('--checkpoint=fast'));
    assert.ok(args.includes('--tablespace-mapping=/srv/ts=/b/base/ID/16400'));
    assert.ok(args.includes('--pgdata=/b/base/ID/data'));
  });

  it('compression settings become --compress and tar format', () => {
    const srv = server('backup_compression = zstd\nbackup_compression_level = 3\nbackup_compression_workers = 2\nbackup_compression_location = server\n');
    const { args, format, compression } = basebackupArgs({ srv, destDir: '/d', tablespaces: [], immediateCheckpoint: false, label: 'l' }, false);
    assert.equal(format, 'tar');
    assert.equal(compression, 'zstd');
    assert.ok(args.includes('--compress=server-zstd:level=3,workers=2'));
    assert.ok(args.includes('--checkpoint=spread'));
  });

  it('refuses plain compressed format on the client', () => {
    const srv = server('backup_compression = gzip\nbackup_compression_format = plain\n');
    assert.throws(() => basebackupArgs({ srv, destDir: '/d', tablespaces: [], immediateCheckpoint: false, label: 'l' }, false), /location = server/);
  });
});

describe('backup_label and backup_manifest', () => {
  it('reads the start of the backup', () => {
    const l = parseBackupLabel(
      'START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\nCHECKPOINT LOCATION: 0/5000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-11-22 10:00:00 UTC\nLABEL: barman\nSTART TIMELINE: 1\n',
    );
    assert.deepEqual(l, { startLsn: '0/5000028', startWal: '000000010000000000000005', checkpointLsn: '0/5000060', startTime: '2026-11-22 10:00:00 UTC', timeline: 1, label: 'barman' });
    assert.throws(() => parseBackupLabel('garbage'), /START WAL LOCATION/);
  });

  it('reads the WAL range of a manifest', () => {
    const m = JSON.stringify({ 'PostgreSQL-Backup-Manifest-Version': 1, Files: [], 'WAL-Ranges': [{ Timeline: 1, 'Start-LSN': '0/5000028', 'End-LSN': '0/5000100' }] });
    assert.deepEqual(manifestWalRanges(m), [{ timeline: 1, startLsn: '0/5000028', endLsn: '0/5000100' }]);
    assert.throws(() => manifestWalRanges('{'), /not valid JSON/);
  });
});
