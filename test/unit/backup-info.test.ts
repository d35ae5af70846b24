import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  ARCHIVING,
  BACKUP_INFO_KEYS,
  BACKUP_STATUSES,
  COPY_DONE,
  DEFAULT_XLOG_SEGMENT_SIZE,
  DONE,
  EMPTY,
  FAILED,
  NOT_EMPTY,
  RAW_FIELDS,
  STARTED,
  SYNCING,
  WAITING_FOR_WALS,
  backupIdFromPath,
  backupType,
  backupExtras,
  dumpBackupInfoFields,
  needsNewerBackupInfo,
  unknownBackupInfoKeys,
  isBackupId,
  isFull,
  newBackupId,
  newBackupInfo,
  parseBackupInfo,
  readBackupInfoFile,
  serializeBackupInfo,
  writeBackupInfoFile,
} from '../../src/catalog/backup-info.js';
import { PyFloat, type PyValue, pyDict, pyFloat, pyRepr } from '../../src/catalog/pyliteral.js';
import { BarmanError } from '../../src/util/errors.js';
import { PyDateTime, parsePyDatetime } from '../../src/util/pytime.js';

process.env.TZ = 'Europe/Rome';

/** A PG 17 backup taken with backup_method=postgres (pg_basebackup), with an incremental child. */
const POSTGRES_BACKUP_INFO = [
  "backup_label='START WAL LOCATION: 0/9000028 (file 000000010000000000000009)\\nCHECKPOINT LOCATION: 0/9000060\\nBACKUP METHOD: streamed\\nBACKUP FROM: primary\\nSTART TIME: 2024-06-13 17:17:09 CEST\\nLABEL: pg_basebackup base backup\\nSTART TIMELINE: 1\\n'",
  'backup_name=nightly',
  'begin_offset=40',
  'begin_time=2024-06-13 17:17:09.382940+02:00',
  'begin_wal=000000010000000000000009',
  'begin_xlog=0/9000028',
  'children_backup_ids=20240614T171709,20240615T171712',
  'cluster_size=31035392',
  'compression=None',
  'config_file=/etc/postgresql/17/main/postgresql.conf',
  "copy_stats={'total_time': 1.804262, 'number_of_workers': 1, 'copy_time': 1.804262}",
  'data_checksums=on',
  'deduplicated_size=None',
  'encryption=None',
  'end_offset=312',
  'end_time=2024-06-13 17:17:11+02:00',
  'end_wal=000000010000000000000009',
  'end_xlog=0/9000138',
  'error=None',
  'hba_file=/etc/postgresql/17/main/pg_hba.conf',
  'ident_file=/etc/postgresql/17/main/pg_ident.conf',
  "included_files=['/etc/postgresql/17/main/conf.d/tuning.conf']",
  'mode=postgres',
  'parent_backup_id=None',
  'pgdata=/var/lib/postgresql/17/main',
  'server_name=pg',
  'size=31098880',
  'status=DONE',
  'summarize_wal=on',
  'systemid=7379833429637484599',
  'tablespaces=None',
  'timeline=1',
  'version=170002',
  'xlog_segment_size=16777216',
  '',
].join('\n');

/** An rsync (backup_method=rsync, concurrent) backup with two tablespaces, taken at -04:00. */
const RSYNC_BACKUP_INFO = [
  "backup_label='START WAL LOCATION: 0/B000028 (file 00000001000000000000000B)\\nCHECKPOINT LOCATION: 0/B000060\\nBACKUP METHOD: streamed\\nBACKUP FROM: primary\\nSTART TIME: 2024-06-13 11:20:00 EDT\\nLABEL: Barman backup main 20240613T112000\\nSTART TIMELINE: 1\\n'",
  'begin_offset=40',
  'begin_time=2024-06-13 11:20:00.000123-04:00',
  'begin_wal=00000001000000000000000B',
  'begin_xlog=0/B000028',
  'children_backup_ids=None',
  'cluster_size=75497472',
  'compression=None',
  'config_file=/srv/pg/data/postgresql.conf',
  "copy_stats={'total_time': 12.0, 'number_of_workers': 2, 'analysis_time': 0.123456, 'analysis_time_per_item': {'pgdata': 0.100001, 'tbs1': 0.023455, '2024': 0.0}, 'copy_time': 11.5, 'copy_time_per_item': {'pgdata': 10.25, 'tbs1': 1.25, '2024': 1e-05}, 'serialized_copy_time': 11.50001, 'serialized_copy_time_per_item': {'pgdata': 10.25, 'tbs1': 1.25, '2024': 1e-05}}",
  'data_checksums=off',
  'deduplicated_size=12582912',
  'encryption=None',
  'end_offset=1352',
  'end_time=2024-06-13 11:20:12-04:00',
  'end_wal=00000001000000000000000B',
  'end_xlog=0/B000548',
  'error=None',
  'hba_file=/srv/pg/data/pg_hba.conf',
  'ident_file=/srv/pg/data/pg_ident.conf',
  'included_files=None',
  'mode=rsync-concurrent',
  'parent_backup_id=None',
  'pgdata=/srv/pg/data',
  'server_name=main',
  'size=75601920',
  'status=WAITING_FOR_WALS',
  'summarize_wal=None',
  'systemid=7379833429637484600',
  "tablespaces=[('tbs1', 16385, '/srv/pg/tbs1'), ('2024', 16386, \"/srv/pg/it's 2024\")]",
  'timeline=1',
  'version=160003',
  'xlog_segment_size=16777216',
  '',
].join('\n');

/** A snapshot backup (snapshots_info present). */
const SNAPSHOT_BACKUP_INFO = [
  'backup_label=None',
  'begin_offset=40',
  'begin_time=2024-06-13 17:17:09.382940+00:00',
  'begin_wal=000000010000000000000009',
  'begin_xlog=0/9000028',
  'children_backup_ids=None',
  'cluster_size=31035392',
  'compression=None',
  'config_file=/var/lib/pgsql/data/postgresql.conf',
  "copy_stats={'copy_time': 65.434, 'total_time': 65.434}",
  'data_checksums=off',
  'deduplicated_size=None',
  'encryption=None',
  'end_offset=312',
  'end_time=2024-06-13 17:18:15.000001+00:00',
  'end_wal=000000010000000000000009',
  'end_xlog=0/9000138',
  'error=None',
  'hba_file=/var/lib/pgsql/data/pg_hba.conf',
  'ident_file=/var/lib/pgsql/data/pg_ident.conf',
  'included_files=None',
  'mode=snapshot-concurrent',
  'parent_backup_id=None',
  'pgdata=/var/lib/pgsql/data',
  'server_name=pg',
  'size=None',
  "snapshots_info={'provider': 'gcp', 'provider_info': {'project': 'my-project', 'device_name': 'pgdata', 'device_path': None}, 'snapshots': [{'mount': {'mount_options': 'rw,noatime', 'mount_point': '/opt/disk0'}, 'provider': {'device_name': 'pgdata', 'snapshot_name': 'pg-20240613t171709-pgdata', 'snapshot_project': 'my-project'}}]}",
  'status=DONE',
  'summarize_wal=None',
  'systemid=7379833429637484599',
  'tablespaces=None',
  'timeline=1',
  'version=160003',
  'xlog_segment_size=16777216',
  '',
].join('\n');

/** A backup that failed right after starting. */
const FAILED_BACKUP_INFO = [
  'backup_label=None',
  'begin_offset=None',
  'begin_time=2024-06-13 17:17:09.382940+02:00',
  'begin_wal=None',
  'begin_xlog=None',
  'children_backup_ids=None',
  'cluster_size=None',
  'compression=None',
  'config_file=None',
  'copy_stats=None',
  'data_checksums=None',
  'deduplicated_size=None',
  'encryption=None',
  'end_offset=None',
  'end_time=None',
  'end_wal=None',
  'end_xlog=None',
  "error=failure starting backup (connection to server at \"pg\" (10.0.0.5), port 5432 failed: FATAL:  role 'barman' does not exist)",
  'hba_file=None',
  'ident_file=None',
  'included_files=None',
  'mode=postgres',
  'parent_backup_id=None',
  'pgdata=None',
  'server_name=pg',
  'size=None',
  'status=FAILED',
  'summarize_wal=None',
  'systemid=None',
  'tablespaces=None',
  'timeline=None',
  'version=None',
  'xlog_segment_size=16777216',
  '',
].join('\n');

const isBarmanError = (re: RegExp) => (err: unknown) => err instanceof BarmanError && re.test(err.message);

/** The six keys Barman 3.4 does not know. */
const NEWER = ['children_backup_ids', 'cluster_size', 'data_checksums', 'encryption', 'parent_backup_id', 'summarize_wal'];
/** A Barman 3.17 file as barman-ts writes it back when the backup needs no newer key: 3.4's keys only. */
const in34Form = (text: string): string =>
  text
    .split('\n')
    .filter((l) => !NEWER.includes(l.split('=')[0] ?? ''))
    .join('\n');

describe('keys', () => {
  it('has the 35 Barman keys, sorted', () => {
    assert.equal(BACKUP_INFO_KEYS.length, 35);
    assert.deepEqual([...BACKUP_INFO_KEYS], [...BACKUP_INFO_KEYS].sort());
    assert.equal(BACKUP_INFO_KEYS[0], 'backup_label');
    assert.equal(BACKUP_INFO_KEYS[34], 'xlog_segment_size');
  });
});

describe('keys newer than Barman 3.4', () => {
  it('are written only for an incremental chain or an encrypted backup', () => {
    const base = newBackupInfo({ status: DONE, mode: 'postgres', cluster_size: 1024, data_checksums: 'on', summarize_wal: 'off' });
    assert.equal(needsNewerBackupInfo(base), false);
    const plain = serializeBackupInfo(base);
    for (const k of NEWER) assert.doesNotMatch(plain, new RegExp(`^${k}=`, 'm'), k);
    assert.deepEqual(backupExtras(base), { cluster_size: 1024, data_checksums: 'on', summarize_wal: 'off' });
    const cases: Array<[string, Partial<typeof base>]> = [
      ['parent', { parent_backup_id: '20240101T000000' }],
      ['children', { children_backup_ids: ['20240102T000000'] }],
      ['encrypted', { encryption: 'gpg' }],
    ];
    for (const [what, change] of cases) {
      const info = { ...base, ...change };
      assert.equal(needsNewerBackupInfo(info), true, what);
      const text = serializeBackupInfo(info);
      assert.match(text, /^cluster_size=1024$/m, what);
      assert.match(text, /^data_checksums=on$/m, what);
      assert.match(text, /^summarize_wal=off$/m, what);
      assert.equal(text.trimEnd().split('\n').length, 33, what); // 35 less the hidden backup_name, snapshots_info
      assert.deepEqual(backupExtras(info), {}, what);
    }
  });

  it('an empty extras set for a backup that knows nothing of them', () => {
    assert.deepEqual(backupExtras(newBackupInfo()), {});
  });
});

describe('postgres-method backup.info', () => {
  const info = parseBackupInfo(POSTGRES_BACKUP_INFO, 'meta/20240613T171709-backup.info');

  it('round-trips byte for byte', () => {
    assert.equal(serializeBackupInfo(info), POSTGRES_BACKUP_INFO);
  });

  it('round-trips without the remembered text too (canonical form)', () => {
    const copy = { ...info };
    delete copy[RAW_FIELDS];
    assert.equal(serializeBackupInfo(copy), POSTGRES_BACKUP_INFO);
  });

  it('has typed fields', () => {
    assert.equal(
      info.backup_label,
      'START WAL LOCATION: 0/9000028 (file 000000010000000000000009)\nCHECKPOINT LOCATION: 0/9000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2024-06-13 17:17:09 CEST\nLABEL: pg_basebackup base backup\nSTART TIMELINE: 1\n',
    );
    assert.equal(info.backup_name, 'nightly');
    assert.equal(info.begin_offset, 40);
    assert.ok(info.begin_time instanceof PyDateTime);
    assert.equal(info.begin_time.microsecond, 382940);
    assert.equal(info.begin_time.offsetMinutes, 120);
    assert.equal(info.end_time?.microsecond, 0);
    assert.deepEqual(info.children_backup_ids, ['20240614T171709', '20240615T171712']);
    assert.equal(info.cluster_size, 31035392);
    assert.equal(info.compression, null);
    assert.equal(info.deduplicated_size, null);
    assert.deepEqual(info.included_files, ['/etc/postgresql/17/main/conf.d/tuning.conf']);
    assert.ok(info.copy_stats instanceof Map);
    assert.deepEqual(info.copy_stats.get('total_time'), pyFloat(1.804262));
    assert.equal(info.copy_stats.get('number_of_workers'), 1);
    assert.equal(info.mode, 'postgres');
    assert.equal(info.status, DONE);
    assert.equal(info.summarize_wal, 'on');
    assert.equal(info.systemid, '7379833429637484599');
    assert.equal(info.tablespaces, null);
    assert.equal(info.version, 170002);
    assert.equal(info.xlog_segment_size, 16777216);
    assert.equal(info.snapshots_info, null);
    assert.equal(backupType(info), 'full');
    assert.equal(isFull(info), true);
  });
});

describe('rsync backup.info with tablespaces and copy_stats', () => {
  const info = parseBackupInfo(RSYNC_BACKUP_INFO, 'base/20240613T112000/backup.info');

  it("is written back in Barman 3.4's form (no incremental chain, no encryption), byte for byte otherwise", () => {
    assert.equal(serializeBackupInfo(info), in34Form(RSYNC_BACKUP_INFO));
    assert.equal(serializeBackupInfo(info).trimEnd().split('\n').length, 27); // 29 less backup_name, snapshots_info (None)
    const copy = { ...info };
    delete copy[RAW_FIELDS];
    assert.equal(serializeBackupInfo(copy), in34Form(RSYNC_BACKUP_INFO));
    // what 3.4's form leaves out is still known
    assert.deepEqual(backupExtras(info), { cluster_size: 75497472, data_checksums: 'off' });
  });

  it('a Barman 3.4 file round-trips byte for byte', () => {
    const text = in34Form(RSYNC_BACKUP_INFO);
    assert.equal(serializeBackupInfo(parseBackupInfo(text)), text);
  });

  it('omits backup_name and snapshots_info', () => {
    assert.equal(info.backup_name, null);
    assert.doesNotMatch(serializeBackupInfo(info), /backup_name|snapshots_info/);
  });

  it('decodes tablespaces, copy_stats and the multi-line label', () => {
    assert.deepEqual(info.tablespaces, [
      { name: 'tbs1', oid: 16385, location: '/srv/pg/tbs1' },
      { name: '2024', oid: 16386, location: "/srv/pg/it's 2024" },
    ]);
    const stats = info.copy_stats as Map<PyValue, PyValue>;
    assert.deepEqual(stats.get('total_time'), pyFloat(12));
    assert.equal(pyRepr(stats.get('total_time') ?? null), '12.0');
    const perItem = stats.get('copy_time_per_item') as Map<PyValue, PyValue>;
    assert.deepEqual([...perItem.keys()], ['pgdata', 'tbs1', '2024']); // insertion order, not JS object order
    assert.deepEqual(perItem.get('2024'), pyFloat(1e-5));
    assert.equal((stats.get('serialized_copy_time') as PyFloat).value, 11.50001);
    const label = info.backup_label ?? '';
    assert.equal(label.split('\n').length, 8);
    assert.match(label, /^LABEL: Barman backup main 20240613T112000$/m);
  });

  it('keeps negative offsets and microseconds', () => {
    assert.equal(info.begin_time?.offsetMinutes, -240);
    assert.equal(info.begin_time?.microsecond, 123);
    assert.equal(info.begin_time?.toDate().toISOString(), '2024-06-13T15:20:00.000Z');
    assert.equal(info.begin_time?.epochMicros, 1718292000000123n);
    assert.equal(info.end_time?.format(), '2024-06-13 11:20:12-04:00');
  });

  it('derives the backup type', () => {
    assert.equal(backupType(info), 'rsync');
    assert.equal(isFull(info), true);
  });
});

describe('snapshot and failed backup.info', () => {
  it('snapshot: snapshots_info is written when set', () => {
    const info = parseBackupInfo(SNAPSHOT_BACKUP_INFO);
    assert.equal(serializeBackupInfo(info), in34Form(SNAPSHOT_BACKUP_INFO));
    assert.ok(info.snapshots_info instanceof Map);
    assert.equal(info.snapshots_info.get('provider'), 'gcp');
    assert.equal(backupType(info), 'snapshot');
    assert.equal(isFull(info), false);
    const copy = { ...info };
    delete copy[RAW_FIELDS];
    assert.equal(serializeBackupInfo(copy), in34Form(SNAPSHOT_BACKUP_INFO));
  });

  it('failed: error text with quotes and = survives', () => {
    const info = parseBackupInfo(FAILED_BACKUP_INFO);
    assert.equal(serializeBackupInfo(info), in34Form(FAILED_BACKUP_INFO));
    assert.equal(info.status, FAILED);
    assert.match(info.error ?? '', /^failure starting backup \(connection to server at "pg"/);
    assert.equal(info.begin_offset, null);
    assert.equal(info.version, null);
  });
});

describe('defaults and None handling', () => {
  it('a new BackupInfo has Barman defaults', () => {
    const info = newBackupInfo();
    assert.equal(info.status, EMPTY);
    assert.equal(info.xlog_segment_size, DEFAULT_XLOG_SEGMENT_SIZE);
    const text = serializeBackupInfo(info);
    const lines = text.split('\n');
    assert.equal(lines.pop(), '');
    assert.equal(lines.length, 27); // 3.4's 29 keys less backup_name and snapshots_info (None: hidden)
    for (const line of lines) {
      if (line.startsWith('status=')) assert.equal(line, 'status=EMPTY');
      else if (line.startsWith('xlog_segment_size=')) assert.equal(line, 'xlog_segment_size=16777216');
      else assert.match(line, /^[a-z_]+=None$/);
    }
  });

  it('missing keys get defaults', () => {
    const info = parseBackupInfo('server_name=pg\n');
    assert.equal(info.server_name, 'pg');
    assert.equal(info.status, EMPTY);
    assert.equal(info.xlog_segment_size, 16777216);
    assert.equal(info.begin_time, null);
    assert.equal(info.copy_stats, null);
  });

  it('None reads as null (defaults for status and xlog_segment_size)', () => {
    const info = parseBackupInfo('backup_label=None\ncopy_stats=None\nstatus=None\nxlog_segment_size=None\nsize=None\n');
    assert.equal(info.backup_label, null);
    assert.equal(info.copy_stats, null);
    assert.equal(info.size, null);
    assert.equal(info.status, EMPTY);
    assert.equal(info.xlog_segment_size, 16777216);
    // unchanged values keep their text
    assert.match(serializeBackupInfo(info), /^status=None$/m);
    info.status = STARTED;
    assert.match(serializeBackupInfo(info), /^status=STARTED$/m);
  });

  it('empty list / dict / str are written as None', () => {
    const info = newBackupInfo({
      backup_label: '',
      children_backup_ids: [],
      copy_stats: new Map(),
      included_files: [],
      tablespaces: [],
      error: '',
      snapshots_info: new Map(),
      backup_name: '',
    });
    const text = serializeBackupInfo(info);
    for (const key of ['backup_label', 'copy_stats', 'included_files', 'tablespaces', 'error']) {
      assert.match(text, new RegExp(`^${key}=None$`, 'm'));
    }
    // an empty children list is no incremental chain: the file stays in 3.4's form
    assert.doesNotMatch(text, /backup_name|snapshots_info|children_backup_ids/);
  });

  it('backup_name and snapshots_info appear when set, sorted in place', () => {
    const info = newBackupInfo({
      backup_name: 'before upgrade',
      snapshots_info: pyDict({ provider: 'aws', provider_info: pyDict({ region: 'eu-west-1' }), snapshots: [] }),
    });
    const lines = serializeBackupInfo(info).trimEnd().split('\n');
    assert.equal(lines.length, 29);
    assert.equal(lines[1], 'backup_name=before upgrade');
    assert.equal(lines[22], "snapshots_info={'provider': 'aws', 'provider_info': {'region': 'eu-west-1'}, 'snapshots': []}");
    const newer = serializeBackupInfo({ ...info, parent_backup_id: '20240101T000000' }).trimEnd().split('\n');
    assert.equal(newer.length, 35);
    assert.equal(newer[27], "snapshots_info={'provider': 'aws', 'provider_info': {'region': 'eu-west-1'}, 'snapshots': []}");
  });
});

describe('building and serialising values', () => {
  it('writes typed values in Barman form', () => {
    const info = newBackupInfo({
      backup_label: "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nLABEL: it's mine\n",
      begin_time: PyDateTime.fromFields({ year: 2024, month: 3, day: 1, hour: 10, minute: 0, second: 1, microsecond: 123456 }, 3600),
      end_time: PyDateTime.fromFields({ year: 2024, month: 3, day: 1, hour: 10, minute: 0, second: 5 }, -7 * 3600),
      children_backup_ids: ['20240302T000000'],
      tablespaces: [{ name: 'tbs1', oid: 16385, location: '/srv/tbs1' }],
      copy_stats: pyDict({ total_time: pyFloat(12), copy_time: pyFloat(11.25), number_of_workers: 1 }),
      included_files: ['/etc/pg/a.conf'],
      size: 1024,
      status: DONE,
      mode: 'rsync-exclusive',
    });
    const text = serializeBackupInfo(info);
    assert.match(text, /^backup_label="START WAL LOCATION: 0\/2000028 \(file 000000010000000000000002\)\\nLABEL: it's mine\\n"$/m);
    assert.match(text, /^begin_time=2024-03-01 10:00:01\.123456\+01:00$/m);
    assert.match(text, /^end_time=2024-03-01 10:00:05-07:00$/m);
    assert.match(text, /^children_backup_ids=20240302T000000$/m);
    assert.match(text, /^tablespaces=\[\('tbs1', 16385, '\/srv\/tbs1'\)\]$/m);
    assert.match(text, /^copy_stats=\{'total_time': 12\.0, 'copy_time': 11\.25, 'number_of_workers': 1\}$/m);
    assert.match(text, /^included_files=\['\/etc\/pg\/a\.conf'\]$/m);
    assert.match(text, /^size=1024$/m);
    const back = parseBackupInfo(text);
    assert.equal(serializeBackupInfo(back), text);
    assert.equal(back.backup_label, info.backup_label);
    assert.deepEqual(back.tablespaces, info.tablespaces);
    assert.deepEqual(back.copy_stats, info.copy_stats);
  });

  it('keeps each value on one line', () => {
    const info = newBackupInfo({ error: 'failure backup (line one\nline two)' });
    assert.match(serializeBackupInfo(info), /^error=failure backup \(line one line two\)$/m);
  });

  it('rejects non-integer numbers in int fields', () => {
    assert.throws(() => serializeBackupInfo(newBackupInfo({ size: 1.5 })), isBarmanError(/'size' must be an integer/));
  });
});

describe('reader rules', () => {
  it('skips blank and comment lines, strips around =, splits on the first =', () => {
    const info = parseBackupInfo(
      '\n# a comment\n   # indented comment\n  server_name = pg  \n\nerror=failure x (a=b)\r\nstatus= DONE\n\t\n',
    );
    assert.equal(info.server_name, 'pg');
    assert.equal(info.error, 'failure x (a=b)');
    assert.equal(info.status, DONE);
  });

  it('CRLF files', () => {
    const crlf = POSTGRES_BACKUP_INFO.replace(/\n/g, '\r\n');
    const info = parseBackupInfo(crlf);
    assert.equal(serializeBackupInfo(info), POSTGRES_BACKUP_INFO);
  });

  it('later duplicates win', () => {
    assert.equal(parseBackupInfo('status=STARTED\nstatus=DONE\n').status, DONE);
  });

  it("a newer Barman's key is kept verbatim and written back in its sorted place", () => {
    const text = 'mode=postgres\nstatus=DONE\nfuture_key=[1, 2]\nzz_other=None\n';
    const info = parseBackupInfo(text, '/var/lib/barman/pg/meta/20240101T000000-backup.info');
    assert.equal(info.status, DONE);
    assert.deepEqual(unknownBackupInfoKeys(info), ['future_key', 'zz_other']);
    const out = serializeBackupInfo({ ...info, status: FAILED });
    const keys = out.trimEnd().split('\n').map((l) => l.split('=')[0] ?? '');
    assert.deepEqual(keys, [...keys].sort());
    assert.match(out, /^future_key=\[1, 2\]$/m);
    assert.match(out, /^zz_other=None$/m);
    assert.match(out, /^status=FAILED$/m);
    assert.deepEqual(unknownBackupInfoKeys(parseBackupInfo(out)), ['future_key', 'zz_other']);
  });

  it('a key that cannot be a key is a malformed line', () => {
    assert.throws(() => parseBackupInfo('status=DONE\nBad Key=1\n', 'f.info'), isBarmanError(/Malformed line in f\.info: 'Bad Key=1'/));
    assert.throws(() => parseBackupInfo('=1\n', 'f.info'), isBarmanError(/Malformed line in f\.info/));
  });

  it('line without = → BarmanError', () => {
    assert.throws(() => parseBackupInfo('status DONE\n', 'x.info'), isBarmanError(/Malformed line in x\.info/));
  });

  const badValues: Array<[string, RegExp]> = [
    ['size=12.5', /Invalid value for 'size' in f: not an integer/],
    ['size=abc', /Invalid value for 'size'/],
    ['begin_time=yesterday', /Invalid value for 'begin_time' in f: Cannot parse datetime/],
    ['backup_label=[1]', /Invalid value for 'backup_label' in f: expected a Python string literal/],
    ["backup_label='unterminated", /Invalid value for 'backup_label' in f: Malformed Python literal/],
    ["tablespaces=[('a', 1)]", /Invalid value for 'tablespaces'.*\(name, oid, location\)/],
    ["tablespaces=[('a', '1', '/x')]", /Invalid value for 'tablespaces'.*\(str, int, str\)/],
    ["tablespaces={'a': 1}", /Invalid value for 'tablespaces'.*list/],
    ['copy_stats={1, 2}', /Invalid value for 'copy_stats'.*sets are not supported/],
  ];
  for (const [line, re] of badValues) {
    it(`rejects ${line}`, () => assert.throws(() => parseBackupInfo(`${line}\n`, 'f'), isBarmanError(re)));
  }

  it('accepts Python int() forms', () => {
    assert.equal(parseBackupInfo('size=+42\n').size, 42);
    assert.equal(parseBackupInfo('size=-1\n').size, -1);
    assert.equal(parseBackupInfo('size=1_000\n').size, 1000);
  });

  it('tablespaces given as lists or a tuple are accepted', () => {
    const info = parseBackupInfo("tablespaces=(['a', 1, '/a'], ('b', 2, '/b'))\n");
    assert.deepEqual(info.tablespaces, [
      { name: 'a', oid: 1, location: '/a' },
      { name: 'b', oid: 2, location: '/b' },
    ]);
  });
});

describe('non-canonical text', () => {
  it('is written back verbatim while the value is unchanged', () => {
    const text = [
      'backup_label=u"START WAL LOCATION: 0/2000028\\n"',
      'begin_time=2024-07-01 12:00:00.5',
      'end_time=2024-07-01T12:00:09.123456+02:00',
      "included_files=[ '/a.conf' ]",
      'size=+42',
      '',
    ].join('\n');
    const info = parseBackupInfo(text);
    assert.equal(info.begin_time?.format(), '2024-07-01 12:00:00.500000+02:00'); // naive → local
    assert.equal(info.end_time?.format(), '2024-07-01 12:00:09.123456+02:00');
    const out = serializeBackupInfo(info);
    assert.match(out, /^backup_label=u"START WAL LOCATION: 0\/2000028\\n"$/m);
    assert.match(out, /^begin_time=2024-07-01 12:00:00\.5$/m);
    assert.match(out, /^end_time=2024-07-01T12:00:09\.123456\+02:00$/m);
    assert.match(out, /^included_files=\[ '\/a\.conf' \]$/m);
    assert.match(out, /^size=\+42$/m);
    // the output is itself a valid file that parses to the same values
    const again = parseBackupInfo(out);
    assert.equal(again.begin_time?.epochMicros, info.begin_time?.epochMicros);
    assert.equal(serializeBackupInfo(again), out);
  });

  it('changed values are written canonically', () => {
    const info = parseBackupInfo("begin_time=2024-07-01 12:00:00.5\nincluded_files=[ '/a.conf' ]\nsize=+42\n");
    info.begin_time = parsePyDatetime('2024-07-01 12:00:01+02:00');
    info.size = 43;
    (info.included_files as PyValue[]).push('/b.conf'); // in-place mutation is detected too
    const out = serializeBackupInfo(info);
    assert.match(out, /^begin_time=2024-07-01 12:00:01\+02:00$/m);
    assert.match(out, /^size=43$/m);
    assert.match(out, /^included_files=\['\/a\.conf', '\/b\.conf'\]$/m);
  });

  it('spread copies stay correct', () => {
    const info = parseBackupInfo(RSYNC_BACKUP_INFO);
    const done = { ...info, status: DONE };
    assert.equal(serializeBackupInfo(done), in34Form(RSYNC_BACKUP_INFO).replace('status=WAITING_FOR_WALS', 'status=DONE'));
  });

  it('mutating copy_stats in place is written canonically', () => {
    const info = parseBackupInfo(RSYNC_BACKUP_INFO);
    (info.copy_stats as Map<PyValue, PyValue>).set('total_time', pyFloat(13));
    assert.match(serializeBackupInfo(info), /^copy_stats=\{'total_time': 13\.0, 'number_of_workers': 2,/m);
  });
});

describe('dumpBackupInfoFields', () => {
  it('gives the stored text of every field, null for None', () => {
    const d = dumpBackupInfoFields(parseBackupInfo(POSTGRES_BACKUP_INFO));
    assert.equal(Object.keys(d).length, 35);
    assert.equal(d.backup_label?.startsWith("'START WAL LOCATION"), true);
    assert.equal(d.children_backup_ids, '20240614T171709,20240615T171712');
    assert.equal(d.begin_time, '2024-06-13 17:17:09.382940+02:00');
    assert.equal(d.compression, null);
    assert.equal(d.snapshots_info, null);
    assert.equal(d.size, '31098880');
    assert.equal(d.tablespaces, null);
  });
});

describe('backup type', () => {
  it('follows mode prefix, then parent', () => {
    assert.equal(backupType({ mode: 'snapshot-concurrent', parent_backup_id: null }), 'snapshot');
    assert.equal(backupType({ mode: 'rsync-exclusive', parent_backup_id: null }), 'rsync');
    assert.equal(backupType({ mode: 'rsync-concurrent', parent_backup_id: 'x' }), 'rsync');
    assert.equal(backupType({ mode: 'postgres', parent_backup_id: '20240101T000000' }), 'incremental');
    assert.equal(backupType({ mode: 'postgres', parent_backup_id: null }), 'full');
    assert.equal(backupType({ mode: null, parent_backup_id: null }), 'full');
    assert.equal(backupType({ mode: 'passive', parent_backup_id: null }), 'full');
    assert.equal(isFull({ mode: 'postgres', parent_backup_id: '20240101T000000' }), false);
    assert.equal(isFull({ mode: 'rsync-concurrent', parent_backup_id: null }), true);
  });
});

describe('statuses', () => {
  it('constants and groups', () => {
    assert.deepEqual([...BACKUP_STATUSES], ['EMPTY', 'STARTED', 'WAITING_FOR_WALS', 'DONE', 'FAILED', 'SYNCING']);
    assert.deepEqual([...COPY_DONE].sort(), [DONE, WAITING_FOR_WALS]);
    assert.deepEqual([...NOT_EMPTY].sort(), [DONE, FAILED, STARTED, SYNCING, WAITING_FOR_WALS]);
    assert.deepEqual([...ARCHIVING].sort(), [DONE, STARTED, SYNCING, WAITING_FOR_WALS]);
    assert.equal(NOT_EMPTY.has(EMPTY), false);
    assert.equal(ARCHIVING.has(FAILED), false);
  });
});

describe('backup IDs', () => {
  it('isBackupId', () => {
    assert.equal(isBackupId('20180816T153846'), true);
    for (const s of ['20180816T15384', '20180816t153846', '20180816T1538460', ' 20180816T153846', 'latest', '2018-08-16T153846']) {
      assert.equal(isBackupId(s), false, s);
    }
  });

  it('newBackupId uses local time', () => {
    assert.equal(newBackupId(new Date('2018-08-16T13:38:46.999Z')), '20180816T153846');
    assert.equal(newBackupId(new Date('2024-12-31T23:05:06Z')), '20250101T000506');
    assert.ok(isBackupId(newBackupId()));
  });

  it('backupIdFromPath', () => {
    assert.equal(backupIdFromPath('/b/pg/meta/20240101T000000-backup.info'), '20240101T000000');
    assert.equal(backupIdFromPath('/b/pg/base/20240101T000000/backup.info'), '20240101T000000');
    assert.equal(backupIdFromPath('meta/my-odd-id-backup.info'), 'my-odd-id');
  });
});

describe('files', () => {
  it('write (0600, atomic) and read back', async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'backup-info-'));
    try {
      const file = path.join(dir, '20240613T112000-backup.info');
      const info = parseBackupInfo(RSYNC_BACKUP_INFO);
      info.status = DONE;
      await writeBackupInfoFile(file, info);
      const st = await fsp.stat(file);
      assert.equal(st.mode & 0o777, 0o600);
      assert.deepEqual(await fsp.readdir(dir), ['20240613T112000-backup.info']);
      assert.equal(await fsp.readFile(file, 'utf8'), in34Form(RSYNC_BACKUP_INFO).replace('status=WAITING_FOR_WALS', 'status=DONE'));
      const back = await readBackupInfoFile(file);
      assert.equal(back.status, DONE);
      assert.deepEqual(back.tablespaces, info.tablespaces);
      await assert.rejects(readBackupInfoFile(path.join(dir, 'missing')), { code: 'ENOENT' });
      await fsp.writeFile(path.join(dir, 'bad-backup.info'), 'frobnicate\n');
      await assert.rejects(readBackupInfoFile(path.join(dir, 'bad-backup.info')), isBarmanError(/bad-backup\.info: 'frobnicate'/));
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});
