/**
 * The backup host's side of one file of an agent backup: pages arrive (all of them, or only
 * those that differ from the basis: the copy of the file in an earlier backup), are checked
 * against the hash computed where they were read, and written at their place. With a basis, the
 * new file starts as a kernel-side copy of it (reflink or copy_file_range: the cost of an
 * incremental is the pages that changed, not a read and a write of every page through here),
 * the pages that arrived are written over it, and the finished file is hashed (SHA-256, in a
 * hashing thread, while it is in page cache) against the SHA-256 the agent computed over what it
 * read: a basis altered on disk since it was recorded makes a file that does not match, which is
 * then read again whole. The result is a complete, plain copy of the file. When nothing changed,
 * the basis file is hard-linked instead (its inode is shared, as it was verified when written).
 *
 * Writes to the new file go through one queue, in order: the copy of the basis first, then the
 * pages that arrived. The copy starts when the agent starts reading the file (begin()), so that
 * it overlaps with that read.
 */
import { constants as fsc, promises as fsp } from 'node:fs';
import { HASH_BYTES, PAGE_SIZE, pageCount, type PageHasher } from './pages.js';
import type { PagesHeader } from './protocol.js';
import type { ReadEnd } from './serve-read.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { setFileAttributes } from './hash-thread.js';

export interface Basis {
  /** The basis file (in an earlier backup). */
  abs: string;
  size: number;
  map: Buffer;
  sha256: string;
  /** For messages. */
  backupId: string;
}

export type ReceiveOutcome =
  | { kind: 'vanished' }
  /** The basis was damaged or vanished: the file must be read again without it. */
  | { kind: 'refetch'; reason: string }
  | { kind: 'linked' | 'written'; size: number; sha256: string; map: Buffer; sentPages: number };

export class FileReceiver {
  private fh: fsp.FileHandle | null = null;
  private opening: Promise<fsp.FileHandle> | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private arrived = new Uint8Array(0);
  private hashes = Buffer.alloc(0);
  private fill: Promise<void> | null = null;
  private damaged: string | null = null;
  private writeError: unknown = null;
  private sent = 0;
  /** The basis was copied to the destination (startFill). */
  private copied = false;

  constructor(
    readonly dest: string,
    readonly mode: number,
    readonly basis: Basis | null,
    private readonly hasher: PageHasher,
    private readonly onWritten: (bytes: number) => void,
    /** Put the basis file at the destination unchanged: a hard link (reuse_backup = link) or a copy. */
    private readonly share: (from: string, to: string) => Promise<void>,
    /** SHA-256 (hex) of the first `size` bytes of a file (a file built over a copy of its basis is checked with it). */
    private readonly sha256Of: (file: string, size: number) => Promise<string>,
  ) {}

  private ensure(pages: number): void {
    if (this.arrived.length < pages) {
      const grow = Math.max(pages, this.arrived.length * 2, 16);
      const a = new Uint8Array(grow);
      a.set(this.arrived);
      this.arrived = a;
      const h = Buffer.alloc(grow * HASH_BYTES);
      this.hashes.copy(h);
      this.hashes = h;
    }
  }

  private open(): Promise<fsp.FileHandle> {
    // Over the copy of the basis, or a new file.
    const flags = this.copied ? fsc.O_WRONLY | fsc.O_NOFOLLOW : fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC | fsc.O_NOFOLLOW;
    this.opening ??= fsp.open(this.dest, flags, 0o600).then((fh) => (this.fh = fh));
    return this.opening;
  }

  /** Queue a write; the queue never rejects: the first failure is kept and thrown by checkWrites. */
  private write(data: Buffer, pos: number): Promise<unknown> {
    this.queue = this.queue
      .then(async () => {
        if (this.writeError) return;
        const fh = await this.open();
        await fh.write(data, 0, data.length, pos);
        this.onWritten(data.length);
      })
      .catch((err: unknown) => {
        this.writeError ??= err;
      });
    return this.queue;
  }

  /** A failed write (a full disk) fails the backup: never taken for a damaged basis. */
  private checkWrites(): void {
    if (this.writeError) throw new BarmanError(`cannot write ${this.dest}: ${errorMessage(this.writeError)}`);
  }

  /**
   * Pages of this file from the agent, decoded into `raw`: verified, then queued for writing
   * (the receive loop goes on with the next message meanwhile). `release` is called once `raw`
   * is written or dropped: the receiver owns it until then. A write that fails is reported by
   * the next call, or by finish().
   */
  pages(h: PagesHeader, raw: Buffer, release: () => void): void {
    try {
      this.checkWrites();
      if (raw.length > h.count * PAGE_SIZE || raw.length <= (h.count - 1) * PAGE_SIZE) {
        throw new BarmanError(`the agent sent ${raw.length} bytes for ${h.count} pages of ${this.dest}`);
      }
      this.ensure(h.firstPage + h.count);
      for (let i = 0; i < h.count; i++) {
        const p = h.firstPage + i;
        const got = this.hasher.page(raw.subarray(i * PAGE_SIZE, Math.min((i + 1) * PAGE_SIZE, raw.length)));
        const want = h.hashes.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES);
        if (!want.equals(got)) {
          throw new BarmanError(`page ${p} of ${this.dest} does not match the checksum computed where it was read: the data was altered in transit`);
        }
        this.arrived[p] = 1;
        want.copy(this.hashes, p * HASH_BYTES);
      }
    } catch (err) {
      release();
      throw err;
    }
    this.sent += h.count;
    if (this.basis && this.fill === null) this.startFill(this.basis);
    void this.write(raw, h.firstPage * PAGE_SIZE).then(release);
  }

  /**
   * The agent is reading this file now: the copy of the basis starts, to overlap with that read
   * rather than follow it (wasted only when no page turns out to differ: the basis is then linked).
   */
  begin(): void {
    if (this.basis && this.fill === null && !this.writeError) this.startFill(this.basis);
  }

  /**
   * The basis file becomes the new file's starting point, copied by the kernel (a reflink where
   * the file system shares extents, copy_file_range otherwise: no byte passes through here);
   * the pages that arrive are written over it, after the copy. Nothing of the basis is trusted:
   * the finished file is hashed against the SHA-256 computed where it was read (finish()).
   */
  private startFill(basis: Basis): void {
    this.fill = this.copyBasis(basis);
    const fill = this.fill;
    this.queue = this.queue.then(() => fill);
  }

  private async copyBasis(basis: Basis): Promise<void> {
    try {
      const st = await fsp.stat(basis.abs);
      if (st.size !== basis.size) {
        this.damaged = `its copy in backup ${basis.backupId} has ${st.size} bytes, ${basis.size} recorded`;
        return;
      }
    } catch (err) {
      this.damaged = `its copy in backup ${basis.backupId} cannot be read (${errorMessage(err)})`;
      return;
    }
    try {
      await fsp.copyFile(basis.abs, this.dest, fsc.COPYFILE_FICLONE);
      this.copied = true;
    } catch (err) {
      // The basis could be opened: what fails now is an error (a full disk, an I/O error).
      this.writeError ??= err;
    }
  }

  /** The agent finished the file: complete it (or link the basis) and say what it became. */
  async finish(end: ReadEnd): Promise<ReceiveOutcome> {
    if (end.vanished) {
      await this.discard();
      return { kind: 'vanished' };
    }
    const size = end.size ?? 0;
    const sha256 = end.sha256 ?? '';
    const n = pageCount(size);
    const basis = this.basis;
    if (basis && this.sent === 0 && size === basis.size && n * HASH_BYTES === basis.map.length) {
      // Every page matched the basis: share its inode.
      await this.discard();
      try {
        await this.share(basis.abs, this.dest);
        return { kind: 'linked', size, sha256, map: basis.map, sentPages: 0 };
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return { kind: 'refetch', reason: `its copy in backup ${basis.backupId} is gone` };
        if (code !== 'EMLINK') throw err;
        // Too many links to that inode: a copy (of pages already verified) instead.
        this.startFill(basis);
      }
    }
    if (basis && this.fill === null && n > 0) this.startFill(basis);
    await this.fill;
    await this.queue;
    this.checkWrites();
    if (this.damaged !== null) {
      await this.discard();
      return { kind: 'refetch', reason: this.damaged };
    }
    const map = Buffer.alloc(n * HASH_BYTES);
    for (let p = 0; p < n; p++) {
      if (p < this.arrived.length && this.arrived[p]) this.hashes.copy(map, p * HASH_BYTES, p * HASH_BYTES, (p + 1) * HASH_BYTES);
      else if (basis && (p + 1) * HASH_BYTES <= basis.map.length) {
        basis.map.copy(map, p * HASH_BYTES, p * HASH_BYTES, (p + 1) * HASH_BYTES);
      } else {
        await this.discard();
        throw new BarmanError(`the agent did not send page ${p} of ${this.dest}`);
      }
    }
    const fh = await this.open();
    try {
      setFileAttributes(fh.fd, size, this.mode, end.mtimeMs);
    } finally {
      await fh.close();
      this.fh = null;
    }
    if (basis && this.copied) {
      // The pages taken from the basis were not read here: the whole result is checked against
      // what the agent read (in page cache: it was just written).
      const got = await this.sha256Of(this.dest, size);
      if (got !== sha256) {
        await this.discard();
        return { kind: 'refetch', reason: `the file built over its copy in backup ${basis.backupId} does not match the SHA-256 computed where it was read (that copy was altered on disk)` };
      }
    }
    return { kind: 'written', size, sha256, map, sentPages: this.sent };
  }

  /** Close and remove what was written (the file vanished, or is to be read again). */
  async discard(): Promise<void> {
    await this.queue.catch(() => undefined);
    await this.fill?.catch(() => undefined);
    if (this.opening || this.copied) {
      const fh = await this.opening?.catch(() => null);
      await fh?.close().catch(() => undefined);
      await fsp.rm(this.dest, { force: true });
    }
    this.opening = null;
    this.fh = null;
    this.queue = Promise.resolve();
    this.fill = null;
    this.copied = false;
    this.arrived = new Uint8Array(0);
  }
}
