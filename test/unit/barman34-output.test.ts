/**
 * Golden tests of the output that scripts and monitoring read, against what Barman 3.4 printed
 * for the same hand-written catalog (barman34-catalog.ts, barman34-golden.ts): list-backups,
 * show-backup and status (console byte for byte; JSON: every key of Barman's with Barman's
 * value, and only the listed Barman 3.17 additions besides), show-servers keys and values,
 * `-v`, unknown commands, `receive-wal --stop` without a receive-wal, a bad option value,
 * Nagios perfdata of a disabled server. Real CLI, TZ=UTC, PostgreSQL not running.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { completedWords } from '../../src/cli/commands/restore.js';
import { BARMAN_TS_VERSION } from '../../src/version.js';
import { writeBarman34Catalog } from '../helpers/barman34-catalog.js';
import { BARMAN34_GOLDEN as G, differences, extraKeys } from '../helpers/barman34-golden.js';
import { makeCliFixture, type CliFixture } from '../helpers/cli-fixture.js';

const SERVER = {
  description: '"Golden test"',
  conninfo: 'host=127.0.0.1 port=1 user=barman password=secret connect_timeout=2',
  streaming_conninfo: 'host=127.0.0.1 port=1 user=barman connect_timeout=2',
  backup_method: 'postgres',
  archiver: 'on',
  minimum_redundancy: '0',
};

async function fixture(server: Record<string, string> = {}): Promise<CliFixture> {
  const f = await makeCliFixture({ prefix: 'barman34-golden-', global: { log_level: 'ERROR' }, server: { ...SERVER, ...server } });
  await writeBarman34Catalog(f.srvDir);
  return f;
}

const IDS = ['20240101T100000', '20240102T100000', '20240103T100000'] as const;
const SHOW_TXT = [G.show1_txt, G.show2_txt, G.show3_txt];
const SHOW_JSON = [G.show1_json, G.show2_json, G.show3_json];

/** Barman 3.17's additions to show-backup's JSON, the only keys Barman 3.4 does not print. */
const SHOW_BACKUP_ADDITIONS = new Set([
  '$.pg.backup_type',
  '$.pg.system_id',
  '$.pg.server_information',
  '$.pg.base_backup_information.backup_method',
  '$.pg.base_backup_information.compression',
  '$.pg.base_backup_information.encryption',
  '$.pg.base_backup_information.backup_size',
  '$.pg.base_backup_information.backup_size_bytes',
  '$.pg.base_backup_information.backup_size_with_wals',
  '$.pg.base_backup_information.backup_size_with_wals_bytes',
  '$.pg.base_backup_information.wal_size',
  '$.pg.base_backup_information.wal_size_bytes',
  '$.pg.base_backup_information.wal_num',
  '$.pg.base_backup_information.resources_saved',
  '$.pg.base_backup_information.resources_saved_bytes',
  '$.pg.base_backup_information.resources_saved_percentage',
]);

describe('list-backups as Barman 3.4', () => {
  it('console: byte for byte (no type column, tablespaces suffix)', async () => {
    const f = await fixture();
    const r = await f.run('list-backups', 'pg');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.equal(r.stdout, G.list_txt);
  });

  it("JSON: Barman's keys and values (tablespaces, retention_status '-'), plus backup_type only", async () => {
    const f = await fixture();
    const r = await f.run('-f', 'json', 'list-backups', 'pg');
    assert.equal(r.code, 0, r.stderr);
    const ours: unknown = JSON.parse(r.stdout);
    const theirs: unknown = JSON.parse(G.list_json);
    assert.deepEqual(differences(ours, theirs), []);
    assert.deepEqual(extraKeys(ours, theirs), ['$.pg[].backup_type']);
  });

  it('JSON with --minimal: the list of IDs', async () => {
    const f = await fixture();
    const r = await f.run('-f', 'json', 'list-backups', '--minimal', 'pg');
    assert.deepEqual(JSON.parse(r.stdout), { pg: [...IDS].reverse() });
  });
});

describe('show-backup as Barman 3.4', () => {
  for (const [i, id] of IDS.entries()) {
    it(`console of ${id}: byte for byte`, async () => {
      const f = await fixture();
      const r = await f.run('show-backup', 'pg', id);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, '');
      assert.equal(r.stdout, SHOW_TXT[i]);
    });

    it(`JSON of ${id}: Barman's keys and values, plus 3.17's additions only`, async () => {
      const f = await fixture();
      const r = await f.run('-f', 'json', 'show-backup', 'pg', id);
      assert.equal(r.code, 0, r.stderr);
      const ours: unknown = JSON.parse(r.stdout);
      const theirs: unknown = JSON.parse(SHOW_JSON[i] as string);
      assert.deepEqual(differences(ours, theirs), []);
      const extra = extraKeys(ours, theirs).filter((k) => !SHOW_BACKUP_ADDITIONS.has(k));
      assert.deepEqual(extra, []);
    });
  }

  it('JSON: compression_ratio and wal_rate are strings such as "93.75%" and "1.25/hour"', async () => {
    const f = await fixture();
    const r = await f.run('-f', 'json', 'show-backup', 'pg', IDS[0]);
    const wi = (JSON.parse(r.stdout) as { pg: { wal_information: Record<string, unknown> } }).pg.wal_information;
    assert.equal(wi.compression_ratio, '93.75%');
    assert.equal(wi.wal_rate, '1.25/hour');
  });
});

describe('status as Barman 3.4', () => {
  it('console: byte for byte while PostgreSQL does not answer', async () => {
    const f = await fixture();
    const r = await f.run('status', 'pg');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, G.status_txt);
  });

  it('JSON: the same keys (pg_version, ...) and messages', async () => {
    const f = await fixture();
    const r = await f.run('-f', 'json', 'status', 'pg');
    const ours: unknown = JSON.parse(r.stdout);
    assert.deepEqual(ours, JSON.parse(G.status_json));
  });
});

describe('show-servers as Barman 3.4', () => {
  // Values that depend on the machine or on the driver (libpq vs node-postgres), or that
  // barman-ts deliberately prints differently (passwords are always redacted).
  const MACHINE = new Set(['pg_basebackup_path', 'pg_basebackup_version', 'connection_error', 'conninfo']);

  it("JSON: every key of Barman's with Barman's value; the other keys are barman-ts options", async () => {
    const f = await fixture();
    const r = await f.run('-f', 'json', 'show-servers', 'pg');
    assert.equal(r.code, 0, r.stderr);
    const ours = (JSON.parse(r.stdout) as { pg: Record<string, unknown> }).pg;
    const theirs = JSON.parse(G.show_servers_json.replaceAll('@HOME@', f.home)) as Record<string, unknown>;
    for (const k of MACHINE) {
      assert.ok(k in ours, k);
      delete theirs[k];
    }
    assert.deepEqual(differences(ours, theirs), []);
    assert.equal(ours.conninfo, 'host=127.0.0.1 port=1 user=barman password=*REDACTED* connect_timeout=2');
    const { SERVER_OPTIONS } = await import('../../src/config/options.js');
    const known = new Set<string>([...SERVER_OPTIONS.map((o) => o.name), 'active_model']);
    assert.deepEqual(
      Object.keys(ours).filter((k) => !(k in theirs) && !MACHINE.has(k) && !known.has(k)),
      [],
    );
  });

  it('console: the same lines for the same keys', async () => {
    const f = await fixture();
    const r = await f.run('show-servers', 'pg');
    const lines = r.stdout.split('\n');
    assert.equal(lines[0], 'Server pg:');
    for (const l of [
      "\tbackup_options: BackupOptions({'concurrent_backup'})",
      '\trecovery_options: RecoveryOptions()',
      '\treuse_backup: None',
      '\twal_retention_policy: main',
      '\tmsg_list: []',
      '\tname: pg',
      '\tdisabled: False',
      '\tlast_backup_maximum_age: None',
      '\tserver_txt_version: None',
      '\txlogpos: None',
    ]) {
      assert.ok(lines.includes(l), `${l} missing in:\n${r.stdout}`);
    }
  });

  it('MAIN with a retention policy; the age of the last backup with last_backup_maximum_age', async () => {
    const f = await fixture({ retention_policy: 'REDUNDANCY 1', last_backup_maximum_age: '1 day' });
    const r = await f.run('show-servers', 'pg');
    assert.ok(r.stdout.includes('\twal_retention_policy: MAIN\n'), r.stdout);
    assert.match(r.stdout, /\tlast_backup_maximum_age: 1 day \(WARNING! latest backup is \d+ days?, .* old\)\n/);
  });
});

describe('check --nagios as Barman 3.4', () => {
  it("keeps the perfdata of a server disabled by its configuration, and lists 'configuration' among its failures", async () => {
    // Streaming-only archiving without slot_name: Barman 3.4 and barman-ts both disable it.
    const f = await fixture({ archiver: 'off', streaming_archiver: 'on' });
    const r = await f.run('check', 'all', '--nagios');
    assert.equal(r.code, 2, r.stderr);
    const first = r.stdout.split('\n')[0] ?? '';
    assert.match(first, /^BARMAN CRITICAL - server pg has issues \* pg FAILED: PostgreSQL, /);
    assert.match(first, /, configuration(, |\|)/);
    assert.ok(first.endsWith('|pg=20971520B pg_wals=2097167B'), first);
    assert.ok(r.stdout.includes('\npg.configuration: FAILED\n'), r.stdout);
  });
});

describe('a bad option value', () => {
  it("is ignored with Barman's warning, the default is used and the server works", async () => {
    const f = await fixture({ parallel_jobs: 'lots' });
    const r = await f.run('list-backups', 'pg');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, G.list_txt);
    assert.match(r.stderr, /^WARNING: Ignoring invalid configuration value 'lots' for key parallel_jobs in \[pg\] section: expected an integer \(.*barman\.conf:\d+\)\n$/);
    const s = await f.run('show-servers', 'pg');
    assert.ok(s.stdout.includes('\tparallel_jobs: 1\n'));
    assert.ok(s.stdout.includes('\tdisabled: False\n'));
  });
});

describe('command line', () => {
  it("-v and --version: Barman 3.4's line first, barman-ts's version next", async () => {
    const f = await fixture();
    for (const flag of ['-v', '--version']) {
      const r = await f.run(flag);
      assert.equal(r.code, 0);
      assert.equal(r.stdout, `3.4.0 Barman by EnterpriseDB (www.enterprisedb.com)\nbarman-ts ${BARMAN_TS_VERSION} (a drop-in replacement for Barman)\n`);
    }
  });

  it('an unknown command is a usage error (exit 2), with --help too and after help', async () => {
    const f = await fixture();
    for (const args of [['frobnicate'], ['frobnicate', '--help'], ['help', 'frobnicate'], ['-q', 'frobnicate', 'pg']]) {
      const r = await f.run(...args);
      assert.equal(r.code, 2, args.join(' '));
      assert.equal(r.stdout, '', args.join(' '));
      assert.equal(r.stderr, "barman: error: unknown command 'frobnicate' (run 'barman help' for the list of commands)\n", args.join(' '));
    }
  });

  it('no command and `help`: the general help on stdout, exit 0; `CMD --help` exits 0', async () => {
    const f = await fixture();
    for (const args of [[], ['help'], ['--help']]) {
      const r = await f.run(...args);
      assert.equal(r.code, 0, args.join(' '));
      assert.match(r.stdout, /^Usage: barman /, args.join(' '));
      assert.match(r.stdout, /list-backups/);
    }
    const r = await f.run('list-backups', '--help');
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^Usage: barman list-backups/);
  });
});

describe('receive-wal and recover, in Barman\'s words', () => {
  it('receive-wal --stop without a receive-wal running: an error, exit 1', async () => {
    const f = await fixture();
    const r = await f.run('receive-wal', '--stop', 'pg');
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, 'ERROR: Termination of receive-wal failed: no such process for server pg\n');
  });

  it('recover ends as Barman 3.4 ("Recovery completed"), restore as Barman 3.17', () => {
    assert.equal(completedWords('recover'), 'Recovery completed');
    assert.equal(completedWords('restore'), 'Restore operation completed');
  });
});
