/**
 * `barman get-wal --batch N --accept-compression LIST` (what barman-wal-restore -p sends): files
 * stored with an algorithm the client decompresses travel as stored; others (custom) plain.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runBarman, syntheticWal, untar } from '../helpers/wal-tar.js';
import { loadConfig, type ServerConfig } from '../../src/config/config.js';
import { walArchivePath } from '../../src/wal/archiver.js';
import { compressBuffer, decompressBuffer, identifyCompression } from '../../src/wal/compression.js';
import { CLIENT_DECODABLE } from '../../src/wal/batch-protocol.js';

const content = (seed: number, size = 192 * 1024) => syntheticWal(seed, size);
const barman = (args: string[]) => runBarman(conf, args);
const S = (seg: number) => `0000000100000000${seg.toString(16).toUpperCase().padStart(8, '0')}`;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let tmpRoot = '';
let conf = '';
const plain = new Map<string, Buffer>();

/** What `dd conv=swab` (the custom filter here, its own inverse) makes of data of even length. */
function swab(b: Buffer): Buffer {
  const out = Buffer.from(b);
  return out.swap16();
}

const ALGOS = [...CLIENT_DECODABLE];

before(async () => {
  tmpRoot = await fsp.mkdtemp(path.join(os.tmpdir(), 'barman-getwal-accept-'));
  conf = path.join(tmpRoot, 'barman.conf');
  fs.writeFileSync(
    conf,
    [
      '[barman]',
      `barman_home = ${tmpRoot}/home`,
      `barman_user = ${os.userInfo().username}`,
      '',
      '[pg]',
      'conninfo = host=127.0.0.1',
      'backup_method = postgres',
      'archiver = on',
      '',
      '[cu]',
      'conninfo = host=127.0.0.1',
      'backup_method = postgres',
      'archiver = on',
      'compression = custom',
      'custom_compression_filter = dd conv=swab status=none',
      'custom_decompression_filter = dd conv=swab status=none',
      '',
    ].join('\n'),
  );
  const cfg = loadConfig(conf);
  const pg = cfg.servers.get('pg') as ServerConfig;
  const cu = cfg.servers.get('cu') as ServerConfig;
  const put = (srv: ServerConfig, name: string, bytes: Buffer) => {
    const file = walArchivePath(srv, name);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, bytes);
  };
  // pg: 01..06 one per client-decodable algorithm, 07 plain.
  for (const [i, algo] of ALGOS.entries()) {
    const d = content(i + 1);
    plain.set(S(i + 1), d);
    put(pg, S(i + 1), await compressBuffer(d, algo));
  }
  plain.set(S(7), content(7));
  put(pg, S(7), content(7));
  // cu: 01 custom (swapped bytes: no magic, only the server's filter undoes it), 02 zstd.
  put(cu, S(1), swab(content(101)));
  put(cu, S(2), await compressBuffer(content(102), 'zstd'));
});

after(async () => {
  await fsp.rm(tmpRoot, { recursive: true, force: true });
});

describe('get-wal --batch --accept-compression', () => {
  it('sends every client-decodable algorithm as stored; each decompresses bit for bit', async () => {
    const r = barman(['get-wal', '--batch', '8', '--accept-compression', ALGOS.join(','), 'pg', S(1)]);
    assert.equal(r.code, 0, r.stderr);
    const members = await untar(r.stdout);
    const files = members.filter((m) => m.name !== 'SHA256SUMS' && !m.name.endsWith('.sha256'));
    assert.deepEqual(files.map((m) => m.name), [1, 2, 3, 4, 5, 6, 7].map(S));
    // Each file is followed by its own checksum member (the client can use it before the end).
    assert.deepEqual(
      members.map((m) => m.name),
      [...[1, 2, 3, 4, 5, 6, 7].map(S).flatMap((n) => [n, `${n}.sha256`]), 'SHA256SUMS'],
    );
    for (const m of files) assert.equal(members.find((x) => x.name === `${m.name}.sha256`)?.data.toString(), `${sha(m.data)} *${m.name}\n`);
    const pg = loadConfig(conf).servers.get('pg') as ServerConfig;
    for (const [i, m] of files.entries()) {
      assert.ok(m.data.equals(fs.readFileSync(walArchivePath(pg, m.name))), `${m.name} as stored`);
      assert.equal(identifyCompression(m.data), i < ALGOS.length ? ALGOS[i] : null, m.name);
      assert.ok((await decompressBuffer(m.data)).equals(plain.get(m.name) as Buffer), `${m.name} decompressed`);
    }
    const sums = members.find((m) => m.name === 'SHA256SUMS')?.data.toString().split('\n').filter(Boolean);
    assert.deepEqual(sums, files.map((m) => `${sha(m.data)} *${m.name}`));
  });

  it('sends no per-file checksum members without --accept-compression (older clients)', async () => {
    const r = barman(['get-wal', '--batch', '3', 'pg', S(1)]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await untar(r.stdout)).map((m) => m.name), [S(1), S(2), S(3), 'SHA256SUMS']);
  });

  it('sends plain what the client did not list', async () => {
    const r = barman(['get-wal', '--batch', '4', '--accept-compression', 'zstd,unknown-future-algo', 'pg', S(1)]);
    assert.equal(r.code, 0, r.stderr);
    const members = await untar(r.stdout);
    const byName = new Map(members.map((m) => [m.name, m.data]));
    assert.ok(byName.get(S(1))?.equals(plain.get(S(1)) as Buffer), 'gzip sent plain');
    assert.equal(identifyCompression(byName.get(S(4)) as Buffer), 'zstd', 'zstd as stored');
  });

  it('sends custom plain: only the server has its filter', async () => {
    const r = barman(['get-wal', '--batch', '4', '--accept-compression', ALGOS.join(','), 'cu', S(1)]);
    assert.equal(r.code, 0, r.stderr);
    const members = await untar(r.stdout);
    assert.deepEqual(members.map((m) => m.name), [S(1), `${S(1)}.sha256`, S(2), `${S(2)}.sha256`, 'SHA256SUMS']);
    assert.ok(members[0]?.data.equals(content(101)), 'custom decompressed by the server');
    assert.equal(identifyCompression(members[2]?.data as Buffer), 'zstd');
    assert.ok((await decompressBuffer(members[2]?.data as Buffer)).equals(content(102)));
  });

  it('needs --batch and excludes --keep-compression (exit 2, nothing sent)', () => {
    for (const args of [['--accept-compression', 'zstd'], ['--batch', '2', '--keep-compression', '--accept-compression', 'zstd']]) {
      const r = barman(['get-wal', ...args, 'pg', S(1)]);
      assert.equal(r.code, 2, args.join(' '));
      assert.equal(r.stdout.length, 0);
    }
  });
});
