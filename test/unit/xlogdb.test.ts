import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { loadConfig, type ServerConfig } from '../../src/config/config.js';
import {
  appendXlogDb,
  formatXlogDb,
  formatXlogDbLine,
  parseXlogDb,
  parseXlogDbLine,
  readXlogDb,
  rebuildXlogDb,
  removeFromXlogDb,
  withXlogDb,
  xlogDbPath,
  type XlogDbEntry,
} from '../../src/catalog/xlogdb.js';
import { serverPaths } from '../../src/catalog/server-dirs.js';
import { BarmanError } from '../../src/util/errors.js';
import { pyFloatStr, pyStatMtime } from '../../src/util/pytime.js';

let tmpRoot = '';
let serial = 0;

before(async () => {
  tmpRoot = await fsp.mkdtemp(path.join(os.tmpdir(), 'barman-xlogdb-'));
});

after(async () => {
  await fsp.rm(tmpRoot, { recursive: true, force: true });
});

/** A fresh barman home with one server `pg`; extra server options as `key = value` lines. */
function makeServer(extra: Record<string, string> = {}): ServerConfig {
  const dir = path.join(tmpRoot, `t${++serial}`);
  fs.mkdirSync(dir, { recursive: true });
  const conf = path.join(dir, 'barman.conf');
  const lines = ['[barman]', `barman_home = ${dir}/home`, '', '[pg]', 'conninfo = host=127.0.0.1', 'backup_method = postgres', 'archiver = on'];
  for (const [k, v] of Object.entries(extra)) lines.push(`${k} = ${v}`);
  fs.writeFileSync(conf, `${lines.join('\n')}\n`);
  const srv = loadConfig(conf).servers.get('pg');
  assert.ok(srv, 'server pg configured');
  assert.deepEqual(srv.errors, []);
  return srv;
}

const e = (name: string, size: number | null, time: number | null, compression: string | null = null, encryption: string | null = null): XlogDbEntry => ({
  name,
  size,
  time,
  compression,
  encryption,
});

describe('xlog.db line format', () => {
  it('formats four TAB separated columns with Python float times and None (Barman 3.4 reads no fifth)', () => {
    assert.equal(
      formatXlogDbLine(e('000000010000000A000000FF', 2451234, 1718291829.7231345, 'gzip')),
      '000000010000000A000000FF\t2451234\t1718291829.7231345\tgzip\n',
    );
    assert.equal(formatXlogDbLine(e('00000002.history', 42, 1718291829)), '00000002.history\t42\t1718291829.0\tNone\n');
    assert.equal(formatXlogDbLine(e('X', 1, 2, 'gzip', '')), 'X\t1\t2.0\tgzip\n');
  });

  it('writes the fifth column, encryption, only for an encrypted file', () => {
    assert.equal(formatXlogDbLine(e('X', null, null, null, 'gpg')), 'X\tNone\tNone\tNone\tgpg\n');
    assert.equal(formatXlogDbLine(e('X', 10, 1.5, 'gzip', 'gpg')), 'X\t10\t1.5\tgzip\tgpg\n');
  });

  it('reads lines written by Barman with 3, 4 and 5 fields', () => {
    const text = [
      '000000010000000000000001\t16777216\t1718291829.0', // Barman 1.x: name, size, time
      '000000010000000000000002\t16777216\t1718291830.5\tNone', // 2.x: + compression
      '000000010000000000000003\t4022134\t1718291831.123456\tgzip', // 2.x compressed
      '000000010000000000000004\t3022134\t1718291832.25\tzstd\tNone', // 3.x: + encryption
      '000000010000000000000005\t5022134\t1718291833.5\tNone\tgpg',
      '000000010000000000000005.00000028.backup 370 1718291834.0 None None', // spaces
      '',
    ].join('\n');
    const entries = parseXlogDb(text);
    assert.deepEqual(entries, [
      e('000000010000000000000001', 16777216, 1718291829.0),
      e('000000010000000000000002', 16777216, 1718291830.5),
      e('000000010000000000000003', 4022134, 1718291831.123456, 'gzip'),
      e('000000010000000000000004', 3022134, 1718291832.25, 'zstd'),
      e('000000010000000000000005', 5022134, 1718291833.5, null, 'gpg'),
      e('000000010000000000000005.00000028.backup', 370, 1718291834.0),
    ]);
    // Written back, every line gets the 4-field form (5 for the encrypted one): 3.4 reads them all.
    assert.equal(
      formatXlogDb(entries.slice(0, 2)),
      '000000010000000000000001\t16777216\t1718291829.0\tNone\n000000010000000000000002\t16777216\t1718291830.5\tNone\n',
    );
    assert.equal(formatXlogDb(entries.slice(3, 5)), '000000010000000000000004\t3022134\t1718291832.25\tzstd\n000000010000000000000005\t5022134\t1718291833.5\tNone\tgpg\n');
  });

  it('round-trips times exactly (shortest repr, as Python str(float))', () => {
    const times = [1718291829.7231345, 1700000000.0000002, 1234567890.1, 1795322365.1570842, 0.5, 1e-5];
    for (const t of times) {
      const line = formatXlogDbLine(e('00000001.history', 1, t));
      const back = parseXlogDbLine(line.slice(0, -1));
      assert.equal(back?.time, t);
      assert.equal(formatXlogDbLine(back as XlogDbEntry), line);
    }
    assert.equal(pyFloatStr(1718291829), '1718291829.0');
  });

  it('ignores blank lines and a torn last line, rejects other malformed lines', () => {
    const good = '000000010000000000000001\t1\t2.0\tNone\n';
    assert.equal(parseXlogDb(`\n${good}\n\n`).length, 1);
    assert.equal(parseXlogDb(`${good}000000010000000000000002\t1`).length, 1); // torn append
    // parses, but unterminated: the next append truncates it, so it is not returned either
    assert.equal(parseXlogDb(`${good}000000010000000000000002\t1\t3.5`).length, 1);
    assert.throws(() => parseXlogDb(`000000010000000000000002\t1\n${good}`), BarmanError);
    assert.throws(() => parseXlogDb(`000000010000000000000002\tbig\t3.0\n${good}`), /line 1/);
    assert.throws(() => parseXlogDbLine('a b c d e f'), BarmanError);
    assert.equal(parseXlogDbLine('   '), null);
  });

  it('parses 200,000 lines quickly', () => {
    const lines: string[] = [];
    for (let i = 0; i < 200_000; i++) {
      const name = `00000001${(i >> 8).toString(16).toUpperCase().padStart(8, '0')}${(i & 0xff).toString(16).toUpperCase().padStart(8, '0')}`;
      lines.push(`${name}\t16777216\t${pyFloatStr(1718291829 + i / 7)}\tgzip\n`);
    }
    const text = lines.join('');
    const t0 = performance.now();
    const entries = parseXlogDb(text);
    const ms = performance.now() - t0;
    assert.equal(entries.length, 200_000);
    assert.ok(ms < 2000, `parse took ${ms.toFixed(0)} ms`);
    const t1 = performance.now();
    assert.equal(formatXlogDb(entries), text);
    assert.ok(performance.now() - t1 < 3000);
  });
});

describe('xlog.db files', () => {
  it('appends to the classic xlog.db with mode 0600, reads it back, and rewrites on removal', async () => {
    const srv = makeServer();
    const p = serverPaths(srv);
    assert.equal(xlogDbPath(srv), p.xlogdbFile);
    assert.equal(path.basename(p.xlogdbFile), 'xlog.db');
    const batch = [e('000000010000000000000001', 10, 1.5), e('000000010000000000000002', 20, 2.5, 'gzip'), e('00000002.history', 30, 3.5)];
    await appendXlogDb(srv, batch);
    await appendXlogDb(srv, [e('000000010000000000000003', 40, 4.5, 'zstd')]);
    assert.equal((fs.statSync(p.xlogdbFile).mode & 0o777).toString(8), '600');
    assert.deepEqual(await readXlogDb(srv), [...batch, e('000000010000000000000003', 40, 4.5, 'zstd')]);

    const inode = fs.statSync(p.xlogdbFile).ino;
    assert.equal(await removeFromXlogDb(srv, ['000000010000000000000002', 'NOT-THERE']), 1);
    assert.equal(
      fs.readFileSync(p.xlogdbFile, 'utf8'),
      '000000010000000000000001\t10\t1.5\tNone\n00000002.history\t30\t3.5\tNone\n000000010000000000000003\t40\t4.5\tzstd\n',
    );
    assert.notEqual(fs.statSync(p.xlogdbFile).ino, inode, 'rewritten through a temp file + rename');
    assert.equal((fs.statSync(p.xlogdbFile).mode & 0o777).toString(8), '600');
    assert.ok(!fs.existsSync(`${p.xlogdbFile}.tmp`));
    assert.equal(await removeFromXlogDb(srv, ['nothing']), 0);
  });

  it('never glues an append onto a torn line', async () => {
    const srv = makeServer();
    const p = serverPaths(srv);
    fs.mkdirSync(path.dirname(p.xlogdbFile), { recursive: true });
    fs.writeFileSync(p.xlogdbFile, '000000010000000000000001\t10\t1.5\tNone\n000000010000000000000002\t1');
    await appendXlogDb(srv, [e('000000010000000000000003', 40, 4.5)]);
    const names = (await readXlogDb(srv)).map((x) => x.name);
    assert.deepEqual(names, ['000000010000000000000001', '000000010000000000000003']);
    assert.equal(
      fs.readFileSync(p.xlogdbFile, 'utf8'),
      '000000010000000000000001\t10\t1.5\tNone\n000000010000000000000003\t40\t4.5\tNone\n',
    );
  });

  it('uses <server>-xlog.db when Barman >= 3.13 created it', async () => {
    const srv = makeServer();
    const p = serverPaths(srv);
    fs.mkdirSync(p.walsDir, { recursive: true });
    fs.writeFileSync(p.xlogdbFileNew, '000000010000000000000001\t10\t1.5\tNone\n');
    fs.writeFileSync(p.xlogdbFile, 'stale\t1\t1.0\n');
    assert.equal(xlogDbPath(srv), p.xlogdbFileNew);
    await appendXlogDb(srv, [e('000000010000000000000002', 20, 2.5)]);
    assert.deepEqual(
      (await readXlogDb(srv)).map((x) => x.name),
      ['000000010000000000000001', '000000010000000000000002'],
    );
    assert.equal(fs.readFileSync(p.xlogdbFile, 'utf8'), 'stale\t1\t1.0\n', 'legacy file untouched by appends');
  });

  it('serializes sessions under the xlogdb lock', async () => {
    const srv = makeServer();
    const order: string[] = [];
    const a = withXlogDb(srv, async (db) => {
      order.push('a-start');
      await db.append([e('000000010000000000000001', 1, 1.0)]);
      await new Promise((r) => setTimeout(r, 150));
      order.push('a-end');
    });
    await new Promise((r) => setTimeout(r, 30));
    const b = withXlogDb(srv, async (db) => {
      order.push('b-start');
      await db.append([e('000000010000000000000002', 1, 1.0)]);
    });
    await Promise.all([a, b]);
    assert.deepEqual(order, ['a-start', 'a-end', 'b-start']);
  });
});

describe('rebuild', () => {
  async function populate(srv: ServerConfig): Promise<void> {
    const w = serverPaths(srv).walsDir;
    const h1 = path.join(w, '0000000100000000');
    const h2 = path.join(w, '0000000200000000');
    fs.mkdirSync(h1, { recursive: true });
    fs.mkdirSync(h2, { recursive: true });
    fs.writeFileSync(path.join(h1, '000000010000000000000001'), Buffer.alloc(1024, 1));
    fs.writeFileSync(path.join(h1, '000000010000000000000002'), zlib.gzipSync(Buffer.alloc(1024, 2)));
    fs.writeFileSync(path.join(h1, '000000010000000000000002.00000028.backup'), 'START WAL LOCATION: 0/2000028\n');
    fs.writeFileSync(path.join(h1, '000000010000000000000003.tmp'), 'half written');
    fs.writeFileSync(path.join(h1, '000000010000000000000003.partial'), Buffer.alloc(100));
    fs.writeFileSync(path.join(h2, '000000020000000000000003'), Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]));
    fs.writeFileSync(path.join(w, '00000002.history'), '1\t0/3000000\tno recovery target specified\n');
    fs.writeFileSync(path.join(w, 'README'), 'unexpected');
    fs.utimesSync(path.join(h1, '000000010000000000000001'), 1718291829.25, 1718291829.25);
  }

  it('indexes segments, backup labels and history files, in name order, with magic-byte compression', async () => {
    const srv = makeServer();
    await populate(srv);
    const warnings: string[] = [];
    const counts = await rebuildXlogDb(srv, { onWarning: (m) => warnings.push(m) });
    assert.deepEqual(counts, { history: 1, backup_labels: 1, wal_file: 3 });
    const entries = await readXlogDb(srv);
    assert.deepEqual(
      entries.map((x) => [x.name, x.compression]),
      [
        ['000000010000000000000001', null],
        ['000000010000000000000002', 'gzip'],
        ['000000010000000000000002.00000028.backup', null],
        ['00000002.history', null],
        ['000000020000000000000003', 'zstd'],
      ],
    );
    const first = entries[0] as XlogDbEntry;
    const st = fs.statSync(path.join(serverPaths(srv).walsDir, '0000000100000000', first.name), { bigint: true });
    assert.equal(first.size, 1024);
    assert.equal(first.time, pyStatMtime(st.mtimeNs));
    assert.equal(warnings.length, 2, warnings.join('\n'));
    assert.ok(warnings.some((w) => w.includes('000000010000000000000003.partial')));
    assert.ok(warnings.some((w) => w.includes('README')));
    assert.ok(!warnings.some((w) => w.includes('.tmp')));
  });

  it('rebuilds a missing catalog on first read', async () => {
    const srv = makeServer();
    await populate(srv);
    assert.ok(!fs.existsSync(serverPaths(srv).xlogdbFile));
    assert.equal((await readXlogDb(srv)).length, 5);
    assert.ok(fs.existsSync(serverPaths(srv).xlogdbFile));
  });

  it('keeps the legacy xlog.db when rebuilding it, deletes it when rebuilding <server>-xlog.db', async () => {
    const srv = makeServer();
    await populate(srv);
    const p = serverPaths(srv);
    fs.writeFileSync(p.xlogdbFile, 'garbage that the rebuild replaces\n');
    await rebuildXlogDb(srv);
    assert.equal((await readXlogDb(srv)).length, 5);
    assert.ok(fs.existsSync(p.xlogdbFile));

    fs.writeFileSync(p.xlogdbFileNew, '');
    const counts = await rebuildXlogDb(srv);
    assert.deepEqual(counts, { history: 1, backup_labels: 1, wal_file: 3 });
    assert.ok(!fs.existsSync(p.xlogdbFile), 'legacy xlog.db removed');
    assert.equal(parseXlogDb(fs.readFileSync(p.xlogdbFileNew, 'utf8')).length, 5);
    assert.equal((fs.statSync(p.xlogdbFileNew).mode & 0o777).toString(8), '600');
  });

  it('writes an empty catalog for an empty archive', async () => {
    const srv = makeServer();
    assert.deepEqual(await rebuildXlogDb(srv), { history: 0, backup_labels: 0, wal_file: 0 });
    assert.equal(fs.readFileSync(serverPaths(srv).xlogdbFile, 'utf8'), '');
  });
});
