/**
 * barman-cloud-restore's work: extract the tars of a backup (data into the destination,
 * each tablespace into its location or the one `--tablespace NAME:LOCATION` gives), then link
 * `pg_tblspc/<oid>` to them and create the WAL directory if the backup had none. Archives are
 * streamed from the object store through a hash, their decompression and GNU tar, several at a
 * time. No recovery configuration is written (as Barman).
 *
 * Speed: gzip archives are decompressed by tar's child (pigz, one thread), so only compressed
 * bytes pass through this process; tar reads 128 KiB records. Durability: write-back is
 * started while tar writes (EarlyWriteback), and one syncfs per file system written ends the
 * restore, before exit 0 (fsync of every file and directory where `sync -f` is missing); a
 * write-back round still in flight then ends beside that final sync, not before it.
 *
 * Verification: when the backup has barman-ts's checksums object, every archive's length and
 * SHA-256 must match what was uploaded; compression and tar check the rest. Any failure removes
 * everything the restore created, so that a half-restored or corrupted directory is never left
 * looking like a data directory.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { runPool } from '../util/pool.js';
import { findProgram } from '../util/proc.js';
import { EarlyWriteback, syncFilesystems } from '../recovery/copy.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { decompressStream } from '../wal/compression.js';
import type { GetResult } from '../storage/types.js';
import type { CloudBackupEntry, CloudCatalog } from './catalog.js';
import { readSums, type ObjectSum } from './integrity.js';
import { TAR_COMPRESSIONS, type TarCompression } from './layout.js';

export interface CloudRestoreRequest {
  catalog: CloudCatalog;
  entry: CloudBackupEntry;
  destination: string;
  /** Tablespace name → new location. */
  relocate: ReadonlyMap<string, string>;
  jobs: number;
  info?: (m: string) => void;
}

/** Absent or empty; throws Barman's "already exists and it is not empty" otherwise. */
async function requireEmpty(dir: string): Promise<boolean> {
  try {
    const names = await fsp.readdir(dir);
    if (names.length > 0) throw new BarmanError(`Destination ${dir} already exists and it is not empty`, 1);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return false;
    if (code === 'ENOTDIR') throw new BarmanError(`Destination ${dir} already exists and it is not a directory`, 1);
    throw err;
  }
}

/**
 * gzip archives are decompressed by GNU tar's own child (pigz when installed, gzip otherwise),
 * so the decompressed bytes go from one process to the other through a pipe and never through
 * JavaScript; only the compressed stream passes here, to be hashed. Other compressions are
 * decompressed in this process.
 *
 * pigz runs with `-p 1`: inflating cannot be split over threads, and pigz's default helper
 * threads (read, write, check) hand every buffer over with a futex wake-up. Measured on the
 * bench machine (2 cores, loaded) on a 37 MB archive of 600 MB: `pigz -d -p 1` 0.39 s of CPU
 * and 0.5 to 1.2 s, `pigz -d` 0.94 to 1.08 s of CPU and 2.5 to 2.8 s, gzip -d 1.9 s of CPU.
 * The CPU saved is what tar and this process need beside it.
 */
function tarDecompression(compression: TarCompression | null): string[] {
  if (compression !== 'gz') return [];
  pigz ??= findProgram('pigz', null) ?? '';
  return [pigz ? `--use-compress-program=${pigz} -p 1` : '-z'];
}
let pigz: string | undefined;

/** Stream one archive into `target` with GNU tar, verifying its bytes against `sum`. */
async function extractArchive(catalog: CloudCatalog, key: string, compression: TarCompression | null, target: string, sum: ObjectSum | null, written: (compressed: number) => void): Promise<void> {
  // The request goes out while tar (and its decompressor) start: both take a while.
  const fetching = catalog.storage.get(key);
  fetching.catch(() => undefined);
  const byTar = tarDecompression(compression);
  const hash = createHash('sha256');
  let bytes = 0;
  const verify = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      bytes += chunk.length;
      written(chunk.length);
      cb(null, chunk);
    },
  });
  // 128 KiB records: a tenth of the read and write calls of tar's default 10 KiB ones.
  const tar = spawn('tar', ['-x', '-b', '256', '-f', '-', '-C', target, ...byTar], { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  tar.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const exited = new Promise<number>((resolve) => tar.once('close', (code) => resolve(code ?? 1)));
  // GNU tar stops reading at the end-of-archive blocks; the zero padding that Python's tarfile
  // (Barman) writes after them up to a 10 KiB record is still read here (and hashed), not sent.
  let tarGone = false;
  tar.stdin.on('error', () => (tarGone = true));
  tar.stdin.on('close', () => (tarGone = true));
  let res: GetResult | null;
  try {
    res = await fetching;
    if (!res) throw new BarmanError(`${key} disappeared from the bucket`, 1);
  } catch (err) {
    tar.kill();
    await exited;
    throw err;
  }
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      if (tarGone || tar.stdin.write(chunk)) return cb();
      const go = () => {
        tar.stdin.off('drain', go);
        tar.stdin.off('close', go);
        cb();
      };
      tar.stdin.on('drain', go);
      tar.stdin.on('close', go);
    },
    final(cb) {
      if (!tarGone) tar.stdin.end();
      cb();
    },
  });
  const stages: Array<NodeJS.ReadableStream | NodeJS.WritableStream | NodeJS.ReadWriteStream> = [res.body as Readable, verify];
  if (compression && byTar.length === 0) stages.push(decompressStream(TAR_COMPRESSIONS[compression]));
  stages.push(sink);
  try {
    await pipeline(stages as unknown as [Readable, ...NodeJS.WritableStream[]]);
  } catch (err) {
    tar.kill();
    await exited;
    throw new BarmanError(`cannot extract ${key}: ${errorMessage(err)}${stderr ? ` (${stderr.trim().split('\n').at(-1)})` : ''}`, 4);
  }
  const code = await exited;
  if (code !== 0) throw new BarmanError(`cannot extract ${key}: tar exited with code ${code}: ${stderr.trim().split('\n').at(-1) ?? ''}`, 4);
  if (bytes !== res.size) throw new BarmanError(`${key} was cut short: ${bytes} of ${res.size} bytes read`, 4);
  if (sum) {
    if (sum.size !== bytes) throw new BarmanError(`${key} is corrupted: ${bytes} bytes in the bucket, ${sum.size} uploaded`, 4);
    if (hash.digest('hex') !== sum.sha256) throw new BarmanError(`${key} is corrupted: its SHA-256 differs from the one recorded at upload`, 4);
  }
}

/** Restore `entry` into `destination`. */
export async function cloudRestore(req: CloudRestoreRequest): Promise<void> {
  const { catalog, entry } = req;
  const say = req.info ?? (() => undefined);
  const dest = path.resolve(req.destination);
  // Two independent round trips, sent together.
  const [files, sums] = await Promise.all([catalog.backupFiles(entry), readSums(catalog.storage, catalog.layout.sumsKey(entry.id))]);
  const backupDir = catalog.layout.backupDir(entry.id);

  const targets = new Map<number | null, string>();
  const links: Array<[string, string]> = [];
  for (const f of files) {
    if (f.oid === null) {
      targets.set(null, dest);
      continue;
    }
    const t = (entry.info.tablespaces ?? []).find((x) => x.oid === f.oid);
    if (!t) throw new BarmanError(`The backup file oid '${f.oid}' must be present in backupinfo.tablespaces list`, 4);
    const relocated = req.relocate.get(t.name);
    const location = relocated ? await fsp.realpath(relocated).catch(() => path.resolve(relocated)) : t.location;
    targets.set(f.oid, location);
    links.push([path.join(dest, 'pg_tblspc', String(f.oid)), location]);
  }
  // Every target must be absent or empty before anything is written.
  const existed = new Map<string, boolean>();
  for (const dir of new Set(targets.values())) existed.set(dir, await requireEmpty(dir));

  const created = [...existed.keys()];
  const writeback = new Map(created.map((dir) => [dir, new EarlyWriteback(dir)]));
  // Rounds in flight end beside the final sync, not before it (they ended on failure too).
  const stopWriteback = () => Promise.all([...writeback.values()].map((wb) => wb.stop()));
  try {
    for (const dir of created) await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const jobs = files.flatMap((f) => f.keys.map((key) => ({ key, compression: f.compression, target: targets.get(f.oid) as string })));
    // Write-back starts while tar still writes, so that the final syncfs has little left to do.
    // Bytes on disk are estimated from the bytes downloaded and the backup's compression ratio.
    const stored = [...(sums?.values() ?? [])].reduce((n, x) => n + x.size, 0);
    const ratio = stored > 0 && entry.info.size ? Math.max(1, entry.info.size / stored) : files.some((f) => f.compression) ? 4 : 1;
    await runPool(jobs, Math.max(1, req.jobs), async (j) => {
      say(`Extracting ${j.key} to ${j.target}${j.compression ? ` (decompressing ${TAR_COMPRESSIONS[j.compression]})` : ''}`);
      const wb = writeback.get(j.target);
      await extractArchive(catalog, j.key, j.compression, j.target, sums?.get(j.key.slice(backupDir.length)) ?? null, (n) => wb?.add(n * ratio));
    });
    const rounds = stopWriteback();
    if (sums) {
      for (const j of jobs) {
        if (!sums.has(j.key.slice(backupDir.length))) throw new BarmanError(`${j.key} is not among the objects uploaded with the backup`, 4);
      }
    }
    for (const [link, target] of links) {
      await fsp.rm(link, { force: true });
      await fsp.mkdir(path.dirname(link), { recursive: true, mode: 0o700 });
      await fsp.symlink(target, link);
    }
    const walDir = path.join(dest, (entry.info.version ?? 100000) >= 100000 ? 'pg_wal' : 'pg_xlog');
    await fsp.mkdir(walDir, { recursive: true, mode: 0o700 });
    // Owned like the data directory the backup restored (tar keeps owners only as root).
    const st = await fsp.stat(dest);
    await fsp.chown(walDir, st.uid, st.gid).catch(() => undefined);
    // Durable before exit 0: one syncfs per file system written (every file tar wrote, the
    // links, pg_wal), and the directories holding the targets we created.
    await Promise.all([syncFilesystems(created, created.map((d) => path.dirname(d))), rounds]);
  } catch (err) {
    await stopWriteback();
    // Leave nothing that looks like a data directory: empty what we filled, remove what we made.
    for (const dir of created) {
      if (existed.get(dir)) {
        for (const name of await fsp.readdir(dir).catch(() => [] as string[])) await fsp.rm(path.join(dir, name), { recursive: true, force: true });
      } else {
        await fsp.rm(dir, { recursive: true, force: true });
      }
    }
    throw err;
  }
}
