/**
 * ssh command lines for the WAL clients that run on the PostgreSQL host (barman-wal-archive,
 * barman-wal-restore). Pure functions: building argv arrays, quoting for the remote shell and
 * mapping ssh's exit status; spawning is left to the callers.
 *
 * ssh joins every argument after the destination with spaces and hands the result to the
 * remote user's shell, which parses it again: values that reach the remote command line must
 * therefore be quoted for that shell (quoteRemote), whatever local argv quoting was used.
 */
import { BarmanError } from '../util/errors.js';

/** Where and how to log in on the Barman server. */
export interface SshTarget {
  host: string;
  /** Login user on the Barman server (Barman's default: barman). */
  user: string;
  /** ssh port (`-p`); ssh's own default (or the ssh config) when unset. */
  port?: string | number;
  /** ssh client configuration file (`-F`), e.g. to point at a key and known_hosts. */
  sshConfig?: string;
}

/** ssh's exit status when it could not connect or authenticate (the remote command never ran). */
export const SSH_CONNECTION_FAILURE = 255;

/**
 * Single-quote a value for a POSIX shell: `it's` → `'it'\''s'`. The remote shell sees exactly
 * one word with the original bytes, whatever they are (spaces, quotes, `$`, `;`).
 */
export function quoteRemote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/**
 * Refuse values that ssh would read as options or that cannot be a host/user/port: a
 * destination starting with `-` would be taken as an ssh option.
 */
export function validateTarget(target: SshTarget): void {
  if (!target.host || target.host.startsWith('-') || /[\s@]/.test(target.host)) {
    throw new BarmanError(`invalid Barman host '${target.host}'`, 2);
  }
  if (!target.user || target.user.startsWith('-') || /[\s@]/.test(target.user)) {
    throw new BarmanError(`invalid ssh user '${target.user}'`, 2);
  }
  if (target.port !== undefined) {
    const p = String(target.port);
    if (!/^\d{1,5}$/.test(p) || Number(p) < 1 || Number(p) > 65535) {
      throw new BarmanError(`invalid ssh port '${p}'`, 2);
    }
  }
}

/**
 * Arguments for `ssh` (without the program name):
 * `[-F CFG] [-p PORT] -q -T USER@HOST <remoteArgs...>`. The remote arguments must already be
 * quoted for the remote shell where needed (see quoteRemote).
 */
export function sshArgs(target: SshTarget, remoteArgs: readonly string[]): string[] {
  validateTarget(target);
  const args: string[] = [];
  if (target.sshConfig) args.push('-F', target.sshConfig);
  if (target.port !== undefined) args.push('-p', String(target.port));
  args.push('-q', '-T', `${target.user}@${target.host}`, ...remoteArgs);
  return args;
}

/** `--config='CONFIG'` for a remote `barman` command line (nothing when no config is given). */
export function remoteConfigArgs(config: string | undefined): string[] {
  return config ? [`--config=${quoteRemote(config)}`] : [];
}

/** What a WAL client exits with, given how ssh ended. */
export interface SshOutcome {
  exitCode: number;
  /** One line for stderr, or null when ssh (or the remote command) already said everything. */
  message: string | null;
}

/**
 * Barman's mapping: 0 → 0; 255 (ssh could not connect) → `connectionFailureCode` with
 * "Connection problem with ssh"; any other code is the remote command's own and is returned
 * as is; killed by a signal → `connectionFailureCode` too (nothing is known to be stored).
 */
export function sshOutcome(code: number | null, signal: NodeJS.Signals | null, connectionFailureCode: number): SshOutcome {
  if (signal) return { exitCode: connectionFailureCode, message: `ssh was killed by ${signal}` };
  if (code === 0) return { exitCode: 0, message: null };
  if (code === SSH_CONNECTION_FAILURE || code === null) {
    return { exitCode: connectionFailureCode, message: 'Connection problem with ssh' };
  }
  return { exitCode: code, message: null };
}
