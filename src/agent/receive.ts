/**
 * The backup host's side of one file of an agent backup: pages arrive (all of them, or only
 * those that differ from the basis: the copy of the file in an earlier backup), are checked
 * against the hash computed where they were read, and written at their place; the pages that
 * did not travel are copied from the basis, each checked against the basis's own page map on
 * the way. The result is a complete, plain copy of the file. When nothing changed, the basis
 * file is hard-linked instead.
 *
 * Writes to the new file go through one queue, in order: a page that arrived is marked before
 * the copy from the basis reaches it, and the copy then skips it; a page arriving after the copy
 * passed is written after it. The copy from the basis starts with the first page that arrives,
 * so that it overlaps with the agent still reading the rest of the file.
 */
import { constants as fsc, promises as fsp } from 'node:fs';
import { HASH_BYTES, PAGE_SIZE, pageCount, type PageHasher } from './pages.js';
import type { PagesHeader } from './protocol.js';
import type { ReadEnd } from './serve-read.js';
import { BarmanError, errorMessage } from '../util/errors.js';

const FILL_CHUNK = 128 * PAGE_SIZE;

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

  constructor(
    readonly dest: string,
    readonly mode: number,
    readonly basis: Basis | null,
    private readonly hasher: PageHasher,
    private readonly onWritten: (bytes: number) => void,
    /** Put the basis file at the destination unchanged: a hard link (reuse_backup = link) or a copy. */
    private readonly share: (from: string, to: string) => Promise<void>,
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
    this.opening ??= fsp.open(this.dest, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC | fsc.O_NOFOLLOW, 0o600).then((fh) => (this.fh = fh));
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

  /** Copy the pages that did not arrive from the basis, each checked against the basis map. */
  private startFill(basis: Basis): void {
    this.fill = (async () => {
      let fh: fsp.FileHandle;
      try {
        fh = await fsp.open(basis.abs, 'r');
      } catch (err) {
        this.damaged = `its copy in backup ${basis.backupId} cannot be read (${errorMessage(err)})`;
        return;
      }
      try {
        await this.copyFromBasis(basis, fh);
      } catch (err) {
        this.damaged ??= `its copy in backup ${basis.backupId} cannot be read (${errorMessage(err)})`;
      } finally {
        await fh.close();
      }
    })();
  }

  private async copyFromBasis(basis: Basis, fh: fsp.FileHandle): Promise<void> {
    const buf = Buffer.allocUnsafe(FILL_CHUNK);
    for (let pos = 0; pos < basis.size && this.damaged === null && !this.writeError; pos += FILL_CHUNK) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(FILL_CHUNK, basis.size - pos), pos);
      if (bytesRead !== Math.min(FILL_CHUNK, basis.size - pos)) {
        this.damaged = `its copy in backup ${basis.backupId} is shorter than recorded`;
        break;
      }
      const first = pos / PAGE_SIZE;
      const pages = pageCount(bytesRead);
      this.ensure(first + pages);
      // Runs of pages that have not arrived: checked, then queued (marks read synchronously).
      const runs: [number, number][] = [];
      for (let i = 0; i < pages; i++) {
        if (this.arrived[first + i]) continue;
        const page = buf.subarray(i * PAGE_SIZE, Math.min((i + 1) * PAGE_SIZE, bytesRead));
        const got = this.hasher.page(page);
        if (!basis.map.subarray((first + i) * HASH_BYTES, (first + i + 1) * HASH_BYTES).equals(got)) {
          this.damaged = `page ${first + i} of its copy in backup ${basis.backupId} does not match its recorded checksum`;
          break;
        }
        const last = runs.at(-1);
        if (last && last[0] + last[1] === i) last[1] += 1;
        else runs.push([i, 1]);
      }
      if (this.damaged !== null) break;
      for (const [i, n] of runs) {
        const data = Buffer.from(buf.subarray(i * PAGE_SIZE, Math.min((i + n) * PAGE_SIZE, bytesRead)));
        void this.write(data, pos + i * PAGE_SIZE);
      }
      await this.queue;
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
      await fh.truncate(size);
      await fh.chmod(this.mode);
      if (end.mtimeMs !== undefined) await fh.utimes(end.mtimeMs / 1000, end.mtimeMs / 1000);
    } finally {
      await fh.close();
      this.fh = null;
    }
    return { kind: 'written', size, sha256, map, sentPages: this.sent };
  }

  /** Close and remove what was written (the file vanished, or is to be read again). */
  async discard(): Promise<void> {
    await this.queue.catch(() => undefined);
    await this.fill?.catch(() => undefined);
    if (this.opening) {
      const fh = await this.opening.catch(() => null);
      await fh?.close().catch(() => undefined);
      await fsp.rm(this.dest, { force: true });
    }
    this.opening = null;
    this.fh = null;
    this.queue = Promise.resolve();
    this.fill = null;
    this.arrived = new Uint8Array(0);
  }
}
