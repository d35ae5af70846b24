/**
 * Facts from the `backup_label` file PostgreSQL writes into a base backup, and the end of the
 * backup's WAL range from `backup_manifest` (pg_basebackup writes both).
 */
import { BarmanError } from '../util/errors.js';

export interface BackupLabel {
  startLsn: string;
  startWal: string;
  checkpointLsn: string | null;
  startTime: string | null;
  timeline: number;
  label: string | null;
}

export function parseBackupLabel(text: string): BackupLabel {
  const get = (re: RegExp) => re.exec(text)?.slice(1) ?? null;
  const start = get(/^START WAL LOCATION: ([0-9A-Fa-f]+\/[0-9A-Fa-f]+) \(file ([0-9A-F]{24})\)$/m);
  if (!start) throw new BarmanError('backup_label has no START WAL LOCATION line');
  const tli = get(/^START TIMELINE: (\d+)$/m);
  return {
    startLsn: start[0] ?? '',
    startWal: start[1] ?? '',
    checkpointLsn: get(/^CHECKPOINT LOCATION: (\S+)$/m)?.[0] ?? null,
    startTime: get(/^START TIME: (.+)$/m)?.[0] ?? null,
    timeline: tli ? Number(tli[0]) : Number.parseInt((start[1] ?? '').slice(0, 8), 16),
    label: get(/^LABEL: (.*)$/m)?.[0] ?? null,
  };
}

export interface WalRange {
  timeline: number;
  startLsn: string;
  endLsn: string;
}

/** The `WAL-Ranges` of a backup_manifest (PostgreSQL >= 13). */
export function manifestWalRanges(manifestText: string): WalRange[] {
  let doc: unknown;
  try {
    doc = JSON.parse(manifestText);
  } catch {
    throw new BarmanError('backup_manifest is not valid JSON');
  }
  const ranges = (doc as { 'WAL-Ranges'?: { Timeline: number; 'Start-LSN': string; 'End-LSN': string }[] })['WAL-Ranges'];
  if (!Array.isArray(ranges) || ranges.length === 0) throw new BarmanError('backup_manifest has no WAL-Ranges');
  return ranges.map((r) => ({ timeline: r.Timeline, startLsn: r['Start-LSN'], endLsn: r['End-LSN'] }));
}
