/**
 * barman-cloud-backup and barman-cloud-backup-delete against real object stores (s3rver and
 * Azurite on 127.0.0.1, started by the first case that needs them), backing up cluster A:
 *
 *   backup killed (SIGKILL, SIGTERM) in the middle of the upload (fault point
 *   `upload:part-uploaded`, a part of a multipart upload acknowledged) and once everything but
 *   backup.info is stored (`cloud-backup:sums-written`); the object store cut under the upload
 *   (s3rver killed and started again on its data, Azurite stopped for a moment).
 *   Expected: no new backup listed unless the run succeeded (a FAILED one only in the JSON list,
 *   hidden from the console list, as Barman), no DONE backup with a missing or short object
 *   (its checksums file against the listing), and the next barman-cloud-backup succeeds and
 *   barman-cloud-restore of it verifies every object's checksum.
 *
 *   delete killed once backup.info is marked (`cloud-delete:marked`), between objects
 *   (`cloud-delete:objects-batch`, batches of one) and between WAL batches (`cloud-delete:wals-batch`),
 *   on synthetic backups (a tar in three objects, checksums, backup.info) and WAL objects of a
 *   server of the case's own. Expected: the backup is whole and listed, or not listed at all;
 *   no WAL a remaining backup needs is gone; running the delete again completes it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { newBackupInfo, serializeBackupInfo } from '../../src/catalog/backup-info.js';
import { CloudCatalog } from '../../src/cloud/catalog.js';
import { readSums, writeSums } from '../../src/cloud/integrity.js';
import { CloudLayout } from '../../src/cloud/layout.js';
import { AzureStorage } from '../../src/storage/azure.js';
import { S3Storage } from '../../src/storage/s3.js';
import { listAll, type ObjectStorage } from '../../src/storage/types.js';
import { parsePyDatetime } from '../../src/util/pytime.js';
import { startAzurite, startS3rver, type ObjectStoreServer, type Provider } from '../helpers/object-stores.js';
import { POSTGRES_USER } from '../helpers/system.js';
import { describe, exec, start, NODE, REPO, waitForFile, type CmdOptions, type CmdResult } from './exec.js';
import { firstLine, how } from './common.js';
import { startAndReadRows } from './invariants.js';
import type { CaseContext, FaultCase, FaultKind } from './types.js';

const BUCKET = 'bkfaults';
const SERVER = 'clusterA';

interface Store {
  server: ObjectStoreServer;
  storage: ObjectStorage;
}
const stores = new Map<Provider, Store>();

async function openStorage(server: ObjectStoreServer): Promise<ObjectStorage> {
  // The SDKs read their credentials from the environment (the campaign's own process only
  // talks to these two local emulators: their well-known development credentials).
  Object.assign(process.env, server.env);
  return server.provider === 'aws-s3' ? S3Storage.open({ bucket: BUCKET, endpointUrl: server.endpoint }) : new AzureStorage({ container: BUCKET });
}

async function storeOf(p: Provider): Promise<Store> {
  let s = stores.get(p);
  if (!s) {
    const server = p === 'aws-s3' ? await startS3rver() : await startAzurite();
    const storage = await openStorage(server);
    if (!(await storage.containerExists())) await storage.createContainer();
    s = { server, storage };
    stores.set(p, s);
  }
  return s;
}

export async function stopCloudBackupStores(): Promise<void> {
  for (const s of stores.values()) {
    await s.storage.close().catch(() => undefined);
    await s.server.stop().catch(() => undefined);
  }
  stores.clear();
}

const short = (p: Provider) => (p === 'aws-s3' ? 's3' : 'azure');

function toolArgv(tool: string, st: ObjectStoreServer, args: string[]): string[] {
  return [NODE, path.join(REPO, 'bin', `${tool}.js`), ...st.args, ...args];
}

function tool(st: ObjectStoreServer, name: string, args: string[], opts: CmdOptions = {}): Promise<CmdResult> {
  return exec(toolArgv(name, st, args), { user: POSTGRES_USER, timeoutMs: 240_000, ...opts, env: { ...st.env, ...(opts.env ?? {}) } });
}

interface Listed {
  backup_id: string;
  status: string;
  begin_wal?: string;
}

/** barman-cloud-backup-list --format json (every backup with a backup.info), and the console list's IDs. */
async function listBackups(ctx: CaseContext, st: ObjectStoreServer, url: string, server: string): Promise<{ json: Listed[]; console: string[] }> {
  const j = await tool(st, 'barman-cloud-backup-list', ['--format', 'json', url, server]);
  ctx.expect(j.code === 0, `barman-cloud-backup-list --format json: ${describe(j)}`);
  const c = await tool(st, 'barman-cloud-backup-list', [url, server]);
  ctx.expect(c.code === 0, `barman-cloud-backup-list: ${describe(c)}`);
  let json: Listed[] = [];
  try {
    json = (JSON.parse(j.stdout) as { backups_list: Listed[] }).backups_list;
  } catch {
    ctx.expect(false, `the JSON list parses: ${j.stdout.slice(0, 200)}`);
  }
  const lines = c.stdout.trim().split('\n').slice(1);
  return { json, console: lines.map((l) => l.split(/\s+/)[0] as string).filter(Boolean) };
}

/**
 * Every backup the console list shows (DONE) is whole: its checksums file lists each object,
 * present at its recorded size, and a `data` tar is among them. Returns the IDs checked.
 */
async function listedAreWhole(ctx: CaseContext, storage: ObjectStorage, server: string, ids: readonly string[]): Promise<void> {
  const layout = new CloudLayout('', server);
  const catalog = new CloudCatalog(storage, layout);
  for (const id of ids) {
    const dir = layout.backupDir(id);
    const sums = await readSums(storage, layout.sumsKey(id));
    ctx.expect(sums !== null && sums.size > 0, `${server}/${id} is listed: its checksums file is there`);
    const sizes = new Map((await listAll(storage, dir)).map((o) => [o.key.slice(dir.length), o.size]));
    for (const [name, s] of sums ?? []) ctx.expect(sizes.get(name) === s.size, `${server}/${id} is listed, so ${name} must be there with ${s.size} bytes (found ${sizes.get(name) ?? 'nothing'})`);
    const entry = (await catalog.backups()).find((e) => e.id === id);
    ctx.expect(entry !== undefined, `${server}/${id} listed has a backup.info`);
    if (entry) {
      try {
        await catalog.backupFiles(entry);
      } catch (err) {
        ctx.expect(false, `${server}/${id} is listed with a missing archive: ${(err as Error).message}`);
      }
    }
  }
}

function backupArgs(ctx: CaseContext, st: ObjectStoreServer, name: string): string[] {
  // Archives of 8 MB in parts of 5 MB: several objects, each a multipart upload.
  return ['-S', '8MB', '--min-chunk-size', '5MB', '--immediate-checkpoint', '-h', '127.0.0.1', '-p', String(ctx.world.pg.port), '-U', 'postgres', '-n', name, st.url(BUCKET), SERVER];
}

/**
 * After a backup under a fault: what the lists show, the DONE backups whole; then a backup
 * without a fault succeeds and restores with every checksum verified.
 */
async function afterBackupFault(ctx: CaseContext, p: Provider, before: Set<string>, r: CmdResult): Promise<string> {
  const { server: st, storage } = await storeOf(p);
  const { json, console } = await listBackups(ctx, st, st.url(BUCKET), SERVER);
  const fresh = json.filter((b) => !before.has(b.backup_id));
  const freshDone = fresh.filter((b) => b.status === 'DONE');
  if (r.code !== 0) ctx.expect(freshDone.length === 0, `a backup that failed (${how(r)}) is not listed DONE: ${fresh.map((b) => `${b.backup_id} ${b.status}`).join(', ')}`);
  else ctx.expect(freshDone.length === 1, `the backup that succeeded is DONE (${fresh.map((b) => `${b.backup_id} ${b.status}`).join(', ') || 'none'})`);
  for (const b of fresh) if (b.status !== 'DONE') ctx.expect(!console.includes(b.backup_id), `the ${b.status} backup ${b.backup_id} is hidden from the console list`);
  const doneIds = json.filter((b) => b.status === 'DONE').map((b) => b.backup_id);
  ctx.expect(console.length === doneIds.length && doneIds.every((id) => console.includes(id)), `the console list shows exactly the DONE backups: ${console.join(' ')} / ${doneIds.join(' ')}`);
  await listedAreWhole(ctx, storage, SERVER, console);

  // The next backup succeeds (PostgreSQL not left in backup mode, the ID claim not stuck) and restores.
  const name = `again-${Date.now()}`;
  const again = await tool(st, 'barman-cloud-backup', backupArgs(ctx, st, name));
  ctx.expect(again.code === 0, `barman-cloud-backup after the fault: ${describe(again)}`);
  let restored = 'not restored';
  if (again.code === 0) {
    const show = await tool(st, 'barman-cloud-backup-show', ['--format', 'json', st.url(BUCKET), SERVER, name]);
    let status = '';
    try {
      status = String((JSON.parse(show.stdout) as { cloud?: { status?: string } }).cloud?.status);
    } catch {
      status = `unparsable: ${show.stdout.slice(0, 100)}`;
    }
    ctx.expect(show.code === 0 && status === 'DONE', `barman-cloud-backup-show of the new backup says DONE (${status}): ${describe(show)}`);
    const walRange = showWalRange(show.stdout);
    const dest = path.join(await ctx.world.scratch('cloud-bk-restore', POSTGRES_USER), 'pgdata');
    const rs = await tool(st, 'barman-cloud-restore', [st.url(BUCKET), SERVER, name, dest]);
    ctx.expect(rs.code === 0, `barman-cloud-restore of the new backup (every object's checksum verified): ${describe(rs)}`);
    if (rs.code === 0) {
      for (const f of ['PG_VERSION', 'global/pg_control', 'backup_label']) ctx.expect(existsSync(path.join(dest, f)), `the restored directory has ${f}`);
      restored = 'restored';
      if (!started.has(p)) {
        // Once per store: the restored directory starts with PostgreSQL and has the data.
        started.add(p);
        const problem = await startCloudRestore(ctx, dest, walRange);
        ctx.checker.restores.push({ server: `cloud ${p}`, id: name, why: 'first barman-cloud backup of the store restored after a fault', ok: problem === null });
        ctx.expect(problem === null, `the restored cloud backup starts with PostgreSQL and has its rows: ${problem ?? ''}`);
        if (problem === null) restored = 'restored and started';
      }
    }
    await fs.rm(path.dirname(dest), { recursive: true, force: true });
    // Keep the bucket small: the new backup has been proven; it goes (no WAL in this bucket).
    const del = await tool(st, 'barman-cloud-backup-delete', ['-b', name, st.url(BUCKET), SERVER]);
    ctx.expect(del.code === 0, `barman-cloud-backup-delete of the new backup: ${describe(del)}`);
  }
  const left = fresh.map((b) => `${b.status}`).join(',') || 'nothing listed';
  return `${how(r)}${r.code ? `: ${firstLine(r)}` : ''}; left ${left}; next backup ${how(again)}, ${restored}`;
}

/** Stores whose restored backup was started with PostgreSQL in this campaign. */
const started = new Set<Provider>();

function showWalRange(json: string): { begin: string; end: string } | null {
  try {
    const c = (JSON.parse(json) as { cloud?: { begin_wal?: string; end_wal?: string } }).cloud;
    return c?.begin_wal && c.end_wal ? { begin: c.begin_wal, end: c.end_wal } : null;
  } catch {
    return null;
  }
}

/**
 * Start PostgreSQL on a directory barman-cloud-restore wrote (no WAL in this bucket: the
 * backup's WAL, begin_wal to end_wal, is copied from cluster A's pg_wal, which keeps it), then
 * read the data: null when all is well, else why not.
 */
async function startCloudRestore(ctx: CaseContext, dest: string, range: { begin: string; end: string } | null): Promise<string | null> {
  if (range === null) return 'barman-cloud-backup-show gave no begin_wal/end_wal';
  const src = path.join(ctx.world.pg.dataDir, 'pg_wal');
  const names = (await fs.readdir(src)).filter((n) => /^[0-9A-F]{24}$/.test(n) && n >= range.begin && n <= range.end);
  if (!names.includes(range.begin) || !names.includes(range.end)) return `cluster A no longer has ${range.begin}..${range.end} in pg_wal`;
  for (const n of names) await fs.copyFile(path.join(src, n), path.join(dest, 'pg_wal', n));
  return startAndReadRows(dest);
}

async function idsBefore(ctx: CaseContext, p: Provider): Promise<Set<string>> {
  const { server: st } = await storeOf(p);
  return new Set((await listBackups(ctx, st, st.url(BUCKET), SERVER)).json.map((b) => b.backup_id));
}

function backupPointCase(p: Provider, point: string, action: 'kill' | 'term'): FaultCase {
  const kind: FaultKind = action === 'kill' ? 'SIGKILL' : 'SIGTERM';
  return {
    id: `barman-cloud-backup-${short(p)}/${action}@${point}`,
    process: 'barman-cloud-backup',
    point: `${point} (${p})`,
    kind,
    servers: [],
    async run(ctx) {
      const { server: st } = await storeOf(p);
      const before = await idsBefore(ctx, p);
      const r = await tool(st, 'barman-cloud-backup', backupArgs(ctx, st, `fault-${Date.now()}`), { fault: `${point}=${action}` });
      ctx.requireFired(point.replace(/@\d+$/, ''));
      return afterBackupFault(ctx, p, before, r);
    },
  };
}

/** The store cut under the upload: paused at a part, the server killed (s3rver) or stopped (Azurite). */
function storeCutCase(p: Provider): FaultCase {
  const how = p === 'aws-s3' ? 'killed and started again 2 s later on its data' : 'stopped (SIGSTOP) for 5 s';
  return {
    id: `barman-cloud-backup-${short(p)}/store-cut@upload:part-uploaded@2`,
    process: 'barman-cloud-backup',
    point: `object store ${how} after the second part (${p})`,
    kind: 'ssh killed',
    servers: [],
    async run(ctx) {
      const s = await storeOf(p);
      const before = await idsBefore(ctx, p);
      const flag = ctx.flag('part-paused');
      const run = start(toolArgv('barman-cloud-backup', s.server, backupArgs(ctx, s.server, `cut-${Date.now()}`)), {
        user: POSTGRES_USER,
        timeoutMs: 300_000,
        fault: `upload:part-uploaded@2=pause:${flag}`,
        env: s.server.env,
      });
      ctx.expect(await waitForFile(`${flag}.reached`, run), 'the upload reached its second part');
      ctx.requireFired('upload:part-uploaded');
      let restart: Promise<void> = Promise.resolve();
      if (p === 'aws-s3') {
        const { dir, port } = s.server;
        process.kill(s.server.pid, 'SIGKILL');
        await new Promise((res) => setTimeout(res, 300));
        await fs.writeFile(flag, '');
        restart = (async () => {
          await new Promise((res) => setTimeout(res, 2000));
          const server = await startS3rver({ dir, port });
          await s.storage.close().catch(() => undefined);
          stores.set(p, { server, storage: await openStorage(server) });
        })();
      } else {
        process.kill(s.server.pid, 'SIGSTOP');
        await fs.writeFile(flag, '');
        restart = (async () => {
          await new Promise((res) => setTimeout(res, 5000));
          process.kill(s.server.pid, 'SIGCONT');
        })();
      }
      const r = await run.done;
      run.killGroup();
      await restart;
      return `store ${p === 'aws-s3' ? 'killed' : 'stopped'}; ${await afterBackupFault(ctx, p, before, r)}`;
    },
  };
}

// ---- barman-cloud-backup-delete ----

const seq = { n: 0 };
const WAL = (n: number) => `00000001000000000000${n.toString(16).toUpperCase().padStart(4, '0')}`;

/**
 * A server of the case's own in the bucket: three synthetic DONE backups (begin WAL 0x20, 0x24,
 * 0x28 + the case's offset), each a tar cut in three objects with their checksums, and the WAL
 * objects from 0x1E to 0x2B.
 */
async function syntheticServer(storage: ObjectStorage): Promise<{ server: string; ids: string[]; begins: string[]; wals: string[] }> {
  const server = `del-${++seq.n}-${Date.now()}`;
  const layout = new CloudLayout('', server);
  const ids: string[] = [];
  const begins: string[] = [];
  for (let i = 0; i < 3; i++) {
    const id = `2024010${i + 1}T000000`;
    const begin = WAL(0x20 + 4 * i);
    const objs: Array<{ key: string; size: number; sha256: string }> = [];
    for (let part = 0; part < 3; part++) {
      const key = layout.tarKey(id, 'data', part, null);
      const body = randomBytes(4096 + part);
      await storage.put(key, body);
      objs.push({ key, size: body.length, sha256: createHash('sha256').update(body).digest('hex') });
    }
    await writeSums(storage, layout.sumsKey(id), objs);
    const t = parsePyDatetime(`2024-01-0${i + 1} 00:10:00+00:00`);
    const info = newBackupInfo({ status: 'DONE', server_name: 'cloud', begin_wal: begin, end_wal: WAL(0x20 + 4 * i + 1), timeline: 1, version: 150000, begin_time: t, end_time: t, begin_xlog: `0/${(0x20 + 4 * i).toString(16).toUpperCase()}000000`, end_xlog: `0/${(0x21 + 4 * i).toString(16).toUpperCase()}000100` });
    await storage.put(layout.backupInfoKey(id), Buffer.from(serializeBackupInfo(info)));
    ids.push(id);
    begins.push(begin);
  }
  const wals: string[] = [];
  for (let n = 0x1e; n <= 0x2b; n++) {
    wals.push(WAL(n));
    await storage.put(layout.walKey(WAL(n), 'gzip'), Buffer.from(`wal ${n}`));
  }
  return { server, ids, begins, wals };
}

async function walNamesOf(storage: ObjectStorage, server: string): Promise<Set<string>> {
  const layout = new CloudLayout('', server);
  return new Set((await listAll(storage, layout.walsPrefix)).map((o) => o.key.slice(o.key.lastIndexOf('/') + 1).replace(/\.gz$/, '')));
}

/** No WAL from the oldest listed backup's begin on is gone; every listed backup is whole. */
async function deleteInvariants(ctx: CaseContext, p: Provider, syn: { server: string; ids: string[]; begins: string[]; wals: string[] }, when: string): Promise<string[]> {
  const { server: st, storage } = await storeOf(p);
  const { json, console } = await listBackups(ctx, st, st.url(BUCKET), syn.server);
  await listedAreWhole(ctx, storage, syn.server, console);
  for (const b of json) if (b.status !== 'DONE') ctx.expect(!console.includes(b.backup_id), `${when}: ${b.backup_id} ${b.status} is hidden from the console list`);
  const remaining = json.map((b) => b.backup_id);
  const begins = syn.ids.map((id, i) => [id, syn.begins[i] as string] as const).filter(([id]) => remaining.includes(id)).map(([, b]) => b);
  const floor = begins.sort()[0];
  const have = await walNamesOf(storage, syn.server);
  if (floor) for (const w of syn.wals) if (w >= floor) ctx.expect(have.has(w), `${when}: WAL ${w} (needed from ${floor}, the oldest remaining backup's begin) is still in the bucket`);
  return console;
}

function deleteCase(p: Provider, point: string, mode: 'by-id' | 'by-policy'): FaultCase {
  return {
    id: `barman-cloud-backup-delete-${short(p)}/kill@${point}/${mode}`,
    process: 'barman-cloud-backup-delete',
    point: `${point}, batches of one (${mode === 'by-id' ? 'the oldest backup by ID' : 'REDUNDANCY 1: two obsolete backups'}, ${p})`,
    kind: 'SIGKILL',
    servers: [],
    async run(ctx) {
      const { server: st, storage } = await storeOf(p);
      const syn = await syntheticServer(storage);
      const url = st.url(BUCKET);
      const target = mode === 'by-id' ? ['-b', syn.ids[0] as string] : ['-r', 'REDUNDANCY 1'];
      const args = [...target, '--batch-size', '1', url, syn.server];
      const r = await tool(st, 'barman-cloud-backup-delete', args, { fault: `${point}=kill` });
      ctx.requireFired(point.replace(/@\d+$/, ''));
      const listed = await deleteInvariants(ctx, p, syn, 'after the kill');
      // Run again: by ID while the backup is still there (gone: nothing to run), by policy always.
      let again: CmdResult | null = null;
      const rerunArgs = mode === 'by-id' ? (listed.includes(syn.ids[0] as string) || (await listBackups(ctx, st, url, syn.server)).json.some((b) => b.backup_id === syn.ids[0]) ? args : null) : args;
      if (rerunArgs) {
        again = await tool(st, 'barman-cloud-backup-delete', rerunArgs);
        ctx.expect(again.code === 0, `barman-cloud-backup-delete run again: ${describe(again)}`);
      }
      const final = await deleteInvariants(ctx, p, syn, 'after the rerun');
      const all = (await listBackups(ctx, st, url, syn.server)).json.map((b) => b.backup_id);
      const expected = mode === 'by-id' ? syn.ids.slice(1) : syn.ids.slice(2);
      ctx.expect(JSON.stringify(all) === JSON.stringify(expected), `after the rerun exactly ${expected.join(' ')} are left (${all.join(' ') || 'none'})`);
      // The WAL before the oldest remaining backup is gone after a completed delete.
      const have = await walNamesOf(storage, syn.server);
      const floor = mode === 'by-id' ? syn.begins[1] : syn.begins[2];
      const stale = syn.wals.filter((w) => w < (floor as string) && have.has(w));
      ctx.expect(stale.length === 0, `the WAL before ${floor} is removed once the delete completed (left: ${stale.join(' ')})`);
      return `${how(r)}; listed then ${listed.length}; rerun ${again ? how(again) : 'not needed'}; listed ${final.length}`;
    },
  };
}

export function cloudBackupCases(): FaultCase[] {
  const c: FaultCase[] = [];
  for (const p of ['aws-s3', 'azure-blob-storage'] as const) {
    c.push(backupPointCase(p, 'upload:part-uploaded@3', 'kill'));
    c.push(backupPointCase(p, 'upload:part-uploaded@3', 'term'));
    c.push(backupPointCase(p, 'cloud-backup:sums-written', 'kill'));
    c.push(backupPointCase(p, 'cloud-backup:sums-written', 'term'));
    c.push(storeCutCase(p));
  }
  for (const p of ['aws-s3', 'azure-blob-storage'] as const) {
    c.push(deleteCase(p, 'cloud-delete:objects-batch@2', 'by-id'));
    c.push(deleteCase(p, 'cloud-delete:marked', 'by-id'));
    c.push(deleteCase(p, 'cloud-delete:wals-batch@2', 'by-id'));
  }
  c.push(deleteCase('aws-s3', 'cloud-delete:objects-batch@5', 'by-policy'));
  return c;
}
