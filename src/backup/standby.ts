/**
 * Backups from a streaming standby (conninfo pointing at a server in recovery). The copy works
 * as on a primary (pg_basebackup, or pg_backup_start/stop on the standby), but a standby
 * cannot switch WAL: the segment holding the end of the backup is only completed, and so
 * archived, when the primary leaves it. That needs primary_conninfo, a connection to the
 * primary on which the WAL switch is asked for once the copy is done.
 */
import type { ServerConfig } from '../config/config.js';
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
