/**
 * Barman options that barman-ts accepts in the configuration (a Barman file must load) but
 * whose feature it does not have. "Implement or refuse": such a setting is never silently
 * ignored. Each one is warned about when the configuration is loaded, makes `check` fail
 * (`configuration: FAILED (...)`), and the command that would rely on it refuses with exit 1.
 * Options that only tune a feature that is off (snapshot_* with another backup_method) are
 * left alone, as Barman itself ignores them.
 */
import type { ServerOptionValues } from './options.js';

export interface UnsupportedSetting {
  /** The option as the user wrote it. */
  option: string;
  /** One line: what is set and that barman-ts does not support it. */
  message: string;
  /** The command family that refuses to run with it. */
  refusedBy: 'backup' | 'restore';
}

type Settings = Pick<ServerOptionValues, 'backup_method' | 'staging_location' | 'recovery_staging_path' | 'combine_mode'>;

export function unsupportedSettings(srv: Settings): UnsupportedSetting[] {
  const out: UnsupportedSetting[] = [];
  if (srv.backup_method === 'snapshot') {
    out.push({
      option: 'backup_method',
      message: 'backup_method = snapshot: barman-ts does not support snapshot backups (backup refuses; use postgres, rsync or local-rsync)',
      refusedBy: 'backup',
    });
  }
  if (srv.staging_location === 'remote') {
    out.push({
      option: 'staging_location',
      message: 'staging_location = remote: barman-ts does not support staging on the recovery host (remote restores of compressed or encrypted backups refuse; use local)',
      refusedBy: 'restore',
    });
  }
  if (srv.recovery_staging_path) {
    out.push({
      option: 'recovery_staging_path',
      message: 'recovery_staging_path: barman-ts does not support staging on the recovery host (remote restores of compressed or encrypted backups refuse; use staging_path)',
      refusedBy: 'restore',
    });
  }
  return out;
}

/** The `check` line for them, or null when there is none. */
export function unsupportedCheckLine(srv: Settings): { name: string; ok: false; hint: string } | null {
  const list = unsupportedSettings(srv);
  if (list.length === 0) return null;
  return { name: 'configuration', ok: false, hint: `not supported by barman-ts: ${list.map((u) => u.option).join(', ')} (see the warnings)` };
}

/**
 * Settings that change nothing in barman-ts and say so once: combine_mode only matters when an
 * incremental backup is restored with pg_combinebackup, which barman-ts refuses to do (with
 * its own error), so a restore is never made differently from what was asked.
 */
export function ineffectiveSettings(srv: Settings): string[] {
  if (srv.combine_mode && srv.combine_mode !== 'copy') {
    return [`combine_mode = ${srv.combine_mode}: barman-ts does not restore incremental backups (pg_combinebackup), so this option has no effect`];
  }
  return [];
}
