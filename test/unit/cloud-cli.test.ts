/**
 * The nine barman-cloud-* executables as a user meets them: --help, -V, usage errors (exit 3),
 * refusals of what is not supported yet (one line, exit 3). Nothing here talks to a store.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { run } from '../../src/util/proc.js';
import { mapPool } from '../../src/util/pool.js';

const REPO = path.dirname(path.dirname(BARMAN_SCRIPT));
const TOOLS = [
  'barman-cloud-wal-archive',
  'barman-cloud-wal-restore',
  'barman-cloud-backup',
  'barman-cloud-backup-list',
  'barman-cloud-backup-show',
  'barman-cloud-backup-delete',
  'barman-cloud-backup-keep',
  'barman-cloud-restore',
  'barman-cloud-check-wal-archive',
];
const exec = (tool: string, args: string[]) => run(process.execPath, [path.join(REPO, 'bin', `${tool}.js`), ...args], { env: { ...process.env, AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'y' } });

describe('barman-cloud-* command lines', () => {
  it('--help explains the command and its common options; -V prints the version', async () => {
    await mapPool(TOOLS, 3, async (tool) => {
      const help = await exec(tool, ['--help']);
      assert.equal(help.code, 0, `${tool}: ${help.stderr}`);
      assert.match(help.stdout, new RegExp(`Usage: ${tool} `));
      for (const opt of ['--cloud-provider', '--endpoint-url', '--aws-profile', '-t, --test']) assert.ok(help.stdout.includes(opt), `${tool} --help lacks ${opt}`);
      const v = await exec(tool, ['-V']);
      assert.equal(v.code, 0);
      assert.match(v.stdout, new RegExp(`^${tool} \\d`));
    });
  });

  it('usage errors and unsupported providers are exit 3 with one line', async () => {
    await mapPool(TOOLS, 3, async (tool) => {
      const none = await exec(tool, []);
      assert.equal(none.code, 3, `${tool}: ${none.stderr}`);
      const extra: Record<string, string[]> = {
        'barman-cloud-wal-archive': ['/tmp/000000010000000000000001'],
        'barman-cloud-wal-restore': ['000000010000000000000001', '/tmp/x'],
        'barman-cloud-restore': ['latest', '/tmp/x'],
        'barman-cloud-backup-show': ['latest'],
        'barman-cloud-backup-keep': ['latest', '-s'],
        'barman-cloud-backup-delete': ['-b', 'latest'],
      };
      const gcs = await exec(tool, ['--cloud-provider', 'google-cloud-storage', 'gs://b/p', 'srv', ...(extra[tool] ?? [])]);
      assert.equal(gcs.code, 3, `${tool}: ${gcs.stderr}`);
      assert.match(gcs.stderr, /google-cloud-storage is not supported yet/);
      assert.equal(gcs.stderr.trim().split('\n').length, 1);
    });
  });

  it('refuses snapshot backups and bad sizes before connecting', async () => {
    const snap = await exec('barman-cloud-backup', ['--snapshot-instance', 'vm', 's3://b', 'srv']);
    assert.equal(snap.code, 3);
    assert.match(snap.stderr, /not supported yet/);
    const size = await exec('barman-cloud-backup', ['-S', 'huge', 's3://b', 'srv']);
    assert.equal(size.code, 3);
    const name = await exec('barman-cloud-backup', ['-n', 'latest', 's3://b', 'srv']);
    assert.equal(name.code, 3);
  });
});
