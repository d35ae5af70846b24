/**
 * Console and JSON output, Barman style. Info goes to stdout; warnings and errors to stderr with
 * `WARNING: ` / `ERROR: ` / `EXCEPTION: ` prefixes. With `-f json` everything is collected and
 * printed as one sorted JSON object at exit. Any error sets exit code 1. Passwords are always
 * redacted. Colours (spec §4.3): OK green, FAILED/ERROR/EXCEPTION red, WARNING yellow; `auto`
 * colours only when both stdout and stderr are terminals.
 */
import { redact } from '../util/redact.js';
import { logger } from '../util/log.js';

const log = logger('cli');

export type Format = 'console' | 'json';
export type ColorMode = 'never' | 'always' | 'auto';

export const GREEN = 32;
export const RED = 31;
export const YELLOW = 33;

/** Whether to colour, from `--color` and whether stdout/stderr are terminals (pure). */
export function useColor(mode: ColorMode, stdoutTty: boolean, stderrTty: boolean): boolean {
  return mode === 'always' || (mode === 'auto' && stdoutTty && stderrTty);
}

/**
 * Keys sorted (as Python's `sort_keys`) and every string redacted. Redacting each string, not the
 * serialized document, keeps the JSON valid: a pattern that ends at whitespace would otherwise
 * swallow the closing quotes and brackets after a password.
 */
function sortKeysRedacted(value: unknown): unknown {
  if (typeof value === 'string') return redact(value);
  // Dates, PyDateTime...: what JSON.stringify would have written.
  if (value && typeof value === 'object' && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    return sortKeysRedacted((value as { toJSON(): unknown }).toJSON());
  }
  if (Array.isArray(value)) return value.map(sortKeysRedacted);
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value).sort()) out[k] = sortKeysRedacted((value as Record<string, unknown>)[k]);
    return out;
  }
  return value;
}

export class Output {
  exitCode = 0;
  private readonly json: Record<string, unknown> = {};
  private readonly color: boolean;

  constructor(
    readonly format: Format = 'console',
    readonly quiet = false,
    readonly debugEnabled = false,
    color: ColorMode = 'auto',
  ) {
    this.color = useColor(color, process.stdout.isTTY === true, process.stderr.isTTY === true);
  }

  get isJson(): boolean {
    return this.format === 'json';
  }

  /**
   * Whether a live progress display may be drawn: on stderr (stdout stays clean for pipes and
   * `-f json`), only on a terminal, and not when the user asked for quiet or JSON.
   */
  get progressAllowed(): boolean {
    return !this.isJson && !this.quiet && process.stderr.isTTY === true;
  }

  private push(key: string, msg: string): void {
    const list = (this.json[key] as string[] | undefined) ?? [];
    list.push(msg);
    this.json[key] = list;
  }

  /** A plain line for the user (stdout); in JSON mode it is collected under `_INFO`. */
  info(msg: string): void {
    const text = redact(msg);
    log.info(text);
    if (this.isJson) {
      this.push('_INFO', text);
    } else if (!this.quiet) {
      process.stdout.write(`${text}\n`);
    }
  }

  /** Raw console line that is not an "info message" (command results); ignored in JSON mode. */
  line(msg = ''): void {
    if (!this.isJson && !this.quiet) process.stdout.write(`${redact(msg)}\n`);
  }

  warning(msg: string): void {
    const text = redact(msg);
    log.warning(text);
    if (this.isJson) this.push('_WARNING', text);
    else process.stderr.write(`${this.paint('WARNING', YELLOW)}: ${text}\n`);
  }

  error(msg: string, exitCode = 1): void {
    const text = redact(msg);
    log.error(text);
    if (this.exitCode === 0 || exitCode > this.exitCode) this.exitCode = exitCode;
    if (this.isJson) this.push('_ERROR', text);
    else process.stderr.write(`${this.paint('ERROR', RED)}: ${text}\n`);
  }

  /** An unexpected failure (a bug, not a user error): `EXCEPTION: ` / `_EXCEPTION`, exit 1. */
  exception(msg: string): void {
    const text = redact(msg);
    if (this.exitCode === 0) this.exitCode = 1;
    if (this.isJson) this.push('_EXCEPTION', text);
    else process.stderr.write(`${this.paint('EXCEPTION', RED)}: ${text}\n`);
  }

  debug(msg: string): void {
    const text = redact(msg);
    log.debug(text);
    if (!this.debugEnabled) return;
    if (this.isJson) this.push('_DEBUG', text);
    else process.stderr.write(`DEBUG: ${text}\n`);
  }

  /** Set a command-specific key of the JSON document (nested path allowed). */
  set(pathKeys: readonly string[], value: unknown): void {
    let node = this.json;
    for (const k of pathKeys.slice(0, -1)) {
      node[k] ??= {};
      node = node[k] as Record<string, unknown>;
    }
    const last = pathKeys[pathKeys.length - 1];
    if (last !== undefined) node[last] = value;
  }

  paint(text: string, code: number): string {
    return this.color ? `\u001b[${code}m${text}\u001b[0m` : text;
  }

  ok(text = 'OK'): string {
    return this.paint(text, GREEN);
  }

  failed(text = 'FAILED'): string {
    return this.paint(text, RED);
  }

  /** Print the JSON document (if any) and return the process exit code. */
  close(): number {
    if (this.isJson && !this.quiet) {
      process.stdout.write(`${JSON.stringify(sortKeysRedacted(this.json))}\n`);
    }
    return this.exitCode;
  }
}
