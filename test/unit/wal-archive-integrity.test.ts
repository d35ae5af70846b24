/**
 * WAL archive edge cases: a torn last xlog.db line, files that are not (yet) WAL segments in
 * incoming/ and streaming/, and get-wal racing archive-wal.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import * as zlib from 'node:zlib';
import { loadConfig, type ServerConfig } from '../../src/config/config.js';
import { newBackupInfo } from '../../src/catalog/backup-info.js';
import { saveBackupInfo } from '../../src/catalog/catalog.js';
import { serverPaths } from '../../src/catalog/server-dirs.js';
import { formatXlogDbLine, readXlogDb } from '../../src/catalog/xlogdb.js';
import { BarmanError } from '../../src/util/errors.js';
import { archiveWal, walArchivePath } from '../../src/wal/archiver.js';
import { sendWal } from '../../src/wal/get-wal.js';
import { withSegmentHeader, writeSparseSegment } from '../helpers/wal-segment.js';

const SEG = 16 << 20;
const S1 = '000000010000000000000001';
const S2 = '000000010000000000000002';
const S3 = '000000010000000000000003';

let tmpRoot = '';
let serial = 0;

before(() => {
  tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'bts-walint-'));
});

after(() => {
  fs.rmSync(tmpRoot, { recursive: true, force: true });
});

interface TestServer {
  srv: ServerConfig;
  incoming: string;
  streaming: string;
  errors: string;
  xlogdb: string;
}

function makeServer(extra: Record<string, string> = {}): TestServer {
  const dir = path.join(tmpRoot, `t${++serial}`);
  fs.mkdirSync(dir, { recursive: true });
  const conf = path.join(dir, 'barman.conf');
  const opts: Record<string, string> = { conninfo: 'host=127.0.0.1', backup_method: 'postgres', archiver: 'on', ...extra };
  fs.writeFileSync(conf, `[barman]\nbarman_home = ${dir}/home\n\n[pg]\n${Object.entries(opts).map(([k, v]) => `${k} = ${v}`).join('\n')}\n`);
  const srv = loadConfig(conf).servers.get('pg');
  assert.ok(srv);
  const p = serverPaths(srv);
  fs.mkdirSync(p.incomingDir, { recursive: true });
  fs.mkdirSync(p.streamingDir, { recursive: true });
  return { srv, incoming: p.incomingDir, streaming: p.streamingDir, errors: p.errorsDir, xlogdb: p.xlogdbFile };
}

/** Segment `name` (its long page header first), `size` bytes, different per seed. */
function segment(seed: number, name = S1, size = SEG): Buffer {
  const buf = Buffer.alloc(size);
  for (let i = 0; i < size; i += 8192) buf.writeUInt32LE((seed * 2654435761 + i) >>> 0, i);
  return withSegmentHeader(buf, name);
}

function put(dir: string, name: string, data: Buffer | string, ageSeconds?: number): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, data);
  if (ageSeconds !== undefined) {
    const t = Date.now() / 1000 - ageSeconds;
    fs.utimesSync(file, t, t);
  }
  return file;
}

const names = async (srv: ServerConfig) => (await readXlogDb(srv)).map((e) => e.name);
const listErrors = (t: TestServer) => (fs.existsSync(t.errors) ? fs.readdirSync(t.errors) : []);

describe('archive-wal and a torn last xlog.db line', () => {
  it('re-adds the catalog line of an archived file whose line was torn', async () => {
    const t = makeServer();
    const d1 = segment(1);
    const d2 = segment(2, S2);
    put(t.incoming, S1, d1);
    put(t.incoming, S2, d2);
    await archiveWal(t.srv);
    // A crash during the append of S2's line: complete fields, no newline. The source of S2 was
    // not removed yet, so the next run meets it as an identical duplicate.
    const text = fs.readFileSync(t.xlogdb, 'latin1');
    assert.ok(text.endsWith('\n'));
    fs.writeFileSync(t.xlogdb, text.slice(0, -1));
    put(t.incoming, S2, d2);
    put(t.incoming, S3, segment(3, S3)); // something new: this run appends to xlog.db
    await archiveWal(t.srv);
    assert.deepEqual((await names(t.srv)).sort(), [S1, S2, S3]);
    assert.ok(fs.readFileSync(t.xlogdb, 'latin1').endsWith('\n'));
    assert.deepEqual(fs.readdirSync(t.incoming), []);
  });

  it('never reports an unterminated last line as catalogued', async () => {
    const t = makeServer();
    fs.mkdirSync(path.dirname(t.xlogdb), { recursive: true });
    const line = formatXlogDbLine({ name: S1, size: SEG, time: 1.5, compression: null, encryption: null });
    fs.writeFileSync(t.xlogdb, `${line}${line.replace(S1, S2).trimEnd()}`);
    assert.deepEqual(await names(t.srv), [S1]);
  });
});

describe('archive-wal: files that are not WAL segments yet', () => {
  it('skips dot-files (rsync temporary files) in incoming/ and streaming/', async () => {
    const t = makeServer({ streaming_archiver: 'on', slot_name: 'barman', streaming_conninfo: 'host=127.0.0.1' });
    put(t.incoming, `.${S1}.Xy12ab`, 'half of a segment', 3600);
    put(t.streaming, `.${S2}.aB3dE4`, 'half of a segment', 3600);
    put(t.incoming, S3, segment(3, S3));
    const warnings: string[] = [];
    const report = await archiveWal(t.srv, { onWarning: (m) => warnings.push(m) });
    assert.equal(report.archivedCount, 1);
    assert.deepEqual(warnings, []);
    assert.deepEqual(listErrors(t), []);
    assert.deepEqual(fs.readdirSync(t.incoming), [`.${S1}.Xy12ab`]);
    assert.deepEqual(fs.readdirSync(t.streaming), [`.${S2}.aB3dE4`]);
  });

  it('leaves a recent segment of the wrong size for a later run', async () => {
    const t = makeServer({ streaming_archiver: 'on', slot_name: 'barman', streaming_conninfo: 'host=127.0.0.1' });
    put(t.incoming, S1, segment(1).subarray(0, 8192)); // still being copied
    put(t.streaming, S2, segment(2, S2).subarray(0, 8192));
    const warnings: string[] = [];
    const report = await archiveWal(t.srv, { onWarning: (m) => warnings.push(m) });
    assert.equal(report.archivedCount, 0);
    assert.deepEqual(warnings, []);
    assert.deepEqual(report.sources.flatMap((s) => s.waiting), [S2, S1]);
    assert.deepEqual(fs.readdirSync(t.incoming), [S1]);
    assert.deepEqual(fs.readdirSync(t.streaming), [S2]);
    assert.deepEqual(listErrors(t), []);
    assert.deepEqual(await names(t.srv), []);

    // Complete now: archived.
    put(t.incoming, S1, segment(1));
    assert.equal((await archiveWal(t.srv)).archivedCount, 1);
    assert.deepEqual(await names(t.srv), [S1]);
  });

  it('moves an old segment of the wrong size to errors/ as .unknown, with a warning', async () => {
    const t = makeServer();
    put(t.incoming, S1, segment(1).subarray(0, 8192), 120);
    const warnings: string[] = [];
    const report = await archiveWal(t.srv, { onWarning: (m) => warnings.push(m) });
    assert.equal(report.archivedCount, 0);
    assert.deepEqual(report.sources[0]?.unknown, [S1]);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0] ?? '', /8192 bytes.*16777216/);
    assert.deepEqual(fs.readdirSync(t.incoming), []);
    const errs = listErrors(t);
    assert.equal(errs.length, 1);
    assert.match(errs[0] ?? '', new RegExp(`^${S1}\\.\\d{8}T\\d{6}Z\\.unknown$`));
    assert.ok(!fs.existsSync(walArchivePath(t.srv, S1)));
  });

  it('takes the segment size from the header of each segment, before any backup and whatever the backups say', async () => {
    const t = makeServer();
    const MiB = 1 << 20;
    put(t.incoming, S1, segment(1, S1, MiB)); // initdb --wal-segsize=1
    writeSparseSegment(path.join(t.incoming, S3), S3, 64 * MiB); // --wal-segsize=64
    const first = await archiveWal(t.srv);
    assert.deepEqual(first.sources[0]?.archived, [S1, S3]);
    // A backup saying 16 MiB changes nothing: each segment speaks for itself.
    await saveBackupInfo(t.srv, '20240101T000000', newBackupInfo({ status: 'DONE', xlog_segment_size: SEG }), { create: true });
    put(t.incoming, S2, segment(2, S2, MiB));
    assert.deepEqual((await archiveWal(t.srv)).sources[0]?.archived, [S2]);
    assert.deepEqual(await names(t.srv), [S1, S3, S2]);
  });

  it('sets aside an old file without a WAL header, or whose header is of another segment', async () => {
    const t = makeServer();
    put(t.incoming, S1, Buffer.alloc(SEG), 120); // zeros: no header
    put(t.incoming, S2, segment(2, S3), 120); // S3's content under S2's name
    put(t.incoming, S3, Buffer.alloc(SEG)); // recent: may still be arriving
    const warnings: string[] = [];
    const report = await archiveWal(t.srv, { onWarning: (m) => warnings.push(m) });
    assert.equal(report.archivedCount, 0);
    assert.deepEqual(report.sources[0]?.unknown.slice().sort(), [S1, S2]);
    assert.deepEqual(report.sources[0]?.waiting, [S3]);
    assert.match(warnings.join('\n'), new RegExp(`${S1} .*does not start with a WAL page header`));
    assert.match(warnings.join('\n'), new RegExp(`${S2} .*holds WAL of another position than its name says`));
    assert.deepEqual(fs.readdirSync(t.incoming), [S3]);
  });

  it('does not size-check compressed segments, partial, history and backup files', async () => {
    const t = makeServer();
    put(t.incoming, S1, zlib.gzipSync(segment(1)), 120);
    put(t.incoming, `${S2}.partial`, 'x', 120);
    put(t.incoming, `${S2}.00000028.backup`, 'START WAL LOCATION: 0/2000028\n', 120);
    put(t.incoming, '00000002.history', '1\t0/3000000\treason\n', 120);
    const report = await archiveWal(t.srv);
    assert.equal(report.archivedCount, 4);
    assert.deepEqual(listErrors(t), []);
  });
});

describe('archive-wal: timeline history files must parse', () => {
  it('archives good history files, plain and compressed', async () => {
    const t = makeServer();
    put(t.incoming, '00000002.history', '1\t0/3000000\tno recovery target specified\n', 120);
    put(t.incoming, '00000005.history', zlib.gzipSync('1\t0/3000000\tr\n\n# comment\n3\t0/5000000\tr\n'), 120);
    const report = await archiveWal(t.srv);
    assert.deepEqual(report.sources[0]?.archived, ['00000002.history', '00000005.history']);
    assert.deepEqual(listErrors(t), []);
  });

  for (const [what, content] of [
    ['empty', ''],
    ['only a comment', '# nothing\n'],
    ['garbage', 'this is not a history file\n'],
    ['NUL bytes', Buffer.alloc(64)],
    ['a parent timeline not below its own', '1\t0/3000000\tr\n4\t0/5000000\tr\n'],
    ['parent timelines not increasing', '2\t0/3000000\tr\n1\t0/5000000\tr\n'],
    ['gzip of garbage', zlib.gzipSync('not\ta history\n')],
    ['gzip magic then garbage', Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0x00]), Buffer.alloc(100, 0x55)])],
  ] as Array<[string, string | Buffer]>) {
    it(`sets aside an old history file that is ${what}, and leaves a recent one for later`, async () => {
      const t = makeServer();
      put(t.incoming, '00000003.history', content, 120);
      put(t.incoming, '00000004.history', content);
      const warnings: string[] = [];
      const report = await archiveWal(t.srv, { onWarning: (m) => warnings.push(m) });
      assert.equal(report.archivedCount, 0);
      assert.deepEqual(report.sources[0]?.unknown, ['00000003.history']);
      assert.deepEqual(report.sources[0]?.waiting, ['00000004.history']);
      assert.match(warnings.join('\n'), /00000003\.history .*(timeline history file|decompress)/);
      assert.deepEqual(fs.readdirSync(t.incoming), ['00000004.history']);
      assert.equal(listErrors(t).length, 1);
      assert.ok(!fs.existsSync(walArchivePath(t.srv, '00000003.history')));
      assert.deepEqual(await names(t.srv), []);
    });
  }
});

describe('get-wal while archive-wal moves the file', () => {
  /** Run `fn` with fs.promises.open replaced (restored afterwards). */
  async function withOpenHook<T>(hook: (file: string, realOpen: typeof fs.promises.open) => Promise<fs.promises.FileHandle> | null, fn: () => Promise<T>): Promise<T> {
    const fsp = fs.promises;
    const realOpen = fsp.open;
    fsp.open = (async (file: fs.PathLike, ...rest: unknown[]) => {
      const hooked = hook(String(file), realOpen);
      if (hooked) return hooked;
      return (realOpen as (...a: unknown[]) => Promise<fs.promises.FileHandle>)(file, ...rest);
    }) as typeof fsp.open;
    try {
      return await fn();
    } finally {
      fsp.open = realOpen;
    }
  }

  /** What archive-wal (compression none) does to a file of incoming/: hard link into wals/, unlink. */
  function archiveByHand(t: TestServer, name: string): void {
    const dst = walArchivePath(t.srv, name);
    fs.mkdirSync(path.dirname(dst), { recursive: true });
    fs.linkSync(path.join(t.incoming, name), dst);
    fs.unlinkSync(path.join(t.incoming, name));
  }

  async function collect(srv: ServerConfig, name: string): Promise<Buffer> {
    const sink = new PassThrough();
    const chunks: Buffer[] = [];
    sink.on('data', (c: Buffer) => chunks.push(c));
    await sendWal(srv, name, sink);
    return Buffer.concat(chunks);
  }

  it('streams the file it found even if it is archived right after being opened', async () => {
    const t = makeServer();
    const data = segment(7);
    const src = put(t.incoming, S1, data);
    let moved = false;
    const out = await withOpenHook(
      (file, realOpen) => {
        if (file !== src || moved) return null;
        return (async () => {
          const fh = await realOpen(file, 'r');
          moved = true;
          archiveByHand(t, S1); // archive-wal runs now
          return fh;
        })();
      },
      () => collect(t.srv, S1),
    );
    assert.ok(moved);
    assert.ok(out.equals(data));
  });

  it('looks again when the file moves between being seen and being opened', async () => {
    const t = makeServer();
    const data = segment(8);
    const src = put(t.incoming, S1, data);
    let moves = 0;
    const out = await withOpenHook(
      (file) => {
        if (file === src && moves === 0) {
          moves++;
          archiveByHand(t, S1); // archive-wal ran between the lookup's stat and its open
        }
        return null;
      },
      () => collect(t.srv, S1),
    );
    assert.equal(moves, 1);
    assert.ok(out.equals(data));
  });

  it('gives up after a bounded number of lookups', async () => {
    const t = makeServer();
    const src = put(t.incoming, S1, segment(9));
    let opens = 0;
    const enoent = () => Object.assign(new Error(`ENOENT: no such file or directory, open '${src}'`), { code: 'ENOENT' });
    await withOpenHook(
      (file) => {
        if (file !== src) return null;
        opens++;
        return Promise.reject(enoent()); // the file keeps vanishing
      },
      () => assert.rejects(collect(t.srv, S1), BarmanError),
    );
    assert.equal(opens, 3);
  });
});
