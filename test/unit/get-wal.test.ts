/**
 * `barman get-wal`, driven through the real CLI as PostgreSQL's restore_command would run it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as zlib from 'node:zlib';
import { loadConfig, type ServerConfig } from '../../src/config/config.js';
import { serverPaths } from '../../src/catalog/server-dirs.js';
import { archiveWal, walArchivePath } from '../../src/wal/archiver.js';
import { identifyCompression } from '../../src/wal/compression.js';
import { walLookupPaths } from '../../src/wal/get-wal.js';
import { hasProgram } from '../helpers/testing.js';
import { withSegmentHeader } from '../helpers/wal-segment.js';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/barman.js');
const SEG = 16 << 20;

let tmpRoot = '';
let conf = '';
let srv: ServerConfig;
let plainSrv: ServerConfig;
const data = new Map<string, Buffer>();

/** Segment-sized data with some structure (compressible) and a per-name signature. */
function segmentData(seed: number, size = SEG): Buffer {
  const buf = Buffer.alloc(size);
  let x = seed * 2654435761 || 1;
  for (let page = 0; page < size; page += 8192) {
    buf.writeUInt32LE(seed, page);
    buf.writeUInt32LE(page, page + 4);
    for (let i = page + 16; i < page + 2048; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      buf.writeUInt32LE((x >>> 0) % 1000, i);
    }
  }
  return buf;
}

interface Result {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

function barman(args: string[], env: NodeJS.ProcessEnv = {}): Result {
  const r = spawnSync(process.execPath, [BIN, '-c', conf, ...args], {
    env: { ...process.env, ...env },
    maxBuffer: 64 << 20,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

const S = (log: number, seg: number, tli = 1) =>
  `${tli.toString(16).toUpperCase().padStart(8, '0')}${log.toString(16).toUpperCase().padStart(8, '0')}${seg.toString(16).toUpperCase().padStart(8, '0')}`;

before(async () => {
  tmpRoot = await fsp.mkdtemp(path.join(os.tmpdir(), 'barman-getwal-'));
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
      'compression = gzip',
      'compression_level = low',
      '',
      '[plain]',
      'description = inactive server, no compression',
      'conninfo = host=127.0.0.1',
      'backup_method = postgres',
      'archiver = on',
      'active = false',
      '',
    ].join('\n'),
  );
  const cfg = loadConfig(conf);
  srv = cfg.servers.get('pg') as ServerConfig;
  plainSrv = cfg.servers.get('plain') as ServerConfig;
  assert.ok(srv && plainSrv);

  // Archive: 01..05 of log 0, a gap at 06, 07; FF of log 0 then 00 and 01 of log 1; a history file.
  // Segments are full size: archive-wal leaves segments of another size alone.
  const names = [S(0, 1), S(0, 2), S(0, 3), S(0, 4), S(0, 5), S(0, 7), S(0, 0xff), S(1, 0), S(1, 1), '00000002.history'];
  for (const s of [srv, plainSrv]) {
    const p = serverPaths(s);
    fs.mkdirSync(p.incomingDir, { recursive: true });
    fs.mkdirSync(p.streamingDir, { recursive: true });
    names.forEach((n, i) => {
      const content = n.endsWith('.history') ? Buffer.from('1\t0/5000000\tno recovery target specified\n') : withSegmentHeader(segmentData(i + 1), n);
      data.set(n, content);
      fs.writeFileSync(path.join(p.incomingDir, n), content);
    });
    const report = await archiveWal(s);
    assert.equal(report.archivedCount, names.length);
  }
  assert.equal(await identifyCompression(walArchivePath(srv, S(0, 1))), 'gzip');
});

after(async () => {
  await fsp.rm(tmpRoot, { recursive: true, force: true });
});

describe('get-wal', () => {
  it('sends the uncompressed WAL file on stdout and nothing else', () => {
    const r = barman(['get-wal', 'pg', S(0, 1)]);
    assert.equal(r.stderr, '');
    assert.equal(r.code, 0);
    assert.equal(r.stdout.length, SEG);
    assert.ok(r.stdout.equals(data.get(S(0, 1)) as Buffer));
  });

  it('sends history files from the root of wals/', () => {
    const r = barman(['get-wal', 'pg', '00000002.history']);
    assert.equal(r.code, 0);
    assert.ok(r.stdout.equals(data.get('00000002.history') as Buffer));
  });

  it('works through a shell redirection, like restore_command', () => {
    const dest = path.join(tmpRoot, 'RECOVERYXLOG');
    const r = spawnSync('/bin/sh', ['-c', `"$0" "$1" -c "$2" get-wal pg "$3" > "$4"`, process.execPath, BIN, conf, S(0, 2), dest]);
    assert.equal(r.status, 0, r.stderr.toString());
    assert.ok(fs.readFileSync(dest).equals(data.get(S(0, 2)) as Buffer));
  });

  it('works on inactive servers and with uncompressed archives', () => {
    const r = barman(['get-wal', 'plain', S(0, 3)]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(data.get(S(0, 3)) as Buffer));
  });

  it('writes DIR/<name> with -o, without leaving temporary files', () => {
    const dir = path.join(tmpRoot, 'spool');
    fs.mkdirSync(dir);
    const r = barman(['get-wal', '-o', dir, 'pg', S(0, 1)]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.length, 0);
    assert.deepEqual(fs.readdirSync(dir), [S(0, 1)]);
    assert.ok(fs.readFileSync(path.join(dir, S(0, 1))).equals(data.get(S(0, 1)) as Buffer));
  });

  it('exits 3 when the output directory cannot be written', () => {
    const r = barman(['get-wal', '-o', path.join(tmpRoot, 'no', 'such', 'dir'), 'pg', S(0, 1)]);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /^ERROR: cannot write the output file .*\n$/);
  });

  it('recompresses with -z/--gzip and -x', () => {
    for (const flag of ['-z', '--gzip', '-x']) {
      const r = barman(['get-wal', flag, 'plain', S(0, 2)]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(identifyCompression(r.stdout), 'gzip');
      assert.ok(zlib.gunzipSync(r.stdout).equals(data.get(S(0, 2)) as Buffer));
    }
  });

  it('recompresses with -j/--bzip2', { skip: hasProgram('bzip2') ? false : 'bzip2 not installed' }, () => {
    const r = barman(['get-wal', '-j', 'pg', S(0, 2)]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(identifyCompression(r.stdout), 'bzip2');
    const back = spawnSync('bzip2', ['-dc'], { input: r.stdout, maxBuffer: 64 << 20 });
    assert.ok(back.stdout.equals(data.get(S(0, 2)) as Buffer));
  });

  it('sends the stored bytes with --keep-compression', () => {
    const r = barman(['get-wal', '--keep-compression', 'pg', S(0, 1)]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(fs.readFileSync(walArchivePath(srv, S(0, 1)))));
    assert.equal(barman(['get-wal', '--keep-compression', '-z', 'pg', S(0, 1)]).code, 2);
  });

  it('finds files not yet archived in incoming/ and streaming/', () => {
    const p = serverPaths(srv);
    const inc = segmentData(100, 4096);
    const str = segmentData(101, 4096);
    fs.writeFileSync(path.join(p.incomingDir, S(2, 1)), inc);
    fs.writeFileSync(path.join(p.streamingDir, S(2, 2)), str);
    try {
      assert.ok(barman(['get-wal', 'pg', S(2, 1)]).stdout.equals(inc));
      assert.ok(barman(['get-wal', 'pg', S(2, 2)]).stdout.equals(str));
    } finally {
      fs.unlinkSync(path.join(p.incomingDir, S(2, 1)));
      fs.unlinkSync(path.join(p.streamingDir, S(2, 2)));
    }
  });

  it('looks for .partial files only with -P/--partial, and sends them as they are', () => {
    const p = serverPaths(srv);
    const partial = zlib.gzipSync(Buffer.from('gzip-looking partial content')); // never decompressed
    const name = S(3, 7);
    fs.writeFileSync(path.join(p.streamingDir, `${name}.partial`), partial);
    try {
      const without = barman(['get-wal', 'pg', name]);
      assert.equal(without.code, 1);
      assert.equal(without.stderr, `ERROR: WAL file '${name}' not found in server 'pg'\n`);
      for (const flag of ['-P', '--partial']) {
        const r = barman(['get-wal', flag, 'pg', name]);
        assert.equal(r.code, 0, r.stderr);
        assert.ok(r.stdout.equals(partial));
      }
    } finally {
      fs.unlinkSync(path.join(p.streamingDir, `${name}.partial`));
    }
  });

  it('checks places in the documented order', () => {
    const w = (...parts: string[]) => path.join(...parts);
    const p = serverPaths(srv);
    const n = S(0, 9);
    const hash = w(p.walsDir, '0000000100000000');
    assert.deepEqual(
      walLookupPaths(srv, n, true).map((c) => c.path),
      [
        w(hash, n),
        w(p.incomingDir, n),
        w(p.streamingDir, n),
        w(p.streamingDir, `${n}.partial`),
        w(p.streamingDir, n),
        w(hash, `${n}.partial`),
        w(p.incomingDir, `${n}.partial`),
        w(hash, n),
      ],
    );
    assert.equal(walLookupPaths(srv, n).length, 4);
  });

  it('prints up to N consecutive archived names with --peek, jumping to the next log', () => {
    const peek = (n: string, count: string) => {
      const r = barman(['get-wal', '--peek', count, 'pg', n]);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.toString().split('\n').filter(Boolean);
    };
    assert.deepEqual(peek(S(0, 1), '10'), [S(0, 1), S(0, 2), S(0, 3), S(0, 4), S(0, 5)], 'stops at the gap (segment 6)');
    assert.deepEqual(peek(S(0, 3), '2'), [S(0, 3), S(0, 4)]);
    // 0x100 is missing and a power of two: the walk continues at segment 0 of the next log.
    assert.deepEqual(peek(S(0, 0xff), '10'), [S(0, 0xff), S(1, 0), S(1, 1)]);
    // The rule applies to the first name too: 8 is missing and a power of two, log 1 follows.
    assert.deepEqual(peek(S(0, 8), '10'), [S(1, 0), S(1, 1)]);
    assert.deepEqual(peek(S(1, 2), '10'), [], 'missing, a power of two, and log 2 segment 0 is missing too');
    assert.deepEqual(peek(S(0, 6), '10'), [], 'missing start, not a power of two');
    assert.deepEqual(peek('00000002.history', '10'), ['00000002.history'], 'non-segment names: only themselves');
    assert.deepEqual(peek('00000003.history', '10'), [], 'if archived');
    assert.equal(barman(['get-wal', '-p', '3', 'pg', S(0, 5)]).stdout.toString(), `${S(0, 5)}\n`);
    assert.equal(barman(['get-wal', '-p', '2', 'pg', S(0, 7)]).stdout.toString(), `${S(0, 7)}\n${S(1, 0)}\n`);
  });

  it('rejects invalid WAL names with exit code 3 and one error line', () => {
    for (const bad of ['DUMMY', '../../etc/passwd', '00000001000000000000000G', `${S(0, 1)}/x`, `${S(0, 1)}\n`]) {
      const r = barman(['get-wal', 'pg', bad]);
      assert.equal(r.code, 3, bad);
      assert.equal(r.stdout.length, 0);
      const lines = r.stderr.split('\n').filter(Boolean);
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0] as string, /^ERROR: .* is not a valid WAL file name$/);
    }
  });

  it('reports a missing file with exit code 1', () => {
    const r = barman(['get-wal', 'pg', S(9, 9)]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout.length, 0);
    assert.equal(r.stderr, `ERROR: WAL file '${S(9, 9)}' not found in server 'pg'\n`);
  });

  it('names the SSH client in messages when run over SSH', () => {
    const r = barman(['get-wal', 'pg', S(9, 9)], { SSH_CONNECTION: '10.1.2.3 50000 10.0.0.1 22' });
    assert.equal(r.stderr, `ERROR: WAL file '${S(9, 9)}' not found in server 'pg' (SSH host: 10.1.2.3)\n`);
  });

  it('answers --test without looking at the WAL name', () => {
    for (const flag of ['-t', '--test']) {
      const r = barman(['get-wal', flag, 'pg', 'DUMMY']);
      assert.equal(r.code, 0);
      assert.equal(r.stdout.toString(), 'Ready to retrieve WAL files from the server pg\n');
    }
    assert.equal(barman(['get-wal', '--test', 'plain', 'DUMMY']).code, 0);
  });

  it('refuses unknown servers and `all`', () => {
    assert.equal(barman(['get-wal', 'nope', S(0, 1)]).stderr, "ERROR: Unknown server 'nope'\n");
    assert.equal(barman(['get-wal', 'all', S(0, 1)]).code, 1);
  });

  it('ends with an error, not a crash, when the reader goes away', async () => {
    const child = spawn(process.execPath, [BIN, '-c', conf, 'get-wal', 'pg', S(0, 1)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdout.once('data', () => child.stdout.destroy());
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    assert.equal(code, 1);
    assert.doesNotMatch(stderr, /EXCEPTION|at .*\.js:\d+/);
    assert.match(stderr, /^ERROR: /);
  });
});
