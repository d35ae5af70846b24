/**
 * Tar archives streamed straight into object storage: entries are packed (PAX tar, as
 * Barman's cloud tools write), compressed on the fly (gzip, bzip2 or snappy) and cut into
 * multipart uploads by ObjectWriter, with bounded memory and `jobs` parts in flight. When an
 * archive grows beyond `maxArchiveSize`, it is closed and the next files go to a new one
 * (`data_0001.tar...`), each a complete tar of its own, as Barman does.
 *
 * Files are read at the size they had when listed: a file that shrinks while being read is
 * padded with zeros and one that grows is cut (PostgreSQL's WAL replay repairs both, as for
 * any concurrent backup); a file that vanishes is skipped.
 */
import { promises as fsp, type Stats } from 'node:fs';
import * as path from 'node:path';
import type { Duplex } from 'node:stream';
import tar from 'tar-stream';
import type { ObjectStorage } from '../storage/types.js';
import { ObjectWriter, type Throttle } from '../storage/upload.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { drained } from '../util/streams.js';
import { compressStream } from '../wal/compression.js';
import { TAR_COMPRESSIONS, type CloudLayout, type TarCompression } from './layout.js';

export interface UploadedObject {
  key: string;
  size: number;
  sha256: string;
  startTime: number;
  endTime: number;
}

export interface TarUploadOptions {
  storage: ObjectStorage;
  layout: CloudLayout;
  backupId: string;
  compression: TarCompression | null;
  maxArchiveSize: number;
  partSize: number;
  jobs: number;
  throttle: Throttle | null;
  tags: ReadonlyArray<readonly [string, string]> | null;
}

const READ_CHUNK = 1 << 20;

/** One tar file being uploaded. */
class OpenTar {
  readonly pack = tar.pack();
  private readonly compressor: Duplex | null;
  private readonly pumped: Promise<void>;
  readonly startTime = Date.now();

  constructor(readonly writer: ObjectWriter, compression: TarCompression | null) {
    this.compressor = compression ? compressStream(TAR_COMPRESSIONS[compression], 'medium') : null;
    this.pumped = this.pump();
    this.pumped.catch(() => undefined);
  }

  private async pump(): Promise<void> {
    const { compressor, writer } = this;
    if (!compressor) {
      for await (const chunk of this.pack as AsyncIterable<Buffer>) await writer.write(chunk);
      return;
    }
    const feeding = (async () => {
      try {
        for await (const chunk of this.pack as AsyncIterable<Buffer>) if (!compressor.write(chunk)) await drained(compressor);
        compressor.end();
      } catch (err) {
        compressor.destroy(err as Error);
        throw err;
      }
    })();
    feeding.catch(() => undefined);
    for await (const chunk of compressor as AsyncIterable<Buffer>) await writer.write(chunk);
    await feeding;
  }

  /** Bytes produced so far (compressed). */
  get size(): number {
    return this.writer.written;
  }

  async finish(): Promise<UploadedObject> {
    this.pack.finalize();
    await this.pumped;
    const res = await this.writer.end();
    return { key: this.writer.key, size: res.size, sha256: res.sha256, startTime: this.startTime, endTime: Date.now() };
  }

  async abort(err: Error): Promise<void> {
    this.pack.destroy(err);
    this.compressor?.destroy(err);
    await this.pumped.catch(() => undefined);
    await this.writer.abort();
  }
}

/** Write one entry's content to a tar entry stream, respecting back-pressure. */
async function writeEntry(entry: NodeJS.WritableStream & { destroyed?: boolean }, data: Buffer): Promise<void> {
  if (!entry.write(data)) await drained(entry as never);
}

/** A named archive (`data` or a tablespace oid) with its continuation parts. */
export class CloudTarUploader {
  private current: OpenTar | null = null;
  private part = 0;
  readonly uploaded: UploadedObject[] = [];

  constructor(
    private readonly o: TarUploadOptions,
    readonly base: string,
    private readonly signal?: AbortSignal,
  ) {}

  private async tarForNext(): Promise<OpenTar> {
    if (this.signal?.aborted) throw new BarmanError('Barman cloud backup was interrupted by the user', 1);
    if (this.current && this.current.size > this.o.maxArchiveSize) {
      this.uploaded.push(await this.current.finish());
      this.current = null;
      this.part++;
    }
    if (!this.current) {
      const key = this.o.layout.tarKey(this.o.backupId, this.base, this.part, this.o.compression);
      const writer = new ObjectWriter(this.o.storage, key, { partSize: this.o.partSize, jobs: this.o.jobs, throttle: this.o.throttle, tags: this.o.tags });
      this.current = new OpenTar(writer, this.o.compression);
    }
    return this.current;
  }

  /** Add a directory, symlink or regular file from disk under `arcname`; false when it vanished. */
  async addPath(abs: string, arcname: string, st: Stats): Promise<boolean> {
    const t = await this.tarForNext();
    const header = { name: arcname, mode: st.mode & 0o7777, mtime: st.mtime, uid: st.uid, gid: st.gid };
    if (st.isDirectory()) {
      await new Promise<void>((resolve, reject) => t.pack.entry({ ...header, type: 'directory' }, (err) => (err ? reject(err) : resolve())));
      return true;
    }
    if (st.isSymbolicLink()) {
      let linkname: string;
      try {
        linkname = await fsp.readlink(abs);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
        throw err;
      }
      await new Promise<void>((resolve, reject) => t.pack.entry({ ...header, type: 'symlink', linkname }, (err) => (err ? reject(err) : resolve())));
      return true;
    }
    if (!st.isFile()) return false;
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(abs, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw new BarmanError(`cannot read ${abs}: ${errorMessage(err)}`);
    }
    try {
      const size = st.size;
      let done: () => void = () => undefined;
      let fail: (e: Error) => void = () => undefined;
      const finished = new Promise<void>((resolve, reject) => {
        done = resolve;
        fail = reject;
      });
      const entry = t.pack.entry({ ...header, size, type: 'file' }, (err) => (err ? fail(err) : done()));
      // Left half-written (interrupted), the entry and its callback see the pack destroyed by
      // abort(): the error that matters is the one thrown here, not an unhandled copy of it.
      finished.catch(() => undefined);
      (entry as unknown as NodeJS.EventEmitter).on('error', () => undefined);
      let sent = 0;
      // Plain reads on the handle, not a ReadStream on its fd: destroying such a stream (an
      // interrupted backup leaving the loop) closes the fd, and the handle's close then closed
      // it a second time (EBADF thrown from nowhere, or another file's descriptor closed).
      while (sent < size) {
        if (this.signal?.aborted) throw new BarmanError('Barman cloud backup was interrupted by the user', 1);
        const want = Math.min(READ_CHUNK, size - sent);
        const buf = Buffer.allocUnsafe(want);
        const { bytesRead } = await fh.read(buf, 0, want, sent);
        if (bytesRead === 0) break; // shrunk: padded below
        sent += bytesRead;
        await writeEntry(entry, bytesRead === want ? buf : buf.subarray(0, bytesRead));
      }
      // Shrunk while read: pad to the size announced in the header.
      while (sent < size) {
        const n = Math.min(READ_CHUNK, size - sent);
        await writeEntry(entry, Buffer.alloc(n));
        sent += n;
      }
      (entry as unknown as { end(): void }).end();
      await finished;
    } finally {
      await fh.close();
    }
    return true;
  }

  /** Add an in-memory file (backup_label). */
  async addBuffer(arcname: string, data: Buffer, meta: { mode?: number; uid?: number; gid?: number } = {}): Promise<void> {
    const t = await this.tarForNext();
    await new Promise<void>((resolve, reject) =>
      t.pack.entry({ name: arcname, size: data.length, mode: meta.mode ?? 0o644, uid: meta.uid ?? 0, gid: meta.gid ?? 0, mtime: new Date(), type: 'file' }, data, (err) =>
        err ? reject(err) : resolve(),
      ),
    );
  }

  /** Close the last part; returns every object of this archive. */
  async close(): Promise<UploadedObject[]> {
    if (this.current) {
      this.uploaded.push(await this.current.finish());
      this.current = null;
    }
    return this.uploaded;
  }

  async abort(err: Error): Promise<void> {
    await this.current?.abort(err);
    this.current = null;
  }
}

// ---------------------------------------------------------------------------------------------
// Directory walk with Barman's include/exclude rules (barman.fs.path_allowed)

/** One rule of Barman's rsync-like syntax: `/` anchors, `*` within a component, `**` across. */
function ruleRegex(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] as string;
    if (pattern.startsWith('**', i)) {
      re += '.*';
      i++;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '.';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 's');
}

export type PathRule = (rel: string, isDir: boolean) => boolean;

export function matcher(rules: readonly string[]): PathRule {
  const compiled = rules.map((raw) => {
    let rule = raw;
    const dirOnly = rule.endsWith('/');
    if (dirOnly) rule = rule.slice(0, -1);
    const anchored = rule.startsWith('/');
    if (anchored) rule = rule.slice(1);
    return { dirOnly, direct: ruleRegex(rule), suffix: anchored ? null : ruleRegex(`**/${rule}`) };
  });
  return (rel, isDir) => compiled.some((r) => (!r.dirOnly || isDir) && (r.direct.test(rel) || (r.suffix !== null && r.suffix.test(rel))));
}

/** pg_basebackup-like exclusions, anywhere in the tree (Barman's EXCLUDE_LIST). */
export const EXCLUDE_LIST: readonly string[] = [
  'pgsql_tmp*',
  'postgresql.auto.conf.tmp',
  'current_logfiles.tmp',
  'pg_internal.init',
  'postmaster.pid',
  'postmaster.opts',
  'recovery.conf',
  'standby.signal',
  'pg_dynshmem/*',
  'pg_notify/*',
  'pg_replslot/*',
  'pg_serial/*',
  'pg_stat_tmp/*',
  'pg_snapshots/*',
  'pg_subtrans/*',
];

/** Exclusions anchored at PGDATA (Barman's PGDATA_EXCLUDE_LIST); pg_control is added last. */
export const PGDATA_EXCLUDE_LIST: readonly string[] = ['/pg_log/*', '/log/*', '/pg_xlog/*', '/pg_wal/*', '/global/pg_control'];

/**
 * Add a directory tree to `tar` (directories before their contents, names sorted), skipping
 * what `exclude` names unless `include` names it.
 */
export async function uploadTree(tar: CloudTarUploader, root: string, exclude: PathRule, include: PathRule | null): Promise<void> {
  const allowed = (rel: string, isDir: boolean) => (include && include(rel, isDir)) || !exclude(rel, isDir);
  const rootStat = await fsp.stat(root);
  await tar.addPath(root, '.', rootStat);
  const walk = async (relDir: string): Promise<void> => {
    const abs = relDir ? path.join(root, relDir) : root;
    let names: string[];
    try {
      names = (await fsp.readdir(abs)).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw new BarmanError(`cannot read ${abs}: ${errorMessage(err)}`);
    }
    for (const name of names) {
      const rel = relDir ? `${relDir}/${name}` : name;
      const full = path.join(abs, name);
      let st: Stats;
      try {
        st = await fsp.lstat(full);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      const isDir = st.isDirectory();
      if (!allowed(rel, isDir)) continue;
      await tar.addPath(full, rel, st);
      if (isDir) await walk(rel);
    }
  };
  await walk('');
}
