/**
 * Running the commands a fault case attacks: as the barman (or postgres) user, in a process
 * group of their own (so that whatever they leave running can be killed with them), with a
 * fault point set (BARMAN_TS_FAULT), under `strace --inject` for a failing system call, or
 * killed after a time offset. Every output is kept in the case's transcript: the campaign
 * greps it for stack traces and secrets.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { BARMAN_SCRIPT } from '../../src/util/self.js';

export const REPO = path.dirname(path.dirname(BARMAN_SCRIPT));
export const BARMAN_JS = BARMAN_SCRIPT;
export const NODE = process.execPath;

export interface CmdResult {
  argv: string[];
  user: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** A system call made to fail by strace (`-e inject=SYSCALL:error=ERRNO:when=WHEN`). */
export interface SyscallFault {
  syscall: string;
  error: string;
  /** strace's `when` expression: `1` (first call), `3+` (third and later), ... */
  when?: string;
  /** Only calls on this path (strace -P, which follows descriptors). */
  path?: string;
}

export interface CmdOptions {
  user?: string;
  env?: Record<string, string | undefined>;
  /** BARMAN_TS_FAULT for the command (and its children). */
  fault?: string;
  input?: Buffer | string;
  strace?: SyscallFault;
  /** Send `signal` to the command's innermost process after `ms`. */
  killAfter?: { ms: number; signal: NodeJS.Signals };
  /** A hung command is killed (SIGKILL to its group) after this long: a violation of its own. */
  timeoutMs?: number;
  cwd?: string;
}

/** What the driver keeps per running case: its transcript and the file its fault points append to. */
export interface CaseTrace {
  /** Everything run in the case (the driver resets it per case). */
  transcript: CmdResult[];
  /** File the fault points append to when they fire ('' outside a case). */
  faultLog: { file: string };
}

/**
 * The trace of the case this code runs for: the campaign runs two lanes of cases at once
 * (campaign.ts), each in its own async context; outside any lane, one shared trace.
 */
export const caseTrace = new AsyncLocalStorage<CaseTrace>();
const shared: CaseTrace = { transcript: [], faultLog: { file: '' } };
export function currentTrace(): CaseTrace {
  return caseTrace.getStore() ?? shared;
}

function baseEnv(extra: Record<string, string | undefined>, fault?: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, TZ: 'UTC', LC_ALL: 'C.UTF-8' };
  delete env.NODE_TEST_CONTEXT;
  delete env.BARMAN_TS_FAULT;
  if (fault) env.BARMAN_TS_FAULT = fault;
  const { faultLog } = currentTrace();
  if (faultLog.file) env.BARMAN_TS_FAULT_LOG = faultLog.file;
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

/** Children of a process (from /proc/PID/task/TID/children). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (text) out.push(...text.split(/\s+/).map(Number));
    }
  } catch {
    // gone
  }
  return out;
}

/** Every descendant of `pid`, depth first. */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  for (const c of childPids(pid)) out.push(c, ...descendants(c));
  return out;
}

function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/** The first process of the command that is not a wrapper (runuser, strace, env, sh). */
export function innermost(pid: number): number {
  let cur = pid;
  for (let i = 0; i < 6; i++) {
    const comm = commOf(cur);
    if (!['runuser', 'strace', 'env', 'sh'].includes(comm)) return cur;
    const kids = childPids(cur);
    if (kids.length === 0) return cur;
    cur = kids[0] as number;
  }
  return cur;
}

export interface Running {
  child: ChildProcess;
  /** PID of the process group (the wrapper we spawned). */
  pgid: number;
  done: Promise<CmdResult>;
  /** PID of the command itself once it runs (after runuser/strace). */
  target(): number;
  signal(sig: NodeJS.Signals): void;
  /** Kill the whole process group (what the command left running too). */
  killGroup(): void;
}

/** Start `argv` (argv[0] a program) as `opts.user` (default barman). */
export function start(argv: string[], opts: CmdOptions = {}): Running {
  const user = opts.user ?? 'barman';
  let prog = argv[0] as string;
  let args = argv.slice(1);
  if (opts.strace) {
    // strace runs as the command's user, inside runuser: only the command is attacked.
    const s = opts.strace;
    const inject = `${s.syscall}:error=${s.error}${s.when ? `:when=${s.when}` : ''}`;
    const pre = ['-f', '-qq', '--seccomp-bpf', '-o', '/dev/null', '-e', `trace=${s.syscall}`, '-e', `inject=${inject}`];
    if (s.path) pre.push('-P', s.path);
    args = [...pre, prog, ...args];
    prog = 'strace';
  }
  if (user !== 'root') {
    args = ['-u', user, '--', prog, ...args];
    prog = 'runuser';
  }
  const t0 = Date.now();
  const trace = currentTrace();
  const child = spawn(prog, args, {
    env: baseEnv(opts.env ?? {}, opts.fault),
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
    cwd: opts.cwd ?? '/tmp',
  });
  const pgid = child.pid ?? 0;
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdin?.on('error', () => undefined);
  if (opts.input !== undefined) child.stdin?.end(opts.input);
  else child.stdin?.end();
  const killGroup = () => {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  const target = () => innermost(pgid);
  const signal = (sig: NodeJS.Signals) => {
    const pid = target();
    try {
      process.kill(pid, sig);
    } catch {
      // gone
    }
  };
  const timers: NodeJS.Timeout[] = [];
  if (opts.killAfter) {
    const { ms, signal: sig } = opts.killAfter;
    timers.push(setTimeout(() => signal(sig), ms));
  }
  const timeoutMs = opts.timeoutMs ?? 240_000;
  let timedOut = false;
  timers.push(
    setTimeout(() => {
      timedOut = true;
      killGroup();
    }, timeoutMs),
  );
  const done = new Promise<CmdResult>((resolve) => {
    child.on('close', (code, sig) => {
      for (const t of timers) clearTimeout(t);
      const res: CmdResult = {
        argv,
        user,
        code,
        signal: sig,
        stdout,
        stderr: timedOut ? `${stderr}\n[campaign: killed after ${timeoutMs} ms: hung]` : stderr,
        ms: Date.now() - t0,
      };
      trace.transcript.push(res);
      resolve(res);
    });
    child.on('error', (err) => {
      const res: CmdResult = { argv, user, code: -1, signal: null, stdout, stderr: `cannot start: ${err.message}`, ms: Date.now() - t0 };
      trace.transcript.push(res);
      resolve(res);
    });
  });
  return { child, pgid, done, target, signal, killGroup };
}

/** Run to the end; what it left in its process group is killed afterwards. */
export async function exec(argv: string[], opts: CmdOptions = {}): Promise<CmdResult> {
  const r = start(argv, opts);
  const res = await r.done;
  r.killGroup();
  return res;
}

export function describe(res: CmdResult): string {
  const how = res.signal ? `signal ${res.signal}` : `exit ${res.code}`;
  const tail = (s: string) => s.trim().split('\n').slice(-6).join('\n');
  return `[${res.user}] ${res.argv.map((a) => (a.length > 80 ? `${a.slice(0, 77)}...` : a)).join(' ')} -> ${how}\n${tail(res.stderr)}${res.stdout.trim() ? `\nstdout: ${tail(res.stdout)}` : ''}`;
}

/** Wait until `file` exists (a pause fault point reached), or the command ended. */
export async function waitForFile(file: string, running: Running | null, timeoutMs = 120_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let ended = false;
  running?.done.then(() => (ended = true));
  while (Date.now() < deadline) {
    if (existsSync(file)) return true;
    if (ended) return existsSync(file);
    await new Promise((r) => setTimeout(r, 25));
  }
  return false;
}
