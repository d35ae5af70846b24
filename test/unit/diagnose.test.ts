/**
 * diagnose through the real CLI against a synthetic installation (no PostgreSQL: conninfo points
 * at a port where nothing listens), and its pure parts. The point that matters most: no password
 * from any option reaches stdout, stderr or the log file.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { lastArchivedWalPerTimeline, redactDeep } from '../../src/reporting/diagnose.js';
import { addSyntheticBackup } from '../helpers/catalog-fixture.js';
import { makeCliFixture } from '../helpers/cli-fixture.js';
import { VERSION } from '../../src/version.js';

const SECRETS = ['pw-conninfo-1', 'pw-streaming-2', 'pw-uri-3', 'pw-primary-4', 'pw-command-5', "pw 'quoted' 6"];

async function fixture() {
  const f = await makeCliFixture({
    prefix: 'barman-diagnose-',
    logFile: true,
    global: { log_level: 'DEBUG' },
    server: {
      description: '"Diagnose test"',
      conninfo: `host=127.0.0.1 port=1 user=barman password=${SECRETS[0]} connect_timeout=2`,
      streaming_conninfo: `host=127.0.0.1 port=1 user=streaming_barman password = ${SECRETS[1]}`,
      wal_conninfo: `postgresql://barman:${SECRETS[2]}@127.0.0.1:1/postgres`,
      primary_conninfo: `host=127.0.0.1 port=1 password='${SECRETS[5]!.replace(/'/g, "\\'")}' user=x password=${SECRETS[3]}`,
      post_backup_script: `env PGPASSWORD=${SECRETS[4]} /usr/local/bin/notify`,
    },
  });
  // One backup and a few WALs on two timelines.
  await addSyntheticBackup(f.srvDir, '20240101T100000', { version: 160002, size: 1024 });
  await fsp.mkdir(path.join(f.srvDir, 'wals'), { recursive: true });
  await fsp.writeFile(
    path.join(f.srvDir, 'wals', 'xlog.db'),
    [
      '000000010000000000000001\t100\t1704103200.0\tNone\tNone',
      '000000010000000000000002\t100\t1704103201.0\tgzip\tNone',
      '000000010000000000000002.00000028.backup\t100\t1704103202.0\tNone\tNone',
      '00000002.history\t40\t1704103203.0\tNone\tNone',
      '000000020000000000000003\t100\t1704103204.0\tNone\tNone',
      '',
    ].join('\n'),
  );
  return f;
}

describe('diagnose', () => {
  it('prints one sorted JSON document, indent 4, with every section', async () => {
    const f = await fixture();
    const r = await f.run('diagnose');
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as Record<string, Record<string, Record<string, unknown>>>;
    assert.match(r.stdout, /^\{\n {4}"global": \{\n {8}"config": \{/);
    assert.deepEqual(Object.keys(doc), ['global', 'models', 'servers']);
    const g = doc.global!;
    assert.deepEqual(g.config!.errors_list, []);
    assert.equal(g.config!.barman_home, f.home);
    assert.equal(g.system_info!.barman_ver, VERSION);
    assert.match(String(g.system_info!.timestamp), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/);
    assert.equal(g.system_info!.node_ver, process.version);
    const srv = doc.servers!.pg as Record<string, Record<string, unknown>>;
    assert.equal(srv.config!.description, 'Diagnose test');
    assert.equal(srv.config!.backup_method, 'postgres');
    assert.ok(Array.isArray(srv.msg_list));
    assert.equal(srv.status!.pg_version, 'FAILED trying to get PostgreSQL version');
    const backup = (srv.backups as Record<string, Record<string, unknown>>)['20240101T100000']!;
    assert.equal(backup.status, 'DONE');
    assert.equal(backup.end_time, 'Mon Jan  1 10:05:00 2024');
    const wals = srv.wals!.last_archived_wal_per_timeline as Record<string, Record<string, unknown>>;
    assert.deepEqual(Object.keys(wals), ['00000001', '00000002']);
    assert.equal(wals['00000001']!.name, '000000010000000000000002');
    assert.equal(wals['00000001']!.compression, 'gzip');
    assert.equal(wals['00000002']!.name, '000000020000000000000003');
    // Sorted keys at every level.
    const keys = Object.keys(srv.config!);
    assert.deepEqual(keys, [...keys].sort());
  });

  it('never shows a password: not on stdout, not on stderr, not in the log file', async () => {
    const f = await fixture();
    for (const args of [['diagnose'], ['diagnose', '--show-config-source'], ['-f', 'json', 'diagnose'], ['-d', 'diagnose']]) {
      const r = await f.run(...args);
      assert.equal(r.code, 0, r.stderr);
      JSON.parse(r.stdout);
      const log = await fsp.readFile(path.join(f.root, 'barman.log'), 'utf8').catch(() => '');
      for (const s of SECRETS) {
        for (const part of s.split(' ')) {
          if (part.length < 4) continue;
          assert.ok(!r.stdout.includes(part), `${args.join(' ')}: stdout shows ${part}`);
          assert.ok(!r.stderr.includes(part), `${args.join(' ')}: stderr shows ${part}`);
          assert.ok(!log.includes(part), `${args.join(' ')}: log shows ${part}`);
        }
      }
      assert.match(r.stdout, /password=\*REDACTED\*/);
      assert.match(r.stdout, /postgresql:\/\/barman:\*REDACTED\*@/);
    }
  });

  it('--show-config-source gives value and source of each option', async () => {
    const f = await fixture();
    const r = await f.run('diagnose', '--show-config-source');
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as { servers: { pg: { config: Record<string, { value: unknown; source: string }> } }; global: { config: Record<string, unknown> } };
    assert.deepEqual(doc.servers.pg.config.backup_method, { value: 'postgres', source: f.configFile });
    assert.deepEqual(doc.servers.pg.config.archiver, { value: true, source: f.configFile });
    assert.equal(doc.servers.pg.config.compression?.source, 'default');
    assert.deepEqual(doc.global.config.barman_home, { value: f.home, source: f.configFile });
  });

  it('pure parts: last WAL per timeline, deep redaction', () => {
    const e = (name: string) => ({ name, size: 1, time: 1.5, compression: null, encryption: null });
    assert.deepEqual(
      Object.fromEntries(Object.entries(lastArchivedWalPerTimeline([e('000000010000000000000005'), e('000000010000000000000004'), e('00000002.history')])).map(([k, v]) => [k, v.name])),
      { '00000001': '000000010000000000000005' },
    );
    assert.deepEqual(redactDeep({ a: ['x password=abc y'], b: { c: 'postgres://u:p@h/db' }, n: 1 }), {
      a: ['x password=*REDACTED* y'],
      b: { c: 'postgres://u:*REDACTED*@h/db' },
      n: 1,
    });
  });
});
