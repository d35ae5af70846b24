/**
 * Console and JSON output, Barman style. Info goes to stdout; warnings and errors to stderr with
 * `WARNING: ` / `ERROR: ` prefixes. With `-f json` everything is collected and printed as one
 * sorted JSON object at exit. Any error sets exit code 1. Passwords are always redacted.
 */
import { redact } from '../util/redact.js';
import { logger } from '../util/log.js';

const log = logger('cli');

export type Format = 'console' | 'json';

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value).sort()) out[k] = sortKeys((value as Record<string, unknown>)[k]);
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
    color: 'never' | 'always' | 'auto' = 'auto',
  ) {
    this.color = color === 'always' || (color === 'auto' && !!process.stdout.isTTY && !!process.stderr.isTTY);
  }

  get isJson(): boolean {
    return this.format === 'json';
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
    else process.stderr.write(`${this.paint('WARNING', 33)}: ${text}\n`);
  }

  error(msg: string, exitCode = 1): void {
    const text = redact(msg);
    log.error(text);
    if (this.exitCode === 0 || exitCode > this.exitCode) this.exitCode = exitCode;
    if (this.isJson) this.push('_ERROR', text);
    else process.stderr.write(`${this.paint('ERROR', 31)}: ${text}\n`);
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
    return this.paint(text, 32);
  }

  failed(text = 'FAILED'): string {
    return this.paint(text, 31);
  }

  /** Print the JSON document (if any) and return the process exit code. */
  close(): number {
    if (this.isJson && !this.quiet) {
      process.stdout.write(`${redact(JSON.stringify(sortKeys(this.json)))}\n`);
    }
    return this.exitCode;
  }
}
