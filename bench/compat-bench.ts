/**
 * Every Barman-compatible setting beside Barman 3.4 (`npm run bench -- --compat-only`, or a
 * section of `npm run bench`): a Barman user who switches keeps their configuration, so none of
 * it may get slower. Same cluster, same data, same run, the two tools alternating:
 *
 *   backup_method = postgres   backup_compression none (plain), gzip, lz4, zstd (client-side tar)
 *   backup_method = rsync      over ssh (a real sshd on 127.0.0.1), parallel_jobs 1 and 2
 *   backup_method = local-rsync  (barman_user = postgres, on the database host)
 *   WAL                        one barman-wal-archive call per segment, no `.ready` backlog (what
 *                              PostgreSQL does when it keeps up), without and with an ssh
 *                              ControlMaster; barman-wal-restore as in Barman's manual (no -p),
 *                              one call per segment in order
 *
 * Each tool has its own barman_home, streaming archiver (receive-wal, its own slot) and
 * configuration; one server per tool whose options are rewritten between settings. Backups are
 * timed as `barman backup SERVER` (no --wait), cold page cache and warm programs before each
 * (as bench/rsync-bench.ts), best of --rounds (2); each backup is deleted afterwards (not timed).
 * WAL rows are medians of --compat-wal-calls (8) calls. Barman 3.4 is Debian's package
 * (bench/barman34.ts). The 1-minute load average is printed with each row: on a shared machine
 * compare the ratios of one run, not the seconds of two.
 *
 * Options: --compat-scale N (pgbench scale, default 60), --rounds N, --compat-wal-calls N,
 * --compat-wal-only (the WAL rows alone).
 */
import { promises as fs } from 'node:fs';
import { loadavg } from 'node:os';
import * as path from 'node:path';
import { BIN, chownTo, isRoot, LocalCluster, must } from '../src/sandbox/local.js';
import { run } from '../src/util/proc.js';
import { BARMAN_SCRIPT } from '../src/util/self.js';
import { ensurePackages, setupBarman34, type Barman34 } from './barman34.js';
import { dropCaches } from './rsync-bench.js';
import { makeBenchRoot } from './bench-root.js';

const argNum = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : Number(process.env[`BENCH_${name.toUpperCase().replace(/-/g, '_')}`] ?? def);
  return Number.isFinite(v) && v > 0 ? v : def;
};

const MB = 1024 * 1024;
const SSH_CIPHER = 'aes128-gcm@openssh.com';
const PY_BARMAN = '/usr/bin/barman';
const SEGMENT_RE = /^[0-9A-F]{24}$/;

function sq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

type Tool = 'ours' | 'b34';

/** One installation of a tool: its configuration file, server `bench`, and how to run it. */
interface Install {
  tool: Tool;
  user: string;
  conf: string;
  home: string;
  /** The [barman] section (kept) and the server's fixed options (streaming). */
  global: string;
  streaming: Record<string, string>;
  run(...args: string[]): Promise<string>;
}

interface Row {
  label: string;
  ours: number[];
  b34: number[];
  load: number[];
  note?: string;
  /** How the row is measured (set when printed): best backup time in s, or median call in ms. */
  unit?: 's' | 'ms';
}

export async function compatBench(): Promise<void> {
  const SCALE = argNum('compat-scale', 60);
  const ROUNDS = argNum('rounds', 2);
  const WAL_CALLS = argNum('compat-wal-calls', 8);
  console.log(`\nBARMAN-COMPATIBLE SETTINGS BESIDE BARMAN 3.4 (pgbench scale ${SCALE}, best of ${ROUNDS} rounds; WAL: median of ${WAL_CALLS} calls)`);
  if (!isRoot) {
    console.log('  skipped: needs root (postgres and barman users, a real sshd, drop_caches)');
    return;
  }
  let version: string;
  try {
    version = await ensurePackages((l) => console.log(l));
  } catch (err) {
    console.log(`  skipped: Barman 3.4 is not available (${(err as Error).message})`);
    return;
  }
  const { startSshd } = await import('../test/helpers/sshd.js');
  const sys = await import('../test/helpers/system.js');
  const { BARMAN_USER, POSTGRES_USER } = sys;
  await sys.ensureBarmanUser();

  const { root, mkdirFor } = await makeBenchRoot('barman-compat-bench-');
  const sshd = await startSshd();
  let b34wal: Barman34 | null = null;
  let pg: LocalCluster | null = null;
  const installs: Install[] = [];
  const rows: Row[] = [];
  try {
    // ---- data ----------------------------------------------------------------------------------
    const pgDir = await mkdirFor('pg', POSTGRES_USER);
    pg = await LocalCluster.create(path.join(pgDir, 'data'), pgDir, 'shared_buffers = 256MB\nmax_wal_size = 8GB\nsynchronous_commit = off\nautovacuum = off\n');
    const cluster = pg;
    const tBuild = await timed(async () => {
      await must(POSTGRES_USER, path.join(BIN, 'pgbench'), ['-i', '-q', '-s', String(SCALE), '-h', pgDir, '-p', String(cluster.port), 'postgres']);
      await cluster.psql(`CREATE TABLE random_text AS SELECT g AS id, string_agg(md5(random()::text), '') AS body FROM generate_series(1, ${SCALE * 2000}) g, generate_series(1, 16) x GROUP BY g;`);
      await cluster.psql('VACUUM (FREEZE, ANALYZE); CHECKPOINT;');
    });
    const dbSize = Number(await cluster.psql('SELECT sum(pg_database_size(oid)) FROM pg_database'));
    console.log(`  database built in ${tBuild.toFixed(1)} s: ${(dbSize / MB).toFixed(0)} MiB; Barman ${version} (Debian, Python); ssh -c ${SSH_CIPHER}`);

    // ---- the four installations --------------------------------------------------------------
    const sshCfg = path.join(root, 'ssh_config_barman');
    await fs.writeFile(sshCfg, `Ciphers ${SSH_CIPHER}\n${await fs.readFile(await sshd.clientConfigFor(BARMAN_USER, [POSTGRES_USER]), 'utf8')}`, { mode: 0o600 });
    chownTo(BARMAN_USER, sshCfg);
    const sshCommand = `ssh -F ${sshCfg} postgres@127.0.0.1`;
    const makeInstall = async (tool: Tool, user: string, slot: string): Promise<Install> => {
      const name = `${tool}-${user}`;
      const home = await mkdirFor(`${name}-home`, user, 0o700);
      const conf = path.join(root, `${name}.conf`);
      const global = `[barman]\nbarman_home = ${home}\nbarman_user = ${user}\nlog_file = ${home}/barman.log\nlog_level = INFO\n`;
      const streaming = { conninfo: cluster.conninfo, streaming_conninfo: cluster.conninfo, streaming_archiver: 'on', slot_name: slot, create_slot: 'auto', archiver: 'off' };
      const prog = tool === 'ours' ? [process.execPath, BARMAN_SCRIPT] : [PY_BARMAN];
      const inst: Install = { tool, user, conf, home, global, streaming, run: (...a) => must(user, prog[0] as string, [...prog.slice(1), '-c', conf, ...a]) };
      installs.push(inst);
      return inst;
    };
    const writeConf = async (inst: Install, options: Record<string, string>) => {
      const kv = { ...inst.streaming, ...options };
      await fs.writeFile(inst.conf, `${inst.global}\n[bench]\n${Object.entries(kv).map(([k, v]) => `${k} = ${v}`).join('\n')}\n`, { mode: 0o644 });
    };
    /** Streaming running and one WAL archived: Barman's `backup` refuses to start before (its check). */
    const startStreaming = async (inst: Install) => {
      await writeConf(inst, { backup_method: 'postgres' });
      await inst.run('cron');
      const deadline = Date.now() + 180_000;
      for (;;) {
        await cluster.psql('SELECT pg_switch_wal()');
        await sleep(1500);
        await inst.run('cron');
        const check = await as(inst, 'check', 'bench');
        if (check.code === 0) return;
        if (Date.now() > deadline) throw new Error(`${inst.tool} (${inst.user}): barman check never passed:\n${check.stdout}${check.stderr}`);
      }
    };
    const as = async (inst: Install, ...a: string[]) => {
      const prog = inst.tool === 'ours' ? [process.execPath, BARMAN_SCRIPT] : [PY_BARMAN];
      return sys.runAs(inst.user, prog[0] as string, [...prog.slice(1), '-c', inst.conf, ...a]);
    };
    const ours = await makeInstall('ours', BARMAN_USER, 'ours');
    const b34 = await makeInstall('b34', BARMAN_USER, 'b34');
    const oursLocal = await makeInstall('ours', POSTGRES_USER, 'ours_local');
    const b34Local = await makeInstall('b34', POSTGRES_USER, 'b34_local');
    const walOnly = process.argv.includes('--compat-wal-only');
    // The WAL rows need only our streaming archive (it gives them real segments).
    for (const inst of walOnly ? [ours] : installs) await startStreaming(inst);

    // ---- backups -------------------------------------------------------------------------------
    const warmPython = () => run(PY_BARMAN, ['--version']).catch(() => undefined);
    const newest = async (inst: Install) => (await inst.run('list-backups', '--minimal', 'bench')).trim().split('\n')[0] ?? '';
    const backupOnce = async (inst: Install): Promise<number> => {
      await dropCaches();
      await warmPython();
      const t = await timed(() => inst.run('backup', 'bench'));
      const id = await newest(inst);
      const status = (await inst.run('list-backups', 'bench')).split('\n')[0] ?? '';
      if (/FAILED/.test(status)) throw new Error(`${inst.tool}: the backup FAILED (${status})`);
      await inst.run('delete', 'bench', id);
      return t;
    };
    const settings: Array<{ label: string; pair: [Install, Install]; options: Record<string, string> }> = [
      { label: 'postgres, backup_compression none', pair: [ours, b34], options: { backup_method: 'postgres' } },
      { label: 'postgres, backup_compression = gzip', pair: [ours, b34], options: { backup_method: 'postgres', backup_compression: 'gzip' } },
      { label: 'postgres, backup_compression = lz4', pair: [ours, b34], options: { backup_method: 'postgres', backup_compression: 'lz4' } },
      { label: 'postgres, backup_compression = zstd', pair: [ours, b34], options: { backup_method: 'postgres', backup_compression: 'zstd' } },
      { label: 'rsync over ssh', pair: [ours, b34], options: { backup_method: 'rsync', ssh_command: sshCommand } },
      { label: 'rsync over ssh, parallel_jobs = 2', pair: [ours, b34], options: { backup_method: 'rsync', ssh_command: sshCommand, parallel_jobs: '2' } },
      { label: 'local-rsync', pair: [oursLocal, b34Local], options: { backup_method: 'local-rsync' } },
    ];
    for (const s of walOnly ? [] : settings) {
      const row: Row = { label: s.label, ours: [], b34: [], load: [] };
      rows.push(row);
      for (const inst of s.pair) await writeConf(inst, s.options);
      for (let round = 0; round < ROUNDS && !row.note; round++) {
        const order = round % 2 === 0 ? s.pair : [...s.pair].reverse();
        for (const inst of order) {
          try {
            row[inst.tool].push(await backupOnce(inst));
          } catch (err) {
            row.note = `FAILED (${inst.tool}): ${(err as Error).message.split('\n').slice(0, 2).join(' | ')}`;
            break;
          }
        }
        row.load.push(loadavg()[0] ?? 0);
      }
      printRow(row, 's');
    }

    // ---- WAL: one call per segment -------------------------------------------------------------
    await walRows(rows, { root, sys, sshd, ours, cluster, WAL_CALLS, onB34: (b) => (b34wal = b) });
  } catch (err) {
    console.log(`  compat bench stopped: ${(err as Error).message.split('\n').slice(0, 4).join(' | ')}`);
  } finally {
    for (const inst of installs) {
      const prog = inst.tool === 'ours' ? [process.execPath, BARMAN_SCRIPT] : [PY_BARMAN];
      await sys.runAs(inst.user, prog[0] as string, [...prog.slice(1), '-c', inst.conf, 'receive-wal', '--stop', 'bench']).catch(() => undefined);
    }
    await (b34wal as Barman34 | null)?.stop().catch(() => undefined);
    await pg?.stop('immediate').catch(() => undefined);
    await sshd.stop().catch(() => undefined);
    await fs.rm(root, { recursive: true, force: true });
  }
  console.log('  SUMMARY (ratio ours / Barman 3.4 in this run; > 1.00 = slower than Barman)');
  for (const r of rows) {
    const ratio = rowRatio(r);
    const shown = Number.isFinite(ratio) ? ratio.toFixed(2) : 'n/a';
    console.log(`  ${r.label.padEnd(62)} ${shown.padStart(6)}  ${r.note ? r.note : Number.isFinite(ratio) ? (ratio <= 1.0 ? 'OK' : 'SLOWER') : ''}`);
  }
}

/** Backups: best of the rounds; WAL calls: medians. */
function rowRatio(r: Row): number {
  return r.unit === 's' ? Math.min(...r.ours) / Math.min(...r.b34) : median(r.ours) / median(r.b34);
}

function printRow(r: Row, unit: 's' | 'ms'): void {
  r.unit = unit;
  const f = (xs: number[]) => (xs.length === 0 ? 'n/a' : unit === 's' ? `${Math.min(...xs).toFixed(2)} s` : `${median(xs).toFixed(0)} ms`);
  const ratio = rowRatio(r);
  const load = r.load.length ? ` load ${(r.load.reduce((a, b) => a + b, 0) / r.load.length).toFixed(1)}` : '';
  if (r.note) return console.log(`  ${r.label.padEnd(62)} ${r.note}`);
  console.log(`  ${r.label.padEnd(62)} ours ${f(r.ours).padStart(9)}  Barman 3.4 ${f(r.b34).padStart(9)}  ratio ${ratio.toFixed(2)}${load}`);
}

interface WalContext {
  root: string;
  sys: typeof import('../test/helpers/system.js');
  sshd: Awaited<ReturnType<typeof import('../test/helpers/sshd.js').startSshd>>;
  ours: Install;
  cluster: LocalCluster;
  WAL_CALLS: number;
  onB34(b: Barman34): void;
}

/**
 * WAL rows: real segments (from our streaming archive), a fake data directory per call holding
 * just that segment `.ready` (no backlog: the call sends one file), archive_command run through
 * /bin/sh as PostgreSQL does; then restore_command without -p for each segment in order.
 */
async function walRows(rows: Row[], c: WalContext): Promise<void> {
  const { sys, root } = c;
  const { BARMAN_USER, POSTGRES_USER } = sys;
  const repo = path.dirname(path.dirname(BARMAN_SCRIPT));
  // Segments: what our receive-wal archived (plain 16 MiB files).
  const wals = path.join(c.ours.home, 'bench', 'wals');
  const names: string[] = [];
  for (const d of (await fs.readdir(wals)).filter((n) => /^[0-9A-F]{16}$/.test(n)).sort()) {
    for (const n of (await fs.readdir(path.join(wals, d))).filter((x) => SEGMENT_RE.test(x)).sort()) names.push(path.join(wals, d, n));
  }
  // Both tools archive the same segments (consecutive: the restore rows prefetch), two rows.
  const need = c.WAL_CALLS * 2;
  // Fresh, consecutive segments of real WAL (receive-wal streams them into our archive).
  const before = names.length;
  for (let i = 0; i < need + 1; i++) {
    await c.cluster.psql(`INSERT INTO random_text SELECT -g, md5(g::text) || md5(random()::text) FROM generate_series(${i * 60000 + 1}, ${(i + 1) * 60000}) g; SELECT pg_switch_wal();`);
  }
  const deadline = Date.now() + 120_000;
  while (names.length < before + need && Date.now() < deadline) {
    await sleep(1000);
    await c.ours.run('archive-wal', 'bench').catch(() => '');
    names.length = 0;
    for (const d of (await fs.readdir(wals)).filter((n) => /^[0-9A-F]{16}$/.test(n)).sort()) {
      for (const n of (await fs.readdir(path.join(wals, d))).filter((x) => SEGMENT_RE.test(x)).sort()) names.push(path.join(wals, d, n));
    }
  }
  if (names.length < before + need) throw new Error(`only ${names.length - before} new WAL segments reached the archive`);
  const segments = names.slice(-need);
  const dataRoot = path.join(root, 'wal-data');
  await fs.mkdir(dataRoot, { mode: 0o755 });
  chownTo(POSTGRES_USER, dataRoot);
  let dataCount = 0;
  /** A fake data directory with one `.ready` segment (the next one of `segments`). */
  const oneReady = async (file: string): Promise<{ dir: string; name: string }> => {
    const dir = path.join(dataRoot, `d${++dataCount}`);
    const name = path.basename(file);
    await fs.mkdir(path.join(dir, 'pg_wal', 'archive_status'), { recursive: true });
    await fs.copyFile(file, path.join(dir, 'pg_wal', name));
    await fs.writeFile(path.join(dir, 'pg_wal', 'archive_status', `${name}.ready`), '');
    await sys.chownR(dir, POSTGRES_USER);
    return { dir, name };
  };
  const shell = (cmd: string, cwd: string) => sys.runAs(POSTGRES_USER, '/bin/sh', ['-c', cmd], { cwd });

  // Our WAL server: `barman put-wal` / `get-wal` on the barman user's side, reached through sshd.
  const walHome = path.join(root, 'ours-wal-home');
  await fs.mkdir(walHome, { mode: 0o700 });
  chownTo(BARMAN_USER, walHome);
  const walConf = path.join(root, 'ours-wal.conf');
  await fs.writeFile(walConf, `[barman]\nbarman_home = ${walHome}\nbarman_user = ${BARMAN_USER}\nlog_file = ${walHome}/barman.log\n\n[bench]\nconninfo = ${c.cluster.conninfo}\nbackup_method = postgres\narchiver = on\nstreaming_archiver = off\n`, { mode: 0o644 });
  await sys.runAs(BARMAN_USER, process.execPath, [BARMAN_SCRIPT, '-c', walConf, 'check', 'bench']);
  const pgSsh = path.join(root, 'ssh_config_pg');
  const pgSshBase = `Ciphers ${SSH_CIPHER}\n${await fs.readFile(await c.sshd.clientConfigFor(POSTGRES_USER, [BARMAN_USER]), 'utf8')}`;
  const b34 = await setupBarman34({ root, cipher: SSH_CIPHER, conninfo: c.cluster.conninfo, say: (l) => console.log(l) });
  c.onB34(b34);
  const b34SshBase = await fs.readFile(b34.sshConfig, 'utf8');
  const cmDir = path.join(root, 'cm');
  await fs.mkdir(cmDir, { mode: 0o700 });
  chownTo(POSTGRES_USER, cmDir);
  const setControlMaster = async (on: boolean) => {
    const cm = on ? `ControlMaster auto\nControlPath ${cmDir}/%r@%h:%p\nControlPersist 300\n` : '';
    for (const [file, base] of [[pgSsh, pgSshBase], [b34.sshConfig, b34SshBase]] as const) {
      await fs.writeFile(file, `${cm}${base}`, { mode: 0o600 });
      chownTo(POSTGRES_USER, file);
    }
  };
  const spool = await (async () => {
    const d = path.join(root, 'archive-spool');
    await fs.mkdir(d, { mode: 0o700 });
    chownTo(POSTGRES_USER, d);
    return d;
  })();
  const oursArchive = `${sq(path.join(repo, 'bin', 'barman-wal-archive'))} -c ${sq(walConf)} --ssh-config ${sq(pgSsh)} --spool-dir ${sq(spool)} -U ${BARMAN_USER} 127.0.0.1 bench %p`;
  let next = 0;
  const archiveRow = async (label: string, cm: boolean) => {
    await setControlMaster(cm);
    const row: Row = { label, ours: [], b34: [], load: [] };
    rows.push(row);
    for (let i = 0; i < c.WAL_CALLS && !row.note; i++) {
      const segment = segments[next++ % segments.length] as string;
      for (const tool of (i % 2 === 0 ? ['ours', 'b34'] : ['b34', 'ours']) as Tool[]) {
        const { dir, name } = await oneReady(segment);
        const cmd = (tool === 'ours' ? oursArchive : b34.archiveCommand).replace('%p', `pg_wal/${name}`);
        let code = 0;
        let stderr = '';
        const t = await timed(async () => {
          const r = await shell(cmd, dir);
          code = r.code;
          stderr = r.stderr;
        });
        if (code !== 0) {
          row.note = `FAILED (${tool}, exit ${code}): ${stderr.trim().split('\n').slice(-1)[0] ?? ''}`;
          break;
        }
        row[tool].push(t * 1000);
        await fs.rm(dir, { recursive: true, force: true });
      }
    }
    row.load.push(loadavg()[0] ?? 0);
    printRow(row, 'ms');
    // Closed masters between rows: the next row starts from a cold connection too.
    if (cm) await shell(`for s in ${sq(cmDir)}/*; do [ -S "$s" ] && ssh -S "$s" -O exit x 2>/dev/null; done; true`, '/tmp');
  };
  await archiveRow('barman-wal-archive, 1 segment per call', false);
  await archiveRow('barman-wal-archive, 1 segment per call, ssh ControlMaster', true);
  await setControlMaster(false);

  // Restore: the archived segments in order, restore_command as in Barman's manual (no -p).
  await sys.runAs(BARMAN_USER, process.execPath, [BARMAN_SCRIPT, '-c', walConf, 'archive-wal', 'bench'], { check: true });
  await b34.archiveWal();
  const archivedOurs = new Set((await fs.readFile(path.join(walHome, 'bench', 'wals', 'xlog.db'), 'utf8')).split('\n').map((l) => l.split('\t')[0]));
  const restoreNames = segments.map((s) => path.basename(s)).filter((n, i, all) => archivedOurs.has(n) && all.indexOf(n) === i).sort();
  const restoreRow: Row = { label: `barman-wal-restore, no -p, ${restoreNames.length} segments in order (per segment)`, ours: [], b34: [], load: [] };
  rows.push(restoreRow);
  const destDir = path.join(root, 'restore-dest');
  await fs.mkdir(destDir, { mode: 0o755 });
  chownTo(POSTGRES_USER, destDir);
  // The spools are created by the clients (as postgres), inside a directory of postgres's.
  const spools = path.join(root, 'restore-spools');
  await fs.mkdir(spools, { mode: 0o755 });
  chownTo(POSTGRES_USER, spools);
  for (const tool of ['ours', 'b34'] as Tool[]) {
    const rspool = path.join(spools, tool);
    const cmd =
      tool === 'ours'
        ? `${sq(path.join(repo, 'bin', 'barman-wal-restore'))} -c ${sq(walConf)} --ssh-config ${sq(pgSsh)} --spool-dir ${sq(rspool)} -U ${BARMAN_USER} 127.0.0.1 bench %f %p`
        : b34.restoreCommand(rspool, '');
    const total = await timed(async () => {
      for (const n of restoreNames) {
        const r = await shell(cmd.replace('%f', n).replace('%p', sq(path.join(destDir, n))), destDir);
        if (r.code !== 0) {
          restoreRow.note = `FAILED (${tool}, exit ${r.code}): ${r.stderr.trim().split('\n').slice(-1)[0] ?? ''}`;
          return;
        }
        await fs.rm(path.join(destDir, n), { force: true });
      }
    });
    if (restoreRow.note) break;
    restoreRow[tool].push((total * 1000) / Math.max(1, restoreNames.length));
  }
  restoreRow.load.push(loadavg()[0] ?? 0);
  printRow(restoreRow, 'ms');
}
