/**
 * The log file: Barman's line format `<time> [<pid>] <module> <LEVEL>: <message>`, appended to
 * `log_file`. The domain logs here; only the CLI prints to the terminal.
 */
import * as fs from 'node:fs';
import { redact } from './redact.js';

export const LEVELS = { NOTSET: 0, DEBUG: 10, INFO: 20, WARNING: 30, ERROR: 40, CRITICAL: 50 } as const;
export type LevelName = keyof typeof LEVELS;

let fd: number | null = null;
let threshold: number = LEVELS.INFO;
let toStderr = false;

export function configureLog(opts: { file?: string | null; level?: string; stderr?: boolean }): void {
  threshold = LEVELS[(opts.level?.toUpperCase() ?? 'INFO') as LevelName] ?? LEVELS.INFO;
  toStderr = opts.stderr ?? false;
  if (opts.file) {
    try {
      fd = fs.openSync(opts.file, 'a', 0o600);
    } catch (err) {
      process.stderr.write(`WARNING: cannot open log file ${opts.file}: ${(err as Error).message}\n`);
    }
  }
}

function stamp(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())},${p(d.getMilliseconds(), 3)}`;
}

function write(level: LevelName, module: string, msg: string): void {
  if (LEVELS[level] < threshold || (fd === null && !toStderr)) return;
  const line = `${stamp(new Date())} [${process.pid}] barman.${module} ${level}: ${redact(msg)}\n`;
  if (fd !== null) {
    try {
      fs.writeSync(fd, line);
    } catch {
      /* a full disk must not turn logging into a failure of the operation */
    }
  }
  if (toStderr) process.stderr.write(line);
}

/** A logger for one module (the name appears in each line). */
export function logger(module: string) {
  return {
    debug: (m: string) => write('DEBUG', module, m),
    info: (m: string) => write('INFO', module, m),
    warning: (m: string) => write('WARNING', module, m),
    error: (m: string) => write('ERROR', module, m),
  };
}
export type Logger = ReturnType<typeof logger>;
