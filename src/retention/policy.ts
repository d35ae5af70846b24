/**
 * Retention policies (spec §8): which backups a policy still needs. Pure: the catalog, the keep
 * annotations, the policy, minimum_redundancy and the clock come in; statuses come out.
 *
 * Statuses (never stored, shown by list-backups / show-backup):
 * - `VALID`: needed by the policy;
 * - `OBSOLETE`: outside the policy, `cron` deletes it;
 * - `OBSOLETE*` (potentially obsolete): outside a recovery window but kept because fewer than
 *   minimum_redundancy backups would be left; never deleted;
 * - `KEEP:FULL` / `KEEP:STANDALONE`: a keep annotation protects it whatever the policy says;
 * - `-`: not a DONE backup (in progress, failed...), the policy has no opinion.
 *
 * Only full (non-incremental) backups are classified: the backups of an incremental chain get
 * the status of the root of their chain, so that a chain is kept or deleted as a whole.
 */
import type { BackupInfo } from '../catalog/backup-info.js';
import type { KeepTarget } from '../catalog/delete.js';
import type { RetentionPolicy } from '../config/values.js';
import { PyDateTime } from '../util/pytime.js';

export type { KeepTarget };

export const VALID = 'VALID';
export const OBSOLETE = 'OBSOLETE';
export const POTENTIALLY_OBSOLETE = 'OBSOLETE*';
export const KEEP_FULL = 'KEEP:FULL';
export const KEEP_STANDALONE = 'KEEP:STANDALONE';
export const NONE = '-';

export type RetentionStatus =
  | typeof VALID
  | typeof OBSOLETE
  | typeof POTENTIALLY_OBSOLETE
  | typeof KEEP_FULL
  | typeof KEEP_STANDALONE
  | typeof NONE;

/** What the classification needs of a catalog entry (a BackupEntry fits). */
export interface RetentionBackup {
  id: string;
  info: Pick<BackupInfo, 'status' | 'parent_backup_id' | 'end_time'>;
}

export interface RetentionInput {
  /** The catalog (any order); EMPTY backups are ignored. */
  entries: readonly RetentionBackup[];
  /** Keep annotations by backup ID. */
  keeps: ReadonlyMap<string, KeepTarget>;
  policy: RetentionPolicy;
  minimumRedundancy: number;
  /** The clock (frozen in tests). */
  now: Date | PyDateTime;
}

export interface RetentionReport {
  /** Status of every non-EMPTY backup. */
  statuses: Map<string, RetentionStatus>;
  /** Decisions worth a line in the log (policy overridden by minimum_redundancy...). */
  notes: string[];
}

const isIncremental = (b: RetentionBackup): boolean => b.info.parent_backup_id != null;

function keepStatus(keeps: ReadonlyMap<string, KeepTarget>, id: string): RetentionStatus | null {
  const k = keeps.get(id);
  if (!k) return null;
  return k === 'standalone' ? KEEP_STANDALONE : KEEP_FULL;
}

/**
 * Start of a recovery window: `now - window`, computed on the local wall clock and read back in
 * the local time zone, as Barman does with an aware local datetime (so a 7-day window is 7
 * calendar days even across a daylight saving time change).
 */
export function pointOfRecoverability(now: Date | PyDateTime, windowSeconds: number): PyDateTime {
  const n = now instanceof PyDateTime ? now.toLocal() : PyDateTime.fromDate(now);
  const wallMicros = n.epochMicros + BigInt(n.offsetSeconds) * 1_000_000n - BigInt(windowSeconds) * 1_000_000n;
  const micro = Number(((wallMicros % 1_000_000n) + 1_000_000n) % 1_000_000n);
  const d = new Date(Number((wallMicros - BigInt(micro)) / 1000n));
  return PyDateTime.fromFields(
    {
      year: d.getUTCFullYear(),
      month: d.getUTCMonth() + 1,
      day: d.getUTCDate(),
      hour: d.getUTCHours(),
      minute: d.getUTCMinutes(),
      second: d.getUTCSeconds(),
      microsecond: micro,
    },
    null,
  );
}

/** Every backup of each chain root, children found through `parent_backup_id`. */
function descendantsByRoot(entries: readonly RetentionBackup[]): Map<string, string[]> {
  const children = new Map<string, string[]>();
  for (const e of entries) {
    const p = e.info.parent_backup_id;
    if (p == null) continue;
    const list = children.get(p) ?? [];
    list.push(e.id);
    children.set(p, list);
  }
  const out = new Map<string, string[]>();
  for (const e of entries) {
    if (isIncremental(e)) continue;
    const all: string[] = [];
    const seen = new Set<string>([e.id]);
    const stack = [...(children.get(e.id) ?? [])];
    while (stack.length > 0) {
      const id = stack.pop() as string;
      if (seen.has(id)) continue; // a corrupt catalog must not loop forever
      seen.add(id);
      all.push(id);
      stack.push(...(children.get(id) ?? []));
    }
    if (all.length > 0) out.set(e.id, all.sort());
  }
  return out;
}

/**
 * Classify every backup (spec §8). Full backups are walked newest first:
 *
 * - REDUNDANCY n: with n raised to minimum_redundancy when lower, the n newest DONE backups are
 *   VALID and the others OBSOLETE; kept backups show their keep status and count among the n.
 * - RECOVERY WINDOW: backups are VALID down to and including the first one that ended before
 *   `now - window` (the newest backup that can restore the start of the window). Older ones are
 *   OBSOLETE, or OBSOLETE* while fewer than minimum_redundancy backups have been counted as
 *   needed. Kept backups show their keep status (and count as needed while within the window or
 *   minimum_redundancy).
 *
 * The backups of an incremental chain get the status of its root, except that a kept root gives
 * VALID (a keep protects the root alone), or OBSOLETE for KEEP:STANDALONE once the root is beyond
 * the policy.
 */
export function retentionReport(input: RetentionInput): RetentionReport {
  const { keeps, policy, minimumRedundancy } = input;
  const statuses = new Map<string, RetentionStatus>();
  const notes: string[] = [];
  const entries = input.entries.filter((e) => e.info.status !== 'EMPTY');
  const newestFirst = [...entries].sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  const chains = descendantsByRoot(entries);
  const propagate = (root: RetentionBackup, status: RetentionStatus, beyondPolicy: boolean) => {
    const ids = chains.get(root.id);
    if (!ids) return;
    let childStatus = status;
    if (status === KEEP_STANDALONE) childStatus = beyondPolicy ? OBSOLETE : VALID;
    else if (status === KEEP_FULL) childStatus = VALID;
    for (const id of ids) statuses.set(id, childStatus);
  };

  if (policy.kind === 'redundancy') {
    let redundancy = policy.copies;
    if (redundancy < minimumRedundancy) {
      notes.push(
        `Retention policy redundancy (${redundancy}) is lower than the required minimum redundancy ` +
          `(${minimumRedundancy}). Enforce ${minimumRedundancy}.`,
      );
      redundancy = minimumRedundancy;
    }
    let counted = 0;
    for (const b of newestFirst) {
      if (isIncremental(b)) continue;
      let status: RetentionStatus;
      if (b.info.status === 'DONE') {
        status = keepStatus(keeps, b.id) ?? (counted < redundancy ? VALID : OBSOLETE);
        counted += 1;
      } else {
        status = NONE;
      }
      statuses.set(b.id, status);
      propagate(b, status, counted > redundancy);
    }
  } else {
    const point = pointOfRecoverability(input.now, policy.seconds);
    let found = false;
    let needed = 0;
    for (const b of newestFirst) {
      if (isIncremental(b)) continue;
      let status: RetentionStatus;
      if (b.info.status !== 'DONE') {
        status = NONE;
      } else {
        const keep = keepStatus(keeps, b.id);
        if (!found) {
          status = keep ?? VALID;
          needed += 1;
          // A DONE backup without an end time cannot prove it covers the window start: look further.
          const end = b.info.end_time;
          if (end && end.compare(point) < 0) found = true;
        } else if (needed < minimumRedundancy) {
          if (keep) {
            status = keep;
          } else {
            status = POTENTIALLY_OBSOLETE;
            notes.push(
              `Keeping obsolete backup ${b.id} (older than ${point.format()}) ` +
                `due to minimum redundancy requirements (${minimumRedundancy})`,
            );
          }
          needed += 1;
        } else {
          status = keep ?? OBSOLETE;
        }
      }
      statuses.set(b.id, status);
      propagate(b, status, found);
    }
  }
  return { statuses, notes };
}

/** Status of every non-EMPTY backup (see retentionReport). */
export function classifyBackups(input: RetentionInput): Map<string, RetentionStatus> {
  return retentionReport(input).statuses;
}

const IN_PROGRESS = new Set(['EMPTY', 'STARTED', 'WAITING_FOR_WALS', 'SYNCING']);

/**
 * The backups retention may delete, oldest first: OBSOLETE full backups that are DONE, not kept,
 * with no backup of their incremental chain in progress, and only as many as leave at least
 * minimum_redundancy DONE full backups. Deleting one of them deletes its incremental chain.
 * `statuses` defaults to classifying `input`.
 */
export function obsoleteToDelete<T extends RetentionBackup>(
  input: RetentionInput & { entries: readonly T[] },
  statuses: ReadonlyMap<string, RetentionStatus> = classifyBackups(input),
): T[] {
  const entries = input.entries;
  const chains = descendantsByRoot(entries);
  const byId = new Map(entries.map((e) => [e.id, e]));
  let doneFull = entries.filter((e) => !isIncremental(e) && e.info.status === 'DONE').length;
  const out: T[] = [];
  const oldestFirst = [...entries].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  for (const e of oldestFirst) {
    if (isIncremental(e) || e.info.status !== 'DONE') continue;
    if (statuses.get(e.id) !== OBSOLETE) continue;
    if (input.keeps.has(e.id)) continue;
    const chainBusy = (chains.get(e.id) ?? []).some((id) => IN_PROGRESS.has(byId.get(id)?.info.status ?? ''));
    if (chainBusy) continue;
    if (doneFull - 1 < input.minimumRedundancy) break;
    doneFull -= 1;
    out.push(e);
  }
  return out;
}
