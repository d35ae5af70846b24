/**
 * How far a passive node is behind its primary (barman-ts extension: `barman metrics` and two
 * `check` lines of passive servers), from what the passive already has on disk: primary.info
 * (the primary's last answer, and its mtime: the last successful contact) and the local xlog.db.
 *
 *   segments  WAL segments the primary has that are not here yet
 *   seconds   now minus the instant up to which this node has everything: the primary's last
 *             answer when nothing it listed is missing here, else the archival time of the
 *             oldest WAL file still missing (the data of the last `seconds` would be lost if
 *             the primary site went away now)
 */
import * as fs from 'node:fs';
import type { ServerConfig } from '../config/config.js';
import { DEFAULT_XLOG_SEGMENT_SIZE } from '../catalog/backup-info.js';
import { readXlogDb, xlogDbPath, type XlogDbEntry } from '../catalog/xlogdb.js';
import type { CheckResult } from '../checks/types.js';
import { errorMessage } from '../util/errors.js';
import { humanDuration } from '../util/format.js';
import { parseWalName, segmentsPerXlogId, walNameKind } from '../wal/names.js';
import { loadPrimaryInfo, primaryInfoTime, type PrimaryInfo } from './primary-info.js';

export interface SyncLag {
  /** Epoch seconds of the last successful contact with the primary (primary.info written). */
  lastContact: number;
  /** Newest WAL segment the primary listed, and the newest one here. */
  primaryNewest: string | null;
  localNewest: string | null;
  segments: number;
  seconds: number;
}

/** The segment a WAL file name is about (`.backup` / `.partial` → their segment), else null. */
function segmentOf(name: string): string | null {
  const kind = walNameKind(name);
  return kind === null || kind === 'history' ? null : name.slice(0, 24).toUpperCase();
}

/** Absolute segment number (timeline aside): segments of different log files can be subtracted. */
function position(name: string, segSize: number): number {
  const { log, seg } = parseWalName(name);
  return log * (segmentsPerXlogId(segSize) + 1) + seg;
}

/** The lag (pure): primary.info's content and time, the local xlog.db entries, the clock. */
export function computeSyncLag(primary: PrimaryInfo, contactSec: number, local: readonly XlogDbEntry[], nowSec: number, segSize = DEFAULT_XLOG_SEGMENT_SIZE): SyncLag {
  let localNewest: string | null = null;
  const here = new Set<string>();
  for (const e of local) {
    here.add(e.name);
    const seg = walNameKind(e.name) === 'segment' ? e.name.toUpperCase() : null;
    if (seg && (localNewest === null || seg > localNewest)) localNewest = seg;
  }
  let primaryNewest = segmentOf(primary.last_name);
  for (const w of primary.wals) {
    const seg = segmentOf(w.name);
    if (seg && (primaryNewest === null || seg > primaryNewest)) primaryNewest = seg;
  }
  let segments = 0;
  if (primaryNewest !== null) {
    segments = localNewest === null ? primary.wals.filter((w) => walNameKind(w.name) === 'segment').length : Math.max(0, position(primaryNewest, segSize) - position(localNewest, segSize));
  }
  // The oldest file the primary listed that is not here yet.
  let oldestMissing: number | null = null;
  for (const w of primary.wals) {
    if (here.has(w.name) || w.time === null) continue;
    if (oldestMissing === null || w.time < oldestMissing) oldestMissing = w.time;
  }
  const upTo = segments === 0 && oldestMissing === null ? contactSec : Math.min(contactSec, oldestMissing ?? contactSec);
  return { lastContact: contactSec, primaryNewest, localNewest, segments, seconds: Math.max(0, nowSec - upTo) };
}

/** The lag of a passive server, or null with the reason when it cannot be known yet. */
export async function syncLag(srv: ServerConfig, nowMs: number = Date.now()): Promise<{ lag: SyncLag | null; reason?: string }> {
  let time: Date | null;
  try {
    time = primaryInfoTime(srv);
  } catch (err) {
    return { lag: null, reason: errorMessage(err) };
  }
  if (time === null) return { lag: null, reason: "no answer from the primary yet (run 'barman cron')" };
  try {
    const primary = await loadPrimaryInfo(srv);
    const local = fs.existsSync(xlogDbPath(srv)) ? await readXlogDb(srv) : [];
    return { lag: computeSyncLag(primary, time.getTime() / 1000, local, nowMs / 1000) };
  } catch (err) {
    return { lag: null, reason: errorMessage(err) };
  }
}

/**
 * The `check` lines of a passive server beyond Barman's: `last sync` (the primary answered) and
 * `sync lag` (FAILED beyond `sync_lag_maximum_age`, when set).
 */
export function syncCheckLines(res: { lag: SyncLag | null; reason?: string }, limitSec: number | null, nowMs: number): CheckResult[] {
  const { lag } = res;
  if (!lag) {
    return [
      { name: 'last sync', ok: false, hint: res.reason ?? 'unknown' },
      { name: 'sync lag', ok: limitSec === null, hint: 'unknown' },
    ];
  }
  const ago = Math.max(0, nowMs / 1000 - lag.lastContact);
  const behind = `${lag.segments} WAL segment${lag.segments === 1 ? '' : 's'}, ${humanDuration(lag.seconds)} behind`;
  const lagLine: CheckResult =
    limitSec === null
      ? { name: 'sync lag', ok: true, hint: `${behind}; no sync_lag_maximum_age provided` }
      : lag.seconds > limitSec
        ? { name: 'sync lag', ok: false, hint: `${behind}, more than sync_lag_maximum_age (${humanDuration(limitSec)})` }
        : { name: 'sync lag', ok: true, hint: `${behind}, interval provided: ${humanDuration(limitSec)}` };
  return [{ name: 'last sync', ok: true, hint: `primary answered ${humanDuration(ago)} ago` }, lagLine];
}
