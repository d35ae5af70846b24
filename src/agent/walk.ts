/**
 * Listing a directory tree on the agent's host: the data directory or a tablespace for a
 * backup, a destination for a delta restore. Symlinks are listed, never followed; an entry
 * that disappears while it is listed (a dropped table) is simply not there; any other error
 * stops the listing.
 */
import { promises as fsp, type Stats } from 'node:fs';
import * as path from 'node:path';

export type WireKind = 'f' | 'd' | 'l';

/** One listed entry: path relative to the root, kind, size, mtime (ms), mode bits, link target. */
export type WireEntry = [rel: string, kind: WireKind, size: number, mtimeMs: number, mode: number, link?: string];

const isMissing = (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOENT';

function kindOf(st: Stats): WireKind | null {
  if (st.isFile()) return 'f';
  if (st.isDirectory()) return 'd';
  if (st.isSymbolicLink()) return 'l';
  return null; // sockets, fifos, devices: nothing a backup copies
}

/**
 * Every entry under `root` (not the root itself) that `exclude` does not reject, parents before
 * their contents; `onEntries` receives them in batches of at most `batch`.
 */
export async function walkTree(
  root: string,
  exclude: (rel: string) => boolean,
  onEntries: (entries: WireEntry[]) => Promise<void>,
  batch = 2000,
): Promise<number> {
  const st = await fsp.stat(root);
  if (!st.isDirectory()) throw new Error(`${root} is not a directory`);
  let pending: WireEntry[] = [];
  let count = 0;
  const emit = async (e: WireEntry): Promise<void> => {
    pending.push(e);
    count += 1;
    if (pending.length >= batch) {
      const out = pending;
      pending = [];
      await onEntries(out);
    }
  };
  const walk = async (dirRel: string): Promise<void> => {
    const abs = dirRel === '' ? root : path.join(root, dirRel);
    let names: string[];
    try {
      names = (await fsp.readdir(abs)).sort();
    } catch (err) {
      if (isMissing(err) && dirRel !== '') return;
      throw err;
    }
    const rels = names.map((n) => (dirRel === '' ? n : `${dirRel}/${n}`)).filter((rel) => !exclude(rel));
    const stats = await Promise.all(rels.map((rel) => fsp.lstat(path.join(root, rel)).catch((err: unknown) => (isMissing(err) ? null : Promise.reject(err)))));
    const dirs: string[] = [];
    for (let i = 0; i < rels.length; i++) {
      const s = stats[i];
      const rel = rels[i] as string;
      if (!s) continue;
      const kind = kindOf(s);
      if (kind === null) continue;
      const e: WireEntry = [rel, kind, kind === 'f' ? s.size : 0, s.mtimeMs, s.mode & 0o7777];
      if (kind === 'l') {
        try {
          e.push(await fsp.readlink(path.join(root, rel)));
        } catch (err) {
          if (isMissing(err)) continue;
          throw err;
        }
      }
      await emit(e);
      if (kind === 'd') dirs.push(rel);
    }
    for (const d of dirs) await walk(d);
  };
  await walk('');
  if (pending.length > 0) await onEntries(pending);
  return count;
}
