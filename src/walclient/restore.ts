/**
 * barman-wal-restore, the restore_command client (spec §6.2): fetch WAL_NAME from the Barman
 * server over SSH (`barman get-wal`) into WAL_DEST, optionally prefetching the following WAL
 * files into a spool directory.
 *
 * Prefetch (-p N) first asks our server for `get-wal --batch N`: WAL_NAME and up to N-1 following
 * files in one tar stream over one SSH session, with SHA-256 checksums. Barman's server rejects
 * the option; the client then speaks Barman's protocol (`--peek N`, then one get-wal per name).
 *
 * PostgreSQL must never read a half file: everything is written under a temporary name next to
 * its destination and renamed. Spool files are fsynced only when no boot id can tell a crashed
 * boot's spool apart (spool.ts); WAL_DEST never is (PostgreSQL asks again after a crash).
 * Nothing is printed here; failures are BarmanErrors whose exit code is the one the command
 * must end with (1 not found, 2 ssh/protocol, 3 bad destination/name).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { BATCH_CHECKSUM_MEMBER, CLIENT_DECODABLE, MEMBER_CHECKSUM_SUFFIX } from '../wal/batch-protocol.js';
import { createHash, type Hash } from 'node:crypto';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { BarmanError, errorMessage } from '../util/errors.js';
import { FILE_MODE } from '../util/fsutil.js';
import { mapPool } from '../util/pool.js';
import { assertSafeWalName } from '../wal/names.js';
import { MemberWriter } from './restore-decompress.js';
import { quoteRemote, remoteConfigArgs, sshArgs, sshOutcome, type SshTarget } from './ssh.js';
import { commitToSpool, ensureSpool, plainDownload, readBootId, resetSpool, spoolMatchesBoot, spoolTrusted, syncSpool, takeFromSpool, tempNameFor } from './spool.js';
import { batchesRefusedLately, clearPrefetchNone, markBatchesRefused, waitForPrefetch } from './restore-prefetch.js';

export interface RestoreOptions {
  host: string;
  server: string;
  walName: string;
  walDest: string;
  user: string;
  port?: string;
  sshConfig?: string;
  /** Remote barman configuration file (`-c`). */
  config?: string;
  /** Number of files to fetch per request (prefetch); 0 = no prefetch. */
  parallel: number;
  /**
   * `parallel` is the default (no -p given): prefetch through `get-wal --batch` only. Against a
   * server without batches (Barman's) WAL_NAME then comes alone, as from Barman's own client
   * without -p, rather than through Barman's protocol (N parallel sessions nobody asked for).
   */
  parallelByDefault?: boolean;
  spoolDir: string;
  partial: boolean;
  gzip: boolean;
  bzip2: boolean;
  keepCompression: boolean;
}

export type RestoreSource = 'spool' | 'batch' | 'peek' | 'single';

export interface RestoreResult {
  source: RestoreSource;
  /** Files left in the spool for the next calls. */
  prefetched: string[];
  /** Why the `--batch` request failed when WAL_NAME then came through a single get-wal. */
  batchFailure?: string;
  /** Why -p was not honoured (an unusable spool): worth a line, since it costs one SSH session per WAL. */
  prefetchOff?: string;
}

/** A failure reported by the remote get-wal: its own stderr is the message to show. */
export class RemoteError extends BarmanError {
  constructor(
    message: string,
    exitCode: number,
    /** What the remote command wrote on stderr (already `ERROR: ...` lines). */
    readonly remoteStderr: string,
  ) {
    super(message, exitCode);
    this.name = 'RemoteError';
  }
}

/** A SHA256SUMS member of a batch holds a few lines per file: more is not ours. */
const MAX_CHECKSUM_BYTES = 1 << 20;

function target(o: RestoreOptions): SshTarget {
  return { host: o.host, user: o.user, port: o.port, sshConfig: o.sshConfig };
}

/**
 * ssh argv running `barman [--config='C'] 'get-wal [flags] 'SERVER' 'WAL''`: Barman's client
 * passes the get-wal part as one argument, each value single-quoted for the remote shell.
 */
export function getWalSshArgs(o: RestoreOptions, extra: { test?: boolean; peek?: number; batch?: number; walName?: string; accept?: boolean } = {}): string[] {
  const words = ['get-wal'];
  if (extra.test) words.push('--test');
  if (extra.peek !== undefined) words.push('--peek', quoteRemote(String(extra.peek)));
  if (extra.batch !== undefined) words.push('--batch', quoteRemote(String(extra.batch)));
  // --batch sends plain or stored files: -z/-j only make sense for Barman's protocol.
  if (extra.batch === undefined) {
    if (o.gzip) words.push('--gzip');
    else if (o.bzip2) words.push('--bzip2');
  }
  // --accept-compression: stored bytes for every algorithm we decompress (--keep-compression
  // would also send `custom` files as stored, which only the server can decompress).
  if (extra.batch !== undefined && extra.accept) words.push('--accept-compression', CLIENT_DECODABLE.join(','));
  else if (o.keepCompression) words.push('--keep-compression');
  if (o.partial) words.push('--partial');
  words.push(quoteRemote(o.server), quoteRemote(extra.walName ?? o.walName));
  return sshArgs(target(o), ['barman', ...remoteConfigArgs(o.config), words.join(' ')]);
}

interface SshRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/**
 * Run ssh with `args`; its stdout goes to `consume` (which must read it to the end or throw).
 * A consumer failure kills ssh and is rethrown once ssh is gone (no process left behind).
 */
/** ssh sessions running now (killSshSessions). */
const sessions = new Set<ChildProcess>();

/** End every ssh session of this process (a background prefetch told to stop). */
export function killSshSessions(): void {
  for (const child of sessions) child.kill('SIGTERM');
}

async function runSsh(args: string[], consume: (stdout: Readable) => Promise<void>): Promise<SshRun> {
  const child = spawn('ssh', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  sessions.add(child);
  child.once('close', () => sessions.delete(child));
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    // Bounded: remote messages are a few lines; a flood must not grow memory.
    if (stderr.length < 65536) stderr += d;
  });
  const ended = new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
    child.on('error', (error) => resolve({ code: null, signal: null, error }));
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  let failure: { err: unknown } | null = null;
  try {
    await consume(child.stdout);
  } catch (err) {
    failure = { err };
    child.kill('SIGTERM');
    child.stdout.resume();
  }
  const end = await ended;
  if (end.error) throw new BarmanError(`cannot run ssh: ${end.error.message}`, 2);
  // A remote failure explains a broken stream better than the stream error does.
  if (failure && end.code === 0) throw failure.err;
  return { code: end.code, signal: end.signal, stderr };
}

/** Exit code and message for a failed remote get-wal (Barman's mapping; ssh 255 → 2). */
function remoteFailure(run: SshRun, what: string): RemoteError {
  const outcome = sshOutcome(run.code, run.signal, 2);
  const text = run.stderr.trim();
  return new RemoteError(outcome.message ?? (text.split('\n').pop()?.replace(/^ERROR: /, '') || `${what} failed with exit code ${outcome.exitCode}`), outcome.exitCode, outcome.message ? '' : text);
}

/** The remote is Barman's (or an older barman-ts): it does not know `--batch`. */
function rejectsBatch(run: SshRun): boolean {
  return run.code === 2 && /unrecognized arguments|unknown option/i.test(run.stderr);
}

/** Bytes buffered before the file sink writes (one writev for many ~64 KiB ssh reads). */
const SINK_BUFFER = 4 << 20;

/** Write all of `bufs` at the file position (writev, then plain writes for a short count). */
async function writeAll(fh: fsp.FileHandle, bufs: Buffer[]): Promise<void> {
  const total = bufs.reduce((n, b) => n + b.length, 0);
  const { bytesWritten } = await fh.writev(bufs);
  if (bytesWritten === total) return;
  const rest = Buffer.concat(bufs).subarray(bytesWritten);
  for (let off = 0; off < rest.length; ) off += (await fh.write(rest, off, rest.length - off)).bytesWritten;
}

/**
 * The end of a download: chunks go as they are from ssh's pipe to the file, the ones that
 * arrive while a write runs batched into the next writev (no copy, few syscalls).
 */
function downloadSink(fh: fsp.FileHandle): Writable {
  return new Writable({
    highWaterMark: SINK_BUFFER,
    writev(chunks, cb) {
      writeAll(
        fh,
        chunks.map((c) => c.chunk as Buffer),
      ).then(() => cb(), cb);
    },
  });
}

/**
 * A pass-through that feeds a hash as each (~64 KiB) chunk arrives: hashing a big batch at
 * once would keep the thread from reading ssh's pipe, and ssh would stall.
 */
function hasher(hash: Hash): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
  });
}

/** Stream `src` into a new file `file` (0600), optionally fsynced; returns the SHA-256 when asked. */
async function writeStreamToFile(src: Readable, file: string, opts: { sync: boolean; sha256?: boolean }): Promise<string> {
  const fh = await fsp.open(file, 'w', FILE_MODE);
  const hash = opts.sha256 ? createHash('sha256') : undefined;
  try {
    await pipeline([src, ...(hash ? [hasher(hash)] : []), downloadSink(fh)]);
    if (opts.sync) await fh.sync();
  } finally {
    await fh.close();
  }
  return hash ? hash.digest('hex') : '';
}

/** `<hex> *<name>` / `<hex>  <name>` lines → map name → hex. */
export function parseChecksums(text: string): Map<string, string> {
  const sums = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const m = /^([0-9a-fA-F]{64})(?: \*|  )(.+)$/.exec(line);
    if (!m) throw new BarmanError(`invalid checksum line in the batch: '${line.slice(0, 100)}'`, 2);
    sums.set(m[2] as string, (m[1] as string).toLowerCase());
  }
  return sums;
}

/**
 * Destination checks (Barman: not a directory, openable, else exit 3) done by creating the
 * temporary file we write into next to it: nothing ever appears at WAL_DEST before the rename.
 */
async function openDestTemp(dest: string): Promise<string> {
  let isDir = false;
  try {
    isDir = fs.statSync(dest).isDirectory();
  } catch {
    // does not exist yet: fine
  }
  if (isDir) throw new BarmanError(`WAL_DEST cannot be a directory: ${dest}`, 3);
  const tmp = tempNameFor(path.dirname(dest), path.basename(dest));
  try {
    const fh = await fsp.open(tmp, 'w', FILE_MODE);
    await fh.close();
  } catch (err) {
    throw new BarmanError(`Cannot open '${dest}' (WAL_DEST) for writing: ${errorMessage(err)}`, 3);
  }
  return tmp;
}

/** Decompress if needed, then rename the download onto its final name. */
async function finishDownload(tmp: string, finalPath: string): Promise<void> {
  const plain = await plainDownload(tmp);
  try {
    await fsp.rename(plain, finalPath);
  } catch (err) {
    await fsp.unlink(plain).catch(() => undefined);
    throw new BarmanError(`cannot write ${finalPath}: ${errorMessage(err)}`, 3);
  }
}

/** One plain `get-wal` session writing `name` into the file `tmp`. */
async function fetchOne(o: RestoreOptions, name: string, tmp: string, sync: boolean): Promise<void> {
  const run = await runSsh(getWalSshArgs(o, { walName: name }), async (stdout) => {
    await writeStreamToFile(stdout, tmp, { sync });
  });
  if (run.code !== 0 || run.signal) throw remoteFailure(run, 'get-wal');
}

type BatchOutcome =
  /** WAL_NAME is in `destTmp` (verified); `prefetched` went to the spool. */
  | { kind: 'ok'; prefetched: string[] }
  /**
   * The server refused the request: Barman's (no --batch), or an older barman-ts that knows
   * --batch but not --accept-compression (`retryPlain`: a plain --batch request will work).
   */
  | { kind: 'unsupported'; retryPlain: boolean }
  /**
   * The batch failed in a way that says nothing about WAL_NAME itself (the server broke off,
   * the stream was cut or corrupted): WAL_NAME must be asked for again on its own.
   */
  | { kind: 'broken'; reason: string };

/** What a batch request asks for (see fetchBatch). */
export type BatchRequest = 'accept' | 'plain';

/**
 * `get-wal --batch N` for `name`: the first member into `mainTmp` (or, with null, into the
 * spool like the others), the following files into the spool. Throws only for an answer about
 * `name` itself: not found (remote exit 1 before any byte) or a name the server refuses (exit 3).
 * A later member without a valid checksum is dropped (the server ends a batch with such a member
 * when that file turns out unreadable), as is one that does not decompress: it is fetched when
 * asked for. With `request` 'accept' the server is told what we decompress
 * (`--accept-compression`): compressed archives then travel as stored, and a member is
 * decompressed (worker thread) while the next one is received; only after the checksum of what
 * travelled is verified does a file get its WAL name.
 */
export async function fetchBatch(o: RestoreOptions, mainTmp: string | null, spoolSync: boolean, request: BatchRequest = 'accept', name: string = o.walName): Promise<BatchOutcome> {
  const received = new Map<string, { tmp: string; sha256: string; done: Promise<void>; sum?: string }>();
  const writer = new MemberWriter();
  /** Spool files renamed into place during the stream (their own checksum member verified). */
  const committed = new Set<string>();
  const commits: Promise<void>[] = [];
  /**
   * `<name>.sha256` (servers that know --accept-compression): that file's checksum, right after
   * it. A spool file whose checksum matches gets its WAL name at once, once written: a call
   * waiting for it (restore-prefetch.ts) need not wait for the whole batch.
   */
  const takeMemberChecksum = async (of: string, data: AsyncIterable<Buffer>): Promise<void> => {
    const item = received.get(of);
    let text = '';
    for await (const c of data) {
      text += c.toString('utf8');
      if (text.length > 1024) throw new BarmanError(`checksum member of ${of} in the batch is too large`, 2);
    }
    const sum = parseChecksums(text).get(of);
    if (!item || item.sum !== undefined || sum === undefined) throw new BarmanError(`unexpected checksum member for '${of}' in the batch`, 2);
    item.sum = sum;
    if (item.tmp === mainTmp || sum !== item.sha256) return;
    commits.push(
      item.done
        .then(() => commitToSpool(item.tmp, o.spoolDir, of))
        .then(
          () => void committed.add(of),
          // Not written whole, or cannot be renamed: the end of the batch decides, as for others.
          () => undefined,
        ),
    );
  };
  let sumsText: string | null = null;
  let bytesSeen = 0;
  const consume = async (stdout: Readable): Promise<void> => {
    stdout.on('data', (c: Buffer) => (bytesSeen += c.length));
    const extract = tar.extract();
    const feeding = pipeline(stdout, extract);
    feeding.catch(() => undefined);
    for await (const entry of extract) {
      const member = entry.header.name.replace(/^\.\//, '');
      if (entry.header.type !== 'file') throw new BarmanError(`unexpected member '${member}' in the batch`, 2);
      if (member === BATCH_CHECKSUM_MEMBER) {
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const c of entry as AsyncIterable<Buffer>) {
          size += c.length;
          if (size > MAX_CHECKSUM_BYTES) throw new BarmanError('checksum member of the batch is too large', 2);
          chunks.push(c);
        }
        sumsText = Buffer.concat(chunks).toString('utf8');
        continue;
      }
      if (member.endsWith(MEMBER_CHECKSUM_SUFFIX)) {
        await takeMemberChecksum(member.slice(0, -MEMBER_CHECKSUM_SUFFIX.length), entry as AsyncIterable<Buffer>);
        continue;
      }
      assertSafeWalName(member, 2);
      if (received.has(member) || (received.size === 0 && member !== name)) {
        throw new BarmanError(`unexpected member '${member}' in the batch (asked for ${name})`, 2);
      }
      const isMain = member === name && mainTmp !== null;
      if (!isMain && received.size === (mainTmp === null ? 0 : 1)) await ensureSpool(o.spoolDir);
      const tmp = isMain ? mainTmp : tempNameFor(o.spoolDir, member);
      // The whole member in memory (a segment, 16 MiB at most when plain), hashed as it comes:
      // it is then written, or decompressed by the worker, while the next one is received.
      const hash = createHash('sha256');
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const c of entry as AsyncIterable<Buffer>) {
        hash.update(c);
        chunks.push(c);
        size += c.length;
      }
      // Without a boot id to tell a crashed boot's spool apart, spool files outlive this
      // process and a crash must not leave a torn one under a WAL name; with it, they are a
      // cache of this boot only (see spool.ts). WAL_DEST never: PostgreSQL asks again after a crash.
      const { done } = await writer.write(Buffer.concat(chunks, size), tmp, !isMain && spoolSync);
      received.set(member, { tmp, sha256: hash.digest('hex'), done });
    }
    await feeding;
  };
  const dropSpoolFiles = async (names?: Iterable<string>) => {
    for (const n of names ?? [...received.keys()]) {
      const tmp = received.get(n)?.tmp;
      if (tmp !== undefined && tmp !== mainTmp) await fsp.unlink(tmp).catch(() => undefined);
    }
  };
  let run: SshRun;
  try {
    try {
      run = await runSsh(getWalSshArgs(o, { batch: o.parallel, walName: name, accept: request === 'accept' }), consume);
    } finally {
      // No write may still be running on a file that is renamed or removed next.
      await writer.close();
      await Promise.all(commits);
    }
  } catch (err) {
    // ssh could not run, or ended well but the stream was not a valid batch (cut, garbled,
    // unexpected members): the single get-wal that follows gives the real answer.
    await dropSpoolFiles();
    return { kind: 'broken', reason: `invalid batch stream from the Barman server: ${errorMessage(err)}` };
  }
  if (rejectsBatch(run)) {
    await dropSpoolFiles();
    // Only our own CLI (commander) names the one option it does not know; Barman's argparse
    // lists every unknown argument, --batch included: a plain --batch would be refused too.
    return { kind: 'unsupported', retryPlain: /unknown option '--accept-compression'/.test(run.stderr) };
  }
  if (run.code !== 0 || run.signal) {
    await dropSpoolFiles();
    const failure = remoteFailure(run, 'get-wal --batch');
    // The server's own answer about WAL_NAME: a single get-wal would say the same.
    if (!run.signal && ((run.code === 1 && bytesSeen === 0) || run.code === 3)) throw failure;
    return { kind: 'broken', reason: failure.message };
  }
  const broken = async (reason: string): Promise<BatchOutcome> => {
    await dropSpoolFiles();
    return { kind: 'broken', reason };
  };
  try {
    if (!received.has(name)) return broken(`the Barman server sent no ${name}`);
    if (sumsText === null) return broken('the batch from the Barman server has no checksums');
    let sums: Map<string, string>;
    try {
      sums = parseChecksums(sumsText);
    } catch (err) {
      return broken(errorMessage(err));
    }
    const main = received.get(name);
    const mainSum = sums.get(name);
    if (mainSum === undefined) return broken(`Missing checksum for file ${name} in the batch`);
    if (mainSum !== main?.sha256) return broken(`Bad file checksum for ${name} in the batch (transfer corrupted)`);
    const mainWritten = await main.done.then(
      () => null,
      (err: unknown) => errorMessage(err),
    );
    if (mainWritten !== null) return broken(`cannot decompress ${name} from the batch: ${mainWritten}`);
    const prefetched: string[] = [];
    for (const [n, { tmp, sha256, done }] of received) {
      if (n === name && mainTmp !== null) continue;
      if (committed.has(n)) {
        prefetched.push(n);
        continue;
      }
      const written = await done.then(
        () => true,
        () => false,
      );
      if (!written || sums.get(n) !== sha256) {
        // Not written whole (no space, not decompressible, fsync failed: a crash could leave
        // it torn under its WAL name), or not vouched for (the server gave up on it, or it was
        // damaged): a later call fetches it.
        await dropSpoolFiles([n]);
        continue;
      }
      try {
        await commitToSpool(tmp, o.spoolDir, n);
        prefetched.push(n);
      } catch {
        // A prefetched file that cannot be moved into the spool is only a miss later;
        // WAL_NAME, verified, must not fail with it.
        await fsp.unlink(tmp).catch(() => undefined);
      }
    }
    if (prefetched.length > 0 && spoolSync) await syncSpool(o.spoolDir);
    return { kind: 'ok', prefetched };
  } catch (err) {
    await dropSpoolFiles();
    throw err;
  }
}

/** Barman's protocol: `--peek N`, then one get-wal per name (main file into `destTmp`). */
async function fetchPeek(o: RestoreOptions, destTmp: string, spoolSync: boolean): Promise<string[]> {
  let listing = '';
  const run = await runSsh(getWalSshArgs(o, { peek: o.parallel }), async (stdout) => {
    stdout.setEncoding('utf8');
    for await (const chunk of stdout as AsyncIterable<string>) if (listing.length < 1 << 20) listing += chunk;
  });
  if (run.code !== 0 || run.signal) throw remoteFailure(run, 'get-wal --peek');
  const names = listing.split('\n').map((l) => l.trim()).filter(Boolean);
  if (names[0] !== o.walName) throw new BarmanError(`The required file is not available: ${o.walName}`, 2);
  const others = names.slice(1).filter((n) => {
    try {
      assertSafeWalName(n, 2);
      return true;
    } catch {
      return false;
    }
  });
  if (others.length > 0) await ensureSpool(o.spoolDir);
  const prefetched: string[] = [];
  // Barman starts one session per name at once; the same bound (N sessions) applies here.
  const results = await mapPool([o.walName, ...others], Math.max(1, o.parallel), async (name) => {
    if (name === o.walName) {
      await fetchOne(o, name, destTmp, false);
      return null;
    }
    const tmp = tempNameFor(o.spoolDir, name);
    try {
      await fetchOne(o, name, tmp, spoolSync);
      await commitToSpool(await plainDownload(tmp), o.spoolDir, name);
      prefetched.push(name);
    } catch {
      // A prefetch that failed is only a miss later: the file is asked for again then.
      await fsp.unlink(tmp).catch(() => undefined);
      await fsp.unlink(`${tmp}.plain`).catch(() => undefined);
    }
    return null;
  });
  void results;
  if (prefetched.length > 0 && spoolSync) await syncSpool(o.spoolDir);
  return prefetched;
}

/**
 * Fetch WAL_NAME into WAL_DEST (spool first, then the Barman server). `waitForPrefetch` false:
 * do not wait for a background prefetch bringing it (the caller already did).
 */
export async function restoreWal(o: RestoreOptions, opts: { waitForPrefetch?: boolean } = {}): Promise<RestoreResult> {
  assertSafeWalName(o.walName, 3);
  const destTmp = await openDestTemp(o.walDest);
  try {
    const bootId = await readBootId();
    // A spool of another boot may hold files torn by a crash: never served, emptied below.
    const spoolCurrent = await spoolMatchesBoot(o.spoolDir, bootId);
    if (spoolCurrent && (await takeFromSpool(o.spoolDir, o.walName, o.walDest))) return { source: 'spool', prefetched: [] };
    // A background prefetch (restore-prefetch.ts) about to deliver it: waiting beats a second
    // fetch of the same files.
    if (spoolCurrent && o.parallel > 1 && opts.waitForPrefetch !== false && (await spoolTrusted(o.spoolDir)) && (await waitForPrefetch(o.spoolDir, o.walName))) {
      if (await takeFromSpool(o.spoolDir, o.walName, o.walDest)) return { source: 'spool', prefetched: [] };
    }
    let source: RestoreSource = 'single';
    let prefetched: string[] = [];
    let batchFailure: string | undefined;
    // An unusable spool (someone else's, or too open) only turns prefetching off: failing here
    // would read as "no such WAL" to PostgreSQL and end the recovery early. It is said, though:
    // silently, every WAL would cost an SSH session.
    let prefetchOff: string | undefined;
    // A default prefetch against Barman's server (it refused batches lately): WAL_NAME alone,
    // without paying a refused session first at every call.
    const defaultRefused = o.parallelByDefault === true && (spoolCurrent ? await batchesRefusedLately(o.spoolDir) : false);
    const prefetch =
      o.parallel > 0 &&
      !defaultRefused &&
      !(o.parallelByDefault === true && (o.gzip || o.bzip2)) &&
      (await ensureSpool(o.spoolDir)
        // Emptied and stamped for this boot before anything unsynced lands in it.
        .then(() => (spoolCurrent ? undefined : resetSpool(o.spoolDir, bootId)))
        .then(
          () => true,
          (err: unknown) => {
            prefetchOff = `prefetch ${o.parallelByDefault === true ? '' : '(-p) '}disabled: ${errorMessage(err)}`;
            return false;
          },
        ));
    const spoolSync = bootId === null;
    if (prefetch && !o.gzip && !o.bzip2) {
      let batch = await fetchBatch(o, destTmp, spoolSync, 'accept');
      // An older barman-ts server knows --batch but not --accept-compression.
      if (batch.kind === 'unsupported' && batch.retryPlain) batch = await fetchBatch(o, destTmp, spoolSync, 'plain');
      if (batch.kind === 'ok') {
        source = 'batch';
        prefetched = batch.prefetched;
      } else if (batch.kind === 'broken') {
        // Never report "not found" for a batch problem: PostgreSQL would end its recovery
        // there. WAL_NAME alone, with Barman's single-file protocol, decides.
        await fetchOne(o, o.walName, destTmp, false);
        batchFailure = batch.reason;
      } else if (o.parallelByDefault === true) {
        // Barman's server, and nobody asked for -p: one get-wal, as Barman's client would.
        await markBatchesRefused(o.spoolDir);
        await fetchOne(o, o.walName, destTmp, false);
      } else {
        source = 'peek';
        prefetched = await fetchPeek(o, destTmp, spoolSync);
      }
    } else if (prefetch) {
      // -z/-j ask for a transfer encoding that --batch does not offer: Barman's protocol has it.
      source = 'peek';
      prefetched = await fetchPeek(o, destTmp, spoolSync);
    } else {
      await fetchOne(o, o.walName, destTmp, false);
    }
    await finishDownload(destTmp, o.walDest);
    if (prefetch) await clearPrefetchNone(o.spoolDir, o.walName);
    return {
      source,
      prefetched,
      ...(batchFailure === undefined ? {} : { batchFailure }),
      ...(prefetchOff === undefined ? {} : { prefetchOff }),
    };
  } finally {
    await fsp.unlink(destTmp).catch(() => undefined);
  }
}

/** `--test`: run `get-wal --test` remotely; its output goes to ours. Returns the exit code. */
export async function testRemote(o: RestoreOptions, stdout: NodeJS.WritableStream, stderr: NodeJS.WritableStream): Promise<number> {
  const child = spawn('ssh', getWalSshArgs(o, { test: true }), { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.pipe(stdout, { end: false });
  child.stderr.pipe(stderr, { end: false });
  const end = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
    child.on('error', (error) => resolve({ code: null, signal: null, error }));
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  if (end.error) throw new BarmanError(`cannot run ssh: ${end.error.message}`, 2);
  const outcome = sshOutcome(end.code, end.signal, 2);
  if (outcome.message) throw new BarmanError(outcome.message, outcome.exitCode);
  return outcome.exitCode;
}
