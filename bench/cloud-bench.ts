/**
 * `npm run bench -- --cloud-only [--scale N] [--segments N]`: the barman-cloud-* tools of
 * barman-ts beside Debian's barman-cloud 3.4, same data, same compression (gzip), same local
 * object store, in one run: s3rver (and Azurite), both started on 127.0.0.1.
 *   - barman-cloud-backup of a pgbench database (scale 100 by default), ours with -J 4 (and its
 *     peak RSS), theirs with its default -J 2 (their memory is spread over worker processes)
 *   - barman-cloud-restore of that backup
 *   - archive_command (barman-cloud-wal-archive -z) and restore_command
 *     (barman-cloud-wal-restore) in ms per segment, called once per segment in order as
 *     PostgreSQL does, on real segments with their `.ready` files beside them.
 * BENCH_CLOUD_PROVIDERS=s3|azure|s3,azure picks the stores; BENCH_CLOUD_WAL_ONLY=1 skips the
 * backup and restore rows.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BIN, chownTo, LocalCluster, must, PG_USER } from '../src/sandbox/local.js';
import { run } from '../src/util/proc.js';
import { BARMAN_SCRIPT } from '../src/util/self.js';

const REPO = path.dirname(path.dirname(BARMAN_SCRIPT));
const NODE_MODULES_BIN = path.join(REPO, 'node_modules', '.bin');
const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';
const MB = 1024 * 1024;

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : Number(process.env[`BENCH_${name.toUpperCase()}`] ?? def);
};

interface Store {
  name: string;
  args: string[];
  env: Record<string, string>;
  url(prefix: string): string;
  child: ChildProcess;
}

async function waitPort(port: number): Promise<void> {
  const net = await import('node:net');
  for (let i = 0; i < 300; i++) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect({ port, host: '127.0.0.1' });
      s.once('connect', () => (s.destroy(), r(true)));
      s.once('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`port ${port} never opened`);
}

async function freePort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === 'object' && addr ? addr.port : 0));
    });
  });
}

async function startStores(root: string, which: readonly string[]): Promise<Store[]> {
  const out: Store[] = [];
  if (which.includes('s3')) {
    const port = await freePort();
    const dir = path.join(root, 's3rver');
    fs.mkdirSync(dir);
    const child = spawn(path.join(NODE_MODULES_BIN, 's3rver'), ['-d', dir, '-a', '127.0.0.1', '-p', String(port), '--silent', '--no-vhost-buckets'], { stdio: 'ignore' });
    await waitPort(port);
    out.push({
      name: 's3rver',
      args: ['--endpoint-url', `http://127.0.0.1:${port}`],
      env: { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' },
      url: (p) => `s3://bench/${p}`,
      child,
    });
  }
  if (which.includes('azure')) {
    const port = await freePort();
    const dir = path.join(root, 'azurite');
    fs.mkdirSync(dir);
    const child = spawn(path.join(NODE_MODULES_BIN, 'azurite-blob'), ['--blobHost', '127.0.0.1', '--blobPort', String(port), '--location', dir, '--silent', '--skipApiVersionCheck', '--loose', '--disableTelemetry'], { stdio: 'ignore' });
    await waitPort(port);
    const endpoint = `http://127.0.0.1:${port}/devstoreaccount1`;
    out.push({
      name: 'Azurite',
      args: ['--cloud-provider', 'azure-blob-storage'],
      env: { AZURE_STORAGE_CONNECTION_STRING: `DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=${AZURITE_KEY};BlobEndpoint=${endpoint};` },
      url: (p) => `${endpoint}/bench/${p}`,
      child,
    });
  }
  return out;
}

type Side = 'ours' | 'barman34';

function command(side: Side, tool: string): string[] {
  if (side === 'barman34') return [`/usr/bin/${tool}`];
  if (tool === 'barman-cloud-wal-archive' || tool === 'barman-cloud-wal-restore') return [path.join(REPO, 'bin', tool)];
  return [process.execPath, path.join(REPO, 'bin', `${tool}.js`)];
}

/** Run as root with the store's credentials; resolves to seconds and peak RSS (KiB). */
async function timedTool(store: Store, side: Side, tool: string, args: string[], extra: string[] = []): Promise<{ s: number; rssKiB: number }> {
  const [cmd, ...pre] = command(side, tool);
  const t = process.hrtime.bigint();
  const res = await run('/usr/bin/time', ['-f', '%M', cmd as string, ...pre, ...store.args, ...extra, ...args], { env: { ...process.env, ...store.env } });
  const s = Number(process.hrtime.bigint() - t) / 1e9;
  if (res.code !== 0) throw new Error(`${side} ${tool} ${args.join(' ')} failed (${res.code}): ${res.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  const rss = Number(res.stderr.trim().split('\n').at(-1));
  return { s, rssKiB: Number.isFinite(rss) ? rss : 0 };
}

const ratio = (theirs: number, ours: number) => `${(theirs / ours).toFixed(1)}x`;

export async function cloudBench(): Promise<void> {
  const scale = arg('scale', 100);
  const segments = arg('segments', 32);
  const providers = (process.env.BENCH_CLOUD_PROVIDERS ?? 's3,azure').split(',');
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'barman-cloud-bench-'));
  fs.chmodSync(root, 0o755);
  const pgDir = path.join(root, 'pg');
  fs.mkdirSync(pgDir, { mode: 0o755 });
  chownTo(PG_USER, pgDir);
  let pg: LocalCluster | null = null;
  let stores: Store[] = [];
  try {
    console.log(`\nbarman-cloud benchmark: pgbench scale ${scale}, ${segments} WAL segments, gzip on both sides, ${os.cpus().length} CPUs, load ${os.loadavg()[0]?.toFixed(1)}`);
    pg = await LocalCluster.create(path.join(pgDir, 'data'), pgDir, 'shared_buffers = 128MB\nmax_wal_size = 4GB\nsynchronous_commit = off\narchive_mode = on\narchive_command = \'/bin/true\'\n');
    await must(PG_USER, path.join(BIN, 'pgbench'), ['-i', '-q', '-s', String(scale), '-h', pgDir, '-p', String(pg.port), 'postgres']);
    await pg.psql('CHECKPOINT');
    const dbSize = Number(await pg.psql('SELECT sum(pg_database_size(oid)) FROM pg_database'));
    console.log(`database: ${(dbSize / MB).toFixed(0)} MiB`);

    // Real WAL segments for the WAL rows: generated by pgbench, copied with .ready files.
    const walSrc = path.join(root, 'wal', 'pg_wal');
    fs.mkdirSync(path.join(walSrc, 'archive_status'), { recursive: true });
    const names: string[] = [];
    for (let i = 0; i < segments; i++) {
      await must(PG_USER, path.join(BIN, 'pgbench'), ['-n', '-t', '400', '-h', pgDir, '-p', String(pg.port), 'postgres']);
      const name = await pg.psql('SELECT pg_walfile_name(pg_current_wal_lsn())');
      await pg.psql('SELECT pg_switch_wal()');
      fs.copyFileSync(path.join(pg.dataDir, 'pg_wal', name), path.join(walSrc, name));
      names.push(name);
    }

    stores = await startStores(root, providers);
    const conn = ['-h', '127.0.0.1', '-p', String(pg.port), '-U', 'postgres'];
    const walOnly = process.env.BENCH_CLOUD_WAL_ONLY === '1';
    for (const store of stores) {
      console.log(`\n${store.name}`);
      if (!walOnly) await backupRows(store, root, conn);
      await walRows(store, root, names, walSrc);
    }
  } finally {
    for (const s of stores) s.child.kill('SIGKILL');
    await pg?.stop('immediate').catch(() => undefined);
    fs.rmSync(root, { recursive: true, force: true });
  }
}

/** Backup and restore rows of one store. */
async function backupRows(store: Store, root: string, conn: string[]): Promise<void> {
  // --- backup
  const b34 = await timedTool(store, 'barman34', 'barman-cloud-backup', ['-z', '--immediate-checkpoint', ...conn, store.url('b34'), 'pg']);
  const bOurs = await timedTool(store, 'ours', 'barman-cloud-backup', ['-z', '-J', '4', '--immediate-checkpoint', ...conn, store.url('ours'), 'pg']);
  console.log(`  backup -z            ours ${bOurs.s.toFixed(2)} s (-J 4, peak RSS ${(bOurs.rssKiB / 1024).toFixed(0)} MiB)   barman-cloud 3.4 ${b34.s.toFixed(2)} s   ratio ${ratio(b34.s, bOurs.s)} (target 3x)`);
  // --- restore (Barman 3.4 knows no `latest`: the ID from the list)
  const listed = await run(process.execPath, [path.join(REPO, 'bin', 'barman-cloud-backup-list.js'), ...store.args, '--format', 'json', store.url('b34'), 'pg'], { env: { ...process.env, ...store.env } });
  const id34 = (JSON.parse(listed.stdout) as { backups_list: Array<{ backup_id: string }> }).backups_list.at(-1)?.backup_id ?? 'missing';
  const r34 = await timedTool(store, 'barman34', 'barman-cloud-restore', [store.url('b34'), 'pg', id34, path.join(root, `r34-${store.name}`)]);
  const rOurs = await timedTool(store, 'ours', 'barman-cloud-restore', [store.url('ours'), 'pg', 'latest', path.join(root, `rours-${store.name}`)]);
  console.log(`  restore              ours ${rOurs.s.toFixed(2)} s   barman-cloud 3.4 ${r34.s.toFixed(2)} s   ratio ${ratio(r34.s, rOurs.s)} (target 3x)`);
  fs.rmSync(path.join(root, `r34-${store.name}`), { recursive: true, force: true });
  fs.rmSync(path.join(root, `rours-${store.name}`), { recursive: true, force: true });
}

/** Per-segment archive_command / restore_command rows of one store. */
async function walRows(store: Store, root: string, names: readonly string[], walSrc: string): Promise<void> {
  // --- WAL archive: one call per segment, in order, with the later .ready files present.
  const perSegment: Record<Side, { archive: number; restore: number }> = { ours: { archive: 0, restore: 0 }, barman34: { archive: 0, restore: 0 } };
  for (const side of ['barman34', 'ours'] as Side[]) {
    const dir = path.join(root, `wal-${side}-${store.name}`, 'pg_wal');
    fs.mkdirSync(path.join(dir, 'archive_status'), { recursive: true });
    for (const n of names) {
      fs.copyFileSync(path.join(walSrc, n), path.join(dir, n));
      fs.writeFileSync(path.join(dir, 'archive_status', `${n}.ready`), '');
    }
    const extra = side === 'ours' ? ['--spool-dir', path.join(root, `spool-a-${side}-${store.name}`)] : [];
    let total = 0;
    for (const n of names) {
      total += (await timedTool(store, side, 'barman-cloud-wal-archive', ['-z', store.url(`w-${side}`), 'pg', path.join(dir, n)], extra)).s;
      fs.renameSync(path.join(dir, 'archive_status', `${n}.ready`), path.join(dir, 'archive_status', `${n}.done`));
    }
    perSegment[side].archive = (total / names.length) * 1000;
    const dest = path.join(root, `wal-restored-${side}-${store.name}`);
    fs.mkdirSync(dest);
    const rextra = side === 'ours' ? ['--spool-dir', path.join(root, `spool-r-${side}-${store.name}`)] : [];
    total = 0;
    for (const n of names) total += (await timedTool(store, side, 'barman-cloud-wal-restore', [store.url(`w-${side}`), 'pg', n, path.join(dest, 'RECOVERYXLOG')], rextra)).s;
    perSegment[side].restore = (total / names.length) * 1000;
  }
  const o = perSegment.ours;
  const t = perSegment.barman34;
  console.log(`  archive_command -z   ours ${o.archive.toFixed(0)} ms/segment   barman-cloud 3.4 ${t.archive.toFixed(0)} ms/segment   ratio ${ratio(t.archive, o.archive)} (target 5x)`);
  console.log(`  restore_command      ours ${o.restore.toFixed(0)} ms/segment   barman-cloud 3.4 ${t.restore.toFixed(0)} ms/segment   ratio ${ratio(t.restore, o.restore)} (target 5x)`);
}
