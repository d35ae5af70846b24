/**
 * WAL compression round trips on real WAL from PostgreSQL 15: for every algorithm of
 * src/wal/compression.ts, real segments (and a backup label file) dropped into incoming/ are
 * archived by `barman archive-wal` with that `compression`, stored with the algorithm's magic
 * bytes and catalogued under its name, and `barman get-wal` gives back the original bytes.
 * Then the configured compression is switched to another algorithm: the files already stored are
 * still read back correctly (identified by their magic bytes, not by the configuration), and new
 * files are stored with the new algorithm beside the old ones.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cleanupAll, PgCluster } from '../helpers/pg-cluster.js';
import { POSTGRES_USER, makeTempDir } from '../helpers/system.js';
import { hasProgram } from '../helpers/testing.js';
import { BARMAN_SCRIPT } from '../../src/util/self.js';

interface Algo {
  /** Test label. */
  label: string;
  /** Server options: compression and the custom_* ones. */
  conf: Record<string, string>;
  /** Name expected in the xlog.db compression column. */
  catalogName: string;
  /** Expected first bytes of a stored segment (null: stored as it is). */
  magic: number[] | null;
  /** External program needed; the case is skipped without it. */
  needs?: string;
}

const ALGOS: Algo[] = [
  { label: 'gzip', conf: { compression: 'gzip' }, catalogName: 'gzip', magic: [0x1f, 0x8b, 0x08] },
  { label: 'bzip2', conf: { compression: 'bzip2' }, catalogName: 'bzip2', magic: [0x42, 0x5a, 0x68], needs: 'bzip2' },
  { label: 'pigz', conf: { compression: 'pigz' }, catalogName: 'pigz', magic: [0x1f, 0x8b, 0x08], needs: 'pigz' },
  { label: 'xz', conf: { compression: 'xz' }, catalogName: 'xz', magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], needs: 'xz' },
  { label: 'zstd', conf: { compression: 'zstd' }, catalogName: 'zstd', magic: [0x28, 0xb5, 0x2f, 0xfd] },
  { label: 'lz4', conf: { compression: 'lz4' }, catalogName: 'lz4', magic: [0x04, 0x22, 0x4d, 0x18] },
  {
    label: 'snappy',
    conf: { compression: 'snappy' },
    catalogName: 'snappy',
    magic: [0xff, 0x06, 0x00, 0x00, 0x73, 0x4e, 0x61, 0x50, 0x70, 0x59],
  },
  {
    label: 'custom (gzip -c, no magic)',
    conf: { compression: 'custom', custom_compression_filter: '"gzip -c"', custom_decompression_filter: '"gzip -dc"' },
    catalogName: 'custom',
    magic: [0x1f, 0x8b, 0x08],
    needs: 'gzip',
  },
  {
    label: 'custom (zstd -c, magic 0x28b52ffd)',
    conf: {
      compression: 'custom',
      custom_compression_filter: '"zstd -q -c"',
      custom_decompression_filter: '"zstd -q -dc"',
      custom_compression_magic: '0x28b52ffd',
    },
    catalogName: 'custom',
    magic: [0x28, 0xb5, 0x2f, 0xfd],
    needs: 'zstd',
  },
  // No compression: stored as it is. Its successor in the switch test must not be a custom
  // algorithm without magic, which (as in Barman) takes every unidentified file for its own.
  { label: 'none', conf: {}, catalogName: 'None', magic: null },
];

interface RawResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

describe('WAL compression round trips on real WAL', { timeout: 600_000 }, () => {
  let pg: PgCluster;
  let sourceDir = '';
  /** Real WAL files from the cluster's archive_command, oldest first; the last one is a .backup label. */
  let walFiles: string[] = [];
  const originals = new Map<string, Buffer>();

  before(async () => {
    sourceDir = await makeTempDir('walsrc-', { owner: POSTGRES_USER, mode: 0o755 });
    pg = await PgCluster.create({ archiveMode: true, archiveCommand: `cp %p ${sourceDir}/%f` });
    // Segments of different kinds: one full of row data, one with a checkpoint and little data
    // (mostly zero padding after the switch), one of updates/deletes, then a backup label file.
    await pg.psql("CREATE TABLE t (id int, body text); INSERT INTO t SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 120000) g;");
    await pg.switchWal();
    await pg.psql("CHECKPOINT; INSERT INTO t VALUES (0, 'small');");
    await pg.switchWal();
    await pg.psql('UPDATE t SET body = upper(body) WHERE id % 3 = 0; DELETE FROM t WHERE id % 5 = 0;');
    const last = await pg.switchWal();
    // pg_backup_stop() waits until its segment and the .backup label are archived.
    await pg.psql("SELECT pg_backup_start('compression-test', true); SELECT pg_backup_stop(true);");
    await pg.waitArchived(last, 120_000);
    const names = (await fs.readdir(sourceDir)).sort();
    const segments = names.filter((n) => /^[0-9A-F]{24}$/.test(n));
    const label = names.find((n) => /^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$/.test(n));
    assert.ok(segments.length >= 4, `expected >= 4 archived segments, got ${names.join(' ')}`);
    assert.ok(label, `no .backup file among ${names.join(' ')}`);
    walFiles = [...segments, label];
    for (const n of walFiles) originals.set(n, await fs.readFile(path.join(sourceDir, n)));
    for (const n of segments) assert.equal(originals.get(n)?.length, 16 * 1024 * 1024, `${n} is not a 16 MiB segment`);
    await pg.destroy();
  });

  after(cleanupAll);

  /** A barman catalog of its own (as root: no PostgreSQL is needed to archive and get WAL). */
  async function makeCatalog(prefix: string) {
    const root = await makeTempDir(prefix, { mode: 0o700 });
    const home = path.join(root, 'home');
    const configFile = path.join(root, 'barman.conf');
    const srvDir = path.join(home, 'pg');
    const incoming = path.join(srvDir, 'incoming');
    await fs.mkdir(incoming, { recursive: true, mode: 0o700 });
    const writeConfig = async (conf: Record<string, string>) => {
      const server = { conninfo: '"host=127.0.0.1 port=1 dbname=postgres"', backup_method: 'postgres', archiver: 'on', ...conf };
      const ini = (kv: Record<string, string>) => Object.entries(kv).map(([k, v]) => `${k} = ${v}`).join('\n');
      await fs.writeFile(configFile, `[barman]\n${ini({ barman_home: home, barman_user: 'root', log_level: 'DEBUG', log_file: path.join(root, 'barman.log') })}\n\n[pg]\n${ini(server)}\n`);
    };
    const raw = (...args: string[]) =>
      new Promise<RawResult>((resolve) => {
        const env = { ...process.env };
        delete env.NODE_TEST_CONTEXT;
        execFile(process.execPath, [BARMAN_SCRIPT, '-c', configFile, ...args], { encoding: 'buffer', maxBuffer: 64 << 20, env }, (err, stdout, stderr) => {
          const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
          resolve({ code, stdout, stderr: stderr.toString('utf8') });
        });
      });
    const ok = async (...args: string[]) => {
      const r = await raw(...args);
      assert.equal(r.code, 0, `barman ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
      return r.stdout;
    };
    const stored = (name: string) => path.join(srvDir, 'wals', name.slice(0, 16), name);
    /** Copy real WAL files into incoming/ and archive them; returns archive-wal's output. */
    const archive = async (names: string[]) => {
      for (const n of names) await fs.copyFile(path.join(sourceDir, n), path.join(incoming, n));
      const out = (await ok('archive-wal', 'pg')).toString('utf8');
      for (const n of names) assert.match(out, new RegExp(`\\t${n.replace(/\./g, '\\.')}\\n`), `archive-wal did not report ${n}:\n${out}`);
      assert.deepEqual(await fs.readdir(incoming), [], 'incoming/ should be empty after archive-wal');
      return out;
    };
    /** xlog.db as name → compression column. */
    const catalog = async () => {
      const text = await fs.readFile(path.join(srvDir, 'wals', 'xlog.db'), 'utf8');
      return new Map(text.trim().split('\n').map((l) => { const f = l.split('\t'); return [f[0] ?? '', f[3] ?? ''] as const; }));
    };
    /** get-wal NAME to standard output (restore_command form) must give the original bytes. */
    const assertRoundTrip = async (name: string, why: string) => {
      const got = await ok('get-wal', 'pg', name);
      const want = originals.get(name);
      assert.ok(want);
      // Not assert.deepEqual on 16 MiB buffers: its diff would be unreadable.
      assert.ok(got.equals(want), `${why}: get-wal ${name} returned ${got.length} bytes that differ from the original ${want.length}`);
    };
    return { root, srvDir, incoming, writeConfig, raw, ok, stored, archive, catalog, assertRoundTrip };
  }

  const skipReason = (a: Algo) => (a.needs && !hasProgram(a.needs) ? `${a.needs} is not installed` : false);

  for (const [i, algo] of ALGOS.entries()) {
    const next = ALGOS[(i + 1) % ALGOS.length];
    assert.ok(next);
    it(`${algo.label}: archive-wal stores it with its magic, get-wal gives the original back`, { skip: skipReason(algo) }, async (t) => {
      const c = await makeCatalog(`cmp-${algo.catalogName}-`);
      await c.writeConfig(algo.conf);
      // The first half now; the rest after the switch of algorithm below.
      const half = Math.ceil(walFiles.length / 2);
      const first = walFiles.slice(0, half);
      const rest = walFiles.slice(half);
      await c.archive(first);
      const cat = await c.catalog();
      for (const n of first) {
        const head = Buffer.alloc(16);
        const fh = await fs.open(c.stored(n), 'r');
        const { bytesRead } = await fh.read(head, 0, 16, 0);
        await fh.close();
        const isSegment = /^[0-9A-F]{24}$/.test(n);
        if (isSegment) {
          const want = algo.magic ? Buffer.from(algo.magic) : originals.get(n)?.subarray(0, 16);
          assert.ok(want);
          assert.deepEqual([...head.subarray(0, want.length)], [...want], `${n} stored with unexpected first bytes (read ${bytesRead})`);
          if (algo.magic) {
            const size = (await fs.stat(c.stored(n))).size;
            assert.ok(size < 16 * 1024 * 1024, `${n} stored with ${algo.label} is not smaller than the segment (${size} bytes)`);
          }
        }
        assert.equal(cat.get(n), algo.catalogName, `xlog.db compression of ${n}`);
        await c.assertRoundTrip(n, algo.label);
        // --keep-compression sends the stored bytes.
        const kept = await c.ok('get-wal', '--keep-compression', 'pg', n);
        assert.ok(kept.equals(await fs.readFile(c.stored(n))), `get-wal --keep-compression ${n} is not the stored file`);
      }
      // -o DIR writes DIR/NAME, decompressed.
      const outDir = path.join(c.root, 'out');
      await fs.mkdir(outDir);
      await c.ok('get-wal', '-o', outDir, 'pg', first[0] ?? '');
      assert.ok((await fs.readFile(path.join(outDir, first[0] ?? ''))).equals(originals.get(first[0] ?? '') ?? Buffer.alloc(0)));

      // Switch the configured compression: old files are found by their magic bytes, new ones
      // get the new algorithm, and all of them read back as the originals.
      const nextMissing = skipReason(next);
      if (nextMissing) {
        t.diagnostic(`switch to ${next.label} not tested: ${nextMissing}`);
        return;
      }
      await c.writeConfig(next.conf);
      for (const n of first) await c.assertRoundTrip(n, `${algo.label} file read with compression ${next.label}`);
      await c.archive(rest);
      const after = await c.catalog();
      for (const n of first) assert.equal(after.get(n), algo.catalogName, `xlog.db compression of ${n} (old algorithm)`);
      for (const n of rest) assert.equal(after.get(n), next.catalogName, `xlog.db compression of ${n} (new algorithm)`);
      for (const n of rest) await c.assertRoundTrip(n, `${next.label} after switching from ${algo.label}`);
    });
  }

  it('a pre-compressed file in incoming/ is stored as it is, not compressed again', async () => {
    const c = await makeCatalog('cmp-precompressed-');
    await c.writeConfig({ compression: 'zstd' });
    const name = walFiles[0] ?? '';
    // A client that compressed with gzip before shipping (barman-wal-archive -z does this).
    const gz = await import('node:zlib');
    await fs.writeFile(path.join(c.incoming, name), gz.gzipSync(originals.get(name) ?? Buffer.alloc(0)));
    await c.ok('archive-wal', 'pg');
    const head = (await fs.readFile(c.stored(name))).subarray(0, 3);
    assert.deepEqual([...head], [0x1f, 0x8b, 0x08]);
    assert.equal((await c.catalog()).get(name), 'gzip');
    await c.assertRoundTrip(name, 'pre-compressed gzip in a zstd catalog');
  });
});
