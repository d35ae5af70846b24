/** The pure decisions behind `barman check` lines: exact names and hints (spec §4.4). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { continuousArchivingLine, fileArchiverLines, summariseErrorFiles, walQueueLine } from '../../src/checks/archiver-checks.js';
import { backupCountLines, backupMaxAgeLine, backupMinSizeLine, compressionLine, walAgeLines } from '../../src/checks/catalog-checks.js';
import { slotCheckLine, standbyCheckLines } from '../../src/checks/postgres-checks.js';
import { systemIdLine } from '../../src/checks/server-checks.js';
import { sshCheckLines } from '../../src/checks/ssh-checks.js';
import { newBackupInfo, DONE, FAILED } from '../../src/catalog/backup-info.js';
import type { BackupEntry } from '../../src/catalog/catalog.js';
import { PyDateTime } from '../../src/util/pytime.js';
import { jsonKey } from '../../src/cli/commands/check.js';

const entry = (id: string, status: string, extra: Record<string, unknown> = {}): BackupEntry =>
  ({ id, info: newBackupInfo({ status: status as typeof DONE, ...extra }) }) as unknown as BackupEntry;
const DAY = 86400;
const NOW = new Date(Date.UTC(2024, 0, 10, 12, 0, 0));
const endAt = (secondsAgo: number) => PyDateTime.fromFields({ year: 2024, month: 1, day: 10, hour: 12, minute: 0, second: 0 }, 0).epochSeconds - secondsAgo;

describe('backup maximum age (frozen clock)', () => {
  it('not configured', () => {
    assert.deepEqual(backupMaxAgeLine(null, null, NOW), { name: 'backup maximum age', ok: true, hint: 'no last_backup_maximum_age provided' });
  });
  it('no backups', () => {
    assert.deepEqual(backupMaxAgeLine(DAY, null, NOW), { name: 'backup maximum age', ok: false, hint: 'interval provided: 1 day, latest backup age: No available backups' });
  });
  it('young and old backups', () => {
    const young = entry('20240110T100000', DONE, { end_time: PyDateTime.fromFields({ year: 2024, month: 1, day: 10, hour: 10, minute: 0, second: 0 }, 0) });
    assert.deepEqual(backupMaxAgeLine(DAY, young, NOW), { name: 'backup maximum age', ok: true, hint: 'interval provided: 1 day, latest backup age: 2 hours' });
    const old = entry('20240108T100000', DONE, { end_time: PyDateTime.fromFields({ year: 2024, month: 1, day: 8, hour: 10, minute: 0, second: 5 }, 0) });
    assert.deepEqual(backupMaxAgeLine(DAY, old, NOW), { name: 'backup maximum age', ok: false, hint: 'interval provided: 1 day, latest backup age: 2 days, 1 hour, 59 minutes, 55 seconds' });
    assert.ok(endAt(0) > 0);
  });
});

describe('backup minimum size', () => {
  const b = entry('20240110T100000', DONE, { size: 3 * 1024 * 1024 });
  it('not configured: size as hint and perfdata', () => {
    assert.deepEqual(backupMinSizeLine(null, b), { name: 'backup minimum size', ok: true, hint: '3.0 MiB', perfdata: 3145728 });
    assert.deepEqual(backupMinSizeLine(null, null), { name: 'backup minimum size', ok: true, hint: '0 B', perfdata: 0 });
  });
  it('above and below the minimum', () => {
    assert.equal(backupMinSizeLine(1024 * 1024, b).hint, 'last backup size 3.0 MiB > 1.0 MiB minimum');
    const small = backupMinSizeLine(10 * 1024 * 1024, b);
    assert.deepEqual([small.ok, small.hint], [false, 'last backup size 3.0 MiB < 10.0 MiB minimum']);
    assert.deepEqual([backupMinSizeLine(1, null).ok, backupMinSizeLine(1, null).hint], [false, 'last backup size 0 B < 1 B minimum']);
  });
});

describe('wal maximum age and wal size', () => {
  const now = NOW.getTime() / 1000;
  it('not configured', () => {
    assert.deepEqual(walAgeLines(null, null, 0, false, NOW), [
      { name: 'wal maximum age', ok: true, hint: 'no last_wal_maximum_age provided' },
      { name: 'wal size', ok: true, hint: '0 B', perfdata: 0 },
    ]);
  });
  it('no WAL since the last backup', () => {
    assert.deepEqual(walAgeLines(3600, null, 0, true, NOW)[0], { name: 'wal maximum age', ok: false, hint: 'No WAL files archived for last backup' });
  });
  it('recent and stale WAL', () => {
    assert.deepEqual(walAgeLines(3600, now - 120, 32 * 1024 * 1024, true, NOW), [
      { name: 'wal maximum age', ok: true, hint: 'interval provided: 1 hour, latest wal age: 2 minutes' },
      { name: 'wal size', ok: true, hint: '32.0 MiB', perfdata: 33554432 },
    ]);
    assert.deepEqual(walAgeLines(3600, now - 7200, 0, true, NOW)[0], { name: 'wal maximum age', ok: false, hint: 'interval provided: 1 hour, latest wal age: 2 hours' });
  });
});

describe('failed backups, minimum redundancy', () => {
  it('counts', () => {
    const cat = [entry('20240101T000000', FAILED), entry('20240102T000000', DONE), entry('20240103T000000', DONE, { parent_backup_id: '20240102T000000' })];
    assert.deepEqual(backupCountLines(cat, 2), [
      { name: 'failed backups', ok: false, hint: 'there are 1 failed backups' },
      { name: 'minimum redundancy requirements', ok: false, hint: 'have 1 non-incremental backups, expected at least 2' },
    ]);
    assert.deepEqual(backupCountLines([], 0).map((l) => l.ok), [true, true]);
    // Barman 3.4's words when there is no incremental backup.
    assert.equal(backupCountLines(cat.slice(0, 2), 1)[1]?.hint, 'have 1 backups, expected at least 1');
  });
});

describe('compression settings', () => {
  const base = { custom_compression_filter: null, custom_decompression_filter: null, path_prefix: null };
  it('none and in-process algorithms pass', () => {
    assert.equal(compressionLine({ ...base, compression: null }).ok, true);
    assert.equal(compressionLine({ ...base, compression: 'gzip' }).ok, true);
    assert.equal(compressionLine({ ...base, compression: 'zstd' }).ok, true);
  });
  it('custom without filters fails, with both passes', () => {
    assert.deepEqual(compressionLine({ ...base, compression: 'custom' }), {
      name: 'compression settings',
      ok: false,
      hint: 'custom compression requires custom_compression_filter and custom_decompression_filter',
    });
    assert.equal(compressionLine({ ...base, compression: 'custom', custom_compression_filter: 'gzip -c', custom_decompression_filter: 'gzip -dc' }).ok, true);
  });
  it('a missing program fails', () => {
    assert.deepEqual(compressionLine({ ...base, compression: 'xz' }, () => null), { name: 'compression settings', ok: false, hint: "xz compression requires the 'xz' program, not found" });
    assert.equal(compressionLine({ ...base, compression: 'bzip2' }, () => '/usr/bin/bzip2').ok, true);
  });
});

describe('archiver', () => {
  const t = (s: string) => new Date(`2024-01-10T${s}Z`);
  it('archive_mode and archive_command', () => {
    const lines = fileArchiverLines({ archiveMode: 'off', archiveCommand: '(disabled)', archiver: null, currentWal: null });
    assert.deepEqual(lines, [
      { name: 'archive_mode', ok: false, hint: "please set it to 'on' or 'always'" },
      { name: 'archive_command', ok: false, hint: 'please set it accordingly to documentation' },
    ]);
    assert.equal(fileArchiverLines({ archiveMode: 'on', archiveCommand: '', archiver: null, currentWal: null })[1]?.ok, false);
  });
  it('continuous archiving follows pg_stat_archiver', () => {
    const stats = (failed: string | null, failedAt: string | null, archivedAt: string | null) => ({
      failedCount: failed ? 3 : 0,
      lastFailedWal: failed,
      lastFailedTime: failedAt ? t(failedAt) : null,
      lastArchivedWal: archivedAt ? '000000010000000000000001' : null,
      lastArchivedTime: archivedAt ? t(archivedAt) : null,
    });
    assert.deepEqual(continuousArchivingLine(stats(null, null, '10:00:00'), 'on', null), { name: 'continuous archiving', ok: true, hint: '' });
    assert.deepEqual(continuousArchivingLine(stats('000000010000000000000002', '10:00:05', '10:00:00'), 'on', null), {
      name: 'continuous archiving',
      ok: false,
      hint: 'archive_command failed for WAL 000000010000000000000002 (failures: 3)',
    });
    assert.equal(continuousArchivingLine(stats('000000010000000000000002', '10:00:05', null), 'on', null).ok, false);
    assert.equal(continuousArchivingLine(stats('000000010000000000000002', '10:00:00', '10:00:05'), 'on', null).ok, true);
    assert.equal(continuousArchivingLine(stats('00000001.history', '10:00:05', '10:00:00'), 'on', '000000020000000000000003').ok, true);
    const all = fileArchiverLines({ archiveMode: 'on', archiveCommand: 'false', archiver: stats('000000010000000000000002', '10:00:05', null), currentWal: null });
    assert.deepEqual(all.map((l) => `${l.name}:${l.ok}`), ['archive_mode:true', 'archive_command:true', 'continuous archiving:false']);
  });
  it('archiver errors summary', () => {
    assert.equal(summariseErrorFiles([]), '');
    assert.equal(
      summariseErrorFiles(['A.1.duplicate', 'B.2.unknown', 'A.3.duplicate', 'C.error', 'D.weird']),
      'duplicates: 2, unknown: 1, not relevant: 1, unknown failure: 1',
    );
  });
  it('queue directories only show failures', () => {
    assert.equal(walQueueLine('incoming', '/x/incoming', true, 5, null), null);
    assert.deepEqual(walQueueLine('incoming', '/x/incoming', true, 5, 4), { name: 'incoming WALs directory', ok: false, hint: 'there are too many WALs in queue: 5, max 4' });
    assert.equal(walQueueLine('streaming', '/x/streaming', true, 5, 4), null); // one .partial does not count
    assert.deepEqual(walQueueLine('incoming', '/x/incoming', false, 1, null), { name: 'empty incoming directory', ok: false, hint: "'/x/incoming' must be empty when archiver=off" });
    assert.equal(walQueueLine('streaming', '/x/streaming', false, 1, null), null);
    assert.deepEqual(walQueueLine('streaming', '/x/streaming', false, 2, null)?.hint, "'/x/streaming' must be empty when streaming_archiver=off");
  });
});

describe('replication slot', () => {
  const s = { name: 'pg', slot_name: 'barman', streaming_archiver: true };
  it('missing, not initialised, inactive, active', () => {
    assert.equal(slotCheckLine(s, null)?.hint, "replication slot 'barman' doesn't exist. Please execute 'barman receive-wal --create-slot pg'");
    assert.equal(slotCheckLine(s, { active: false, restartLsn: null })?.hint, "slot 'barman' not initialised: is 'receive-wal' running?");
    assert.equal(slotCheckLine(s, { active: false, restartLsn: '0/1' })?.hint, "slot 'barman' not active: is 'receive-wal' running?");
    assert.deepEqual(slotCheckLine(s, { active: true, restartLsn: '0/1' }), { name: 'replication slot', ok: true, hint: '' });
  });
  it('streaming archiver off: a leftover slot is a warning', () => {
    const off = { ...s, streaming_archiver: false };
    assert.equal(slotCheckLine(off, null), null);
    assert.deepEqual(slotCheckLine(off, { active: false, restartLsn: '0/1' }), { name: 'replication slot', ok: true, hint: "WARNING: slot 'barman' is initialised but not required by the current config" });
    assert.equal(slotCheckLine({ ...s, slot_name: null }, null), null);
  });
});

describe('standby checks', () => {
  const primary = { connected: true, error: null, inRecovery: false, systemId: '42' };
  it('a standby of a primary with the same system id', () => {
    assert.deepEqual(standbyCheckLines({ inRecovery: true, systemId: '42' }, primary).map((l) => [l.name, l.ok]), [
      ['PostgreSQL server is standby', true],
      ['Primary server is not a standby', true],
      ['Primary and standby have same system ID', true],
    ]);
  });
  it('conninfo on a primary, primary_conninfo on a standby, different systems', () => {
    const lines = standbyCheckLines({ inRecovery: false, systemId: '41' }, { ...primary, inRecovery: true });
    assert.deepEqual(lines, [
      { name: 'PostgreSQL server is standby', ok: false, hint: 'conninfo should point to a standby server if primary_conninfo is set' },
      { name: 'Primary server is not a standby', ok: false, hint: 'primary_conninfo should point to a primary server, not a standby' },
      { name: 'Primary and standby have same system ID', ok: false, hint: 'primary_conninfo and conninfo should point to primary and standby servers which share the same system identifier' },
    ]);
  });
  it('an unreachable primary fails rather than passing unverified', () => {
    const lines = standbyCheckLines({ inRecovery: true, systemId: '42' }, { connected: false, error: 'timeout', inRecovery: null, systemId: null });
    assert.deepEqual(lines.map((l) => l.ok), [true, false, false]);
  });
});

describe('systemid coherence', () => {
  const f = (pg: string | null, st: string | null) => ({ systemId: pg, streaming: { configured: true, ok: st !== null, error: null, systemId: st } });
  it('all cases', () => {
    assert.equal(systemIdLine(f('1', '2'), '/i', '1').hint, 'is the streaming DSN targeting the same server of the PostgreSQL connection string?');
    assert.deepEqual(systemIdLine(f(null, null), '/i', undefined), { name: 'systemid coherence', ok: true, hint: 'no system Id available' });
    assert.deepEqual(systemIdLine(f('1', '1'), '/i', undefined), { name: 'systemid coherence', ok: true, hint: 'no system Id stored on disk' });
    assert.deepEqual(systemIdLine(f('1', null), '/b/identity.json', '9'), { name: 'systemid coherence', ok: false, hint: 'the system Id of the connected PostgreSQL server changed, stored in "/b/identity.json"' });
    assert.deepEqual(systemIdLine(f('1', '1'), '/i', '1'), { name: 'systemid coherence', ok: true, hint: '' });
  });
});

describe('ssh', () => {
  it('lines', () => {
    assert.deepEqual(sshCheckLines('ssh pg', { code: 0, stdout: '', timedOut: false }), [{ name: 'ssh', ok: true, hint: 'PostgreSQL server' }]);
    assert.deepEqual(sshCheckLines('ssh pg', { code: 255, stdout: '', timedOut: false }), [{ name: 'ssh', ok: false, hint: "Connection failed using 'ssh pg' return code 255" }]);
    assert.deepEqual(sshCheckLines('ssh pg', { code: 0, stdout: 'Welcome!\n', timedOut: false })[1], {
      name: 'ssh output clean',
      ok: false,
      hint: 'the configured ssh_command must not add anything to the remote command output',
    });
    assert.equal(sshCheckLines('ssh pg', { code: null, stdout: '', timedOut: true })[0]?.ok, false);
  });
});

describe('JSON keys', () => {
  it('as Barman', () => {
    assert.equal(jsonKey('superuser or standard user with backup privileges'), 'superuser_or_standard_user_with_backup_privileges');
    assert.equal(jsonKey('receive-wal running'), 'receive_wal_running');
    assert.equal(jsonKey('PostgreSQL'), 'postgresql');
    assert.equal(jsonKey('pg_basebackup supports tablespaces mapping'), 'pg_basebackup_supports_tablespaces_mapping');
    assert.equal(jsonKey('a.b-c d'), 'ab_c_d');
  });
});
