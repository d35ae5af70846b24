/**
 * `barman config-update JSON` (Barman 3.10+, spec §1, §4.2): change options of servers and
 * models from a JSON document, as Barman does:
 *   1. every document `{"scope": "server"|"model", "server_name"|"model_name": NAME, KEY: VALUE...}`
 *      becomes a change set; each change goes to the file that sets that option for that
 *      section (or, for an option inherited from [barman], the file of [barman]), else to
 *      `<barman_home>/.barman.auto.conf`, which is read last;
 *   2. the change sets are appended to the queue file (`config_changes_queue`, JSON), then the
 *      queue is processed in order, each set removed once its files are written: an
 *      interrupted run leaves the rest of the queue for the next one;
 *   3. all of it under `.config-update.lock`, one config-update at a time.
 * Unlike Barman, a change is checked first: an unknown option, an option the scope cannot set,
 * or a value its parser refuses is reported and left out (Barman would write it and later
 * disable the server over it). Files keep their mode and are replaced atomically.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Config } from '../config/config.js';
import { SERVER_OPTION_MAP } from '../config/options.js';
import { acquireLock } from '../catalog/lock.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { writeFileAtomic } from '../util/fsutil.js';

export interface ConfigChange {
  key: string;
  value: string;
  config_file: string;
}

export interface ConfigChangeSet {
  section: string;
  changes_set: ConfigChange[];
}

export interface UpdateEvents {
  info?: (msg: string) => void;
  warning?: (msg: string) => void;
}

export const AUTO_CONF = '.barman.auto.conf';
const LOCK_NAME = '.config-update.lock';
/** Keys a model section may not set (Barman's model blacklist: directories and hooks). */
const MODEL_FORBIDDEN = /(_directory$|_script$)/;

function repr(doc: unknown): string {
  return JSON.stringify(doc);
}

/** The queue: a JSON list of change sets (missing file = empty queue). */
export async function readQueue(file: string, ev: UpdateEvents = {}): Promise<ConfigChangeSet[]> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new BarmanError(`cannot read the configuration changes queue ${file}: ${errorMessage(err)}`);
  }
  try {
    const doc = JSON.parse(text) as unknown;
    if (!Array.isArray(doc)) throw new Error('not a list');
    return doc as ConfigChangeSet[];
  } catch {
    ev.warning?.(`Malformed or empty configuration change queue: ${file}`);
    return [];
  }
}

async function writeQueue(file: string, queue: readonly ConfigChangeSet[]): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(queue, null, 2), 0o600);
}

/**
 * Turn the JSON documents into change sets (pure; warnings for what is left out). `cfg` tells
 * which sections are servers or models and which file sets each option.
 */
export function changeSetsFromJson(cfg: Config, docs: unknown, ev: UpdateEvents = {}): ConfigChangeSet[] {
  if (!Array.isArray(docs)) throw new BarmanError('config-update expects a JSON list of documents, e.g. [{"scope": "server", "server_name": "pg", "archiver": "on"}]');
  const autoConf = path.join(cfg.global.barman_home, AUTO_CONF);
  const out: ConfigChangeSet[] = [];
  for (const original of docs) {
    if (typeof original !== 'object' || original === null || Array.isArray(original)) {
      ev.warning?.(`${repr(original)} has been ignored because it is not a JSON object.`);
      continue;
    }
    const doc = { ...(original as Record<string, unknown>) };
    const scope = doc.scope;
    delete doc.scope;
    if (scope !== 'server' && scope !== 'model') {
      ev.warning?.(`${repr(original)} has been ignored because 'scope' is invalid: '${String(scope)}'. It should be either 'server' or 'model'.`);
      continue;
    }
    const nameKey = scope === 'server' ? 'server_name' : 'model_name';
    const name = doc[nameKey];
    delete doc[nameKey];
    if (typeof name !== 'string' || name === '') {
      ev.warning?.(`${repr(original)} has been ignored because '${nameKey}' is missing.`);
      continue;
    }
    if (!/^[^\][\n\r]+$/.test(name) || name === 'barman' || name === 'all') {
      ev.warning?.(`${repr(original)} has been ignored because '${name}' cannot be a section name.`);
      continue;
    }
    if (scope === 'server' && cfg.models.has(name)) {
      ev.warning?.(`${repr(original)} has been ignored because '${name}' is a model, not a server.`);
      continue;
    }
    if (scope === 'model') {
      if (cfg.servers.has(name)) {
        ev.warning?.(`${repr(original)} has been ignored because '${name}' is a server, not a model.`);
        continue;
      }
      if (!cfg.models.has(name)) {
        // A new model: `model = on` is implied, `cluster` is required.
        doc.model = 'on';
        if (!('cluster' in doc)) {
          ev.warning?.(`${repr(original)} has been ignored because it is a new model but 'cluster' is missing.`);
          continue;
        }
      }
    }
    const set: ConfigChangeSet = { section: name, changes_set: [] };
    for (const [key, raw] of Object.entries(doc)) {
      const value = typeof raw === 'string' ? raw : typeof raw === 'number' || typeof raw === 'boolean' ? String(raw) : null;
      const problem = checkChange(scope, key, value);
      if (problem) {
        ev.warning?.(`'${key}' of ${scope} '${name}' has been ignored because ${problem}.`);
        continue;
      }
      set.changes_set.push({ key, value: value as string, config_file: sourceFile(cfg, name, key) ?? autoConf });
    }
    if (set.changes_set.length > 0) out.push(set);
  }
  return out;
}

/** Why a change cannot be written, or null. */
function checkChange(scope: 'server' | 'model', key: string, value: string | null): string | null {
  const def = SERVER_OPTION_MAP.get(key);
  if (!def) return 'it is not a server option barman-ts knows';
  if (scope === 'model' ? !def.scopes.includes('M') || MODEL_FORBIDDEN.test(key) : !def.scopes.includes('S') && !def.scopes.includes('G')) {
    return `a ${scope} cannot set it`;
  }
  if (scope === 'server' && key === 'model') return 'a server cannot set it';
  if (value === null) return 'its value is not a string';
  if (/[\r\n]/.test(value)) return 'its value holds a line break';
  if (value !== '' && value !== 'None' && !value.includes('%(')) {
    try {
      def.parse(value.replace(/^(["'])(.*)\1$/, '$2'));
    } catch (err) {
      return `'${value}' is not a valid value (${errorMessage(err)})`;
    }
  }
  return null;
}

/** The file that sets `key` for `section` (or for [barman], which it inherits), if any. */
function sourceFile(cfg: Config, section: string, key: string): string | null {
  return cfg.rawSections.get(section)?.get(key)?.file ?? (section !== 'barman' ? cfg.rawSections.get('barman')?.get(key)?.file : undefined) ?? null;
}

/**
 * Set `key = value` in `section` of the INI text `lines` (each with its line end): the
 * option's line is replaced where the section sets it, else added after the section's last
 * setting; a missing section is appended.
 */
export function editIniLines(lines: readonly string[], section: string, key: string, value: string): string[] {
  const out = [...lines];
  const entry = `${key} = ${value}\n`;
  const keyRe = new RegExp(`^\\s*${key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s*[=:]`, 'i');
  let inSection = false;
  let lastSetting = -1;
  for (let i = 0; i < out.length; i++) {
    const t = (out[i] ?? '').trim();
    if (t.startsWith('[')) {
      if (inSection) break;
      inSection = t === `[${section}]`;
      if (inSection) lastSetting = i;
      continue;
    }
    if (!inSection) continue;
    if (keyRe.test(out[i] ?? '')) {
      // Continuation lines of the old value go with it.
      let end = i + 1;
      while (end < out.length && /^[ \t]+\S/.test(out[end] ?? '') && !keyRe.test(out[end] ?? '')) end++;
      out.splice(i, end - i, entry);
      return out;
    }
    if (t !== '' && !t.startsWith('#') && !t.startsWith(';')) lastSetting = i;
  }
  if (lastSetting >= 0) {
    out.splice(lastSetting + 1, 0, entry);
    return out;
  }
  if (out.length > 0 && !(out[out.length - 1] ?? '').endsWith('\n')) out[out.length - 1] = `${out[out.length - 1] ?? ''}\n`;
  if (out.length > 0 && (out[out.length - 1] ?? '').trim() !== '') out.push('\n');
  out.push(`[${section}]\n`, entry);
  return out;
}

function splitLines(text: string): string[] {
  return text.match(/[^\n]*\n|[^\n]+$/g) ?? [];
}

/** Write one change set into its files (each file read once, replaced atomically, mode kept). */
async function applyChangeSet(cfg: Config, set: ConfigChangeSet, ev: UpdateEvents): Promise<void> {
  const files = new Map<string, { lines: string[]; mode: number }>();
  for (const chg of set.changes_set) {
    let f = files.get(chg.config_file);
    if (!f) {
      let text = '';
      let mode = 0o600;
      try {
        text = await fsp.readFile(chg.config_file, 'utf8');
        mode = (await fsp.stat(chg.config_file)).mode & 0o7777;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new BarmanError(`cannot read ${chg.config_file}: ${errorMessage(err)}`);
      }
      f = { lines: splitLines(text), mode };
      files.set(chg.config_file, f);
    }
    f.lines = editIniLines(f.lines, set.section, chg.key, chg.value);
    const old = cfg.rawSections.get(set.section)?.get(chg.key)?.value ?? 'None';
    ev.info?.(`Changing value of option '${chg.key}' for section '${set.section}' from '${old}' to '${chg.value}' through config-update.`);
  }
  for (const [file, f] of files) {
    try {
      await writeFileAtomic(file, f.lines.join(''), f.mode);
    } catch (err) {
      throw new BarmanError(`cannot write ${file}: ${errorMessage(err)}`);
    }
  }
}

/**
 * Queue the changes of `docs` and process the whole queue. Returns the sections changed.
 * A change set that cannot be written stops the processing (it stays queued): BarmanError.
 */
export async function configUpdate(cfg: Config, docs: unknown, ev: UpdateEvents = {}): Promise<string[]> {
  const lockDir = cfg.global.barman_lock_directory ?? cfg.global.barman_home;
  const lock = await acquireLock(path.join(lockDir, LOCK_NAME), 'config-update', true);
  try {
    const queueFile = cfg.global.config_changes_queue ?? path.join(cfg.global.barman_home, 'cfg_changes.queue');
    const received = changeSetsFromJson(cfg, docs, ev);
    const queue = await readQueue(queueFile, ev);
    if (received.length > 0) {
      queue.push(...received);
      await writeQueue(queueFile, queue);
    }
    const applied: string[] = [];
    while (queue.length > 0) {
      const set = queue[0] as ConfigChangeSet;
      try {
        await applyChangeSet(cfg, set, ev);
      } catch (err) {
        throw new BarmanError(`Unable to process a set of changes (section '${set.section}'): ${errorMessage(err)}; it stays in ${queueFile}`);
      }
      queue.shift();
      await writeQueue(queueFile, queue);
      applied.push(set.section);
    }
    return [...new Set(applied)];
  } finally {
    lock.release();
  }
}
