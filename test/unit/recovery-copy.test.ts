import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  EarlyWriteback,
  copyTree,
  excluder,
  isTarBackup,
  parseTarName,
  scanTree,
  syncFilesystems,
  tarExtractArgs,
} from '../../src/recovery/copy.js';
import { DATA_EXCLUDES } from '../../src/recovery/recover.js';
import { runPool } from '../../src/util/pool.js';

let tmp: string;
before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'rec-copy-'));
});
after(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

describe('exclusions', () => {
  const ex = excluder(DATA_EXCLUDES);
  it('leaves out the contents of pg_wal, pg_xlog, pg_log and log, but keeps the directories', () => {
    for (const p of ['pg_wal/000000010000000000000001', 'pg_wal/archive_status', 'pg_xlog/x', 'pg_log/a.log', 'log/postgresql.log']) {
      assert.equal(ex(p, 'file'), true, p);
    }
    for (const p of ['pg_wal', 'pg_xlog', 'log', 'pg_log', 'base/1/log', 'base/pg_wal/x']) assert.equal(ex(p, 'dir'), false, p);
  });

  it('leaves out server state files at the top level only', () => {
    for (const p of ['postmaster.pid', 'postmaster.opts', 'recovery.conf', 'recovery.signal', 'standby.signal', 'tablespace_map', 'pg_tblspc/16385']) {
      assert.equal(ex(p, 'file'), true, p);
    }
    for (const p of ['base/postmaster.pid', 'backup_label', 'postgresql.conf', 'pg_tblspc', 'global/pg_control']) assert.equal(ex(p, 'file'), false, p);
  });
});

describe('tar backups', () => {
  it('recognises pg_basebackup tar names', () => {
    assert.deepEqual(parseTarName('base.tar'), { oid: null, compression: 'none', encrypted: false });
    assert.deepEqual(parseTarName('base.tar.gz'), { oid: null, compression: 'gzip', encrypted: false });
    assert.deepEqual(parseTarName('16385.tar.zst'), { oid: 16385, compression: 'zstd', encrypted: false });
    assert.deepEqual(parseTarName('16385.tar.lz4'), { oid: 16385, compression: 'lz4', encrypted: false });
    // encryption = gpg (Barman 3.14+): `.gpg` after the tar name
    assert.deepEqual(parseTarName('base.tar.gz.gpg'), { oid: null, compression: 'gzip', encrypted: true });
    assert.deepEqual(parseTarName('16385.tar.gpg'), { oid: 16385, compression: 'none', encrypted: true });
    assert.equal(parseTarName('pg_wal.tar'), null);
    assert.equal(parseTarName('base.tar.gz.gpg.tmp'), null);
    assert.equal(parseTarName('base.gpg'), null);
    assert.equal(parseTarName('backup_manifest'), null);
  });

  it('extracts with argument arrays, the right decompressor and anchored exclusions', () => {
    assert.deepEqual(tarExtractArgs('/b/base.tar.zst', '/d', 'zstd', ['pg_wal/*']), [
      '-x', '-f', '/b/base.tar.zst', '-C', '/d', '--preserve-permissions', '--anchored',
      '--exclude=pg_wal/*', '--exclude=./pg_wal/*', '--use-compress-program=zstd',
    ]);
    assert.equal(tarExtractArgs('/b/base.tar.gz', '/d', 'gzip', []).at(-1), '-z');
    assert.equal(tarExtractArgs('/b/base.tar.gz', '/d', 'gzip', [], 'pigz').at(-1), '--use-compress-program=pigz');
    assert.equal(tarExtractArgs('/b/base.tar.lz4', '/d', 'lz4', []).at(-1), '--use-compress-program=lz4');
    assert.equal(tarExtractArgs('/b/base.tar', '/d', 'none', []).at(-1), '--anchored');
  });

  it('tells a tar backup from a plain one', async () => {
    const d = path.join(tmp, 'tarcheck');
    await fsp.mkdir(d);
    assert.equal(await isTarBackup(d), false);
    await fsp.writeFile(path.join(d, 'base.tar.gz'), '');
    assert.equal(await isTarBackup(d), true);
    await fsp.writeFile(path.join(d, 'PG_VERSION'), '15');
    assert.equal(await isTarBackup(d), false);
    assert.equal(await isTarBackup(path.join(tmp, 'nope')), false);
  });
});

describe('copyTree', () => {
  it('copies files, modes, times, symlinks and empty directories like cp -a', async () => {
    const src = path.join(tmp, 'src');
    const when = new Date('2023-05-06T07:08:09.123Z');
    await fsp.mkdir(path.join(src, 'a', 'b'), { recursive: true });
    await fsp.mkdir(path.join(src, 'empty'));
    await fsp.mkdir(path.join(src, 'pg_wal'));
    await fsp.writeFile(path.join(src, 'a', 'b', 'f1'), Buffer.alloc(100000, 1), { mode: 0o640 });
    await fsp.writeFile(path.join(src, 'f2'), 'two', { mode: 0o600 });
    await fsp.writeFile(path.join(src, 'pg_wal', 'seg'), 'wal');
    await fsp.symlink('a/b/f1', path.join(src, 'link'));
    await fsp.chmod(path.join(src, 'a', 'b'), 0o750);
    for (const p of ['a/b/f1', 'f2', 'a/b', 'a']) await fsp.utimes(path.join(src, p), when, when);
    await fsp.chmod(src, 0o700);

    const scan = await scanTree(src, excluder(['pg_wal/*']));
    assert.equal(scan.fileCount, 2);
    assert.equal(scan.totalBytes, 100003);
    assert.deepEqual(scan.entries.map((e) => `${e.kind}:${e.rel}`), ['dir:a', 'dir:a/b', 'file:a/b/f1', 'dir:empty', 'file:f2', 'symlink:link', 'dir:pg_wal']);

    const dst = path.join(tmp, 'dst');
    let reported = 0;
    const stats = await copyTree(scan, dst, { workers: 3, onBytes: (n) => (reported += n) });
    assert.deepEqual(stats, { files: 2, bytes: 100003, dirs: 4, symlinks: 1 });
    assert.equal(reported, 100003);
    assert.deepEqual(await fsp.readFile(path.join(dst, 'a', 'b', 'f1')), Buffer.alloc(100000, 1));
    const f1 = await fsp.stat(path.join(dst, 'a', 'b', 'f1'));
    assert.equal(f1.mode & 0o777, 0o640);
    assert.equal(f1.mtime.getTime(), when.getTime());
    const b = await fsp.stat(path.join(dst, 'a', 'b'));
    assert.equal(b.mode & 0o777, 0o750);
    assert.equal(b.mtime.getTime(), when.getTime(), 'directory times are set after their contents');
    assert.equal(await fsp.readlink(path.join(dst, 'link')), 'a/b/f1');
    assert.equal(existsSync(path.join(dst, 'empty')), true);
    assert.deepEqual(await fsp.readdir(path.join(dst, 'pg_wal')), []);
    assert.equal((await fsp.stat(dst)).mode & 0o777, 0o700);
  });

  it('turns a symlinked pg_wal into a directory and never overwrites', async () => {
    const src = path.join(tmp, 'src2');
    await fsp.mkdir(src);
    await fsp.symlink('/somewhere/else', path.join(src, 'pg_wal'));
    await fsp.writeFile(path.join(src, 'f'), 'x');
    const dst = path.join(tmp, 'dst2');
    await copyTree(await scanTree(src), dst, { dirsInsteadOfLinks: new Set(['pg_wal']) });
    assert.equal((await fsp.lstat(path.join(dst, 'pg_wal'))).isDirectory(), true);
    await fsp.rm(path.join(dst, 'pg_wal'), { recursive: true });
    await assert.rejects(copyTree(await scanTree(src), dst, { dirsInsteadOfLinks: new Set(['pg_wal']) }), /EEXIST|cannot copy/);
  });
});

describe('durability and helpers', () => {
  it('syncs with syncfs, or falls back to fsync when sync -f cannot run', async () => {
    const d = path.join(tmp, 'durable');
    await fsp.mkdir(path.join(d, 'x'), { recursive: true });
    await fsp.writeFile(path.join(d, 'x', 'f'), 'data');
    assert.equal(await syncFilesystems([d], [tmp]), 'syncfs');
    assert.equal(await syncFilesystems([d], [tmp], { PATH: '/nonexistent' }), 'fsync');
    assert.equal(await syncFilesystems([path.join(tmp, 'missing')]), 'syncfs');
  });

  it('runPool bounds concurrency and reports the first failure', async () => {
    let running = 0;
    let peak = 0;
    await runPool([1, 2, 3, 4, 5, 6, 7], 3, async () => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, 5));
      running--;
    });
    assert.equal(peak, 3);
    await assert.rejects(
      runPool([1, 2, 3], 2, async (n) => {
        if (n === 2) throw new Error('boom');
      }),
      /boom/,
    );
    await runPool([], 4, async () => assert.fail('not called'));
  });

  it('early write-back runs sync rounds as bytes accumulate', async () => {
    const wb = new EarlyWriteback(tmp, process.env, 10);
    wb.add(5);
    assert.equal(wb.rounds, 0);
    wb.add(6);
    assert.equal(wb.rounds, 1);
    wb.add(100);
    await wb.drain();
    assert.equal(wb.rounds, 2, 'bytes added while a round runs start one more round');
  });

  it('early write-back starts no round once stopped, and stop waits for the one in flight', async () => {
    const wb = new EarlyWriteback(tmp, process.env, 10);
    wb.add(11);
    assert.equal(wb.rounds, 1);
    wb.add(100);
    await wb.stop();
    assert.equal(wb.rounds, 1, 'bytes added before stop start no round after it');
    wb.add(1000);
    assert.equal(wb.rounds, 1, 'bytes added after stop start no round');
    await wb.drain();
  });
});
