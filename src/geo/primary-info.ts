/**
 * The passive node's view of its primary (spec §10): `sync-info` run on the primary through
 * `primary_ssh_command`, checked, and kept in `<backup_directory>/primary.info` (replaced
 * atomically, so `sync-backup` and `sync-wals` always read one whole answer); and
 * `<wals_directory>/sync-wals.info` (`<last_wal>\t<last_position>`), how far `sync-wals` got in
 * the primary's xlog.db.
 *
 * Everything in the answer comes from another host: names become paths here, so backup IDs and
 * WAL names are checked before anything uses them, and an answer that is cut or malformed is
 * refused whole (the previous primary.info stays).
 */
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { BACKUP_ID_RE } from '../catalog/backup-info.js';
import { ensureServerDirs } from '../catalog/server-dirs.js';
import { subprocessEnv } from '../postgres/binaries.js';
import { BarmanError, errorMessage, lastLine } from '../util/errors.js';
import { writeFileAtomic } from '../util/fsutil.js';
import { logger } from '../util/log.js';
import { run } from '../util/proc.js';
import { sshInvocation } from '../util/ssh-command.js';
import { walNameKind } from '../wal/names.js';

const log = logger('sync');

export const PRIMARY_INFO_FILE = 'primary.info';
export const SYNC_WALS_INFO_FILE = 'sync-wals.info';

/** A WAL file in the primary's answer (one xlog.db line). */
export interface PrimaryWal {
  name: string;
  size: number | null;
  time: number | null;
  compression: string | null;
  encryption: string | null;
}

/** A backup in the primary's answer: backup.info fields as Barman's to_json gives them. */
export type PrimaryBackup = Readonly<Record<string, unknown>> & { readonly status: string };

export interface PrimaryConfig {
  readonly name: string;
  readonly basebackups_directory: string;
  readonly wals_directory: string;
  readonly compression: string | null;
  readonly [key: string]: unknown;
}

export interface PrimaryInfo {
  last_position: number;
  last_name: string;
  backups: Readonly<Record<string, PrimaryBackup>>;
  wals: readonly PrimaryWal[];
  version: string;
  config: PrimaryConfig;
}

export interface SyncWalsInfo {
  lastWal: string | null;
  lastPosition: number | null;
}

// ---------------------------------------------------------------------------------------------
// Validation

type Json = unknown;
const isObject = (v: Json): v is Record<string, Json> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: Json): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

function safeWalName(v: Json, where: string): string {
  if (typeof v !== 'string' || walNameKind(v) === null) throw new Error(`${where}: not a WAL file name: ${JSON.stringify(v)}`);
  return v;
}

function absPath(v: Json, where: string): string {
  if (typeof v !== 'string' || !v.startsWith('/') || /[\0\n]/.test(v)) throw new Error(`${where}: not an absolute path: ${JSON.stringify(v)}`);
  return v.replace(/\/+$/, '') || '/';
}

function optString(v: Json, where: string): string | null {
  if (v === null || v === undefined) return null;
  if (typeof v !== 'string') throw new Error(`${where}: not a string`);
  return v;
}

function parseWal(v: Json, i: number): PrimaryWal {
  const where = `wals[${i}]`;
  if (!isObject(v)) throw new Error(`${where}: not an object`);
  const size = v.size ?? null;
  const time = v.time ?? null;
  if (size !== null && !isCount(size)) throw new Error(`${where}: bad size`);
  if (time !== null && (typeof time !== 'number' || !Number.isFinite(time))) throw new Error(`${where}: bad time`);
  return {
    name: safeWalName(v.name, where),
    size,
    time,
    compression: optString(v.compression, `${where}.compression`),
    encryption: optString(v.encryption, `${where}.encryption`),
  };
}

/**
 * The primary's answer, checked (throws a plain Error saying what is wrong): positions,
 * backup IDs, WAL names, the directories and compression of its configuration.
 */
export function parsePrimaryInfo(text: string): PrimaryInfo {
  let doc: Json;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new Error(`not JSON (${errorMessage(err)})`);
  }
  if (!isObject(doc)) throw new Error('not a JSON object');
  if (!isCount(doc.last_position)) throw new Error('last_position: not a byte offset');
  if (typeof doc.last_name !== 'string') throw new Error('last_name: not a string');
  if (doc.last_name !== '') safeWalName(doc.last_name, 'last_name');
  if (!isObject(doc.backups)) throw new Error('backups: not an object');
  for (const [id, b] of Object.entries(doc.backups)) {
    if (!BACKUP_ID_RE.test(id)) throw new Error(`backups: not a backup ID: ${JSON.stringify(id)}`);
    if (!isObject(b) || typeof b.status !== 'string') throw new Error(`backups.${id}: not a backup`);
  }
  if (!Array.isArray(doc.wals)) throw new Error('wals: not a list');
  const wals = doc.wals.map(parseWal);
  if (typeof doc.version !== 'string') throw new Error('version: not a string');
  const cfg = doc.config;
  if (!isObject(cfg)) throw new Error('config: not an object');
  if (typeof cfg.name !== 'string') throw new Error('config.name: not a string');
  const config: PrimaryConfig = {
    ...cfg,
    name: cfg.name,
    basebackups_directory: absPath(cfg.basebackups_directory, 'config.basebackups_directory'),
    wals_directory: absPath(cfg.wals_directory, 'config.wals_directory'),
    compression: optString(cfg.compression, 'config.compression'),
  };
  return {
    last_position: doc.last_position,
    last_name: doc.last_name,
    backups: doc.backups as Record<string, PrimaryBackup>,
    wals,
    version: doc.version,
    config,
  };
}

// ---------------------------------------------------------------------------------------------
// Files

export function primaryInfoPath(srv: ServerConfig): string {
  return path.join(srv.backup_directory, PRIMARY_INFO_FILE);
}

export function syncWalsInfoPath(srv: ServerConfig): string {
  return path.join(srv.wals_directory, SYNC_WALS_INFO_FILE);
}

/** primary.info as saved by the last successful `sync-info --primary` (cron does it). */
export async function loadPrimaryInfo(srv: ServerConfig): Promise<PrimaryInfo> {
  const file = primaryInfoPath(srv);
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    throw new BarmanError(`Cannot open ${PRIMARY_INFO_FILE} file for server ${srv.name}: ${errorMessage(err)}`);
  }
  try {
    return parsePrimaryInfo(text);
  } catch (err) {
    throw new BarmanError(`Invalid ${PRIMARY_INFO_FILE} file for server ${srv.name} (${file}): ${errorMessage(err)}`);
  }
}

/** When primary.info was last written (the last successful contact), or null without one. */
export function primaryInfoTime(srv: ServerConfig): Date | null {
  try {
    return fs.statSync(primaryInfoPath(srv)).mtime;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new BarmanError(`cannot read ${primaryInfoPath(srv)}: ${errorMessage(err)}`);
  }
}

/** `<last_wal>\t<last_position>` of the last `sync-wals`; nulls when there was none. */
export function readSyncWalsInfo(srv: ServerConfig): SyncWalsInfo {
  const file = syncWalsInfoPath(srv);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { lastWal: null, lastPosition: null };
    throw new BarmanError(`Cannot open ${SYNC_WALS_INFO_FILE} file for server ${srv.name}: ${errorMessage(err)}`);
  }
  const [wal = '', pos = ''] = (text.split('\n')[0] ?? '').split('\t');
  const lastWal = wal.trim() === '' ? null : wal.trim();
  if (lastWal !== null && walNameKind(lastWal) === null) {
    throw new BarmanError(`Invalid ${SYNC_WALS_INFO_FILE} file for server ${srv.name}: '${lastWal}' is not a WAL file name`);
  }
  const n = Number(pos.trim());
  return { lastWal, lastPosition: lastWal !== null && pos.trim() !== '' && Number.isSafeInteger(n) && n >= 0 ? n : null };
}

/** Record how far `sync-wals` got (atomically: a crash leaves the old position, never half a line). */
export async function writeSyncWalsInfo(srv: ServerConfig, lastName: string, lastPosition: number): Promise<void> {
  await writeFileAtomic(syncWalsInfoPath(srv), `${lastName}\t${lastPosition}`);
}

// ---------------------------------------------------------------------------------------------
// Asking the primary

/** The words run on the primary: `barman [-c CONF] sync-info SRV [LAST_WAL [LAST_POSITION]]`. */
export function syncInfoWords(srv: ServerConfig, lastWal: string | null, lastPosition: number | null): string[] {
  const words = ['barman'];
  if (srv.forward_config_path) words.push('-c', srv.global.configFile);
  words.push('sync-info', srv.name);
  if (lastWal !== null) {
    words.push(lastWal);
    // Position 0 is refused by Barman's sync-info (not a positive integer): it means "start".
    if (lastPosition !== null && lastPosition > 0) words.push(String(lastPosition));
  }
  return words;
}

export interface FetchEvents {
  warning?(msg: string): void;
}

/**
 * Run `sync-info` on the primary, check the answer and save it as primary.info. When the
 * primary refuses LAST_WAL (exit 1: its xlog.db no longer has it, or the passive is ahead), the
 * full list is asked for once, with Barman's warning. Returns the parsed answer and its text.
 */
export async function fetchPrimaryInfo(
  srv: ServerConfig,
  lastWal: string | null,
  lastPosition: number | null,
  ev: FetchEvents = {},
): Promise<{ info: PrimaryInfo; text: string }> {
  if (!srv.passive || !srv.primary_ssh_command) throw new BarmanError(`server ${srv.name} is not passive`);
  let wal = lastWal;
  let pos = lastPosition;
  let text: string;
  for (;;) {
    const { cmd, args } = sshInvocation(srv.primary_ssh_command, syncInfoWords(srv, wal, pos));
    log.debug(`primary sync-info(${srv.name}, ${wal ?? 'None'}, ${pos ?? 'None'})`);
    const res = await run(cmd, args, { env: subprocessEnv(srv.path_prefix) });
    if (res.code === 0) {
      text = res.stdout;
      break;
    }
    if (res.code === 1 && wal !== null) {
      wal = null;
      pos = null;
      ev.warning?.(`sync-info is out of sync. Self-recovery procedure started: requesting full synchronisation from primary server ${srv.name}`);
      continue;
    }
    const detail = lastLine(res.stderr) || lastLine(res.stdout) || `exit code ${res.code}`;
    throw new BarmanError(`sync-info execution on remote primary server ${srv.name} failed: ${detail}`);
  }
  let info: PrimaryInfo;
  try {
    info = parsePrimaryInfo(text);
  } catch (err) {
    throw new BarmanError(`sync-info of remote primary server ${srv.name} returned an unusable answer: ${errorMessage(err)}`);
  }
  if (info.config.name !== srv.name) {
    throw new BarmanError(`sync-info of remote primary server ${srv.name} describes server '${info.config.name}'`);
  }
  try {
    await ensureServerDirs(srv);
    await writeFileAtomic(primaryInfoPath(srv), text);
  } catch (err) {
    throw new BarmanError(`Cannot write ${PRIMARY_INFO_FILE} file for server ${srv.name}: ${errorMessage(err)}`);
  }
  return { info, text };
}
