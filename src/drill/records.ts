/**
 * Drill results in the catalog: one JSON file per drill in `<backup_directory>/drills/`, a
 * directory Barman never reads (its catalog is base/, meta/, wals/, incoming/, streaming/,
 * errors/ and identity.json), so Barman 3.4 and later ignore it. A drill writes its file when
 * it starts (status `running`) and replaces it atomically when it ends: it is the only thing a
 * drill ever writes into the catalog.
 */
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { serverPaths } from '../catalog/server-dirs.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { ensureDir, writeFileAtomic } from '../util/fsutil.js';
import { processExists } from '../util/proc.js';

export const DRILL_RECORD_FORMAT = 1;
export type DrillStatus = 'running' | 'passed' | 'failed';

export type DrillCheckName = 'amcheck' | 'checksums' | 'sql';

export interface DrillCheck {
  name: DrillCheckName;
  status: 'ok' | 'failed' | 'skipped';
  /** One line: what was checked, or what failed. */
  detail: string;
  seconds: number;
}

/** Where recovery was asked to stop. */
export interface DrillTargetRecord {
  /** `end-of-archive` when no target was given (replay all archived WAL). */
  kind: 'end-of-archive' | 'time' | 'xid' | 'lsn' | 'name' | 'immediate';
  /** The target as given (time as text), null for end-of-archive and immediate. */
  value: string | null;
  /** `--exclusive` */
  exclusive: boolean;
  /** --target-tli as given, or null. */
  tli: string | null;
  /** end-of-archive: the newest archived segment on the timeline path when the drill started. */
  end_wal: string | null;
}

/** Where recovery really stopped. */
export interface DrillReached {
  /** Last WAL location replayed (pg_last_wal_replay_lsn). */
  lsn: string;
  /** Timeline of that location. */
  timeline: number;
  /** The timeline created by the promotion. */
  new_timeline: number | null;
  /** Commit time of the last transaction replayed (PostgreSQL text), null if none. */
  last_commit_time: string | null;
  /** PostgreSQL's own words in the new timeline's history file, e.g. `at restore point "x"`. */
  reason: string | null;
  /** WAL segment of the last byte replayed. */
  wal: string;
}

/** Seconds of each phase; they add up to total_seconds. Null: the phase did not happen. */
export interface DrillPhases {
  /** Waiting for another drill on the same host (not part of the total). */
  wait_seconds: number;
  /** Checks before the restore: directory, free space, binaries. */
  setup_seconds: number;
  restore_seconds: number | null;
  /** Sandbox configuration written, PostgreSQL spawned. */
  prepare_seconds: number | null;
  /** From PostgreSQL's start to the target (includes time_to_consistency). */
  replay_seconds: number | null;
  /** From PostgreSQL's start to a consistent state (hot standby connections accepted). */
  consistency_seconds: number | null;
  promote_seconds: number | null;
  checks_seconds: number | null;
  stop_seconds: number | null;
  cleanup_seconds: number | null;
  total_seconds: number;
  /** Restore + prepare + replay + promote: the recovery time a user should expect. */
  rto_seconds: number | null;
  /** What the drill adds to restore and replay (setup, prepare, promote, stop, cleanup). */
  overhead_seconds: number | null;
}

export interface DrillRecord {
  format: number;
  /** File stem: `<YYYYMMDDTHHMMSS>-<pid>` of the start. */
  id: string;
  server: string;
  backup_id: string;
  status: DrillStatus;
  error: string | null;
  started_at: string;
  started_at_timestamp: number;
  ended_at: string | null;
  ended_at_timestamp: number | null;
  /** PID of the `barman drill` process. */
  pid: number;
  /** `local`, or the ssh command of a remote drill. */
  host: string;
  /** The sandbox data directory (on `host`). */
  directory: string;
  /** The drill created `directory` (and removes it); otherwise it only empties it. */
  directory_created: boolean;
  /** Private directory of the sandbox (socket, configuration, log), on `host`. */
  private_directory: string | null;
  postmaster_pid: number | null;
  port: number | null;
  /** --keep: the sandbox was left in place. */
  kept: boolean;
  /** server_version_num of the backup and the directory of the PostgreSQL programs used. */
  postgres: { version: number; bindir: string | null };
  target: DrillTargetRecord;
  reached: DrillReached | null;
  /** WAL segments restored through get-wal during replay. */
  wal_segments: number | null;
  bytes_restored: number | null;
  phases: DrillPhases;
  checks: DrillCheck[];
  /** Last lines of the sandbox's PostgreSQL log when the drill failed. */
  log_tail: string[];
}

export function drillsDir(srv: ServerConfig): string {
  return path.join(serverPaths(srv).backupDir, 'drills');
}

const RECORD_RE = /^(\d{8}T\d{6}-\d+)\.json$/;

/** Write (or replace) a record durably; the directory is created 0700 on first use. */
export async function saveDrillRecord(srv: ServerConfig, rec: DrillRecord): Promise<string> {
  if (!/^\d{8}T\d{6}-\d+$/.test(rec.id)) throw new BarmanError(`invalid drill id '${rec.id}'`);
  const dir = drillsDir(srv);
  await ensureDir(dir);
  const file = path.join(dir, `${rec.id}.json`);
  await writeFileAtomic(file, `${JSON.stringify(rec, null, 2)}\n`);
  return file;
}

function isRecord(v: unknown): v is DrillRecord {
  if (!v || typeof v !== 'object') return false;
  const r = v as Partial<DrillRecord>;
  return (
    typeof r.id === 'string' &&
    typeof r.backup_id === 'string' &&
    (r.status === 'running' || r.status === 'passed' || r.status === 'failed') &&
    typeof r.started_at_timestamp === 'number' &&
    typeof r.phases === 'object' &&
    r.phases !== null
  );
}

/**
 * Every drill of the server, oldest first. Unreadable or foreign files are skipped (with a note
 * in `problems`): a damaged result must never stop `check` or `cron`.
 */
export async function loadDrillRecords(srv: ServerConfig, problems?: string[]): Promise<DrillRecord[]> {
  const dir = drillsDir(srv);
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new BarmanError(`cannot read the drill results in ${dir}: ${errorMessage(err)}`);
  }
  const out: DrillRecord[] = [];
  for (const n of names) {
    if (!RECORD_RE.test(n)) continue;
    const file = path.join(dir, n);
    try {
      const parsed: unknown = JSON.parse(fs.readFileSync(file, 'utf8'));
      if (!isRecord(parsed)) throw new Error('not a drill result');
      out.push(parsed);
    } catch (err) {
      problems?.push(`Skipping drill result ${file}: ${errorMessage(err)}`);
    }
  }
  return out.sort((a, b) => a.started_at_timestamp - b.started_at_timestamp || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** Is the process that wrote a `running` record still there? (A dead one was interrupted.) */
export function isDrillProcessAlive(rec: Pick<DrillRecord, 'pid'>): boolean {
  return processExists(rec.pid);
}

/** Status as reported: a `running` record whose process died is `interrupted`. */
export function effectiveStatus(rec: DrillRecord, alive: (r: DrillRecord) => boolean = isDrillProcessAlive): DrillStatus | 'interrupted' {
  if (rec.status === 'running' && !alive(rec)) return 'interrupted';
  return rec.status;
}

/** Finished drills (passed or failed), oldest first. */
export function finishedDrills(records: readonly DrillRecord[]): DrillRecord[] {
  return records.filter((r) => r.status !== 'running');
}

/** The newest finished drill, and the newest passed one. */
export function lastDrills(records: readonly DrillRecord[]): { last: DrillRecord | null; lastPassed: DrillRecord | null } {
  const done = finishedDrills(records);
  return { last: done.at(-1) ?? null, lastPassed: done.filter((r) => r.status === 'passed').at(-1) ?? null };
}

/** Describe the target for people: `end of the archive`, `restore point "x"`, ... */
export function describeTarget(t: DrillTargetRecord): string {
  const excl = t.exclusive ? ' (exclusive)' : '';
  const tli = t.tli !== null ? ` on timeline ${t.tli}` : '';
  switch (t.kind) {
    case 'end-of-archive':
      return `end of the archive${t.end_wal ? ` (${t.end_wal})` : ''}${tli}`;
    case 'time':
      return `time ${t.value ?? '?'}${excl}${tli}`;
    case 'xid':
      return `transaction ${t.value ?? '?'}${excl}${tli}`;
    case 'lsn':
      return `LSN ${t.value ?? '?'}${excl}${tli}`;
    case 'name':
      return `restore point "${t.value ?? '?'}"${tli}`;
    case 'immediate':
      return 'end of the backup (immediate)';
  }
}
