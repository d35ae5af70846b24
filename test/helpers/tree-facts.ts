/**
 * Comparing directory trees byte for byte (agent copies against rsync, delta restores against
 * full restores): every entry with its kind, mode, size, SHA-256 and mtime (ms), or link target.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';

/** Facts of every entry under `root`; files whose path matches `timeless` are compared without their mtime. */
export async function treeFacts(root: string, timeless?: RegExp): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (rel: string): Promise<void> => {
    for (const e of await fs.readdir(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      const abs = path.join(root, r);
      const st = await fs.lstat(abs);
      if (e.isDirectory()) {
        out.set(r, `dir ${(st.mode & 0o7777).toString(8)}`);
        await walk(r);
      } else if (e.isSymbolicLink()) out.set(r, `link ${await fs.readlink(abs)}`);
      else {
        const sha = createHash('sha256').update(await fs.readFile(abs)).digest('hex');
        const time = timeless?.test(r) ? '' : ` ${Math.floor(st.mtimeMs)}`;
        out.set(r, `file ${(st.mode & 0o7777).toString(8)} ${st.size} ${sha}${time}`);
      }
    }
  };
  await walk('');
  return out;
}

/** The same entries with the same facts; on failure, only the entries that differ are shown. */
export function assertSameTree(got: Map<string, string>, want: Map<string, string>, skip: (rel: string) => boolean = () => false): void {
  const diff: string[] = [];
  for (const k of new Set([...got.keys(), ...want.keys()])) {
    if (skip(k) || got.get(k) === want.get(k)) continue;
    diff.push(`${k}: ${got.get(k) ?? '(absent)'} instead of ${want.get(k) ?? '(absent)'}`);
  }
  assert.deepEqual(diff, []);
}
