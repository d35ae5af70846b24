/**
 * Throw-away PostgreSQL clusters for integration tests: version 15 (Debian's) by default, or any
 * major version from 12 to 18 (`version` option) whose server binaries
 * scripts/install-pg-versions.mjs installed from npm. Client programs (psql, pgbench,
 * pg_basebackup) are always Debian's 15.
 *
 * Each cluster lives in its own /tmp directory (data dir, server log, Unix socket), owned by
 * `postgres`, listening on 127.0.0.1 only, with trust authentication for local and
 * 127.0.0.1 connections (including replication). Clusters are stopped by `destroy()`,
 * `cleanupAll()` (for `after()` hooks) and, as a last resort, a process 'exit' hook.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, promises as fs, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import {
  POSTGRES_USER,
  chownR,
  freePort,
  isRoot,
  makeTempDir,
  onExitCleanup,
  removeTempDirs,
  runAs,
  sleep,
  untrackTempDir,
  type ExecResult,
} from './system.js';

const PG_MAJOR = '15';
const DEFAULT_BINDIR = `/usr/lib/postgresql/${PG_MAJOR}/bin`;
const LOG_TAIL_LINES = 30;
/** The major versions a cluster can be made of (15 from Debian, the others from scripts/install-pg-versions.mjs). */
export const PG_MAJORS = [12, 13, 14, 15, 16, 17, 18] as const;
/** Where scripts/install-pg-versions.mjs puts the other versions' server binaries (`<dir>/<major>/bin`). */
export const PG_VERSIONS_DIR = process.env.BARMAN_TS_PG_VERSIONS_DIR ?? '/var/cache/barman-ts/postgresql';

let binDirCache: string | undefined;

/** Directory of the PostgreSQL 15 server binaries ($PG_BINDIR, the Debian path, or `pg_config --bindir`). */
export function pgBinDir(): string {
  if (binDirCache) return binDirCache;
  const candidates = [process.env.PG_BINDIR, DEFAULT_BINDIR];
  for (const c of candidates) {
    if (c && existsSync(path.join(c, 'initdb'))) return (binDirCache = c);
  }
  try {
    const dir = execFileSync('pg_config', ['--bindir'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (dir && existsSync(path.join(dir, 'initdb'))) return (binDirCache = dir);
  } catch {
    // fall through to the error below
  }
  throw new Error(`PostgreSQL ${PG_MAJOR} server binaries not found (looked in $PG_BINDIR, ${DEFAULT_BINDIR}, pg_config --bindir)`);
}

/** Absolute path of a PostgreSQL 15 program (initdb, pg_ctl, psql, pg_basebackup, ...). */
export function pgBin(name: string): string {
  return path.join(pgBinDir(), name);
}

/** Directory of the server binaries (initdb, pg_ctl, postgres) of a major version. */
export function serverBinDir(major: number = Number(PG_MAJOR)): string {
  if (major === Number(PG_MAJOR)) return pgBinDir();
  const dir = path.join(PG_VERSIONS_DIR, String(major), 'bin');
  if (!existsSync(path.join(dir, 'postgres'))) {
    throw new Error(`PostgreSQL ${major} server binaries not found in ${dir}: run \`node scripts/install-pg-versions.mjs\` (as root; .ci/run does)`);
  }
  return dir;
}

/** Major version of a data directory (its PG_VERSION file). */
function dataDirMajor(dataDir: string): number {
  return Number(readFileSync(path.join(dataDir, 'PG_VERSION'), 'utf8').trim());
}

export type ConfValue = string | number | boolean;
export type StopMode = 'smart' | 'fast' | 'immediate';

export interface PgClusterOptions {
  /** Major version, 12 to 18 (default 15, Debian's). */
  version?: number;
  /** TCP port on 127.0.0.1 (default: a free one, retried if another process grabs it first). */
  port?: number;
  walLevel?: 'minimal' | 'replica' | 'logical';
  /** archive_mode: true = 'on'. Default off. */
  archiveMode?: boolean | 'on' | 'off' | 'always';
  /** archive_command (a shell command run by PostgreSQL; %p and %f are expanded by the server). */
  archiveCommand?: string;
  /** Extra postgresql.conf settings, written after the harness defaults (so they win). */
  extraConf?: Record<string, ConfValue>;
  /** Extra pg_hba.conf lines, placed before the trust lines (first match wins). */
  extraHba?: string[];
  /** initdb --data-checksums */
  dataChecksums?: boolean;
  /** More initdb arguments (e.g. `--wal-segsize=64`). */
  initdbArgs?: readonly string[];
  /** Name of the data directory inside the cluster's temp dir (default `data`). */
  dataDirName?: string;
  /** Start the server after initdb (default true). */
  start?: boolean;
}

/** Quote a value for postgresql.conf / postgresql.auto.conf: always single-quoted (valid for any GUC type). */
export function confQuote(v: ConfValue): string {
  return `'${String(v).replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

function confLines(settings: Record<string, ConfValue>): string {
  return Object.entries(settings)
    .map(([k, v]) => {
      if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(k)) throw new Error(`invalid configuration parameter name: ${k}`);
      return `${k} = ${confQuote(v)}\n`;
    })
    .join('');
}

/** Double-quote an SQL identifier. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Single-quote an SQL string literal. */
export function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

function tailLines(text: string, n: number): string {
  const lines = text.replace(/\n$/, '').split('\n');
  return lines.slice(-n).join('\n');
}

function readLogTail(file: string, n = LOG_TAIL_LINES): string {
  try {
    return tailLines(readFileSync(file, 'utf8'), n);
  } catch (err) {
    return `(cannot read server log ${file}: ${(err as Error).message})`;
  }
}

/** Process state letter from /proc/PID/stat ('Z' = zombie), or undefined if gone. */
export function procState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

function childPids(parent: number): number[] {
  const out: number[] = [];
  for (const ent of readdirSync('/proc')) {
    if (!/^\d+$/.test(ent)) continue;
    try {
      const stat = readFileSync(`/proc/${ent}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === parent) out.push(Number(ent));
    } catch {
      // process exited while we were scanning
    }
  }
  return out;
}

/** Every cluster object created or adopted in this process, for cleanup. */
const allClusters = new Set<PgCluster>();

interface ClusterPaths {
  dataDir: string;
  /** Directory holding the Unix socket and the server log. */
  runDir: string;
  logFile: string;
  /** Paths removed by destroy(). */
  owned: string[];
}

export class PgCluster {
  readonly dataDir: string;
  readonly socketDir: string;
  readonly logFile: string;
  /** Major version of the server binaries (12 to 18). */
  readonly major: number;
  /** Where its initdb, pg_ctl and postgres are. */
  readonly binDir: string;
  private _port: number;
  private readonly portWasChosen: boolean;
  private readonly owned: string[];

  private constructor(paths: ClusterPaths, port: number, portWasChosen: boolean, major: number) {
    this.major = major;
    this.binDir = serverBinDir(major);
    this.dataDir = paths.dataDir;
    this.socketDir = paths.runDir;
    this.logFile = paths.logFile;
    this.owned = paths.owned;
    this._port = port;
    this.portWasChosen = portWasChosen;
    allClusters.add(this);
  }

  /** initdb a fresh cluster in a new temp dir, configure it and (by default) start it. */
  static async create(opts: PgClusterOptions = {}): Promise<PgCluster> {
    const major = opts.version ?? Number(PG_MAJOR);
    serverBinDir(major); // fail before creating anything
    const port = opts.port ?? (await freePort());
    const runDir = await makeTempDir('pg-', { owner: POSTGRES_USER, mode: 0o755 });
    const dataDir = path.join(runDir, opts.dataDirName ?? 'data');
    const cluster = new PgCluster(
      { dataDir, runDir, logFile: path.join(runDir, 'server.log'), owned: [runDir] },
      port,
      opts.port === undefined,
      major,
    );
    const initdbArgs = ['-D', dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C',
      // initdb's own fsync of the new files only; the server keeps fsync=on.
      '--no-sync'];
    if (major >= 14) initdbArgs.push('--no-instructions');
    if (opts.dataChecksums) initdbArgs.push('--data-checksums');
    initdbArgs.push(...(opts.initdbArgs ?? []));
    await runAs(POSTGRES_USER, path.join(cluster.binDir, 'initdb'), initdbArgs, { check: true });

    const hba = [
      '# written by the barman-ts test harness',
      ...(opts.extraHba ?? []),
      'local   all             all                     trust',
      'host    all             all     127.0.0.1/32    trust',
      'local   replication     all                     trust',
      'host    replication     all     127.0.0.1/32    trust',
      '',
    ].join('\n');
    // Overwriting existing files keeps their owner (postgres).
    await fs.writeFile(path.join(dataDir, 'pg_hba.conf'), hba);

    const archiveMode = opts.archiveMode === true ? 'on' : opts.archiveMode === false || opts.archiveMode === undefined ? 'off' : opts.archiveMode;
    const settings: Record<string, ConfValue> = {
      listen_addresses: '127.0.0.1',
      port,
      unix_socket_directories: runDir,
      max_connections: 50,
      shared_buffers: '16MB',
      max_wal_senders: 10,
      max_replication_slots: 10,
      wal_level: opts.walLevel ?? 'replica',
      archive_mode: archiveMode,
      // Non-immediate checkpoints (pg_backup_start(fast => false)) finish in seconds, not minutes.
      checkpoint_completion_target: 0.1,
      // Log messages in English: helpers parse the server log.
      lc_messages: 'C',
      logging_collector: 'off',
    };
    if (opts.archiveCommand !== undefined) settings.archive_command = opts.archiveCommand;
    Object.assign(settings, opts.extraConf ?? {});
    await fs.appendFile(path.join(dataDir, 'postgresql.conf'), `\n# barman-ts test harness\n${confLines(settings)}`);

    if (opts.start !== false) await cluster.start();
    return cluster;
  }

  /** Wrap an existing data directory (used by startRecoveredCluster); binaries of its PG_VERSION. */
  static adopt(dataDir: string, port: number, runDir: string, owned: string[], portWasChosen = false): PgCluster {
    return new PgCluster({ dataDir, runDir, logFile: path.join(runDir, 'server.log'), owned }, port, portWasChosen, dataDirMajor(dataDir));
  }

  get port(): number {
    return this._port;
  }

  /** libpq connection string for the postgres superuser. */
  get conninfo(): string {
    return this.conninfoFor('postgres', 'postgres');
  }

  conninfoFor(user = 'postgres', dbname = 'postgres'): string {
    return `host=127.0.0.1 port=${this._port} user=${user} dbname=${dbname}`;
  }

  private pgCtl(args: string[], check = false): Promise<ExecResult> {
    return runAs(POSTGRES_USER, path.join(this.binDir, 'pg_ctl'), [...args, '-D', this.dataDir], { check });
  }

  /** Start the server (pg_ctl start -w) and wait until it accepts connections. */
  async start(opts: { timeoutSec?: number } = {}): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const res = await this.pgCtl(['start', '-l', this.logFile, '-w', '-t', String(opts.timeoutSec ?? 120)]);
      if (res.code === 0) return;
      const log = readLogTail(this.logFile);
      // Another process grabbed our port between freePort() and the bind: try another one.
      if (this.portWasChosen && attempt < 5 && /could not bind|Address already in use|could not create any TCP\/IP sockets/.test(log)) {
        this._port = await freePort();
        // postgresql.auto.conf is read last, so this wins over every other port setting.
        await fs.appendFile(path.join(this.dataDir, 'postgresql.auto.conf'), `port = ${this._port}\n`);
        continue;
      }
      throw new Error(`pg_ctl start failed for ${this.dataDir} (exit ${res.code}): ${res.stderr.trim() || res.stdout.trim()}\n--- last ${LOG_TAIL_LINES} lines of ${this.logFile} ---\n${log}`);
    }
  }

  /** pg_ctl stop -m mode (no-op when not running). */
  async stop(mode: StopMode = 'fast'): Promise<void> {
    if (!(await this.isRunning())) return;
    const res = await this.pgCtl(['stop', '-m', mode, '-w', '-t', '120']);
    if (res.code !== 0 && (await this.isRunning())) {
      throw new Error(`pg_ctl stop -m ${mode} failed for ${this.dataDir}: ${res.stderr.trim()}\n${readLogTail(this.logFile)}`);
    }
  }

  async restart(mode: StopMode = 'fast'): Promise<void> {
    await this.stop(mode);
    await this.start();
  }

  /** Simulate a crash: SIGKILL the postmaster and all its children, wait until they are gone. */
  async kill9(): Promise<void> {
    const pid = this.postmasterPid();
    if (pid === undefined || procState(pid) === undefined) return;
    const victims = [pid, ...childPids(pid)];
    for (const p of victims) {
      if (isRoot()) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          // already gone
        }
      } else {
        await runAs(POSTGRES_USER, 'kill', ['-KILL', String(p)]);
      }
    }
    const deadline = Date.now() + 10_000;
    while (victims.some((p) => { const s = procState(p); return s !== undefined && s !== 'Z'; })) {
      if (Date.now() > deadline) throw new Error(`postgres processes of ${this.dataDir} survived SIGKILL`);
      await sleep(20);
    }
    // An unreaped zombie postmaster (no init reaping orphans, e.g. in containers/microVMs) still
    // answers kill(pid, 0), so the next start would refuse with "lock file already exists". It is
    // dead, so its lock files (data dir and our private socket dir) are stale.
    if (procState(pid) === 'Z') {
      await fs.rm(path.join(this.dataDir, 'postmaster.pid'), { force: true });
      await fs.rm(path.join(this.socketDir, `.s.PGSQL.${this._port}.lock`), { force: true });
    }
  }

  /** PID of the postmaster from postmaster.pid, if the file exists. */
  postmasterPid(): number | undefined {
    try {
      const pid = Number(readFileSync(path.join(this.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
      return Number.isInteger(pid) && pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** `pg_ctl status`: true when a postmaster is running on this data directory. */
  async isRunning(): Promise<boolean> {
    if (!existsSync(path.join(this.dataDir, 'postmaster.pid'))) return false;
    const res = await this.pgCtl(['status']);
    return res.code === 0;
  }

  /**
   * Run SQL (one or more statements, each in autocommit) with psql as postgres over TCP and
   * return the trimmed output: unaligned, tuples only, `|` between columns. Throws on error.
   */
  async psql(sql: string, db = 'postgres'): Promise<string> {
    const res = await runAs(
      POSTGRES_USER,
      pgBin('psql'),
      ['-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(this._port), '-U', 'postgres', '-d', db, '-f', '-'],
      { input: sql },
    );
    if (res.code !== 0) {
      throw new Error(`psql on port ${this._port} (db ${db}) failed: ${res.stderr.trim() || `exit code ${res.code}`}\nSQL: ${sql.slice(0, 500)}`);
    }
    return res.stdout.trim();
  }

  /** psql() split into rows and columns. */
  async psqlRows(sql: string, db = 'postgres'): Promise<string[][]> {
    const out = await this.psql(sql, db);
    return out === '' ? [] : out.split('\n').map((l) => l.split('|'));
  }

  async createUser(name: string, opts: { superuser?: boolean; replication?: boolean; password?: string } = {}): Promise<void> {
    const attrs = ['LOGIN'];
    if (opts.superuser) attrs.push('SUPERUSER');
    if (opts.replication) attrs.push('REPLICATION');
    if (opts.password !== undefined) attrs.push(`PASSWORD ${quoteLiteral(opts.password)}`);
    await this.psql(`CREATE ROLE ${quoteIdent(name)} ${attrs.join(' ')};`);
  }

  async createDatabase(name: string, owner?: string): Promise<void> {
    await this.psql(`CREATE DATABASE ${quoteIdent(name)}${owner ? ` OWNER ${quoteIdent(owner)}` : ''};`);
  }

  /** Run pgbench as postgres against this cluster (e.g. ['-i', '-s', '1'] or ['-T', '5']). Throws on failure. */
  pgbench(args: string[], db = 'postgres'): Promise<ExecResult> {
    return runAs(POSTGRES_USER, pgBin('pgbench'), ['-h', '127.0.0.1', '-p', String(this._port), '-U', 'postgres', ...args], {
      check: true,
      env: { ...process.env, PGDATABASE: db },
    });
  }

  /** pg_switch_wal(); returns the name of the WAL segment just completed. */
  switchWal(): Promise<string> {
    return this.psql('SELECT pg_walfile_name(pg_switch_wal());');
  }

  async checkpoint(): Promise<void> {
    await this.psql('CHECKPOINT;');
  }

  /** Wait until pg_stat_archiver reports `walName` (or a later segment) as archived. */
  async waitArchived(walName: string, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      last = await this.psql(
        "SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, ''), failed_count FROM pg_stat_archiver;",
      );
      const archived = last.split('|')[0] ?? '';
      if (/^[0-9A-F]{24}/.test(archived) && archived.slice(0, 24) >= walName) return;
      if (Date.now() > deadline) {
        throw new Error(`WAL ${walName} not archived within ${timeoutMs} ms (pg_stat_archiver: last_archived|last_failed|failed_count = ${last})\n${readLogTail(this.logFile)}`);
      }
      await sleep(100);
    }
  }

  /** Last lines of the server log. */
  logTail(lines = LOG_TAIL_LINES): string {
    return readLogTail(this.logFile, lines);
  }

  /** Stop (immediate) and delete the cluster's directories. Keeps them when BTS_KEEP_TMP=1. */
  async destroy(): Promise<void> {
    await this.stop('immediate').catch(() => this.kill9());
    allClusters.delete(this);
    if (process.env.BTS_KEEP_TMP === '1') return;
    for (const p of this.owned) {
      await fs.rm(p, { recursive: true, force: true });
      untrackTempDir(p);
    }
  }

  /** Synchronous best-effort immediate stop, for the exit hook. */
  stopSync(): void {
    if (!existsSync(path.join(this.dataDir, 'postmaster.pid'))) return;
    const argv = ['stop', '-D', this.dataDir, '-m', 'immediate', '-w', '-t', '30'];
    const pgCtl = path.join(this.binDir, 'pg_ctl');
    if (isRoot()) spawnSync('runuser', ['-u', POSTGRES_USER, '--', pgCtl, ...argv], { stdio: 'ignore', cwd: '/tmp' });
    else spawnSync(pgCtl, argv, { stdio: 'ignore' });
  }
}

/** Stop every cluster this process created or adopted (immediate mode). */
export async function stopAllClusters(): Promise<void> {
  await Promise.all([...allClusters].map((c) => c.stop('immediate').catch(() => c.kill9())));
}

/**
 * For `after(cleanupAll)`: stop every cluster of this process and remove the temp dirs
 * created by makeTempDir() (unless BTS_KEEP_TMP=1).
 */
export async function cleanupAll(): Promise<void> {
  await stopAllClusters();
  allClusters.clear();
  if (process.env.BTS_KEEP_TMP !== '1') await removeTempDirs();
}

// Safety net: whatever happens to the test (failure, forced exit, signal), no server survives.
onExitCleanup(() => {
  for (const c of allClusters) c.stopSync();
});

export type RecoveryOutcome = 'primary' | 'paused' | 'shutdown' | 'standby';

export interface RecoveredClusterOptions {
  /**
   * 'end' (default): wait until recovery is over — out of recovery ('primary'), paused at
   * the target ('paused') or shut down at the target ('shutdown').
   * 'ready': return as soon as the server accepts connections (a standby yields 'standby').
   */
  waitFor?: 'end' | 'ready';
  timeoutMs?: number;
  /** More postgresql.auto.conf overrides (e.g. { archive_mode: 'off' }). */
  extraConf?: Record<string, ConfValue>;
}

export interface RecoveredCluster {
  cluster: PgCluster;
  outcome: RecoveryOutcome;
}

async function fixOwnership(dir: string): Promise<void> {
  await chownR(dir, POSTGRES_USER);
  await fs.chmod(dir, 0o700);
}

/**
 * Start a data directory restored by someone else (typically `barman recover` run as the
 * barman user): chown -R postgres + chmod 0700 (also tablespaces and a symlinked pg_wal),
 * append port / socket dir / listen address overrides to postgresql.auto.conf, start it and
 * wait for the recovery outcome. Errors carry the last 30 lines of the server log.
 *
 * It does not touch archive_mode/archive_command: pass extraConf to change them.
 */
export async function startRecoveredCluster(
  dataDir: string,
  port?: number,
  opts: RecoveredClusterOptions = {},
): Promise<RecoveredCluster> {
  dataDir = path.resolve(dataDir);
  if (!existsSync(path.join(dataDir, 'PG_VERSION'))) throw new Error(`${dataDir} is not a PostgreSQL data directory (no PG_VERSION)`);
  const runDir = await makeTempDir('pgrec-', { owner: POSTGRES_USER, mode: 0o755 });
  const thePort = port ?? (await freePort());
  const overrides: Record<string, ConfValue> = {
    port: thePort,
    unix_socket_directories: runDir,
    listen_addresses: '127.0.0.1',
    logging_collector: 'off',
    ...(opts.extraConf ?? {}),
  };
  await fs.appendFile(
    path.join(dataDir, 'postgresql.auto.conf'),
    `# barman-ts test harness (startRecoveredCluster)\n${confLines(overrides)}`,
  );

  await fixOwnership(dataDir);
  const tblspc = path.join(dataDir, 'pg_tblspc');
  for (const link of existsSync(tblspc) ? await fs.readdir(tblspc) : []) {
    await fixOwnership(await fs.realpath(path.join(tblspc, link)));
  }
  const walDir = path.join(dataDir, 'pg_wal');
  if ((await fs.lstat(walDir).catch(() => undefined))?.isSymbolicLink()) await fixOwnership(await fs.realpath(walDir));

  const canRead = await runAs(POSTGRES_USER, 'test', ['-r', path.join(dataDir, 'PG_VERSION')]);
  if (canRead.code !== 0) throw new Error(`postgres cannot reach ${dataDir}: check the permissions of its parent directories`);

  const cluster = PgCluster.adopt(dataDir, thePort, runDir, [runDir, dataDir], port === undefined);
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const deadline = Date.now() + timeoutMs;
  const shutDownAtTarget = async (): Promise<boolean> =>
    !(await cluster.isRunning()) && /shutdown at recovery target/.test(readLogTail(cluster.logFile, 200));
  try {
    // pg_ctl -w returns once connections are accepted (consistent hot standby, or out of recovery).
    await cluster.start({ timeoutSec: Math.ceil(timeoutMs / 1000) });
  } catch (err) {
    if (await shutDownAtTarget()) return { cluster, outcome: 'shutdown' };
    throw err;
  }

  let lastState = 'not accepting connections yet';
  for (;;) {
    if (!(await cluster.isRunning())) {
      if (await shutDownAtTarget()) return { cluster, outcome: 'shutdown' };
      throw new Error(`recovered cluster ${dataDir} stopped during recovery\n--- last ${LOG_TAIL_LINES} lines of ${cluster.logFile} ---\n${cluster.logTail()}`);
    }
    try {
      // pg_get_wal_replay_pause_state() came with 14; before, only 'paused' or not.
      const pauseFn = cluster.major >= 14 ? 'pg_get_wal_replay_pause_state()' : "CASE WHEN pg_is_wal_replay_paused() THEN 'paused' ELSE 'not paused' END";
      const row = await cluster.psql(`SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN ${pauseFn} ELSE '' END;`);
      lastState = `pg_is_in_recovery|pause_state = ${row}`;
      const [inRecovery, pauseState] = row.split('|');
      if (inRecovery === 'f') return { cluster, outcome: 'primary' };
      if (pauseState === 'paused') return { cluster, outcome: 'paused' };
      if (opts.waitFor === 'ready') return { cluster, outcome: 'standby' };
    } catch (err) {
      // Still starting up / shutting down ("the database system is starting up").
      lastState = (err as Error).message.split('\n')[0] ?? lastState;
    }
    if (Date.now() > deadline) {
      throw new Error(`recovered cluster ${dataDir} did not finish recovery within ${timeoutMs} ms (last state: ${lastState})\n--- last ${LOG_TAIL_LINES} lines of ${cluster.logFile} ---\n${cluster.logTail()}`);
    }
    await sleep(200);
  }
}
