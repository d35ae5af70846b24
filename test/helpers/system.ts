/**
 * OS-level helpers for integration tests: users, running programs as another user,
 * temporary directories that several users can reach, free TCP ports, polling.
 *
 * Integration tests run as root (CI) and switch to `postgres` (server side) or `barman`
 * (the product) with `runuser`; they never build shell strings.
 */
import { execFileSync } from 'node:child_process';
import { promises as fs, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { run, type RunOptions } from '../../src/util/proc.js';

export const BARMAN_USER = 'barman';
export const BARMAN_HOME = '/var/lib/barman';
export const POSTGRES_USER = 'postgres';

export interface ExecResult {
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunAsOptions extends RunOptions {
  /** Throw (with the command line and its stderr) when the exit code is not 0. */
  check?: boolean;
}

export interface UserIds {
  uid: number;
  gid: number;
  home: string;
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Name of the user running this process. */
export function currentUser(): string {
  return os.userInfo().username;
}

/** uid/gid/home of a local user, or undefined when it does not exist (reads the passwd database). */
export function lookupUser(user: string): UserIds | undefined {
  try {
    const line = execFileSync('getent', ['passwd', user], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const f = line.trim().split(':');
    if (f.length < 7) return undefined;
    return { uid: Number(f[2]), gid: Number(f[3]), home: f[5] ?? '' };
  } catch {
    return undefined;
  }
}

function requireUser(user: string): UserIds {
  const ids = lookupUser(user);
  if (!ids) throw new Error(`system user "${user}" does not exist`);
  return ids;
}

/**
 * Make sure the unprivileged `barman` system user exists (home /var/lib/barman, shell
 * /bin/bash), as the Debian barman package creates it. Creating it needs root.
 */
export async function ensureBarmanUser(): Promise<UserIds> {
  let ids = lookupUser(BARMAN_USER);
  if (!ids) {
    if (!isRoot()) throw new Error(`system user "${BARMAN_USER}" is missing and only root can create it`);
    const res = await run('useradd', [
      '--system', '--user-group', '--home-dir', BARMAN_HOME, '--create-home', '--shell', '/bin/bash', BARMAN_USER,
    ]);
    // Exit code 9 = "already exists": another test process created it in the meantime.
    if (res.code !== 0 && res.code !== 9) throw new Error(`useradd ${BARMAN_USER} failed: ${res.stderr.trim()}`);
    ids = requireUser(BARMAN_USER);
  }
  if (isRoot()) {
    await fs.mkdir(ids.home, { recursive: true, mode: 0o755 });
    await fs.chown(ids.home, ids.uid, ids.gid);
  }
  return ids;
}

/** The test runner's env var would make child node processes think they are test files. */
function childEnv(env: NodeJS.ProcessEnv | undefined): NodeJS.ProcessEnv {
  const e = { ...(env ?? process.env) };
  delete e.NODE_TEST_CONTEXT;
  return e;
}

function describeCommand(user: string, cmd: string, args: readonly string[]): string {
  return `[${user}] ${[cmd, ...args].join(' ')}`;
}

/**
 * Run `cmd args` as `user` and collect its output. As root (and user differs) this runs
 * `runuser -u USER -- cmd args`; as that same user it runs the program directly; any other
 * combination throws. When switching user and no cwd is given, the child starts in /tmp
 * (the caller's cwd may not be readable by that user), so pass absolute paths.
 */
export async function runAs(
  user: string,
  cmd: string,
  args: readonly string[] = [],
  opts: RunAsOptions = {},
): Promise<ExecResult> {
  const me = currentUser();
  let prog = cmd;
  let argv: string[] = [...args];
  let cwd = opts.cwd;
  if (user !== me) {
    if (!isRoot()) throw new Error(`cannot run ${cmd} as ${user}: tests run as ${me}, not root`);
    prog = 'runuser';
    argv = ['-u', user, '--', cmd, ...args];
    cwd ??= '/tmp';
  }
  const res = await run(prog, argv, { ...opts, cwd, env: childEnv(opts.env) });
  if (opts.check && res.code !== 0) {
    const out = (res.stderr.trim() || res.stdout.trim()).split('\n').slice(-15).join('\n');
    throw new Error(`${describeCommand(user, cmd, args)} exited with code ${res.code}${res.signal ? ` (${res.signal})` : ''}\n${out}`);
  }
  return { code: res.code, signal: res.signal, stdout: res.stdout, stderr: res.stderr };
}

/** runAs() that throws on a non-zero exit code. */
export function runAsChecked(user: string, cmd: string, args: readonly string[] = [], opts: RunOptions = {}): Promise<ExecResult> {
  return runAs(user, cmd, args, { ...opts, check: true });
}

/** `chown -R user:usergroup path` (does not follow symlinks). */
export async function chownR(p: string, user: string): Promise<void> {
  const ids = requireUser(user);
  const res = await run('chown', ['-R', '--no-dereference', `${ids.uid}:${ids.gid}`, p]);
  if (res.code !== 0) throw new Error(`chown -R ${user} ${p} failed: ${res.stderr.trim()}`);
}

/** Temp dirs created by this process; removed by removeTempDirs() / the exit safety net. */
const tempDirs = new Set<string>();

export interface TempDirOptions {
  /** Owner of the new directory (default: the current user). */
  owner?: string;
  /** Permission bits (default 0o755, so postgres and barman can traverse it). */
  mode?: number;
}

/**
 * Create a fresh directory `/tmp/bts-<prefix>XXXXXX` (under /tmp, not $TMPDIR, so other
 * users can reach it), owned by `owner` with `mode`. It is removed at cleanup.
 */
export async function makeTempDir(prefix: string, opts: TempDirOptions = {}): Promise<string> {
  const dir = await fs.mkdtemp(path.join('/tmp', `bts-${prefix.replace(/[^A-Za-z0-9_.-]/g, '_')}`));
  tempDirs.add(dir);
  await fs.chmod(dir, opts.mode ?? 0o755);
  if (opts.owner && opts.owner !== currentUser()) {
    const ids = requireUser(opts.owner);
    await fs.chown(dir, ids.uid, ids.gid);
  }
  return dir;
}

/** Forget a temp dir (e.g. after removing it yourself). */
export function untrackTempDir(dir: string): void {
  tempDirs.delete(dir);
}

/** Remove every temp dir created by makeTempDir() in this process. */
export async function removeTempDirs(): Promise<void> {
  const dirs = [...tempDirs];
  tempDirs.clear();
  // A process of the test that is still finishing (a put-wal session whose cluster was just
  // stopped, a receive-wal on its way out) may add a file while the tree is removed: rm then
  // fails with ENOTEMPTY (seen once in CI, in wal-segsize's after hook). rm tries again.
  await Promise.all(dirs.map((d) => fs.rm(d, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 })));
}

/** Synchronous variant for the process 'exit' safety net. */
export function removeTempDirsSync(): void {
  for (const d of tempDirs) {
    try {
      rmSync(d, { recursive: true, force: true });
    } catch {
      // best effort at exit
    }
  }
  tempDirs.clear();
}

/** Paths still tracked (to print them when keeping them after a failure). */
export function trackedTempDirs(): string[] {
  return [...tempDirs];
}

const handedOutPorts = new Set<number>();

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host: '127.0.0.1', exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/**
 * A TCP port on 127.0.0.1 that is free right now. Picked at random below the Linux
 * ephemeral range (32768+), so outgoing connections will not grab it before the server
 * binds, and concurrent test processes rarely pick the same one. Never returns the same
 * port twice in one process.
 */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (handedOutPorts.has(port)) continue;
    if (await canListen(port)) {
      handedOutPorts.add(port);
      return port;
    }
  }
  throw new Error('no free TCP port found on 127.0.0.1');
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
  /** What we wait for, for the timeout message. */
  what?: string;
}

/** Poll `fn` until it returns a value other than undefined/false; throws after the timeout. */
export async function waitFor<T>(fn: () => Promise<T | undefined | false>, opts: WaitOptions = {}): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      const why = lastErr instanceof Error ? ` (last error: ${lastErr.message.split('\n')[0]})` : '';
      throw new Error(`timed out after ${opts.timeoutMs ?? 30_000} ms waiting for ${opts.what ?? 'condition'}${why}`);
    }
    await sleep(opts.intervalMs ?? 100);
  }
}

/* ---------- exit safety net ---------- */

const exitHooks: Array<() => void> = [];
let exitHandlerInstalled = false;

function runExitHooks(): void {
  // Newest first: clusters registered after their temp dirs are stopped before the dirs go.
  for (const hook of exitHooks.splice(0).reverse()) {
    try {
      hook();
    } catch {
      // best effort at exit
    }
  }
  if (process.env.BTS_KEEP_TMP === '1') {
    const kept = trackedTempDirs();
    if (kept.length) process.stderr.write(`BTS_KEEP_TMP=1: kept ${kept.join(' ')}\n`);
  } else {
    removeTempDirsSync();
  }
}

/**
 * Register a synchronous hook run when the process exits (normally, via process.exit, or on
 * SIGINT/SIGTERM/SIGHUP), before the temp dirs are removed. Used to stop leftover servers.
 */
export function onExitCleanup(hook: () => void): void {
  exitHooks.push(hook);
  if (exitHandlerInstalled) return;
  exitHandlerInstalled = true;
  process.on('exit', runExitHooks);
  const signals: Array<[NodeJS.Signals, number]> = [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]];
  for (const [sig, num] of signals) {
    process.once(sig, () => {
      runExitHooks();
      process.exit(128 + num);
    });
  }
}

// Temp dirs are removed at exit even when no cluster module is loaded.
onExitCleanup(() => undefined);
