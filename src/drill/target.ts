/**
 * The recovery point a drill must reach, and the comparison of where PostgreSQL really stopped
 * with it. Without a target the drill replays all archived WAL: the target is then the newest
 * segment the archive held on the recovery's timeline path when the drill started, and
 * stopping before it (a missing segment in the middle) is a failure, not a pass.
 */
import { promises as fsp } from 'node:fs';
import type { ServerConfig } from '../config/config.js';
import type { BackupInfo } from '../catalog/backup-info.js';
import type { RecoveryTarget } from '../recovery/options.js';
import { listArchive, resolveTargetTli, selectRequiredWals, timelineAncestry } from '../recovery/wal.js';
import { historyName, lsnToWal, parseHistoryFile, parseLsn, parseWalName } from '../wal/names.js';
import type { DrillReached, DrillTargetRecord } from './records.js';
import { describeTarget } from './records.js';

/** The record of the target (end_wal filled in by endOfArchive for end-of-archive drills). */
export function targetRecord(t: RecoveryTarget, endWal: string | null = null): DrillTargetRecord {
  const base = { exclusive: t.exclusive, tli: t.tli === null ? null : String(t.tli), end_wal: null };
  if (t.time !== null) return { ...base, kind: 'time', value: t.time.format() };
  if (t.xid !== null) return { ...base, kind: 'xid', value: t.xid };
  if (t.lsn !== null) return { ...base, kind: 'lsn', value: t.lsn };
  if (t.name !== null) return { ...base, kind: 'name', value: t.name };
  if (t.immediate) return { ...base, kind: 'immediate', value: null };
  return { ...base, kind: 'end-of-archive', value: null, end_wal: endWal };
}

/**
 * The newest archived segment on the timeline path a full replay follows (the same selection
 * `recover` makes), or null when the archive has nothing from the backup on.
 */
export async function endOfArchive(srv: ServerConfig, info: BackupInfo, target: RecoveryTarget): Promise<string | null> {
  const version = info.version as number;
  const beginWal = info.begin_wal as string;
  const listing = await listArchive(srv, beginWal, 0xffffffff);
  const historyTlis = listing.history.map((h) => parseInt(h.name.slice(0, 8), 16));
  // A drill always replays along the timeline PostgreSQL >= 12 picks by default (latest).
  const targetTli = resolveTargetTli(target.tli, info.timeline as number, version, true, historyTlis);
  const hist = listing.history.find((h) => h.name === historyName(targetTli));
  let ancestry = null;
  try {
    ancestry = timelineAncestry(targetTli, hist ? await fsp.readFile(hist.path, 'utf8') : null);
  } catch {
    ancestry = null;
  }
  const sel = selectRequiredWals({
    beginWal,
    endWal: info.end_wal,
    segSize: info.xlog_segment_size,
    version,
    target,
    targetTli,
    ancestry,
    listing,
  });
  return sel.segments.at(-1)?.name ?? null;
}

/** The last entry of the promoted timeline's history file: parent timeline, switch point, reason. */
export function lastHistoryEntry(text: string): { parentTli: number; switchpoint: bigint; reason: string } | null {
  try {
    return parseHistoryFile(text).at(-1) ?? null;
  } catch {
    return null;
  }
}

/** The WAL segment holding the last byte replayed before `lsn` (the end of the last record). */
export function walOfLastByte(lsn: string, tli: number, segSize: number): string {
  const v = parseLsn(lsn);
  return lsnToWal(v > 0n ? v - 1n : 0n, tli, segSize);
}

/** Absolute segment position, so names on different timelines compare by position. */
function position(name: string): bigint {
  const { log, seg } = parseWalName(name);
  return (BigInt(log) << 32n) | BigInt(seg);
}

export interface TargetVerdict {
  ok: boolean;
  /** One line: where recovery stopped and why that is (or is not) the target. */
  message: string;
}

function where(r: DrillReached): string {
  return `${r.lsn} on timeline ${r.timeline}${r.last_commit_time ? `, last commit ${r.last_commit_time}` : ''}`;
}

/**
 * Did recovery stop where it was asked to? PostgreSQL's own record of why it stopped (the
 * reason in the history file of the promoted timeline) must name the target; the LSN and the
 * last commit time must agree with it. `lastCommitEpoch` is the last replayed commit in
 * seconds since the epoch, `targetEpoch` a time target's (both null when unknown).
 */
export function verifyTarget(
  t: DrillTargetRecord,
  r: DrillReached,
  times: { lastCommitEpoch: number | null; targetEpoch: number | null } = { lastCommitEpoch: null, targetEpoch: null },
): TargetVerdict {
  const desc = describeTarget(t);
  const short = (why: string): TargetVerdict => ({ ok: false, message: `Recovery did not reach the target (${desc}): it stopped at ${where(r)}${why ? ` (${why})` : ''}` });
  const reason = (r.reason ?? '').trim();
  switch (t.kind) {
    case 'end-of-archive': {
      if (reason !== '' && reason !== 'no recovery target specified') return short(`PostgreSQL says: ${reason}`);
      if (t.end_wal !== null) {
        const endTli = parseWalName(t.end_wal).tli;
        const reachedTli = parseWalName(r.wal).tli;
        if (reachedTli < endTli || (reachedTli === endTli && position(r.wal) < position(t.end_wal))) {
          return short(`WAL ${r.wal}, the archive goes on to ${t.end_wal}: a segment is missing or unreadable`);
        }
      }
      return { ok: true, message: `Replayed the archive to its end: ${where(r)}` };
    }
    case 'name': {
      if (reason !== `at restore point "${t.value ?? ''}"`) return short(reason ? `PostgreSQL says: ${reason}` : 'PostgreSQL gave no reason');
      return { ok: true, message: `Reached restore point "${t.value ?? ''}": ${where(r)}` };
    }
    case 'xid': {
      if (!new RegExp(`^(before|after) transaction ${t.value ?? ''}$`).test(reason)) return short(reason ? `PostgreSQL says: ${reason}` : 'PostgreSQL gave no reason');
      return { ok: true, message: `Reached transaction ${t.value ?? ''} (${reason}): ${where(r)}` };
    }
    case 'lsn': {
      if (!/^(before|after) LSN /.test(reason)) return short(reason ? `PostgreSQL says: ${reason}` : 'PostgreSQL gave no reason');
      if (!t.exclusive && t.value !== null && parseLsn(r.lsn) < parseLsn(t.value)) return short(`before LSN ${t.value}`);
      return { ok: true, message: `Reached LSN ${t.value ?? ''} (${reason}): ${where(r)}` };
    }
    case 'time': {
      if (!/^(before|after) \d{4}-\d\d-\d\d /.test(reason)) return short(reason ? `PostgreSQL says: ${reason}` : 'PostgreSQL gave no reason');
      const { lastCommitEpoch: c, targetEpoch: te } = times;
      if (c !== null && te !== null && (t.exclusive ? c >= te : c > te)) return short(`its last commit is after the target time`);
      return { ok: true, message: `Reached time ${t.value ?? ''} (stopped ${reason}): ${where(r)}` };
    }
    case 'immediate': {
      if (reason !== 'reached consistency') return short(reason ? `PostgreSQL says: ${reason}` : 'PostgreSQL gave no reason');
      return { ok: true, message: `Reached the end of the backup (consistency): ${where(r)}` };
    }
  }
}

/**
 * Why PostgreSQL stopped during recovery, from its log (lc_messages = C): the target was not
 * reached (the archive ended first: where it ended), or the FATAL/PANIC message.
 */
export function diagnoseRecoveryLog(log: string, targetDescription: string): string {
  const lines = log.split('\n');
  const redo = /redo done at ([0-9A-F]+\/[0-9A-F]+)/.exec(log)?.[1];
  const lastTx = /last completed transaction was at log time (.+)$/m.exec(log)?.[1]?.trim();
  const where = [redo ? `the archive ended at ${redo}` : 'the archive ended', lastTx ? `last commit ${lastTx}` : null].filter(Boolean).join(', ');
  if (/recovery ended before configured recovery target was reached/.test(log)) {
    return `Recovery did not reach the target (${targetDescription}): ${where}`;
  }
  const fatal = lines.filter((l) => /\b(FATAL|PANIC):/.test(l)).at(-1);
  const text = fatal ? fatal.replace(/^.*?\b(FATAL|PANIC):\s*/, '') : 'no FATAL message in its log';
  return `The sandbox PostgreSQL stopped during recovery: ${text}${redo ? ` (${where})` : ''}`;
}
