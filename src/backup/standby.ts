/**
 * Backups from a streaming standby (conninfo pointing at a server in recovery). The copy works
 * as on a primary (pg_basebackup, or pg_backup_start/stop on the standby), but a standby
 * cannot switch WAL: the segment holding the end of the backup is only completed, and so
 * archived, when the primary leaves it. That needs primary_conninfo, a connection to the
 * primary on which the WAL switch is asked for once the copy is done.
 */
import type { ServerConfig } from '../config/config.js';
import { DEFAULT_XLOG_SEGMENT_SIZE, WAITING_FOR_WALS, type BackupInfo } from '../catalog/backup-info.js';
import { lsnToWal, parseLsn, parseWalName } from '../wal/names.js';
import { PgConnection } from '../postgres/connection.js';
import { BarmanError } from '../util/errors.js';

/**
 * A standby without primary_conninfo is refused before anything is written: its backup would
 * wait, possibly forever on a quiet primary, for an end WAL segment nobody completes.
 */
export function requirePrimaryForStandby(srv: Pick<ServerConfig, 'name' | 'primary_conninfo'>, inRecovery: boolean): void {
  if (!inRecovery || srv.primary_conninfo) return;
  throw new BarmanError(
    `conninfo of server '${srv.name}' points to a standby (PostgreSQL is in recovery): set primary_conninfo to a connection to its primary, which a backup from a standby needs to switch WAL`,
  );
}

/**
 * Complete the backup's end WAL segment: pg_switch_wal() on the server itself, or on the
 * primary when the server is a standby. Nothing is done when the server (primary) already
 * writes a later segment, or cannot be asked (a standby of a standby as "primary").
 * Returns where the switch was asked for, or null.
 */
export async function switchWalAfterBackup(srv: ServerConfig, endWal: string, fromStandby: boolean): Promise<'primary' | 'server' | null> {
  const conninfo = fromStandby ? srv.primary_conninfo : srv.conninfo;
  if (!conninfo) return null;
  const pg = await PgConnection.connect(conninfo);
  try {
    if (await pg.isInRecovery()) {
      if (fromStandby) throw new BarmanError('primary_conninfo points to a server in recovery: cannot switch WAL there');
      return null;
    }
    const current = await pg.currentWalFile();
    // Same timeline (a standby follows its primary's): names compare as positions.
    if (current === null || current > endWal) return null;
    await pg.switchWal();
    return fromStandby ? 'primary' : 'server';
  } finally {
    await pg.close();
  }
}

/**
 * primary_checkpoint_timeout (Barman 3.8+): a backup from a standby still waiting for its end
 * WAL file `primary_checkpoint_timeout` seconds after it ended gets a CHECKPOINT and a WAL
 * switch on the primary. (A switch alone does nothing on a primary that wrote no WAL since the
 * last one: the checkpoint writes some.) Pure: is it due for this backup now?
 */
export function primaryCheckpointDue(
  srv: Pick<ServerConfig, 'primary_conninfo' | 'primary_checkpoint_timeout'>,
  info: Pick<BackupInfo, 'status' | 'end_time' | 'end_wal'>,
  nowMs: number,
): boolean {
  const timeout = srv.primary_checkpoint_timeout;
  if (!srv.primary_conninfo || !(timeout > 0)) return false;
  if (info.status !== WAITING_FOR_WALS || !info.end_time || !info.end_wal) return false;
  return nowMs - Number(info.end_time.epochMicros / 1000n) >= timeout * 1000;
}

/**
 * CHECKPOINT then pg_switch_wal() on the primary (primary_conninfo) when it is still writing
 * `endWal` or an earlier file; nothing when it has moved past it (the file is complete and
 * on its way) or is itself in recovery. Returns whether it was done.
 */
export async function forcePrimaryCheckpoint(srv: Pick<ServerConfig, 'primary_conninfo'>, endWal: string): Promise<boolean> {
  if (!srv.primary_conninfo) return false;
  const pg = await PgConnection.connect(srv.primary_conninfo);
  try {
    if (await pg.isInRecovery()) return false;
    // The file holding the write position, by the position itself: right after a switch it
    // is the first byte of the next file (pg_walfile_name() would still name the old one).
    const segSize = Number((await pg.setting('wal_segment_size')) ?? DEFAULT_XLOG_SEGMENT_SIZE);
    const position = lsnToWal(parseLsn(await pg.currentLsn()), parseWalName(endWal).tli, segSize);
    // Same timeline (a standby follows its primary's): names compare as positions.
    if (position > endWal) return false;
    await pg.checkpoint();
    await pg.switchWal();
    return true;
  } finally {
    await pg.close();
  }
}
