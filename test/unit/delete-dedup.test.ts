/**
 * `barman delete` of a backup whose files the next rsync backup hard-linked (reuse_backup =
 * link): the next backup's deduplicated_size is measured again, since the files it shared with
 * the deleted backup are now its own. Synthetic catalog with real hard links; no PostgreSQL.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { DONE, WAITING_FOR_WALS, readBackupInfoFile, type BackupInfo } from '../../src/catalog/backup-info.js';
import { treeSizes } from '../../src/util/fsutil.js';
import { addSyntheticBackup } from '../helpers/catalog-fixture.js';
import { makeCliFixture, type CliFixture } from '../helpers/cli-fixture.js';

const A = '20240101T100000';
const B = '20240102T100000';
const C = '20240103T100000';

function fixture(): Promise<CliFixture> {
  return makeCliFixture({
    prefix: 'barman-delete-dedup-',
    global: { log_level: 'ERROR' },
    server: { conninfo: 'host=127.0.0.1 port=1 user=barman connect_timeout=5', minimum_redundancy: '0', backup_method: 'rsync', ssh_command: 'ssh pg' },
  });
}

const infoFile = (f: CliFixture, id: string) => path.join(f.srvDir, 'base', id, 'backup.info');
const dataDir = (f: CliFixture, id: string) => path.join(f.srvDir, 'base', id, 'data');

/** Backups of day 1, 2, 3: rsync backups whose WAL is segment 2, 4, 6. */
async function writeInfo(f: CliFixture, id: string, extra: Partial<BackupInfo>): Promise<void> {
  await addSyntheticBackup(f.srvDir, id, { mode: 'rsync-concurrent', ...extra });
}

/**
 * A: two files of 1000 and 3000 bytes. B: links to both, plus its own 500-byte file.
 * Recorded sizes are what the backup measured then (B holds 500 bytes alone).
 */
async function linkedCatalog(f: CliFixture, opts: { bMode?: string; bStatus?: BackupInfo['status'] } = {}): Promise<void> {
  for (const id of [A, B]) await fsp.mkdir(dataDir(f, id), { recursive: true });
  await fsp.writeFile(path.join(dataDir(f, A), 'big'), Buffer.alloc(3000, 1));
  await fsp.writeFile(path.join(dataDir(f, A), 'small'), Buffer.alloc(1000, 2));
  await fsp.link(path.join(dataDir(f, A), 'big'), path.join(dataDir(f, B), 'big'));
  await fsp.link(path.join(dataDir(f, A), 'small'), path.join(dataDir(f, B), 'small'));
  await fsp.writeFile(path.join(dataDir(f, B), 'own'), Buffer.alloc(500, 3));
  await writeInfo(f, A, { size: 4000, deduplicated_size: 4000 });
  await writeInfo(f, B, { size: 4500, deduplicated_size: 500, mode: opts.bMode ?? 'rsync-concurrent', status: opts.bStatus ?? DONE });
}

describe('delete: sizes of the next rsync backup', () => {
  it('treeSizes counts every file in size and only single-link files in deduplicated', async () => {
    const f = await fixture();
    await linkedCatalog(f);
    const sizes = await treeSizes(dataDir(f, B));
    assert.deepEqual(sizes, { size: 4500, deduplicated: 500 });
  });

  it('recomputes and saves deduplicated_size of the next backup after the delete', async () => {
    const f = await fixture();
    await linkedCatalog(f);
    const before = await readBackupInfoFile(infoFile(f, B));
    assert.equal(before.deduplicated_size, 500);
    const r = await f.run('delete', 'pg', A);
    assert.equal(r.code, 0, r.stderr);
    await assert.rejects(fsp.access(path.join(f.srvDir, 'base', A)));
    const after = await readBackupInfoFile(infoFile(f, B));
    // The linked files now have one link: all of B is its own (backup.info itself included,
    // as when a backup measures its directory).
    const infoSize = (await fsp.stat(infoFile(f, B))).size;
    assert.ok(Math.abs((after.deduplicated_size ?? 0) - (4500 + infoSize)) <= 16, `deduplicated_size ${after.deduplicated_size}`);
    assert.equal(after.deduplicated_size, after.size);
    // Nothing else of the backup changed.
    assert.equal(after.status, DONE);
    assert.equal(after.begin_wal, before.begin_wal);
    assert.equal(after.mode, before.mode);
    // Atomic write: no temporary file left beside it; mode 0600.
    const names = await fsp.readdir(path.join(f.srvDir, 'base', B));
    assert.deepEqual(names.sort(), ['backup.info', 'data']);
    assert.equal((await fsp.stat(infoFile(f, B))).mode & 0o777, 0o600);
  });

  it('counts files still shared with a newer backup as shared', async () => {
    const f = await fixture();
    await linkedCatalog(f);
    // C links B's "big" (three names for that inode before the delete, two after).
    await fsp.mkdir(dataDir(f, C), { recursive: true });
    await fsp.link(path.join(dataDir(f, B), 'big'), path.join(dataDir(f, C), 'big'));
    await writeInfo(f, C, { size: 3000, deduplicated_size: 0 });
    const r = await f.run('delete', 'pg', A);
    assert.equal(r.code, 0, r.stderr);
    const after = await readBackupInfoFile(infoFile(f, B));
    const infoSize = (await fsp.stat(infoFile(f, B))).size;
    // small (1000) and own (500) are B's alone; big (3000) is still shared with C.
    assert.ok(Math.abs((after.deduplicated_size ?? 0) - (1500 + infoSize)) <= 16, `deduplicated_size ${after.deduplicated_size}`);
    // C is not the next backup of A: untouched.
    assert.equal((await readBackupInfoFile(infoFile(f, C))).deduplicated_size, 0);
  });

  it('also updates a next backup still WAITING_FOR_WALS', async () => {
    const f = await fixture();
    await linkedCatalog(f, { bStatus: WAITING_FOR_WALS });
    const r = await f.run('delete', 'pg', A);
    assert.equal(r.code, 0, r.stderr);
    const after = await readBackupInfoFile(infoFile(f, B));
    assert.equal(after.status, WAITING_FOR_WALS);
    assert.ok((after.deduplicated_size ?? 0) >= 4500);
  });

  it('leaves a next backup that is not an rsync backup alone', async () => {
    const f = await fixture();
    await linkedCatalog(f, { bMode: 'postgres' });
    const before = await fsp.readFile(infoFile(f, B), 'utf8');
    const r = await f.run('delete', 'pg', A);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await fsp.readFile(infoFile(f, B), 'utf8'), before);
  });
});
