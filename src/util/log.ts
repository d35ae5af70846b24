/**
 * The log file: Barman's line format `<time> [<pid>] <module> <LEVEL>: <message>`, appended to
 * `log_file`, with `[<server>] ` in front of the message when the line concerns one server.
 * The domain logs here; only the CLI prints to the terminal.
 *
 * Long-running processes (receive-wal, archive-wal) follow logrotate as Python's
 * WatchedFileHandler does for Barman: before each line the file name is looked up again, and
 * when it no longer names the open file (moved away, or removed), it is opened afresh.
 *
 * Logging must never cost the operation: a log file that cannot be opened or written (missing
 * directory, permission denied, full disk) is reported once through `onProblem` and logging to
 * the file stops; the command goes on and exits with its own code.
 */
import * as fs from 'node:fs';
import { errorMessage } from './errors.js';
import { redact } from './redact.js';

export const LEVELS = { NOTSET: 0, DEBUG: 10, INFO: 20, WARNING: 30, ERROR: 40, CRITICAL: 50 } as const;
export type LevelName = keyof typeof LEVELS;

/** Python logging's default for Barman; `%(server)s` is our addition (empty when unknown). */
export const DEFAULT_LOG_FORMAT = '%(asctime)s [%(process)s] %(name)s %(levelname)s: %(message)s';

export interface LogOptions {
  file?: string | null;
  level?: string;
  /** Also copy each line to stderr (`-d` without a log file). */
  stderr?: boolean;
  /** Python %-style format (`log_format`); unknown keys are left as they are. */
  format?: string | null;
  /** Told once, with a one-line message, when the log file cannot be opened or written. */
  onProblem?: (msg: string) => void;
}

let fd: number | null = null;
let fileName: string | null = null;
/** Device and inode of the open log file (WatchedFileHandler's check before each line). */
let openedId: { dev: number; ino: number } | null = null;
let threshold: number = LEVELS.INFO;
let toStderr = false;
let format = DEFAULT_LOG_FORMAT;
let onProblem: (msg: string) => void = (m) => process.stderr.write(`WARNING: ${m}\n`);
let currentServer: string | null = null;

function closeFile(): void {
  if (fd !== null) {
    try {
      fs.closeSync(fd);
    } catch {
      /* nothing more can go wrong with a descriptor we are dropping */
    }
  }
  fd = null;
  openedId = null;
}

/** Open (append, create 0600) the log file and remember which file that is. */
function openFile(file: string): void {
  fd = fs.openSync(file, 'a', 0o600);
  const st = fs.fstatSync(fd);
  openedId = { dev: st.dev, ino: st.ino };
}

/**
 * The name no longer leads to the open file (logrotate renamed it, someone removed it): close
 * it and open the name again, so that lines go where the administrator looks.
 */
function reopenIfRotated(): void {
  if (fd === null || fileName === null || openedId === null) return;
  let st: fs.Stats | null;
  try {
    st = fs.statSync(fileName);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return; // cannot tell: keep writing where we are
    st = null;
  }
  if (st !== null && st.dev === openedId.dev && st.ino === openedId.ino) return;
  const file = fileName;
  closeFile();
  fileName = file;
  openFile(file);
}

/** The file is given up for the rest of the process: one warning, never one per line. */
function giveUp(err: unknown): void {
  const file = fileName;
  closeFile();
  fileName = null;
  onProblem(`cannot write log file ${file}: ${errorMessage(err)}; logging to stderr is off`);
}

export function configureLog(opts: LogOptions): void {
  closeFile();
  fileName = null;
  threshold = LEVELS[(opts.level?.toUpperCase() ?? 'INFO') as LevelName] ?? LEVELS.INFO;
  toStderr = opts.stderr ?? false;
  format = opts.format || DEFAULT_LOG_FORMAT;
  if (opts.onProblem) onProblem = opts.onProblem;
  if (opts.file) {
    fileName = opts.file;
    try {
      openFile(opts.file);
    } catch (err) {
      giveUp(err);
    }
  }
}

/**
 * The server the running command works on, added to every line (`null` when it works on
 * several or none). Loggers created with an explicit server win over this.
 */
export function setLogServer(name: string | null): void {
  currentServer = name;
}

export function logStamp(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())},${p(d.getMilliseconds(), 3)}`;
}

/** One log line (without the newline), passwords redacted. Pure apart from the PID. */
export function formatLogLine(fmt: string, fields: { time: Date; level: LevelName; module: string; server: string | null; message: string }): string {
  const message = fields.server ? `[${fields.server}] ${fields.message}` : fields.message;
  const values: Record<string, string> = {
    asctime: logStamp(fields.time),
    process: String(process.pid),
    name: `barman.${fields.module}`,
    levelname: fields.level,
    message,
    server: fields.server ?? '',
  };
  const line = fmt.replace(/%\((\w+)\)(-?\d*)s/g, (whole, key: string, width: string) => {
    const v = values[key];
    if (v === undefined) return whole;
    const w = Number(width);
    if (!width || !Number.isFinite(w)) return v;
    return w < 0 ? v.padEnd(-w) : v.padStart(w);
  });
  return redact(line);
}

function writeAll(line: string): void {
  const buf = Buffer.from(line);
  let off = 0;
  while (off < buf.length) off += fs.writeSync(fd as number, buf, off);
}

function write(level: LevelName, module: string, server: string | null, msg: string): void {
  if (LEVELS[level] < threshold || (fd === null && !toStderr)) return;
  const line = `${formatLogLine(format, { time: new Date(), level, module, server: server ?? currentServer, message: msg })}\n`;
  if (fd !== null) {
    try {
      reopenIfRotated();
      writeAll(line);
    } catch (err) {
      giveUp(err);
    }
  }
  if (toStderr) process.stderr.write(line);
}

/** A logger for one module (the name appears in each line), optionally for one server. */
export function logger(module: string, server: string | null = null) {
  return {
    debug: (m: string) => write('DEBUG', module, server, m),
    info: (m: string) => write('INFO', module, server, m),
    warning: (m: string) => write('WARNING', module, server, m),
    error: (m: string) => write('ERROR', module, server, m),
    critical: (m: string) => write('CRITICAL', module, server, m),
  };
}
export type Logger = ReturnType<typeof logger>;
