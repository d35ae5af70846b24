/**
 * show-backup of rsync backups: what reuse_backup spared against a full copy. The console shows
 * it as Barman 3.4 does, `Incremental size: <deduplicated size> (-<1 − deduplicated/size>)`
 * right after `Disk usage: <size> (...)`; the JSON has 3.4's incremental_size* keys and 3.17's
 * resources_saved* (`size − deduplicated_size`; the cluster size is the reference of
 * incremental backups only). Synthetic catalog, no PostgreSQL.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { WAITING_FOR_WALS, type BackupInfo } from '../../src/catalog/backup-info.js';
import { pyDict, pyFloat } from '../../src/catalog/pyliteral.js';
import { addSyntheticBackup } from '../helpers/catalog-fixture.js';
import { makeCliFixture, type CliFixture } from '../helpers/cli-fixture.js';

const MiB = 1024 * 1024;
const ID = '20240101T100000';

async function fixture(extra: Partial<BackupInfo>): Promise<CliFixture> {
  const f = await makeCliFixture({
    prefix: 'barman-show-rsync-',
    global: { log_level: 'ERROR' },
    server: { conninfo: 'host=127.0.0.1 port=1 user=barman connect_timeout=5', backup_method: 'rsync', ssh_command: 'ssh pg' },
  });
  await addSyntheticBackup(f.srvDir, ID, {
    mode: 'rsync-concurrent',
    begin_offset: 40,
    end_offset: 256,
    // The cluster size differs on purpose: rsync backups are measured against `size`.
    cluster_size: 40 * MiB,
    size: 1_000_000,
    deduplicated_size: 13_900,
    copy_stats: pyDict({ copy_time: pyFloat(10), total_time: pyFloat(12), number_of_workers: 2 }),
    ...extra,
  });
  return f;
}

const rowOf = (out: string, label: string): string | undefined =>
  out.split('\n').find((l) => l.startsWith(`    ${label.padEnd(21)}: `))?.slice(4 + 21 + 2);

describe('show-backup: what rsync backups saved', () => {
  it('console: Incremental size with the saving as a negative percentage, right after Disk usage', async () => {
    const f = await fixture({});
    const r = await f.run('show-backup', 'pg', ID);
    assert.equal(r.code, 0, r.stderr);
    // 13 900 bytes = 13.6 KiB; 1 − 13 900 / 1 000 000 = 98.61 %.
    assert.equal(rowOf(r.stdout, 'Incremental size'), '13.6 KiB (-98.61%)');
    assert.match(rowOf(r.stdout, 'Disk usage') ?? '', /^976\.6 KiB \(/);
    const lines = r.stdout.split('\n');
    const at = (label: string) => lines.findIndex((l) => l.startsWith(`    ${label.padEnd(21)}:`));
    assert.equal(at('Incremental size'), at('Disk usage') + 1);
    assert.equal(at('Timeline'), at('Incremental size') + 1);
    // Barman 3.4 has no such rows.
    assert.equal(rowOf(r.stdout, 'Resources saved'), undefined);
    assert.equal(rowOf(r.stdout, 'Backup Method'), undefined);
  });

  it("JSON: 3.4's incremental_size* and 3.17's resources_saved*", async () => {
    const f = await fixture({});
    const r = await f.run('-f', 'json', 'show-backup', 'pg', ID);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as { pg: { backup_type: string; base_backup_information: Record<string, unknown> } };
    assert.equal(doc.pg.backup_type, 'rsync');
    const bb = doc.pg.base_backup_information;
    assert.equal(bb.incremental_size, '13.6 KiB');
    assert.equal(bb.incremental_size_bytes, 13_900);
    assert.equal(bb.incremental_size_ratio, '-98.61%');
    assert.equal(bb.resources_saved, '963.0 KiB');
    assert.equal(bb.resources_saved_bytes, 986_100);
    assert.equal(bb.resources_saved_percentage, '98.61%');
  });

  it('a backup that shares nothing saved -0.00%; WAITING_FOR_WALS backups show it too', async () => {
    const f = await fixture({ deduplicated_size: 1_000_000, status: WAITING_FOR_WALS });
    const r = await f.run('show-backup', 'pg', ID);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(rowOf(r.stdout, 'Incremental size'), '976.6 KiB (-0.00%)');
  });

  it('rsync-exclusive (and local-rsync) backups are rsync backups too', async () => {
    const f = await fixture({ mode: 'rsync-exclusive', size: 100 * MiB, deduplicated_size: 25 * MiB });
    const r = await f.run('-f', 'json', 'show-backup', 'pg', ID);
    assert.equal(r.code, 0, r.stderr);
    const bb = (JSON.parse(r.stdout) as { pg: { base_backup_information: Record<string, unknown> } }).pg.base_backup_information;
    assert.equal(bb.resources_saved, '75.0 MiB');
    assert.equal(bb.incremental_size_ratio, '-75.00%');
  });

  it('a backup without deduplicated_size has no Incremental size row and no resources_saved for full postgres backups', async () => {
    const f = await fixture({ mode: 'postgres', deduplicated_size: null });
    const r = await f.run('show-backup', 'pg', ID);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(rowOf(r.stdout, 'Incremental size'), undefined);
    const j = await f.run('-f', 'json', 'show-backup', 'pg', ID);
    const bb = (JSON.parse(j.stdout) as { pg: { base_backup_information: Record<string, unknown> } }).pg.base_backup_information;
    assert.equal('resources_saved' in bb, false);
    assert.equal('incremental_size' in bb, false);
  });
});
