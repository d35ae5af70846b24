/**
 * The lines a passive server adds to `check` beyond Barman's (barman-ts extension): `last sync`
 * (the primary answered cron's sync-info) and `sync lag` (against `sync_lag_maximum_age`).
 */
import type { ServerConfig } from '../config/config.js';
import { syncCheckLines, syncLag } from '../geo/lag.js';
import type { CheckCollector } from './types.js';

export async function passiveSyncChecks(col: CheckCollector, srv: ServerConfig): Promise<void> {
  const now = col.now.getTime();
  const limit = srv.sync_lag_maximum_age ?? null;
  for (const l of syncCheckLines(await syncLag(srv, now), limit, now)) col.add(l.name, l.ok, l.hint);
}
