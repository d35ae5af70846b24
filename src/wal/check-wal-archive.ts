/**
 * `check-wal-archive`: is the WAL archive of a server safe for a (new) PostgreSQL cluster to
 * archive into? A new cluster restarts at timeline 1 (or a promoted one at a new timeline):
 * its WAL names would collide with, or silently mix into, WALs already archived from another
 * cluster. So without a timeline the archive must be empty; with `--timeline N` it must hold no
 * WAL of timeline N or later (older timelines belong to the history the cluster came from).
 */
import type { ServerConfig } from '../config/config.js';
import { readXlogDb } from '../catalog/xlogdb.js';
import { serverPaths } from '../catalog/server-dirs.js';
import { BarmanError } from '../util/errors.js';
import { isAnyXlogFile, timelineOf } from './names.js';
import { pathExistsSync } from '../util/fsutil.js';

export class WalArchiveContentError extends BarmanError {}

/** A timeline given on the command line: a positive integer. */
export function parseTimelineArg(text: string): number {
  const t = text.trim();
  if (!/^\d+$/.test(t) || Number(t) < 1 || Number(t) > 0xffffffff) {
    throw new BarmanError(`Cannot check WAL archive with malformed timeline ${text}`, 2);
  }
  return Number(t);
}

/** Throws WalArchiveContentError when WALs named in `names` make the archive unusable. */
export function checkArchiveUsable(names: readonly string[], timeline?: number): void {
  if (timeline === undefined) {
    if (names.length > 0) throw new WalArchiveContentError('Expected empty archive');
    return;
  }
  if (!Number.isInteger(timeline) || timeline < 1) throw new BarmanError(`Cannot check WAL archive with malformed timeline ${timeline}`, 2);
  let clashing = 0;
  for (const name of names) {
    if (!isAnyXlogFile(name)) throw new WalArchiveContentError(`Unexpected file ${name} found in WAL archive`);
    if (timelineOf(name) >= timeline) clashing++;
  }
  if (clashing > 0) {
    throw new WalArchiveContentError(`Found ${clashing} file${clashing > 1 ? 's' : ''} in WAL archive equal to or newer than timeline ${timeline}`);
  }
}

/** Names in the server's WAL catalog; a server that never archived anything has none. */
async function archivedNames(srv: ServerConfig): Promise<string[]> {
  const p = serverPaths(srv);
  // Without a catalog and without a wals directory there is nothing to rebuild from: do not
  // create either just to find that out.
  if (!pathExistsSync(p.xlogdbFile) && !pathExistsSync(p.xlogdbFileNew) && !pathExistsSync(p.walsDir)) return [];
  return (await readXlogDb(srv)).map((e) => e.name);
}

/** Check the server's archive; throws `WAL archive check failed for server S: ...` when unusable. */
export async function checkWalArchive(srv: ServerConfig, timeline?: number): Promise<void> {
  const names = await archivedNames(srv);
  try {
    checkArchiveUsable(names, timeline);
  } catch (err) {
    if (err instanceof WalArchiveContentError) throw new WalArchiveContentError(`WAL archive check failed for server ${srv.name}: ${err.message}`);
    throw err;
  }
}
