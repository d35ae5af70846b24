/**
 * Configuration models and `config-switch`, `config-update` (Barman 3.10+), and the Barman
 * options barman-ts does not support (warned about, `check` fails, the command refuses).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { loadConfig } from '../../src/config/config.js';
import { ineffectiveSettings, unsupportedSettings } from '../../src/config/support.js';
import { changeSetsFromJson, editIniLines } from '../../src/operations/config-update.js';
import { stagingPathOf } from '../../src/cli/commands/restore.js';
import { DONE, newBackupInfo, writeBackupInfoFile } from '../../src/catalog/backup-info.js';
import { makeCliFixture } from '../helpers/cli-fixture.js';

const MODELS = `
[pg-node2]
model = true
cluster = pg
conninfo = host=127.0.0.1 port=2 dbname=postgres
streaming_conninfo = host=127.0.0.1 port=2
description = "node 2"

[pg-node3]
model = true
cluster = pg
conninfo = host=127.0.0.1 port=3
immediate_checkpoint = on

[elsewhere]
model = true
cluster = other
conninfo = host=10.0.0.1
`;

async function fixture(server: Record<string, string> = {}) {
  const f = await makeCliFixture({ prefix: 'barman-models-', server: { conninfo: 'host=127.0.0.1 port=1', description: 'own', ...server } });
  await fsp.appendFile(f.configFile, MODELS);
  return f;
}

const activeFile = (srvDir: string) => path.join(srvDir, '.active-model.auto');

describe('configuration models', () => {
  it('are read with their options, apart from servers; a model without cluster is an error', async () => {
    const f = await fixture();
    const cfg = loadConfig(f.configFile);
    assert.deepEqual([...cfg.servers.keys()], ['pg']);
    assert.deepEqual([...cfg.models.keys()].sort(), ['elsewhere', 'pg-node2', 'pg-node3']);
    assert.equal(cfg.models.get('pg-node3')?.values.immediate_checkpoint, true);
    assert.equal(cfg.models.get('pg-node2')?.cluster, 'pg');
    await fsp.appendFile(f.configFile, '\n[broken]\nmodel = on\nbackup_directory = /x\nconninfo = y\n');
    const bad = loadConfig(f.configFile);
    assert.deepEqual(bad.errors, ['Parameter "cluster" is required in [broken] section.']);
    assert.ok(bad.warnings.includes('Invalid configuration option "backup_directory" in [broken] section.'));
  });

  it('config-switch applies a model: every later command sees its options', async () => {
    const f = await fixture();
    const r = await f.run('config-switch', 'pg', 'pg-node2');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Applying model 'pg-node2' to server 'pg'$/m);
    assert.match(r.stdout, /^Changing value of option 'conninfo' for server 'pg' from 'host=127\.0\.0\.1 port=1' to 'host=127\.0\.0\.1 port=2 dbname=postgres' through the model 'pg-node2'$/m);
    assert.match(r.stdout, /^Changing value of option 'description' for server 'pg' from 'own' to 'node 2' through the model 'pg-node2'$/m);
    assert.equal(fs.readFileSync(activeFile(f.srvDir), 'utf8'), 'pg-node2');

    const cfg = loadConfig(f.configFile);
    const srv = cfg.servers.get('pg');
    assert.equal(srv?.conninfo, 'host=127.0.0.1 port=2 dbname=postgres');
    assert.equal(srv?.description, 'node 2');
    const modelLine = fs.readFileSync(f.configFile, 'utf8').split('\n').indexOf('conninfo = host=127.0.0.1 port=2 dbname=postgres') + 1;
    assert.deepEqual(srv?.sources.conninfo, { file: f.configFile, line: modelLine }, 'the value comes from the model section');
    const status = await f.run('status', 'pg');
    assert.match(status.stdout, /\tActive configuration model: pg-node2/);
    const shown = await f.run('show-servers', 'pg');
    assert.match(shown.stdout, /\tconninfo: host=127\.0\.0\.1 port=2 dbname=postgres/);
    assert.match(shown.stdout, /\tactive_model: pg-node2/);

    const again = await f.run('config-switch', 'pg', 'pg-node2');
    assert.equal(again.code, 0);
    assert.match(again.stdout, /Model 'pg-node2' is already active for server 'pg', skipping\.\.\./);

    const third = await f.run('config-switch', 'pg', 'pg-node3');
    assert.match(third.stdout, /Changing value of option 'immediate_checkpoint' for server 'pg' from 'False' to 'True'/);
    assert.equal(loadConfig(f.configFile).servers.get('pg')?.conninfo, 'host=127.0.0.1 port=3', 'node3 over the server, not over node2');

    const reset = await f.run('config-switch', 'pg', '--reset');
    assert.equal(reset.code, 0);
    assert.match(reset.stdout, /Resetting the active model for the server pg/);
    assert.equal(fs.existsSync(activeFile(f.srvDir)), false);
    assert.equal(loadConfig(f.configFile).servers.get('pg')?.conninfo, 'host=127.0.0.1 port=1');
  });

  it('refuses an unknown model, a model of another cluster, and no model at all', async () => {
    const f = await fixture();
    const unknown = await f.run('config-switch', 'pg', 'nope');
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /ERROR: Unknown model 'nope'/);
    const other = await f.run('config-switch', 'pg', 'elsewhere');
    assert.equal(other.code, 1);
    assert.match(other.stderr, /ERROR: Model 'elsewhere' has 'cluster=other', which is not compatible with 'cluster=pg' from server 'pg'/);
    const none = await f.run('config-switch', 'pg');
    assert.equal(none.code, 1);
    assert.match(none.stderr, /Either a model name or '--reset' flag need to be given/);
    assert.equal(fs.existsSync(activeFile(f.srvDir)), false);
  });

  it('an active model that no longer exists disables the server until --reset', async () => {
    const f = await fixture();
    await fsp.writeFile(activeFile(f.srvDir), 'gone');
    const srv = loadConfig(f.configFile).servers.get('pg');
    assert.equal(srv?.disabled, true);
    assert.deepEqual(srv?.errors, ["Model 'gone' is set as the active model for the server 'pg' but the model does not exist."]);
    const check = await f.run('check', 'pg');
    assert.equal(check.code, 1);
    assert.match(check.stdout, /configuration: FAILED/);
    assert.equal((await f.run('config-switch', 'pg', '--reset')).code, 0);
    assert.equal(loadConfig(f.configFile).servers.get('pg')?.disabled, false);
  });
});

describe('config-update', () => {
  it('writes into the file that sets the option, else .barman.auto.conf, and the next load sees it', async () => {
    const f = await fixture({ archiver_batch_size: '10' });
    const json = JSON.stringify([
      { scope: 'server', server_name: 'pg', archiver_batch_size: '50', minimum_redundancy: 2 },
      { scope: 'model', model_name: 'pg-node3', immediate_checkpoint: 'off' },
      { scope: 'model', model_name: 'pg-new', cluster: 'pg', conninfo: 'host=127.0.0.1 port=9' },
    ]);
    const r = await f.run('config-update', json);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Changing value of option 'archiver_batch_size' for section 'pg' from '10' to '50' through config-update\.$/m);
    assert.match(r.stdout, /^Changing value of option 'minimum_redundancy' for section 'pg' from 'None' to '2' through config-update\.$/m);
    const main = fs.readFileSync(f.configFile, 'utf8');
    assert.match(main, /^archiver_batch_size = 50$/m);
    assert.doesNotMatch(main, /archiver_batch_size = 10/);
    assert.match(main, /\[pg-node3\][^[]*immediate_checkpoint = off/);
    const auto = fs.readFileSync(path.join(f.home, '.barman.auto.conf'), 'utf8');
    assert.match(auto, /^\[pg\]\nminimum_redundancy = 2\n/m);
    assert.match(auto, /^\[pg-new\]\ncluster = pg\nconninfo = host=127\.0\.0\.1 port=9\nmodel = on\n/m);
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(f.home, 'cfg_changes.queue'), 'utf8')), []);

    const cfg = loadConfig(f.configFile);
    assert.equal(cfg.servers.get('pg')?.archiver_batch_size, 50);
    assert.equal(cfg.servers.get('pg')?.minimum_redundancy, 2);
    assert.equal(cfg.models.get('pg-node3')?.values.immediate_checkpoint, false);
    assert.equal(cfg.models.get('pg-new')?.values.conninfo, 'host=127.0.0.1 port=9');
    assert.equal((await f.run('config-switch', 'pg', 'pg-new')).code, 0);
  });

  it('leaves out what cannot be written, with a warning, and refuses invalid JSON', async () => {
    const f = await fixture();
    const cfg = loadConfig(f.configFile);
    const warnings: string[] = [];
    const sets = changeSetsFromJson(
      cfg,
      [
        { scope: 'bogus', server_name: 'pg' },
        { scope: 'server', archiver: 'on' },
        { scope: 'server', server_name: 'pg-node2', archiver: 'on' },
        { scope: 'model', model_name: 'pg', archiver: 'on' },
        { scope: 'model', model_name: 'm-new', conninfo: 'x' },
        { scope: 'model', model_name: 'pg-node2', wals_directory: '/srv/w', archiver: 'on' },
        { scope: 'server', server_name: 'pg', no_such_option: '1', minimum_redundancy: 'lots', retention_policy: 'REDUNDANCY 3' },
      ],
      { warning: (m) => warnings.push(m) },
    );
    assert.deepEqual(
      sets.map((s) => [s.section, s.changes_set.map((c) => c.key)]),
      [
        ['pg-node2', ['archiver']],
        ['pg', ['retention_policy']],
      ],
    );
    for (const re of [
      /'scope' is invalid: 'bogus'/,
      /'server_name' is missing/,
      /'pg-node2' is a model, not a server/,
      /'pg' is a server, not a model/,
      /new model but 'cluster' is missing/,
      /'wals_directory' of model 'pg-node2' has been ignored because a model cannot set it/,
      /'no_such_option' of server 'pg' has been ignored because it is not a server option/,
      /'minimum_redundancy' of server 'pg' has been ignored because 'lots' is not a valid value/,
    ]) {
      assert.ok(warnings.some((w) => re.test(w)), `${re}: ${warnings.join(' | ')}`);
    }
    const bad = await f.run('config-update', '{not json');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /invalid JSON/);
  });

  it('edits INI text in place: replaces the line, adds to the section, or appends the section', () => {
    const text = ['[barman]\n', 'barman_home = /h\n', '\n', '[pg]\n', 'conninfo = a\n', 'archiver : off\n', '  continued\n', '# comment\n', '\n', '[other]\n', 'x = 1\n'];
    assert.deepEqual(editIniLines(text, 'pg', 'archiver', 'on').slice(3, 8), ['[pg]\n', 'conninfo = a\n', 'archiver = on\n', '# comment\n', '\n']);
    assert.deepEqual(editIniLines(text, 'pg', 'description', 'd').slice(3, 9), ['[pg]\n', 'conninfo = a\n', 'archiver : off\n', '  continued\n', 'description = d\n', '# comment\n']);
    assert.deepEqual(editIniLines(['[a]\n', 'k = v'], 'b', 'k', 'w'), ['[a]\n', 'k = v\n', '\n', '[b]\n', 'k = w\n']);
    assert.deepEqual(editIniLines([], 'b', 'k', 'w'), ['[b]\n', 'k = w\n']);
  });

  it('a change that cannot be written stays queued for the next run', async () => {
    const f = await fixture();
    // A change set queued by an earlier run, for a file that cannot be written.
    const queueFile = path.join(f.home, 'cfg_changes.queue');
    const stuck = { section: 'pg', changes_set: [{ key: 'minimum_redundancy', value: '3', config_file: '/proc/barman-ts-test/none.conf' }] };
    await fsp.writeFile(queueFile, JSON.stringify([stuck]));
    const r = await f.run('config-update', JSON.stringify([{ scope: 'server', server_name: 'pg', minimum_redundancy: '4' }]));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /ERROR: Unable to process a set of changes \(section 'pg'\): cannot write \/proc\/barman-ts-test\/none\.conf/);
    const queue = JSON.parse(fs.readFileSync(queueFile, 'utf8')) as { section: string }[];
    assert.equal(queue.length, 2, 'the stuck set and the new one wait, in order');
    assert.deepEqual(queue[0], stuck);
    assert.equal(fs.existsSync(path.join(f.home, '.barman.auto.conf')), false, 'nothing applied out of order');
  });
});

describe('Barman options barman-ts does not support', () => {
  it('are listed with one line each; combine_mode only warns', () => {
    const base = { backup_method: 'postgres', staging_location: 'local', recovery_staging_path: null, combine_mode: 'copy' } as const;
    assert.deepEqual(unsupportedSettings(base), []);
    assert.deepEqual(ineffectiveSettings(base), []);
    assert.deepEqual(
      unsupportedSettings({ ...base, backup_method: 'snapshot', staging_location: 'remote', recovery_staging_path: '/r' }).map((u) => [u.option, u.refusedBy]),
      [
        ['backup_method', 'backup'],
        ['staging_location', 'restore'],
        ['recovery_staging_path', 'restore'],
      ],
    );
    assert.match(ineffectiveSettings({ ...base, combine_mode: 'link' })[0] ?? '', /combine_mode = link: barman-ts does not restore incremental backups/);
  });

  it('warn on every command, make check fail, and backup refuse (snapshot)', async () => {
    const f = await makeCliFixture({
      prefix: 'barman-unsupported-',
      server: { conninfo: 'host=127.0.0.1 port=1', backup_method: 'snapshot', snapshot_instance: 'i-1', snapshot_disks: 'd1', snapshot_provider: 'gcp', staging_location: 'remote' },
    });
    const check = await f.run('check', 'pg');
    assert.equal(check.code, 1);
    assert.match(check.stderr, /WARNING: \[pg\] backup_method = snapshot: barman-ts does not support snapshot backups/);
    assert.match(check.stderr, /WARNING: \[pg\] staging_location = remote: barman-ts does not support staging on the recovery host/);
    assert.match(check.stdout, /\tconfiguration: FAILED \(not supported by barman-ts: backup_method, staging_location \(see the warnings\)\)/);
    const backup = await f.run('backup', 'pg');
    assert.equal(backup.code, 1);
    assert.equal(fs.readdirSync(path.join(f.srvDir, 'base')).length, 0, 'nothing written');
    const restore = await f.run('restore', '--recovery-staging-path', '/tmp/x', 'pg', 'latest', path.join(f.root, 'dest'));
    assert.equal(restore.code, 1);
    assert.match(restore.stderr, /--recovery-staging-path: barman-ts does not support staging on the recovery host/);
  });
});

describe('staging options of a restore', () => {
  it('--staging-path, then --local-staging-path, then staging_path, then local_staging_path', () => {
    const srv = { staging_path: '/srv/staging', local_staging_path: '/srv/old' };
    assert.equal(stagingPathOf({ stagingPath: '/a', localStagingPath: '/b' }, srv), '/a');
    assert.equal(stagingPathOf({ localStagingPath: '/b' }, srv), '/b');
    assert.equal(stagingPathOf({}, srv), '/srv/staging');
    assert.equal(stagingPathOf({}, { staging_path: null, local_staging_path: '/srv/old' }), '/srv/old');
    assert.equal(stagingPathOf({}, { staging_path: null, local_staging_path: null }), null);
  });

  it('snapshot-only restore options are refused for other backups', async () => {
    const f = await makeCliFixture({ prefix: 'barman-snapopts-', server: { conninfo: 'host=127.0.0.1 port=1' } });
    const id = '20240101T100000';
    await fsp.mkdir(path.join(f.srvDir, 'base', id, 'data'), { recursive: true });
    await writeBackupInfoFile(
      path.join(f.srvDir, 'base', id, 'backup.info'),
      newBackupInfo({ status: DONE, server_name: 'pg', mode: 'postgres', version: 150004, begin_wal: '000000010000000000000002', end_wal: '000000010000000000000002', timeline: 1 }),
    );
    const dest = path.join(f.root, 'dest');
    const r = await f.run('restore', '--aws-region', 'eu-west-1', '--gcp-zone', 'z', 'pg', id, dest);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /ERROR: --gcp-zone, --aws-region: only for snapshot backups \(backup 20240101T100000 is not one\)/);
    assert.equal(fs.existsSync(dest), false);
  });
});

