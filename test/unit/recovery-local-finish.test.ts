/**
 * LocalDestination details found in review: the signal file is written only after the restored
 * data is durable, and a delta restore protects the server logs while clearing what would
 * change how the restored server starts.
 */
import assert from 'node:assert/strict';
import { existsSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DELTA_CLEARED_FILES, LocalDestination, deltaRsyncArgs } from '../../src/recovery/destination.js';

let tmp: string;

before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'recovery-local-finish-'));
});

after(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

async function write(file: string, content: string | Buffer = 'x'): Promise<void> {
  await fsp.mkdir(path.dirname(file), { recursive: true });
  await fsp.writeFile(file, content);
}

const layout = (dest: string) => ({ dest, tablespaces: [], walName: 'pg_wal', backupId: '20240101T000000', stagingWal: null });

describe('LocalDestination.finish', () => {
  it('makes the data durable before the signal file exists', async () => {
    const dest = path.join(tmp, 'finish', 'data');
    await write(path.join(dest, 'PG_VERSION'), '15\n');
    // A `sync` first on PATH that records whether the signal file was already there.
    const bin = path.join(tmp, 'finish', 'bin');
    const log = path.join(tmp, 'finish', 'sync.log');
    await fsp.mkdir(bin, { recursive: true });
    await fsp.writeFile(path.join(bin, 'sync'), `#!/bin/sh\nif [ -e '${dest}/recovery.signal' ]; then echo signal >> '${log}'; else echo nosignal >> '${log}'; fi\n`, { mode: 0o755 });
    const env = { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` };
    const d = new LocalDestination(layout(dest), env);
    const how = await d.finish([{ rel: 'postgresql.auto.conf', text: "restore_command = 'x'\n", mode: 0o600 }], 'recovery.signal');
    assert.equal(how, 'syncfs');
    const calls = (await fsp.readFile(log, 'utf8')).trim().split('\n');
    assert.ok(calls.length > 0);
    assert.deepEqual([...new Set(calls)], ['nosignal'], 'every sync ran before the signal file was created');
    assert.equal(await fsp.readFile(path.join(dest, 'recovery.signal'), 'utf8'), '');
    assert.equal((await fsp.stat(path.join(dest, 'recovery.signal'))).mode & 0o777, 0o600);
    assert.equal(existsSync(path.join(dest, 'recovery.signal.tmp')), false);
  });
});

describe('LocalDestination delta restore', () => {
  it('rsync protects the excluded paths instead of deleting them', () => {
    const a = deltaRsyncArgs('/b/data', '/pg', ['log/*', 'pg_wal']);
    assert.equal(a.includes('--delete-excluded'), false);
    assert.ok(a.includes('--delete'));
    assert.deepEqual(a.slice(-4), ['--exclude=/log/*', '--exclude=/pg_wal', '/b/data/', '/pg/']);
  });

  it('keeps the server logs, clears signal files and old WAL, and never takes a pg_wal link', async () => {
    const src = path.join(tmp, 'delta', 'backup');
    const dest = path.join(tmp, 'delta', 'data');
    const elsewhere = path.join(tmp, 'delta', 'elsewhere');
    await write(path.join(src, 'PG_VERSION'), '15\n');
    await write(path.join(src, 'base', '1', '1259'), Buffer.alloc(8192, 1));
    await write(path.join(src, 'log', 'in-backup.log'), 'backup log');
    await fsp.mkdir(path.join(src, 'pg_tblspc'));
    await fsp.mkdir(elsewhere, { recursive: true });
    await fsp.symlink(elsewhere, path.join(src, 'pg_wal'));

    for (const f of ['PG_VERSION', 'base/1/1259', 'base/1/extra', 'log/postgresql.log', 'pg_log/old.log', 'pg_wal/000000010000000000000009', ...DELTA_CLEARED_FILES]) {
      await write(path.join(dest, f));
    }
    await fsp.mkdir(path.join(dest, 'pg_tblspc'));
    await fsp.symlink('/nowhere', path.join(dest, 'pg_tblspc', '99999'));

    const d = new LocalDestination(layout(dest), process.env);
    await d.copyBase({ dataDir: src, tarFormat: false, tablespaceDir: () => '/nonexistent' }, { delta: true, workers: 2, env: process.env });

    assert.equal((await fsp.readFile(path.join(dest, 'base', '1', '1259'))).length, 8192);
    assert.equal(existsSync(path.join(dest, 'base', '1', 'extra')), false, 'data files not in the backup are deleted');
    assert.equal(await fsp.readFile(path.join(dest, 'log', 'postgresql.log'), 'utf8'), 'x', 'server logs are kept');
    assert.equal(existsSync(path.join(dest, 'pg_log', 'old.log')), true);
    for (const f of DELTA_CLEARED_FILES) assert.equal(existsSync(path.join(dest, f)), false, `${f} is cleared`);
    assert.ok((await fsp.lstat(path.join(dest, 'pg_wal'))).isDirectory());
    assert.deepEqual(await fsp.readdir(path.join(dest, 'pg_wal')), ['archive_status']);
    assert.deepEqual(await fsp.readdir(path.join(dest, 'pg_tblspc')), []);
    assert.deepEqual(await fsp.readdir(elsewhere), []);
  });
});
