/**
 * Comparing directory trees byte for byte (agent copies against rsync, delta restores against
 * full restores): every entry with its kind, mode, size, SHA-256 and mtime, or link target. Two
 * mtimes are the same when within 2 ms: a copy that sets times through a double in seconds lands
 * within a microsecond of the original, which any rounding to whole ms can put 1 ms apart.
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
        const time = timeless?.test(r) ? '' : ` ${Math.round(st.mtimeMs)}`;
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
    if (skip(k) || sameFacts(got.get(k), want.get(k))) continue;
    diff.push(`${k}: ${got.get(k) ?? '(absent)'} instead of ${want.get(k) ?? '(absent)'}`);
  }
  assert.deepEqual(diff, []);
}

const MTIME = /^(file .*) (\d+)$/;

/** Equal facts, the mtimes of two files within 2 ms. */
function sameFacts(a: string | undefined, b: string | undefined): boolean {
  if (a === b) return true;
  const ma = a === undefined ? null : MTIME.exec(a);
  const mb = b === undefined ? null : MTIME.exec(b);
  return ma !== null && mb !== null && ma[1] === mb[1] && Math.abs(Number(ma[2]) - Number(mb[2])) <= 2;
}
