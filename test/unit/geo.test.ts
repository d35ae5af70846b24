/**
 * Geo-redundancy logic without a network: Python's JSON text, the sync-info document (xlog.db
 * offsets, backups, configuration), the checks of a primary's answer, the JSON → backup.info of
 * a passive copy, the sync decisions, the lag, the resume state and the copy verification.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DONE, FAILED, SYNCING, WAITING_FOR_WALS, newBackupInfo, serializeBackupInfo, type BackupInfo } from '../../src/catalog/backup-info.js';
import { pyDict, pyFloat } from '../../src/catalog/pyliteral.js';
import { parseShortInterval } from '../../src/config/values.js';
import { rsyncErrorLine } from '../../src/backup/rsync-plan.js';
import { splitBucket, statsBytesReceived } from '../../src/backup/tree-copy.js';
import { computeSyncLag, syncCheckLines } from '../../src/geo/lag.js';
import { backupInfoFromPrimary, decideSync, isLocallyObsolete } from '../../src/geo/primary-backup.js';
import { parsePrimaryInfo, readSyncWalsInfo, syncInfoWords, writeSyncWalsInfo, type PrimaryBackup, type PrimaryInfo } from '../../src/geo/primary-info.js';
import { SyncState, verifyCopy } from '../../src/geo/sync-backup.js';
import { backupSyncJson, policyJson, selectWals, startingPoint, syncInfoConfig, walSyncJson } from '../../src/geo/sync-info.js';
import { walRelPath } from '../../src/geo/sync-wals.js';
import { pyJsonDumps, pyJsonString } from '../../src/util/pyjson.js';
import { PyDateTime } from '../../src/util/pytime.js';
import { makeTestServer } from '../helpers/server-fixture.js';

let tmpRoot = '';
let serial = 0;
before(async () => {
  tmpRoot = await fsp.mkdtemp(path.join(os.tmpdir(), 'barman-geo-'));
});
after(async () => {
  await fsp.rm(tmpRoot, { recursive: true, force: true });
});
const server = (extra: Record<string, string> = {}) => makeTestServer(path.join(tmpRoot, `s${++serial}`), extra).srv;

const W = (n: number) => `0000000100000000000000${n.toString(16).toUpperCase().padStart(2, '0')}`;
const line = (name: string, size = 16777216, time = '1704448800.0', comp = 'None') => `${name}\t${size}\t${time}\t${comp}\tNone\n`;

describe('Python json.dumps text', () => {
  it('indents like Python, keeps floats floats and escapes non-ASCII', () => {
    const doc = new Map<string, unknown>([
      ['a', 1],
      ['b', pyFloat(2)],
      ['c', []],
      ['d', {}],
      ['e', [1, 'x']],
      ['f', null],
      ['g', true],
      ['h', 'é\u007f"\n'],
      ['i', pyDict([['k', pyFloat(1e-5)]])],
    ]);
    const expected =
      '{\n    "a": 1,\n    "b": 2.0,\n    "c": [],\n    "d": {},\n    "e": [\n        1,\n        "x"\n    ],\n    "f": null,\n    "g": true,\n' +
      '    "h": "\\u00e9\\u007f\\"\\n",\n    "i": {\n        "k": 1e-05\n    }\n}';
    assert.equal(pyJsonDumps(doc as never), expected);
    assert.equal(pyJsonString('\u{1F600}'), '"\\ud83d\\ude00"');
  });
});

describe('sync-info: xlog.db from an offset', () => {
  const text = line(W(9)) + line(W(10)) + line(`${W(10)}.00000028.backup`, 300) + line(W(11), 5, '1704448803.25', 'gzip');
  const offsetOf = (name: string) => text.indexOf(name);

  it('starts at the position when the WAL there is the one named, else at the start', () => {
    assert.equal(startingPoint(text, W(10), offsetOf(W(10))), offsetOf(W(10)));
    assert.equal(startingPoint(text, W(11), offsetOf(W(10))), 0);
    assert.equal(startingPoint(text, null, 40), 0);
    assert.equal(startingPoint(text, W(10), 100000), 0);
  });

  it('lists from the oldest backup without LAST_WAL, after LAST_WAL with it', () => {
    const all = selectWals(text, null, null, W(10));
    assert.deepEqual(all.wals.map((w) => w.name), [W(10), `${W(10)}.00000028.backup`, W(11)]);
    assert.equal(all.lastName, W(11));
    assert.equal(all.lastPosition, offsetOf(W(11)));
    const next = selectWals(text, W(10), offsetOf(W(10)), W(10));
    assert.deepEqual(next.wals.map((w) => w.name), [`${W(10)}.00000028.backup`, W(11)]);
    const none = selectWals(text, W(11), offsetOf(W(11)), null);
    assert.deepEqual(none.wals, []);
    assert.equal(none.lastPosition, offsetOf(W(11)));
  });

  it("refuses a LAST_WAL older than the first or newer than the last WAL, with Barman's words", () => {
    assert.throws(() => selectWals(text, W(1), null, null), /^BarmanError: last_wal '000000010000000000000001' is older than the first available wal '000000010000000000000009'$/);
    assert.throws(() => selectWals(text, W(0x20), null, null), /is newer than the last available wal {2}'00000001000000000000000B'/);
  });

  it('gives 0 and an empty name for an empty catalog, and skips a torn last line', () => {
    assert.deepEqual(selectWals('', null, null, null), { wals: [], lastPosition: 0, lastName: '' });
    const torn = selectWals(text + W(12).slice(0, 10), null, null, null);
    assert.equal(torn.lastName, W(11));
  });

  it('gives each WAL as Barman does: sorted keys, time as a float, encryption only when set', () => {
    assert.equal(pyJsonDumps(walSyncJson({ name: W(1), size: 5, time: 1704448802, compression: null, encryption: null })), '{\n    "compression": null,\n    "name": "000000010000000000000001",\n    "size": 5,\n    "time": 1704448802.0\n}');
    assert.ok(walSyncJson({ name: W(1), size: 5, time: 1, compression: null, encryption: 'gpg' }).has('encryption'));
  });
});

describe('sync-info: backups and configuration', () => {
  const info: BackupInfo = newBackupInfo({
    status: DONE,
    backup_label: "START WAL LOCATION: 0/A000028 (file 00000001000000000000000A)\nCHECKPOINT LOCATION: 0/A000060\n",
    begin_offset: 40,
    begin_time: PyDateTime.fromFields({ year: 2024, month: 1, day: 5, hour: 10, minute: 0, second: 0, microsecond: 123456 }, 0),
    end_time: PyDateTime.fromFields({ year: 2024, month: 1, day: 5, hour: 10, minute: 5, second: 0 }, 0),
    begin_wal: W(10),
    end_wal: W(10),
    copy_stats: pyDict([['copy_time', pyFloat(1.5)], ['total_time', pyFloat(2)]]),
    tablespaces: [{ name: 'tbs1', oid: 16385, location: '/srv/tbs1' }],
    size: 1000,
    cluster_size: 5000,
    data_checksums: 'on',
    mode: 'postgres',
    version: 150004,
    timeline: 1,
  });

  it("gives a backup in Barman 3.4's JSON form, without the fields a Barman 3.4 passive would refuse", () => {
    const j = backupSyncJson('20240105T100000', info);
    const keys = [...j.keys()];
    assert.equal(keys.at(-1), 'backup_id');
    assert.deepEqual(keys.slice(0, -1), [...keys.slice(0, -1)].sort());
    for (const k of ['cluster_size', 'data_checksums', 'summarize_wal', 'parent_backup_id', 'children_backup_ids', 'encryption', 'backup_name', 'snapshots_info']) {
      assert.ok(!j.has(k), k);
    }
    assert.equal(j.get('backup_label'), "'START WAL LOCATION: 0/A000028 (file 00000001000000000000000A)\\nCHECKPOINT LOCATION: 0/A000060\\n'");
    assert.equal(j.get('begin_time'), 'Fri Jan  5 10:00:00 2024');
    assert.equal(j.get('begin_offset'), 40);
    assert.deepEqual(j.get('tablespaces'), [['tbs1', 16385, '/srv/tbs1']]);
    assert.match(pyJsonDumps(j), /"copy_stats": \{\n {8}"copy_time": 1\.5,\n {8}"total_time": 2\.0\n {4}\}/);
    assert.ok(backupSyncJson('20240105T100000', { ...info, parent_backup_id: '20240104T100000' }).has('parent_backup_id'));
  });

  it('reads that JSON back into the same backup.info (times to the second, in local time)', () => {
    const json = JSON.parse(pyJsonDumps(backupSyncJson('20240105T100000', info))) as PrimaryBackup;
    const back = backupInfoFromPrimary('20240105T100000', json);
    for (const k of ['backup_label', 'begin_offset', 'begin_wal', 'size', 'mode', 'version', 'timeline', 'status'] as const) assert.deepEqual(back[k], info[k], k);
    assert.deepEqual(back.tablespaces, info.tablespaces);
    assert.equal(back.begin_time?.epochSeconds, 1704448800);
    assert.match(serializeBackupInfo(back), /^begin_time=2024-01-05 \d\d:00:00[+-]\d\d:\d\d$/m);
    const iso = backupInfoFromPrimary('20240105T100000', { ...json, begin_time_iso: '2024-01-05 10:00:00.123456+00:00' });
    assert.equal(iso.begin_time?.microsecond, 123456);
    assert.throws(() => backupInfoFromPrimary('20240105T100000', { ...json, shiny_new_field: 1 }), /field barman-ts does not know: 'shiny_new_field'/);
    assert.throws(() => backupInfoFromPrimary('20240105T100000', { ...json, error: 'a\nb' }), /line break/);
    assert.throws(() => backupInfoFromPrimary('20240105T100000', { ...json, backup_id: '20990101T000000' }), /backup_id says/);
  });

  it("gives the configuration in Barman's order and forms, passwords redacted", () => {
    const srv = server({
      retention_policy: 'RECOVERY WINDOW OF 2 WEEKS',
      last_backup_maximum_age: '1 day',
      conninfo: 'host=x password=secret',
      backup_options: 'concurrent_backup',
      reuse_backup: 'off',
    });
    const cfg = syncInfoConfig(srv);
    assert.deepEqual([...cfg.keys()].slice(0, 6), ['msg_list', 'name', 'barman_home', 'barman_lock_directory', 'active', 'archiver']);
    assert.equal(cfg.get('retention_policy'), 'window 2 w');
    assert.equal(cfg.get('wal_retention_policy'), 'simple-wal 2 w');
    assert.equal(cfg.get('last_backup_maximum_age'), '1 day');
    assert.equal(cfg.get('conninfo'), 'host=x password=*REDACTED*');
    assert.equal(cfg.get('backup_options'), 'concurrent_backup');
    assert.equal(cfg.get('reuse_backup'), null);
    assert.equal(cfg.get('compression'), null);
    assert.equal(cfg.get('disabled'), false);
    assert.ok([...cfg.keys()].indexOf('wals_directory') < [...cfg.keys()].indexOf('worm_mode'), 'options newer than 3.4 come last');
    assert.equal(policyJson({ kind: 'redundancy', copies: 3, text: 'REDUNDANCY 3' }), 'redundancy 3 b');
    assert.equal(syncInfoConfig(server()).get('wal_retention_policy'), 'main');
  });
});

describe("passive: the primary's answer", () => {
  const good = {
    last_position: 84,
    last_name: W(11),
    backups: { '20240105T100000': { status: 'DONE', backup_id: '20240105T100000' } },
    wals: [{ name: W(11), size: 5, time: 1.5, compression: null }],
    version: '3.4.0',
    config: { name: 'pg', basebackups_directory: '/b/pg/base', wals_directory: '/b/pg/wals/', compression: null },
  };
  const withChange = (f: (d: Record<string, unknown>) => void) => {
    const d = JSON.parse(JSON.stringify(good)) as Record<string, unknown>;
    f(d);
    return JSON.stringify(d);
  };

  it('accepts a well-formed answer', () => {
    const p = parsePrimaryInfo(JSON.stringify(good));
    assert.equal(p.config.wals_directory, '/b/pg/wals');
    assert.equal(p.wals[0]?.encryption, null);
  });

  it('refuses cut, malformed or dangerous answers, saying what is wrong', () => {
    assert.throws(() => parsePrimaryInfo(JSON.stringify(good).slice(0, 50)), /^Error: not JSON/);
    assert.throws(() => parsePrimaryInfo('[]'), /not a JSON object/);
    assert.throws(() => parsePrimaryInfo(withChange((d) => (d.last_position = -1))), /last_position/);
    assert.throws(() => parsePrimaryInfo(withChange((d) => (d.last_name = '../../etc/passwd'))), /last_name: not a WAL file name/);
    assert.throws(() => parsePrimaryInfo(withChange((d) => (d.backups = { '../x': { status: 'DONE' } }))), /not a backup ID/);
    assert.throws(() => parsePrimaryInfo(withChange((d) => (d.wals = [{ name: '../../x', size: 1, time: 1 }]))), /wals\[0\]: not a WAL file name/);
    assert.throws(() => parsePrimaryInfo(withChange((d) => ((d.config as Record<string, unknown>).basebackups_directory = 'relative'))), /not an absolute path/);
    assert.throws(() => parsePrimaryInfo(withChange((d) => delete d.config)), /config: not an object/);
  });

  it('asks for sync-info with the config path when forwarded, never with position 0', () => {
    const srv = server({ primary_ssh_command: 'ssh barman@primary', forward_config_path: 'on' });
    assert.deepEqual(syncInfoWords(srv, null, null), ['barman', '-c', srv.global.configFile, 'sync-info', 'pg']);
    const plain = server({ primary_ssh_command: 'ssh barman@primary' });
    assert.deepEqual(syncInfoWords(plain, W(3), 0), ['barman', 'sync-info', 'pg', W(3)]);
    assert.deepEqual(syncInfoWords(plain, W(3), 42), ['barman', 'sync-info', 'pg', W(3), '42']);
  });

  it('keeps sync-wals.info as Barman writes it', async () => {
    const srv = server({ primary_ssh_command: 'ssh barman@primary' });
    assert.deepEqual(readSyncWalsInfo(srv), { lastWal: null, lastPosition: null });
    await fsp.mkdir(srv.wals_directory, { recursive: true });
    await writeSyncWalsInfo(srv, W(11), 84);
    assert.equal(fs.readFileSync(path.join(srv.wals_directory, 'sync-wals.info'), 'utf8'), `${W(11)}\t84`);
    assert.deepEqual(readSyncWalsInfo(srv), { lastWal: W(11), lastPosition: 84 });
    fs.writeFileSync(path.join(srv.wals_directory, 'sync-wals.info'), '\t0');
    assert.deepEqual(readSyncWalsInfo(srv), { lastWal: null, lastPosition: null });
    fs.writeFileSync(path.join(srv.wals_directory, 'sync-wals.info'), '../x\t3');
    assert.throws(() => readSyncWalsInfo(srv), /not a WAL file name/);
  });

  it('places WAL files in their hash directories, history files at the top', () => {
    assert.equal(walRelPath(W(11)), `0000000100000000/${W(11)}`);
    assert.equal(walRelPath('00000002.history'), '00000002.history');
  });
});

describe('passive: what sync-backup does', () => {
  const local = (status: string) => newBackupInfo({ status });
  const never = () => assert.fail('retention asked for nothing');

  it("follows Barman's decisions, counting a copy waiting for WAL as synced and a SYNCING leftover as incomplete", () => {
    assert.equal(decideSync('pg', 'X', false, null, 'pg', never).kind, 'refuse');
    assert.deepEqual(decideSync('pg', 'X', false, local(DONE), 'pg', never), { kind: 'nothing', message: 'Backup X is absent on pg server, but present locally (local copy only)' });
    assert.equal(decideSync('pg', 'X', false, local(WAITING_FOR_WALS), 'pg', never).kind, 'nothing');
    assert.deepEqual(decideSync('pg', 'X', false, local(FAILED), 'pg', never), { kind: 'purge', message: 'Backup X is absent on pg server and is incomplete locally' });
    assert.equal(decideSync('pg', 'X', false, local(SYNCING), 'pg', never).kind, 'purge');
    assert.deepEqual(decideSync('pg', 'X', true, local(DONE), 'pg', never), { kind: 'nothing', message: 'Backup X is already synced with pg server' });
    assert.deepEqual(decideSync('pg', 'X', true, null, 'pg', () => true), { kind: 'nothing', message: 'Remote backup pg/X is obsolete for local retention policies.' });
    assert.equal(decideSync('pg', 'X', true, local(FAILED), 'pg', () => false).kind, 'sync');
  });

  it('finds a backup the local retention policy would delete at once', () => {
    const srv = server({ primary_ssh_command: 'ssh x', retention_policy: 'REDUNDANCY 1' });
    const done = (id: string) => ({ id, info: newBackupInfo({ status: DONE }), infoFile: '' });
    const now = new Date('2024-02-01T00:00:00Z');
    assert.equal(isLocallyObsolete(srv, '20240101T000000', { status: DONE }, [done('20240102T000000')], new Map(), now), true);
    assert.equal(isLocallyObsolete(srv, '20240103T000000', { status: DONE }, [done('20240102T000000')], new Map(), now), false);
    assert.equal(isLocallyObsolete(server({ primary_ssh_command: 'ssh x' }), '20240101T000000', { status: DONE }, [done('20240102T000000')], new Map(), now), false);
    // A newer local copy complete but waiting for its WAL files counts as DONE (else sync-wals and retention wait for each other).
    const waiting = { id: '20240102T000000', info: newBackupInfo({ status: WAITING_FOR_WALS }), infoFile: '' };
    assert.equal(isLocallyObsolete(srv, '20240101T000000', { status: DONE }, [waiting], new Map(), now), true);
    const syncing = { id: '20240102T000000', info: newBackupInfo({ status: SYNCING }), infoFile: '' };
    assert.equal(isLocallyObsolete(srv, '20240101T000000', { status: DONE }, [syncing], new Map(), now), false, 'a copy in progress is no backup yet');
  });

  it('checks a copy against the listing: sizes, missing files; leftovers removed', async () => {
    const dest = path.join(tmpRoot, `copy${++serial}`);
    await fsp.mkdir(path.join(dest, 'data'), { recursive: true });
    fs.writeFileSync(path.join(dest, 'data', 'a'), 'aaaa');
    fs.writeFileSync(path.join(dest, 'data', '.b.x1Yz'), 'partial');
    fs.writeFileSync(path.join(dest, 'backup.info'), 'ours');
    const listing = [
      { name: 'data', kind: 'dir' as const, size: 0, mtimeSec: 0 },
      { name: 'data/a', kind: 'file' as const, size: 4, mtimeSec: 0 },
    ];
    const ok = await verifyCopy(dest, listing, new Set(['backup.info']));
    assert.deepEqual(ok, { files: 1, bytes: 4, removed: ['data/.b.x1Yz'] });
    assert.ok(fs.existsSync(path.join(dest, 'backup.info')));
    await assert.rejects(verifyCopy(dest, [...listing, { name: 'data/b', kind: 'file', size: 1, mtimeSec: 0 }], new Set()), /data\/b is missing in the copy/);
    await assert.rejects(verifyCopy(dest, [{ name: 'data/a', kind: 'file', size: 5, mtimeSec: 0 }], new Set(['backup.info'])), /data\/a has 4 bytes in the copy, 5 on the primary/);
  });

  it('remembers the files an interrupted copy completed, only while they are unchanged', async () => {
    const dest = path.join(tmpRoot, `state${++serial}`);
    await fsp.mkdir(dest, { recursive: true });
    const f = path.join(dest, 'f');
    fs.writeFileSync(f, 'hello');
    fs.utimesSync(f, 1700000000, 1700000000);
    const entry = { name: 'f', kind: 'file' as const, size: 5, mtimeSec: 1700000000 };
    const st = await SyncState.load(path.join(dest, '.barman-ts-sync'));
    assert.equal(st.has(dest, entry), false);
    st.add([entry]);
    assert.equal(st.pendingSize, 5);
    await st.flush(dest, process.env);
    fs.appendFileSync(path.join(dest, '.barman-ts-sync'), '{"n": "torn'); // a torn append is ignored
    const again = await SyncState.load(path.join(dest, '.barman-ts-sync'));
    assert.equal(again.has(dest, entry), true);
    assert.equal(again.has(dest, { ...entry, size: 6 }), false, 'changed on the primary');
    fs.utimesSync(f, 1700000100, 1700000100);
    assert.equal(again.has(dest, entry), false, 'changed here');
    await again.remove();
    assert.equal(fs.existsSync(path.join(dest, '.barman-ts-sync')), false);
  });

  it('splits rsync runs by size and reads the bytes rsync received', () => {
    const sizes = new Map([['a', 5], ['b', 5], ['c', 20]]);
    const parts = splitBucket({ names: ['a', 'b', 'c'], bytes: 30, force: false, wholeFile: true }, sizes, 10);
    assert.deepEqual(parts.map((p) => p.names), [['a', 'b'], ['c']]);
    assert.equal(splitBucket({ names: ['a'], bytes: 5, force: true, wholeFile: false }, sizes, 0).length, 1);
    assert.equal(statsBytesReceived('Number of files: 3\nTotal bytes sent: 1,024\nTotal bytes received: 38,458,453\n'), 38458453);
    assert.equal(statsBytesReceived('nothing'), 0);
    const enospc = 'rsync: [receiver] write failed on "/b/x": No space left on device (28)\nrsync error: error in file IO (code 11) at receiver.c(381)\nrsync: [generator] write error: Broken pipe (32)\n';
    assert.equal(rsyncErrorLine(enospc), 'rsync: [receiver] write failed on "/b/x": No space left on device (28)');
    assert.equal(rsyncErrorLine('rsync: connection unexpectedly closed\nrsync error: x\n'), 'rsync: connection unexpectedly closed');
  });
});

describe('passive: sync lag', () => {
  const primary = (lastName: string, wals: { name: string; time: number }[]): PrimaryInfo => ({
    last_position: 0,
    last_name: lastName,
    backups: {},
    wals: wals.map((w) => ({ ...w, size: 1, compression: null, encryption: null })),
    version: '3.4.0',
    config: { name: 'pg', basebackups_directory: '/b', wals_directory: '/w', compression: null },
  });
  const here = (names: string[]) => names.map((name) => ({ name, size: 1, time: 1, compression: null, encryption: null }));

  it('is the age of the last answer when nothing is missing', () => {
    const lag = computeSyncLag(primary(W(11), []), 1000, here([W(10), W(11)]), 1060);
    assert.deepEqual({ segments: lag.segments, seconds: lag.seconds }, { segments: 0, seconds: 60 });
  });

  it('counts missing segments and dates the lag from the oldest missing file', () => {
    const lag = computeSyncLag(primary(`${W(13)}.00000028.backup`, [{ name: W(12), time: 900 }, { name: W(13), time: 950 }]), 1000, here([W(10), W(11)]), 1100);
    assert.deepEqual({ segments: lag.segments, seconds: lag.seconds, newest: lag.primaryNewest }, { segments: 2, seconds: 200, newest: W(13) });
    const nothingHere = computeSyncLag(primary(W(12), [{ name: W(11), time: 990 }, { name: W(12), time: 995 }]), 1000, [], 1000);
    assert.equal(nothingHere.segments, 2);
  });

  it('gives the check lines, failing beyond sync_lag_maximum_age', () => {
    const lag = computeSyncLag(primary(W(11), []), 1000, here([W(11)]), 1000 + 7200);
    const [last, within] = syncCheckLines({ lag }, 86400, (1000 + 7200) * 1000);
    assert.deepEqual(last, { name: 'last sync', ok: true, hint: 'primary answered 2 hours ago' });
    assert.deepEqual(within, { name: 'sync lag', ok: true, hint: '0 WAL segments, 2 hours behind, interval provided: 1 day' });
    assert.equal(syncCheckLines({ lag }, 3600, 0)[1]?.ok, false);
    assert.match(syncCheckLines({ lag }, null, 0)[1]?.hint ?? '', /no sync_lag_maximum_age provided/);
    assert.deepEqual(syncCheckLines({ lag: null, reason: 'no answer' }, null, 0).map((l) => l.ok), [false, true]);
  });

  it('reads sync_lag_maximum_age in seconds to months', () => {
    assert.equal(parseShortInterval('90 seconds'), 90);
    assert.equal(parseShortInterval('15 minutes'), 900);
    assert.equal(parseShortInterval('1 hour'), 3600);
    assert.throws(() => parseShortInterval('soon'), /expected an interval/);
  });
});
