/**
 * What a drill is asked to do and the pure rules around it: the request and outcome types,
 * which backups can be drilled, the free space a restore needs, drill IDs, lock keys, the
 * sandbox directory and the logins tried first in the sandbox.
 */
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { backupType, DONE, type BackupInfo } from '../catalog/backup-info.js';
import { parseConninfo } from '../postgres/conninfo.js';
import { checkBackupForRestore, type RecoveryTarget, type TargetOptions } from '../recovery/options.js';
import { BarmanError } from '../util/errors.js';
import type { DrillRecord } from './records.js';

/** Oldest PostgreSQL a drill supports: pg_amcheck and pg_get_wal_replay_pause_state() (14). */
export const MIN_DRILL_VERSION = 140000;

export interface DrillRequest extends TargetOptions {
  /** BACKUP_ID argument (default `latest`). */
  backupId?: string;
  /** --directory: the sandbox data directory (must be empty or absent). */
  directory?: string | null;
  /** --sql FILE, already read: its path and text. */
  sql?: { file: string; text: string } | null;
  keep?: boolean;
  remoteSshCommand?: string | null;
  jobs?: number | null;
  /** Seconds for the replay (default drill_timeout; 0 = no limit). */
  timeoutSeconds?: number | null;
  /** cron: drill the newest DONE backup only if a drill is still due once the lock is held. */
  ifDue?: boolean;
  /** Interrupts the drill (Ctrl-C, SIGTERM): the sandbox is stopped and removed. */
  signal?: AbortSignal;
  /** Words restore_command uses to run barman (tests). */
  barmanCommand?: readonly string[];
}

export interface DrillEvents {
  info?: (msg: string) => void;
  warning?: (msg: string) => void;
}

export interface DrillOutcome {
  /** The recorded drill, null when none was started (--if-due found nothing due). */
  record: DrillRecord | null;
  /** --if-due: why no drill was started. */
  notDue?: string;
  /** The drill's sandbox was kept (--keep): where and how to reach it. */
  kept?: { dataDir: string; privateDir: string | null; port: number | null; bindir: string | null };
}

/** Free space a restore needs: the restored size, plus 10% and 128 MiB for WAL and slack. */
export function neededBytes(info: BackupInfo): { data: number; needed: number; estimated: boolean } {
  const compressed = info.compression !== null && info.compression !== 'none';
  // A compressed backup's restored size is unknown unless recorded (cluster_size).
  const data = info.cluster_size ?? (compressed ? (info.size ?? 0) * 3 : (info.size ?? 0));
  return { data, needed: Math.ceil(data * 1.1) + 128 * 1024 * 1024, estimated: info.cluster_size === null && compressed };
}

/** `<YYYYMMDDTHHMMSS>-<pid>` of this instant. */
export function drillId(date: Date, pid: number): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${date.getFullYear()}${p(date.getMonth() + 1)}${p(date.getDate())}T${p(date.getHours())}${p(date.getMinutes())}${p(date.getSeconds())}-${pid}`;
}

/** Host key of the drill lock: `local`, or a digest of the ssh command. */
export function hostKey(sshCommand: string | null): string {
  return sshCommand ? createHash('sha256').update(sshCommand).digest('hex').slice(0, 12) : 'local';
}

/** Refuse what cannot be drilled before anything is started (nothing recorded). */
export function checkDrillable(id: string, info: BackupInfo, target: RecoveryTarget): void {
  if (info.status !== DONE) throw new BarmanError(`Cannot drill backup ${id}: its status is ${info.status} (only DONE backups can be drilled)`);
  checkBackupForRestore(id, info, target);
  const v = info.version as number;
  if (v < MIN_DRILL_VERSION) {
    throw new BarmanError(`Cannot drill backup ${id}: drills need PostgreSQL 14 or later (pg_amcheck), the backup is PostgreSQL ${Math.floor(v / 10000)}`);
  }
  const kind = backupType(info);
  if (kind === 'snapshot' || kind === 'incremental') throw new BarmanError(`Cannot drill backup ${id}: restoring ${kind} backups is not supported yet`);
  if (info.encryption) throw new BarmanError(`Cannot drill backup ${id}: it is encrypted (${info.encryption}), which restores do not support yet`);
}

export function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** Roles and databases to try for the first connection (the bootstrap superuser is then used). */
export function loginCandidates(srv: ServerConfig): { users: (string | null)[]; dbs: string[] } {
  const users: (string | null)[] = [];
  const dbs: string[] = [];
  for (const ci of [srv.conninfo, srv.streaming_conninfo]) {
    if (!ci) continue;
    try {
      const p = parseConninfo(ci);
      if (p.user) users.push(p.user);
      if (p.dbname && !/[=/]/.test(p.dbname)) dbs.push(p.dbname);
    } catch {
      /* an unparsable conninfo only costs a candidate */
    }
  }
  users.push('postgres', null);
  dbs.push('postgres', 'template1');
  return { users, dbs };
}

/** --directory as an absolute path (a remote one must be given absolute: our cwd means nothing there). */
export function normalizeDir(d: string, remote: boolean): string {
  if (d.trim() === '') throw new BarmanError('The drill directory cannot be empty');
  if (d.includes(':')) throw new BarmanError(`The drill directory '${d}' cannot contain ':'`);
  if (!path.isAbsolute(d)) {
    if (remote) throw new BarmanError(`The drill directory '${d}' must be an absolute path on the remote host`);
    return path.resolve(d);
  }
  return path.normalize(d).replace(/\/+$/, '') || '/';
}
