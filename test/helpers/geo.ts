/**
 * Geo-redundancy tests: a primary backup server reached by passive nodes through a real sshd on
 * 127.0.0.1, both on this machine under the `barman` user, each with its own barman_home and
 * configuration.
 *
 * A passive node runs `barman sync-info SRV` on the primary BY NAME through its
 * primary_ssh_command, as Barman does. The sshd of a primary therefore gets a `barman` wrapper of
 * its own that runs the primary's program (our CLI, or Debian's Barman 3.4) with the primary's
 * configuration (BARMAN_CONFIG_FILE, which both read; a `-c` sent by forward_config_path still
 * wins): the passive's primary_ssh_command is a plain `ssh -F CONFIG barman@127.0.0.1`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { startSshd, type Sshd } from './sshd.js';
import { BARMAN_USER, runAs, sleep, type ExecResult } from './system.js';
import type { BarmanEnv } from './barman-env.js';

export const BARMAN34 = '/usr/bin/barman';

export interface PrimarySshd {
  sshd: Sshd;
  /** primary_ssh_command for a passive node (run as the barman user). */
  sshCommand: string;
  stop(): Promise<void>;
}

const sq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** An sshd whose sessions run `barman` as the primary configured by `configFile`. */
export async function startPrimarySshd(configFile: string, program: 'barman-ts' | 'barman34' = 'barman-ts'): Promise<PrimarySshd> {
  const sshd = await startSshd();
  const exec = program === 'barman34' ? BARMAN34 : `${sq(process.execPath)} ${sq(BARMAN_SCRIPT)}`;
  const wrapper = path.join(sshd.binDir, 'barman');
  await fs.writeFile(wrapper, `#!/bin/sh\n# geo test: the primary backup server's barman\nBARMAN_CONFIG_FILE=${sq(configFile)}\nexport BARMAN_CONFIG_FILE\nexec ${exec} "$@"\n`, { mode: 0o755 });
  await fs.chmod(wrapper, 0o755);
  const cfg = await sshd.clientConfigFor(BARMAN_USER, [BARMAN_USER]);
  return { sshd, sshCommand: `ssh -F ${cfg} barman@127.0.0.1`, stop: () => sshd.stop() };
}

/** Run `barman cron` on `env` until `done()` says so (the syncs run in background processes). */
export async function cronUntil<T>(env: BarmanEnv, done: () => Promise<T | undefined | false>, what: string, timeoutMs = 90_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: ExecResult | null = null;
  for (;;) {
    last = await env.run('cron');
    const v = await done();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`cron did not get to: ${what}\nlast cron: ${last.code} ${last.stdout}${last.stderr}`);
    await sleep(700);
  }
}

/** `list-backups -f json`: id → status (and the whole row). */
export async function backupStatuses(env: BarmanEnv, run: (...a: string[]) => Promise<ExecResult> = env.run): Promise<Map<string, string>> {
  const r = await run('-f', 'json', 'list-backups', env.server);
  if (r.code !== 0) throw new Error(`list-backups: ${r.stderr}`);
  const rows = (JSON.parse(r.stdout) as Record<string, { backup_id: string; status: string }[]>)[env.server] ?? [];
  return new Map(rows.map((b) => [b.backup_id, b.status]));
}

/** `key=value` of a backup.info. */
export function infoField(text: string, key: string): string {
  return new RegExp(`^${key}=(.*)$`, 'm').exec(text)?.[1] ?? '';
}

/** A backup's backup.info text in a catalog (classic layout). */
export function backupInfoText(home: string, server: string, id: string): string {
  return readFileSync(path.join(home, server, 'base', id, 'backup.info'), 'utf8');
}

/** Descendant processes of `pid` (from /proc), deepest last. */
export function descendants(pid: number): { pid: number; comm: string }[] {
  const children = new Map<number, number[]>();
  const comm = new Map<number, string>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // pid (comm) state ppid ...: comm may hold spaces, so cut at the last ')'.
      const close = stat.lastIndexOf(')');
      const ppid = Number(stat.slice(close + 2).split(' ')[1]);
      comm.set(Number(name), stat.slice(stat.indexOf('(') + 1, close));
      children.set(ppid, [...(children.get(ppid) ?? []), Number(name)]);
    } catch {
      /* gone meanwhile */
    }
  }
  const out: { pid: number; comm: string }[] = [];
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      out.push({ pid: c, comm: comm.get(c) ?? '' });
      walk(c);
    }
  };
  walk(pid);
  return out;
}

/** `barman -c CONF args` as the barman user, in the background (runuser → node). */
export function startBarman(env: BarmanEnv, args: string[], extraEnv: Record<string, string> = {}): { child: ChildProcess; done: Promise<ExecResult> } {
  const child = spawn('runuser', ['-u', BARMAN_USER, '--', 'env', ...Object.entries(extraEnv).map(([k, v]) => `${k}=${v}`), process.execPath, BARMAN_SCRIPT, '-c', env.configFile, ...args], {
    cwd: '/tmp',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<ExecResult>((resolve) => child.on('close', (code, signal) => resolve({ code: code ?? -1, signal, stdout, stderr })));
  return { child, done };
}

/** Rewrite a server option of a barman configuration file (as root; the file stays the barman user's). */
export async function setOption(configFile: string, key: string, value: string | null): Promise<void> {
  const text = await fs.readFile(configFile, 'utf8');
  const lines = text.split('\n').filter((l) => !new RegExp(`^${key}\\s*=`).test(l));
  if (value !== null) lines.splice(lines.length - 1, 0, `${key} = ${value}`);
  await runAs(BARMAN_USER, 'tee', [configFile], { input: lines.join('\n'), check: true });
}
