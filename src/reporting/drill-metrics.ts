/**
 * `barman metrics` gauges of recovery drills (barman-ts extension), per server with recorded
 * drills: when the last successful drill ended, the RTO it measured, and whether the last
 * drill passed. A server never drilled gets none of them.
 */
import type { Gauge, Registry } from 'prom-client';
import type { ServerConfig } from '../config/config.js';
import { effectiveStatus, isDrillProcessAlive, lastDrills, loadDrillRecords } from '../drill/records.js';

export const DRILL_METRIC = {
  lastSuccessTimestamp: 'barman_drill_last_success_timestamp_seconds',
  lastSuccessAge: 'barman_drill_last_success_age_seconds',
  lastSuccessRto: 'barman_drill_last_success_rto_seconds',
  lastResult: 'barman_drill_last_result',
} as const;

export interface DrillGauges {
  collect(srv: ServerConfig, nowMs: number): Promise<void>;
}

export async function drillGauges(registry: Registry): Promise<DrillGauges> {
  const { Gauge: G } = await import('prom-client');
  const g = (name: string, help: string): Gauge<string> => new G({ name, help, labelNames: ['server'], registers: [registry] });
  const ts = g(DRILL_METRIC.lastSuccessTimestamp, 'End of the last successful recovery drill, seconds since the epoch');
  const age = g(DRILL_METRIC.lastSuccessAge, 'Seconds since the end of the last successful recovery drill');
  const rto = g(DRILL_METRIC.lastSuccessRto, 'Recovery time (restore, replay, promotion) measured by the last successful drill, in seconds');
  const result = g(DRILL_METRIC.lastResult, 'Result of the last finished recovery drill (1 passed, 0 failed)');
  return {
    async collect(srv, nowMs) {
      // Unreadable drill results cost the drill gauges only, never the scrape.
      const records = await loadDrillRecords(srv).catch(() => []);
      const finished = records.filter((r) => effectiveStatus(r, isDrillProcessAlive) !== 'running');
      const { lastPassed } = lastDrills(finished);
      const last = finished.at(-1);
      const server = srv.name;
      if (last) result.set({ server }, last.status === 'passed' ? 1 : 0);
      if (lastPassed) {
        const end = lastPassed.ended_at_timestamp ?? lastPassed.started_at_timestamp;
        ts.set({ server }, end);
        age.set({ server }, Math.max(0, nowMs / 1000 - end));
        if (lastPassed.phases.rto_seconds !== null) rto.set({ server }, lastPassed.phases.rto_seconds);
      }
    },
  };
}
