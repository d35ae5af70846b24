/**
 * Configuration loading: find the main file, read it and `configuration_files_directory`
 * includes with ConfigParser rules, then resolve each server's options through the option table
 * ([server] value → [barman] value for inheritable options → default).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BarmanError } from '../util/errors.js';
import { IniDocument, interpolate, parseIni, stripQuotes, type IniValue } from './ini.js';
import {
  GLOBAL_OPTIONS,
  GLOBAL_OPTION_MAP,
  SERVER_OPTIONS,
  SERVER_OPTION_MAP,
  type GlobalOptionValues,
  type OptionDef,
  type ServerOptionValues,
} from './options.js';

export const DEFAULT_CONFIG_LOCATIONS = ['~/.barman.conf', '/etc/barman.conf', '/etc/barman/barman.conf'];
const RESERVED_SECTIONS = new Set(['all']);
const GLOBAL_SECTION = 'barman';

/** Where a value came from: a file and line, or the built-in default. */
export type ValueSource = { file: string; line: number } | 'default';

export interface ServerConfig extends Readonly<ServerOptionValues> {
  readonly name: string;
  readonly global: GlobalConfig;
  /** Problems that disable the server (bad values, conflicting paths). */
  readonly errors: string[];
  readonly warnings: string[];
  readonly sources: Readonly<Record<string, ValueSource>>;
  /** Keys set explicitly in the configuration (for show-servers / diagnose). */
  readonly disabled: boolean;
  readonly passive: boolean;
}

export interface GlobalConfig extends Readonly<GlobalOptionValues> {
  readonly barman_home: string;
  readonly configFile: string;
  readonly sources: Readonly<Record<string, ValueSource>>;
}

export interface ModelConfig {
  readonly name: string;
  readonly cluster: string | null;
  readonly values: Readonly<Record<string, unknown>>;
}

export interface Config {
  readonly configFile: string;
  readonly global: GlobalConfig;
  /** Servers in the order their sections appear. */
  readonly servers: ReadonlyMap<string, ServerConfig>;
  readonly models: ReadonlyMap<string, ModelConfig>;
  /** Warnings to show once (unknown options, deprecated settings). */
  readonly warnings: string[];
  /** Errors that concern the whole installation (conflicting paths across servers). */
  readonly errors: string[];
}

function expandHome(p: string): string {
  return p.startsWith('~/') ? path.join(os.homedir(), p.slice(2)) : p;
}

/** Locate the main configuration file as Barman does. */
export function findConfigFile(explicit?: string): string {
  const chosen = explicit ?? process.env.BARMAN_CONFIG_FILE;
  if (chosen) {
    const p = expandHome(chosen);
    if (!fs.existsSync(p)) throw new BarmanError(`Could not find configuration file '${p}'`);
    return p;
  }
  for (const cand of DEFAULT_CONFIG_LOCATIONS) {
    const p = expandHome(cand);
    if (fs.existsSync(p)) return p;
  }
  throw new BarmanError('Could not find any configuration file at default locations.');
}

function readIni(file: string): IniDocument {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new BarmanError(`Cannot read configuration file '${file}': ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  return parseIni(text, file);
}

function where(iv: IniValue, section: string, key: string): string {
  return `${iv.file}:${iv.line}: [${section}] ${key}`;
}

/** ConfigParser value post-processing: quotes stripped; empty or `None` means unset. */
function cleanValue(text: string): string | null {
  const s = stripQuotes(text);
  return s === '' || s === 'None' ? null : s;
}

export function loadConfig(explicitFile?: string): Config {
  const configFile = findConfigFile(explicitFile);
  const doc = readIni(configFile);
  const warnings: string[] = [];
  const errors: string[] = [];

  if (!doc.section(GLOBAL_SECTION)) {
    throw new BarmanError(`${configFile}: missing [barman] section`);
  }
  // Includes: every *.conf of configuration_files_directory, sorted by name.
  const includeRaw = doc.raw(GLOBAL_SECTION, 'configuration_files_directory');
  if (includeRaw) {
    const dir = cleanValue(interpolate(includeRaw.value, (k) => doc.raw(GLOBAL_SECTION, k)?.value, where(includeRaw, GLOBAL_SECTION, 'configuration_files_directory')));
    if (dir) {
      const abs = expandHome(dir);
      let names: string[] = [];
      try {
        names = fs.readdirSync(abs).filter((n) => n.endsWith('.conf')).sort();
      } catch {
        warnings.push(`Ignoring the mandatory configuration directory '${abs}' because it does not exist or cannot be read`);
      }
      for (const n of names) {
        const file = path.join(abs, n);
        if (!fs.statSync(file).isFile()) continue;
        const inc = readIni(file);
        const g = inc.section(GLOBAL_SECTION);
        if (g && g.size > 0) {
          throw new BarmanError(`the configuration file ${file} contains a not empty [barman] section`);
        }
        inc.sections.delete(GLOBAL_SECTION);
        doc.merge(inc);
      }
    }
  }

  // As Barman: [barman] may hold the global options and every server option (inherited or not).
  for (const key of doc.section(GLOBAL_SECTION)?.keys() ?? []) {
    if (!GLOBAL_OPTION_MAP.has(key) && !SERVER_OPTION_MAP.has(key)) warnings.push(`Invalid configuration option "${key}" in [${GLOBAL_SECTION}] section.`);
  }
  const global = resolveGlobal(doc, configFile, warnings);
  const autoConf = path.join(global.barman_home, '.barman.auto.conf');
  if (fs.existsSync(autoConf)) doc.merge(readIni(autoConf));

  const servers = new Map<string, ServerConfig>();
  const models = new Map<string, ModelConfig>();
  for (const [name, sec] of doc.sections) {
    if (name === GLOBAL_SECTION) continue;
    if (RESERVED_SECTIONS.has(name)) {
      const origin = doc.sectionOrigins.get(name);
      throw new BarmanError(`${origin ? `${origin.file}:${origin.line}: ` : ''}'${name}' is a reserved word and cannot be used as a server name`);
    }
    const isModel = sec.get('model');
    if (isModel && /^(true|t|yes|1|on)$/i.test(stripQuotes(isModel.value))) {
      models.set(name, resolveModel(doc, name));
      continue;
    }
    servers.set(name, resolveServer(doc, name, global, warnings));
  }
  checkPathConflicts(servers, errors);
  return { configFile, global, servers, models, warnings, errors };
}

function parseWith(def: OptionDef, text: string, whereText: string): unknown {
  try {
    return def.parse(text);
  } catch (err) {
    throw new BarmanError(`${whereText}: invalid value '${text}': ${(err as Error).message}`);
  }
}

/**
 * [barman] values. A bad value there would stop every command, cron included, and with it WAL
 * archiving of every server: it is reported (file and line) and the default is used instead.
 * Only a missing or bad barman_home is fatal.
 */
function resolveGlobal(doc: IniDocument, configFile: string, warnings: string[]): GlobalConfig {
  const values: Record<string, unknown> = {};
  const sources: Record<string, ValueSource> = {};
  const lookup = (k: string): string | undefined => {
    const iv = doc.raw(GLOBAL_SECTION, k);
    return iv?.value;
  };
  for (const def of GLOBAL_OPTIONS as readonly OptionDef[]) {
    const iv = doc.raw(GLOBAL_SECTION, def.name);
    let text: string | null = null;
    let src: ValueSource = 'default';
    const fallback = () => defaultValue(def, (k) => (values[k] === undefined || values[k] === null ? undefined : String(values[k])));
    let value: unknown = null;
    try {
      if (iv) {
        const w = where(iv, GLOBAL_SECTION, def.name);
        text = cleanValue(interpolate(iv.value, lookup, w));
        src = { file: iv.file, line: iv.line };
        if (text !== null) value = parseWith(def, text, w);
      }
    } catch (err) {
      if (def.name === 'barman_home') throw err;
      warnings.push(`${(err as Error).message} (using the default instead)`);
      text = null;
    }
    if (value === null) {
      value = fallback();
      if (text === null) src = 'default';
    }
    values[def.name] = value;
    sources[def.name] = src;
  }
  if (!values.barman_home) {
    throw new BarmanError(`${configFile}: the [barman] section must set barman_home`);
  }
  return { ...(values as unknown as GlobalOptionValues), barman_home: values.barman_home as string, configFile, sources };
}

function resolveServer(doc: IniDocument, name: string, global: GlobalConfig, configWarnings: string[]): ServerConfig {
  const errors: string[] = [];
  const warnings: string[] = [];
  const values: Record<string, unknown> = {};
  const sources: Record<string, ValueSource> = {};
  const sec = doc.section(name) ?? new Map<string, IniValue>();

  for (const key of sec.keys()) {
    if (!SERVER_OPTION_MAP.has(key) && !GLOBAL_OPTION_MAP.has(key)) {
      configWarnings.push(`Invalid configuration option "${key}" in [${name}] section.`);
    } else if (GLOBAL_OPTION_MAP.has(key) && !SERVER_OPTION_MAP.has(key)) {
      configWarnings.push(`Invalid configuration option "${key}" in [${name}] section (it may only be set in [barman]).`);
    }
  }

  // Interpolation variables: section keys, [DEFAULT], then server attributes resolved so far.
  const attrs = new Map<string, string>([
    ['name', name],
    ['barman_home', global.barman_home],
  ]);
  const lookupIn = (section: string) => (k: string): string | undefined => attrs.get(k) ?? doc.raw(section, k)?.value;

  for (const def of SERVER_OPTIONS as readonly OptionDef[]) {
    const own = sec.get(def.name) ?? (def.name !== 'model' ? doc.defaults.get(def.name) : undefined);
    let chosen: { iv: IniValue; section: string } | null = own ? { iv: own, section: name } : null;
    let blockedByEmpty = false;
    if (own && cleanValue(own.value) === null) {
      // An explicitly empty server value is "unset" and also blocks inheritance.
      chosen = null;
      blockedByEmpty = true;
    }
    if (!chosen && !blockedByEmpty && def.scopes.includes('G')) {
      const g = doc.section(GLOBAL_SECTION)?.get(def.name);
      if (g) chosen = { iv: g, section: GLOBAL_SECTION };
    }
    let value: unknown = null;
    let src: ValueSource = 'default';
    try {
      if (chosen) {
        const w = where(chosen.iv, chosen.section, def.name);
        const text = cleanValue(interpolate(chosen.iv.value, lookupIn(chosen.section), w));
        if (text !== null) value = parseWith(def, text, w);
        src = { file: chosen.iv.file, line: chosen.iv.line };
      }
      if (value === null && def.default !== undefined) {
        // A default that refers to an unset option (streaming_conninfo = %(conninfo)s on a
        // passive node) is simply unset too.
        value = defaultValue(def, (k) => attrs.get(k) ?? doc.raw(name, k)?.value);
        src = 'default';
      }
    } catch (err) {
      errors.push((err as Error).message);
      value = defaultValue(def, (k) => attrs.get(k));
    }
    values[def.name] = value;
    sources[def.name] = src;
    if (value !== null && value !== undefined && typeof value !== 'object') attrs.set(def.name, String(value));
  }

  applyConsistencyRules(name, values, errors, warnings);
  const passive = values.primary_ssh_command !== null;
  return {
    ...(values as unknown as ServerOptionValues),
    name,
    global,
    errors,
    warnings,
    sources,
    disabled: errors.length > 0,
    passive,
  };
}

function defaultValue(def: OptionDef, lookup: (k: string) => string | undefined): unknown {
  if (def.default === undefined) return null;
  try {
    return def.parse(interpolate(def.default, lookup, def.name));
  } catch {
    return null;
  }
}

/** Cross-option rules that Barman enforces when building a server. */
function applyConsistencyRules(name: string, values: Record<string, unknown>, errors: string[], warnings: string[]): void {
  if (!values.archiver && !values.streaming_archiver) {
    values.archiver = true;
    warnings.push(`No archiver enabled for server '${name}'. Please turn on 'archiver', 'streaming_archiver' or both`);
    warnings.push("Forcing 'archiver = on'");
  }
  if (values.streaming_archiver && !values.archiver && !values.slot_name) {
    errors.push("Streaming-only archiver requires 'streaming_conninfo' and 'slot_name' options to be properly configured");
  }
  const opts = (values.backup_options as string[] | null) ?? [];
  if (opts.includes('concurrent_backup') && opts.includes('exclusive_backup')) {
    errors.push("backup_options: 'concurrent_backup' and 'exclusive_backup' are mutually exclusive");
  }
  if (!values.conninfo && values.primary_ssh_command === null) {
    errors.push("'conninfo': required parameter not set");
  }
  if (values.backup_method === 'rsync' && !values.ssh_command && values.primary_ssh_command === null) {
    errors.push("'ssh_command': required parameter not set for backup_method = rsync");
  }
  if (values.backup_method === 'local-rsync' && values.ssh_command) {
    errors.push("'ssh_command' must not be set with backup_method = local-rsync");
  }
}

const PATH_KEYS = [
  'backup_directory',
  'basebackups_directory',
  'errors_directory',
  'incoming_wals_directory',
  'streaming_wals_directory',
  'wals_directory',
] as const;

function checkPathConflicts(servers: Map<string, ServerConfig>, errors: string[]): void {
  const seen = new Map<string, string>();
  for (const srv of servers.values()) {
    const mine = new Map<string, string>();
    for (const key of PATH_KEYS) {
      const p = path.resolve(srv[key]);
      const dupLocal = mine.get(p);
      if (dupLocal) {
        srv.errors.push(`Conflicting path: ${key}=${p} for server '${srv.name}': ${dupLocal} uses the same path`);
        continue;
      }
      mine.set(p, key);
      const other = seen.get(p);
      if (other) errors.push(`Conflicting path: ${key}=${p} for server '${srv.name}': ${other} uses the same path`);
      else seen.set(p, `${key} of server '${srv.name}'`);
    }
    if (srv.errors.length > 0) (srv as { disabled: boolean }).disabled = true;
  }
}

function resolveModel(doc: IniDocument, name: string): ModelConfig {
  const values: Record<string, unknown> = {};
  for (const [k, iv] of doc.section(name) ?? []) {
    const def = SERVER_OPTION_MAP.get(k);
    const text = cleanValue(iv.value);
    if (!def || text === null) continue;
    if (!def.scopes.includes('M')) continue;
    values[k] = parseWith(def, text, where(iv, name, k));
  }
  return { name, cluster: (values.cluster as string | undefined) ?? null, values };
}
