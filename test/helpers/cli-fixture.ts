/**
 * A synthetic barman installation for CLI tests that need no PostgreSQL: a temporary
 * barman_home with one server `pg` whose conninfo points at a port where nothing listens, and a
 * runner for `node bin/barman.js -c CONF ...` as the current user (TZ=UTC for stable output).
 */
import { after } from 'node:test';
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BARMAN_SCRIPT } from '../../src/util/self.js';

export interface CliRunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CliFixture {
  root: string;
  home: string;
  srvDir: string;
  configFile: string;
  run(...args: string[]): Promise<CliRunResult>;
}

const roots: string[] = [];
after(async () => {
  for (const r of roots) await fsp.rm(r, { recursive: true, force: true });
});

export async function makeCliFixture(opts: {
  prefix: string;
  global?: Record<string, string>;
  server?: Record<string, string>;
  /** Log to <root>/barman.log. */
  logFile?: boolean;
}): Promise<CliFixture> {
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), opts.prefix));
  roots.push(root);
  const home = path.join(root, 'home');
  const srvDir = path.join(home, 'pg');
  await fsp.mkdir(path.join(srvDir, 'base'), { recursive: true });
  const configFile = path.join(root, 'barman.conf');
  const ini = (kv: Record<string, string>) => Object.entries(kv).map(([k, v]) => `${k} = ${v}`).join('\n');
  const global: Record<string, string> = { barman_home: home, barman_user: os.userInfo().username, ...(opts.global ?? {}) };
  if (opts.logFile) global.log_file = path.join(root, 'barman.log');
  const server = { backup_method: 'postgres', archiver: 'on', ...(opts.server ?? {}) };
  await fsp.writeFile(configFile, `[barman]\n${ini(global)}\n\n[pg]\n${ini(server)}\n`);
  const run = (...args: string[]) =>
    new Promise<CliRunResult>((resolve) => {
      execFile(process.execPath, [BARMAN_SCRIPT, '-c', configFile, ...args], { env: { ...process.env, TZ: 'UTC' } }, (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      });
    });
  return { root, home, srvDir, configFile, run };
}
