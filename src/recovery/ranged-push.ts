/**
 * Ranged push of big files to the recovery host (remote restore with several jobs). rsync sends
 * a file in one stream, through one ssh session: a 1 GiB relation segment then moves at the
 * speed of one cipher stream whatever `--jobs` says, and it is the longest job of the restore.
 * Here such a file is cut in byte ranges (src/util/ranges.ts), each range a job of the same pool
 * as the rsync buckets: read here at its offset, written there by `dd ... conv=notrunc` through
 * the administrator's ssh command (src/util/ssh-command.ts quotes every word).
 *
 * The remote file is created by the first range that reaches it (RANGED_WRITE_SCRIPT: 0600, the
 * ssh user's, never truncated), and its size, mode and mtime are checked and set once all ranges
 * are in (RANGED_FINISH_SCRIPT).
 */
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import * as path from 'node:path';
import { BarmanError, errorMessage } from '../util/errors.js';
import { ddWriteWords, splitRanges, type ByteRange } from '../util/ranges.js';
import { sshInvocation } from '../util/ssh-command.js';
import { RANGED_WRITE_SCRIPT, lastErrorLine, remoteScriptWords } from './remote-shell.js';

/** Read size of the local side of a range: big reads, few wake-ups. */
const READ_CHUNK = 1024 * 1024;

/**
 * Whether a push may use ranges. One job: nothing to share a file with. Not for a delta restore:
 * what is already there is compared and kept by rsync's delta logic, which ranges would bypass.
 * Not with a bandwidth limit or network compression: rsync applies those (--bwlimit, -z), a
 * raw `dd` stream would ignore them.
 */
export function rangedPushAllowed(o: { workers: number; delta: boolean; bwlimit: number | null; networkCompression: boolean }): boolean {
  return o.workers > 1 && !o.delta && !o.bwlimit && !o.networkCompression;
}

/** A file of a pushed tree, local path relative to the tree root. */
export interface PushFile {
  rel: string;
  size: number;
}

/** One range of one file. */
export interface RangeJob {
  local: string;
  remote: string;
  range: ByteRange;
}

/**
 * The files of a tree (root `localRoot`, remote `remoteRoot`) that go in ranges — at least
 * `minBytes` — and their ranges, `workers` per file so that one file alone keeps every job busy.
 */
export function planRanges(files: readonly PushFile[], localRoot: string, remoteRoot: string, workers: number, minBytes: number): { ranged: PushFile[]; jobs: RangeJob[] } {
  const ranged = files.filter((f) => f.size >= minBytes && f.size > 0);
  const jobs = ranged.flatMap((f) =>
    splitRanges(f.size, workers).map((range) => ({ local: path.join(localRoot, f.rel), remote: path.posix.join(remoteRoot, f.rel), range })),
  );
  return { ranged, jobs };
}

/** A failed remote command as one line: 255 is ssh itself (host, key, network, killed session). */
export function remoteFailure(sshCommand: string, code: number, detail: string, what: string): BarmanError {
  if (code === 255) return new BarmanError(`Cannot reach the remote host with '${sshCommand}' (exit code ${code})${detail ? `: ${detail}` : ''}`);
  return new BarmanError(`${what} on the remote host failed (exit code ${code})${detail ? `: ${detail}` : ''}`);
}

/** Thrown by work stopped because another job failed: never the error reported. */
export class Stopped extends Error {
  constructor() {
    super('stopped because another copy failed');
  }
}

/**
 * Send one range: the local bytes [offset, offset+length) into the remote file at the same
 * offset. Killed (and rejected with Stopped) when `signal` aborts.
 */
export function pushRange(job: RangeJob, sshCommand: string, env: NodeJS.ProcessEnv, signal: AbortSignal): Promise<void> {
  const { offset, length } = job.range;
  const what = `Writing bytes ${offset}-${offset + length} of ${job.remote}`;
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new Stopped());
    const inv = sshInvocation(sshCommand, remoteScriptWords(RANGED_WRITE_SCRIPT, ddWriteWords(job.remote, offset)));
    const child = spawn(inv.cmd, inv.args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let sent = 0;
    let readError: unknown = null;
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout = (stdout + d).slice(-4096)));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4096)));
    // the remote side may go away while we write: the exit code says what happened
    child.stdin.on('error', () => undefined);
    const input = createReadStream(job.local, { start: offset, end: offset + length - 1, highWaterMark: READ_CHUNK });
    input.on('data', (chunk) => (sent += chunk.length));
    input.on('error', (err) => {
      readError = err;
      child.kill('SIGTERM');
    });
    input.pipe(child.stdin);
    const stop = (): void => {
      input.destroy();
      // EOF for whatever the ssh command left behind, should it not die with the signal
      child.stdin.destroy();
      child.kill('SIGTERM');
    };
    signal.addEventListener('abort', stop, { once: true });
    child.on('error', (err) => {
      signal.removeEventListener('abort', stop);
      input.destroy();
      reject(new BarmanError(`Cannot run the remote ssh command: ${err.message}`));
    });
    child.on('close', (code) => {
      signal.removeEventListener('abort', stop);
      input.destroy(); // a session that ended early leaves the file open otherwise
      if (readError !== null) return reject(new BarmanError(`Cannot read ${job.local}: ${errorMessage(readError)}`));
      if (signal.aborted) return reject(new Stopped());
      if (code !== 0) return reject(remoteFailure(sshCommand, code ?? -1, lastErrorLine(stderr, stdout), what));
      // a file that shrank under us (it must not: backups are immutable) is not a complete copy
      if (sent !== length) return reject(new BarmanError(`${what}: ${job.local} gave ${sent} bytes instead of ${length}`));
      resolve();
    });
  });
}

export interface KillableResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * src/util/proc.ts `run`, killed (and rejected with Stopped) when `signal` aborts: once a job
 * of the pool failed the restore has failed, the others are not left copying for nothing.
 */
export function runKillable(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv, signal: AbortSignal): Promise<KillableResult> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new Stopped());
    const child = spawn(cmd, [...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout = (stdout + d).slice(-65536)));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-65536)));
    const stop = (): void => void child.kill('SIGTERM');
    signal.addEventListener('abort', stop, { once: true });
    child.on('error', (err) => {
      signal.removeEventListener('abort', stop);
      reject(new BarmanError(`cannot run ${cmd}: ${err.message}`));
    });
    child.on('close', (code) => {
      signal.removeEventListener('abort', stop);
      if (signal.aborted) return reject(new Stopped());
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}
