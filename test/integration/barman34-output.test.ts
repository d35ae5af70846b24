/**
 * The real Barman 3.4 (Debian 12's /usr/bin/barman) and barman-ts side by side on the same
 * catalogs and the same PostgreSQL 15, as the barman user with TZ=UTC, comparing what scripts
 * and monitoring read:
 *  - server `pg`: the hand-written 3.4 catalog of barman34-catalog.ts, PostgreSQL up, nothing
 *    streaming: list-backups, show-backup and status byte for byte (values that move with the
 *    clock or PostgreSQL's activity masked), their JSON (Barman's keys with Barman's values),
 *    show-servers (every key of Barman's, same values), check --nagios;
 *  - server `live`, driven by Barman 3.4 only (so that its catalog stays Barman's own): both
 *    refuse a backup before WAL archiving works, both report the receive-wal that Barman's
 *    cron started, Barman takes a backup, both recover it and end with the same lines, and
 *    both fail `receive-wal --stop` once none runs.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SERVER_OPTIONS } from '../../src/config/options.js';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { writeBarman34Catalog } from '../helpers/barman34-catalog.js';
import { differences, extraKeys } from '../helpers/barman34-golden.js';
import { createBarmanEnv, type BarmanEnv } from '../helpers/barman-env.js';
import { cleanupAll, PgCluster } from '../helpers/pg-cluster.js';
import { BARMAN_USER, chownR, runAs, waitFor, type ExecResult } from '../helpers/system.js';

const PY_BARMAN = '/usr/bin/barman';
const TZ = { ...process.env, TZ: 'UTC' };

const py = (env: BarmanEnv, ...args: string[]): Promise<ExecResult> => runAs(BARMAN_USER, PY_BARMAN, ['-c', env.configFile, ...args], { env: TZ });
const ts = (env: BarmanEnv, ...args: string[]): Promise<ExecResult> => runAs(BARMAN_USER, process.execPath, [BARMAN_SCRIPT, '-c', env.configFile, ...args], { env: TZ });
const both = async (env: BarmanEnv, ...args: string[]): Promise<{ py: ExecResult; ts: ExecResult }> => ({ py: await py(env, ...args), ts: await ts(env, ...args) });

/** status rows whose value moves with the clock or PostgreSQL's activity. */
const VOLATILE_STATUS = ['Current data size', 'Server WAL archiving rate', 'Last archived WAL', 'Current WAL segment'];
const maskStatus = (text: string): string => text.replace(new RegExp(`^\\t(${VOLATILE_STATUS.join('|')}): .*$`, 'gm'), '\t$1: *');

/** show-servers keys whose value moves with the clock or PostgreSQL's activity. */
const VOLATILE_SERVER_KEYS = new Set([
  'current_lsn',
  'current_xlog',
  'xlogpos',
  'current_size',
  'current_archived_wals_per_second',
  'archived_count',
  'last_archived_wal',
  'last_archived_time',
  'replication_slot',
]);
const BARMAN_TS_KEYS = new Set<string>([...SERVER_OPTIONS.map((o) => o.name), 'active_model']);

function compareShowServers(server: string, pyOut: string, tsOut: string): void {
  const theirs = (JSON.parse(pyOut) as Record<string, Record<string, unknown>>)[server] ?? {};
  const ours = (JSON.parse(tsOut) as Record<string, Record<string, unknown>>)[server] ?? {};
  for (const k of VOLATILE_SERVER_KEYS) {
    if (k in theirs) assert.ok(k in ours, `${k} missing`);
    delete theirs[k];
  }
  assert.deepEqual(differences(ours, theirs), []);
  assert.deepEqual(
    Object.keys(ours).filter((k) => !(k in theirs) && !VOLATILE_SERVER_KEYS.has(k) && !BARMAN_TS_KEYS.has(k)),
    [],
    'keys that are neither Barman 3.4\'s nor barman-ts options',
  );
}

describe('Barman 3.4 and barman-ts print the same', () => {
  let pg: PgCluster;
  let golden: BarmanEnv;
  let live: BarmanEnv;

  before(async () => {
    pg = await PgCluster.create({ archiveMode: true, archiveCommand: '/bin/true' });
    golden = await createBarmanEnv(pg, {
      extra: { description: '"Golden test"', archiver: 'on', streaming_archiver: 'on', slot_name: 'golden', create_slot: 'manual', minimum_redundancy: '0' },
    });
    const srvDir = path.join(golden.home, golden.server);
    await writeBarman34Catalog(srvDir);
    await chownR(srvDir, BARMAN_USER);
    live = await createBarmanEnv(pg, { server: 'live', extra: { slot_name: 'barman_live', create_slot: 'manual' } });
  });

  after(async () => {
    await live?.stop();
    await cleanupAll();
  });

  describe('on a Barman 3.4 catalog', () => {
    it('list-backups: the same console lines; the same JSON but for backup_type', async () => {
      const r = await both(golden, 'list-backups', 'pg');
      assert.equal(r.py.code, 0, r.py.stderr);
      assert.equal(r.ts.code, 0, r.ts.stderr);
      assert.equal(r.ts.stdout, r.py.stdout);
      const j = await both(golden, '-f', 'json', 'list-backups', 'pg');
      assert.deepEqual(differences(JSON.parse(j.ts.stdout), JSON.parse(j.py.stdout)), []);
      assert.deepEqual(extraKeys(JSON.parse(j.ts.stdout), JSON.parse(j.py.stdout)), ['$.pg[].backup_type']);
    });

    for (const id of ['20240101T100000', '20240102T100000', '20240103T100000']) {
      it(`show-backup ${id}: the same console lines, Barman's JSON keys and values`, async () => {
        const r = await both(golden, 'show-backup', 'pg', id);
        assert.equal(r.py.code, 0, r.py.stderr);
        assert.equal(r.ts.stdout, r.py.stdout);
        const j = await both(golden, '-f', 'json', 'show-backup', 'pg', id);
        assert.deepEqual(differences(JSON.parse(j.ts.stdout), JSON.parse(j.py.stdout)), []);
      });
    }

    it('status: the same rows and JSON keys, PostgreSQL up', async () => {
      const r = await both(golden, 'status', 'pg');
      assert.equal(r.py.code, 0, r.py.stderr);
      assert.equal(r.ts.code, 0, r.ts.stderr);
      assert.match(r.ts.stdout, /\tPostgreSQL version: 15\.\d+\n/);
      assert.equal(maskStatus(r.ts.stdout), maskStatus(r.py.stdout));
      const j = await both(golden, '-f', 'json', 'status', 'pg');
      const theirs = (JSON.parse(j.py.stdout) as { pg: Record<string, { description: string; message: string }> }).pg;
      const ours = (JSON.parse(j.ts.stdout) as { pg: Record<string, { description: string; message: string }> }).pg;
      assert.deepEqual(Object.keys(ours).sort(), Object.keys(theirs).sort());
      for (const [k, v] of Object.entries(theirs)) {
        assert.equal(ours[k]?.description, v.description, k);
        if (!VOLATILE_STATUS.includes(v.description)) assert.equal(ours[k]?.message, v.message, k);
      }
    });

    it("show-servers: every key of Barman's, with Barman's value", async () => {
      const j = await both(golden, '-f', 'json', 'show-servers', 'pg');
      assert.equal(j.py.code, 0, j.py.stderr);
      assert.equal(j.ts.code, 0, j.ts.stderr);
      compareShowServers('pg', j.py.stdout, j.ts.stdout);
      // The console shows the same text for the same keys.
      const r = await both(golden, 'show-servers', 'pg');
      const ours = new Set(r.ts.stdout.split('\n'));
      const missing = r.py.stdout
        .split('\n')
        .filter((l) => !ours.has(l))
        .filter((l) => !VOLATILE_SERVER_KEYS.has(/^\t([a-z_]+):/.exec(l)?.[1] ?? ''));
      assert.deepEqual(missing, []);
    });

    it('check --nagios: the same plugin output and exit code', async () => {
      const r = await both(golden, 'check', '--nagios', 'pg');
      assert.equal(r.ts.code, r.py.code, `${r.py.stdout}\n---\n${r.ts.stdout}`);
      assert.equal(r.ts.stdout, r.py.stdout);
    });
  });

  describe('on a server driven by Barman 3.4', () => {
    it('both refuse a backup while WAL archiving does not work yet, in the same words, exit 1', async () => {
      const r = await both(live, 'backup', 'live');
      const refusal = "ERROR: Impossible to start the backup. Check the log for more details, or run 'barman check live'";
      assert.equal(r.py.code, 1, r.py.stderr);
      assert.equal(r.py.stderr.trim(), refusal);
      assert.equal(r.ts.code, 1, r.ts.stderr);
      assert.equal(r.ts.stderr.split('\n')[0], refusal);
      assert.equal(r.ts.stdout, r.py.stdout);
      assert.deepEqual(await fsp.readdir(path.join(live.home, 'live', 'base')).catch(() => []), []);
    });

    it('both report a receive-wal already running on stdout, exit 0', async () => {
      const slot = await py(live, 'receive-wal', '--create-slot', 'live');
      assert.equal(slot.code, 0, slot.stderr);
      const cron = await py(live, 'cron');
      assert.equal(cron.code, 0, cron.stderr);
      await waitFor(async () => (await ts(live, 'check', 'live')).stdout.includes('\treceive-wal running: OK'), { timeoutMs: 60_000, what: "Barman's receive-wal" });
      const r = await both(live, 'receive-wal', 'live');
      assert.equal(r.py.code, 0, r.py.stderr);
      assert.equal(r.ts.code, 0, r.ts.stderr);
      assert.equal(r.py.stdout, 'Starting receive-wal for server live\nAnother receive-wal process is already running for server live.\n');
      assert.equal(r.ts.stdout, r.py.stdout);
    });

    it('recover of a Barman backup ends with the same lines', async () => {
      const sw = await py(live, 'switch-wal', '--force', '--archive', '--archive-timeout', '60', 'live');
      assert.equal(sw.code, 0, sw.stdout + sw.stderr);
      const b = await py(live, 'backup', '--wait', '--wait-timeout', '120', 'live');
      assert.equal(b.code, 0, b.stdout + b.stderr);
      const nagios = await both(live, 'check', '--nagios', 'live');
      assert.equal(nagios.ts.stdout, nagios.py.stdout);
      assert.equal(nagios.ts.code, nagios.py.code);

      const pyDest = await live.newDir('golden-py-');
      const tsDest = await live.newDir('golden-ts-');
      const rp = await py(live, 'recover', 'live', 'latest', pyDest);
      const rt = await ts(live, 'recover', 'live', 'latest', tsDest);
      assert.equal(rp.code, 0, rp.stderr);
      assert.equal(rt.code, 0, rt.stderr);
      const norm = (text: string, dest: string) =>
        text
          .replaceAll(dest, 'DEST')
          .replace(/\(start time: .+, elapsed time: .+\)/, '(start time: T, elapsed time: E)');
      assert.equal(norm(rt.stdout, tsDest), norm(rp.stdout, pyDest));
      const last = rt.stdout.trimEnd().split('\n').slice(-2);
      assert.match(last[0] ?? '', /^Recovery completed \(start time: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\+00:00, elapsed time: .+\)$/);
      assert.equal(last[1], 'Your PostgreSQL server has been successfully prepared for recovery!');
    });

    it('receive-wal --stop: both fail once none runs, in the same words', async () => {
      const stop = await ts(live, 'receive-wal', '--stop', 'live');
      assert.equal(stop.code, 0, stop.stderr);
      assert.match(stop.stdout, /^Stopped process receive-wal\(\d+\)\n$/);
      const r = await both(live, 'receive-wal', '--stop', 'live');
      assert.equal(r.py.code, 1);
      assert.equal(r.ts.code, 1);
      assert.equal(r.py.stderr, 'ERROR: Termination of receive-wal failed: no such process for server live\n');
      assert.equal(r.ts.stderr, r.py.stderr);
    });
  });
});
