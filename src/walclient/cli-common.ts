/**
 * What barman-wal-archive and barman-wal-restore do alike as programs: turn a failure into one
 * `ERROR:` line and Barman's exit code, and run `main` when node was started with their module
 * (the sh launchers exec it directly; the bin/*.js wrappers import it and call `main` themselves).
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CommanderError } from 'commander';
import { BarmanError, errorMessage } from '../util/errors.js';

/** Barman's exit code for a local problem (push.ts's LOCAL_ERROR; not imported, so that restore need not load push). */
const LOCAL_ERROR = 2;

/** Print `ERROR: <message>` and return the exit code the error carries (2 when it carries none). */
export function reportFailure(err: unknown): number {
  const line = `ERROR: ${errorMessage(err)}`;
  process.stderr.write(line.endsWith('\n') ? line : `${line}\n`);
  return err instanceof BarmanError ? err.exitCode : LOCAL_ERROR;
}

/**
 * Exit code for an error thrown while parsing the command line. Commander has already printed
 * its own usage message (or the help asked for, which is a success); anything else is reported.
 */
export function argumentFailure(err: unknown): number {
  if (err instanceof CommanderError) {
    const ok = err.code === 'commander.helpDisplayed' || err.code === 'commander.help' || err.code === 'commander.version';
    return ok ? 0 : LOCAL_ERROR;
  }
  return reportFailure(err);
}

/** True when `moduleUrl` (the caller's import.meta.url) is the script node was started with. */
function isEntryPoint(moduleUrl: string): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(moduleUrl));
  } catch {
    return false;
  }
}

/**
 * When the calling module is the program, run `main` and exit with its code. Should Node ever
 * run out of work before main() settles (a worker or a stream that never ends: a bug), it would
 * exit 0, and PostgreSQL would take that as "segment stored" from archive_command or as "end of
 * the archive" from restore_command: any exit but main()'s own is exit code 2.
 */
export function runIfEntryPoint(moduleUrl: string, main: () => Promise<number>): void {
  if (!isEntryPoint(moduleUrl)) return;
  process.exitCode = 2;
  let settled = false;
  const stalled = (): void => {
    if (!settled) process.stderr.write('ERROR: internal error: the command stopped before it finished\n');
  };
  process.once('beforeExit', stalled);
  main().then(
    (code) => {
      settled = true;
      process.exitCode = code;
    },
    (err: unknown) => {
      settled = true;
      process.exitCode = reportFailure(err);
    },
  );
}
