/**
 * `recovery drill` (barman-ts extension): fails when the last drill of the server failed, or
 * when none succeeded within drill_max_age. Shown only for servers with drills configured
 * (drill_interval, drill_max_age) or recorded, so the check output of everyone else stays
 * Barman's. It never blocks a backup.
 */
import type { ServerConfig } from '../config/config.js';
import { effectiveStatus, isDrillProcessAlive, lastDrills, loadDrillRecords, type DrillRecord } from '../drill/records.js';
import { errorMessage } from '../util/errors.js';
import { humanDuration } from '../util/format.js';
import type { CheckCollector, CheckResult } from './types.js';

export const DRILL_CHECK = 'recovery drill';

const rto = (r: DrillRecord) => (r.phases.rto_seconds === null ? '' : `, RTO ${r.phases.rto_seconds.toFixed(1)} s`);

/** Pure decision; `now` in seconds since the epoch. Null: no line for this server. */
export function drillCheckLine(
  srv: Pick<ServerConfig, 'drill_interval' | 'drill_max_age'>,
  records: readonly DrillRecord[],
  now: number,
  alive: (r: DrillRecord) => boolean = isDrillProcessAlive,
): CheckResult | null {
  const configured = srv.drill_interval !== null || srv.drill_max_age !== null;
  if (!configured && records.length === 0) return null;
  const finished = records.filter((r) => effectiveStatus(r, alive) !== 'running');
  const { lastPassed } = lastDrills(finished);
  const last = finished.at(-1) ?? null;
  const ago = (r: DrillRecord) => humanDuration(Math.max(0, now - (r.ended_at_timestamp ?? r.started_at_timestamp)));
  if (last && last.status !== 'passed') {
    const why = last.status === 'running' ? 'its process died' : (last.error ?? 'failed');
    return { name: DRILL_CHECK, ok: false, hint: `last drill (backup ${last.backup_id}, ${ago(last)} ago) failed: ${why}` };
  }
  const max = srv.drill_max_age;
  if (max !== null) {
    if (!lastPassed) return { name: DRILL_CHECK, ok: false, hint: `no successful drill, drill_max_age is ${humanDuration(max)}` };
    const age = now - (lastPassed.ended_at_timestamp ?? lastPassed.started_at_timestamp);
    if (age > max) return { name: DRILL_CHECK, ok: false, hint: `last successful drill ${humanDuration(age)} ago, more than drill_max_age (${humanDuration(max)})` };
  }
  if (!lastPassed) return { name: DRILL_CHECK, ok: true, hint: 'no drill yet' };
  return { name: DRILL_CHECK, ok: true, hint: `last drill passed ${ago(lastPassed)} ago (backup ${lastPassed.backup_id}${rto(lastPassed)})` };
}

export async function drillCheck(col: CheckCollector, srv: ServerConfig): Promise<void> {
  let records: DrillRecord[];
  try {
    records = await loadDrillRecords(srv);
  } catch (err) {
    col.add(DRILL_CHECK, false, errorMessage(err));
    return;
  }
  const line = drillCheckLine(srv, records, col.now.getTime() / 1000);
  if (line) col.add(line.name, line.ok, line.hint);
}
