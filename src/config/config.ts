/**
 * Configuration loading: find the main file, read it and `configuration_files_directory`
 * includes with ConfigParser rules, then resolve each server's options through the option table
 * ([server] value → [barman] value for inheritable options → default).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BarmanError, errorMessage } from '../util/errors.js';
import { isNotFound } from '../util/fsutil.js';
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
import { ineffectiveSettings, unsupportedSettings } from './support.js';

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
  /** The options the model sets (model and cluster excluded), parsed. */
  readonly values: Readonly<Record<string, unknown>>;
  readonly sources: Readonly<Record<string, ValueSource>>;
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
  /**
   * Where each option of each section was last set (file, line) and its raw text: the files
   * `config-update` edits. A section's option not set there is not listed.
   */
  readonly rawSections: ReadonlyMap<string, ReadonlyMap<string, IniValue>>;
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

/**
 * Whether `.barman.auto.conf` (config-switch) is there. Only "not found" is absent, except for
 * a user other than barman_user, who may not look into barman_home at all (PostgreSQL running
 * get-wal as its own user; any other command is refused by the user check that comes next):
 * for them, as for Barman, a file they cannot see is not read.
 */
function autoConfPresent(file: string, barmanUser: string): boolean {
  try {
    fs.lstatSync(file);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    if ((err as NodeJS.ErrnoException).code === 'EACCES' && os.userInfo().username !== barmanUser) return false;
    throw new BarmanError(`cannot access ${file}: ${errorMessage(err)}`);
  }
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
      } catch (err) {
        // Missing: Barman's warning. Unreadable: the servers defined there would silently
        // vanish (cron would stop archiving them), so it is an error.
        if (!isNotFound(err)) throw new BarmanError(`Cannot read the configuration directory '${abs}': ${errorMessage(err)}`);
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

  const global = resolveGlobal(doc, configFile, warnings);
  const autoConf = path.join(global.barman_home, '.barman.auto.conf');
  if (autoConfPresent(autoConf, global.barman_user)) doc.merge(readIni(autoConf));

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
      models.set(name, resolveModel(doc, name, warnings, errors));
      continue;
    }
    servers.set(name, resolveServer(doc, name, global, warnings));
  }
  for (const [name, srv] of servers) servers.set(name, applyActiveModel(srv, models, warnings));
  checkPathConflicts(servers, errors);
  for (const srv of servers.values()) {
    for (const u of unsupportedSettings(srv)) warnings.push(`[${srv.name}] ${u.message}`);
    for (const w of ineffectiveSettings(srv)) warnings.push(`[${srv.name}] ${w}`);
  }
  return { configFile, global, servers, models, warnings, errors, rawSections: doc.sections };
}

const INVALID = Symbol('invalid value');

/**
 * Parse a server option's value; a value that does not parse is reported in Barman's words
 * (`Ignoring invalid configuration value 'x' for key k in [s] section: why`, with the file and
 * line) and ignored.
 */
function parseOrWarn(def: OptionDef, text: string, section: string, iv: IniValue, warnings: string[]): unknown {
  try {
    return def.parse(text);
  } catch (err) {
    warnings.push(`Ignoring invalid configuration value '${text}' for key ${def.name} in [${section}] section: ${(err as Error).message} (${iv.file}:${iv.line})`);
    return INVALID;
  }
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
      // A value that does not parse is ignored with a warning, as Barman does: the server takes
      // the [barman] value of an inheritable option, else the default (one bad option must not
      // stop every command of the server, cron's WAL archiving included).
      const candidates = chosen ? [chosen] : [];
      if (chosen && chosen.section !== GLOBAL_SECTION && def.scopes.includes('G')) {
        const g = doc.section(GLOBAL_SECTION)?.get(def.name);
        if (g) candidates.push({ iv: g, section: GLOBAL_SECTION });
      }
      for (const c of candidates) {
        const w = where(c.iv, c.section, def.name);
        const text = cleanValue(interpolate(c.iv.value, lookupIn(c.section), w));
        if (text === null) break;
        const parsed = parseOrWarn(def, text, c.section, c.iv, configWarnings);
        if (parsed === INVALID) continue;
        value = parsed;
        src = { file: c.iv.file, line: c.iv.line };
        break;
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

/**
 * A model section (`model = true`): the server options it may set (no directories, no hook
 * scripts), interpolated and parsed like a server's. An option a model may not set, or a bad
 * value, is a warning and is left out; a model without `cluster` is an error of the whole
 * configuration, as in Barman.
 */
function resolveModel(doc: IniDocument, name: string, warnings: string[], errors: string[]): ModelConfig {
  const values: Record<string, unknown> = {};
  const sources: Record<string, ValueSource> = {};
  const lookup = (k: string): string | undefined => doc.raw(name, k)?.value;
  let cluster: string | null = null;
  for (const [k, iv] of doc.section(name) ?? []) {
    const def = SERVER_OPTION_MAP.get(k);
    if (!def || !def.scopes.includes('M')) {
      warnings.push(`Invalid configuration option "${k}" in [${name}] section.`);
      continue;
    }
    if (k === 'model') continue;
    try {
      const w = where(iv, name, k);
      const text = cleanValue(interpolate(iv.value, lookup, w));
      if (text === null) continue;
      const value = parseWith(def, text, w);
      if (k === 'cluster') cluster = value as string;
      else {
        values[k] = value;
        sources[k] = { file: iv.file, line: iv.line };
      }
    } catch (err) {
      warnings.push(`${(err as Error).message} (ignored: model '${name}' does not set ${k})`);
    }
  }
  if (cluster === null) errors.push(`Parameter "cluster" is required in [${name}] section.`);
  return { name, cluster, values, sources };
}

/** `<backup_directory>/.active-model.auto`: the model `config-switch` applied to a server. */
export function activeModelFile(srv: Pick<ServerConfig, 'backup_directory'>): string {
  return path.join(srv.backup_directory, '.active-model.auto');
}

/** The name in a server's `.active-model.auto`, or null (absent, empty). */
export function readActiveModel(srv: Pick<ServerConfig, 'backup_directory'>): string | null {
  try {
    const text = fs.readFileSync(activeModelFile(srv), 'utf8').trim();
    return text === '' ? null : text;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new BarmanError(`cannot read ${activeModelFile(srv)}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/**
 * The server with the options of its active model (`config-switch`) put over its own, as
 * Barman does when it loads the configuration: the model's values replace the server's as they
 * are (defaults computed from the server's own values are not recomputed). A model that no
 * longer exists disables the server; a model of another cluster is not applied (an error is
 * shown on every command until it is fixed).
 */
function applyActiveModel(srv: ServerConfig, models: ReadonlyMap<string, ModelConfig>, warnings: string[]): ServerConfig {
  let name: string | null;
  try {
    name = readActiveModel(srv);
  } catch (err) {
    warnings.push((err as Error).message);
    return srv;
  }
  if (name === null) return srv;
  const model = models.get(name);
  if (!model) {
    const errors = [...srv.errors, `Model '${name}' is set as the active model for the server '${srv.name}' but the model does not exist.`];
    return { ...srv, errors, disabled: true };
  }
  if (model.cluster !== srv.cluster) {
    warnings.push(modelClusterMismatch(model, srv));
    return srv;
  }
  return withModel(srv, model);
}

export function modelClusterMismatch(model: ModelConfig, srv: Pick<ServerConfig, 'name' | 'cluster'>): string {
  return `Model '${model.name}' has 'cluster=${model.cluster ?? 'None'}', which is not compatible with 'cluster=${srv.cluster}' from server '${srv.name}'`;
}

/** `srv` with `model`'s values put over its own (sources point at the model section). */
export function withModel(srv: ServerConfig, model: ModelConfig): ServerConfig {
  const passive = (model.values.primary_ssh_command ?? srv.primary_ssh_command) !== null;
  return { ...srv, ...(model.values as Partial<ServerOptionValues>), sources: { ...srv.sources, ...model.sources }, passive };
}
