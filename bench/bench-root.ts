import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { chownTo } from '../src/sandbox/local.js';

/** A bench's scratch root under /tmp (0755), and a maker of directories in it owned by a user. */
export async function makeBenchRoot(prefix: string): Promise<{ root: string; mkdirFor(name: string, user: string, mode?: number): Promise<string> }> {
  const root = await fs.mkdtemp(path.join('/tmp', prefix));
  await fs.chmod(root, 0o755);
  const mkdirFor = async (name: string, user: string, mode = 0o755): Promise<string> => {
    const d = path.join(root, name);
    await fs.mkdir(d, { mode });
    await fs.chmod(d, mode);
    chownTo(user, d);
    return d;
  };
  return { root, mkdirFor };
}
