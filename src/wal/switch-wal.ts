/**
 * `switch-wal`: close the current WAL file on the server, optionally waiting until that file is in
 * the archive (we run the archiver ourselves while waiting, so this works without cron).
 */
import type { ServerConfig } from '../config/config.js';
import { withConnection } from '../postgres/connection.js';
import { BarmanError } from '../util/errors.js';
import { archiveWal, walArchivePath } from './archiver.js';
import { LockBusyError } from '../catalog/lock.js';
import { pathExists } from '../util/fsutil.js';

export interface SwitchResult {
  closed: string | null;
  archived: boolean;
}

export async function switchWal(
  srv: ServerConfig,
  opts: { force: boolean; archive: boolean; archiveTimeoutSec: number },
): Promise<SwitchResult> {
  const closed = await withConnection(srv.conninfo ?? '', async (pg) => {
    if (await pg.isInRecovery()) throw new BarmanError(`The server '${srv.name}' is a standby: switch-wal is not possible`);
    if (opts.force) await pg.checkpoint();
    return (await pg.switchWal()).closed;
  });
  if (!opts.archive || !closed) return { closed, archived: false };
  const deadline = Date.now() + opts.archiveTimeoutSec * 1000;
  while (Date.now() < deadline) {
    try {
      await archiveWal(srv);
    } catch (err) {
      if (!(err instanceof LockBusyError)) throw err;
    }
    if (await pathExists(walArchivePath(srv, closed))) return { closed, archived: true };
    await new Promise((r) => setTimeout(r, 250));
  }
  return { closed, archived: await pathExists(walArchivePath(srv, closed)) };
}
