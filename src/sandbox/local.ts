/**
 * Local throw-away PostgreSQL clusters and user switching, shared by the sandbox demo and the
 * benchmark. As root, PostgreSQL runs as `postgres` and barman as `barman` (as in production);
 * as any other user, both run as that user.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { freePort } from '../util/net.js';
import { run, type RunResult } from '../util/proc.js';

export const isRoot = process.getuid?.() === 0;
const me = os.userInfo().username;
const userExists = (u: string) => {
  try {
    execFileSync('id', ['-u', u], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};
export const PG_USER = isRoot ? 'postgres' : me;
export const BARMAN_USER = isRoot ? (userExists('barman') ? 'barman' : 'postgres') : me;

function pgBindir(): string {
  for (const v of ['17', '16', '15', '14', '13']) {
    const d = `/usr/lib/postgresql/${v}/bin`;
    if (fs.existsSync(path.join(d, 'initdb'))) return d;
  }
  try {
    return execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error('PostgreSQL server binaries not found (install postgresql-15)');
  }
}
export const BIN = pgBindir();

/** Run a program as `user` (through runuser when we are root and it is another user). */
export async function as(user: string, cmd: string, args: string[], input?: string): Promise<RunResult> {
  const [prog, argv] = user === me ? [cmd, args] : ['runuser', ['-u', user, '--', cmd, ...args]];
  return run(prog, argv, { cwd: '/tmp', input });
}

export async function must(user: string, cmd: string, args: string[], input?: string): Promise<string> {
  const r = await as(user, cmd, args, input);
  if (r.code !== 0) throw new Error(`${path.basename(cmd)} ${args.slice(0, 3).join(' ')} failed (exit ${r.code}):\n${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

/** Give a path to a user (no-op unless root). */
export function chownTo(user: string, p: string, recursive = false): void {
  if (isRoot) execFileSync('chown', [...(recursive ? ['-R'] : []), user, p]);
}

export { freePort };

export class LocalCluster {
  constructor(readonly dataDir: string, readonly sockDir: string, readonly port: number) {}

  /** initdb + a configuration fit for barman (replication on 127.0.0.1), then start. */
  static async create(dataDir: string, sockDir: string, extraConf = ''): Promise<LocalCluster> {
    const port = await freePort();
    await must(PG_USER, path.join(BIN, 'initdb'), ['-D', dataDir, '-A', 'trust', '--no-sync', '-U', 'postgres']);
    fs.appendFileSync(
      path.join(dataDir, 'postgresql.conf'),
      `\nport = ${port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '${sockDir}'\nwal_level = replica\nmax_wal_senders = 10\nmax_replication_slots = 10\ncheckpoint_completion_target = 0.1\n${extraConf}`,
    );
    fs.appendFileSync(path.join(dataDir, 'pg_hba.conf'), '\nhost replication all 127.0.0.1/32 trust\n');
    const c = new LocalCluster(dataDir, sockDir, port);
    await c.start();
    return c;
  }

  get conninfo(): string {
    return `host=127.0.0.1 port=${this.port} user=postgres dbname=postgres`;
  }

  psql(sql: string): Promise<string> {
    return must(PG_USER, path.join(BIN, 'psql'), ['-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-h', this.sockDir, '-p', String(this.port), '-U', 'postgres', '-d', 'postgres'], sql).then((s) => s.trim());
  }

  start(): Promise<string> {
    return must(PG_USER, path.join(BIN, 'pg_ctl'), ['-D', this.dataDir, '-l', path.join(this.sockDir, `postgres-${this.port}.log`), '-w', '-t', '300', 'start']);
  }

  async stop(mode = 'fast'): Promise<void> {
    await as(PG_USER, path.join(BIN, 'pg_ctl'), ['-D', this.dataDir, '-m', mode, '-w', 'stop']);
  }

  /** Wait until a recovering cluster has been promoted. */
  async waitPromoted(timeoutMs = 120000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if ((await this.psql('SELECT pg_is_in_recovery()').catch(() => 't')) === 'f') return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error('the recovered cluster did not finish recovery in time');
  }
}
