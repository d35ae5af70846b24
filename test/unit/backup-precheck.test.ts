/**
 * The checks `backup` runs before it starts: which failures stop it (all but Barman's list of
 * ignored checks: WAL arrival included, as Barman 3.4), the refusal as the CLI prints it with
 * nothing written, and the standby refusal without primary_conninfo. No PostgreSQL needed.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { classifyPrecheck, failedCheckLine } from '../../src/backup/precheck.js';
import { requirePrimaryForStandby } from '../../src/backup/standby.js';
import { BarmanError } from '../../src/util/errors.js';
import { makeCliFixture } from '../helpers/cli-fixture.js';

const fail = (name: string, hint = '') => ({ name, ok: false, hint });

describe('classifyPrecheck', () => {
  it('ignores the checks Barman ignores before a backup and blocks on the rest, WAL arrival included', () => {
    const results = [
      { name: 'PostgreSQL', ok: true, hint: '' },
      fail('minimum redundancy requirements', 'have 0 backups, expected at least 2'),
      fail('backup maximum age'),
      fail('failed backups', 'there are 1 failed backups'),
      fail('archiver errors'),
      fail('PostgreSQL server is standby', 'conninfo should point to a standby server if primary_conninfo is set'),
      fail('wal maximum age'),
      fail('WAL archive', 'please make sure WAL shipping is setup'),
      fail('receive-wal running', 'See the Barman log file for more details'),
      fail('replication slot', "slot 'barman' not active: is 'receive-wal' running?"),
      fail('Primary server is not a standby', 'cannot connect to the primary server: x'),
      fail('ssh', 'Connection refused'),
      fail('check timeout', 'barman check command timed out'),
    ];
    const c = classifyPrecheck(results);
    assert.deepEqual(
      c.ignored.map((r) => r.name),
      ['minimum redundancy requirements', 'backup maximum age', 'failed backups', 'archiver errors', 'PostgreSQL server is standby', 'wal maximum age'],
    );
    assert.deepEqual(c.blocking.map((r) => r.name), ['WAL archive', 'receive-wal running', 'replication slot', 'Primary server is not a standby', 'ssh', 'check timeout']);
  });

  it('prints a failed check as barman check does', () => {
    assert.equal(failedCheckLine(fail('ssh', 'Connection refused')), '\tssh: FAILED (Connection refused)');
    assert.equal(failedCheckLine(fail('PostgreSQL')), '\tPostgreSQL: FAILED');
  });
});

describe('requirePrimaryForStandby', () => {
  it('refuses a standby without primary_conninfo, with a message that names the option', () => {
    assert.throws(() => requirePrimaryForStandby({ name: 'sb', primary_conninfo: null }, true), (e: unknown) => e instanceof BarmanError && /set primary_conninfo/.test(e.message) && !e.message.includes('\n'));
    requirePrimaryForStandby({ name: 'sb', primary_conninfo: 'host=p' }, true);
    requirePrimaryForStandby({ name: 'pg', primary_conninfo: null }, false);
  });
});

describe('barman backup refused by its checks', () => {
  it('prints the refusal and the failing checks on stderr, exits 1 and records no backup', async () => {
    const fx = await makeCliFixture({
      prefix: 'bts-precheck-',
      // Nothing listens on port 1: the `PostgreSQL` check fails at once.
      server: { conninfo: 'host=127.0.0.1 port=1 user=barman dbname=postgres connect_timeout=5', streaming_conninfo: 'host=127.0.0.1 port=1 user=barman' },
      logFile: true,
    });
    const r = await fx.run('backup', 'pg');
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines[0], "ERROR: Impossible to start the backup. Check the log for more details, or run 'barman check pg'");
    assert.ok(lines.includes('\tPostgreSQL: FAILED'), r.stderr);
    assert.ok(lines.slice(1).every((l) => /^\t.+: FAILED/.test(l)), r.stderr);
    assert.equal(r.stdout, '');
    assert.deepEqual(await fsp.readdir(path.join(fx.srvDir, 'base')), []);
    const log = await fsp.readFile(path.join(fx.root, 'barman.log'), 'utf8');
    assert.match(log, /Check 'PostgreSQL' failed for server 'pg'/);
  });

  it('rejects a bad --check-timeout before doing anything', async () => {
    const fx = await makeCliFixture({ prefix: 'bts-precheck-', server: { conninfo: 'host=127.0.0.1 port=1' } });
    const r = await fx.run('backup', '--check-timeout', 'soon', 'pg');
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /--check-timeout/);
  });
});
