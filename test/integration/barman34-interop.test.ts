/**
 * Switching to barman-ts and back: Debian 12's real Barman 3.4 (/usr/bin/barman, installed by
 * .ci/run as a test peer) and barman-ts take turns on ONE barman_home and ONE configuration file,
 * as a user who switches does. Each tool backs up, runs cron (which finishes the other's
 * WAITING_FOR_WALS backup and rewrites its backup.info), keeps, rebuilds xlog.db, deletes and
 * enforces retention; after each turn the other tool must list, check (Nagios OK), show, back up
 * and recover everything, and each recovered cluster must start with exactly the rows committed
 * before its target.
 *
 * WAL reaches the server as in many Barman setups, through `incoming/` (archive_command writes a
 * temporary name, then renames), so both tools' archivers take turns on the same queue; WAL is
 * stored gzip-compressed (compression = gzip), so xlog.db carries a compression column.
 */
import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { cleanupAll, PgCluster, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { BARMAN_USER, ensureBarmanUser, makeTempDir, runAs, sleep, waitFor, type ExecResult } from '../helpers/system.js';

const PY_BARMAN = '/usr/bin/barman';
const SERVER = 'pg';

/** The 29 backup.info keys Barman 3.4 knows (it refuses a file with any other). */
const BARMAN_34_KEYS = new Set([
  'backup_label', 'backup_name', 'begin_offset', 'begin_time', 'begin_wal', 'begin_xlog', 'compression', 'config_file',
  'copy_stats', 'deduplicated_size', 'end_offset', 'end_time', 'end_wal', 'end_xlog', 'error', 'hba_file', 'ident_file',
  'included_files', 'mode', 'pgdata', 'server_name', 'size', 'snapshots_info', 'status', 'systemid', 'tablespaces',
  'timeline', 'version', 'xlog_segment_size',
]);

interface Tool {
  name: string;
  run(...args: string[]): Promise<ExecResult>;
  ok(...args: string[]): Promise<string>;
}

function tool(name: string, configFile: string, argv0: string[]): Tool {
  const run = (...args: string[]) => runAs(BARMAN_USER, argv0[0] ?? '', [...argv0.slice(1), '-c', configFile, ...args], { env: { ...process.env, TZ: 'UTC' } });
  return {
    name,
    run,
    async ok(...args) {
      const r = await run(...args);
      if (r.code !== 0) throw new Error(`${name} ${args.join(' ')} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
      // Barman prints an exception as EXCEPTION: on stderr, sometimes with exit code 0 for cron.
      assert.doesNotMatch(r.stderr, /EXCEPTION|Traceback/, `${name} ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    },
  };
}

/** Backup IDs in `list-backups` console output (newest first), with their status words. */
function listed(text: string): Array<{ id: string; line: string }> {
  return text
    .split('\n')
    .map((line) => ({ id: new RegExp(`^${SERVER} (\\d{8}T\\d{6})`).exec(line)?.[1] ?? '', line }))
    .filter((b) => b.id !== '');
}

describe('switching between Barman 3.4 and barman-ts on one barman_home', () => {
  let pg: PgCluster;
  let root: string;
  let home: string;
  let configFile: string;
  let ts: Tool;
  let py: Tool;
  let hold: string;
  /** Rows committed before each named point (inserted in batches of 100). */
  const marks = new Map<string, { time: string; rows: number }>();
  let rows = 0;

  const baseDir = () => path.join(home, SERVER, 'base');
  const xlogDb = () => path.join(home, SERVER, 'wals', 'xlog.db');

  async function writeConfig(serverExtra: Record<string, string> = {}): Promise<void> {
    const server: Record<string, string> = {
      description: '"switch and switch back"',
      conninfo: pg.conninfo,
      backup_method: 'postgres',
      archiver: 'on',
      ...serverExtra,
    };
    const ini = (kv: Record<string, string>) => Object.entries(kv).map(([k, v]) => `${k} = ${v}`).join('\n');
    const text = `[barman]\n${ini({ barman_home: home, barman_user: BARMAN_USER, log_file: path.join(root, 'barman.log'), log_level: 'INFO', compression: 'gzip' })}\n\n[${SERVER}]\n${ini(server)}\n`;
    await runAs(BARMAN_USER, 'tee', [configFile], { input: text, check: true });
  }

  async function insertBatch(): Promise<void> {
    await pg.psql(`INSERT INTO t SELECT g FROM generate_series(${rows + 1}, ${rows + 100}) g;`);
    rows += 100;
  }

  /** Commit a batch, remember the time after it (a PITR target), commit another batch. */
  async function markTarget(name: string): Promise<void> {
    await insertBatch();
    await sleep(1100);
    const time = await pg.psql("SELECT to_char(now(), 'YYYY-MM-DD HH24:MI:SS.US+00')");
    marks.set(name, { time, rows });
    await sleep(1100);
    await insertBatch();
  }

  /** Push the current WAL to incoming/ and let `who` archive it. */
  async function archiveNow(who: Tool): Promise<void> {
    // The segment the switch closed (or, when nothing was written since the last switch, the one before).
    const last = await pg.psql('SELECT pg_walfile_name(pg_switch_wal())');
    await waitFor(
      async () => {
        const archived = await pg.psql('SELECT last_archived_wal FROM pg_stat_archiver');
        return archived.slice(0, 24) >= last;
      },
      { timeoutMs: 60000, intervalMs: 100, what: `${last} in incoming/` },
    );
    await who.ok('archive-wal', SERVER);
  }

  /** Every backup.info has only keys Barman 3.4 knows, every xlog.db line four columns. */
  async function assertReadableBy34(): Promise<void> {
    for (const id of await fs.readdir(baseDir())) {
      const text = await fs.readFile(path.join(baseDir(), id, 'backup.info'), 'utf8');
      const keys = text.split('\n').filter(Boolean).map((l) => l.split('=')[0] ?? '');
      for (const k of keys) assert.ok(BARMAN_34_KEYS.has(k), `${id}/backup.info has key ${k}, unknown to Barman 3.4`);
    }
    for (const line of (await fs.readFile(xlogDb(), 'utf8')).split('\n').filter(Boolean)) {
      assert.equal(line.split('\t').length, 4, `xlog.db line ${JSON.stringify(line)}`);
    }
  }

  /** Both tools list the same backups with the same statuses, and Barman's Nagios check is OK. */
  async function assertBothAgree(): Promise<string[]> {
    await assertReadableBy34();
    const fromPy = listed(await py.ok('list-backups', SERVER));
    const fromTs = listed(await ts.ok('list-backups', SERVER));
    assert.deepEqual(fromTs.map((b) => b.id), fromPy.map((b) => b.id));
    for (const t of [py, ts]) {
      const nagios = await t.run('check', '--nagios', SERVER);
      assert.equal(nagios.code, 0, `${t.name} check --nagios: ${nagios.stdout}${nagios.stderr}`);
      assert.match(nagios.stdout, /^BARMAN OK - Ready to serve the Espresso backup for pg/, t.name);
    }
    for (const b of fromPy) {
      const shown = await py.ok('show-backup', SERVER, b.id);
      assert.match(shown, new RegExp(`^Backup ${b.id}:`), shown);
      await ts.ok('show-backup', SERVER, b.id);
    }
    return fromPy.map((b) => b.id);
  }

  async function recoverAndCount(who: Tool, id: string, mark: string): Promise<void> {
    const target = marks.get(mark);
    assert.ok(target, mark);
    const dir = await makeTempDir(`interop-${who.name}-`, { owner: BARMAN_USER, mode: 0o755 });
    const dest = path.join(dir, 'data');
    await who.ok('recover', '--target-time', target.time, '--target-action', 'promote', SERVER, id, dest);
    const { cluster, outcome } = await startRecoveredCluster(dest, undefined, { extraConf: { archive_mode: 'off' } });
    try {
      assert.equal(outcome, 'primary');
      assert.equal(await cluster.psql('SELECT count(*) FROM t'), String(target.rows), `${who.name} recovered ${id} to ${mark}`);
    } finally {
      await cluster.stop('immediate');
    }
  }

  before(async () => {
    assert.ok(existsSync(PY_BARMAN), `${PY_BARMAN} is missing: .ci/run installs Debian's barman 3.4 as a test peer`);
    await ensureBarmanUser();
    root = await makeTempDir('interop-', { owner: BARMAN_USER, mode: 0o755 });
    home = path.join(root, 'home');
    configFile = path.join(root, 'barman.conf');
    const incoming = path.join(home, SERVER, 'incoming');
    // PostgreSQL (user postgres) drops WAL into incoming/: home and the server directory must be
    // traversable, incoming/ writable (not listable) for it, as with a shared group in production.
    await runAs(BARMAN_USER, 'mkdir', ['-p', '-m', '0711', path.join(home, SERVER)], { check: true });
    await runAs(BARMAN_USER, 'chmod', ['0711', home], { check: true });
    await runAs(BARMAN_USER, 'mkdir', ['-m', '0733', incoming], { check: true });
    const tmp = `${incoming}/.%f.tmp`;
    // While the flag file exists, WAL is held back (PostgreSQL sees it archived, the backup server
    // does not get it yet): a backup then ends WAITING_FOR_WALS until the held WAL is delivered.
    hold = await makeTempDir('interop-hold-', { owner: 'postgres', mode: 0o755 });
    const deliver = `install -m 0644 %p ${tmp} && mv ${tmp} ${incoming}/%f`;
    pg = await PgCluster.create({ archiveMode: true, archiveCommand: `if [ -e ${hold}/HOLD ]; then install -m 0644 %p ${hold}/%f; else ${deliver}; fi` });
    await pg.psql('CREATE TABLE t (v int);');
    await writeConfig();
    ts = tool('barman-ts', configFile, [process.execPath, BARMAN_SCRIPT]);
    py = tool('barman-3.4', configFile, [PY_BARMAN]);
    assert.match((await py.run('-v')).stdout, /^3\.4\./, 'Debian 12 Barman 3.4');
  });

  after(async () => {
    await cleanupAll();
  });

  it('each tool backs up, the other lists, checks and shows it', async () => {
    await insertBatch();
    await ts.ok('switch-wal', '--force', '--archive', SERVER);
    await ts.ok('backup', '--wait', SERVER);
    await markTarget('after-ts-backup');
    await py.ok('backup', SERVER);
    await archiveNow(py);
    await py.ok('cron');
    await ts.ok('cron');
    const ids = await assertBothAgree();
    assert.equal(ids.length, 2);
    for (const b of listed(await py.ok('list-backups', SERVER))) assert.doesNotMatch(b.line, /WAITING_FOR_WALS|FAILED/);
    // what Barman 3.4's backup.info leaves out, barman-ts keeps beside it
    const ours = ids.at(-1) ?? '';
    assert.match(await fs.readFile(path.join(baseDir(), ours, '.barman-ts', 'backup.json'), 'utf8'), /"cluster_size":\d+/);
  });

  it("cron of each tool finishes the other's backup, and both still read it", async () => {
    for (const [taker, finisher] of [[py, ts], [ts, py]] as const) {
      await markTarget(`before-${taker.name}-waiting`);
      // WAL is held back: the backup cannot get its end WAL, so it ends WAITING_FOR_WALS.
      await runAs('postgres', 'touch', [`${hold}/HOLD`], { check: true });
      await taker.ok('backup', SERVER);
      const waiting = listed(await finisher.ok('list-backups', SERVER))[0];
      assert.match(waiting?.line ?? '', /WAITING_FOR_WALS/, `${taker.name}'s backup waits`);
      // Deliver what was held (in archival order, as the archive_command would have).
      await runAs('postgres', 'sh', ['-c', `rm ${hold}/HOLD && cd ${hold} && for f in $(ls); do mv "$f" ${path.join(home, SERVER, 'incoming')}/; done`], { check: true });
      await pg.psql('SELECT pg_switch_wal();');
      await waitFor(
        async () => {
          await finisher.ok('cron');
          return !/WAITING_FOR_WALS/.test(listed(await finisher.ok('list-backups', SERVER))[0]?.line ?? '');
        },
        { timeoutMs: 60000, intervalMs: 500, what: `${finisher.name} cron finishing ${taker.name}'s backup` },
      );
      await assertBothAgree();
    }
  });

  it('keep by one is seen and released by the other; rebuild-xlogdb by either writes the same catalog', async () => {
    const ids = listed(await py.ok('list-backups', SERVER)).map((b) => b.id);
    const oldest = ids.at(-1) ?? '';
    await ts.ok('keep', '--target', 'full', SERVER, oldest);
    assert.match(await py.ok('keep', '--status', SERVER, oldest), /Keep: full/);
    await py.ok('keep', '--release', SERVER, oldest);
    assert.match(await ts.ok('keep', '--status', SERVER, oldest), /Keep: nokeep/);
    await py.ok('keep', '--target', 'standalone', SERVER, oldest);
    assert.match(await ts.ok('keep', '--status', SERVER, oldest), /Keep: standalone/);
    await ts.ok('keep', '--release', SERVER, oldest);
    assert.match(await py.ok('keep', '--status', SERVER, oldest), /Keep: nokeep/);

    await ts.ok('rebuild-xlogdb', SERVER);
    const byTs = await fs.readFile(xlogDb(), 'utf8');
    await py.ok('rebuild-xlogdb', SERVER);
    const byPy = await fs.readFile(xlogDb(), 'utf8');
    assert.equal(byTs, byPy, 'both rebuilds give the same xlog.db');
    await assertBothAgree();
  });

  it('Barman recovers a barman-ts backup and barman-ts a Barman backup, to a point in time', async () => {
    await markTarget('late');
    await archiveNow(ts);
    const ids = listed(await py.ok('list-backups', SERVER)).map((b) => b.id).reverse(); // oldest first
    // [0] barman-ts, [1] Barman, [2] Barman (finished by barman-ts cron), [3] barman-ts (finished by Barman cron)
    assert.equal(ids.length, 4);
    await recoverAndCount(py, ids[0] ?? '', 'after-ts-backup');
    await recoverAndCount(ts, ids[2] ?? '', 'before-barman-ts-waiting');
    await recoverAndCount(py, ids[3] ?? '', 'late');
  });

  it('delete and retention by each tool, then both back up and check again', async () => {
    let ids = listed(await py.ok('list-backups', SERVER)).map((b) => b.id).reverse();
    // Barman deletes barman-ts's oldest backup, barman-ts deletes Barman's next one.
    await py.ok('delete', SERVER, ids[0] ?? '');
    await ts.ok('delete', SERVER, ids[1] ?? '');
    ids = await assertBothAgree();
    assert.equal(ids.length, 2);
    // Retention: REDUNDANCY 2; each tool's cron removes what became obsolete after its backup.
    await writeConfig({ retention_policy: 'REDUNDANCY 2' });
    await py.ok('backup', '--wait', SERVER);
    await ts.ok('cron');
    ids = await assertBothAgree();
    assert.equal(ids.length, 2, 'barman-ts cron enforced REDUNDANCY 2 on a Barman backup set');
    await ts.ok('backup', '--wait', SERVER);
    await py.ok('cron');
    ids = await assertBothAgree();
    assert.equal(ids.length, 2, 'Barman cron enforced REDUNDANCY 2 on a barman-ts backup set');
    await markTarget('end');
    await archiveNow(py);
    await recoverAndCount(ts, ids[1] ?? '', 'end');
  });
});
