/**
 * `get-wal` (spec §5.3): find a WAL file of a server and send it, plain (or recompressed, or as
 * stored) to a stream or into a directory. This is the restore_command side
 * (`barman get-wal SRV %f > %p`), so it streams: nothing is buffered beyond a chunk, and the
 * destination stream carries WAL data only (the domain never prints anything).
 */
import { createHash, type Hash } from 'node:crypto';
import { promises as fsp, type ReadStream } from 'node:fs';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Transform, Writable, type Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import type { ServerConfig } from '../config/config.js';
import { customCompressionOf } from '../catalog/xlogdb.js';
import { GPG_ENCRYPTION, serverDecryptor } from '../catalog/encryption.js';
import { gpgDecryptFile, isEncryptedFile, privateTempDir } from '../util/gpg.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { logger } from '../util/log.js';
import { FILE_MODE, isNotFound } from '../util/fsutil.js';
import { walArchivePath } from './archiver.js';
import {
  compressStream,
  decompressStream,
  canonicalCompression,
  identifyOpenFile,
  isCompressionName,
  type CompressionAlgorithm,
  type CompressionName,
  type CustomCompressionConfig,
  fileSink,
} from './compression.js';
import { hashDir, parseWalName, walName, walNameKind } from './names.js';
import { drained, type WritableSink } from '../util/streams.js';
import { BATCH_CHECKSUM_MEMBER, MEMBER_CHECKSUM_SUFFIX } from './batch-protocol.js';

export type WalLocation = 'wals' | 'incoming' | 'streaming';

export interface WalCandidate {
  path: string;
  location: WalLocation;
  /** A `.partial` file: always sent as it is stored. */
  partial: boolean;
}

export interface FoundWal extends WalCandidate {
  /** Compression of the file as stored, under its encryption (null: none, or a partial file). */
  compression: CompressionName | null;
  /** `gpg` when the file is stored encrypted: it is read decrypted (encryption_passphrase_command). */
  encryption: string | null;
}

export interface GetWalOptions {
  /** Also look for `.partial` files (`-P/--partial`). */
  partial?: boolean;
  /** Recompress the plain content (`-z/--gzip`, `-j/--bzip2`). */
  compression?: 'gzip' | 'bzip2' | null;
  /** Send the file as it is stored (`--keep-compression`). */
  keepCompression?: boolean;
  /**
   * `--batch` only (`--accept-compression`): the algorithms the client decompresses itself.
   * A member stored with one of them is sent as stored (fewer bytes through ssh); any other
   * (`custom`, which only this server can undo) is sent plain.
   */
  acceptCompression?: ReadonlySet<CompressionAlgorithm>;
}


/** Parse `--accept-compression LIST` (comma separated); unknown names are ignored (newer clients). */
export function parseAcceptCompression(text: string): Set<CompressionAlgorithm> {
  const out = new Set<CompressionAlgorithm>();
  for (const word of text.split(',')) {
    const name = word.trim();
    if (isCompressionName(name) && name !== 'custom') out.add(canonicalCompression(name));
  }
  return out;
}

export interface GetWalResult {
  name: string;
  source: FoundWal;
  /** Bytes written to the destination. */
  bytes: number;
}

const IO_CHUNK = 1 << 20;
/** See hashing(). */
const HASH_SLICE = 128 << 10;

/**
 * The places where `name` may be, in lookup order: the archive, incoming/, streaming/; with
 * `partial` also streaming/<name>.partial, streaming/<name>, wals/<hash>/<name>.partial,
 * incoming/<name>.partial; finally the archive again, for a file the archiver moved meanwhile.
 */
export function walLookupPaths(srv: ServerConfig, name: string, partial = false): WalCandidate[] {
  const archived = walArchivePath(srv, name);
  const incoming = path.join(srv.incoming_wals_directory, name);
  const streaming = path.join(srv.streaming_wals_directory, name);
  const isPartial = (p: string) => p.endsWith('.partial');
  const list: Array<[string, WalLocation]> = [
    [archived, 'wals'],
    [incoming, 'incoming'],
    [streaming, 'streaming'],
  ];
  if (partial) {
    list.push(
      [`${streaming}.partial`, 'streaming'],
      [streaming, 'streaming'],
      [path.join(srv.wals_directory, hashDir(name), `${name}.partial`), 'wals'],
      [`${incoming}.partial`, 'incoming'],
    );
  }
  list.push([archived, 'wals']);
  return list.map(([p, location]) => ({ path: p, location, partial: isPartial(p) }));
}

/**
 * Whether a regular file is at `p`. Only a missing file (or directory on the way) is "no": a
 * candidate that cannot be looked at (EACCES, EIO) throws, since answering "not found" would
 * tell PostgreSQL the archive ends here, and it might end its recovery (promote) too early.
 */
function isRegularFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch (err) {
    if (isGone(err)) return false;
    throw new WalUnreadableError(`cannot read ${p}: ${errorMessage(err)}`);
  }
}

/** Compression settings to identify a file found at `location`. */
function customFor(srv: ServerConfig, location: WalLocation): CustomCompressionConfig {
  const custom = customCompressionOf(srv);
  // Only the archive holds files compressed by us; elsewhere an unrecognised file is plain.
  return location === 'wals' ? custom : { ...custom, unidentifiedIsCustom: false };
}

/**
 * Exit code of get-wal when the WAL file is there but cannot be read or decoded (EACCES, EIO, a
 * corrupt compressed file). Not 1 ("not found"): a restore_command failing with an exit code of
 * 1 to 125 tells PostgreSQL that the archive ends here, and a recovery then stops at that point
 * and promotes, silently short of what the archive holds. PostgreSQL treats an exit code above
 * 125 as a hard failure instead and stops rather than promote (its log line: "child process
 * exited with exit code 200"); barman-wal-restore (ours and Barman's) passes the code on.
 */
export const WAL_UNREADABLE_EXIT_CODE = 200;

/** The WAL file exists but cannot be delivered: never reported as "not found". */
export class WalUnreadableError extends BarmanError {
  constructor(message: string) {
    super(message, WAL_UNREADABLE_EXIT_CODE);
    this.name = 'WalUnreadableError';
  }
}


/**
 * A found WAL file, already open: reading it is immune to archive-wal moving the name meanwhile.
 * An encrypted file is opened decrypted: the handle reads a private temporary copy whose name
 * is already gone, so nothing decrypted is left behind whatever happens next.
 */
export interface OpenedWal extends FoundWal {
  /** Opened during the lookup; the caller closes it. */
  handle: fsp.FileHandle;
}

/** A handle on the decrypted content of the encrypted file `file` (see OpenedWal). */
async function openDecrypted(srv: ServerConfig, file: string, name: string): Promise<fsp.FileHandle> {
  const d = serverDecryptor(srv, `WAL file '${name}' of server '${srv.name}'`);
  const passphrase = await d.passphrase();
  const tmp = await privateTempDir(os.tmpdir(), 'barman-get-wal-');
  try {
    const plain = path.join(tmp.dir, name);
    await gpgDecryptFile(d.gpg(), file, plain, passphrase);
    return await fsp.open(plain, 'r');
  } finally {
    await tmp.remove();
  }
}

/** How many times the whole lookup is tried when a file vanishes between being seen and opened. */
const LOOKUP_ATTEMPTS = 3;

const isGone = isNotFound;

/** One pass over the candidates; 'moved' when a file seen there was gone when opened. */
async function lookupOnce(srv: ServerConfig, name: string, partial: boolean): Promise<OpenedWal | null | 'moved'> {
  for (const c of walLookupPaths(srv, name, partial)) {
    if (!isRegularFile(c.path)) continue;
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(c.path, 'r');
    } catch (err) {
      // archive-wal moved it between the stat and the open: it is somewhere else now.
      if (isGone(err)) return 'moved';
      throw new WalUnreadableError(`cannot read ${c.path}: ${errorMessage(err)}`);
    }
    try {
      let encryption: string | null = null;
      if (await isEncryptedFile(handle)) {
        const decrypted = await openDecrypted(srv, c.path, name);
        await handle.close();
        handle = decrypted;
        encryption = GPG_ENCRYPTION;
      }
      let compression: CompressionName | null = null;
      if (!c.partial) {
        compression = await identifyOpenFile(handle, customFor(srv, c.location));
      }
      return { ...c, compression, encryption, handle };
    } catch (err) {
      await handle.close().catch(() => undefined);
      // There but not deliverable (unreadable, or an encrypted file that cannot be decrypted):
      // never the exit code of "not found", which ends a recovery.
      if (err instanceof WalUnreadableError) throw err;
      throw new WalUnreadableError(err instanceof BarmanError ? err.message : `cannot read ${c.path}: ${errorMessage(err)}`);
    }
  }
  return null;
}

/**
 * First existing candidate (see walLookupPaths), opened, with its compression; null if none.
 * The file is opened during the lookup and read through that descriptor, so archive-wal moving
 * it from incoming/ or streaming/ into wals/ afterwards changes nothing (the inode stays). If it
 * moves between being seen and being opened, the whole lookup starts again (bounded).
 */
export async function openWal(srv: ServerConfig, name: string, opts: { partial?: boolean } = {}): Promise<OpenedWal | null> {
  for (let attempt = 1; ; attempt++) {
    const res = await lookupOnce(srv, name, opts.partial === true);
    if (res !== 'moved') return res;
    if (attempt >= LOOKUP_ATTEMPTS) {
      throw new BarmanError(`WAL file '${name}' of server '${srv.name}' kept moving while being looked up (${LOOKUP_ATTEMPTS} attempts)`);
    }
  }
}

/** First existing candidate (see walLookupPaths), with its compression; null if none. */
export async function findWal(srv: ServerConfig, name: string, opts: { partial?: boolean } = {}): Promise<FoundWal | null> {
  const opened = await openWal(srv, name, opts);
  if (!opened) return null;
  const { handle, ...found } = opened;
  await handle.close();
  return found;
}

/** Read an opened WAL from its start (the handle stays open: the caller closes it). */
function readFromStart(opened: OpenedWal): ReadStream {
  return opened.handle.createReadStream({ start: 0, highWaterMark: IO_CHUNK, autoClose: false });
}

function notFound(srv: ServerConfig, name: string): BarmanError {
  return new BarmanError(`WAL file '${name}' not found in server '${srv.name}'`);
}

/** The transforms between the stored file and the destination. */
function transformsFor(srv: ServerConfig, found: FoundWal, opts: GetWalOptions): Duplex[] {
  if (opts.keepCompression) return [];
  const out = opts.compression ?? null;
  const stored = found.partial ? null : found.compression;
  // The client decompresses what it accepts (pigz/pygzip files are gzip, pybzip2 is bzip2).
  if (stored !== null && out === null && opts.acceptCompression?.has(canonicalCompression(stored) === 'pigz' ? 'gzip' : canonicalCompression(stored))) return [];
  const storedCanonical = stored === 'pygzip' || stored === 'pigz' ? 'gzip' : stored === 'pybzip2' ? 'bzip2' : stored;
  // Already in the requested format: send it as it is.
  if (out !== null && storedCanonical === out) return [];
  const list: Duplex[] = [];
  if (stored !== null) list.push(decompressStream(stored, customFor(srv, found.location)));
  if (out !== null) list.push(compressStream(out, 'medium'));
  return list;
}

/** A pass-through that counts the bytes going to the destination. */
function byteCounter(onBytes: (n: number) => void): Transform {
  return new Transform({
    readableHighWaterMark: IO_CHUNK,
    writableHighWaterMark: IO_CHUNK,
    transform(chunk: Buffer, _enc, cb) {
      onBytes(chunk.length);
      cb(null, chunk);
    },
  });
}

/**
 * A Writable that forwards into `dest` and ends it once everything is written, but is never
 * piped to it: a failing source (a read or decompression error) destroys this one, not `dest`.
 * Destroyed with the source's error, process.stdout would emit that error as its own, which
 * nothing must take for a broken output (and bin/barman.js rethrows anything but EPIPE).
 */
function forwardTo(dest: NodeJS.WritableStream): Writable {
  let failure: Error | null = null;
  const onError = (err: Error) => (failure ??= err);
  dest.on('error', onError);
  const settled = (cb: (err?: Error | null) => void) => {
    if (failure !== null) return cb(failure);
    if ((dest as Partial<Writable>).destroyed) return cb(new Error('the output was closed'));
    cb();
  };
  return new Writable({
    highWaterMark: IO_CHUNK,
    write(chunk: Buffer, _enc, cb) {
      if (failure !== null) return cb(failure);
      if (dest.write(chunk)) return cb();
      drained(dest as unknown as WritableSink).then(() => settled(cb), cb);
    },
    final(cb) {
      const done = () => {
        dest.off('finish', done);
        dest.off('close', done);
        settled(cb);
      };
      dest.on('finish', done);
      dest.on('close', done);
      dest.end();
    },
    destroy(err, cb) {
      dest.off('error', onError);
      cb(err);
    },
  });
}

/**
 * Send WAL `name` of `srv` to `dest` (e.g. process.stdout). `dest` is ended when done.
 * Throws BarmanError when not found, and on read, decompression or write failures
 * (EPIPE included: the reader went away).
 */
export async function sendWal(srv: ServerConfig, name: string, dest: NodeJS.WritableStream, opts: GetWalOptions = {}): Promise<GetWalResult> {
  const opened = await openWal(srv, name, opts);
  if (!opened) throw notFound(srv, name);
  const { handle, ...found } = opened;
  let bytes = 0;
  const counted = byteCounter((n) => (bytes += n));
  try {
    await pipeline([readFromStart(opened), ...transformsFor(srv, found, opts), counted, forwardTo(dest)]);
  } catch (err) {
    // A decompression failure is a BarmanError too: the file is there, and it cannot be sent.
    if (err instanceof BarmanError) throw err instanceof WalUnreadableError ? err : new WalUnreadableError(`cannot send WAL file '${name}': ${err.message}`);
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EPIPE' || code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ERR_STREAM_DESTROYED') {
      throw new BarmanError(`cannot send WAL file '${name}': the receiving end closed the output`);
    }
    throw new WalUnreadableError(`cannot send WAL file '${name}': ${errorMessage(err)}`);
  } finally {
    await handle.close().catch(() => undefined);
  }
  return { name, source: found, bytes };
}

/**
 * Write WAL `name` of `srv` as `<dir>/<name>` (temp file, fsync, rename: the name never shows a
 * half-written file). An output that cannot be written is a BarmanError with exit code 3.
 */
export async function fetchWalToDirectory(srv: ServerConfig, name: string, dir: string, opts: GetWalOptions = {}): Promise<GetWalResult & { file: string }> {
  const opened = await openWal(srv, name, opts);
  if (!opened) throw notFound(srv, name);
  const { handle, ...found } = opened;
  const file = path.join(dir, name);
  const tmp = path.join(dir, `.${name}.tmp`);
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(tmp, 'w', FILE_MODE);
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw new BarmanError(`cannot write the output file ${file}: ${errorMessage(err)}`, 3);
  }
  let bytes = 0;
  let ok = false;
  let outputFailed = false;
  try {
    await pipeline([
      readFromStart(opened),
      ...transformsFor(srv, found, opts),
      fileSink(fh, (n) => (bytes += n), () => (outputFailed = true)),
    ]);
    outputFailed = true; // from here on, every failure is about the output file
    await fh.sync();
    await fh.close();
    await fsp.rename(tmp, file);
    ok = true;
  } catch (err) {
    if (outputFailed) throw new BarmanError(`cannot write the output file ${file}: ${errorMessage(err)}`, 3);
    if (err instanceof BarmanError) throw err instanceof WalUnreadableError ? err : new WalUnreadableError(`cannot read WAL file '${name}' from ${found.path}: ${err.message}`);
    throw new WalUnreadableError(`cannot read WAL file '${name}' from ${found.path}: ${errorMessage(err)}`);
  } finally {
    await handle.close().catch(() => undefined);
    if (!ok) {
      await fh.close().catch(() => undefined);
      await fsp.unlink(tmp).catch(() => undefined);
    }
  }
  return { name, source: found, bytes, file };
}

/**
 * `--peek N`: up to `count` names of consecutive files present in the archive, from `name` on.
 * A name that is not a plain segment yields just itself (if archived). When a segment is missing and its
 * number is a power of two, the walk jumps to segment 0 of the next log: with an unknown segment
 * size, the segment after the last of a log (0xFF for 16 MiB) is such a number. A file that
 * cannot be looked at throws (WalUnreadableError), unless `stopAtUnreadable`: the walk then ends
 * before it (a batch sends what comes before; the file's own request reports the error).
 */
export function peekWals(srv: ServerConfig, name: string, count: number, stopAtUnreadable = false): string[] {
  if (count <= 0) return [];
  let unreadable = false;
  const exists = (n: string): boolean => {
    try {
      return isRegularFile(walArchivePath(srv, n));
    } catch (err) {
      if (!stopAtUnreadable || !(err instanceof WalUnreadableError)) throw err;
      unreadable = true;
      return false;
    }
  };
  if (walNameKind(name) !== 'segment') return exists(name) ? [name] : [];
  const out: string[] = [];
  let { tli, log, seg } = parseWalName(name);
  while (out.length < count) {
    const current = walName(tli, log, seg);
    if (exists(current)) {
      out.push(current);
      seg += 1;
      if (seg > 0xffffffff) break;
      continue;
    }
    const powerOfTwo = seg > 0 && Number.isInteger(Math.log2(seg));
    if (unreadable || !powerOfTwo || log >= 0xffffffff) break;
    log += 1;
    seg = 0;
    if (!exists(walName(tli, log, seg))) break;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// `--batch N` (barman-ts extension): WAL_NAME and the following archived WALs in one tar stream,
// so that barman-wal-restore prefetches N segments with a single SSH session instead of N.

export { BATCH_CHECKSUM_MEMBER, MEMBER_CHECKSUM_SUFFIX };

export interface BatchResult {
  /** Members sent, in order (the checksum member excluded). */
  names: string[];
  bytes: number;
  /**
   * A file after the first that could not be read (corrupt, unreadable): the batch ended there,
   * without it; the client asks for it on its own later and gets get-wal's own error then.
   */
  stoppedAt?: { name: string; reason: string };
}

const log = logger('get-wal');

/** A pass-through that feeds a hash (the checksum member is computed while data streams). */
function hashing(hash: Hash): Transform {
  return new Transform({
    readableHighWaterMark: IO_CHUNK,
    writableHighWaterMark: IO_CHUNK,
    transform(chunk: Buffer, _enc, cb) {
      // Hashing a whole 1 MiB read (~1.3 ms) would keep this thread from refilling sshd's
      // pipe (~64 KiB, drained in well under a millisecond): slices, with the event loop (and
      // its pending writes to stdout) run between them, keep sshd busy.
      let off = 0;
      const step = (): void => {
        const slice = chunk.subarray(off, off + HASH_SLICE);
        off += slice.length;
        hash.update(slice);
        this.push(slice);
        if (off < chunk.length) setImmediate(step);
        else cb();
      };
      step();
    },
  });
}

/** Bytes a stream of transforms produces from an opened file, by running them into nothing. */
async function countTransformed(opened: OpenedWal, transforms: Duplex[]): Promise<number> {
  let n = 0;
  await pipeline([
    readFromStart(opened),
    ...transforms,
    new Writable({
      highWaterMark: IO_CHUNK,
      write(chunk: Buffer, _enc, cb) {
        n += chunk.length;
        cb();
      },
    }),
  ]);
  return n;
}

/**
 * Size of a member before sending it: a tar header carries the size up front. Stored bytes and
 * plain files: the file size. gzip: the ISIZE trailer (size mod 2^32, exact for WAL files, which
 * are at most 1 GiB, and for the single-member streams every gzip writer of the archive makes).
 * Other algorithms have no reliable size field: one decompression pass counts the bytes, which
 * costs CPU but keeps memory bounded.
 */
async function memberSize(srv: ServerConfig, opened: OpenedWal, transforms: Duplex[], opts: GetWalOptions): Promise<number> {
  const { size } = await opened.handle.stat();
  if (transforms.length === 0) return size;
  const stored = opened.compression;
  if ((stored === 'gzip' || stored === 'pigz' || stored === 'pygzip') && transforms.length === 1 && size >= 18) {
    const trailer = Buffer.alloc(4);
    await opened.handle.read(trailer, 0, 4, size - 4);
    return trailer.readUInt32LE(0);
  }
  // Fresh transforms: the ones given are for the real pass.
  return countTransformed(opened, transformsFor(srv, opened, opts));
}

/** The tar entry (hence the whole pack) was destroyed: the output is gone, not the member. */
class OutputGone extends Error {}

/** A tar-stream entry (a streamx Writable, not a Node one). */
type EntrySink = WritableSink;

/** Write one chunk into a tar entry, waiting while it applies back-pressure. */
async function writeToEntry(entry: EntrySink, chunk: Buffer): Promise<void> {
  if (entry.destroyed) throw new OutputGone('the tar stream was destroyed');
  if (entry.write(chunk)) return;
  await drained(entry);
  if (entry.destroyed) throw new OutputGone('the tar stream was destroyed');
}

/**
 * The end of a member's pipeline. It forwards into the tar entry but is never piped to it: a
 * failing source (corrupt compressed file, read error) must not destroy the entry, because
 * tar-stream then destroys the whole pack, and the members already sent would be lost with it.
 */
function entryWriter(entry: EntrySink, size: number, state: { written: number }): Writable {
  return new Writable({
    highWaterMark: IO_CHUNK,
    write(chunk: Buffer, _enc, cb) {
      if (state.written + chunk.length > size) {
        cb(new Error(`the content is larger than the ${size} bytes announced`));
        return;
      }
      state.written += chunk.length;
      writeToEntry(entry, chunk).then(() => cb(), cb);
    },
  });
}

/** Fill a member up to its announced size with zeros and end it: the tar stays well formed. */
async function padAndEnd(entry: EntrySink, size: number, written: number): Promise<void> {
  const zeros = Buffer.alloc(Math.min(IO_CHUNK, Math.max(size - written, 0)));
  for (let left = size - written; left > 0; left -= zeros.length) {
    await writeToEntry(entry, left >= zeros.length ? zeros : zeros.subarray(0, left));
  }
  entry.end(undefined);
}

/** A member ready to be sent: what its tar header needs is known. */
interface PreparedMember {
  name: string;
  opened: OpenedWal;
  transforms: Duplex[];
  size: number;
  mtime: Date;
}

/** Work out a member's size before its header goes out (may fail: corrupt, unreadable file). */
async function prepareMember(srv: ServerConfig, name: string, opened: OpenedWal, opts: GetWalOptions): Promise<PreparedMember> {
  const transforms = transformsFor(srv, opened, opts);
  const size = await memberSize(srv, opened, transforms, opts);
  const { mtime } = await opened.handle.stat();
  return { name, opened, transforms, size, mtime };
}

type StreamedMember = { ok: true; sha256: string } | { ok: false; reason: string };

/**
 * Send a prepared member; returns its SHA-256 (hex). When the file fails while its data
 * streams, the member is completed with zeros up to its announced size (the tar stays well
 * formed) and the result says why: such a member must be left out of SHA256SUMS, and a client
 * drops members without a checksum. A failing output throws.
 */
async function streamMember(pack: tar.Pack, m: PreparedMember): Promise<StreamedMember> {
  const hash = createHash('sha256');
  // tar-stream calls back once the member is complete, or with an error when it was destroyed.
  let settle: (err?: Error | null) => void = () => undefined;
  const finished = new Promise<void>((resolve, reject) => {
    settle = (err) => (err ? reject(new OutputGone(err.message)) : resolve());
  });
  finished.catch(() => undefined);
  const entry: EntrySink = pack.entry({ name: m.name, size: m.size, mtime: m.mtime, mode: FILE_MODE, type: 'file' }, (err) => settle(err));
  const state = { written: 0 };
  let failure: unknown = null;
  try {
    await pipeline([readFromStart(m.opened), ...m.transforms, hashing(hash), entryWriter(entry, m.size, state)]);
    if (state.written !== m.size) failure = new Error(`the content has ${state.written} bytes, ${m.size} were announced`);
  } catch (err) {
    if (err instanceof OutputGone || entry.destroyed) throw err;
    failure = err;
  }
  if (failure !== null) {
    await padAndEnd(entry, m.size, state.written);
    await finished;
    return { ok: false, reason: errorMessage(failure) };
  }
  entry.end(undefined);
  await finished;
  return { ok: true, sha256: hash.digest('hex') };
}

/**
 * Write to `dest` a tar stream holding WAL `name` and then the next consecutive archived WALs
 * (the `--peek` walk), up to `count` files, each as get-wal would send it (plain, or as stored
 * with keepCompression; `.partial` only for the first name, with opts.partial), then a
 * `SHA256SUMS` member (`<hex> *<name>` lines). `name` missing: the usual not-found BarmanError
 * and nothing written; `name` unreadable: a BarmanError. A LATER file that cannot be read ends
 * the batch cleanly instead (result.stoppedAt, logged as a warning): the files before it reach
 * the client with their checksums, so that one bad archived segment does not turn WAL_NAME
 * into a failure (PostgreSQL would end its recovery there). Data streams through: memory stays
 * bounded by a few chunks.
 */
export async function sendWalBatch(srv: ServerConfig, name: string, count: number, dest: NodeJS.WritableStream, opts: GetWalOptions = {}): Promise<BatchResult> {
  if (opts.compression) throw new BarmanError('--batch sends plain or stored files: it cannot be combined with -z/--gzip or -j/--bzip2', 2);
  const first = await openWal(srv, name, { partial: opts.partial === true });
  if (!first) throw notFound(srv, name);
  // The walk only sees the archive; a first file still in incoming/ or streaming/ comes alone.
  const walk = count > 1 ? peekWals(srv, name, count, true) : [];
  const following = walk[0] === name ? walk.slice(1) : [];

  // WAL_NAME unreadable before anything is written: get-wal's usual failure, stdout empty.
  let prepared: PreparedMember;
  try {
    prepared = await prepareMember(srv, name, first, { ...opts, partial: opts.partial === true });
  } catch (err) {
    await first.handle.close().catch(() => undefined);
    throw new WalUnreadableError(`cannot send WAL file '${name}': ${errorMessage(err)}`);
  }

  const pack = tar.pack();
  const sent = pipeline(pack, dest);
  // Keep an early failure of `sent` from being unhandled while the producer still runs.
  sent.catch(() => undefined);
  const names: string[] = [];
  let bytes = 0;
  const sums: string[] = [];
  let current: string = name;
  let stoppedAt: BatchResult['stoppedAt'];
  /** WAL_NAME itself failed while streaming: the tar is ended cleanly, then this is thrown. */
  let firstFailure: BarmanError | null = null;
  try {
    for (let i = 0; ; i++) {
      let streamed: StreamedMember;
      try {
        streamed = await streamMember(pack, prepared);
      } finally {
        await prepared.opened.handle.close().catch(() => undefined);
      }
      if (!streamed.ok) {
        if (i === 0) firstFailure = new WalUnreadableError(`cannot send WAL file '${current}': ${streamed.reason}`);
        else stoppedAt = { name: current, reason: streamed.reason };
        break;
      }
      names.push(current);
      bytes += prepared.size;
      sums.push(`${streamed.sha256} *${current}\n`);
      if (opts.acceptCompression) {
        // The new client (--accept-compression) also gets each file's checksum right after it:
        // it can hand a verified file over to recovery before the whole batch has arrived.
        const line = Buffer.from(`${streamed.sha256} *${current}\n`);
        await new Promise<void>((resolve, reject) => {
          pack.entry({ name: `${current}${MEMBER_CHECKSUM_SUFFIX}`, size: line.length, mode: FILE_MODE, type: 'file' }, line, (err) => (err ? reject(err) : resolve()));
        });
      }
      const next = following[i];
      if (next === undefined) break;
      current = next;
      let opened: OpenedWal | null = null;
      try {
        // Removed meanwhile (retention): the batch simply ends here, the client asks again later.
        opened = await openWal(srv, next);
        if (!opened) break;
        prepared = await prepareMember(srv, next, opened, { ...opts, partial: false });
      } catch (err) {
        await opened?.handle.close().catch(() => undefined);
        stoppedAt = { name: next, reason: errorMessage(err) };
        break;
      }
    }
    if (stoppedAt) log.warning(`get-wal --batch for ${name}: stopped after ${names.length} file(s), cannot send WAL file '${stoppedAt.name}': ${stoppedAt.reason}`);
    // No checksum member when WAL_NAME failed: nothing in this stream is to be trusted.
    if (!firstFailure) {
      const sumText = Buffer.from(sums.join(''));
      await new Promise<void>((resolve, reject) => {
        pack.entry({ name: BATCH_CHECKSUM_MEMBER, size: sumText.length, mode: FILE_MODE, type: 'file' }, sumText, (err) => (err ? reject(err) : resolve()));
      });
    }
    // Ending the tar (rather than destroying it) keeps the output stream usable for the error.
    pack.finalize();
    await sent;
  } catch (err) {
    pack.destroy();
    await sent.catch(() => undefined);
    if (err instanceof BarmanError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (err instanceof OutputGone || code === 'EPIPE' || code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ERR_STREAM_DESTROYED') {
      throw new BarmanError(`cannot send WAL file '${current}': the receiving end closed the output`);
    }
    throw new WalUnreadableError(`cannot send WAL file '${current}': ${errorMessage(err)}`);
  }
  if (firstFailure) throw firstFailure;
  return stoppedAt ? { names, bytes, stoppedAt } : { names, bytes };
}
