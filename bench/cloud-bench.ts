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
 * Each row also shows the transport floor, made of plain tools only and measured in the same
 * run (`floor` rows; none of barman-ts's code runs in them):
 *   - backup:  `tar -c PGDATA | gzip -6 | curl -T -` (s3rver: one streamed PUT); Azure Blob needs
 *     a length per request, so there `split -b PART --filter 'curl --data-binary @-'` puts
 *     blocks of our part size one after the other (no -J), then one curl commits the block list
 *   - restore: `curl GET | pigz -d -p 1 | tar -x -b 256` per archive of our backup, then
 *     `sync -f` (our restore decompresses with pigz -p 1 and ends with syncfs too; the sync's
 *     share is shown, as the file system is shared with other work whose writes it flushes too)
 *   - archive_command: `gzip -6 -c SEG | curl --data-binary @- -X PUT`, one call per segment
 *   - restore_command: `curl GET | gzip -dc > RECOVERYXLOG`, one call per segment (no fsync,
 *     as ours writes WAL_DEST without one); every segment is compared with its source
 * Curl signs S3 requests with --aws-sigv4 and reaches Azurite through a SAS URL made once with
 * the SDK. A target that sits below its floor is met within 1.2x of the floor (the developers'
 * guide): the verdict column says which rule applies.
 * BENCH_CLOUD_PROVIDERS=s3|azure|s3,azure picks the stores; BENCH_CLOUD_WAL_ONLY=1 skips the
 * backup and restore rows; BENCH_CLOUD_RESTORE_ONLY=1 prints only the restore rows (both backups
 * are still taken, untimed floor and WAL rows skipped). `--rounds N` (BENCH_ROUNDS; default 1)
 * repeats the restore rows, ours, 3.4 and the floor in turn each round, then prints the best of
 * each. Every timed restore starts after an untimed `sync -f` of the bench's file system, so
 * that none pays for the write-back of the one before (barman-cloud 3.4 does not sync).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BIN, chownTo, LocalCluster, must, PG_USER } from '../src/sandbox/local.js';
import { findProgram, run } from '../src/util/proc.js';
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
  floor: Floor;
}

/** How plain curl reaches the bucket `bench` of a store (the floor rows). */
interface Floor {
  /** curl config file: authentication and the options every floor request uses. */
  curlrc: string;
  /** Extra curl arguments of a single-request PUT of a whole object. */
  putArgs: string[];
  /** URL of an object (`key` under the bucket). */
  object(key: string): string;
  /** URL listing the objects under `prefix`, and the XML element holding each name. */
  list(prefix: string): { url: string; element: string };
  /** Part size of our backup on this store (chunkSize(): 2 × 100 GB / max parts, at least the minimum). */
  partSize: number;
  /** True: uploads need a length (Azure Blob), so the backup floor puts blocks. */
  blocks: boolean;
}

const CURL_COMMON = 'silent\nshow-error\nfail\n';

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
    const endpoint = `http://127.0.0.1:${port}`;
    // curl 7.88 does not send x-amz-content-sha256 itself; s3rver requires it.
    const curlrc = path.join(root, 's3.curlrc');
    fs.writeFileSync(curlrc, `${CURL_COMMON}aws-sigv4 = "aws:amz:us-east-1:s3"\nuser = "S3RVER:S3RVER"\nheader = "x-amz-content-sha256: UNSIGNED-PAYLOAD"\n`, { mode: 0o600 });
    out.push({
      name: 's3rver',
      args: ['--endpoint-url', endpoint],
      env: { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' },
      url: (p) => `s3://bench/${p}`,
      child,
      floor: {
        curlrc,
        putArgs: [],
        object: (key) => `${endpoint}/bench/${encodeKey(key)}`,
        list: (prefix) => ({ url: `${endpoint}/bench?list-type=2&prefix=${encodeURIComponent(prefix)}`, element: 'Key' }),
        partSize: Math.max(Math.floor((2 * 100 * 1024 ** 3) / 10000), 5 * MB),
        blocks: false,
      },
    });
  }
  if (which.includes('azure')) {
    const port = await freePort();
    const dir = path.join(root, 'azurite');
    fs.mkdirSync(dir);
    const child = spawn(path.join(NODE_MODULES_BIN, 'azurite-blob'), ['--blobHost', '127.0.0.1', '--blobPort', String(port), '--location', dir, '--silent', '--skipApiVersionCheck', '--loose', '--disableTelemetry'], { stdio: 'ignore' });
    await waitPort(port);
    const endpoint = `http://127.0.0.1:${port}/devstoreaccount1`;
    const sas = await containerSas('bench');
    const curlrc = path.join(root, 'azure.curlrc');
    fs.writeFileSync(curlrc, CURL_COMMON, { mode: 0o600 });
    out.push({
      name: 'Azurite',
      args: ['--cloud-provider', 'azure-blob-storage'],
      env: { AZURE_STORAGE_CONNECTION_STRING: `DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=${AZURITE_KEY};BlobEndpoint=${endpoint};` },
      url: (p) => `${endpoint}/bench/${p}`,
      child,
      floor: {
        curlrc,
        putArgs: ['-H', 'x-ms-blob-type: BlockBlob'],
        object: (key) => `${endpoint}/bench/${encodeKey(key)}?${sas}`,
        list: (prefix) => ({ url: `${endpoint}/bench?restype=container&comp=list&prefix=${encodeURIComponent(prefix)}&${sas}`, element: 'Name' }),
        partSize: Math.max(Math.floor((2 * 100 * 1024 ** 3) / 50000), 64 << 10),
        blocks: true,
      },
    });
  }
  return out;
}

const encodeKey = (key: string) => key.split('/').map(encodeURIComponent).join('/');

/** A container SAS token for Azurite's development account, made once with the SDK. */
async function containerSas(container: string): Promise<string> {
  const { ContainerSASPermissions, StorageSharedKeyCredential, generateBlobSASQueryParameters } = await import('@azure/storage-blob');
  const credential = new StorageSharedKeyCredential('devstoreaccount1', AZURITE_KEY);
  const permissions = ContainerSASPermissions.parse('racwdl');
  return generateBlobSASQueryParameters({ containerName: container, permissions, expiresOn: new Date(Date.now() + 24 * 3600_000) }, credential).toString();
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

/**
 * A plain-tools floor: `script` run by `shell` (positional arguments `args`, never values in
 * the script) under /usr/bin/time like the tools, FLOOR_CURLRC naming the store's curl config.
 */
async function timedFloor(store: Store, script: string, args: string[], env: Record<string, string> = {}, shell = 'bash'): Promise<number> {
  const t = process.hrtime.bigint();
  const res = await run('/usr/bin/time', ['-f', '%M', shell, '-c', script, 'floor', ...args], { env: { ...process.env, FLOOR_CURLRC: store.floor.curlrc, ...env } });
  const s = Number(process.hrtime.bigint() - t) / 1e9;
  if (res.code !== 0) throw new Error(`floor ${script.split('\n')[0]} failed (${res.code}): ${res.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  return s;
}

/** Object names under `prefix`, listed with curl (one page: the bench stores few objects). */
async function floorList(store: Store, prefix: string): Promise<string[]> {
  const { url, element } = store.floor.list(prefix);
  const res = await run('curl', ['-K', store.floor.curlrc, url]);
  if (res.code !== 0) throw new Error(`floor listing of ${prefix} failed: ${res.stderr.trim()}`);
  return [...res.stdout.matchAll(new RegExp(`<${element}>([^<]*)</${element}>`, 'g'))].map((m) => (m[1] as string).replace(/&amp;/g, '&'));
}

const ratio = (theirs: number, ours: number) => `${(theirs / ours).toFixed(1)}x`;

/**
 * One row: ours, barman-cloud 3.4 and the floor, the ratio against each, and the verdict: the
 * target is met by the ratio to barman-cloud 3.4, or, when the target sits below the floor
 * (the floor itself is not `target` times faster than 3.4), by being within 1.2x of the floor.
 */
function row(label: string, unit: 's' | 'ms/segment', ours: number, theirs: number, floor: number, target: number, note = '', floorNote = ''): void {
  const v = (x: number) => (unit === 's' ? `${x.toFixed(2)} s` : `${x.toFixed(0)} ms`);
  const belowFloor = theirs / floor < target;
  const met = theirs / ours >= target || (belowFloor && ours <= 1.2 * floor);
  const rule = belowFloor ? `target below floor (3.4/floor ${ratio(theirs, floor)}): met within 1.2x of it` : `target ${target}x`;
  console.log(
    `  ${label.padEnd(20)} ours ${v(ours)}${note}   barman-cloud 3.4 ${v(theirs)}   floor ${v(floor)}${unit === 's' ? '' : '/segment'}${floorNote}   ` +
      `vs 3.4 ${ratio(theirs, ours)}   ours/floor ${(ours / floor).toFixed(2)}x   ${met ? 'MET' : 'MISSED'} (${rule})`,
  );
}

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
    const restoreOnly = process.env.BENCH_CLOUD_RESTORE_ONLY === '1';
    for (const store of stores) {
      console.log(`\n${store.name}`);
      if (!walOnly) await backupRows(store, root, conn, pg.dataDir, restoreOnly);
      if (!restoreOnly) await walRows(store, root, names, walSrc);
    }
  } finally {
    for (const s of stores) s.child.kill('SIGKILL');
    await pg?.stop('immediate').catch(() => undefined);
    fs.rmSync(root, { recursive: true, force: true });
  }
}

/** Backup and restore rows of one store. */
async function backupRows(store: Store, root: string, conn: string[], dataDir: string, restoreOnly: boolean): Promise<void> {
  // --- backup
  const b34 = await timedTool(store, 'barman34', 'barman-cloud-backup', ['-z', '--immediate-checkpoint', ...conn, store.url('b34'), 'pg']);
  const bOurs = await timedTool(store, 'ours', 'barman-cloud-backup', ['-z', '-J', '4', '--immediate-checkpoint', ...conn, store.url('ours'), 'pg']);
  if (!restoreOnly) {
    const bFloor = await backupFloor(store, root, dataDir);
    row('backup -z', 's', bOurs.s, b34.s, bFloor, 3, ` (-J 4, peak RSS ${(bOurs.rssKiB / 1024).toFixed(0)} MiB)`);
  }
  // --- restore (Barman 3.4 knows no `latest`: the ID from the list)
  const listed = await run(process.execPath, [path.join(REPO, 'bin', 'barman-cloud-backup-list.js'), ...store.args, '--format', 'json', store.url('b34'), 'pg'], { env: { ...process.env, ...store.env } });
  const id34 = (JSON.parse(listed.stdout) as { backups_list: Array<{ backup_id: string }> }).backups_list.at(-1)?.backup_id ?? 'missing';
  const rounds = Math.max(1, arg('rounds', 1));
  const best = { ours: Infinity, b34: Infinity, floor: Infinity };
  const settle = () => run('sync', ['-f', root]);
  for (let i = 0; i < rounds; i++) {
    await settle();
    const r34 = await timedTool(store, 'barman34', 'barman-cloud-restore', [store.url('b34'), 'pg', id34, path.join(root, `r34-${store.name}`)]);
    fs.rmSync(path.join(root, `r34-${store.name}`), { recursive: true, force: true });
    await settle();
    const rOurs = await timedTool(store, 'ours', 'barman-cloud-restore', [store.url('ours'), 'pg', 'latest', path.join(root, `rours-${store.name}`)]);
    fs.rmSync(path.join(root, `rours-${store.name}`), { recursive: true, force: true });
    await settle();
    const rFloor = await restoreFloor(store, root);
    const label = rounds > 1 ? `restore (round ${i + 1})` : 'restore';
    row(label, 's', rOurs.s, r34.s, rFloor.s, 3, '', ` (its sync -f ${rFloor.sync.toFixed(2)} s; barman-cloud 3.4 does not sync)`);
    best.ours = Math.min(best.ours, rOurs.s);
    best.b34 = Math.min(best.b34, r34.s);
    best.floor = Math.min(best.floor, rFloor.s);
  }
  if (rounds > 1) row(`restore (best of ${rounds})`, 's', best.ours, best.b34, best.floor, 3);
}

/**
 * Floor of a backup: PGDATA (without pg_wal's content and postmaster.pid, as a backup leaves
 * them out) through tar and gzip -6 (our level) into one object, as a stream (S3) or as blocks of
 * our part size (Azure: every request needs a length). No backup API calls, no backup.info.
 */
async function backupFloor(store: Store, root: string, dataDir: string): Promise<number> {
  const tarPipe = 'tar -c -b 256 -C "$1" --exclude=./pg_wal/* --exclude=./postmaster.pid . | gzip -6';
  const key = 'floor/pg/base/floor/data.tar.gz';
  if (!store.floor.blocks) {
    return timedFloor(store, `set -eo pipefail\n${tarPipe} | curl -K "$FLOOR_CURLRC" -T - "$2"`, [dataDir, store.floor.object(key)]);
  }
  // Blocks named by split (x00000, x00001...), their IDs the base64 of those names; each curl
  // reads its whole block, then sends it with a length; the list is committed at the end.
  const list = path.join(root, `floor-blocks-${store.name}`);
  const put = 'curl -K "$FLOOR_CURLRC" --data-binary @- -X PUT "$FLOOR_URL&comp=block&blockid=$(printf %s "$FILE" | base64)" && printf "%s\\n" "$FILE" >> "$FLOOR_LIST"';
  const script = [
    'set -eo pipefail',
    `${tarPipe} | split -b "$2" -a 5 -d --filter='${put}' -`,
    `{ printf '<?xml version="1.0" encoding="utf-8"?><BlockList>'; while read -r f; do printf '<Latest>%s</Latest>' "$(printf %s "$f" | base64)"; done < "$FLOOR_LIST"; printf '</BlockList>'; } | curl -K "$FLOOR_CURLRC" --data-binary @- -X PUT "$FLOOR_URL&comp=blocklist"`,
  ].join('\n');
  const s = await timedFloor(store, script, [dataDir, String(store.floor.partSize)], { FLOOR_URL: store.floor.object(key), FLOOR_LIST: list });
  fs.rmSync(list, { force: true });
  return s;
}

/**
 * Floor of a restore: every archive our backup wrote, downloaded by curl, decompressed by pigz -p 1
 * (gzip -d without it: what our restore gives tar) into tar with our 128 KiB records, then one
 * syncfs of the destination, as ours ends. The archives are listed before the clock starts.
 */
async function restoreFloor(store: Store, root: string): Promise<{ s: number; sync: number }> {
  const keys = (await floorList(store, 'ours/pg/base/')).filter((k) => /\/data(_\d+)?\.tar\.gz$/.test(k));
  if (keys.length === 0) throw new Error('floor: our backup wrote no data.tar.gz');
  const dest = path.join(root, `rfloor-${store.name}`);
  fs.mkdirSync(dest, { mode: 0o700 });
  const gunzip = findProgram('pigz', null) ? 'pigz -d -p 1' : 'gzip -d';
  const script = `set -eo pipefail\ndest=$1\nshift\nfor url; do curl -K "$FLOOR_CURLRC" "$url" | ${gunzip} | tar -x -b 256 -f - -C "$dest"; done`;
  const extract = await timedFloor(store, script, [dest, ...keys.map((k) => store.floor.object(k))]);
  // The sync on its own: the file system is shared with other work, whose writes it flushes too.
  const sync = await timedFloor(store, 'sync -f "$1"', [dest]);
  if (!fs.existsSync(path.join(dest, 'PG_VERSION'))) throw new Error('floor: the restore floor extracted no PG_VERSION');
  fs.rmSync(dest, { recursive: true, force: true });
  return { s: extract + sync, sync };
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
  const floor = await walFloor(store, root, names, walSrc);
  const o = perSegment.ours;
  const t = perSegment.barman34;
  row('archive_command -z', 'ms/segment', o.archive, t.archive, floor.archive, 5);
  row('restore_command', 'ms/segment', o.restore, t.restore, floor.restore, 5);
}

/**
 * Per-segment floors, one /bin/sh call per segment as PostgreSQL makes: `gzip -6 -c SEG | curl
 * PUT` and `curl GET | gzip -dc > RECOVERYXLOG`. /bin/sh (dash) has no pipefail, so every
 * restored segment is compared with its source after its call (outside the clock).
 */
async function walFloor(store: Store, root: string, names: readonly string[], walSrc: string): Promise<{ archive: number; restore: number }> {
  const key = (n: string) => `w-floor/pg/wals/${n.slice(0, 16)}/${n}.gz`;
  const put = ['gzip -6 -c "$1" | curl -K "$FLOOR_CURLRC" --data-binary @- -X PUT', ...store.floor.putArgs.map((a) => `'${a}'`), '"$2"'].join(' ');
  let archive = 0;
  for (const n of names) archive += await timedFloor(store, put, [path.join(walSrc, n), store.floor.object(key(n))], {}, '/bin/sh');
  const dest = path.join(root, `wal-restored-floor-${store.name}`);
  fs.mkdirSync(dest);
  const xlog = path.join(dest, 'RECOVERYXLOG');
  let restore = 0;
  for (const n of names) {
    restore += await timedFloor(store, 'curl -K "$FLOOR_CURLRC" "$1" | gzip -dc > "$2"', [store.floor.object(key(n)), xlog], {}, '/bin/sh');
    if (!fs.readFileSync(xlog).equals(fs.readFileSync(path.join(walSrc, n)))) throw new Error(`floor: ${n} came back different`);
  }
  return { archive: (archive / names.length) * 1000, restore: (restore / names.length) * 1000 };
}
