/**
 * The drill's PostgreSQL: started in the background on its host, watched through its process,
 * postmaster.pid and log (cheap: in-process for a local sandbox) and psql over the private
 * Unix socket when there is something to learn, promoted, stopped. Every step goes through
 * the host (DrillHost), so a local and a remote sandbox behave the same.
 */
import { BarmanError } from '../util/errors.js';
import type { RunResult } from '../util/proc.js';
import { lastErrorLine } from '../recovery/remote-shell.js';
import type { DrillHost, PostmasterState } from './host.js';
import { postgresArgv, privateFiles, sandboxLogFile, type SandboxConfigInput } from './sandbox-config.js';

/** Programs run with English messages (they are parsed) and a bounded connection wait. */
export function withCEnv(argv: readonly string[]): string[] {
  return ['env', 'LC_ALL=C', 'LANG=C', 'PGCONNECT_TIMEOUT=10', ...argv];
}

/** psql for one query: no psqlrc, unaligned, no headers, `|` between columns, stop on error. */
const PSQL_QUERY_ARGS = ['-X', '-q', '-A', '-t', '-F', '|', '-v', 'ON_ERROR_STOP=1'];

/** Who psql connects as: a role that exists in the restored cluster, and a database. */
export interface Login {
  /** null: psql's default, the host user's own name. */
  user: string | null;
  db: string;
}

/** What a failed psql connection says about the login tried. */
export function loginProblem(output: string): 'role' | 'database' | null {
  if (/FATAL:\s+role "[^"]*" does not exist/.test(output)) return 'role';
  if (/FATAL:\s+database "[^"]*" does not exist/.test(output)) return 'database';
  return null;
}

/** The first non-empty error line of psql output (`ERROR:  ...`, `FATAL:  ...`, `psql: error: ...`). */
export function psqlError(output: string): string {
  const lines = output.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  const err = lines.find((l) => /^(ERROR|FATAL|PANIC):/.test(l)) ?? lines.find((l) => /error/i.test(l)) ?? lines.at(-1) ?? '';
  return err.replace(/^psql:[^:]*:\d+:\s*/, '').replace(/\s+/g, ' ');
}

export class SandboxServer {
  pid: number | null = null;
  login: Login | null = null;
  private userIdx = 0;
  private dbIdx = 0;
  private readonly usersTried: (string | null)[];
  private readonly dbsTried: string[];

  constructor(
    readonly host: DrillHost,
    readonly cfg: SandboxConfigInput,
    candidates: { users: readonly (string | null)[]; dbs: readonly string[] },
  ) {
    this.usersTried = [...new Set(candidates.users)];
    this.dbsTried = [...new Set(candidates.dbs)];
  }

  get logFile(): string {
    return sandboxLogFile(this.cfg.privateDir);
  }

  bin(name: string): string {
    return `${this.cfg.bindir}/${name}`;
  }

  /** Connection options for psql, pg_amcheck (socket, port, role). */
  connArgs(login: Login): string[] {
    return ['-h', this.cfg.privateDir, '-p', String(this.cfg.port), ...(login.user !== null ? ['-U', login.user] : [])];
  }

  private candidateLogin(): Login | null {
    const users = this.usersTried;
    const dbs = this.dbsTried;
    if (this.userIdx >= users.length || this.dbIdx >= dbs.length) return null;
    return { user: users[this.userIdx] as string | null, db: dbs[this.dbIdx] as string };
  }

  /** Write the private files and start PostgreSQL; returns its PID. */
  async start(): Promise<number> {
    for (const f of privateFiles(this.cfg)) await this.host.writeFile(`${this.cfg.privateDir}/${f.name}`, f.text);
    this.pid = await this.host.spawnDetached(postgresArgv(this.cfg), this.logFile);
    return this.pid;
  }

  /** Is the postmaster alive, its postmaster.pid status, has it paused at the target? */
  async state(): Promise<PostmasterState> {
    if (this.pid === null) throw new BarmanError('the sandbox PostgreSQL is not started');
    return this.host.postmasterState(this.pid, `${this.cfg.dataDir}/postmaster.pid`, this.logFile);
  }

  /**
   * Run a query with psql. Before a login is known, the next candidate login is used; a role
   * or database that does not exist moves on to the next candidate, and the first that
   * answers becomes the login.
   */
  async tryQuery(sql: string): Promise<{ ok: boolean; output: string }> {
    for (;;) {
      const login = this.login ?? this.candidateLogin();
      if (login === null) {
        throw new BarmanError(
          `Cannot connect to the sandbox PostgreSQL: none of the roles ${this.usersTried.map((u) => u ?? '(the host user)').join(', ')} with the databases ${this.dbsTried.join(', ')} exists`,
        );
      }
      const res = await this.host.run(withCEnv([this.bin('psql'), ...this.connArgs(login), '-d', login.db, ...PSQL_QUERY_ARGS, '-c', sql]), { timeoutMs: 120_000 });
      const output = `${res.stdout}${res.stderr}`.trim();
      if (res.code !== 0 && this.login === null) {
        const problem = loginProblem(output);
        if (problem === 'role') {
          this.userIdx++;
          this.dbIdx = 0;
          continue;
        }
        if (problem === 'database') {
          this.dbIdx++;
          continue;
        }
      }
      if (res.code === 0 && this.login === null) this.login = login;
      return { ok: res.code === 0, output: res.code === 0 ? res.stdout.trim() : output };
    }
  }

  /** Run one SQL statement as the known login; its unaligned output, or BarmanError. */
  async query(sql: string, db?: string): Promise<string> {
    const login = this.requireLogin();
    const res = await this.host.run(withCEnv([this.bin('psql'), ...this.connArgs(login), '-d', db ?? login.db, ...PSQL_QUERY_ARGS, '-c', sql]), {
      timeoutMs: 10 * 60_000,
    });
    if (res.code !== 0) throw new BarmanError(psqlError(`${res.stderr}\n${res.stdout}`) || `psql exited with code ${res.code}`);
    return res.stdout.trim();
  }

  requireLogin(): Login {
    if (!this.login) throw new BarmanError('no connection to the sandbox PostgreSQL yet');
    return this.login;
  }

  /** Run a PostgreSQL program of the sandbox's installation on its host. */
  runProgram(name: string, args: readonly string[], timeoutMs = 6 * 3600_000): Promise<RunResult> {
    return this.host.run(withCEnv([this.bin(name), ...args]), { timeoutMs });
  }

  async isAlive(): Promise<boolean> {
    return this.pid !== null && (await this.state()).alive;
  }

  /**
   * Stop the server: `fast` (a clean shutdown, needed before pg_checksums) or `immediate`
   * (the sandbox is thrown away). A server that does not stop is killed.
   */
  async stop(mode: 'fast' | 'immediate'): Promise<void> {
    if (this.pid === null) return;
    const res = await this.runProgram('pg_ctl', ['stop', '-D', this.cfg.dataDir, '-m', mode, '-w', '-t', mode === 'fast' ? '300' : '60'], 400_000).catch(() => null);
    if (res && res.code === 0) return;
    if (await this.isAlive()) {
      await this.host.run(['kill', '-KILL', String(this.pid)], { timeoutMs: 60_000 }).catch(() => undefined);
      if (mode === 'fast') throw new BarmanError(`the sandbox PostgreSQL did not stop cleanly: ${res ? lastErrorLine(res.stderr, res.stdout) : 'pg_ctl failed'}`);
    }
  }

  async readLog(): Promise<string> {
    return (await this.host.readFile(this.logFile).catch(() => null)) ?? '';
  }
}
