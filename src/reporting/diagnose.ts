/**
 * `diagnose` (spec §4.4): one JSON document describing the installation for a support request —
 * global configuration (with its errors), system information, and per server its configuration,
 * configuration messages, status, backups and the last archived WAL of each timeline; models
 * too. Every string in it is password-redacted *before* it is serialised, since the document
 * is meant to be pasted into tickets.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import type { Config, GlobalConfig, ModelConfig, ServerConfig, ValueSource } from '../config/config.js';
import { GLOBAL_OPTIONS, SERVER_OPTIONS, type OptionDef } from '../config/options.js';
import type { BackupInfo, BackupInfoKey } from '../catalog/backup-info.js';
import { BACKUP_INFO_KEYS } from '../catalog/backup-info.js';
import { loadCatalog, type BackupEntry } from '../catalog/catalog.js';
import { pyToJs, type PyValue } from '../catalog/pyliteral.js';
import { readXlogDb, type XlogDbEntry } from '../catalog/xlogdb.js';
import { serverPaths } from '../catalog/server-dirs.js';
import { pathExistsSync } from '../util/fsutil.js';
import { findPgBinary } from '../postgres/binaries.js';
import { run } from '../util/proc.js';
import { PyDateTime, localNowPyDateTime } from '../util/pytime.js';
import { redact } from '../util/redact.js';
import { errorMessage } from '../util/errors.js';
import { BARMAN_TS_VERSION, VERSION } from '../version.js';
import { activeModel, configValueText, fetchPgFacts, serverStatusRows, type PgFacts } from './server-status.js';
import { walNameKind } from '../wal/names.js';

export interface DiagnoseOptions {
  showConfigSource?: boolean;
  /** Facts of each server's PostgreSQL (tests pass them to avoid connecting). */
  pgFacts?: (srv: ServerConfig) => Promise<PgFacts>;
  /** System information (tests pass a fixed one). */
  systemInfo?: () => Promise<Record<string, unknown>>;
  now?: () => PyDateTime;
}

// ---------------------------------------------------------------------------------------------
// Redaction

/** Every string of a JSON-able value passed through redact() (keys too: they are option names). */
export function redactDeep(value: unknown): unknown {
  if (typeof value === 'string') return redact(value);
  if (Array.isArray(value)) return value.map(redactDeep);
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[redact(k)] = redactDeep(v);
    return out;
  }
  return value;
}

/** Keys sorted at every level, as json.dumps(sort_keys=True). */
function sortDeep(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortDeep);
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value).sort()) out[k] = sortDeep((value as Record<string, unknown>)[k]);
    return out;
  }
  return value;
}

/** The document as printed: redacted, keys sorted, indent 4. */
export function formatDiagnosis(doc: unknown): string {
  return JSON.stringify(sortDeep(redactDeep(doc)), null, 4);
}

// ---------------------------------------------------------------------------------------------
// Configuration

/** JSON value of an option: plain types as they are, structured ones (policies, lists) as text. */
function optionJson(key: string, value: unknown): unknown {
  if (value === null || value === undefined) return null;
  if (typeof value === 'boolean') return value;
  const text = configValueText(key, value);
  // Numbers that Barman shows differently (intervals) keep their text.
  if (typeof value === 'number' && text === String(value)) return value;
  return text;
}

function sourceText(src: ValueSource | undefined): string {
  if (!src || src === 'default') return 'default';
  return src.file;
}

function configJson(
  defs: readonly OptionDef[],
  values: Readonly<Record<string, unknown>>,
  sources: Readonly<Record<string, ValueSource>> | undefined,
  showSource: boolean,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const def of defs) {
    if (!(def.name in values)) continue;
    const v = optionJson(def.name, values[def.name]);
    out[def.name] = showSource ? { value: v, source: sourceText(sources?.[def.name]) } : v;
  }
  return out;
}

const asRecord = (o: object): Readonly<Record<string, unknown>> => o as unknown as Record<string, unknown>; // option values are keyed by option name

export function globalConfigJson(global: GlobalConfig, showSource = false): Record<string, unknown> {
  return configJson(GLOBAL_OPTIONS as readonly OptionDef[], asRecord(global), global.sources, showSource);
}

export function serverConfigJson(srv: ServerConfig, showSource = false): Record<string, unknown> {
  const out = configJson(SERVER_OPTIONS as readonly OptionDef[], asRecord(srv), srv.sources, showSource);
  const extra = (key: string, value: unknown) => (out[key] = showSource ? { value, source: 'default' } : value);
  extra('name', srv.name);
  extra('disabled', srv.disabled);
  extra('passive_node', srv.passive);
  return out;
}

function modelConfigJson(model: ModelConfig, showSource: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(model.values)) {
    const j = optionJson(k, v);
    // Model values come from the model section, which is the only place they can be set.
    out[k] = showSource ? { value: j, source: 'model' } : j;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Catalog

/** A backup as Barman's JSON encoder shows it: typed values, ctime() for begin/end time. */
export function backupJson(id: string, info: BackupInfo): Record<string, unknown> {
  const out: Record<string, unknown> = { backup_id: id };
  for (const key of BACKUP_INFO_KEYS as readonly BackupInfoKey[]) {
    const v: unknown = info[key];
    if (v instanceof PyDateTime) out[key] = v.ctime();
    else if (key === 'tablespaces' && Array.isArray(v)) out[key] = (v as BackupInfo['tablespaces'] & object).map((t) => [t.name, t.oid, t.location]);
    else if (key === 'copy_stats' || key === 'included_files' || key === 'snapshots_info') out[key] = v === null ? null : pyToJs(v as PyValue);
    else out[key] = v ?? null;
  }
  return out;
}

function walJson(e: XlogDbEntry): Record<string, unknown> {
  return { name: e.name, size: e.size, time: e.time, compression: e.compression, encryption: e.encryption };
}

/** The last archived WAL segment of each timeline (key: 8 hex digits), from xlog.db. */
export function lastArchivedWalPerTimeline(entries: readonly XlogDbEntry[]): Record<string, Record<string, unknown>> {
  const out: Record<string, Record<string, unknown>> = {};
  for (const e of entries) {
    if (walNameKind(e.name) !== 'segment') continue;
    const tli = e.name.slice(0, 8);
    const prev = out[tli];
    if (!prev || String(prev.name) < e.name) out[tli] = walJson(e);
  }
  return out;
}

async function serverWals(srv: ServerConfig): Promise<Record<string, unknown>> {
  const p = serverPaths(srv);
  // Do not create a catalog for a server that never archived anything.
  try {
    if (!pathExistsSync(p.xlogdbFile) && !pathExistsSync(p.xlogdbFileNew) && !pathExistsSync(p.walsDir)) {
      return { last_archived_wal_per_timeline: {} };
    }
    return { last_archived_wal_per_timeline: lastArchivedWalPerTimeline(await readXlogDb(srv)) };
  } catch (err) {
    return { last_archived_wal_per_timeline: {}, error: errorMessage(err) };
  }
}

async function serverBackups(srv: ServerConfig): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  let entries: BackupEntry[];
  try {
    entries = await loadCatalog(srv);
  } catch (err) {
    return { error: errorMessage(err) };
  }
  for (const e of entries) out[e.id] = backupJson(e.id, e.info);
  return out;
}

// ---------------------------------------------------------------------------------------------
// System

async function firstLine(cmd: string, args: string[], stderr = false): Promise<string | null> {
  try {
    const r = await run(cmd, args, { timeoutMs: 10_000 });
    const text = (stderr ? r.stderr || r.stdout : r.stdout || r.stderr).trim();
    return r.code === 0 && text ? (text.split('\n')[0] ?? null) : null;
  } catch {
    return null;
  }
}

function osRelease(): string | null {
  try {
    const text = fs.readFileSync('/etc/os-release', 'utf8');
    const m = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(text);
    return m?.[1] ?? null;
  } catch {
    return null;
  }
}

async function pgClientVersion(name: string, pathPrefix: string | null): Promise<string | null> {
  try {
    return await firstLine(findPgBinary(name, pathPrefix), ['--version']);
  } catch {
    return null;
  }
}

/** What Barman's get_system_info gives, with Node instead of Python. */
export async function systemInfo(pathPrefix: string | null = null): Promise<Record<string, unknown>> {
  return {
    release: osRelease() ?? `${os.type()} ${os.release()}`,
    kernel_ver: `${os.type()} ${os.release()} ${os.arch()}`,
    node_ver: process.version,
    node_executable: process.execPath,
    rsync_ver: await firstLine('rsync', ['--version']),
    ssh_ver: await firstLine('ssh', ['-V'], true),
    pg_basebackup_ver: await pgClientVersion('pg_basebackup', pathPrefix),
    pg_receivewal_ver: await pgClientVersion('pg_receivewal', pathPrefix),
  };
}

// ---------------------------------------------------------------------------------------------

/** The whole document (not yet redacted: formatDiagnosis does it). */
export async function buildDiagnosis(cfg: Config, opts: DiagnoseOptions = {}): Promise<Record<string, unknown>> {
  const show = opts.showConfigSource === true;
  const now = opts.now ?? localNowPyDateTime;
  const globalConfig = globalConfigJson(cfg.global, show);
  globalConfig.errors_list = [...cfg.errors];
  const sys = { ...(await (opts.systemInfo ?? (() => systemInfo(null)))()) };
  sys.barman_ver = VERSION;
  sys.barman_ts_ver = BARMAN_TS_VERSION;
  sys.timestamp = now().isoformat();

  const servers: Record<string, unknown> = {};
  for (const name of [...cfg.servers.keys()].sort()) {
    const srv = cfg.servers.get(name)!;
    const facts = srv.passive ? { error: 'passive node' } : await (opts.pgFacts ?? fetchPgFacts)(srv);
    const status: Record<string, unknown> = {};
    for (const r of await serverStatusRows(srv, facts)) status[r.key] = r.message;
    if (facts.error) status.connection_error = facts.error;
    servers[name] = {
      config: serverConfigJson(srv, show),
      msg_list: [...srv.errors, ...srv.warnings],
      active_model: activeModel(srv),
      status,
      backups: await serverBackups(srv),
      wals: await serverWals(srv),
    };
  }
  const models: Record<string, unknown> = {};
  for (const name of [...cfg.models.keys()].sort()) models[name] = { config: modelConfigJson(cfg.models.get(name)!, show) };
  return { global: { config: globalConfig, system_info: sys }, servers, models };
}
