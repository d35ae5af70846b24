/**
 * What a backup executor (postgres = pg_basebackup, rsync = concurrent backup API + rsync) hands
 * back to the method-independent frame in backup.ts once its copy is complete.
 */
import type { PyValue } from '../catalog/pyliteral.js';

export interface CopyOutcome {
  /** The backup_label text PostgreSQL produced for this backup. */
  labelText: string;
  /** End LSN (`X/X`) of the backup. */
  endLsn: string;
  format: 'plain' | 'tar';
  compression: string | null;
  /** Wall-clock seconds of the copy itself. */
  copySeconds: number;
  /** copy_stats entries after copy_time/total_time (Barman's order), e.g. number_of_workers. */
  extraCopyStats: [string, PyValue][];
  /** Bytes not shared with an earlier backup; null = the whole size. */
  deduplicatedSize: number | null;
  /**
   * SHA-256 and size of files the copy already hashed (barman-ts agent), by path relative to
   * the data directory as a backup_manifest names them: the manifest is then written without
   * reading those files again.
   */
  knownChecksums?: ReadonlyMap<string, { size: number; sha256: string }>;
}
