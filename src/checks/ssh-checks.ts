/**
 * `ssh` and `ssh output clean`: the administrator's ssh_command (a shell string, the one place
 * where one is allowed: the administrator wrote it) is run with `true` appended, as Barman does.
 * It runs in its own process group so that a hung ssh (and anything it started) is killed as a
 * whole when the check time is up, and the result never waits for pipes a grandchild keeps open.
 */
import { spawn } from 'node:child_process';
import type { CheckCollector } from './types.js';

export interface ShellOutcome {
  /** Exit code, or null when the command could not run, was killed or timed out. */
  code: number | null;
  stdout: string;
  timedOut: boolean;
  spawnError?: string;
}

export function runBoundedShell(command: string, timeoutMs: number, col?: CheckCollector, env?: NodeJS.ProcessEnv): Promise<ShellOutcome> {
  return new Promise((resolve) => {
    let stdout = '';
    let timedOut = false;
    let settled = false;
    const child = spawn('/bin/sh', ['-c', command], { detached: true, stdio: ['ignore', 'pipe', 'ignore'], env: env ?? process.env });
    const killGroup = () => {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    };
    col?.onAbandon(killGroup);
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup();
    }, timeoutMs);
    const finish = (o: ShellOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.stdout?.destroy();
      resolve(o);
    };
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.on('error', (err) => finish({ code: null, stdout, timedOut, spawnError: err.message }));
    // 'exit', not 'close': a backgrounded grandchild holding stdout must not hold the check.
    child.on('exit', (code) => {
      // Let already-buffered output arrive (it decides `ssh output clean`).
      setImmediate(() => finish({ code: timedOut ? null : code, stdout, timedOut }));
    });
  });
}

/** The check lines for one ssh probe (pure, for unit tests). */
export function sshCheckLines(command: string, o: ShellOutcome, okHint = 'PostgreSQL server'): { name: string; ok: boolean; hint: string }[] {
  if (o.spawnError !== undefined) return [{ name: 'ssh', ok: false, hint: `Unable to execute ${command}` }];
  if (o.timedOut) return [{ name: 'ssh', ok: false, hint: `Connection timed out using '${command}'` }];
  if (o.code !== 0) return [{ name: 'ssh', ok: false, hint: `Connection failed using '${command}' return code ${o.code ?? 'unknown'}` }];
  const lines = [{ name: 'ssh', ok: true, hint: okHint }];
  if (o.stdout !== '') lines.push({ name: 'ssh output clean', ok: false, hint: 'the configured ssh_command must not add anything to the remote command output' });
  return lines;
}

/** `okHint`: what the other end is (Barman says `Barman primary node` for primary_ssh_command). */
export async function checkSsh(col: CheckCollector, command: string, env?: NodeJS.ProcessEnv, okHint?: string): Promise<boolean> {
  const o = await runBoundedShell(`${command} true`, col.remainingMs(), col, env);
  const lines = sshCheckLines(command, o, okHint);
  for (const l of lines) col.add(l.name, l.ok, l.hint);
  return lines[0]?.ok === true;
}
