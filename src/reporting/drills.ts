/**
 * How drills are reported (barman-ts extension): `list-drills` lines and JSON, the lines
 * `show-backup` appends after Barman's own output (nothing when the backup was never drilled),
 * and the summary `drill` prints. Pure formatting.
 */
import { effectiveStatus, describeTarget, isDrillProcessAlive, type DrillRecord } from '../drill/records.js';
import { humanDuration, prettySize } from '../util/format.js';
import { PyDateTime } from '../util/pytime.js';

type Alive = (r: DrillRecord) => boolean;

const s = (v: number | null | undefined): string => (v === null || v === undefined ? '-' : `${v.toFixed(2)} s`);

function ctimeOf(epoch: number): string {
  return PyDateTime.fromEpochMicros(Math.round(epoch * 1e6)).ctime();
}

/** `PASSED`, `FAILED`, `RUNNING` or `INTERRUPTED`. */
export function statusWord(r: DrillRecord, alive: Alive = isDrillProcessAlive): string {
  return effectiveStatus(r, alive).toUpperCase();
}

/** The checks on one line: `amcheck OK, sql FAILED, checksums skipped`. */
export function checksLine(r: DrillRecord): string {
  return r.checks.map((c) => `${c.name} ${c.status === 'ok' ? 'OK' : c.status === 'failed' ? 'FAILED' : 'skipped'}`).join(', ') || '-';
}

/** One list-drills line. */
export function listDrillLine(r: DrillRecord, alive: Alive = isDrillProcessAlive): string {
  const st = statusWord(r, alive);
  const head = `${r.server} ${r.id} - backup ${r.backup_id} - ${ctimeOf(r.started_at_timestamp)} - ${st}`;
  const target = `target: ${describeTarget(r.target)}`;
  if (st === 'PASSED') return `${head} - RTO ${s(r.phases.rto_seconds)} - ${target}`;
  if (st === 'FAILED') return `${head} - ${target} - ${r.error ?? ''}`;
  return `${head} - ${target}`;
}

/** The JSON of one drill: the record with its effective status. */
export function drillJson(r: DrillRecord, alive: Alive = isDrillProcessAlive): Record<string, unknown> {
  return { ...r, status: effectiveStatus(r, alive) };
}

const header = (t: string) => `  ${t}:`;
const row = (k: string, v: string | number) => `    ${k.padEnd(21)}: ${v}`;

/**
 * Lines appended to `show-backup` for a backup's drills (newest last in `records`): the last
 * drill, its phases and checks, and the counts. Empty when the backup was never drilled.
 */
export function showBackupDrillLines(records: readonly DrillRecord[], alive: Alive = isDrillProcessAlive): { lines: string[]; json: Record<string, unknown> | null } {
  const last = records.at(-1);
  if (!last) return { lines: [], json: null };
  const passed = records.filter((r) => r.status === 'passed');
  const failed = records.filter((r) => effectiveStatus(r, alive) === 'failed' || effectiveStatus(r, alive) === 'interrupted');
  const lastPassed = passed.at(-1) ?? null;
  const p = last.phases;
  const lines = [header('Recovery drills (barman-ts)')];
  lines.push(row('Last drill', `${statusWord(last, alive)} (${last.id}, started ${last.started_at})`));
  lines.push(row('Target', describeTarget(last.target)));
  if (last.reached) {
    lines.push(row('Reached', `${last.reached.lsn} on timeline ${last.reached.timeline}${last.reached.last_commit_time ? `, last commit ${last.reached.last_commit_time}` : ''}`));
  }
  if (p.rto_seconds !== null) {
    lines.push(row('RTO', `${s(p.rto_seconds)} (restore ${s(p.restore_seconds)}, replay ${s(p.replay_seconds)} of ${last.wal_segments ?? 0} WAL, promote ${s(p.promote_seconds)})`));
  }
  if (last.checks.length > 0) lines.push(row('Checks', `${checksLine(last)} (${s(p.checks_seconds)})`));
  lines.push(row('Total time', s(p.total_seconds)));
  if (last.error) lines.push(row('Error', last.error));
  if (lastPassed && lastPassed !== last) lines.push(row('Last success', `${lastPassed.id} (RTO ${s(lastPassed.phases.rto_seconds)})`));
  lines.push(row('Drills', `${records.length} (${passed.length} passed, ${failed.length} failed)`));
  lines.push('');
  return {
    lines,
    json: {
      drills: records.length,
      passed: passed.length,
      failed: failed.length,
      last: drillJson(last, alive),
      last_passed_id: lastPassed?.id ?? null,
      last_passed_rto_seconds: lastPassed?.phases.rto_seconds ?? null,
    },
  };
}

/** The summary `barman drill` prints at the end. */
export function drillSummaryLines(r: DrillRecord): string[] {
  const p = r.phases;
  const lines = [`Recovery drill ${r.id} of backup ${r.backup_id} of server ${r.server}: ${r.status.toUpperCase()}`];
  const add = (k: string, v: string) => lines.push(`  ${k.padEnd(17)}: ${v}`);
  add('Target', describeTarget(r.target));
  if (r.reached) add('Reached', `${r.reached.lsn} on timeline ${r.reached.timeline} (WAL ${r.reached.wal})${r.reached.last_commit_time ? `, last commit ${r.reached.last_commit_time}` : ''}`);
  if (p.rto_seconds !== null) add('RTO', `${s(p.rto_seconds)} (${humanDuration(p.rto_seconds)})`);
  add('Restore', `${s(p.restore_seconds)}${r.bytes_restored !== null ? ` (${prettySize(r.bytes_restored)})` : ''}`);
  add('Replay', `${s(p.replay_seconds)}${r.wal_segments !== null ? ` (${r.wal_segments} WAL segments)` : ''}${p.consistency_seconds !== null ? `, consistent after ${s(p.consistency_seconds)}` : ''}`);
  add('Promotion', s(p.promote_seconds));
  add('Checks', `${s(p.checks_seconds)}${r.checks.length ? ` (${checksLine(r)})` : ''}`);
  for (const c of r.checks.filter((x) => x.status !== 'ok')) add(`  ${c.name}`, c.detail);
  add('Stop and cleanup', r.kept ? 'kept (--keep)' : s((p.stop_seconds ?? 0) + (p.cleanup_seconds ?? 0)));
  add('Total', `${s(p.total_seconds)}${p.overhead_seconds !== null ? ` (drill overhead ${s(p.overhead_seconds)})` : ''}${p.wait_seconds > 0.5 ? `, after waiting ${s(p.wait_seconds)} for another drill` : ''}`);
  return lines;
}
