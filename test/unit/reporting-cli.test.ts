/**
 * list-backups, show-backup, status, show-servers, delete and check-backup through the real CLI
 * (`node bin/barman.js -c CONF ...`) against a synthetic catalog in a temporary barman_home.
 * PostgreSQL is not needed: conninfo points at a port where nothing listens.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { DONE, FAILED, STARTED, WAITING_FOR_WALS, newBackupInfo, readBackupInfoFile, writeBackupInfoFile, type BackupInfo } from '../../src/catalog/backup-info.js';
import type { BackupEntry } from '../../src/catalog/catalog.js';
import { DELETE_IN_PROGRESS_ERROR, decideWalCleanup, selectWalsToRemove } from '../../src/catalog/delete.js';
import { pyDict, pyFloat } from '../../src/catalog/pyliteral.js';
import { PyDateTime } from '../../src/util/pytime.js';
import { walName } from '../../src/wal/names.js';
import { addSyntheticBackup } from '../helpers/catalog-fixture.js';
import { makeCliFixture, type CliFixture } from '../helpers/cli-fixture.js';

const MiB = 1024 * 1024;
/** 2024-01-01 10:00:00 UTC */
const T0 = 1704103200;

type Fixture = CliFixture;

function makeFixture(serverOptions: Record<string, string> = {}): Promise<Fixture> {
  return makeCliFixture({
    prefix: 'barman-reporting-',
    global: { log_level: 'ERROR' },
    server: { description: '"Reporting test"', conninfo: 'host=127.0.0.1 port=1 user=barman password=secret connect_timeout=5', minimum_redundancy: '0', ...serverOptions },
  });
}

const utc = (day: number, hour: number, minute: number, second = 0) => PyDateTime.fromFields({ year: 2024, month: 1, day, hour, minute, second }, 0);

async function addBackup(f: Fixture, id: string, begin: number | null, end: number | null, extra: Partial<BackupInfo> = {}): Promise<void> {
  const day = Number(id.slice(6, 8));
  const dir = await addSyntheticBackup(f.srvDir, id, {
    version: 160002,
    systemid: '7300000000000000001',
    begin_wal: begin === null ? null : walName(1, 0, begin),
    end_wal: end === null ? null : walName(1, 0, end),
    begin_offset: 40,
    end_offset: 312,
    begin_xlog: begin === null ? null : `0/${begin.toString(16).toUpperCase()}000028`,
    end_xlog: end === null ? null : `0/${end.toString(16).toUpperCase()}000138`,
    begin_time: utc(day, 10, 0),
    end_time: utc(day, 10, 5),
    size: 10 * MiB,
    deduplicated_size: 10 * MiB,
    cluster_size: 40 * MiB,
    data_checksums: 'on',
    copy_stats: pyDict({ copy_time: pyFloat(250), analysis_time: pyFloat(2), total_time: pyFloat(252) }),
    ...extra,
  });
  await fsp.writeFile(path.join(dir, 'data', 'PG_VERSION'), '16\n');
}

/** WAL segments 1..n of timeline 1 (1 MiB each on disk, gzip), archived one a minute from T0. */
async function addWals(f: Fixture, segs: number[], extraLines: { name: string; content: string; line: string }[] = []): Promise<void> {
  const hash = path.join(f.srvDir, 'wals', '0000000100000000');
  await fsp.mkdir(hash, { recursive: true });
  let db = '';
  for (const n of segs) {
    const name = walName(1, 0, n);
    await fsp.writeFile(path.join(hash, name), 'wal');
    db += `${name}\t${MiB}\t${T0 + n * 60}.0\tgzip\n`;
    for (const x of extraLines.filter((e) => e.name.startsWith(name) && e.name !== name)) {
      await fsp.writeFile(path.join(hash, x.name), x.content);
      db += x.line;
    }
  }
  for (const x of extraLines.filter((e) => e.name.endsWith('.history'))) {
    await fsp.writeFile(path.join(f.srvDir, 'wals', x.name), x.content);
    db += x.line;
  }
  await fsp.writeFile(path.join(f.srvDir, 'wals', 'xlog.db'), db);
}

/**
 * The standard catalog: two DONE backups, a FAILED one between them, a newest one
 * WAITING_FOR_WALS (its end WAL, 9, is not archived yet); WALs 1..8.
 */
async function standardFixture(serverOptions: Record<string, string> = {}): Promise<Fixture> {
  const f = await makeFixture(serverOptions);
  await addBackup(f, '20240101T100000', 2, 3);
  await addBackup(f, '20240102T100000', 4, null, { status: FAILED, error: 'failure copying files (connection lost)', end_time: null });
  await addBackup(f, '20240103T100000', 6, 6, { backup_name: 'weekly', size: 20 * MiB, deduplicated_size: 20 * MiB });
  await addBackup(f, '20240104T100000', 8, 9, { status: WAITING_FOR_WALS, size: MiB, deduplicated_size: MiB });
  await addWals(f, [1, 2, 3, 4, 5, 6, 7, 8]);
  return f;
}

/** Every file under `dir` with its content (to prove that nothing changed). */
async function snapshot(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string) => {
    for (const e of await fsp.readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        out.set(`${p}/`, '');
        await walk(p);
      } else out.set(p, await fsp.readFile(p, 'latin1'));
    }
  };
  await walk(dir);
  return out;
}

const lines = (text: string) => text.replace(/\n$/, '').split('\n');

describe('list-backups', () => {
  it("lists newest first in Barman 3.4's shape: end time, sizes and the WAITING_FOR_WALS marker", async () => {
    const f = await standardFixture();
    const r = await f.run('list-backups', 'pg');
    assert.equal(r.stderr, '');
    assert.equal(r.code, 0);
    assert.deepEqual(lines(r.stdout), [
      'pg 20240104T100000 - Thu Jan  4 10:05:00 2024 - Size: 2.0 MiB - WAL Size: 0 B - WAITING_FOR_WALS',
      "pg 20240103T100000 'weekly' - Wed Jan  3 10:05:00 2024 - Size: 21.0 MiB - WAL Size: 2.0 MiB",
      'pg 20240102T100000 - FAILED',
      'pg 20240101T100000 - Mon Jan  1 10:05:00 2024 - Size: 12.0 MiB - WAL Size: 3.0 MiB',
    ]);
  });

  it('prints only the IDs with --minimal, and accepts the alias and `all`', async () => {
    const f = await standardFixture();
    const r = await f.run('list-backup', 'all', '--minimal');
    assert.equal(r.code, 0);
    assert.deepEqual(lines(r.stdout), ['20240104T100000', '20240103T100000', '20240102T100000', '20240101T100000']);
  });

  it('has the JSON shape of the spec', async () => {
    const f = await standardFixture();
    const r = await f.run('-f', 'json', 'list-backups', 'pg');
    assert.equal(r.code, 0);
    const doc = JSON.parse(r.stdout) as Record<string, unknown[]>;
    assert.deepEqual(Object.keys(doc), ['pg']);
    assert.deepEqual(doc.pg, [
      {
        backup_id: '20240104T100000',
        backup_type: 'full',
        end_time: 'Thu Jan  4 10:05:00 2024',
        end_time_timestamp: String(T0 + 3 * 86400 + 300),
        retention_status: '-',
        size: '2.0 MiB',
        size_bytes: 2 * MiB,
        status: 'WAITING_FOR_WALS',
        tablespaces: [],
        wal_size: '0 B',
        wal_size_bytes: 0,
      },
      {
        backup_id: '20240103T100000',
        backup_name: 'weekly',
        backup_type: 'full',
        end_time: 'Wed Jan  3 10:05:00 2024',
        end_time_timestamp: String(T0 + 2 * 86400 + 300),
        retention_status: '-',
        size: '21.0 MiB',
        size_bytes: 21 * MiB,
        status: 'DONE',
        tablespaces: [],
        wal_size: '2.0 MiB',
        wal_size_bytes: 2 * MiB,
      },
      { backup_id: '20240102T100000', backup_type: 'full', status: 'FAILED' },
      {
        backup_id: '20240101T100000',
        backup_type: 'full',
        end_time: 'Mon Jan  1 10:05:00 2024',
        end_time_timestamp: String(T0 + 300),
        retention_status: '-',
        size: '12.0 MiB',
        size_bytes: 12 * MiB,
        status: 'DONE',
        tablespaces: [],
        wal_size: '3.0 MiB',
        wal_size_bytes: 3 * MiB,
      },
    ]);
  });

  it('reports an unknown server as one error line and exit 1', async () => {
    const f = await standardFixture();
    const r = await f.run('list-backups', 'nope');
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, "ERROR: Unknown server 'nope'\n");
  });
});

describe('show-backup', () => {
  it('shows every section of a DONE backup', async () => {
    const f = await standardFixture();
    const r = await f.run('show-backup', 'pg', 'oldest');
    assert.equal(r.stderr, '');
    assert.equal(r.code, 0);
    assert.deepEqual(lines(r.stdout), [
      'Backup 20240101T100000:',
      '  Server Name            : pg',
      '  System Id              : 7300000000000000001',
      '  Status                 : DONE',
      '  PostgreSQL Version     : 160002',
      '  PGDATA directory       : /srv/pgdata',
      '  Estimated Cluster Size : 40.0 MiB',
      '',
      '  Server information:',
      '    Checksums            : on',
      '',
      '  Base backup information:',
      '    Disk usage           : 10.0 MiB (12.0 MiB with WALs)',
      '    Incremental size     : 10.0 MiB (-0.00%)',
      '    Timeline             : 1',
      '    Begin WAL            : 000000010000000000000002',
      '    End WAL              : 000000010000000000000003',
      '    WAL number           : 2',
      '    WAL compression ratio: 93.75%',
      '    Begin time           : 2024-01-01 10:00:00+00:00',
      '    End time             : 2024-01-01 10:05:00+00:00',
      '    Copy time            : 4 minutes, 10 seconds + 2 seconds startup',
      '    Estimated throughput : 41.0 KiB/s',
      '    Begin Offset         : 40',
      '    End Offset           : 312',
      '    Begin LSN            : 0/2000028',
      '    End LSN              : 0/3000138',
      '',
      '  WAL information:',
      '    No of files          : 3',
      '    Disk usage           : 3.0 MiB',
      '    WAL rate             : 75.00/hour',
      '    Compression ratio    : 93.75%',
      '    Last available       : 000000010000000000000006',
      '',
      '  Catalog information:',
      '    Retention Policy     : not enforced',
      '    Previous Backup      : - (this is the oldest base backup)',
      '    Next Backup          : 20240103T100000',
    ]);
  });

  it('shows the backup name and the neighbours of a middle backup', async () => {
    const f = await standardFixture();
    const r = await f.run('show-backups', 'pg', 'weekly');
    assert.equal(r.code, 0);
    const out = lines(r.stdout);
    assert.equal(out[0], 'Backup 20240103T100000:');
    assert.equal(out[1], '  Backup Name            : weekly');
    assert.ok(out.includes('    Previous Backup      : 20240101T100000'));
    assert.ok(out.includes('    Next Backup          : 20240104T100000'));
  });

  it('ends a FAILED backup after the top rows with its error', async () => {
    const f = await standardFixture();
    const r = await f.run('show-backup', 'pg', 'last-failed');
    assert.equal(r.code, 0);
    assert.deepEqual(lines(r.stdout), [
      'Backup 20240102T100000:',
      '  Server Name            : pg',
      '  System Id              : 7300000000000000001',
      '  Status                 : FAILED',
      '  Error                  : failure copying files (connection lost)',
    ]);
  });

  it('has the JSON shape of the spec', async () => {
    const f = await standardFixture();
    const r = await f.run('-f', 'json', 'show-backup', 'pg', '20240101T100000');
    assert.equal(r.code, 0);
    const doc = JSON.parse(r.stdout) as { pg: Record<string, Record<string, unknown>> };
    const b = doc.pg;
    assert.equal(b.backup_id as unknown, '20240101T100000');
    assert.equal(b.status as unknown, 'DONE');
    assert.equal(b.system_id as unknown, '7300000000000000001');
    assert.equal(b.postgresql_version as unknown, 160002);
    assert.equal(b.cluster_size_bytes as unknown, 40 * MiB);
    assert.deepEqual(b.server_information, { data_checksums: 'on', summarize_wal: null });
    const bb = b.base_backup_information ?? {};
    assert.equal(bb.disk_usage_bytes, 10 * MiB);
    assert.equal(bb.disk_usage_with_wals_bytes, 12 * MiB);
    assert.equal(bb.incremental_size_ratio, '-0.00%');
    assert.equal(bb.analysis_time, '2 seconds');
    assert.equal(bb.analysis_time_seconds, 2);
    assert.equal(bb.backup_size_bytes, 10 * MiB);
    assert.equal(bb.backup_size_with_wals_bytes, 12 * MiB);
    assert.equal(bb.wal_num, 2);
    assert.equal(bb.begin_time, '2024-01-01 10:00:00+00:00');
    assert.equal(bb.begin_time_timestamp, String(T0));
    assert.equal(bb.copy_time_seconds, 250);
    assert.equal(bb.begin_lsn, '0/2000028');
    assert.deepEqual(b.catalog_information, {
      retention_policy: 'not enforced',
      previous_backup: '- (this is the oldest base backup)',
      next_backup: '20240103T100000',
    });
    assert.equal(b.wal_information?.no_of_files, 3);
    assert.equal(b.wal_information?.disk_usage_bytes, 3 * MiB);
    assert.equal(b.wal_information?.last_available, walName(1, 0, 6));
    assert.equal(b.wal_information?.compression_ratio, '93.75%');
    assert.equal(b.wal_information?.wal_rate, '75.00/hour');
  });

  it('answers an unknown backup ID with one ERROR line and exit 1', async () => {
    const f = await standardFixture();
    for (const cmd of ['show-backup', 'delete', 'check-backup']) {
      const r = await f.run(cmd, 'pg', '20990101T000000');
      assert.equal(r.code, 1, cmd);
      assert.equal(r.stdout, '', cmd);
      assert.equal(r.stderr, "ERROR: Unknown backup '20990101T000000' for server 'pg'\n", cmd);
    }
  });

  it("refuses 'all' as the server", async () => {
    const f = await standardFixture();
    const r = await f.run('show-backup', 'all', 'latest');
    assert.equal(r.code, 1);
    assert.equal(r.stderr, "ERROR: You cannot use 'all' in a single server context\n");
  });
});

describe('status', () => {
  it('works while PostgreSQL is down', async () => {
    const f = await standardFixture({ minimum_redundancy: '1' });
    const r = await f.run('status', 'pg');
    assert.equal(r.stderr, '');
    assert.equal(r.code, 0);
    assert.deepEqual(lines(r.stdout), [
      'Server pg:',
      '\tDescription: Reporting test',
      '\tActive: True',
      '\tDisabled: False',
      '\tPostgreSQL version: FAILED trying to get PostgreSQL version',
      '\tPassive node: False',
      '\tRetention policies: not enforced',
      '\tNo. of available backups: 2',
      '\tFirst available backup: 20240101T100000',
      '\tLast available backup: 20240103T100000',
      '\tMinimum redundancy requirements: satisfied (2/1)',
    ]);
  });

  it('reports the retention policy and failed minimum redundancy, in JSON too', async () => {
    const f = await standardFixture({ minimum_redundancy: '3', retention_policy: 'REDUNDANCY 2' });
    const r = await f.run('-f', 'json', 'status', 'pg');
    assert.equal(r.code, 0);
    const doc = JSON.parse(r.stdout) as { pg: Record<string, { description: string; message: string }> };
    assert.deepEqual(doc.pg.minimum_redundancy, { description: 'Minimum redundancy requirements', message: 'FAILED (2/3)' });
    assert.deepEqual(doc.pg.retention_policies, {
      description: 'Retention policies',
      message: 'enforced (mode: auto, retention: REDUNDANCY 2, WAL retention: MAIN)',
    });
    assert.equal(doc.pg.pg_version?.message, 'FAILED trying to get PostgreSQL version');
  });
});

describe('show-servers', () => {
  it('prints every key sorted, with passwords redacted', async () => {
    const f = await standardFixture();
    const r = await f.run('show-server', 'pg');
    assert.equal(r.code, 0);
    const out = lines(r.stdout);
    assert.equal(out[0], 'Server pg:');
    const keys = out.slice(1).map((l) => /^\t([a-z_]+): /.exec(l)?.[1] ?? `BAD LINE ${l}`);
    assert.deepEqual(keys, [...keys].sort());
    assert.ok(out.includes('\tconninfo: host=127.0.0.1 port=1 user=barman password=*REDACTED* connect_timeout=5'));
    assert.ok(out.includes(`\tbackup_directory: ${f.srvDir}`));
    assert.ok(out.includes('\tminimum_redundancy: 0'));
    assert.ok(out.includes('\tpassive_node: False'));
    assert.ok(out.includes('\tdescription: Reporting test'));
    assert.ok(!r.stdout.includes('secret'));
    const j = await f.run('-f', 'json', 'show-servers', 'pg');
    const doc = JSON.parse(j.stdout) as { pg: Record<string, unknown> };
    assert.equal(doc.pg.backup_method, 'postgres');
    assert.equal(doc.pg.minimum_redundancy, 0);
    assert.ok(!j.stdout.includes('secret'));
    // Barman 3.4's fixed attributes and its view of a PostgreSQL that does not answer.
    assert.equal(doc.pg.name, 'pg');
    assert.equal(doc.pg.disabled, false);
    assert.deepEqual(doc.pg.msg_list, []);
    assert.equal(doc.pg.reuse_backup, null);
    assert.equal(doc.pg.backup_options, "BackupOptions({'concurrent_backup'})");
    assert.equal(doc.pg.recovery_options, 'RecoveryOptions()');
    assert.equal(doc.pg.wal_retention_policy, 'main');
    assert.equal(doc.pg.last_backup_maximum_age, 'None');
    for (const k of ['server_txt_version', 'postgres_systemid', 'current_xlog', 'streaming', 'xlogpos', 'archive_mode']) assert.equal(doc.pg[k], null, k);
    assert.equal(typeof doc.pg.connection_error, 'string');
    assert.equal(doc.pg.pg_basebackup_installed, true);
    assert.match(String(doc.pg.pg_basebackup_version), /^\d+\.\d+/);
  });
});

describe('delete', () => {
  it('deletes the oldest backup and the WALs before the next backup', async () => {
    const f = await makeFixture();
    await addBackup(f, '20240101T100000', 2, 3);
    await addBackup(f, '20240102T100000', 4, null, { status: FAILED, end_time: null });
    await addBackup(f, '20240103T100000', 6, 6);
    const label = `${walName(1, 0, 2)}.00000028.backup`;
    await addWals(f, [1, 2, 3, 4, 5, 6, 7], [
      { name: label, content: 'label', line: `${label}\t250\t${T0 + 121}.0\tNone\n` },
      { name: '00000002.history', content: '1\t0/7000000\tno recovery target specified\n', line: `00000002.history\t42\t${T0 + 500}.0\tNone\n` },
    ]);
    const r = await f.run('delete', 'pg', 'oldest');
    assert.equal(r.stderr, '');
    assert.equal(r.code, 0);
    const out = lines(r.stdout);
    assert.deepEqual(out.slice(0, -1), [
      'Deleting backup 20240101T100000 for server pg',
      'Delete associated WAL segments:',
      `\t${walName(1, 0, 1)}`,
      `\t${walName(1, 0, 2)}`,
      `\t${label}`,
      `\t${walName(1, 0, 3)}`,
      `\t${walName(1, 0, 4)}`,
      `\t${walName(1, 0, 5)}`,
    ]);
    assert.match(out.at(-1) ?? '', /^Deleted backup 20240101T100000 \(start time: \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}, elapsed time: (less than one second|\d+ seconds?)\)$/);

    const hash = path.join(f.srvDir, 'wals', '0000000100000000');
    assert.deepEqual((await fsp.readdir(hash)).sort(), [walName(1, 0, 6), walName(1, 0, 7)]);
    assert.deepEqual(await fsp.readFile(path.join(f.srvDir, 'wals', 'xlog.db'), 'utf8'), [
      `${walName(1, 0, 6)}\t${MiB}\t${T0 + 360}.0\tgzip\n`,
      `${walName(1, 0, 7)}\t${MiB}\t${T0 + 420}.0\tgzip\n`,
      `00000002.history\t42\t${T0 + 500}.0\tNone\n`,
    ].join(''));
    // history files are never removed
    await fsp.access(path.join(f.srvDir, 'wals', '00000002.history'));
    await assert.rejects(fsp.access(path.join(f.srvDir, 'base', '20240101T100000')));
    await assert.rejects(fsp.access(path.join(f.srvDir, 'meta', '20240101T100000-delete_this')));
    const list = await f.run('list-backups', 'pg', '--minimal');
    assert.deepEqual(lines(list.stdout), ['20240103T100000', '20240102T100000']);
  });

  it('keeps the WALs when an older backup still needs them', async () => {
    const f = await standardFixture();
    const before = await fsp.readFile(path.join(f.srvDir, 'wals', 'xlog.db'), 'utf8');
    const r = await f.run('delete', 'pg', '20240103T100000');
    assert.equal(r.code, 0);
    const out = lines(r.stdout);
    assert.equal(out.length, 2);
    assert.equal(out[0], 'Deleting backup 20240103T100000 for server pg');
    assert.match(out[1] ?? '', /^Deleted backup 20240103T100000 \(start time: .*, elapsed time: (less than one second|\d+ seconds?)\)$/);
    assert.equal(await fsp.readFile(path.join(f.srvDir, 'wals', 'xlog.db'), 'utf8'), before);
    // the WAL Size of the previous backup now runs up to the next usable backup
    const list = await f.run('list-backups', 'pg');
    assert.ok(lines(list.stdout).includes('pg 20240101T100000 - Mon Jan  1 10:05:00 2024 - Size: 12.0 MiB - WAL Size: 5.0 MiB'));
  });

  it('refuses a DONE backup needed by minimum_redundancy and changes nothing', async () => {
    const f = await standardFixture({ minimum_redundancy: '2' });
    const before = await snapshot(f.srvDir);
    const r = await f.run('delete', 'pg', '20240101T100000');
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.equal(
      r.stderr,
      'WARNING: Skipping delete of backup 20240101T100000 for server pg due to minimum redundancy requirements (minimum redundancy = 2, current redundancy = 2)\n',
    );
    assert.deepEqual(await snapshot(f.srvDir), before);
    // a FAILED backup is not covered by minimum_redundancy
    const failed = await f.run('delete', 'pg', '20240102T100000');
    assert.equal(failed.code, 0, failed.stderr);
  });

  it('refuses a kept backup (meta and legacy annotation) and changes nothing', async () => {
    const f = await standardFixture();
    await fsp.mkdir(path.join(f.srvDir, 'meta'), { recursive: true });
    await fsp.writeFile(path.join(f.srvDir, 'meta', '20240103T100000-keep'), 'full');
    await fsp.mkdir(path.join(f.srvDir, 'base', '20240101T100000', 'annotations'), { recursive: true });
    await fsp.writeFile(path.join(f.srvDir, 'base', '20240101T100000', 'annotations', 'keep'), 'standalone');
    const before = await snapshot(f.srvDir);
    for (const id of ['20240103T100000', '20240101T100000']) {
      const r = await f.run('delete', 'pg', id);
      assert.equal(r.code, 1);
      assert.equal(r.stdout, '');
      assert.equal(
        r.stderr,
        `WARNING: Skipping delete of backup ${id} for server pg as it has a current keep request. In order to delete the backup please release the keep and try again.\n`,
      );
    }
    assert.deepEqual(await snapshot(f.srvDir), before);
  });

  it('deletes the incremental descendants of a backup first', async () => {
    const f = await makeFixture({ minimum_redundancy: '0' });
    await addBackup(f, '20240101T100000', 2, 3, { children_backup_ids: ['20240102T100000'] });
    await addBackup(f, '20240102T100000', 4, 4, { parent_backup_id: '20240101T100000', children_backup_ids: ['20240103T100000'] });
    await addBackup(f, '20240103T100000', 5, 5, { parent_backup_id: '20240102T100000' });
    await addBackup(f, '20240105T100000', 7, 7);
    await addWals(f, [1, 2, 3, 4, 5, 6, 7]);
    const r = await f.run('delete', 'pg', '20240101T100000');
    assert.equal(r.code, 0, r.stderr);
    const out = lines(r.stdout).filter((l) => l.startsWith('Deleting'));
    assert.deepEqual(out, [
      'Deleting backup 20240103T100000 for server pg',
      'Deleting backup 20240102T100000 for server pg',
      'Deleting backup 20240101T100000 for server pg',
    ]);
    assert.deepEqual((await fsp.readdir(path.join(f.srvDir, 'base'))).sort(), ['20240105T100000']);
    assert.deepEqual((await fsp.readdir(path.join(f.srvDir, 'wals', '0000000100000000'))).sort(), [walName(1, 0, 7)]);
  });
});

describe('delete: locks and interruptions', () => {
  it('refuses to run while a backup of the server holds the backup lock', async () => {
    const f = await standardFixture();
    const lockFile = path.join(f.home, '.pg-backup.lock');
    const holder = spawn('flock', ['-x', lockFile, 'sleep', '30'], { stdio: 'ignore' });
    try {
      // wait until flock(1) holds the lock
      for (let i = 0; i < 100; i++) {
        const probe = await new Promise<number>((resolve) => execFile('flock', ['-xn', lockFile, 'true'], (err) => resolve(err ? 1 : 0)));
        if (probe === 1) break;
        await new Promise((res) => setTimeout(res, 20));
      }
      const before = await snapshot(f.srvDir);
      const r = await f.run('delete', 'pg', '20240101T100000');
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^ERROR: A backup of server pg is running( \(PID \d+\))?: cannot delete backup 20240101T100000 now, try again later\n$/);
      assert.deepEqual(await snapshot(f.srvDir), before);
    } finally {
      holder.kill();
    }
  });

  it('finishes a delete that was interrupted after marking the backup', async () => {
    const f = await standardFixture({ minimum_redundancy: '2' });
    // the state an interrupted delete leaves: annotation, FAILED backup.info, data partly gone
    const info = path.join(f.srvDir, 'base', '20240101T100000', 'backup.info');
    const marked = { ...(await readBackupInfoFile(info)), status: FAILED, error: DELETE_IN_PROGRESS_ERROR };
    await writeBackupInfoFile(info, marked);
    await fsp.mkdir(path.join(f.srvDir, 'meta'), { recursive: true });
    await fsp.writeFile(path.join(f.srvDir, 'meta', '20240101T100000-delete_this'), 'delete');
    await fsp.rm(path.join(f.srvDir, 'base', '20240101T100000', 'data'), { recursive: true });
    const list = await f.run('list-backups', 'pg');
    assert.ok(lines(list.stdout).includes('pg 20240101T100000 - FAILED'));
    const r = await f.run('delete', 'pg', '20240101T100000');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(lines(r.stdout)[1], 'Delete associated WAL segments:');
    await assert.rejects(fsp.access(path.join(f.srvDir, 'base', '20240101T100000')));
    assert.deepEqual(await fsp.readdir(path.join(f.srvDir, 'meta')), []);
  });
});

describe('delete planner', () => {
  const SEG = 16 * MiB;
  const entry = (id: string, begin: number | null, end: number | null, status: string = DONE, tli = 1): BackupEntry => ({
    id,
    infoFile: '',
    info: newBackupInfo({
      status,
      timeline: tli,
      begin_wal: begin === null ? null : walName(tli, 0, begin),
      end_wal: end === null ? null : walName(tli, 0, end),
      xlog_segment_size: SEG,
    }),
  });
  const wal = (name: string) => ({ name, size: 1, time: 1, compression: null, encryption: null });
  const archive = [1, 2, 3, 4, 5, 6, 7, 8].map((n) => wal(walName(1, 0, n)));

  it('cleans nothing on a manual delete when an older backup exists', () => {
    const entries = [entry('20240101T000000', 2, 3), entry('20240102T000000', 5, 5)];
    assert.equal(decideWalCleanup(entries, entries[1] as BackupEntry, { manual: true, concurrent: true }), null);
  });

  it('removes up to the next backup begin_wal, never history files', () => {
    const entries = [entry('20240101T000000', 2, 3), entry('20240102T000000', 5, 5)];
    const policy = decideWalCleanup(entries, entries[0] as BackupEntry, { manual: true, concurrent: true });
    assert.ok(policy);
    const removed = selectWalsToRemove(policy, [...archive, wal('00000001.history'), wal(`${walName(1, 0, 4)}.00000028.backup`)]);
    assert.deepEqual(removed, [1, 2, 3, 4].map((n) => walName(1, 0, n)).concat(`${walName(1, 0, 4)}.00000028.backup`));
  });

  it('deleting the only backup keeps its WALs (concurrent) or removes all (exclusive)', () => {
    const entries = [entry('20240101T000000', 3, 4)];
    const concurrent = decideWalCleanup(entries, entries[0] as BackupEntry, { manual: true, concurrent: true });
    assert.ok(concurrent);
    assert.deepEqual(selectWalsToRemove(concurrent, archive), [1, 2].map((n) => walName(1, 0, n)));
    const exclusive = decideWalCleanup(entries, entries[0] as BackupEntry, { manual: true, concurrent: false });
    assert.ok(exclusive);
    assert.equal(selectWalsToRemove(exclusive, archive).length, 8);
  });

  it('protects the WALs of newer in-progress backups and of other timelines', () => {
    const entries = [entry('20240101T000000', 3, 4), entry('20240102T000000', 2, null, STARTED)];
    const policy = decideWalCleanup(entries, entries[0] as BackupEntry, { manual: true, concurrent: false });
    assert.ok(policy);
    // no COPY_DONE next backup and exclusive mode would mean "everything", but the STARTED
    // backup lives on timeline 1 and needs its WALs
    assert.deepEqual(selectWalsToRemove(policy, archive), []);
    assert.equal(policy.floor, walName(1, 0, 2));
    const tl = [entry('20240101T000000', 3, 4), entry('20240102T000000', 6, 6, DONE, 2), entry('20240103T000000', 2, 2, DONE, 3)];
    const p2 = decideWalCleanup(tl, tl[0] as BackupEntry, { manual: false, concurrent: true, keeps: new Map() });
    assert.ok(p2);
    const mixed = [...archive, wal(walName(3, 0, 1)), wal(walName(2, 0, 1))];
    // timeline 3 is used by another backup; timeline 1 below the next backup (tli 2) goes
    assert.deepEqual(selectWalsToRemove(p2, mixed), archive.map((w) => w.name).concat(walName(2, 0, 1)).filter((n) => !n.startsWith('00000003')));
  });

  it('retention mode protects the range of an older standalone-kept backup', () => {
    const entries = [entry('20240101T000000', 2, 3), entry('20240102T000000', 5, 5), entry('20240103T000000', 7, 7)];
    const policy = decideWalCleanup(entries, entries[1] as BackupEntry, {
      manual: false,
      concurrent: true,
      keeps: new Map([['20240101T000000', 'standalone' as const]]),
    });
    assert.ok(policy);
    assert.deepEqual(selectWalsToRemove(policy, archive), [1, 4, 5, 6].map((n) => walName(1, 0, n)));
    const full = decideWalCleanup(entries, entries[1] as BackupEntry, { manual: false, concurrent: true, keeps: new Map([['20240101T000000', 'full' as const]]) });
    assert.equal(full, null);
  });
});

describe('check-backup', () => {
  it('moves a WAITING_FOR_WALS backup to DONE once its WALs are archived', async () => {
    const f = await standardFixture();
    let r = await f.run('check-backup', 'pg', '20240104T100000');
    assert.equal(r.code, 0, r.stderr);
    let list = await f.run('list-backups', 'pg', '--minimal');
    assert.equal(list.code, 0);
    let show = await f.run('show-backup', 'pg', '20240104T100000');
    assert.ok(lines(show.stdout).includes('  Status                 : WAITING_FOR_WALS'));
    await fsp.writeFile(path.join(f.srvDir, 'wals', '0000000100000000', walName(1, 0, 9)), 'wal');
    r = await f.run('check-backup', 'pg', 'latest');
    assert.equal(r.code, 0, r.stderr);
    show = await f.run('show-backup', 'pg', '20240104T100000');
    assert.ok(lines(show.stdout).includes('  Status                 : DONE'));
    list = await f.run('list-backups', 'pg');
    assert.ok(!list.stdout.includes('WAITING_FOR_WALS'));
  });
});
