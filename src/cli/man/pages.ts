/**
 * The manual pages, made from what drives the program itself, so they cannot drift from it:
 *   barman(1)  the commander program and every command of the registry, through commander's
 *              Help (the same terms and descriptions `--help` prints), plus their help text;
 *   barman(5)  the option table of the configuration parser (scope, type, default), with the
 *              descriptions of option-docs.ts;
 *   NAME(1)    for every other executable, its own `--help` output (help-parse.ts);
 * and the commented sample barman.conf, from the same option table.
 */
import type { Command, Help } from 'commander';
import { DEFAULT_CONFIG_LOCATIONS } from '../../config/config.js';
import { OPTION_DOCS } from '../../config/option-docs.js';
import { GLOBAL_OPTIONS, SERVER_OPTIONS, type OptionDef, type Scope } from '../../config/options.js';
import * as v from '../../config/values.js';
import { BARMAN_TS_VERSION, VERSION } from '../../version.js';
import { addCommand, createProgram } from '../main.js';
import { COMMANDS } from '../registry.js';
import { parseHelp } from './help-parse.js';
import { RoffPage, bold, esc, italic } from './roff.js';

const SOURCE = `barman-ts ${BARMAN_TS_VERSION}`;
const MANUAL = 'barman-ts manual';

export interface PageContext {
  /** Executables besides barman (package.json bin), for SEE ALSO. */
  clients: readonly string[];
  /** .TH date; empty by default so that two builds of the same sources are identical. */
  date?: string;
}

/** The barman program with every command defined, as `barman CMD --help` builds it. */
export async function fullProgram(): Promise<Command> {
  const program = createProgram();
  for (const entry of COMMANDS) {
    const cmd = addCommand(program, entry);
    (await entry.load()).define(cmd);
  }
  return program;
}

/** The "after" help text of a command (addHelpText), as `--help` prints it after the lists. */
export function afterHelp(cmd: Command): string {
  let printed = '';
  cmd.configureOutput({ writeOut: (s) => (printed += s), writeErr: (s) => (printed += s) });
  cmd.outputHelp();
  const info = cmd.helpInformation();
  return printed.startsWith(info) ? printed.slice(info.length) : '';
}

function seeAlso(page: RoffPage, self: string, ctx: PageContext): void {
  const refs = ['barman(1)', 'barman(5)', ...ctx.clients.map((c) => `${c}(1)`)].filter((r) => r !== self);
  page.section('See also').raw(refs.map((r) => bold(r.replace(/\(\d\)$/, '')) + r.slice(r.indexOf('('))).join(',\n'));
}

function items(page: RoffPage, list: readonly { term: string; text: string }[]): void {
  for (const it of list) page.item(bold(it.term), it.text);
}

function commandItems(help: Help, cmd: Command): { args: { term: string; text: string }[]; opts: { term: string; text: string }[] } {
  return {
    args: help.visibleArguments(cmd).map((a) => ({ term: help.argumentTerm(a), text: help.argumentDescription(a) })),
    opts: help.visibleOptions(cmd).map((o) => ({ term: help.optionTerm(o), text: help.optionDescription(o) })),
  };
}

/** barman(1): global options, then every command with its arguments, options and notes. */
export async function barmanPage(ctx: PageContext): Promise<string> {
  const program = await fullProgram();
  const help = program.createHelp();
  const page = new RoffPage('barman', '1', SOURCE, MANUAL, ctx.date);
  page.section('Name').raw(`barman \\- ${esc(help.commandDescription(program))}`);
  page.section('Synopsis').raw(`${bold('barman')} [${italic('OPTIONS')}] ${italic('COMMAND')} [${italic('ARGUMENTS')}]`);
  page.section('Description');
  page.paragraph(
    `barman-ts is a drop-in replacement for Barman ${VERSION}: the same commands, options, configuration files (see barman(5)) and catalog, so that backups taken by either can be listed, checked and recovered by the other.`,
  );
  page.helpText(afterHelp(program));
  const global = commandItems(help, program);
  page.section('Options');
  items(page, global.opts);
  page.section('Commands');
  for (const cmd of help.visibleCommands(program)) {
    const aliases = cmd.aliases();
    page.subsection(aliases.length > 0 ? `${cmd.name()} (${aliases.join(', ')})` : cmd.name());
    page.raw('.PP').raw(bold(help.commandUsage(cmd)));
    page.paragraph(help.commandDescription(cmd));
    const { args, opts } = commandItems(help, cmd);
    if (args.length > 0) {
      page.raw('.PP').raw(italic('Arguments:'));
      items(page, args);
    }
    if (opts.length > 0) {
      page.raw('.PP').raw(italic('Options:'));
      items(page, opts);
    }
    page.helpText(afterHelp(cmd));
  }
  page.section('Files');
  for (const f of DEFAULT_CONFIG_LOCATIONS) page.item(bold(f), f === DEFAULT_CONFIG_LOCATIONS[0] ? 'Configuration file; the first one found is read unless -c or BARMAN_CONFIG_FILE names another.' : '');
  page.section('Environment');
  page.item(bold('BARMAN_CONFIG_FILE'), 'Configuration file to read when -c is not given.');
  seeAlso(page, 'barman(1)', ctx);
  return page.toString();
}

const SCOPE_WORDS: Record<Scope, string> = { G: 'global', S: 'server', M: 'model' };

/** What a parser accepts, in words. Parsers this table does not know describe themselves. */
const TYPE_WORDS = new Map<unknown, string>([
  [v.parseBool, 'boolean (on/off, true/false, yes/no, 1/0)'],
  [v.parseInt10, 'integer'],
  [v.parseNonNegativeInt, 'integer >= 0'],
  [v.parseInterval, "interval ('N hours', 'N days', 'N weeks', 'N months'; a month is 31 days)"],
  [v.parseSize, 'size (N with k, Ki, M, Mi, G, Gi, T or Ti; k = 1000, Ki = 1024)'],
  [v.parseRetentionPolicy, "'REDUNDANCY n' or 'RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS'"],
  [v.parseSlotName, 'replication slot name (lower-case letters, digits, _)'],
  [v.parseCompressionLevel, 'low, medium, high or an integer'],
  [v.parseMagic, 'hex bytes (0x...)'],
  [v.parseTablespaceLimits, 'space-separated NAME:KBPS rules'],
  [v.parseAbsPath, 'absolute path'],
  [v.parsePathPrefix, 'colon-separated directories'],
  [v.parseString, 'string'],
]);

export function optionType(def: OptionDef): string {
  if (def.conninfo) return 'libpq connection string';
  if (def.shell) return 'shell command';
  const known = TYPE_WORDS.get(def.parse);
  if (known) return known;
  try {
    def.parse('\u0001');
    return 'string';
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    const oneOf = /expected one of: (.*)$/.exec(msg);
    if (oneOf) return `one of: ${oneOf[1]}`;
    const anyOf = /expected any of: (.*)\)$/.exec(msg);
    if (anyOf) return `comma-separated list of: ${anyOf[1]}`;
    return msg.replace(/^expected /, '');
  }
}

export function optionScope(def: OptionDef, globalOnly: boolean): string {
  if (globalOnly) return 'global only ([barman] section)';
  return def.scopes.map((s) => SCOPE_WORDS[s]).join(', ');
}

export function allOptions(): { def: OptionDef; globalOnly: boolean }[] {
  return [
    ...(GLOBAL_OPTIONS as readonly OptionDef[]).map((def) => ({ def, globalOnly: true })),
    ...(SERVER_OPTIONS as readonly OptionDef[]).map((def) => ({ def, globalOnly: false })),
  ].sort((a, b) => a.def.name.localeCompare(b.def.name));
}

/** barman(5): the configuration files, then every option of the table. */
export function configPage(ctx: PageContext): string {
  const page = new RoffPage('barman', '5', SOURCE, MANUAL, ctx.date);
  page.section('Name').raw('barman \\- configuration of barman\\-ts and Barman');
  page.section('Synopsis').raw(DEFAULT_CONFIG_LOCATIONS.map((f) => bold(f)).join('\n.br\n'));
  page.section('Description');
  page.paragraph(
    `barman-ts reads the configuration files of Barman ${VERSION} unchanged. The first file found among ${DEFAULT_CONFIG_LOCATIONS.join(', ')} is read, unless 'barman -c FILE' or the BARMAN_CONFIG_FILE environment variable names another.`,
  );
  page.paragraph(
    "The file is an INI file: a [barman] section for the global options, one section per PostgreSQL server (named after the server), and model sections (model = true). Lines starting with ';' or '#' are comments. Values may refer to other options of the same section as %(name)s (and to the server's name, barman_home and the directories), so a literal % must be written %%. An empty value, or None, means unset.",
  );
  page.paragraph(
    'configuration_files_directory names a directory whose *.conf files are read after the main file, in name order; they hold server and model sections, never [barman]. Barman ships examples there as *.conf-template files, which are not read.',
  );
  page.paragraph(
    'Scope: global options may be set in [barman], and every server inherits them unless its own section sets them; server options are set in the section of a server; model options may be set in a model section and are applied by config-switch. Options whose scope is "global only" are read from [barman] alone. An option that barman-ts does not know is reported (Invalid configuration option) and ignored.',
  );
  page.section('Options');
  for (const { def, globalOnly } of allOptions()) {
    const lines = [
      `Scope: ${optionScope(def, globalOnly)}.`,
      `Type: ${optionType(def)}.`,
      `Default: ${def.default === undefined ? 'unset' : def.default === '' ? 'empty' : def.default}.`,
    ];
    const doc = OPTION_DOCS[def.name];
    page.raw('.TP').raw(bold(def.name));
    if (doc) page.raw(esc(doc)).raw('.br');
    page.raw(lines.map(esc).join('\n.br\n'));
  }
  page.section('Example');
  page.raw('.RS 2').raw('.nf').raw(esc(sampleConfig(DEBIAN_ACTIVE).split('\n').filter((l) => !l.startsWith(';')).join('\n').trim()));
  page.raw(esc('\n[pg]\ndescription = "Main PostgreSQL server"\nconninfo = host=pg1 user=barman dbname=postgres\nstreaming_conninfo = host=pg1 user=streaming_barman\nbackup_method = postgres\nstreaming_archiver = on\nslot_name = barman\nretention_policy = RECOVERY WINDOW OF 7 DAYS'));
  page.raw('.fi').raw('.RE');
  seeAlso(page, 'barman(5)', ctx);
  return page.toString();
}

/** NAME(1) of an executable, from its `--help` output. */
export function clientPage(name: string, helpText: string, ctx: PageContext): string {
  const h = parseHelp(helpText);
  const page = new RoffPage(name, '1', SOURCE, MANUAL, ctx.date);
  // NAME holds one line for whatis/apropos: the first sentence of the description.
  const firstParagraph = (h.description.split(/\n\s*\n/)[0] ?? '').replace(/\s*\n\s*/g, ' ');
  const firstSentence = /^(.*?\.)(?:\s|$)/.exec(firstParagraph)?.[1] ?? firstParagraph;
  page.section('Name').raw(`${esc(name)} \\- ${esc(firstSentence.replace(/\.$/, '') || name)}`);
  page.section('Synopsis').raw(h.usage.startsWith(name) ? `${bold(name)}${esc(h.usage.slice(name.length))}` : esc(h.usage || name));
  page.section('Description');
  page.helpText(h.description);
  if (h.after) page.helpText(h.after);
  for (const s of h.sections) {
    page.section(s.title);
    items(page, s.items);
  }
  seeAlso(page, `${name}(1)`, ctx);
  return page.toString();
}

/** The settings a packaged installation makes active in /etc/barman.conf (as Barman's package does). */
export const DEBIAN_ACTIVE: readonly (readonly [string, string])[] = [
  ['barman_user', 'barman'],
  ['configuration_files_directory', '/etc/barman.d'],
  ['barman_home', '/var/lib/barman'],
  ['log_file', '/var/log/barman/barman.log'],
  ['log_level', 'INFO'],
];

/**
 * A commented barman.conf: the [barman] section with `active` settings, then every option that
 * may be set there, commented out, with its default.
 */
export function sampleConfig(active: readonly (readonly [string, string])[]): string {
  const activeNames = new Set(active.map(([k]) => k));
  const out = [
    '; barman.conf: configuration of barman-ts, also read by Barman (the same format).',
    '; Lines starting with ";" are comments. Every option, with its scope, type and default,',
    '; is described in barman(5): man 5 barman.',
    ';',
    '; Servers go in their own sections, usually one file per server in',
    '; configuration_files_directory (see the *.conf-template files there).',
    '',
    '[barman]',
  ];
  for (const [k, val] of active) {
    const doc = OPTION_DOCS[k];
    if (doc) out.push(`; ${doc}`);
    out.push(`${k} = ${val}`, '');
  }
  out.push('; Other options of this section, with their defaults. Options also valid in a server', '; section apply to every server that does not set them itself.');
  for (const { def } of allOptions()) {
    if (activeNames.has(def.name) || !def.scopes.includes('G')) continue;
    out.push(`;${def.name} = ${def.default ?? ''}`.trimEnd());
  }
  return `${out.join('\n')}\n`;
}
