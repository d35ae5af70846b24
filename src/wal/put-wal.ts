/**
 * `put-wal` (spec §6.1), the server side of barman-wal-archive: PostgreSQL's archive_command on
 * the database host sends WAL files through `ssh barman@backup barman put-wal SERVER` as a PAX
 * tar stream: the WAL members, then a `SHA256SUMS` (or `MD5SUMS`) member with one line
 * `<hex> *<name>` per file. We store them in `incoming/`, where archive-wal picks them up.
 *
 * PostgreSQL deletes (or recycles) a WAL segment as soon as archive_command exits 0, so 0 must
 * mean "durably stored": every file fsynced, renamed into place, and the directory fsynced.
 * Anything doubtful (bad name, bad checksum, truncated stream, signal) stores nothing and throws:
 * PostgreSQL then simply sends the segment again later.
 *
 * How, step by step:
 *   1. every member is checked (regular file, a bare WAL name or the checksum file, not over
 *      1 GiB) and streamed, as it arrives, into `incoming/.put-wal-<pid>-<name>.tmp` (a dot-file
 *      ending in .tmp: both archive-wal and Barman's own archiver skip it), SHA-256 hashed on the
 *      way, given the tar mtime and fsynced — the fsync of one member runs while the next one
 *      arrives, and all of them are awaited before step 2;
 *   2. once the stream has ended properly (end-of-archive blocks included), every file must have
 *      exactly the checksum the checksum file gives and every checksum line a file (an MD5SUMS
 *      file, from clients run with --md5, arrives last: only then are the files read back for
 *      their MD5, so that the common SHA256SUMS case hashes each byte once);
 *   3. only then is each file put in place. A name already in the archive (`wals/`) or in
 *      `incoming/` is compared by content (compression undone): the same content is success
 *      without writing; a different content overwrites nothing, the received copy is kept as
 *      `errors/<name>.<UTC stamp>.duplicate` and the whole call fails (PutWalDuplicateError).
 *      New files are hard-linked to their final name, which never replaces an existing file even
 *      when archive-wal or another put-wal races with us; then `incoming/` is fsynced once.
 * Temporary files are removed on every path out, errors and signals (the caller's AbortSignal)
 * included. A SIGKILL can leave a temporary dot-file behind: archive-wal ignores it, and the
 * next put-wal removes it once its process is gone (see removeStaleTemps).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar, { type Header } from 'tar-stream';
import type { ServerConfig } from '../config/config.js';
import { customCompressionOf } from '../catalog/xlogdb.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { faultPoint } from '../util/fault.js';
import { DIR_MODE, FILE_MODE, fsyncDir, isNotFound, pathExists } from '../util/fsutil.js';
import { walArchivePath } from './archiver.js';
import { decompressBuffer, decompressStream, identifyCompression, type CustomCompressionConfig } from './compression.js';
import { decryptToBuffer } from '../catalog/encryption.js';
import { isEncryptedFile } from '../util/gpg.js';
import { walNameKind, type WalNameKind } from './names.js';
import { processExists } from '../util/proc.js';

/** PostgreSQL's largest WAL segment size: no WAL file can be bigger. */
export const MAX_MEMBER_SIZE = 1 << 30;
/** A checksum file lists a batch of names: a few KiB. Bigger is not from our client. */
const MAX_CHECKSUM_FILE_SIZE = 1 << 20;
/** Our client sends batches of about 64 files; far more is a runaway sender. */
const MAX_MEMBERS = 4096;
/** Temporary files of dead put-wal processes older than this are removed. */
const STALE_TEMP_AGE_MS = 60 * 60 * 1000;
const TAR_BLOCK = 512;

export type ChecksumFileName = 'SHA256SUMS' | 'MD5SUMS';
const CHECKSUM_ALGOS: Record<ChecksumFileName, { algo: 'sha256' | 'md5'; hexLength: number }> = {
  SHA256SUMS: { algo: 'sha256', hexLength: 64 },
  MD5SUMS: { algo: 'md5', hexLength: 32 },
};

export interface PutWalOptions {
  /** Stops the transfer (SIGTERM/SIGINT in the CLI): nothing is stored, temp files removed. */
  signal?: AbortSignal;
  /** Largest accepted member (tests); default MAX_MEMBER_SIZE. */
  maxMemberSize?: number;
  /** Age (ctime) after which a dead put-wal's temporary file is removed (tests); default 1 hour. */
  staleTempAgeMs?: number;
}

export interface PutWalDuplicate {
  name: string;
  /** Where the received copy was kept: errors/<name>.<stamp>.duplicate. */
  keptAs: string;
  /** Where the different copy already is (incoming/ or wals/). */
  existing: string;
}

export interface PutWalReport {
  /** New files now in incoming/, in stream order. */
  stored: string[];
  /** Already in incoming/ or in the archive with the same content: nothing written. */
  alreadyPresent: string[];
  /** Already present with a different content: see PutWalDuplicateError. */
  duplicates: PutWalDuplicate[];
  checksumFile: ChecksumFileName | null;
}

/**
 * Some names were already present with a different content. Everything else of the stream was
 * stored; nothing was overwritten. Carries the report for callers that want the details.
 */
export class PutWalDuplicateError extends BarmanError {
  constructor(
    message: string,
    readonly report: PutWalReport,
  ) {
    super(message, 1);
    this.name = 'PutWalDuplicateError';
  }
}

/** A data member written to its temporary file (fsynced once readTar returns). */
interface Received {
  name: string;
  kind: WalNameKind;
  tmp: string;
  size: number;
  /** SHA-256 of the bytes received (MD5, rarely needed, is computed from the file later). */
  sha256: string;
}

/**
 * Writes are gathered into batches of about this size: one system call (and one trip to
 * libuv's thread pool) per MiB instead of one per 64 KiB pipe read.
 */
const WRITE_BATCH_BYTES = 1 << 20;

/** Member names come from the network: quote them with control characters escaped. */
function q(name: string): string {
  const text = name.length > 120 ? `${name.slice(0, 120)}...` : name;
  return `'${text.replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)}'`;
}

function isChecksumFileName(name: string): name is ChecksumFileName {
  return name === 'SHA256SUMS' || name === 'MD5SUMS';
}

/**
 * The bare name of a member (a leading `./` is what tar tools write for files of the current
 * directory): a WAL file name or the checksum file, nothing that could leave incoming/.
 */
export function checkMemberName(raw: string): string {
  const name = raw.startsWith('./') ? raw.slice(2) : raw;
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\\') || name.includes('\0')) {
    throw new BarmanError(`Invalid member name ${q(raw)} in the tar stream: only bare file names are accepted (no path separators, no '..')`);
  }
  if (!isChecksumFileName(name) && walNameKind(name) === null) {
    throw new BarmanError(`Member ${q(raw)} of the tar stream is not a WAL file name (segment, .history, .backup or .partial)`);
  }
  return name;
}

const TYPE_WORDS: Record<string, string> = {
  link: 'a hard link',
  symlink: 'a symbolic link',
  directory: 'a directory',
  'character-device': 'a character device',
  'block-device': 'a block device',
  fifo: 'a FIFO',
  'contiguous-file': 'a contiguous file',
};

function checkMemberType(raw: string, type: string | null | undefined): void {
  if (type === 'file') return;
  const what = (type && TYPE_WORDS[type]) ?? `of type ${q(String(type))}`;
  throw new BarmanError(`Member ${q(raw)} of the tar stream is ${what}: only regular files are accepted`);
}

/**
 * Checksum file lines: `<hex> *<name>` (binary mode, what barman-wal-archive and `sha256sum -b`
 * write) or `<hex>  <name>` (text mode). Names may carry the same `./` as members.
 */
export function parseChecksumFile(text: string, file: ChecksumFileName): Map<string, string> {
  const { hexLength } = CHECKSUM_ALGOS[file];
  const sums = new Map<string, string>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? '').replace(/\r$/, '');
    if (line.trim() === '') continue;
    const m = /^([0-9A-Fa-f]+)(?: \*|  )(.+)$/.exec(line);
    if (!m || (m[1] ?? '').length !== hexLength) {
      throw new BarmanError(`Invalid line ${i + 1} in ${file}: expected '<${hexLength} hex digits> *<file name>'`);
    }
    const digest = (m[1] ?? '').toLowerCase();
    const raw = m[2] ?? '';
    const name = raw.startsWith('./') ? raw.slice(2) : raw;
    const earlier = sums.get(name);
    if (earlier !== undefined && earlier !== digest) {
      throw new BarmanError(`${file} gives two different checksums for ${q(name)}`);
    }
    sums.set(name, digest);
  }
  return sums;
}

function tempName(name: string, pid = process.pid): string {
  return `.put-wal-${pid}-${name}.tmp`;
}

const TEMP_RE = /^\.put-wal-(\d+)-.*\.tmp$/;


/**
 * Remove temporary files that a killed put-wal left behind (SIGKILL, power loss). Only those of
 * processes that are gone and that were last changed long ago (ctime: the mtime comes from the
 * tar header), in case the PID belongs to another PID namespace sharing this directory.
 */
async function removeStaleTemps(incoming: string, maxAgeMs: number): Promise<void> {
  let names: string[];
  try {
    names = await fsp.readdir(incoming);
  } catch (err) {
    // Only "not there" is nothing to clean; an incoming/ that cannot be listed is an error.
    if (isNotFound(err)) return;
    throw new BarmanError(`Cannot list ${incoming}: ${errorMessage(err)}`);
  }
  for (const n of names) {
    const m = TEMP_RE.exec(n);
    if (!m || Number(m[1]) === process.pid || processExists(Number(m[1]))) continue;
    const file = path.join(incoming, n);
    try {
      const st = await fsp.lstat(file);
      if (st.isFile() && Date.now() - st.ctimeMs >= maxAgeMs) await fsp.unlink(file);
    } catch {
      // Best effort: another put-wal may be cleaning too.
    }
  }
}

/**
 * mkdir -p with catalog permissions; the entries of newly created directories are fsynced, or a
 * crash could take a directory away together with the files we reported stored in it.
 */
async function ensureDurableDir(dir: string): Promise<void> {
  const first = await fsp.mkdir(dir, { recursive: true, mode: DIR_MODE });
  if (first === undefined) return;
  for (let d = dir; ; d = path.dirname(d)) {
    await fsyncDir(path.dirname(d));
    if (d === first || path.dirname(d) === d) break;
  }
}

function utcStamp(d = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}T${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`;
}

function isCode(err: unknown, ...codes: string[]): boolean {
  return codes.includes((err as NodeJS.ErrnoException | null)?.code ?? '');
}

/**
 * mtime of a member in seconds: the PAX `mtime` record if any (sub-second, what Python's tarfile
 * and GNU tar write), else the ustar header's whole seconds.
 */
function memberMtime(header: Header): number {
  // tar-stream keeps the member's PAX records (string values) here; its types say unknown.
  const pax = header.pax as Record<string, string> | null | undefined;
  const fromPax = pax?.mtime !== undefined ? Number(pax.mtime) : NaN;
  if (Number.isFinite(fromPax) && fromPax >= 0) return fromPax;
  return (header.mtime ?? new Date()).getTime() / 1000;
}

async function writeFully(fh: fsp.FileHandle, chunk: Buffer): Promise<void> {
  for (let off = 0; off < chunk.length; ) {
    const { bytesWritten } = await fh.write(chunk, off, chunk.length - off);
    off += bytesWritten;
  }
}

/**
 * sha256 of a file's content with its compression undone (raw for .partial, as archive-wal);
 * with `srv`, the file is an encrypted archived one (encryption = gpg), decrypted first.
 */
async function plainDigest(file: string, kind: WalNameKind, custom: CustomCompressionConfig, srv?: ServerConfig): Promise<string> {
  if (srv) {
    const data = await decryptToBuffer(srv, file, `The archived WAL file ${path.basename(file)}`);
    const algo = kind === 'partial' ? null : identifyCompression(data, custom);
    return createHash('sha256')
      .update(algo === null ? data : await decompressBuffer(data, algo, custom))
      .digest('hex');
  }
  const algo = kind === 'partial' ? null : await identifyCompression(file, custom);
  const hash = createHash('sha256');
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      cb();
    },
  });
  const source = createReadStream(file);
  if (algo === null) await pipeline(source, sink);
  else await pipeline(source, decompressStream(algo, custom), sink);
  return hash.digest('hex');
}

/**
 * Receive one tar stream of WAL files for `srv` into its incoming/ directory (see the module
 * comment). Resolves only when every new file is durable; throws BarmanError (nothing stored)
 * on any invalid, unverifiable or incomplete input, and PutWalDuplicateError when a name was
 * already present with a different content. `input` is consumed (and destroyed on failure).
 */
export async function receiveWalTar(srv: ServerConfig, input: Readable, opts: PutWalOptions = {}): Promise<PutWalReport> {
  const incoming = srv.incoming_wals_directory;
  await ensureDurableDir(incoming);
  await removeStaleTemps(incoming, opts.staleTempAgeMs ?? STALE_TEMP_AGE_MS);

  const temps = new Set<string>();
  try {
    const { received, checksumFile, sums } = await readTar(incoming, input, temps, opts);
    faultPoint('put-wal:received');
    await verifyChecksums(received, checksumFile, sums);
    faultPoint('put-wal:verified');
    if (opts.signal?.aborted) throw interrupted();
    const report = await commit(srv, received, checksumFile);
    faultPoint('put-wal:committed');
    return report;
  } finally {
    // Not fsynced: a temp name that comes back after a crash is a dot-file nobody archives.
    for (const t of temps) await fsp.unlink(t).catch(() => undefined);
  }
}

function interrupted(): BarmanError {
  return new BarmanError('put-wal interrupted: no WAL file stored');
}

interface TarContent {
  received: Received[];
  checksumFile: ChecksumFileName | null;
  sums: Map<string, string>;
}

/** Step 1: stream the members into fsynced temporary files. */
async function readTar(incoming: string, input: Readable, temps: Set<string>, opts: PutWalOptions): Promise<TarContent> {
  const maxSize = opts.maxMemberSize ?? MAX_MEMBER_SIZE;
  const extract = tar.extract();
  const received: Received[] = [];
  const seen = new Set<string>();
  let checksumFile: ChecksumFileName | null = null;
  let sums = new Map<string, string>();
  let totalBytes = 0;
  /** Where the last member's data (padded to a block) ends: the end-of-archive blocks follow. */
  let dataEnd = 0;
  /** fsync (and close) of each data member; all settle before readTar returns or throws. */
  const durables: Promise<void>[] = [];

  // Our own pump (rather than pipe) counts the bytes and stops cleanly whichever side fails.
  let pumpError: unknown = null;
  const pump = (async () => {
    try {
      for await (const chunk of input as AsyncIterable<Buffer>) {
        if (extract.destroyed) break;
        totalBytes += chunk.length;
        if (!extract.write(chunk)) {
          await new Promise<void>((resolve) => {
            const done = () => {
              extract.off('drain', done);
              extract.off('close', done);
              resolve();
            };
            extract.on('drain', done);
            extract.on('close', done);
          });
        }
      }
      // streamx declares end(data) but, like Node, treats undefined as "no last chunk".
      if (!extract.destroyed) extract.end(undefined);
    } catch (err) {
      pumpError = err;
      extract.destroy(new BarmanError(`cannot read the tar stream: ${errorMessage(err)}`));
    }
  })();

  const onAbort = () => {
    extract.destroy(interrupted());
    input.destroy();
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  if (opts.signal?.aborted) onAbort();

  let ok = false;
  try {
    for await (const entry of extract) {
      const h = entry.header;
      const raw = h.name;
      checkMemberType(raw, h.type);
      const name = checkMemberName(raw);
      const size = h.size ?? 0;
      // tar-stream records where the member's data starts; its types do not declare it.
      const offset = (h as Header & { byteOffset?: number }).byteOffset ?? 0;
      dataEnd = offset + Math.ceil(size / TAR_BLOCK) * TAR_BLOCK;
      if (seen.has(name)) throw new BarmanError(`Member ${q(name)} appears twice in the tar stream`);
      seen.add(name);

      if (isChecksumFileName(name)) {
        if (checksumFile !== null) throw new BarmanError(`The tar stream holds two checksum files (${checksumFile} and ${name})`);
        if (size > MAX_CHECKSUM_FILE_SIZE) throw new BarmanError(`Checksum file ${name} is too large (${size} bytes)`);
        const chunks: Buffer[] = [];
        for await (const chunk of entry as AsyncIterable<Buffer>) chunks.push(chunk);
        checksumFile = name;
        sums = parseChecksumFile(Buffer.concat(chunks).toString('utf8'), name);
        continue;
      }

      if (size > maxSize) {
        throw new BarmanError(`Member ${q(name)} of the tar stream is ${size} bytes long: more than ${maxSize} bytes, the largest possible WAL file`);
      }
      if (received.length >= MAX_MEMBERS) throw new BarmanError(`More than ${MAX_MEMBERS} files in one tar stream`);
      // streamx types its chunks as unknown; tar-stream always emits Buffers.
      const member = await receiveMember(incoming, name, size, memberMtime(h), entry as AsyncIterable<Buffer>, temps);
      member.durable.catch(() => undefined); // awaited below; not an unhandled rejection meanwhile
      received.push(member.received);
      // At most one fsync runs while the next member arrives: wait for the one before.
      const previous = durables[durables.length - 1];
      durables.push(member.durable);
      if (previous) await previous;
    }
    // Nothing is verified or linked before every file is on disk.
    await Promise.all(durables);
    if (pumpError !== null) throw new BarmanError(`cannot read the tar stream: ${errorMessage(pumpError)}`);
    // A client that dies exactly between two members leaves a stream tar-stream accepts: the
    // end-of-archive blocks (two zero blocks, written by every tar writer) prove it did not.
    if (totalBytes < dataEnd + 2 * TAR_BLOCK) {
      throw new BarmanError('Truncated tar stream (end-of-archive marker missing): the client stopped sending; no WAL file stored');
    }
    if (received.length === 0) throw new BarmanError('The tar stream holds no WAL file');
    ok = true;
    return { received, checksumFile, sums };
  } catch (err) {
    if (opts.signal?.aborted) throw interrupted();
    if (err instanceof BarmanError) throw err;
    const msg = errorMessage(err);
    if (/unexpected end of data/i.test(msg)) {
      throw new BarmanError('Truncated tar stream: the client stopped sending before the end; no WAL file stored');
    }
    throw new BarmanError(`Invalid tar stream: ${msg}`);
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    if (!ok) {
      extract.destroy(null);
      input.destroy();
    }
    await pump;
    // Every temporary file is closed before the caller removes them.
    await Promise.allSettled(durables);
  }
}

/** A member's bytes are all in its temporary file; `durable` settles once it is fsynced and closed. */
interface ReceivedMember {
  received: Received;
  durable: Promise<void>;
}

/** A disk error (ENOSPC, EIO) is the server's problem, not an invalid stream: say so. */
function diskError(file: string, err: unknown): BarmanError {
  return new BarmanError(`Cannot write ${file}: ${errorMessage(err)}; no WAL file stored`);
}

/** Write `chunks` (in order, at the file position) with one writev, finishing a short write. */
async function writeBatch(fh: fsp.FileHandle, chunks: Buffer[], file: string): Promise<void> {
  let total = 0;
  for (const c of chunks) total += c.length;
  try {
    const { bytesWritten } = await fh.writev(chunks);
    if (bytesWritten < total) await writeFully(fh, Buffer.concat(chunks, total).subarray(bytesWritten));
  } catch (err) {
    throw diskError(file, err);
  }
}

/** Most buffers in one writev (IOV_MAX is 1024; small network reads could exceed it). */
const MAX_BATCH_BUFFERS = 256;

/**
 * Stream one member into its temporary file, hashing it (SHA-256). Writes are batched and one
 * batch is written while the next is being received. Resolves once every byte is written; the
 * tar mtime, the mode and the fsync are then applied by `durable`, which the caller awaits
 * while it receives the next member (the disk flushes one file while the network fills the next).
 */
async function receiveMember(incoming: string, name: string, size: number, mtime: number, entry: AsyncIterable<Buffer>, temps: Set<string>): Promise<ReceivedMember> {
  const kind = walNameKind(name);
  if (kind === null) throw new BarmanError(`${q(name)} is not a WAL file name`); // checked before; keeps the type exact
  const tmp = path.join(incoming, tempName(name));
  temps.add(tmp);
  // A leftover of an earlier process with our PID: never ours to keep.
  await fsp.unlink(tmp).catch(() => undefined);
  const sha256 = createHash('sha256');
  let written = 0;
  // A file we cannot create is the server's problem (permissions, a full disk), not a bad stream.
  const fh = await fsp.open(tmp, 'wx', FILE_MODE).catch((err: unknown) => {
    throw diskError(tmp, err);
  });
  let inFlight: Promise<void> = Promise.resolve();
  let handedOver = false;
  try {
    let batch: Buffer[] = [];
    let batchBytes = 0;
    const flush = async () => {
      // One write at a time keeps the file position order; the previous one ran meanwhile.
      await inFlight;
      inFlight = writeBatch(fh, batch, tmp);
      // Awaited later; a rejection meanwhile must not count as unhandled.
      inFlight.catch(() => undefined);
      batch = [];
      batchBytes = 0;
    };
    for await (const chunk of entry) {
      written += chunk.length;
      sha256.update(chunk);
      batch.push(chunk);
      batchBytes += chunk.length;
      if (batchBytes >= WRITE_BATCH_BYTES || batch.length >= MAX_BATCH_BUFFERS) await flush();
    }
    if (batch.length > 0) await flush();
    await inFlight;
    if (written !== size) throw new BarmanError(`Truncated tar stream: ${q(name)} has ${written} of ${size} bytes`);
    faultPoint('put-wal:member-written');
    handedOver = true;
  } finally {
    if (!handedOver) {
      await inFlight.catch(() => undefined);
      await fh.close();
    }
  }
  const durable = (async () => {
    try {
      await fh.chmod(FILE_MODE);
      await fh.utimes(mtime, mtime);
      await fh.sync();
    } catch (err) {
      throw diskError(tmp, err);
    } finally {
      await fh.close();
    }
  })();
  return { received: { name, kind, tmp, size, sha256: sha256.digest('hex') }, durable };
}

/** Digest of a whole file (MD5SUMS: the temporary files are read back once, from the page cache). */
async function fileDigest(file: string, algo: 'sha256' | 'md5'): Promise<string> {
  const hash = createHash(algo);
  for await (const chunk of createReadStream(file, { highWaterMark: WRITE_BATCH_BYTES }) as AsyncIterable<Buffer>) hash.update(chunk);
  return hash.digest('hex');
}

/** Step 2: every file has its checksum, every checksum its file. */
async function verifyChecksums(received: readonly Received[], checksumFile: ChecksumFileName | null, sums: ReadonlyMap<string, string>): Promise<void> {
  const names = new Set(received.map((r) => r.name));
  const orphans = [...sums.keys()].filter((n) => !names.has(n));
  if (orphans.length > 0) throw new BarmanError(`Checksum without corresponding file: ${orphans.map(q).join(', ')}`);
  const missing = received.filter((r) => !sums.has(r.name)).map((r) => r.name);
  if (missing.length > 0 || checksumFile === null) {
    throw new BarmanError(`Missing checksum for file: ${missing.map(q).join(', ')}${checksumFile === null ? ' (no SHA256SUMS or MD5SUMS member)' : ''}`);
  }
  const { algo } = CHECKSUM_ALGOS[checksumFile];
  const bad: Array<{ r: Received; actual: string }> = [];
  for (const r of received) {
    const actual = algo === 'sha256' ? r.sha256 : await fileDigest(r.tmp, algo);
    if (sums.get(r.name) !== actual) bad.push({ r, actual });
  }
  if (bad.length > 0) {
    const details = bad.map(({ r, actual }) => `${q(r.name)} (${checksumFile} says ${sums.get(r.name)}, received data has ${actual})`);
    throw new BarmanError(`Bad file checksum: ${details.join(', ')}`);
  }
}

/** Step 3: put the verified files in place, never over an existing file. */
async function commit(srv: ServerConfig, received: readonly Received[], checksumFile: ChecksumFileName | null): Promise<PutWalReport> {
  const incoming = srv.incoming_wals_directory;
  const archiveCustom = customCompressionOf(srv);
  // Files in incoming/ are identified by magic bytes only, as archive-wal does.
  const incomingCustom: CustomCompressionConfig = { ...archiveCustom, unidentifiedIsCustom: false };
  const report: PutWalReport = { stored: [], alreadyPresent: [], duplicates: [], checksumFile };

  const receivedDigest = async (r: Received): Promise<string> => {
    const algo = r.kind === 'partial' ? null : await identifyCompression(r.tmp, incomingCustom);
    return algo === null ? r.sha256 : plainDigest(r.tmp, r.kind, incomingCustom);
  };
  /**
   * A stored file that cannot be read or decoded throws (put-wal fails, archive_command tries
   * again later): a read error is never taken for a different content. Only received bytes that
   * do not decode are a different file.
   */
  const sameContent = async (r: Received, existing: string, custom: CustomCompressionConfig): Promise<boolean> => {
    let a: string;
    try {
      a = await receivedDigest(r);
    } catch (err) {
      if (!(err instanceof BarmanError)) throw err; // our own temp file unreadable: an error
      return false;
    }
    let b: string;
    try {
      b = await plainDigest(existing, r.kind, custom);
    } catch (err) {
      throw new BarmanError(`cannot compare ${r.name} with ${existing}: ${errorMessage(err)}`);
    }
    return a === b;
  };
  const settleExisting = async (r: Received, existing: string, custom: CustomCompressionConfig): Promise<void> => {
    if (await sameContent(r, existing, custom)) report.alreadyPresent.push(r.name);
    else report.duplicates.push({ name: r.name, existing, keptAs: await keepInErrors(srv, r) });
  };

  let linked = false;
  try {
    for (const r of received) {
      const archived = walArchivePath(srv, r.name);
      if (await pathExists(archived)) {
        if (!(await isEncryptedFile(archived).catch(() => false))) {
          await settleExisting(r, archived, archiveCustom);
          continue;
        }
        // An encrypted archived copy is compared in clear when it can be decrypted. When it
        // cannot (no or failing encryption_passphrase_command), the file goes to incoming/ as
        // in Barman and archive-wal settles it: never a failure that would make PostgreSQL
        // retry the same segment forever.
        const same = await Promise.all([receivedDigest(r), plainDigest(archived, r.kind, archiveCustom, srv)]).then(
          ([a, b]) => a === b,
          () => null,
        );
        if (same === true) {
          report.alreadyPresent.push(r.name);
          continue;
        }
        if (same === false) {
          report.duplicates.push({ name: r.name, existing: archived, keptAs: await keepInErrors(srv, r) });
          continue;
        }
      }
      const dst = path.join(incoming, r.name);
      try {
        // link() fails when dst exists: a file that archive_command, rsync or another put-wal
        // put there meanwhile is never replaced (rename would replace it).
        await fsp.link(r.tmp, dst);
        linked = true;
        report.stored.push(r.name);
        faultPoint('put-wal:linked');
      } catch (err) {
        if (isCode(err, 'EEXIST')) {
          await settleExisting(r, dst, incomingCustom);
        } else if (isCode(err, 'EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'EMLINK')) {
          // File systems without hard links: check, then rename (a race window remains there).
          if (await pathExists(dst)) {
            await settleExisting(r, dst, incomingCustom);
          } else {
            await fsp.rename(r.tmp, dst);
            linked = true;
            report.stored.push(r.name);
          }
        } else {
          throw new BarmanError(`Cannot store ${r.name} in ${incoming}: ${errorMessage(err)}`);
        }
      }
    }
  } finally {
    // One fsync makes every new name durable; the caller then removes the temp names.
    if (linked) {
      await fsyncDir(incoming).catch((err: unknown) => {
        throw new BarmanError(`Cannot make the new WAL files durable in ${incoming}: ${errorMessage(err)}; PostgreSQL will send them again`);
      });
    }
  }

  if (report.duplicates.length > 0) {
    const names = report.duplicates.map((d) => d.name);
    const kept = report.duplicates.map((d) => path.basename(d.keptAs));
    throw new PutWalDuplicateError(
      `${names.length === 1 ? 'WAL file' : 'WAL files'} ${names.join(', ')} already present in server ${srv.name} with a different content: ` +
        `nothing was overwritten, the received ${names.length === 1 ? 'copy was' : 'copies were'} kept in the errors directory as ${kept.join(', ')}`,
      report,
    );
  }
  return report;
}

/** Keep a conflicting received file as errors/<name>.<UTC stamp>.duplicate, for the DBA. */
async function keepInErrors(srv: ServerConfig, r: Received): Promise<string> {
  const errorsDir = srv.errors_directory;
  await ensureDurableDir(errorsDir);
  const stamp = utcStamp();
  let dst = path.join(errorsDir, `${r.name}.${stamp}.duplicate`);
  // Never overwrite an earlier kept file of the same name and second.
  for (let n = 1; await pathExists(dst); n++) dst = path.join(errorsDir, `${r.name}.${stamp}.${n}.duplicate`);
  try {
    await fsp.link(r.tmp, dst);
  } catch (err) {
    if (!isCode(err, 'EXDEV', 'EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'EMLINK')) throw err;
    await fsp.copyFile(r.tmp, dst, fs.constants.COPYFILE_EXCL);
    const fh = await fsp.open(dst, 'r+');
    try {
      await fh.chmod(FILE_MODE);
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
  await fsyncDir(errorsDir);
  return dst;
}
