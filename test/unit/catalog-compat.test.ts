/**
 * cron heals what barman-ts 0.1 wrote in a form Barman 3.4 refuses (catalog/compat.ts):
 * backup.info files with keys 3.4 does not know, xlog.db lines with a fifth column.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { loadConfig, type ServerConfig } from '../../src/config/config.js';
import { KEYS_NEWER_THAN_BARMAN_34 } from '../../src/catalog/backup-info.js';
import { backupExtrasFile, classicInfoFile, loadCatalog } from '../../src/catalog/catalog.js';
import { repairCatalogForBarman34 } from '../../src/catalog/compat.js';
import { serverPaths } from '../../src/catalog/server-dirs.js';

const made: string[] = [];
after(() => made.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

function server(): ServerConfig {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bts-compat-'));
  made.push(dir);
  const file = path.join(dir, 'barman.conf');
  fs.writeFileSync(file, `[barman]\nbarman_home = ${dir}/home\n[pg]\nconninfo = host=h user=u\nbackup_method = postgres\n`);
  const srv = loadConfig(file).servers.get('pg');
  assert.ok(srv);
  return srv;
}

/** A backup.info as barman-ts 0.1 wrote it: all 35 keys, `None` where unset. */
function v01Info(status: string, extra: Record<string, string> = {}): string {
  const fields: Record<string, string> = {
    backup_label: 'None', begin_offset: '40', begin_time: '2024-01-01 10:00:00+00:00', begin_wal: '000000010000000000000002',
    begin_xlog: '0/2000028', children_backup_ids: 'None', cluster_size: '31035392', compression: 'None', config_file: 'None',
    copy_stats: 'None', data_checksums: 'off', deduplicated_size: '100', encryption: 'None', end_offset: '256',
    end_time: '2024-01-01 10:05:00+00:00', end_wal: '000000010000000000000002', end_xlog: '0/2000100', error: 'None',
    hba_file: 'None', ident_file: 'None', included_files: 'None', mode: 'postgres', parent_backup_id: 'None', pgdata: '/srv/pg',
    server_name: 'pg', size: '100', status, summarize_wal: 'None', systemid: '7300000000000000001', tablespaces: 'None',
    timeline: '1', version: '150004', xlog_segment_size: '16777216', ...extra,
  };
  return Object.keys(fields).sort().map((k) => `${k}=${fields[k] ?? ''}\n`).join('');
}

function addRaw(srv: ServerConfig, id: string, text: string): string {
  const file = classicInfoFile(srv, id);
  fs.mkdirSync(path.join(path.dirname(file), 'data'), { recursive: true });
  fs.writeFileSync(file, text);
  return file;
}

const keysOf = (text: string) => text.split('\n').filter(Boolean).map((l) => l.split('=')[0] ?? '');

describe('repairCatalogForBarman34', () => {
  it("rewrites settled backups in 3.4's form, keeps the extras, leaves running and incremental ones alone", async () => {
    const srv = server();
    const done = addRaw(srv, '20240101T100000', v01Info('DONE'));
    const failed = addRaw(srv, '20240102T100000', v01Info('FAILED', { error: 'failure copying files (x)' }));
    const running = addRaw(srv, '20240103T100000', v01Info('STARTED'));
    const child = addRaw(srv, '20240104T100000', v01Info('DONE', { parent_backup_id: '20240101T100000' }));
    const before = { running: fs.readFileSync(running, 'utf8'), child: fs.readFileSync(child, 'utf8') };
    const result = await repairCatalogForBarman34(srv, await loadCatalog(srv));
    assert.deepEqual(result, { backups: ['20240101T100000', '20240102T100000'], xlogdb: false });
    for (const f of [done, failed]) {
      const keys = keysOf(fs.readFileSync(f, 'utf8'));
      for (const k of KEYS_NEWER_THAN_BARMAN_34) assert.ok(!keys.includes(k), `${f}: ${k}`);
      assert.equal(keys.length, 27);
    }
    assert.match(fs.readFileSync(failed, 'utf8'), /^error=failure copying files \(x\)$/m);
    assert.deepEqual(JSON.parse(fs.readFileSync(backupExtrasFile(srv, '20240101T100000'), 'utf8')), { cluster_size: 31035392, data_checksums: 'off' });
    assert.equal(fs.readFileSync(running, 'utf8'), before.running, 'a STARTED backup belongs to its process');
    assert.equal(fs.readFileSync(child, 'utf8'), before.child, 'an incremental backup needs its newer keys');
    // and the catalog still reads the same facts
    const again = await loadCatalog(srv);
    assert.equal(again[0]?.info.cluster_size, 31035392);
    // a second run has nothing to do
    assert.deepEqual(await repairCatalogForBarman34(srv, again), { backups: [], xlogdb: false });
  });

  it('rewrites an xlog.db whose lines have a fifth column for unencrypted WAL, keeps gpg lines at five', async () => {
    const srv = server();
    const p = serverPaths(srv);
    fs.mkdirSync(p.walsDir, { recursive: true });
    fs.writeFileSync(
      p.xlogdbFile,
      '000000010000000000000001\t10\t1.5\tgzip\tNone\n000000010000000000000002\t20\t2.5\tNone\tgpg\n000000010000000000000003\t30\t3.5\tNone\tNone\n',
    );
    const result = await repairCatalogForBarman34(srv, []);
    assert.equal(result.xlogdb, true);
    assert.equal(
      fs.readFileSync(p.xlogdbFile, 'utf8'),
      '000000010000000000000001\t10\t1.5\tgzip\n000000010000000000000002\t20\t2.5\tNone\tgpg\n000000010000000000000003\t30\t3.5\tNone\n',
    );
    fs.utimesSync(p.xlogdbFile, 1, 1);
    assert.equal((await repairCatalogForBarman34(srv, [])).xlogdb, false);
    assert.equal(fs.statSync(p.xlogdbFile).mtimeMs, 1000, 'a four-column catalog is not rewritten');
  });

  it('leaves a Barman >= 3.13 catalog (meta/) as that Barman wrote it', async () => {
    const srv = server();
    const file = addRaw(srv, '20240101T100000', v01Info('DONE'));
    fs.mkdirSync(path.join(srv.backup_directory, 'meta'), { recursive: true });
    const text = fs.readFileSync(file, 'utf8');
    assert.deepEqual(await repairCatalogForBarman34(srv, await loadCatalog(srv)), { backups: [], xlogdb: false });
    assert.equal(fs.readFileSync(file, 'utf8'), text);
  });
});

describe('a catalog written by a newer Barman', () => {
  it('is listed with a clear warning, refused for recovery, and its unknown fields survive a rewrite', async () => {
    const { makeCliFixture } = await import('../helpers/cli-fixture.js');
    const { addSyntheticBackup } = await import('../helpers/catalog-fixture.js');
    const f = await makeCliFixture({ prefix: 'bts-newer-', server: { conninfo: 'host=127.0.0.1 port=1 user=barman connect_timeout=2' } });
    const id = '20240105T100000';
    const dir = await addSyntheticBackup(f.srvDir, id, { status: 'WAITING_FOR_WALS' });
    const info = path.join(dir, 'backup.info');
    fs.appendFileSync(info, 'worm_retention_days=7\n');
    const list = await f.run('list-backups', 'pg');
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, new RegExp(`^pg ${id} `, 'm'));
    assert.match(list.stderr, /WARNING: Backup 20240105T100000 has backup.info fields of a newer Barman \(worm_retention_days\): barman-ts lists it but cannot restore it/);
    const dest = fs.mkdtempSync(path.join(os.tmpdir(), 'bts-newer-dest-'));
    made.push(dest);
    const rec = await f.run('recover', 'pg', id, path.join(dest, 'data'));
    assert.equal(rec.code, 1);
    assert.match(rec.stderr, /ERROR: .*Backup 20240105T100000 was written by a newer Barman \(backup.info fields worm_retention_days\)/);
    assert.equal(fs.existsSync(path.join(dest, 'data')), false, 'nothing restored');
    // keep refuses a backup that is not DONE; check-backup rewrites the status and keeps the field
    const segs = path.join(f.srvDir, 'wals', '0000000100000000');
    fs.mkdirSync(segs, { recursive: true });
    for (const n of ['00000001000000000000000A', '00000001000000000000000B']) fs.writeFileSync(path.join(segs, n), 'x');
    fs.writeFileSync(path.join(f.srvDir, 'wals', 'xlog.db'), '00000001000000000000000A\t1\t1.0\tNone\n00000001000000000000000B\t1\t1.0\tNone\n');
    const chk = await f.run('check-backup', 'pg', id);
    assert.equal(chk.code, 0, chk.stderr);
    const text = fs.readFileSync(info, 'utf8');
    assert.match(text, /^status=DONE$/m);
    assert.match(text, /^worm_retention_days=7$/m);
  });
});
