/**
 * backup_manifest generation: the text layout and its checksum, proven by PostgreSQL's own
 * pg_verifybackup (a client program: no server needed), and the CLI's refusals.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { FAILED, type BackupInfo } from '../../src/catalog/backup-info.js';
import { manifestTimestamp, renderManifest } from '../../src/backup/manifest.js';
import { run } from '../../src/util/proc.js';
import { addSyntheticBackup } from '../helpers/catalog-fixture.js';
import { makeCliFixture, type CliFixture } from '../helpers/cli-fixture.js';

const PG_VERIFYBACKUP = '/usr/lib/postgresql/15/bin/pg_verifybackup';
const hasVerify = await fsp.access(PG_VERIFYBACKUP).then(
  () => true,
  () => false,
);

const ID = '20240101T100000';

async function addBackup(f: CliFixture, extra: Partial<BackupInfo> = {}): Promise<string> {
  const data = path.join(f.srvDir, 'base', ID, 'data');
  for (const d of ['global', 'base/1', 'pg_wal', 'pg_tblspc']) await fsp.mkdir(path.join(data, d), { recursive: true });
  await fsp.writeFile(path.join(data, 'PG_VERSION'), '15\n');
  await fsp.writeFile(path.join(data, 'global', 'pg_control'), Buffer.alloc(8192, 7));
  await fsp.writeFile(path.join(data, 'base', '1', '1259'), Buffer.alloc(3 * 8192, 1));
  await fsp.writeFile(path.join(data, 'backup_label'), 'START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n');
  // A tablespace stored beside the data directory, linked from pg_tblspc as pg_basebackup does.
  const ts = path.join(f.srvDir, 'base', ID, '16385');
  await fsp.mkdir(path.join(ts, 'PG_15_202209061', '5'), { recursive: true });
  await fsp.writeFile(path.join(ts, 'PG_15_202209061', '5', '16386'), 'tablespace data');
  await fsp.symlink(ts, path.join(data, 'pg_tblspc', '16385'));
  await addSyntheticBackup(f.srvDir, ID, extra);
  return data;
}

describe('renderManifest', () => {
  it('lays out files and WAL ranges one per line with a checksum of everything before the last line', () => {
    const text = renderManifest(
      [
        { path: 'b', size: 2, mtime: new Date(Date.UTC(2024, 0, 2, 3, 4, 5)), sha256: 'bb' },
        { path: 'a "quoted"', size: 1, mtime: new Date(0), sha256: 'aa' },
      ],
      [{ timeline: 1, startLsn: '0/2000028', endLsn: '0/2000100' }],
    );
    const lines = text.split('\n');
    assert.equal(lines[0], '{ "PostgreSQL-Backup-Manifest-Version": 1,');
    assert.match(lines[2] ?? '', /^\{ "Path": "a \\"quoted\\"", "Size": 1, "Last-Modified": "1970-01-01 00:00:00 GMT"/);
    assert.match(lines[3] ?? '', /"Path": "b".*"2024-01-02 03:04:05 GMT"/);
    const last = text.lastIndexOf('"Manifest-Checksum"');
    const expected = createHash('sha256').update(text.slice(0, last)).digest('hex');
    assert.ok(text.endsWith(`"Manifest-Checksum": "${expected}"}\n`));
    assert.doesNotThrow(() => JSON.parse(text));
  });

  it('formats timestamps as PostgreSQL does', () => {
    assert.equal(manifestTimestamp(new Date(Date.UTC(2026, 10, 30, 23, 59, 58, 999))), '2026-11-30 23:59:58 GMT');
  });
});

describe('generate-manifest and verify-backup (CLI)', () => {
  it('writes a manifest that pg_verifybackup accepts, and notices a damaged file', { skip: !hasVerify && 'pg_verifybackup not installed' }, async () => {
    const f = await makeCliFixture({ prefix: 'barman-manifest-', server: { conninfo: 'host=127.0.0.1 port=1', path_prefix: path.dirname(PG_VERIFYBACKUP) } });
    const data = await addBackup(f);
    const gen = await f.run('generate-manifest', 'pg', 'latest');
    assert.equal(gen.code, 0, gen.stderr);
    assert.match(gen.stdout, /Backup manifest for backup '20240101T100000' successfully generated for server pg \(5 files/);
    const manifest = JSON.parse(await fsp.readFile(path.join(data, 'backup_manifest'), 'utf8')) as { Files: { Path: string }[] };
    assert.deepEqual(
      manifest.Files.map((x) => x.Path),
      ['PG_VERSION', 'backup_label', 'base/1/1259', 'global/pg_control', 'pg_tblspc/16385/PG_15_202209061/5/16386'],
    );
    const direct = await run(PG_VERIFYBACKUP, ['--no-parse-wal', data]);
    assert.equal(direct.code, 0, direct.stderr);

    // No WALs in the archive: verified without WAL parsing, with a warning.
    const ok = await f.run('verify-backup', 'pg', ID);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stderr, /WAL parsing skipped/);

    const again = await f.run('generate-manifest', 'pg', ID);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^ERROR: backup 20240101T100000 of server pg already has a backup_manifest\n$/);

    await fsp.writeFile(path.join(data, 'base', '1', '1259'), Buffer.alloc(3 * 8192, 2));
    const bad = await f.run('verify', 'pg', ID);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^ERROR: verification of backup 20240101T100000 of server pg failed: .*checksum mismatch for file "base\/1\/1259"/);
  });

  it('refuses backups that are not DONE, and unknown backups, with one line and no file written', async () => {
    const f = await makeCliFixture({ prefix: 'barman-manifest-', server: { conninfo: 'host=127.0.0.1 port=1' } });
    const data = await addBackup(f, { status: FAILED });
    const r = await f.run('generate-manifest', 'pg', ID);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^ERROR: backup 20240101T100000 is FAILED: a manifest is generated for DONE backups only\n$/);
    await assert.rejects(fsp.access(path.join(data, 'backup_manifest')));
    const unknown = await f.run('verify-backup', 'pg', '20991231T000000');
    assert.equal(unknown.code, 1);
    assert.equal(unknown.stderr.split('\n').filter(Boolean).length, 1);
  });
});
