import { spawn, type SpawnOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BarmanError } from './errors.js';

export interface RunResult {
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The raw bytes of stdout, with `binary: true` (then `stdout` is empty). */
  stdoutBytes?: Buffer;
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  input?: string | Uint8Array;
  /** Kill the child after this many milliseconds. */
  timeoutMs?: number;
  /** Collect stdout as bytes (`stdoutBytes`), e.g. a secret that must not go through a string. */
  binary?: boolean;
}

/**
 * Run a program with an argument array (never a shell string) and collect its output.
 * Never throws for a non-zero exit: callers decide what a failure means.
 */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const spawnOpts: SpawnOptions = {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    };
    const child = spawn(cmd, [...args], spawnOpts);
    let stdout = '';
    let stderr = '';
    const chunks: Buffer[] = [];
    if (opts.binary) child.stdout?.on('data', (d: Buffer) => chunks.push(d));
    else child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs) timer = setTimeout(() => child.kill('SIGTERM'), opts.timeoutMs);
    child.on('error', (err) => {
      if (timer) clearTimeout(timer);
      reject(new BarmanError(`cannot run ${cmd}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code: code ?? -1, signal, stdout, stderr, ...(opts.binary ? { stdoutBytes: Buffer.concat(chunks) } : {}) });
    });
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(opts.input ?? undefined);
  });
}

/** Run and throw a BarmanError naming the command when it exits non-zero. */
export async function runChecked(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const res = await run(cmd, args, opts);
  if (res.code !== 0) {
    const detail = (res.stderr.trim() || res.stdout.trim()).split('\n').slice(-1)[0] ?? '';
    throw new BarmanError(`${cmd} failed with exit code ${res.code}${detail ? `: ${detail}` : ''}`);
  }
  return res;
}

/**
 * Run an admin-configured shell command (hook scripts, `*_command` options): the only
 * place where a shell string is allowed, because the administrator wrote it.
 */
export function runShell(command: string, opts: RunOptions = {}): Promise<RunResult> {
  return run('/bin/sh', ['-c', command], opts);
}

/** The path of `program` if it is runnable (path_prefix first, then PATH), else null. */
export function findProgram(program: string, pathPrefix: string | null): string | null {
  const dirs = [...(pathPrefix ? pathPrefix.split(':') : []), ...(process.env.PATH ?? '/usr/bin:/bin').split(':')];
  for (const d of dirs) {
    if (!d) continue;
    const p = path.join(d, program);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return null;
}

/** Is there a process with this PID? (EPERM: it exists but belongs to another user: yes.) */
export function processExists(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
