/**
 * The directories of a bench run: a root (0755) under the system temp directory with `pg/`
 * (the cluster, owned by postgres), `barman/` (barman_home) and `scratch/` (restores, owned by
 * barman), the path of barman.conf, and a runner of our CLI as the barman user.
 */
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BARMAN_USER, chownTo, must, PG_USER } from '../src/sandbox/local.js';
import { BARMAN_SCRIPT } from '../src/util/self.js';
import { run } from '../src/util/proc.js';

export interface BenchRoot {
  root: string;
  pgDir: string;
  home: string;
  scratch: string;
  conf: string;
  barman(...args: string[]): Promise<string>;
}

export function benchRoot(prefix: string): BenchRoot {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(root, 0o755);
  const pgDir = path.join(root, 'pg');
  const home = path.join(root, 'barman');
  const scratch = path.join(root, 'scratch');
  for (const d of [pgDir, home, scratch]) fs.mkdirSync(d, { mode: 0o755 });
  chownTo(PG_USER, pgDir);
  chownTo(BARMAN_USER, home);
  chownTo(BARMAN_USER, scratch);
  const conf = path.join(root, 'barman.conf');
  return { root, pgDir, home, scratch, conf, barman: (...a: string[]) => must(BARMAN_USER, process.execPath, [BARMAN_SCRIPT, '-c', conf, ...a]) };
}


/** A bench's scratch root under /tmp (0755), and a maker of directories in it owned by a user. */
export async function makeBenchRoot(prefix: string): Promise<{ root: string; mkdirFor(name: string, user: string, mode?: number): Promise<string> }> {
  const root = await fsp.mkdtemp(path.join('/tmp', prefix));
  await fsp.chmod(root, 0o755);
  const mkdirFor = async (name: string, user: string, mode = 0o755): Promise<string> => {
    const d = path.join(root, name);
    await fsp.mkdir(d, { mode });
    await fsp.chmod(d, mode);
    chownTo(user, d);
    return d;
  };
  return { root, mkdirFor };
}

/**
 * `barman cron`, then wait until receive-wal streams for each server (a .partial in its
 * streaming/ directory), running cron again every 5 s: a `switch-wal --archive` sent before
 * pg_receivewal and its slot exist closes a segment that is never streamed, and waits in vain.
 */
export async function cronUntilStreaming(barman: (...a: string[]) => Promise<unknown>, home: string, servers: readonly string[]): Promise<void> {
  const streaming = (srv: string) => {
    try {
      return fs.readdirSync(path.join(home, srv, 'streaming')).some((n) => n.endsWith('.partial'));
    } catch {
      return false;
    }
  };
  for (let i = 0; ; i++) {
    if (i % 25 === 0) await barman('cron');
    if (servers.every(streaming)) return;
    if (i >= 300) throw new Error(`receive-wal is not streaming for ${servers.filter((s) => !streaming(s)).join(', ')} after 60 s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * An XFS file system with reflink for the barman user, on a sparse file under `root` (the same
 * disk as the rest), mounted through a loop device; null where mkfs.xfs is not installed.
 */
export async function mountXfs(root: string, mkdirFor: (name: string, owner: string, mode?: number) => Promise<string>): Promise<string | null> {
  const mkfs = await run('mkfs.xfs', ['-V']).catch(() => null);
  if (!mkfs || mkfs.code !== 0) return null;
  const image = path.join(root, 'xfs.img');
  await fsp.writeFile(image, '');
  await fsp.truncate(image, 12 * 1024 * 1024 * 1024);
  await must('root', 'mkfs.xfs', ['-q', '-m', 'reflink=1', image]);
  const mnt = await mkdirFor('xfs', 'root', 0o755);
  await must('root', 'mount', ['-o', 'loop', image, mnt]);
  chownTo(BARMAN_USER, mnt);
  await fsp.chmod(mnt, 0o700);
  return mnt;
}
