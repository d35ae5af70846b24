/**
 * `barman` entry point: global options, then one subcommand. Only the subcommand that runs is
 * loaded (see registry.ts), which keeps `barman --version` and `barman list-servers` fast.
 */
import { Command, CommanderError, Option } from 'commander';
import { BarmanError } from '../util/errors.js';
import { logger } from '../util/log.js';
import { versionText } from '../version.js';
import { CliContext, type GlobalOptions } from './context.js';
import { Output } from './output.js';
import { COMMANDS, type CommandEntry } from './registry.js';

/** Commands PostgreSQL may run as its own user (restore_command). */
const ANY_USER_COMMANDS = new Set(['get-wal']);
const GLOBAL_WITH_VALUE = new Set(['-c', '--config', '-f', '--format', '--log-level', '--color', '--colour']);

/** The first two positional words (command, and its first argument), without parsing everything. */
function leadingPositionals(argv: readonly string[]): string[] {
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (GLOBAL_WITH_VALUE.has(a)) {
      i++;
      continue;
    }
    if (a.startsWith('-')) continue;
    positional.push(a);
    if (positional.length === 2) break;
  }
  return positional;
}

const findCommand = (n: string | undefined): CommandEntry | undefined => COMMANDS.find((c) => c.name === n || c.aliases?.includes(n ?? ''));

/** Find which subcommand the user asked for (`barman CMD ...` or `barman help CMD`). */
function requestedCommands(argv: readonly string[]): CommandEntry[] {
  const [first, second] = leadingPositionals(argv);
  const found = findCommand(first) ?? (first === 'help' ? findCommand(second) : undefined);
  return found ? [found] : [];
}

/**
 * Barman (argparse) refuses an unknown command with exit 2 even when --help follows it, and
 * `barman help X` with anything after `help` (3.4: "unrecognized arguments"). Scripts test
 * whether a command exists with `barman CMD --help >/dev/null`: an unknown one must not look
 * present. `barman help KNOWN` is a barman-ts convenience (the command's help, exit 0).
 */
function unknownCommand(argv: readonly string[]): string | null {
  const [first, second] = leadingPositionals(argv);
  if (first === undefined) return null;
  if (first === 'help') return second !== undefined && !findCommand(second) ? second : null;
  return findCommand(first) ? null : first;
}

export async function main(argv: string[] = process.argv.slice(2)): Promise<number> {
  const unknown = unknownCommand(argv);
  if (unknown !== null) {
    process.stderr.write(`barman: error: unknown command '${unknown}' (run 'barman help' for the list of commands)\n`);
    return 2;
  }
  const program = new Command('barman');
  program
    .description('Backup and recovery manager for PostgreSQL (barman-ts, compatible with Barman)')
    .version(versionText(), '-v, --version', 'show the version and exit')
    .option('-c, --config <file>', 'configuration file (default: ~/.barman.conf, /etc/barman.conf, /etc/barman/barman.conf)')
    .addOption(new Option('--color, --colour <when>', 'use colours in the output').choices(['never', 'always', 'auto']).default('auto'))
    .addOption(new Option('--log-level <level>', 'override the log level of the configuration').choices(['NOTSET', 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL']))
    .option('-q, --quiet', 'be quiet: print only warnings and errors')
    .option('-d, --debug', 'print debug messages (and send the log to stderr if no log_file is set)')
    .addOption(new Option('-f, --format <format>', 'output format').choices(['console', 'json']).default('console'))
    .addHelpText(
      'after',
      `
Run 'barman COMMAND --help' for the arguments and options of a command.

Output: results and information go to stdout; WARNING:, ERROR:, EXCEPTION: and DEBUG: lines to
stderr (-q hides information, not warnings or errors). With -f json everything is printed as one
JSON object at the end. Passwords in conninfo strings and URIs are redacted. Events go to log_file
(one line each: time, PID, module, level, server); a log file that cannot be written costs one
warning, never the command.

Exit status: 0 success; 1 an error was reported (failed check, unknown server, failed
operation); 2 wrong usage (unknown option, missing argument) or Nagios CRITICAL; 3 get-wal with
an invalid WAL name or an unwritable output file.

Examples:
  barman check all
  barman -f json list-backups pg
  barman --log-level DEBUG -c /etc/barman.conf backup --wait pg

Shell completion (bash): source scripts/barman-completion.bash, or copy it to
/etc/bash_completion.d/barman.`,
    )
    .exitOverride()
    .showSuggestionAfterError(true);

  let exitCode = 0;
  const wanted = new Set(requestedCommands(argv).map((c) => c.name));
  for (const entry of COMMANDS) {
    const cmd = program.command(entry.name).description(entry.summary);
    if (entry.aliases) cmd.aliases(entry.aliases);
    if (!wanted.has(entry.name)) continue;
    const mod = await entry.load();
    mod.define(cmd);
    cmd.action(async () => {
      // Commander names `--color, --colour` after its last long flag.
      const raw = program.opts() as GlobalOptions & { colour?: GlobalOptions['color'] };
      const g: GlobalOptions = { ...raw, color: raw.color ?? raw.colour ?? 'auto' };
      const out = new Output(g.format, g.quiet, g.debug, g.color);
      const ctx = new CliContext(g, out, ANY_USER_COMMANDS.has(entry.name), leadingPositionals(argv)[0] ?? entry.name);
      const positional = (cmd.processedArgs as unknown[]).flat().filter((a): a is string => typeof a === 'string');
      try {
        await mod.run(ctx, positional, cmd.opts());
      } catch (err) {
        reportError(out, err);
      }
      // After the run (the log file is known once the command has read the configuration) but
      // before close(): a log file failing now still gets its warning into the JSON document.
      logger('cli').debug(`exit code ${out.exitCode} for: barman ${argv.join(' ')}`);
      exitCode = out.close();
    });
  }

  // No command: the general help on stdout, exit 0 (as Barman).
  if (leadingPositionals(argv).length === 0 && !argv.some((a) => ['-h', '--help', '-v', '--version'].includes(a))) {
    process.stdout.write(program.helpInformation());
    return 0;
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
      return 2;
    }
    throw err;
  }
  return exitCode;
}

function reportError(out: Output, err: unknown): void {
  if (err instanceof BarmanError) {
    out.error(err.message, err.exitCode);
    return;
  }
  const e = err instanceof Error ? err : new Error(String(err));
  // The stack goes to the log file only; the user gets the message and where to look.
  logger('cli').error(e.stack ?? e.message);
  out.exception(`${e.message}\nSee log file for more details.`);
}
