/**
 * Storage driver over a local directory (`file:///path` or a mounted file system): keys are
 * relative paths. Writes are durable (temporary name, fsync, rename, fsync of the directory);
 * multipart parts are kept as numbered files beside the object until complete() joins them.
 * Metadata goes to a `.<name>.meta.json` sidecar written before the object appears.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { fsyncDir, writeFileAtomic } from '../util/fsutil.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import type { GetResult, Listing, MultipartUpload, ObjectInfo, ObjectStorage, PutOptions, StorageCapabilities } from './types.js';
import { StorageError } from './types.js';

const PARTS_SUFFIX = '.parts';
const META_PREFIX = '.';
const META_SUFFIX = '.meta.json';

function isInternal(name: string): boolean {
  return name.startsWith('.') && (name.endsWith(META_SUFFIX) || name.endsWith(PARTS_SUFFIX) || name.endsWith('.tmp'));
}

export class PosixStorage implements ObjectStorage {
  readonly capabilities: StorageCapabilities = {
    provider: 'posix',
    minPartSize: 64 << 10,
    maxParts: 1_000_000,
    maxObjectSize: Number.MAX_SAFE_INTEGER,
    maxDeleteBatch: 1000,
    metadata: true,
  };

  constructor(readonly root: string) {}

  get containerName(): string {
    return this.root;
  }

  private file(key: string): string {
    const parts = key.split('/');
    if (key === '' || key.startsWith('/') || parts.some((p) => p === '' || p === '.' || p === '..' || isInternal(p))) {
      throw new BarmanError(`invalid object key '${key}'`);
    }
    return path.join(this.root, ...parts);
  }

  private metaFile(file: string): string {
    return path.join(path.dirname(file), `${META_PREFIX}${path.basename(file)}${META_SUFFIX}`);
  }

  async containerExists(): Promise<boolean> {
    try {
      return (await fsp.stat(this.root)).isDirectory();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw new StorageError(`cannot access ${this.root}: ${errorMessage(err)}`, 'other');
    }
  }

  async createContainer(): Promise<void> {
    await fsp.mkdir(this.root, { recursive: true, mode: 0o700 });
  }

  private async writeMeta(file: string, metadata: Readonly<Record<string, string>> | undefined): Promise<void> {
    const meta = this.metaFile(file);
    if (metadata && Object.keys(metadata).length > 0) await writeFileAtomic(meta, JSON.stringify(metadata));
    else await fsp.rm(meta, { force: true });
  }

  async put(key: string, body: Buffer, opts: PutOptions = {}): Promise<void> {
    const file = this.file(key);
    await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    await this.writeMeta(file, opts.metadata);
    await writeFileAtomic(file, body);
  }

  async get(key: string): Promise<GetResult | null> {
    const file = this.file(key);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(file, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    const st = await fh.stat();
    const metaText = await fsp.readFile(this.metaFile(file), 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw err;
    });
    // The handle's own stream closes it at the end (or on destroy): never a bare fd number,
    // which a late close could take from another file opened meanwhile.
    const body = fh.createReadStream({ highWaterMark: 1 << 20 });
    return { body, size: st.size, metadata: metaText ? (JSON.parse(metaText) as Record<string, string>) : {} };
  }

  async list(prefix: string, delimiter?: string): Promise<Listing> {
    const objects: ObjectInfo[] = [];
    const prefixes = new Set<string>();
    // Walk from the deepest directory the prefix names.
    const slash = prefix.lastIndexOf('/');
    const baseKey = slash >= 0 ? prefix.slice(0, slash) : '';
    const walk = async (dirKey: string): Promise<void> => {
      const dir = dirKey === '' ? this.root : path.join(this.root, ...dirKey.split('/'));
      let entries;
      try {
        entries = await fsp.readdir(dir, { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return;
        throw err;
      }
      for (const ent of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
        if (isInternal(ent.name)) continue;
        const key = dirKey === '' ? ent.name : `${dirKey}/${ent.name}`;
        if (ent.isDirectory()) {
          const asPrefix = `${key}/`;
          if (!(asPrefix.startsWith(prefix) || prefix.startsWith(asPrefix))) continue;
          if (delimiter === '/' && asPrefix.startsWith(prefix) && asPrefix !== prefix) {
            prefixes.add(asPrefix);
            continue;
          }
          await walk(key);
        } else if (ent.isFile() && key.startsWith(prefix)) {
          const st = await fsp.stat(path.join(dir, ent.name));
          objects.push({ key, size: st.size });
        }
      }
    };
    await walk(baseKey);
    objects.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return { objects, prefixes: [...prefixes].sort() };
  }

  async deleteBatch(keys: readonly string[]): Promise<void> {
    const dirs = new Set<string>();
    for (const key of keys) {
      const file = this.file(key);
      await fsp.rm(file, { force: true });
      await fsp.rm(this.metaFile(file), { force: true });
      dirs.add(path.dirname(file));
    }
    // Directories emptied by the deletes go too (object stores have no empty "directories").
    for (const dir of [...dirs].sort((a, b) => b.length - a.length)) {
      let d = dir;
      while (d.startsWith(this.root) && d !== this.root) {
        try {
          await fsp.rmdir(d);
        } catch {
          break;
        }
        d = path.dirname(d);
      }
      await fsyncDir(d).catch(() => undefined);
    }
  }

  async startMultipart(key: string, opts: PutOptions = {}): Promise<MultipartUpload> {
    const file = this.file(key);
    const dir = path.dirname(file);
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const partsDir = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}${PARTS_SUFFIX}`);
    await fsp.mkdir(partsDir, { mode: 0o700 });
    const partFile = (n: number) => path.join(partsDir, String(n).padStart(6, '0'));
    return {
      uploadPart: async (n, body) => {
        await fsp.writeFile(partFile(n), body, { mode: 0o600 });
      },
      complete: async (count) => {
        const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.tmp`);
        const out = await fsp.open(tmp, 'w', 0o600);
        try {
          for (let n = 1; n <= count; n++) {
            const data = await fsp.readFile(partFile(n));
            await out.write(data);
          }
          await out.sync();
        } finally {
          await out.close();
        }
        await this.writeMeta(file, opts.metadata);
        await fsp.rename(tmp, file);
        await fsyncDir(dir);
        await fsp.rm(partsDir, { recursive: true, force: true });
      },
      abort: async () => {
        await fsp.rm(partsDir, { recursive: true, force: true });
      },
    };
  }

  async close(): Promise<void> {
    // nothing held open
  }
}
