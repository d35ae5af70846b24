/**
 * A barman installation for integration tests: a barman_home owned by the `barman` user, a
 * configuration file, and a runner for our CLI as that user (as in production); or the same
 * owned by and run as `postgres`, as backup_method = local-rsync requires.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { BARMAN_USER, POSTGRES_USER, ensureBarmanUser, makeTempDir, runAs, sleep, type ExecResult } from './system.js';
import type { PgCluster } from './pg-cluster.js';

export interface BarmanEnv {
  root: string;
  home: string;
  configFile: string;
  server: string;
  /** Run `barman -c CONF ...args` as the barman user. */
  run(...args: string[]): Promise<ExecResult>;
  /** Same, throwing with stdout/stderr when the exit code is not 0. */
  ok(...args: string[]): Promise<string>;
  /** A directory the barman user may write into (recovery destinations). */
  newDir(prefix: string): Promise<string>;
  stop(): Promise<void>;
}

export interface BarmanEnvOptions {
  server?: string;
  extra?: Record<string, string>;
  global?: Record<string, string>;
  /**
   * The OS user barman runs as (barman_user, owner of barman_home and the configuration):
   * `barman` as in production, or `postgres` for backup_method = local-rsync (Barman on the
   * database host, reading PGDATA directly); then local-rsync is the default backup_method.
   */
  osUser?: typeof BARMAN_USER | typeof POSTGRES_USER;
}

export async function createBarmanEnv(cluster: PgCluster, opts: BarmanEnvOptions = {}): Promise<BarmanEnv> {
  const user = opts.osUser ?? BARMAN_USER;
  const local = user === POSTGRES_USER;
  if (!local) await ensureBarmanUser();
  const root = await makeTempDir(local ? 'barman-local-' : 'barman-', { owner: user, mode: 0o755 });
  const home = path.join(root, 'home');
  const server = opts.server ?? 'pg';
  const configFile = path.join(root, 'barman.conf');
  const serverConf: Record<string, string> = {
    description: local ? '"local-rsync integration test server"' : '"integration test server"',
    conninfo: cluster.conninfo,
    streaming_conninfo: cluster.conninfo,
    backup_method: local ? 'local-rsync' : 'postgres',
    streaming_archiver: 'on',
    slot_name: 'barman',
    create_slot: 'auto',
    ...(opts.extra ?? {}),
  };
  const globalConf: Record<string, string> = {
    barman_home: home,
    barman_user: user,
    log_file: path.join(root, 'barman.log'),
    log_level: 'DEBUG',
    ...(opts.global ?? {}),
  };
  const ini = (section: string, kv: Record<string, string>) => `[${section}]\n${Object.entries(kv).map(([k, v]) => `${k} = ${v}`).join('\n')}\n`;
  await runAs(user, 'mkdir', ['-m', '0700', home], { check: true });
  await runAs(user, 'tee', [configFile], { input: `${ini('barman', globalConf)}\n${ini(server, serverConf)}`, check: true });
  const run = (...args: string[]) => runAs(user, process.execPath, [BARMAN_SCRIPT, '-c', configFile, ...args]);
  const env: BarmanEnv = {
    root,
    home,
    configFile,
    server,
    run,
    async ok(...args) {
      const r = await run(...args);
      if (r.code !== 0) throw new Error(`barman ${args.join(' ')} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
      return r.stdout;
    },
    async newDir(prefix) {
      const d = await makeTempDir(prefix, { owner: user, mode: 0o755 });
      return path.join(d, 'data');
    },
    async stop() {
      await run('receive-wal', '--stop', server);
    },
  };
  return env;
}

/**
 * Set up WAL streaming as Barman's documentation says, so that `backup` passes its checks: run
 * `barman cron` until `check` says receive-wal runs and the slot is active, then archive a
 * first WAL file (`switch-wal --force --archive`). A standby cannot switch WAL: pass its
 * `primary`, whose switch the standby's receive-wal then streams.
 */
export async function startStreaming(env: BarmanEnv, timeoutMs = 30000, primary?: PgCluster): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  await env.ok('cron');
  let lastCron = Date.now();
  for (;;) {
    const r = await env.run('check', env.server);
    if (/receive-wal running: OK/.test(r.stdout) && /replication slot: OK/.test(r.stdout)) break;
    if (Date.now() > deadline) throw new Error(`receive-wal did not start:\n${r.stdout}\n${(await readLog(env)).split('\n').filter((l) => /receive/.test(l)).slice(-8).join('\n')}`);
    // As cron runs every minute in production: a receive-wal that stopped at once is started again.
    if (Date.now() - lastCron > 5000) {
      await env.ok('cron');
      lastCron = Date.now();
    }
    await sleep(250);
  }
  if (!primary) {
    await env.ok('switch-wal', '--force', '--archive', '--archive-timeout', String(Math.max(30, Math.ceil((deadline - Date.now()) / 1000))), env.server);
    return;
  }
  await primary.checkpoint();
  await primary.psql('SELECT pg_switch_wal()');
  for (;;) {
    await env.ok('archive-wal', env.server);
    const r = await env.run('check', env.server);
    if (!/WAL archive: FAILED/.test(r.stdout)) return;
    if (Date.now() > deadline) throw new Error('no WAL file reached the archive');
    await sleep(250);
  }
}

export async function readLog(env: BarmanEnv): Promise<string> {
  return fs.readFile(path.join(env.root, 'barman.log'), 'utf8').catch(() => '');
}

export interface ListedBackup {
  backup_id: string;
  status: string;
}

/** The server's backups, newest first, from `list-backups -f json`. */
export async function listBackups(env: BarmanEnv): Promise<ListedBackup[]> {
  const out = await env.ok('-f', 'json', 'list-backups', env.server);
  return (JSON.parse(out) as Record<string, ListedBackup[]>)[env.server] ?? [];
}
