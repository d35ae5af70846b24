/**
 * The backup host's side of one file of an agent backup: pages arrive (all of them, or only
 * those that differ from the basis: the copy of the file in an earlier backup), are checked
 * against the hash computed where they were read, and written at their place. With a basis, the
 * pages that did not travel are filled in from the basis copy as the agent's read goes on (it
 * says how far it got: PASSED), each page checked against its hash in the basis's page map as
 * it is read (in a hashing thread): a basis altered on disk since it was recorded is noticed
 * there, and the file is then read again whole. Every page of the result is thus checked
 * against the hash of what the agent read, whose SHA-256 is the file's; the result is a
 * complete, plain copy of the file, each page read and written once, and nothing is left to do
 * when the agent's read ends. When nothing changed, the basis file is hard-linked instead (its
 * inode is shared, as it was verified when written).
 *
 * Where the file system clones files (reflink: XFS, btrfs; `Clone`), a changed file starts as a
 * clone of the basis copy instead and only the arrived pages are written: the pages that did not
 * travel share the basis's blocks as a hard link shares its inode, trusted as a hard link is (the
 * basis was verified when written; verify-backup reads them), and nothing is read or filled
 * from the basis. Its recorded size is still checked first.
 *
 * With change tracking (wal-guide.ts) the agent reads only the pages the WAL named, and its
 * READ_END carries no SHA-256: the file then starts as the basis (a clone, else a copy the
 * kernel makes), the arrived pages are written over it through the page cache, and it is read
 * back here for its SHA-256 and page hashes (ShaOf), the latter checked against the basis's map.
 *
 * Pages that arrived are written through one queue, in the order they arrive; fills from the
 * basis run beside it, several at once (on the hashing threads): they write other pages, and
 * the fill of a large file would otherwise be the last thing a backup waits for.
 */
import { constants as fsc, promises as fsp } from 'node:fs';
import { FILL_PAGES, HASH_BYTES, PAGE_SIZE, pageCount, samePage, type PageHasher } from './pages.js';
import type { PagesHeader } from './protocol.js';
import type { ReadEnd } from './serve-read.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { setFileAttributes, type DirectFds, type FileHashes, type FillResult } from './hash-thread.js';
import { closeQuietly, openDirect, writeMaybeDirect } from './direct-io.js';
import { directAligned } from './bufpool.js';

/**
 * Copy page ranges [a, b) of an open basis file (fd `from`, `basisSize` bytes) into the file
 * being built (fd `to`), every page checked against `map` (the basis's page map) first: in a
 * hashing thread (HashThread.fill).
 */
export type FillGaps = (from: number, to: number, gaps: [number, number][], map: Buffer, basisSize: number, direct: DirectFds | null) => Promise<FillResult>;

/**
 * Make `to` a clone of `from` (sharing its blocks: reflink), `to` not existing yet. False where
 * the file system cannot (the caller then builds the file from the basis as usual).
 */
export type Clone = (from: string, to: string) => Promise<boolean>;

/**
 * The SHA-256 and page hashes of the first `size` bytes of `file` (a file being built), read
 * chunk by chunk once `ready(end of the chunk)` resolves: computed on the backup host when the
 * agent read only some pages (change tracking).
 */
export type ShaOf = (file: string, size: number, ready: (byteEnd: number) => Promise<void>) => Promise<FileHashes>;

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
  | { kind: 'linked' | 'written'; size: number; sha256: string; map: Buffer; sentPages: number; cloned?: boolean };

export class FileReceiver {
  private fh: fsp.FileHandle | null = null;
  private opening: Promise<fsp.FileHandle> | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  /** Fills from the basis under way (they run beside the queue, each on a hashing thread). */
  private readonly fills = new Set<Promise<void>>();
  private arrived = new Uint8Array(0);
  private hashes = Buffer.alloc(0);
  private damaged: string | null = null;
  private writeError: unknown = null;
  private sent = 0;
  /** Pages before this one are written, or queued for writing (arrived, or filled from the basis). */
  private next = 0;
  /** Ranges of pages [first, end) to fill from the basis, not yet queued (gathered for one read). */
  private gaps: [number, number][] = [];
  private basisFh: Promise<fsp.FileHandle | null> | null = null;
  /** The new file and the basis opened again with O_DIRECT (direct-io.ts; null: not available there). */
  private directDest: Promise<fsp.FileHandle | null> | null = null;
  private directBasis: Promise<fsp.FileHandle | null> | null = null;

  constructor(
    readonly dest: string,
    readonly mode: number,
    readonly basis: Basis | null,
    private readonly hasher: PageHasher,
    private readonly onWritten: (bytes: number) => void,
    /** Put the basis file at the destination unchanged: a hard link (reuse_backup = link) or a copy. */
    private readonly share: (from: string, to: string) => Promise<void>,
    /** Fills pages in from the basis, checked (in a hashing thread). */
    private readonly fillGaps: FillGaps,
    /** Start a changed file as a clone of the basis (null: never; reuse_backup = copy). */
    private readonly clone: Clone | null = null,
    /**
     * Change tracking: the agent reads only the pages the WAL named, and its READ_END has no
     * SHA-256. The file then starts as the basis (a clone, else a copy the kernel makes), the
     * arrived pages are written over it through the page cache, and it is read back with this:
     * its SHA-256, and its page hashes, checked against the basis's map (a basis altered on disk
     * is caught there and the file is read again whole). null: the agent's SHA-256.
     */
    private readonly shaOf: ShaOf | null = null,
  ) {}


  /** The file started as a clone of the basis: nothing to fill. */
  private cloned = false;
  /** The file started as a copy of the basis (change tracking, where it cannot clone): nothing to fill. */
  private copied = false;

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
    this.opening ??= (async () => {
      if (await this.cloneBasis()) return fsp.open(this.dest, fsc.O_WRONLY | fsc.O_NOFOLLOW);
      return fsp.open(this.dest, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC | fsc.O_NOFOLLOW, 0o600);
    })().then((fh) => (this.fh = fh));
    return this.opening;
  }

  /**
   * Start the file as a clone of the basis, when cloning is on and the file system does it; the
   * basis must still have its recorded size (else it is damaged: finish() has the file read again).
   */
  private async cloneBasis(): Promise<boolean> {
    const basis = this.basis;
    if (!basis || !(this.clone || this.shaOf) || !(await this.openBasis(basis))) return false;
    // A file left by an interrupted attempt is replaced (as O_TRUNC would).
    await fsp.rm(this.dest, { force: true });
    this.cloned = this.clone ? await this.clone(basis.abs, this.dest) : false;
    if (!this.cloned && this.shaOf) {
      // One copy in the kernel (copy_file_range), checked when the file is read back.
      await fsp.copyFile(basis.abs, this.dest, fsc.COPYFILE_EXCL);
      this.copied = true;
    }
    return this.cloned || this.copied;
  }

  /** Queue a task; the queue never rejects: the first failure is kept and thrown by checkWrites. */
  private enqueue(task: (fh: fsp.FileHandle) => Promise<void>): Promise<unknown> {
    this.queue = this.queue
      .then(async () => {
        if (this.writeError) return;
        await task(await this.open());
      })
      .catch((err: unknown) => {
        this.writeError ??= err;
      });
    return this.queue;
  }

  /**
   * Write pages at `pos`: with O_DIRECT (past the page cache) when their buffer allows it
   * (decoded into an aligned pool: codec.ts) and the file system does it, the short tail of a
   * file through the ordinary descriptor.
   */
  private write(data: Buffer, pos: number): Promise<unknown> {
    return this.enqueue(async (fh) => {
      const aligned = directAligned(data);
      await writeMaybeDirect(fh, aligned ? await this.openDirectDest() : null, data, pos, aligned);
      this.onWritten(data.length);
    });
  }

  /** The basis file, open, if it still has its recorded size (else the basis is damaged: null). */
  private openBasis(basis: Basis): Promise<fsp.FileHandle | null> {
    this.basisFh ??= (async () => {
      let fh: fsp.FileHandle;
      try {
        fh = await fsp.open(basis.abs, fsc.O_RDONLY | fsc.O_NOFOLLOW);
      } catch (err) {
        this.damaged ??= `its copy in backup ${basis.backupId} cannot be read (${errorMessage(err)})`;
        return null;
      }
      const size = (await fh.stat()).size;
      if (size === basis.size) return fh;
      await fh.close();
      this.damaged ??= `its copy in backup ${basis.backupId} has ${size} bytes, ${basis.size} recorded`;
      return null;
    })();
    return this.basisFh;
  }

  /** The pages before `page` that did not arrive are to be filled from the basis. */
  private gapTo(page: number): void {
    const basis = this.basis;
    if (basis && page > this.next) {
      // Pages the basis does not have cannot be filled: finish() finds them missing.
      const end = Math.min(page, basis.map.length / HASH_BYTES);
      if (end > this.next) {
        // Adjacent ranges (the agent passes a chunk at a time) become one: one read and one
        // write per FILL_PAGES, not one per chunk.
        const last = this.gaps.at(-1);
        if (last && last[1] === this.next) last[1] = end;
        else this.gaps.push([this.next, end]);
        if (end - (this.gaps[0] as [number, number])[0] >= FILL_PAGES) this.flushGaps();
      }
    }
    this.next = Math.max(this.next, page);
  }

  /** Queue the filling of the gaps gathered so far (in a hashing thread: FillGaps). */
  private flushGaps(): void {
    const gaps = this.gaps;
    const basis = this.basis;
    this.gaps = [];
    if (!basis || gaps.length === 0) return;
    const fill: Promise<void> = (async () => {
      const fh = await this.open();
      if (this.cloned || this.copied || this.writeError || this.damaged !== null) return;
      const bfh = await this.openBasis(basis);
      if (!bfh) return;
      const r = await this.fillGaps(bfh.fd, fh.fd, gaps, basis.map, basis.size, await this.openDirectFds(basis));
      if (r.bad === -1) this.damaged ??= `its copy in backup ${basis.backupId} ended early`;
      else if (r.bad !== null) this.damaged ??= `page ${r.bad} of its copy in backup ${basis.backupId} does not match the hash recorded for it (that copy was altered on disk)`;
    })()
      .catch((err: unknown) => {
        this.writeError ??= err;
      })
      .finally(() => this.fills.delete(fill));
    this.fills.add(fill);
  }

  /**
   * The arrived pages are written (a file built from the WAL's pages starts as the basis: it has
   * nothing else to wait for before it is read back).
   */
  private readonly writtenTo = async (): Promise<void> => {
    await this.queue;
    this.checkWrites();
  };

  /** The new file (created by open()) opened again with O_DIRECT, or null where the file system does not do it. */
  private openDirectDest(): Promise<fsp.FileHandle | null> {
    if (this.shaOf) return Promise.resolve(null);
    this.directDest ??= this.open().then(() => openDirect(this.dest, fsc.O_WRONLY | fsc.O_NOFOLLOW));
    return this.directDest;
  }

  /** The basis and the new file opened with O_DIRECT for a fill, or null (the ordinary descriptors then). */
  private async openDirectFds(basis: Basis): Promise<DirectFds | null> {
    const to = await this.openDirectDest();
    if (!to) return null;
    this.directBasis ??= openDirect(basis.abs, fsc.O_RDONLY | fsc.O_NOFOLLOW);
    const from = await this.directBasis;
    return from && { from: from.fd, to: to.fd };
  }

  private async closeDirect(): Promise<void> {
    for (const p of [this.directDest, this.directBasis]) await closeQuietly(p);
    this.directDest = null;
    this.directBasis = null;
  }

  /** The agent read every page before `page`: those that did not travel are filled from the basis (in batches of FILL_PAGES). */
  passed(page: number): void {
    this.gapTo(page);
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
    this.gapTo(h.firstPage);
    this.next = Math.max(this.next, h.firstPage + h.count);
    void this.write(raw, h.firstPage * PAGE_SIZE).then(release);
  }

  /** The agent finished the file: complete it (or link the basis) and say what it became. */
  async finish(end: ReadEnd): Promise<ReceiveOutcome> {
    if (end.vanished) {
      await this.discard();
      return { kind: 'vanished' };
    }
    const size = end.size ?? 0;
    let sha256 = end.sha256 ?? '';
    const n = pageCount(size);
    const basis = this.basis;
    if (basis && this.sent === 0 && size === basis.size && n * HASH_BYTES === basis.map.length) {
      // Every page matched the basis: share its inode.
      await this.discard();
      try {
        await this.share(basis.abs, this.dest);
        // Without a SHA-256 from the agent (READ_PAGES: only changed pages read), the basis's.
        return { kind: 'linked', size, sha256: end.sha256 ?? basis.sha256, map: basis.map, sentPages: 0 };
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return { kind: 'refetch', reason: `its copy in backup ${basis.backupId} is gone` };
        if (code !== 'EMLINK') throw err;
        // Too many links to that inode: a copy of it instead.
      }
    }
    this.gapTo(n);
    this.flushGaps();
    // This host's SHA-256 of the file when the agent sent none, read behind the writes.
    let sha: Promise<FileHashes> | null = null;
    if (end.sha256 === undefined && this.shaOf) {
      await this.open();
      sha = this.shaOf(this.dest, size, this.writtenTo);
      sha.catch(() => undefined);
    }
    await this.settled();
    await this.closeDirect();
    await this.closeBasis();
    // The SHA-256 reading ends too (it may fail with the writes), before anything is removed.
    const hashed = await sha?.then(
      (h) => ({ h, err: null }),
      (err: unknown) => ({ h: null, err }),
    );
    this.checkWrites();
    if (this.damaged !== null) {
      await this.discard();
      return { kind: 'refetch', reason: this.damaged };
    }
    if (hashed?.err) {
      await this.discard();
      throw new BarmanError(`cannot read back ${this.dest}: ${errorMessage(hashed.err)}`);
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
    if (hashed?.h) {
      const bad = this.readBack(hashed.h, map, size);
      if (bad !== null) {
        await this.discard();
        if (bad.arrived) throw new BarmanError(`page ${bad.page} of ${this.dest} does not read back as it was written`);
        return { kind: 'refetch', reason: `page ${bad.page} of its copy in backup ${basis?.backupId ?? '?'} does not match the hash recorded for it (that copy was altered on disk)` };
      }
      sha256 = hashed.h.sha256;
    }
    const fh = await this.open();
    try {
      setFileAttributes(fh.fd, size, this.mode, end.mtimeMs);
    } finally {
      await fh.close();
      this.fh = null;
    }
    return { kind: 'written', size, sha256, map, sentPages: this.sent, ...(this.cloned ? { cloned: true } : {}) };
  }

  /** The first page of the file read back whose hash is not the one expected (`map`), or null. */
  private readBack(h: FileHashes, map: Buffer, size: number): { page: number; arrived: boolean } | null {
    if (h.bytes !== size) return { page: Math.floor(h.bytes / PAGE_SIZE), arrived: false };
    for (let p = 0; p < map.length / HASH_BYTES; p++) {
      if (!samePage(h.map, p, map, p)) return { page: p, arrived: p < this.arrived.length && this.arrived[p] === 1 };
    }
    return null;
  }

  private async closeBasis(): Promise<void> {
    const fh = await this.basisFh?.catch(() => null);
    this.basisFh = null;
    await fh?.close().catch(() => undefined);
  }

  /** Every write queued and every fill started so far is done (failures are kept: checkWrites). */
  private async settled(): Promise<void> {
    await this.queue;
    while (this.fills.size > 0) await Promise.all([...this.fills]);
  }

  /** Close and remove what was written (the file vanished, or is to be read again, or is linked instead). */
  async discard(): Promise<void> {
    await this.settled().catch(() => undefined);
    await this.closeDirect();
    if (this.opening) {
      const fh = await this.opening.catch(() => null);
      await fh?.close().catch(() => undefined);
      await fsp.rm(this.dest, { force: true });
    }
    await this.closeBasis();
    this.opening = null;
    this.cloned = false;
    this.copied = false;
    this.fh = null;
    this.queue = Promise.resolve();
    this.gaps = [];
    this.next = 0;
    this.arrived = new Uint8Array(0);
  }
}
