/**
 * The push of barman-wal-archive: WAL files sent to `barman put-wal` as one PAX tar stream on
 * ssh's stdin — the data members, then a `SHA256SUMS` (or `MD5SUMS`) member with lines
 * `<hexdigest> *<name>` (spec §6.1).
 *
 * Push-ahead: besides the segment PostgreSQL asked for, the batch may carry the following
 * segments already marked `.ready` in `archive_status`, so that the calls PostgreSQL makes for
 * them next find them stored (see markers.ts) and return without Node or ssh.
 */
import { spawn } from 'node:child_process';
import { createHash, type Hash } from 'node:crypto';
import type { BigIntStats } from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Writable } from 'node:stream';
import tar from 'tar-stream';
import { BarmanError, errorMessage } from '../util/errors.js';
// Types only: the compressors (and the worker pool) are loaded when something is compressed,
// so that the plain archive_command call, once per segment, does not pay for them.
import type { CompressionLevel, CompressionName } from '../wal/compression.js';
import { walNameKind } from '../wal/names.js';
import type { CompressPool } from './compress-pool.js';
import { defaultPoolSize } from './pool-size.js';
import {
  cleanOldMarkers,
  consumeMarker,
  destinationKey,
  hasForeignMarker,
  markerUsableFor,
  prepareMarkerDir,
  sameFile,
  statSignature,
  writeMarker,
} from './markers.js';
import { quoteRemote, remoteConfigArgs, sshArgs, sshOutcome, validateTarget, type SshOutcome, type SshTarget } from './ssh.js';
import { drained, type WritableSink } from '../util/streams.js';

/** Exit code of barman-wal-archive for local problems (bad options, WAL_PATH unusable). */
export const LOCAL_ERROR = 2;
/** Exit code when ssh could not connect. */
export const SSH_ERROR = 3;

/** A file to send: its tar member name and where to read it. */
export interface PushMember {
  name: string;
  path: string;
  /** Size when the batch was chosen (only used to cap the batch). */
  size: number;
}

export interface BatchLimits {
  /** Most members in one push, the requested segment included (0 or 1: that segment alone). */
  maxMembers: number;
  /** Stop adding push-ahead members once the batch holds this many bytes. */
  maxBytes: number;
}

export const DEFAULT_BATCH_MEMBERS = 64;
export const DEFAULT_BATCH_BYTES = 1 << 30;
/**
 * With compression. PostgreSQL waits on the first call of a batch until the whole batch is
 * stored; compressed segments (zstd low) went 1.5-2 times faster than plain ones, so a batch
 * twice as long keeps about the same wait while the fixed cost of a push (node, ssh handshake,
 * remote node: ~0.6 s measured) is shared by twice as many segments.
 */
export const DEFAULT_COMPRESSED_BATCH_MEMBERS = 128;
export const DEFAULT_COMPRESSED_BATCH_BYTES = 2 * (1 << 30);

/**
 * Order in which PostgreSQL's archiver picks `.ready` files: timeline history files first,
 * then by name (all names of one kind have the same length, so string order is WAL order).
 */
export function archiverOrder(a: string, b: string): number {
  const ha = walNameKind(a) === 'history';
  const hb = walNameKind(b) === 'history';
  if (ha !== hb) return ha ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The push-ahead candidates for a request of `walPath`: names with a `.ready` status file next
 * to it (`<dir>/archive_status/<name>.ready`) that PostgreSQL will ask for after it — segments
 * and backup labels sorting after it, and history files — in the archiver's order. Partial
 * segments and anything that is not a WAL file name are left to PostgreSQL's own calls.
 */
export async function readyAfter(walPath: string): Promise<string[]> {
  const requested = path.basename(walPath);
  const kind = walNameKind(requested);
  // Only a real WAL file name lives in pg_wal; anything else (a test file, a copy elsewhere)
  // says nothing about what PostgreSQL will ask next.
  if (kind === null || kind === 'partial') return [];
  let entries: string[];
  try {
    entries = await fsp.readdir(path.join(path.dirname(walPath), 'archive_status'));
  } catch {
    return [];
  }
  const names: string[] = [];
  for (const entry of entries) {
    if (!entry.endsWith('.ready')) continue;
    const name = entry.slice(0, -'.ready'.length);
    if (name === requested) continue;
    const k = walNameKind(name);
    if (k === 'history' || ((k === 'segment' || k === 'backup') && name > requested)) names.push(name);
  }
  return names.sort(archiverOrder);
}

/**
 * The batch for a request: the requested file first, then push-ahead candidates (see
 * readyAfter) that still exist as regular files, up to the limits, and before the first
 * candidate for which `stopAt` says true (one another destination already pushed ahead).
 */
export async function selectBatch(
  walPath: string,
  limits: BatchLimits,
  stopAt: (name: string) => Promise<boolean> = async () => false,
): Promise<PushMember[]> {
  const first = await fsp.stat(walPath);
  const batch: PushMember[] = [{ name: path.basename(walPath), path: walPath, size: first.size }];
  if (limits.maxMembers <= 1) return batch;
  let bytes = first.size;
  const dir = path.dirname(walPath);
  for (const name of await readyAfter(walPath)) {
    if (batch.length >= limits.maxMembers || bytes >= limits.maxBytes) break;
    if (await stopAt(name)) break;
    const file = path.join(dir, name);
    try {
      const st = await fsp.lstat(file);
      if (!st.isFile()) continue;
      batch.push({ name, path: file, size: st.size });
      bytes += st.size;
    } catch {
      // Removed since the directory was read: PostgreSQL will tell us about it if it matters.
    }
  }
  return batch;
}

export type ChecksumAlgorithm = 'sha256' | 'md5';

export function checksumMemberName(algo: ChecksumAlgorithm): string {
  return algo === 'md5' ? 'MD5SUMS' : 'SHA256SUMS';
}

export interface PackOptions {
  checksum: ChecksumAlgorithm;
  compression?: CompressionName | null;
  compressionLevel?: CompressionLevel | null;
  /**
   * Worker threads that compress (and checksum) members while others are sent. Unset: a pool
   * of autoWorkers() threads; 0: none.
   */
  workers?: number;
  /** A pool shared by several sessions (the caller closes it); overrides `workers`. */
  pool?: CompressPool | null;
}

/** What was sent of one member. */
export interface SentMember {
  name: string;
  /** statSignature() of the file taken (fstat) before reading it. */
  signature: string;
  /** The file was the same (inode, size, mtime) after reading: a marker may vouch for it. */
  unchanged: boolean;
}

interface LoadedMember {
  name: string;
  data: Buffer;
  before: BigIntStats;
  unchanged: boolean;
}

/** A member ready to be sent: its bytes and, when a worker computed it already, their digest. */
interface PreparedMember extends LoadedMember {
  digest: string | null;
}

/** Read a whole file through one fd, noting its identity before and after. */
async function loadMember(member: PushMember, required: boolean): Promise<LoadedMember | null> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(member.path, 'r');
  } catch (err) {
    if (!required) return null;
    throw new BarmanError(`cannot open WAL file ${member.path}: ${errorMessage(err)}`, LOCAL_ERROR);
  }
  try {
    const before = await fh.stat({ bigint: true });
    if (!before.isFile()) {
      if (!required) return null;
      throw new BarmanError(`WAL_PATH must be a regular file: ${member.path}`, LOCAL_ERROR);
    }
    // A WAL segment does not change once it is `.ready`; read up to EOF anyway so that the
    // member is exactly the bytes that were there (the identity check below catches changes).
    const chunks: Buffer[] = [];
    let total = 0;
    let buf = Buffer.allocUnsafe(Math.max(Number(before.size), 1) + 1);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, total);
      if (bytesRead === 0) break;
      chunks.push(buf.subarray(0, bytesRead));
      total += bytesRead;
      if (bytesRead === buf.length) buf = Buffer.allocUnsafe(1 << 20);
      else buf = buf.subarray(bytesRead);
    }
    const after = await fh.stat({ bigint: true });
    let atPath: BigIntStats | null = null;
    try {
      atPath = await fsp.stat(member.path, { bigint: true });
    } catch {
      atPath = null; // vanished: sent all the same, but no marker
    }
    const unchanged = sameFile(before, after) && atPath !== null && sameFile(before, atPath) && BigInt(total) === before.size;
    const data = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, total);
    return { name: member.name, data, before, unchanged };
  } catch (err) {
    if (err instanceof BarmanError || required) throw err;
    return null; // a push-ahead member that went away mid-read is simply not sent
  } finally {
    await fh.close();
  }
}

/**
 * Read a member and compress it: in a worker when there is a pool (which also computes the
 * digest), else here (the digest is then computed while sending). A compression failure is
 * a BarmanError for every member: the stream is abandoned rather than sent incomplete.
 */
async function prepareMember(member: PushMember, opts: PackOptions, pool: CompressPool | null, required: boolean): Promise<PreparedMember | null> {
  if (required) return prepareRequired(member, opts, pool);
  // A push-ahead member is not in the stream yet: one that cannot be prepared is left for
  // PostgreSQL's own call rather than failing the segment it asked for now.
  return prepareRequired(member, opts, pool, false).catch(() => null);
}

async function prepareRequired(member: PushMember, opts: PackOptions, pool: CompressPool | null, required = true): Promise<PreparedMember | null> {
  const loaded = await loadMember(member, required);
  if (!loaded) return null;
  if (pool) {
    const packed = await pool.pack(loaded.data, { compression: opts.compression ?? null, level: opts.compressionLevel ?? 'medium', checksum: opts.checksum });
    return { ...loaded, data: packed.data, digest: packed.digest };
  }
  if (!opts.compression) return { ...loaded, digest: null };
  try {
    const { compressBuffer } = await import('../wal/compression.js');
    const data = await compressBuffer(loaded.data, opts.compression, opts.compressionLevel ?? 'medium');
    return { ...loaded, data, digest: null };
  } catch (err) {
    throw new BarmanError(`cannot compress ${member.name}: ${errorMessage(err)}`, LOCAL_ERROR);
  }
}

/** Add one member to a tar pack and wait until the pack has handed its bytes on. */
function addEntry(pack: tar.Pack, name: string, data: Buffer, mtime: Date): Promise<void> {
  return new Promise((resolve, reject) => {
    pack.entry({ name, size: data.length, mtime, mode: 0o600, type: 'file' }, data, (err) => (err ? reject(err) : resolve()));
  });
}

/**
 * Hashing a 16 MiB segment takes ~20 ms of the only thread that also feeds ssh, whose pipe
 * holds ~200 KiB (~1 ms of ssh): hashed in one go, ssh would idle for most of it. Slices this
 * small are hashed while ssh still drains what the previous one left in the pipe.
 */
const HASH_SLICE = 256 << 10;

/** A tar-stream entry (a streamx Writable). */
type EntrySink = WritableSink;

/**
 * Add a data member slice by slice, feeding `hash` (when the digest is not known yet) as the
 * bytes go out (the checksum member comes last, so the digest is only needed then). Resolves
 * once the pack has the whole member.
 */
async function addSlicedEntry(pack: tar.Pack, name: string, data: Buffer, mtime: Date, hash: Hash | null, aborted: () => boolean): Promise<void> {
  let settle: (err?: Error | null) => void = () => undefined;
  const finished = new Promise<void>((resolve, reject) => {
    settle = (err) => (err ? reject(err) : resolve());
  });
  finished.catch(() => undefined); // awaited below
  const entry: EntrySink = pack.entry({ name, size: data.length, mtime, mode: 0o600, type: 'file' }, (err) => settle(err));
  for (let off = 0; off < data.length; off += HASH_SLICE) {
    const slice = data.subarray(off, off + HASH_SLICE);
    hash?.update(slice);
    if (!entry.write(slice)) await drained(entry);
    if (entry.destroyed || aborted()) throw new Error('the tar stream was closed');
  }
  entry.end(undefined);
  await finished;
}

/**
 * Compression workers for a push of `members` files: none without compression (hashing keeps
 * pace with ssh on the main thread) or for a single file (a worker costs more to start than
 * it could overlap); else up to defaultPoolSize(), never more than the files after the first.
 */
export function autoWorkers(compression: CompressionName | null | undefined, members: number): number {
  if (!compression || members < 2) return 0;
  return Math.min(defaultPoolSize(), members - 1);
}

async function newPool(workers: number): Promise<CompressPool> {
  const { CompressPool: Pool } = await import('./compress-pool.js');
  return new Pool(workers);
}

/** Members prepared ahead of the one being sent, without a pool (read i+1 while i is sent). */
const AHEAD_WITHOUT_POOL = 1;

/** What writeTarStream did. */
export interface TarResult {
  sent: SentMember[];
  /** Every byte, checksum member and end blocks included, was handed to the sink. */
  complete: boolean;
}

/**
 * Write the tar stream for `members` to `sink` (the first member is required: failing to read
 * it is an error; the others are skipped when they cannot be read). Resolves once the last
 * byte is handed to `sink`, or early when `aborted()` turns true (the reader went away).
 */
export async function writeTarStream(
  members: readonly PushMember[],
  sink: Writable,
  opts: PackOptions,
  aborted: () => boolean = () => false,
): Promise<TarResult> {
  const wantWorkers = opts.workers ?? autoWorkers(opts.compression, members.length);
  const ownPool = opts.pool || members.length === 0 ? null : wantWorkers > 0 ? await newPool(wantWorkers) : null;
  try {
    return await streamMembers(members, sink, opts, opts.pool ?? ownPool, aborted);
  } finally {
    await ownPool?.close();
  }
}

async function streamMembers(
  members: readonly PushMember[],
  sink: Writable,
  opts: PackOptions,
  pool: CompressPool | null,
  aborted: () => boolean,
): Promise<TarResult> {
  const pack = tar.pack();
  const pumped = pump(pack, sink, aborted);
  pumped.catch(() => undefined); // awaited below; a failure here is reported there
  const sent: SentMember[] = [];
  const sums: string[] = [];
  // Each worker gets one member ahead of the one streaming; bounded memory (a few segments).
  const ahead = pool ? pool.size + 1 : AHEAD_WITHOUT_POOL;
  const queue: Array<Promise<PreparedMember | null>> = [];
  let launched = 0;
  const launch = () => {
    while (launched < members.length && queue.length < ahead) {
      const p = prepareMember(members[launched] as PushMember, opts, pool, launched === 0);
      p.catch(() => undefined); // awaited in turn; avoid an unhandled rejection meanwhile
      queue.push(p);
      launched++;
    }
  };
  try {
    launch();
    for (let next = queue.shift(); next; next = queue.shift()) {
      const loaded = await next;
      launch();
      if (aborted()) break;
      if (!loaded) continue;
      const hash = loaded.digest === null ? createHash(opts.checksum) : null;
      await addSlicedEntry(pack, loaded.name, loaded.data, new Date(Number(loaded.before.mtimeNs / 1_000_000n)), hash, aborted);
      sums.push(`${loaded.digest ?? hash?.digest('hex')} *${loaded.name}\n`);
      const signature = statSignature(loaded.before);
      sent.push({ name: loaded.name, signature: signature ?? '', unchanged: loaded.unchanged && signature !== null });
    }
    if (!aborted()) {
      await addEntry(pack, checksumMemberName(opts.checksum), Buffer.from(sums.join(''), 'utf8'), new Date());
      pack.finalize();
    }
  } catch (err) {
    pack.destroy(err instanceof Error ? err : new Error(String(err)));
    await pumped.catch(() => undefined);
    // The reader going away makes pending entries fail: that is not a local error.
    if (aborted() && !(err instanceof BarmanError)) return { sent, complete: false };
    throw err;
  }
  if (aborted()) {
    pack.destroy();
    await pumped.catch(() => undefined);
    return { sent, complete: false };
  }
  const pumpedAll = await pumped;
  return { sent, complete: pumpedAll };
}

/**
 * Copy the pack's bytes to `sink`, honouring back-pressure; ends `sink` at the end. Resolves
 * true when the whole pack was copied, false when `aborted()` cut it short.
 */
async function pump(pack: tar.Pack, sink: Writable, aborted: () => boolean): Promise<boolean> {
  try {
    for await (const chunk of pack as AsyncIterable<Buffer>) {
      if (aborted()) return false;
      if (!sink.write(chunk)) await drained(sink);
    }
    return !aborted();
  } catch (err) {
    // The pack was destroyed because reading a file failed: that error is reported instead.
    if (!aborted()) throw err;
    return false;
  } finally {
    sink.end();
  }
}

export interface SessionResult {
  outcome: SshOutcome;
  /** Members fully sent (meaningful only when outcome.exitCode is 0). */
  sent: SentMember[];
}

/**
 * One ssh session running `put-wal`: stream the members, wait for the remote side. Success
 * (exit 0) only when every byte was handed to ssh and put-wal exited 0 — put-wal exits 0
 * only after fsyncing every member it received.
 */
export async function pushSession(
  sshArgv: readonly string[],
  members: readonly PushMember[],
  opts: PackOptions,
): Promise<SessionResult> {
  const child = spawn('ssh', [...sshArgv], { stdio: ['pipe', 'inherit', 'inherit'] });
  let exited = false;
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.on('error', (err) => reject(new BarmanError(`cannot run ssh: ${err.message}`, LOCAL_ERROR)));
    child.on('close', (code, signal) => {
      exited = true;
      resolve({ code, signal });
    });
  });
  closed.catch(() => undefined);
  // EPIPE when ssh dies or stops reading: its exit status says why. Stop streaming at once
  // (the pipe is gone; waiting for it to drain would wait forever).
  let broken = false;
  child.stdin.on('error', () => {
    broken = true;
  });
  let result: TarResult;
  try {
    result = await writeTarStream(members, child.stdin, opts, () => exited || broken);
  } catch (err) {
    child.kill('SIGTERM');
    await closed.catch(() => undefined);
    throw err;
  }
  const { code, signal } = await closed;
  const outcome = sshOutcome(code, signal, SSH_ERROR);
  if (outcome.exitCode === 0 && !result.complete) {
    // put-wal cannot have stored a stream it did not get to the end of; never claim it did.
    return { outcome: { exitCode: 1, message: 'the Barman server ended the session before the WAL stream was complete' }, sent: [] };
  }
  return { outcome, sent: outcome.exitCode === 0 ? result.sent : [] };
}

// ---------------------------------------------------------------------------------------------
// The whole archive_command

export interface ArchiveOptions {
  target: SshTarget;
  server: string;
  walPath: string;
  /** Barman configuration file on the Barman server (`barman --config`). */
  config?: string;
  checksum: ChecksumAlgorithm;
  compression?: CompressionName | null;
  compressionLevel?: CompressionLevel | null;
  spoolDir: string;
  /** Most segments per push, the requested one included; 0 or 1 disables push-ahead. */
  batch: number;
  maxBatchBytes?: number;
  /** ssh sessions a batch is spread over (each with its own put-wal). */
  sessions?: number;
  /** Compression worker threads (PackOptions.workers); unset: automatic. */
  workers?: number;
}

export interface ArchiveResult {
  exitCode: number;
  /** One line for stderr when the exit code needs explaining. */
  message: string | null;
  /** Problems that did not stop the requested segment from being stored. */
  warnings: string[];
  /** Files stored by this call (0 when a marker showed the segment was already stored). */
  stored: number;
  /** Markers written for later calls. */
  markers: number;
}

/** Remote `barman [--config='C'] put-wal 'SERVER' [--test]`, quoted for the remote shell. */
export function putWalRemoteArgs(server: string, config: string | undefined, test: boolean): string[] {
  return ['barman', ...remoteConfigArgs(config), 'put-wal', quoteRemote(server), ...(test ? ['--test'] : [])];
}

/** Split a batch into `n` contiguous runs (the first holds the requested segment). */
export function splitBatch<T>(batch: readonly T[], n: number): T[][] {
  const parts = Math.max(1, Math.min(n, batch.length));
  const out: T[][] = [];
  let start = 0;
  for (let i = 0; i < parts; i++) {
    const end = start + Math.ceil((batch.length - start) / (parts - i));
    out.push(batch.slice(start, end));
    start = end;
  }
  return out;
}

/** Sessions worth opening for a batch: a second one only when there is enough to share. */
function sessionCount(opts: ArchiveOptions, members: number): number {
  const wanted = opts.sessions ?? DEFAULT_SESSIONS;
  return members >= MIN_MEMBERS_PER_SESSION * 2 ? wanted : 1;
}

export const DEFAULT_SESSIONS = 1;
const MIN_MEMBERS_PER_SESSION = 4;

async function requestedFileStats(walPath: string): Promise<BigIntStats> {
  let st: BigIntStats;
  try {
    st = await fsp.stat(walPath, { bigint: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new BarmanError(code === 'ENOENT' ? `WAL_PATH does not exist: ${walPath}` : `cannot access WAL_PATH ${walPath}: ${errorMessage(err)}`, LOCAL_ERROR);
  }
  if (st.isDirectory()) throw new BarmanError(`WAL_PATH cannot be a directory: ${walPath}`, LOCAL_ERROR);
  if (!st.isFile()) throw new BarmanError(`WAL_PATH must be a regular file: ${walPath}`, LOCAL_ERROR);
  return st;
}

/**
 * archive_command: make `walPath` durably stored on the Barman server, pushing ready
 * segments ahead when allowed. Exit code 0 only once put-wal reported it stored (fsync'd) or
 * a marker from an earlier successful push vouches for this very file.
 */
export async function archiveWal(opts: ArchiveOptions): Promise<ArchiveResult> {
  const st = await requestedFileStats(opts.walPath);
  // Before any marker is trusted: a marker must not turn a call that cannot work into a success.
  validateTarget(opts.target);
  const requested = path.basename(opts.walPath);
  const warnings: string[] = [];
  // Which Barman server the markers of this call are about (the launcher builds the same).
  const destination = destinationKey({ ...opts.target, config: opts.config });

  let markerDir: string | null = null;
  if (opts.batch > 1) {
    try {
      if (!markerUsableFor(destination)) throw new BarmanError('the --config value holds a line break', LOCAL_ERROR);
      markerDir = await prepareMarkerDir(opts.spoolDir, opts.server);
    } catch (err) {
      warnings.push(`push-ahead disabled: ${errorMessage(err)}`);
    }
  }
  const signature = statSignature(st);
  if (markerDir && signature !== null && (await consumeMarker(markerDir, requested, signature, destination))) {
    return { exitCode: 0, message: null, warnings, stored: 0, markers: 0 };
  }

  const dirForStop = markerDir;
  const batch = await selectBatch(
    opts.walPath,
    { maxMembers: markerDir ? opts.batch : 1, maxBytes: opts.maxBatchBytes ?? DEFAULT_BATCH_BYTES },
    (name) => (dirForStop ? hasForeignMarker(dirForStop, name, destination) : Promise.resolve(false)),
  );
  const workers = opts.workers ?? autoWorkers(opts.compression, batch.length);
  // One pool for every session of this call: sessions share the cores, not multiply threads.
  const pool = workers > 0 ? await newPool(workers) : null;
  const pack: PackOptions = { checksum: opts.checksum, compression: opts.compression, compressionLevel: opts.compressionLevel, pool, workers: 0 };
  const argv = sshArgs(opts.target, putWalRemoteArgs(opts.server, opts.config, false));
  const parts = splitBatch(batch, sessionCount(opts, batch.length));
  let results: Array<PromiseSettledResult<SessionResult>>;
  let first: PromiseSettledResult<SessionResult> | undefined;
  try {
    results = await Promise.allSettled(parts.map((members) => pushSession(argv, members, pack)));
    first = results[0];
    if (!first || first.status === 'rejected') throw first?.reason ?? new BarmanError('no push was made', LOCAL_ERROR);
    const firstCode = first.value.outcome.exitCode;
    if (firstCode !== 0 && firstCode !== SSH_ERROR && (parts[0]?.length ?? 0) > 1) {
      // put-wal refused the batch (e.g. a later segment clashes with a different copy on the
      // server): push-ahead must not make the requested segment wait for another one's problem.
      warnings.push(`push of ${parts[0]?.length} files failed (exit code ${firstCode}); sending ${requested} alone`);
      const alone = await Promise.allSettled([pushSession(argv, batch.slice(0, 1), pack)]);
      first = alone[0] ?? first;
      if (first.status === 'rejected') throw first.reason;
      results[0] = first;
    }
  } finally {
    await pool?.close();
  }
  let stored = 0;
  let markers = 0;
  for (const [i, r] of results.entries()) {
    if (r.status === 'rejected') {
      warnings.push(`push-ahead session failed: ${errorMessage(r.reason)}`);
      continue;
    }
    if (r.value.outcome.exitCode !== 0) {
      if (i > 0) warnings.push(`push-ahead session failed (exit code ${r.value.outcome.exitCode}); its segments will be sent again`);
      continue;
    }
    stored += r.value.sent.length;
    if (!markerDir) continue;
    for (const m of r.value.sent) {
      if (m.name === requested || !m.unchanged) continue;
      try {
        await writeMarker(markerDir, m.name, m.signature, destination);
        markers++;
      } catch (err) {
        warnings.push(`cannot write marker for ${m.name}: ${errorMessage(err)}`);
      }
    }
  }
  if (markerDir && first.value.outcome.exitCode === 0) await cleanOldMarkers(markerDir);
  return { exitCode: first.value.outcome.exitCode, message: first.value.outcome.message, warnings, stored, markers };
}

/** `--test`: run `put-wal --test` on the Barman server; its output goes to ours. */
export async function testPutWal(target: SshTarget, server: string, config: string | undefined): Promise<SshOutcome> {
  const child = spawn('ssh', sshArgs(target, putWalRemoteArgs(server, config, true)), { stdio: ['ignore', 'inherit', 'inherit'] });
  const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.on('error', (err) => reject(new BarmanError(`cannot run ssh: ${err.message}`, LOCAL_ERROR)));
    child.on('close', (c, s) => resolve({ code: c, signal: s }));
  });
  return sshOutcome(code, signal, SSH_ERROR);
}
