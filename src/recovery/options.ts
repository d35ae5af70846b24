/**
 * Validation of a restore request (spec §7): recovery targets, backup choice (`auto`), backup
 * status and version constraints, tablespace relocation rules and the destination directory.
 * Everything here runs before anything is written on disk; each problem is a BarmanError with
 * a one-line message.
 */
import { promises as fsp, readFileSync } from 'node:fs';
import { readTextIfExists } from '../util/fsutil.js';
import * as path from 'node:path';
import { COPY_DONE, type BackupInfo, type Tablespace } from '../catalog/backup-info.js';
import type { BackupEntry } from '../catalog/catalog.js';
import { BarmanError } from '../util/errors.js';
import { PyDateTime, parsePyDatetime } from '../util/pytime.js';
import { formatLsn, parseLsn } from '../wal/names.js';

export type TargetTli = number | 'current' | 'latest';
export type TargetAction = 'pause' | 'shutdown' | 'promote';
export const TARGET_ACTIONS: readonly TargetAction[] = ['pause', 'shutdown', 'promote'];

/** Where recovery stops, as validated from the command line. */
export interface RecoveryTarget {
  time: PyDateTime | null;
  xid: string | null;
  /** As given (validated), e.g. `0/3000060`. */
  lsn: string | null;
  name: string | null;
  immediate: boolean;
  tli: TargetTli | null;
  /** `--exclusive`: stop just before the target (recovery_target_inclusive = false). */
  exclusive: boolean;
  action: TargetAction | null;
}

/** Target options as the command line gives them (all optional text). */
export interface TargetOptions {
  targetTime?: string | null;
  targetXid?: string | null;
  targetLsn?: string | null;
  targetName?: string | null;
  targetImmediate?: boolean;
  targetTli?: string | null;
  exclusive?: boolean;
  targetAction?: string | null;
}

export const NO_TARGET: RecoveryTarget = Object.freeze({
  time: null,
  xid: null,
  lsn: null,
  name: null,
  immediate: false,
  tli: null,
  exclusive: false,
  action: null,
});

/** `N` (> 0), `current` or `latest`. */
export function parseTargetTli(text: string): TargetTli {
  const t = text.trim();
  if (t === 'current' || t === 'latest') return t;
  if (/^\d+$/.test(t) && Number(t) > 0 && Number(t) <= 0xffffffff) return Number(t);
  throw new BarmanError(`Invalid --target-tli '${text}': expected a timeline number, 'current' or 'latest'`);
}

/**
 * Parse `--target-time`. A time without a UTC offset is read in the local time zone of this
 * host (Barman's behaviour) and flagged `naive` so the caller can warn about it.
 */
export function parseTargetTime(text: string): { time: PyDateTime; naive: boolean } {
  let time: PyDateTime;
  try {
    time = parsePyDatetime(text);
  } catch {
    throw new BarmanError(`Unable to parse the target time parameter '${text}'`);
  }
  // The lenient parser accepts an offset after the time; if adding one still parses, the
  // text had none (a second offset is a syntax error).
  let naive = false;
  try {
    parsePyDatetime(`${text.trim()} +00:00`);
    naive = true;
  } catch {
    naive = false;
  }
  return { time, naive };
}

/** A target that makes the restore a point-in-time recovery (timeline included). */
export function isPitr(t: RecoveryTarget): boolean {
  return t.time !== null || t.xid !== null || t.lsn !== null || t.name !== null || t.immediate || t.tli !== null;
}

/** A target where PostgreSQL stops (what --target-action applies to). */
export function hasStopTarget(t: RecoveryTarget): boolean {
  return t.time !== null || t.xid !== null || t.lsn !== null || t.name !== null || t.immediate;
}

/** Validate the target options on their own (no backup needed yet). */
export function parseRecoveryTarget(o: TargetOptions): { target: RecoveryTarget; warnings: string[] } {
  const warnings: string[] = [];
  const given = (v: string | null | undefined): v is string => v !== undefined && v !== null;
  const named = [
    given(o.targetTime) && '--target-time',
    given(o.targetXid) && '--target-xid',
    given(o.targetLsn) && '--target-lsn',
    given(o.targetName) && '--target-name',
    o.targetImmediate === true && '--target-immediate',
  ].filter((x): x is string => typeof x === 'string');
  if (named.length > 1) {
    throw new BarmanError(`You cannot specify more than one recovery target (got ${named.join(', ')})`);
  }
  const target: RecoveryTarget = { ...NO_TARGET };
  if (given(o.targetTime)) {
    const { time, naive } = parseTargetTime(o.targetTime);
    if (naive) {
      warnings.push(
        `No time zone has been specified through '--target-time': the local time zone of the Barman host is assumed (${time.format()})`,
      );
    }
    target.time = time;
  }
  if (given(o.targetXid)) {
    if (!/^\d+$/.test(o.targetXid.trim())) throw new BarmanError(`Invalid --target-xid '${o.targetXid}': expected a transaction ID (a number)`);
    target.xid = o.targetXid.trim();
  }
  if (given(o.targetLsn)) {
    try {
      parseLsn(o.targetLsn.trim());
    } catch {
      throw new BarmanError(`Invalid --target-lsn '${o.targetLsn}': expected an LSN like 0/3000060`);
    }
    target.lsn = o.targetLsn.trim();
  }
  if (given(o.targetName)) {
    if (o.targetName === '') throw new BarmanError('--target-name cannot be empty');
    target.name = o.targetName;
  }
  target.immediate = o.targetImmediate === true;
  if (given(o.targetTli)) target.tli = parseTargetTli(o.targetTli);
  if (o.exclusive) {
    if (target.time === null && target.xid === null && target.lsn === null) {
      throw new BarmanError('--exclusive can only be used with --target-time, --target-xid or --target-lsn');
    }
    target.exclusive = true;
  }
  if (given(o.targetAction)) {
    if (!(TARGET_ACTIONS as readonly string[]).includes(o.targetAction)) {
      throw new BarmanError(`Invalid --target-action '${o.targetAction}': expected pause, shutdown or promote`);
    }
    if (!hasStopTarget(target)) throw new BarmanError("Can't enable recovery target action when PITR is not required");
    target.action = o.targetAction as TargetAction;
  }
  return { target, warnings };
}

// ---------------------------------------------------------------------------------------------
// Backup choice and backup-dependent rules

/**
 * `auto` backup ID (spec §7): only time/LSN targets (and a timeline) are allowed; the newest
 * restorable backup that ended before the target time / LSN (on the requested timeline), or
 * the newest on the timeline, or simply the latest.
 */
export function chooseAutoBackup(entries: readonly BackupEntry[], target: RecoveryTarget, serverName: string): BackupEntry {
  if (target.xid !== null || target.name !== null || target.immediate) {
    throw new BarmanError("For backup ID 'auto' only --target-time and --target-lsn (optionally with --target-tli) can be used");
  }
  const tli = typeof target.tli === 'number' ? target.tli : null;
  let candidates = entries.filter((e) => COPY_DONE.has(e.info.status));
  if (tli !== null) candidates = candidates.filter((e) => e.info.timeline === tli);
  if (target.time !== null) {
    const t = target.time;
    candidates = candidates.filter((e) => e.info.end_time !== null && e.info.end_time.compare(t) <= 0);
  } else if (target.lsn !== null) {
    const lsn = parseLsn(target.lsn);
    candidates = candidates.filter((e) => e.info.end_xlog !== null && safeLsn(e.info.end_xlog) !== null && (safeLsn(e.info.end_xlog) as bigint) <= lsn);
  }
  const chosen = candidates.at(-1);
  if (!chosen) {
    const what = target.time !== null ? ` ending before ${target.time.format()}` : target.lsn !== null ? ` ending before LSN ${target.lsn}` : '';
    throw new BarmanError(`No backup of server '${serverName}' is suitable for the recovery target${what}${tli !== null ? ` on timeline ${tli}` : ''}`);
  }
  return chosen;
}

function safeLsn(text: string): bigint | null {
  try {
    return parseLsn(text);
  } catch {
    return null;
  }
}

function pgVersionText(v: number): string {
  return v >= 100000 ? String(Math.floor(v / 10000)) : `${Math.floor(v / 10000)}.${Math.floor(v / 100) % 100}`;
}

/** Rules that need the backup: status, PostgreSQL version, target consistency. */
export function checkBackupForRestore(id: string, info: BackupInfo, target: RecoveryTarget, opts: { standbyMode?: boolean } = {}): void {
  if (!COPY_DONE.has(info.status)) {
    throw new BarmanError(`Cannot restore backup ${id}: its status is ${info.status} (only DONE and WAITING_FOR_WALS backups can be restored)`);
  }
  if (!info.begin_wal || info.timeline === null || info.version === null) {
    throw new BarmanError(`Cannot restore backup ${id}: its backup.info lacks begin_wal, timeline or version`);
  }
  const v = info.version;
  if (target.lsn !== null && v < 100000) {
    throw new BarmanError(`--target-lsn needs PostgreSQL 10 or later (backup ${id} is PostgreSQL ${pgVersionText(v)})`);
  }
  if (target.immediate && v < 90400) {
    throw new BarmanError(`--target-immediate needs PostgreSQL 9.4 or later (backup ${id} is PostgreSQL ${pgVersionText(v)})`);
  }
  if (opts.standbyMode && v < 90000) {
    throw new BarmanError(`--standby-mode needs PostgreSQL 9.0 or later (backup ${id} is PostgreSQL ${pgVersionText(v)})`);
  }
  if (target.action !== null) {
    if (v < 90100) throw new BarmanError(`--target-action needs PostgreSQL 9.1 or later (backup ${id} is PostgreSQL ${pgVersionText(v)})`);
    if (v < 90500 && target.action !== 'pause') {
      throw new BarmanError(`Illegal target action '${target.action}' for PostgreSQL ${pgVersionText(v)}: only 'pause' is supported before 9.5`);
    }
  }
  if (target.time !== null && info.end_time !== null && target.time.compare(info.end_time) < 0) {
    throw new BarmanError(
      `The requested target time ${target.time.format()} is before the backup end time ${info.end_time.format()}`,
    );
  }
  if (target.lsn !== null && info.end_xlog) {
    const end = safeLsn(info.end_xlog);
    if (end !== null && parseLsn(target.lsn) < end) {
      throw new BarmanError(`The requested target LSN ${target.lsn} is before the backup end LSN ${formatLsn(end)}`);
    }
  }
  if (typeof target.tli === 'number' && target.tli < info.timeline) {
    throw new BarmanError(`The requested target timeline ${target.tli} is before the timeline ${info.timeline} of backup ${id}`);
  }
}

/** `NAME:LOCATION` rules → name → absolute location. Names must be tablespaces of the backup. */
export function parseTablespaceRules(rules: readonly string[], known: readonly Tablespace[] | null): Map<string, string> {
  const out = new Map<string, string>();
  for (const rule of rules) {
    const colon = rule.indexOf(':');
    const name = colon > 0 ? rule.slice(0, colon) : '';
    const location = colon > 0 ? rule.slice(colon + 1) : '';
    if (name === '' || location === '') {
      throw new BarmanError(`Invalid tablespace relocation rule '${rule}': expected NAME:LOCATION`);
    }
    if (!(known ?? []).some((t) => t.name === name)) {
      const names = (known ?? []).map((t) => t.name);
      throw new BarmanError(`Invalid tablespace name '${name}'${names.length ? ` (the backup has: ${names.join(', ')})` : ' (the backup has no tablespaces)'}`);
    }
    if (out.has(name)) throw new BarmanError(`Tablespace '${name}' relocated twice`);
    out.set(name, path.resolve(location));
  }
  return out;
}

/** Where each tablespace of the backup goes. */
export function tablespaceTargets(known: readonly Tablespace[] | null, relocate: ReadonlyMap<string, string>): Tablespace[] {
  return (known ?? []).map((t) => ({ name: t.name, oid: t.oid, location: relocate.get(t.name) ?? t.location }));
}

// ---------------------------------------------------------------------------------------------
// Destination

/** Is a process with this PID alive and (as far as /proc tells) a PostgreSQL server? */
export function isPostmasterAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it exists but belongs to someone else (postgres): that counts as alive.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    // A stale postmaster.pid whose PID was reused by an unrelated process is not a server.
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return /postgres|postmaster/.test(cmd);
  } catch {
    return true;
  }
}

/** PID of a live postmaster that owns `dir` (from its postmaster.pid), or null. */
export async function runningPostmaster(dir: string): Promise<number | null> {
  // Not there: no server. Unreadable is not "no server": recovering over a running one is the worst case.
  const text = await readTextIfExists(path.join(dir, 'postmaster.pid'));
  if (text === null) return null;
  const pid = Number((text.split('\n')[0] ?? '').trim());
  return isPostmasterAlive(pid) ? pid : null;
}

/** Throw unless `dir` is absent or an empty directory. */
export async function checkEmptyOrAbsent(dir: string, what: string): Promise<void> {
  let st;
  try {
    st = await fsp.stat(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new BarmanError(`Cannot access ${what} '${dir}': ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  if (!st.isDirectory()) throw new BarmanError(`The ${what} '${dir}' exists and is not a directory`);
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch (err) {
    throw new BarmanError(`Cannot read ${what} '${dir}': ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  if (names.length > 0) {
    throw new BarmanError(`The ${what} '${dir}' is not empty (use an empty or new directory, or --delta-restore)`);
  }
}

/** DEST text → absolute path, refusing remote-looking destinations (`host:path`). */
export function normalizeDestination(dest: string): string {
  if (dest === '') throw new BarmanError('The destination directory cannot be empty');
  if (dest.includes(':')) {
    throw new BarmanError(`The destination directory '${dest}' cannot contain ':' (remote destinations need --remote-ssh-command)`);
  }
  return path.resolve(dest);
}

/** Destination checks: no running server, empty (unless delta restore), same for tablespaces. */
export async function checkDestination(dest: string, tablespaces: readonly Tablespace[], opts: { delta: boolean }): Promise<void> {
  const pid = await runningPostmaster(dest);
  if (pid !== null) {
    throw new BarmanError(`The destination directory '${dest}' belongs to a running PostgreSQL server (PID ${pid}): stop it first`);
  }
  if (opts.delta) return;
  await checkEmptyOrAbsent(dest, 'destination directory');
  for (const t of tablespaces) {
    await checkEmptyOrAbsent(t.location, `location of tablespace '${t.name}'`);
  }
}
