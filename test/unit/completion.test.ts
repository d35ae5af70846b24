/**
 * scripts/barman-completion.bash in a real bash: the test sources it, sets COMP_WORDS and
 * COMP_CWORD as bash would, calls the completion function and reads COMPREPLY. `barman` on the
 * PATH is a wrapper around bin/barman.js; the catalog is a synthetic barman_home.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DONE, newBackupInfo, writeBackupInfoFile } from '../../src/catalog/backup-info.js';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { makeCliFixture, type CliFixture } from '../helpers/cli-fixture.js';

// dist/test/unit → repository root
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const SCRIPT = path.join(ROOT, 'scripts', 'barman-completion.bash');

let f: CliFixture;
let binDir: string;

/** COMPREPLY for the words typed so far (the last one is the word being completed). */
function complete(...words: string[]): Promise<string[]> {
  const quoted = words.map((w) => `'${w.replace(/'/g, `'\\''`)}'`).join(' ');
  const script = `source '${SCRIPT}'
COMP_WORDS=(${quoted}); COMP_CWORD=$(( \${#COMP_WORDS[@]} - 1 ))
_barman
printf '%s\\n' "\${COMPREPLY[@]}"`;
  return new Promise((resolve, reject) => {
    execFile('bash', ['--norc', '--noprofile', '-c', script], { cwd: f.root, env: { ...process.env, PATH: `${binDir}:${process.env.PATH ?? ''}` } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`));
      else resolve(stdout.split('\n').filter((l) => l !== ''));
    });
  });
}

describe('bash completion', () => {
  before(async () => {
    f = await makeCliFixture({ prefix: 'barman-completion-', server: { conninfo: 'host=127.0.0.1 port=1' } });
    await fsp.appendFile(f.configFile, '\n[other]\nconninfo = host=127.0.0.1 port=1\nbackup_method = postgres\narchiver = on\n');
    for (const id of ['20240101T100000', '20240102T100000']) {
      await fsp.mkdir(path.join(f.srvDir, 'base', id), { recursive: true });
      await writeBackupInfoFile(path.join(f.srvDir, 'base', id, 'backup.info'), newBackupInfo({ status: DONE, server_name: 'pg', begin_wal: null }));
    }
    binDir = path.join(f.root, 'bin');
    await fsp.mkdir(binDir);
    await fsp.writeFile(path.join(binDir, 'barman'), `#!/bin/sh\nexec '${process.execPath}' '${BARMAN_SCRIPT}' "$@"\n`, { mode: 0o755 });
  });

  it('subcommands (aliases included)', async () => {
    const all = await complete('barman', '');
    for (const c of ['backup', 'check', 'list-backups', 'metrics', 'restore', 'recover', 'switch-xlog']) assert.ok(all.includes(c), c);
    assert.ok(!all.includes('help'));
    assert.deepEqual((await complete('barman', 'list-s')).sort(), ['list-server', 'list-servers']);
  });

  it('global options and their values', async () => {
    assert.deepEqual((await complete('barman', '--co')).sort(), ['--colour', '--color', '--config'].sort());
    assert.ok((await complete('barman', '-')).includes('--log-level'));
    assert.deepEqual(await complete('barman', '-f', ''), ['console', 'json']);
    assert.deepEqual(await complete('barman', '--color', 'a'), ['always', 'auto']);
    assert.deepEqual(await complete('barman', '--log-level', 'W'), ['WARNING']);
  });

  it('per-command options', async () => {
    const opts = await complete('barman', 'metrics', '--');
    assert.ok(opts.includes('--output') && opts.includes('--no-checks'), opts.join(' '));
    const backup = await complete('barman', '-c', f.configFile, 'backup', '--wait');
    assert.ok(backup.includes('--wait') && backup.includes('--wait-timeout'), backup.join(' '));
  });

  it('server names from the configuration given with -c, and all', async () => {
    assert.deepEqual((await complete('barman', '-c', f.configFile, 'check', '')).sort(), ['all', 'other', 'pg']);
    assert.deepEqual(await complete('barman', '-c', f.configFile, '-q', 'show-backup', 'o'), ['other']);
    // An option value is not mistaken for the server argument.
    assert.deepEqual((await complete('barman', '-c', f.configFile, 'backup', '--name', 'nightly', '')).sort(), ['all', 'other', 'pg']);
  });

  it('backup IDs (and shortcuts) after the server', async () => {
    const ids = await complete('barman', '-c', f.configFile, 'show-backup', 'pg', '');
    assert.ok(ids.includes('20240101T100000') && ids.includes('20240102T100000'), ids.join(' '));
    assert.ok(ids.includes('latest') && ids.includes('oldest'));
    assert.deepEqual((await complete('barman', '-c', f.configFile, 'delete', 'pg', '2024010')).sort(), ['20240101T100000', '20240102T100000']);
    assert.deepEqual((await complete('barman', '-c', f.configFile, 'drill', 'pg', '20240102')).sort(), ['20240102T100000']);
  });

  it('nothing for commands without a server argument', async () => {
    assert.deepEqual(await complete('barman', '-c', f.configFile, 'cron', ''), []);
  });
});
