/**
 * The SSH side of barman-wal-restore: the options of one call, the `barman get-wal` command line
 * sent to the Barman server, ssh sessions (run, end, map their failures to Barman's exit codes),
 * and the checksum lines of a batch. Used by the single, peek and batch fetches.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import { CLIENT_DECODABLE } from '../wal/batch-protocol.js';
import { BarmanError } from '../util/errors.js';
import { quoteRemote, remoteConfigArgs, sshArgs, sshOutcome, type SshTarget } from './ssh.js';

export interface RestoreOptions {
  host: string;
  server: string;
  walName: string;
  walDest: string;
  user: string;
  port?: string;
  sshConfig?: string;
  /** Remote barman configuration file (`-c`). */
  config?: string;
  /** Number of files to fetch per request (prefetch); 0 = no prefetch. */
  parallel: number;
  /**
   * `parallel` is the default (no -p given): prefetch through `get-wal --batch` only. Against a
   * server without batches (Barman's) WAL_NAME then comes alone, as from Barman's own client
   * without -p, rather than through Barman's protocol (N parallel sessions nobody asked for).
   */
  parallelByDefault?: boolean;
  spoolDir: string;
  partial: boolean;
  gzip: boolean;
  bzip2: boolean;
  keepCompression: boolean;
}

/** A failure reported by the remote get-wal: its own stderr is the message to show. */
export class RemoteError extends BarmanError {
  constructor(
    message: string,
    exitCode: number,
    /** What the remote command wrote on stderr (already `ERROR: ...` lines). */
    readonly remoteStderr: string,
  ) {
    super(message, exitCode);
    this.name = 'RemoteError';
  }
}

/** A SHA256SUMS member of a batch holds a few lines per file: more is not ours. */
export const MAX_CHECKSUM_BYTES = 1 << 20;

function target(o: RestoreOptions): SshTarget {
  return { host: o.host, user: o.user, port: o.port, sshConfig: o.sshConfig };
}

/**
 * ssh argv running `barman [--config='C'] 'get-wal [flags] 'SERVER' 'WAL''`: Barman's client
 * passes the get-wal part as one argument, each value single-quoted for the remote shell.
 */
export function getWalSshArgs(o: RestoreOptions, extra: { test?: boolean; peek?: number; batch?: number; walName?: string; accept?: boolean } = {}): string[] {
  const words = ['get-wal'];
  if (extra.test) words.push('--test');
  if (extra.peek !== undefined) words.push('--peek', quoteRemote(String(extra.peek)));
  if (extra.batch !== undefined) words.push('--batch', quoteRemote(String(extra.batch)));
  // --batch sends plain or stored files: -z/-j only make sense for Barman's protocol.
  if (extra.batch === undefined) {
    if (o.gzip) words.push('--gzip');
    else if (o.bzip2) words.push('--bzip2');
  }
  // --accept-compression: stored bytes for every algorithm we decompress (--keep-compression
  // would also send `custom` files as stored, which only the server can decompress).
  if (extra.batch !== undefined && extra.accept) words.push('--accept-compression', CLIENT_DECODABLE.join(','));
  else if (o.keepCompression) words.push('--keep-compression');
  if (o.partial) words.push('--partial');
  words.push(quoteRemote(o.server), quoteRemote(extra.walName ?? o.walName));
  return sshArgs(target(o), ['barman', ...remoteConfigArgs(o.config), words.join(' ')]);
}

export interface SshRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/** ssh sessions running now (killSshSessions). */
const sessions = new Set<ChildProcess>();

/** End every ssh session of this process (a background prefetch told to stop). */
export function killSshSessions(): void {
  for (const child of sessions) child.kill('SIGTERM');
}

/**
 * Run ssh with `args`; its stdout goes to `consume` (which must read it to the end or throw).
 * A consumer failure kills ssh and is rethrown once ssh is gone (no process left behind).
 */
export async function runSsh(args: string[], consume: (stdout: Readable) => Promise<void>): Promise<SshRun> {
  const child = spawn('ssh', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  sessions.add(child);
  child.once('close', () => sessions.delete(child));
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    // Bounded: remote messages are a few lines; a flood must not grow memory.
    if (stderr.length < 65536) stderr += d;
  });
  const ended = new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
    child.on('error', (error) => resolve({ code: null, signal: null, error }));
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  let failure: { err: unknown } | null = null;
  try {
    await consume(child.stdout);
  } catch (err) {
    failure = { err };
    child.kill('SIGTERM');
    child.stdout.resume();
  }
  const end = await ended;
  if (end.error) throw new BarmanError(`cannot run ssh: ${end.error.message}`, 2);
  // A remote failure explains a broken stream better than the stream error does.
  if (failure && end.code === 0) throw failure.err;
  return { code: end.code, signal: end.signal, stderr };
}

/** Exit code and message for a failed remote get-wal (Barman's mapping; ssh 255 → 2). */
export function remoteFailure(run: SshRun, what: string): RemoteError {
  const outcome = sshOutcome(run.code, run.signal, 2);
  const text = run.stderr.trim();
  return new RemoteError(outcome.message ?? (text.split('\n').pop()?.replace(/^ERROR: /, '') || `${what} failed with exit code ${outcome.exitCode}`), outcome.exitCode, outcome.message ? '' : text);
}

/** The remote is Barman's (or an older barman-ts): it does not know `--batch`. */
export function rejectsBatch(run: SshRun): boolean {
  return run.code === 2 && /unrecognized arguments|unknown option/i.test(run.stderr);
}

/** `<hex> *<name>` / `<hex>  <name>` lines → map name → hex. */
export function parseChecksums(text: string): Map<string, string> {
  const sums = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const m = /^([0-9a-fA-F]{64})(?: \*|  )(.+)$/.exec(line);
    if (!m) throw new BarmanError(`invalid checksum line in the batch: '${line.slice(0, 100)}'`, 2);
    sums.set(m[2] as string, (m[1] as string).toLowerCase());
  }
  return sums;
}
