/**
 * A barman installation run as the PostgreSQL OS user, as backup_method = local-rsync requires
 * (Barman on the database host, `barman_user = postgres`, reading PGDATA directly): barman_home
 * and the configuration owned by postgres, the CLI run as postgres. Same shape as BarmanEnv, so
 * that startStreaming/listBackups/readLog work on it.
 */
import path from 'node:path';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import type { BarmanEnv } from './barman-env.js';
import type { PgCluster } from './pg-cluster.js';
import { POSTGRES_USER, makeTempDir, runAs } from './system.js';

export async function createLocalBarmanEnv(
  cluster: PgCluster,
  opts: { server?: string; extra?: Record<string, string>; global?: Record<string, string> } = {},
): Promise<BarmanEnv> {
  const root = await makeTempDir('barman-local-', { owner: POSTGRES_USER, mode: 0o755 });
  const home = path.join(root, 'home');
  const server = opts.server ?? 'pg';
  const configFile = path.join(root, 'barman.conf');
  const serverConf: Record<string, string> = {
    description: '"local-rsync integration test server"',
    conninfo: cluster.conninfo,
    streaming_conninfo: cluster.conninfo,
    backup_method: 'local-rsync',
    streaming_archiver: 'on',
    slot_name: 'barman',
    create_slot: 'auto',
    ...(opts.extra ?? {}),
  };
  const globalConf: Record<string, string> = {
    barman_home: home,
    barman_user: POSTGRES_USER,
    log_file: path.join(root, 'barman.log'),
    log_level: 'DEBUG',
    ...(opts.global ?? {}),
  };
  const ini = (section: string, kv: Record<string, string>) => `[${section}]\n${Object.entries(kv).map(([k, v]) => `${k} = ${v}`).join('\n')}\n`;
  await runAs(POSTGRES_USER, 'mkdir', ['-m', '0700', home], { check: true });
  await runAs(POSTGRES_USER, 'tee', [configFile], { input: `${ini('barman', globalConf)}\n${ini(server, serverConf)}`, check: true });
  const run = (...args: string[]) => runAs(POSTGRES_USER, process.execPath, [BARMAN_SCRIPT, '-c', configFile, ...args]);
  return {
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
      const d = await makeTempDir(prefix, { owner: POSTGRES_USER, mode: 0o755 });
      return path.join(d, 'data');
    },
    async stop() {
      await run('receive-wal', '--stop', server);
    },
  };
}
