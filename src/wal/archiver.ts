/**
 * `archive-wal` (spec §5.2): move the WAL files that pg_receivewal left in `streaming/` and that
 * archive_command / put-wal left in `incoming/` into the archive `wals/`, compressing them with
 * the configured algorithm and recording each one in xlog.db.
 *
 * Durability, per group of files (see COMMIT_GROUP):
 *   1. prepare, in parallel: compress into `<dst>.tmp` (fsynced by compressFile), or, when the
 *      file is stored as it is, fsync the source itself;
 *   2. under the xlogdb lock: put every file in place (rename of the .tmp, or a hard link of the
 *      source), fsync the destination directories, append the group's xlog.db lines, fsync;
 *   3. remove the sources, fsync the source directory; only now are the files reported.
 * A crash between 2 and 3 leaves the source next to an identical archived copy: the next run
 * sees a matching duplicate, drops the source, and adds the xlog.db line if it is missing. So a
 * file is never reported archived before it and its catalog line are on disk, and a source is
 * never removed before that either.
 *
 * With compression off this is a link + unlink within one file system (no data copied); with
 * compression the in-process streaming compressors of wal/compression.ts do the work.
 *
 * encryption = gpg: every archived file (segments, partial segments, history and backup label
 * files) is encrypted with gpg for encryption_key_id after compression, and stored under its
 * plain name, xlog.db's fifth column saying `gpg` (Barman 3.14+). A file that arrives already
 * encrypted is stored as it is. A server with encryption but no key archives nothing (the
 * files wait, `check` fails): a WAL file is never stored in clear when encryption is asked for.
 *
 * Not archived: dot-files (rsync's temporary `.<name>.XXXXXX`; Barman's glob never sees them),
 * and uncompressed segments that do not match their own first page header (segment-header.ts:
 * a size other than the `xlp_seg_size` it records, a position other than its name's, or no
 * header at all: a copy still arriving, a truncated or foreign file): left in place while
 * younger than SIZE_GRACE_MS, then moved to errors/ as `.unknown`. The size comes from each
 * segment itself, never from a backup: a cluster made with `initdb --wal-segsize=64` archives
 * before its first backup.
 *
 * Only a file that is not there is "missing": a file or directory that cannot be read (EACCES,
 * EIO) is an error, reported and left where it is, never moved to errors/.
 */
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { acquireLock } from '../catalog/lock.js';
import { lockPath } from '../catalog/server-dirs.js';
import { customCompressionOf, withXlogDb, type XlogDbEntry } from '../catalog/xlogdb.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { faultPoint } from '../util/fault.js';
import { DIR_MODE, FILE_MODE, fsyncDir, pathExists } from '../util/fsutil.js';
import { LONG_HEADER_BYTES, parseSegmentHeader, readSegmentHeader, segmentProblem } from './segment-header.js';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pyStatMtime } from '../util/pytime.js';
import {
  canonicalCompression,
  compressFile,
  decompressBuffer,
  decompressStream,
  identifyCompression,
  type CompressionLevel,
  type CompressionName,
  type CustomCompressionConfig,
} from './compression.js';
import { hashDir, historyProblem, walNameKind, type WalNameKind } from './names.js';
import { mapPool } from '../util/pool.js';
import { HookAbortError, hasHooks, runHooks, walHookVars } from '../hooks/hooks.js';
import { GPG_ENCRYPTION, decryptToBuffer, gpgRunner, walEncryptionKey } from '../catalog/encryption.js';
import { gpgEncryptFile, isEncryptedFile, type GpgRunner } from '../util/gpg.js';

export type ArchiveSource = 'file archival' | 'streaming';

export interface ArchiveEvents {
  /** An archiver starts (streaming first); batchSize 0 = no limit. */
  onSource?(source: ArchiveSource, batchSize: number): void;
  /** A file is archived (durably, catalog line included). */
  onFile?(name: string): void;
  /** A file could not be archived; duplicates say "... File moved to errors directory." */
  onError?(msg: string): void;
  onWarning?(msg: string): void;
}

export interface ArchiveSourceReport {
  source: ArchiveSource;
  /** Configured batch size (0 = all files in one run). */
  batchSize: number;
  /** Archived in this run, in order. */
  archived: string[];
  /** Already archived with the same content: the source was removed. */
  matchingDuplicates: string[];
  /** Already archived with a different content: moved to errors/ as `.duplicate`. */
  duplicates: string[];
  /** Not WAL files (or segments that do not match their header, see `waiting`): moved to errors/ as `.unknown`. */
  unknown: string[];
  /** Uncompressed segments that do not match their header, younger than a minute (maybe still arriving): left in place. */
  waiting: string[];
  /** Left in place because of an error (see ArchiveReport.errors). */
  failed: string[];
  /** Valid files left for a later run by the batch size. */
  remaining: number;
}

export interface ArchiveReport {
  server: string;
  /** One per archiver that ran, streaming first. */
  sources: ArchiveSourceReport[];
  /** Total of archived files over all sources. */
  archivedCount: number;
  errors: string[];
  warnings: string[];
  /** A pre-archive retry hook asked to stop (ABORT_STOP). */
  stopped: boolean;
}

/** Where a WAL file lives in the archive: `wals/<hashdir>/<name>`, history files in `wals/`. */
export function walArchivePath(srv: ServerConfig, name: string): string {
  return path.join(srv.wals_directory, hashDir(name), name);
}

/** Files put in place per xlog.db append (one fsync of the catalog per group). */
const COMMIT_GROUP = 128;

/** How long a segment of the wrong size may still be arriving before it goes to errors/. */
export const SIZE_GRACE_MS = 60_000;

/** A timeline history file has a line per ancestor timeline: a few KiB at most in practice. */
const MAX_HISTORY_BYTES = 16 << 20;

/**
 * Take `.<srv>-archive-wal.lock` (LockBusyError when another archive-wal runs), then run the
 * streaming archiver (if streaming_archiver) and the file archiver (if archiver).
 */
export async function archiveWal(srv: ServerConfig, events: ArchiveEvents = {}): Promise<ArchiveReport> {
  // Refused before anything moves: encryption asked for but impossible.
  const key = walEncryptionKey(srv);
  const lock = await acquireLock(lockPath(srv, 'archiveWal'), 'archive-wal', false);
  try {
    const run = new ArchiveRun(srv, events, key === null ? null : { key, gpg: gpgRunner(srv) });
    if (srv.streaming_archiver) await run.archiveSource('streaming');
    if (srv.archiver && !run.report.stopped) await run.archiveSource('file archival');
    return run.report;
  } finally {
    lock.release();
  }
}

// ---------------------------------------------------------------------------------------------
// Hook point

/** What a hook sees of the file being archived (spec §9: BARMAN_SEGMENT, BARMAN_FILE, ...). */
export interface ArchiveHookInfo {
  segment: string;
  file: string;
  size: number;
  timestamp: number;
  compression: string | null;
}

/**
 * pre/post archive scripts (spec §9). Called before each file is archived (phase 'pre', file =
 * source path) and after it is archived (phase 'post', file = archive path), never under the
 * xlogdb lock. Returns 'stop' when the pre retry script exits with ABORT_STOP (63): the run then
 * stops before that file. 'pre' is called from the prepare step: when hooks are configured the
 * prepare pool is 1 wide so that scripts run one at a time, in order.
 */
async function runArchiveHooks(srv: ServerConfig, phase: 'pre' | 'post', info: ArchiveHookInfo, warning?: (m: string) => void): Promise<'continue' | 'stop'> {
  try {
    await runHooks(srv, 'archive', phase, walHookVars(info), { warning });
  } catch (err) {
    if (err instanceof HookAbortError) {
      warning?.(`${err.message}: archiving of server ${srv.name} stopped before ${info.segment}`);
      return 'stop';
    }
    throw err;
  }
  return 'continue';
}

// ---------------------------------------------------------------------------------------------
// One run

interface Candidate {
  name: string;
  src: string;
  kind: WalNameKind;
}

/** A file ready to be put in place by the commit. */
interface Placement {
  type: 'place';
  name: string;
  src: string;
  dst: string;
  /** Compressed copy to rename into place; null: hard link (or copy) the source itself. */
  tmp: string | null;
  entry: XlogDbEntry;
  hook: ArchiveHookInfo;
}

/** An identical copy is already archived: drop the source (and make sure the catalog knows it). */
interface MatchingDuplicate {
  type: 'matching';
  name: string;
  src: string;
  dst: string;
}

type Prepared = Placement | MatchingDuplicate | null;

function utcStamp(d = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}T${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`;
}

function isCode(err: unknown, ...codes: string[]): boolean {
  return codes.includes((err as NodeJS.ErrnoException | null)?.code ?? '');
}

async function listDir(dir: string): Promise<fs.Dirent[]> {
  try {
    const list = await fsp.readdir(dir, { withFileTypes: true });
    return list.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  } catch (err) {
    if (isCode(err, 'ENOENT')) return [];
    throw new BarmanError(`cannot read ${dir}: ${errorMessage(err)}`);
  }
}

/** Copy `src` to `dst` through `<dst>.tmp` (fsynced, mode 0600): for moves across file systems. */
async function copyDurably(src: string, dst: string): Promise<void> {
  const tmp = `${dst}.tmp`;
  await fsp.copyFile(src, tmp);
  const fh = await fsp.open(tmp, 'r+');
  try {
    await fh.chmod(FILE_MODE);
    await fh.sync();
  } finally {
    await fh.close();
  }
  const st = await fsp.stat(src);
  await fsp.utimes(tmp, st.atime, st.mtime);
  await fsp.rename(tmp, dst);
}

/** Move a file (rename, or copy + unlink across file systems). */
async function moveFile(src: string, dst: string): Promise<void> {
  try {
    await fsp.rename(src, dst);
  } catch (err) {
    if (!isCode(err, 'EXDEV')) throw err;
    await copyDurably(src, dst);
    await fsp.unlink(src);
  }
}


const PARALLELISM = Math.max(2, Math.min(8, typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length));

class ArchiveRun {
  readonly report: ArchiveReport;
  private readonly configured: CompressionName | null;
  private readonly level: CompressionLevel;
  /** Magic bytes only: an unrecognised incoming file is uncompressed, whatever the config. */
  private readonly incomingCustom: CustomCompressionConfig;
  /** For files already in the archive (compression=custom without magic: unrecognised = custom). */
  private readonly archiveCustom: CustomCompressionConfig;
  private readonly createdDirs = new Set<string>();
  private catalogNames: Set<string> | null = null;
  /** Archive hook scripts are configured: files are prepared one at a time. */
  private readonly hooks: boolean;

  constructor(
    private readonly srv: ServerConfig,
    private readonly events: ArchiveEvents,
    /** encryption = gpg: the recipient key and gpg. */
    private readonly encrypt: { key: string; gpg: GpgRunner } | null = null,
  ) {
    this.report = { server: srv.name, sources: [], archivedCount: 0, errors: [], warnings: [], stopped: false };
    const c = srv.compression;
    this.configured = c == null || c === 'none' ? null : canonicalCompression(c);
    this.level = (srv.compression_level ?? 'medium') as CompressionLevel;
    this.archiveCustom = customCompressionOf(srv);
    this.incomingCustom = { ...this.archiveCustom, unidentifiedIsCustom: false };
    this.hooks = hasHooks(srv, 'archive');
  }

  private error(msg: string): void {
    this.report.errors.push(msg);
    this.events.onError?.(msg);
  }

  private warning(msg: string): void {
    this.report.warnings.push(msg);
    this.events.onWarning?.(msg);
  }

  async archiveSource(source: ArchiveSource): Promise<void> {
    const srv = this.srv;
    const streaming = source === 'streaming';
    const dir = streaming ? srv.streaming_wals_directory : srv.incoming_wals_directory;
    const batchSize = (streaming ? srv.streaming_archiver_batch_size : srv.archiver_batch_size) ?? 0;
    const rep: ArchiveSourceReport = {
      source,
      batchSize,
      archived: [],
      matchingDuplicates: [],
      duplicates: [],
      unknown: [],
      waiting: [],
      failed: [],
      remaining: 0,
    };
    this.report.sources.push(rep);
    this.events.onSource?.(source, batchSize);

    const queue = await this.select(dir, streaming, rep);
    const batch = batchSize > 0 ? queue.slice(0, batchSize) : queue;
    rep.remaining = queue.length - batch.length;

    for (let i = 0; i < batch.length && !this.report.stopped; i += COMMIT_GROUP) {
      const group = batch.slice(i, i + COMMIT_GROUP);
      const prepared = await mapPool(group, this.hooks ? 1 : PARALLELISM, (c) => this.prepare(c, streaming, rep));
      await this.commit(prepared, dir, rep);
    }
    if (this.report.stopped) {
      const queued = new Set(queue.map((c) => c.name));
      const settled = [...rep.archived, ...rep.matchingDuplicates, ...rep.duplicates, ...rep.failed, ...rep.waiting, ...rep.unknown].filter((n) => queued.has(n));
      rep.remaining = queue.length - settled.length;
    }
  }

  /**
   * Sorted listing: dot-files and `.tmp` skipped, anything that is not a regular file with a WAL
   * archive name moved to errors/ as `.unknown`. In streaming/, the last `.partial` is the segment
   * pg_receivewal is writing: skipped (older partials, left by a timeline switch, are archived).
   */
  private async select(dir: string, streaming: boolean, rep: ArchiveSourceReport): Promise<Candidate[]> {
    const queue: Candidate[] = [];
    for (const d of await listDir(dir)) {
      // Files being written under a temporary dot-name (rsync's `.<name>.XXXXXX`) are not ours yet.
      if (d.name.startsWith('.') || d.name.endsWith('.tmp')) continue;
      const kind = walNameKind(d.name);
      const src = path.join(dir, d.name);
      if (kind === null || !d.isFile()) {
        await this.reject(src, d.name, 'unknown', rep);
        continue;
      }
      queue.push({ name: d.name, src, kind });
    }
    if (!streaming) return queue;
    // pg_receivewal (every version we support) writes the segment in progress as `.partial`
    // and renames it only once complete, so every plain segment is safe to archive at once:
    // holding the newest one back (as Barman does for very old pg_receivexlog) would delay the
    // end of a backup until the server writes the next segment.
    const held = queue.filter((c) => c.kind === 'partial').pop();
    return queue.filter((c) => c !== held);
  }

  private async ensureDir(dir: string): Promise<void> {
    if (this.createdDirs.has(dir)) return;
    const first = await fsp.mkdir(dir, { recursive: true, mode: DIR_MODE });
    // A directory created now needs its parent fsynced for the entry to survive a crash.
    if (first !== undefined) await fsyncDir(path.dirname(dir));
    this.createdDirs.add(dir);
  }

  /**
   * An uncompressed segment must agree with its own first page header (segmentProblem).
   * Otherwise: 'wait' while it is recent (a copy may still be arriving), else 'reject'
   * (truncated or foreign: errors/). A file that cannot be read throws.
   */
  private async checkSegment(name: string, file: string, size: bigint, mtimeMs: bigint): Promise<{ verdict: 'ok' } | { verdict: 'wait' | 'reject'; problem: string }> {
    const problem = segmentProblem(name, size, await readSegmentHeader(file));
    if (problem === null) return { verdict: 'ok' };
    const age = Date.now() - Number(mtimeMs);
    return { verdict: age < SIZE_GRACE_MS ? 'wait' : 'reject', problem };
  }

  /**
   * What is wrong with a compressed segment from incoming/ (null: nothing): it must decompress
   * completely, and what it holds must agree with its page header like a plain segment. The
   * file is streamed, never held in memory; a file that cannot be read throws.
   */
  private async compressedSegmentProblem(name: string, file: string, algo: CompressionName): Promise<string | null> {
    const head: Buffer[] = [];
    let headBytes = 0;
    let size = 0;
    const failed = await this.decompressInto(file, algo, (chunk) => {
      if (headBytes < LONG_HEADER_BYTES) {
        head.push(chunk.subarray(0, LONG_HEADER_BYTES - headBytes));
        headBytes += Math.min(chunk.length, LONG_HEADER_BYTES - headBytes);
      }
      size += chunk.length;
      return null;
    });
    if (failed !== null) return failed;
    const problem = segmentProblem(name, size, parseSegmentHeader(Buffer.concat(head)));
    return problem === null ? null : `decompressed with ${algo}, ${problem}`;
  }

  /** What is wrong with a timeline history file (null: nothing); a file that cannot be read throws. */
  private async historyFileProblem(name: string, file: string, size: bigint, algo: CompressionName | null): Promise<string | null> {
    if (size > BigInt(MAX_HISTORY_BYTES)) return `is ${size} bytes long: too large for a timeline history file`;
    if (algo === null) return historyProblem(name, (await fsp.readFile(file)).toString('latin1'));
    // Capped: a small compressed file may expand to far more than any history file.
    const parts: Buffer[] = [];
    let total = 0;
    const failed = await this.decompressInto(file, algo, (chunk) => {
      total += chunk.length;
      if (total > MAX_HISTORY_BYTES) return new Error('too large for a timeline history file');
      parts.push(chunk);
      return null;
    });
    if (failed !== null) return failed;
    const problem = historyProblem(name, Buffer.concat(parts).toString('latin1'));
    return problem === null ? null : `decompressed with ${algo}, ${problem}`;
  }

  /**
   * Stream `file` through the `algo` decompressor into `take` (never the whole file in memory;
   * `take` may stop it with an Error). Returns why the content does not decompress, or null; a
   * file that cannot be read throws.
   */
  private async decompressInto(file: string, algo: CompressionName, take: (chunk: Buffer) => Error | null): Promise<string | null> {
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        cb(take(chunk));
      },
    });
    await fsp.access(file, fs.constants.R_OK);
    try {
      await pipeline(fs.createReadStream(file), decompressStream(algo, this.incomingCustom), sink);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).syscall !== undefined) throw err; // the file itself cannot be read
      return `does not decompress as ${algo} (${errorMessage(err)})`;
    }
    return null;
  }

  /** Move a file to errors/<name>.<UTC stamp>.<kind>; `why` replaces the usual unknown-file warning. */
  private async reject(src: string, name: string, kind: 'unknown' | 'duplicate', rep: ArchiveSourceReport, why?: string): Promise<boolean> {
    const errorsDir = this.srv.errors_directory;
    try {
      await this.ensureDir(errorsDir);
      const stamp = utcStamp();
      let dst = path.join(errorsDir, `${name}.${stamp}.${kind}`);
      // Never overwrite an earlier rejected file with the same name and second.
      for (let n = 1; await pathExists(dst); n++) dst = path.join(errorsDir, `${name}.${stamp}.${n}.${kind}`);
      await moveFile(src, dst);
      // The errors directory is part of the catalog: keep what lands there private too.
      if (fs.lstatSync(dst).isFile()) await fsp.chmod(dst, FILE_MODE);
      await fsyncDir(errorsDir);
      await fsyncDir(path.dirname(src));
    } catch (err) {
      this.error(`Cannot move ${src} to the errors directory of server '${this.srv.name}': ${errorMessage(err)}`);
      rep.failed.push(name);
      return false;
    }
    if (kind === 'unknown') {
      rep.unknown.push(name);
      this.warning(
        why !== undefined
          ? `${name} in ${path.dirname(src)} of server '${this.srv.name}' ${why}: moved to the errors directory`
          : `Unknown file '${name}' found in ${path.dirname(src)} of server '${this.srv.name}': moved to the errors directory`,
      );
    } else {
      rep.duplicates.push(name);
      this.error(`${name} is already present in server ${this.srv.name}. File moved to errors directory.`);
    }
    return true;
  }

  /** Content of a file with its compression undone (null algo: as stored). */
  private async plainContent(file: string, algo: CompressionName | null, custom: CustomCompressionConfig): Promise<Buffer> {
    const data = await fsp.readFile(file);
    return algo === null ? data : decompressBuffer(data, algo, custom);
  }

  /**
   * Content of an archived file with its encryption and compression undone. An encrypted one
   * needs encryption_passphrase_command: without it (or when it fails) this throws.
   */
  private async archivedPlainContent(dst: string, partial: boolean): Promise<Buffer> {
    if (!(await isEncryptedFile(dst))) {
      // Partial files are stored as they are, never decompressed.
      const algo = partial ? null : await identifyCompression(dst, this.archiveCustom);
      return this.plainContent(dst, algo, this.archiveCustom);
    }
    const data = await decryptToBuffer(this.srv, dst, `The archived WAL file ${path.basename(dst)}`);
    const algo = partial ? null : identifyCompression(data, this.archiveCustom);
    return algo === null ? data : decompressBuffer(data, algo, this.archiveCustom);
  }

  /**
   * Whether the incoming file has the content of the archived one. A file that cannot be read,
   * or a plain archived copy that cannot be decoded, throws: the source then stays where it is
   * (an error), rather than being set aside as a duplicate because of a read failure. Only an
   * incoming file that does not decode is a different content, and so is an encrypted archived
   * copy that cannot be decrypted (not provably the same: Barman treats every encrypted
   * destination so).
   */
  private async sameContent(c: Candidate, dst: string, srcAlgo: CompressionName | null, srcEncrypted: boolean): Promise<boolean> {
    const partial = c.kind === 'partial';
    let b: Buffer;
    if (await isEncryptedFile(dst)) {
      try {
        b = await this.archivedPlainContent(dst, partial);
      } catch {
        return false;
      }
    } else {
      b = await this.archivedPlainContent(dst, partial);
    }
    // Read first, outside the try: an incoming file that cannot be read is an error, not a mismatch.
    const src = await fsp.readFile(c.src);
    let a: Buffer;
    try {
      if (srcEncrypted) a = await this.archivedPlainContent(c.src, partial);
      else a = srcAlgo === null ? src : await decompressBuffer(src, srcAlgo, this.incomingCustom);
    } catch {
      return false; // the incoming bytes are not what they claim to be: not the archived file
    }
    return a.equals(b);
  }

  private async prepare(c: Candidate, streaming: boolean, rep: ArchiveSourceReport): Promise<Prepared> {
    if (this.report.stopped) return null;
    const dst = walArchivePath(this.srv, c.name);
    try {
      const st = await fsp.stat(c.src, { bigint: true });
      // streaming/ holds pg_receivewal output, plain; incoming/ files may arrive compressed, or
      // even encrypted (copied from another Barman archive): those are stored as they are.
      const preEncrypted = !streaming && (await isEncryptedFile(c.src));
      const detected = streaming || c.kind === 'partial' || preEncrypted ? null : await identifyCompression(c.src, this.incomingCustom);
      // Partial segments are stored as they are (get-wal never decompresses them).
      const target = c.kind === 'partial' || detected !== null || preEncrypted ? null : this.configured;
      const encryptNow = this.encrypt !== null && !preEncrypted;

      if (c.kind === 'segment' && detected === null && !preEncrypted) {
        const check = await this.checkSegment(c.name, c.src, st.size, st.mtimeMs);
        if (check.verdict === 'wait') {
          rep.waiting.push(c.name);
          return null;
        }
        if (check.verdict === 'reject') {
          await this.reject(c.src, c.name, 'unknown', rep, check.problem);
          return null;
        }
      }
      if (c.kind === 'segment' && detected !== null) {
        // A compressed segment is stored as it is: it must decompress to the segment its name
        // says, or a restore would find garbage where the archive promised WAL.
        const problem = await this.compressedSegmentProblem(c.name, c.src, detected);
        if (problem !== null) {
          await this.reject(c.src, c.name, 'unknown', rep, problem);
          return null;
        }
      }

      if (c.kind === 'history' && !preEncrypted) {
        // Recovery reads history files to follow timelines: an empty or foreign one in the
        // archive would break it later, far from the cause. Like a segment that does not match
        // its header: left while it may still be arriving, then set aside in errors/.
        const problem = await this.historyFileProblem(c.name, c.src, st.size, detected);
        if (problem !== null) {
          if (Date.now() - Number(st.mtimeMs) < SIZE_GRACE_MS) {
            rep.waiting.push(c.name);
            return null;
          }
          await this.reject(c.src, c.name, 'unknown', rep, problem);
          return null;
        }
      }
      if (await pathExists(dst)) {
        if (await this.sameContent(c, dst, detected, preEncrypted)) return { type: 'matching', name: c.name, src: c.src, dst };
        await this.reject(c.src, c.name, 'duplicate', rep);
        return null;
      }

      const hook: ArchiveHookInfo = {
        segment: c.name,
        file: c.src,
        size: Number(st.size),
        timestamp: pyStatMtime(st.mtimeNs),
        compression: detected,
      };
      if ((await runArchiveHooks(this.srv, 'pre', hook, (m) => this.warning(m))) === 'stop') {
        this.report.stopped = true;
        return null;
      }

      await this.ensureDir(path.dirname(dst));
      let size: number;
      let mtimeNs = st.mtimeNs;
      let tmp: string | null = null;
      if (encryptNow && this.encrypt) {
        // Compressed first (when configured), then encrypted: `<dst>.tmp` holds the message.
        let input = c.src;
        if (target !== null) {
          input = `${dst}.plain.tmp`;
          await compressFile(c.src, input, target, this.level, this.archiveCustom);
        }
        tmp = `${dst}.tmp`;
        try {
          await gpgEncryptFile(this.encrypt.gpg, input, tmp, this.encrypt.key, { compressed: (target ?? detected) !== null });
        } finally {
          if (input !== c.src) await fsp.unlink(input).catch(() => undefined);
        }
        await fsp.utimes(tmp, Number(st.atimeNs) / 1e9, Number(st.mtimeNs) / 1e9);
        // As below: the catalog records the mtime the file really has (utimes keeps microseconds).
        const stored = await fsp.stat(tmp, { bigint: true });
        size = Number(stored.size);
        mtimeNs = stored.mtimeNs;
      } else if (target === null) {
        // Stored as it is: make the source itself durable (and private) before it is linked in.
        const fh = await fsp.open(c.src, 'r');
        try {
          await fh.chmod(FILE_MODE);
          await fh.sync();
        } finally {
          await fh.close();
        }
        size = Number(st.size);
      } else {
        tmp = `${dst}.tmp`;
        await compressFile(c.src, tmp, target, this.level, this.archiveCustom);
        await fsp.utimes(tmp, Number(st.atimeNs) / 1e9, Number(st.mtimeNs) / 1e9);
        // utimes keeps microseconds only: the catalog records the mtime the file really has, so
        // that rebuild-xlogdb (Barman's or ours) writes the same line again.
        const stored = await fsp.stat(tmp, { bigint: true });
        size = Number(stored.size);
        mtimeNs = stored.mtimeNs;
      }
      faultPoint('archive-wal:prepared');
      const entry: XlogDbEntry = {
        name: c.name,
        size,
        time: pyStatMtime(mtimeNs),
        compression: target ?? detected,
        encryption: encryptNow || preEncrypted ? GPG_ENCRYPTION : null,
      };
      return { type: 'place', name: c.name, src: c.src, dst, tmp, entry, hook: { ...hook, compression: entry.compression } };
    } catch (err) {
      await fsp.unlink(`${dst}.tmp`).catch(() => undefined);
      await fsp.unlink(`${dst}.plain.tmp`).catch(() => undefined);
      rep.failed.push(c.name);
      this.error(`Cannot archive ${c.name} for server ${this.srv.name}: ${errorMessage(err)}`);
      return null;
    }
  }

  /** Put the source itself at `dst`: hard link, or a durable copy where links are impossible. */
  private async linkInto(src: string, dst: string): Promise<void> {
    try {
      await fsp.link(src, dst);
    } catch (err) {
      if (!isCode(err, 'EXDEV', 'EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'EMLINK')) throw err;
      await copyDurably(src, dst);
    }
  }

  private async commit(prepared: readonly Prepared[], srcDir: string, rep: ArchiveSourceReport): Promise<void> {
    const items = prepared.filter((p): p is Placement | MatchingDuplicate => p !== null);
    if (items.length === 0) return;
    const placed: Placement[] = [];
    const matching: MatchingDuplicate[] = [];

    // An I/O error once files are in wals/ (a directory fsync, the xlog.db append) fails the run
    // with one clear line: the sources stay in incoming/, so the next run finds them as matching
    // duplicates and catalogs them (missingCatalogEntries).
    await withXlogDb(this.srv, async (db) => {
      // A missing catalog is rebuilt before anything new lands in wals/.
      await db.ensure();
      const dirs = new Set<string>();
      for (const it of items) {
        if (it.type === 'matching') {
          matching.push(it);
          continue;
        }
        try {
          if (it.tmp !== null) {
            if (await pathExists(it.dst)) throw new BarmanError(`${it.dst} appeared while archiving`);
            await fsp.rename(it.tmp, it.dst);
          } else {
            await this.linkInto(it.src, it.dst);
          }
        } catch (err) {
          if (it.tmp !== null) await fsp.unlink(it.tmp).catch(() => undefined);
          rep.failed.push(it.name);
          this.error(`Cannot archive ${it.name} for server ${this.srv.name}: ${errorMessage(isCode(err, 'EEXIST') ? `${it.dst} appeared while archiving` : err)}`);
          continue;
        }
        placed.push(it);
        dirs.add(path.dirname(it.dst));
        faultPoint('archive-wal:placed');
      }
      for (const d of dirs) await fsyncDir(d);

      const lines = placed.map((p) => p.entry);
      if (matching.length > 0) lines.push(...(await this.missingCatalogEntries(db, matching)));
      await db.append(lines);
      faultPoint('archive-wal:cataloged');
      if (this.catalogNames) for (const e of lines) this.catalogNames.add(e.name);
    }).catch((err: unknown) => {
      if (err instanceof BarmanError) throw err;
      const names = items.map((it) => it.name);
      throw new BarmanError(
        `Cannot archive ${names.length === 1 ? names[0] : `${names.length} WAL files (${names[0]}...)`} for server ${this.srv.name}: ${errorMessage(err)}; ` +
          'the files stay in the incoming directory and the next archive-wal completes the job',
      );
    });

    // Everything is durable in the archive: the sources can go.
    let unlinked = false;
    for (const it of [...placed, ...matching]) {
      try {
        await fsp.unlink(it.src);
        unlinked = true;
        faultPoint('archive-wal:source-removed');
      } catch (err) {
        if (!isCode(err, 'ENOENT')) this.warning(`Cannot remove ${it.src} after archiving it: ${errorMessage(err)}`);
      }
    }
    if (unlinked) {
      // The files are archived: an unlink that does not survive a crash only brings back a source
      // that the next run recognises as a matching duplicate.
      await fsyncDir(srcDir).catch((err: unknown) => this.warning(`Cannot fsync ${srcDir} after archiving: ${errorMessage(err)}`));
    }

    for (const m of matching) rep.matchingDuplicates.push(m.name);
    for (const p of placed) {
      rep.archived.push(p.name);
      this.report.archivedCount++;
      this.events.onFile?.(p.name);
      try {
        await runArchiveHooks(this.srv, 'post', { ...p.hook, file: p.dst, size: p.entry.size ?? 0 }, (m) => this.warning(m));
      } catch (err) {
        // The file is archived: a script that cannot even be started does not undo that.
        this.warning(`post archive hooks of ${p.name} failed: ${errorMessage(err)}`);
      }
    }
  }

  /**
   * Catalog lines for matching duplicates whose archived copy has none: what a crash between
   * putting a file in place and appending its line leaves behind.
   */
  private async missingCatalogEntries(db: { read(): Promise<XlogDbEntry[]> }, matching: readonly MatchingDuplicate[]): Promise<XlogDbEntry[]> {
    if (!this.catalogNames) this.catalogNames = new Set((await db.read()).map((e) => e.name));
    const out: XlogDbEntry[] = [];
    for (const m of matching) {
      if (this.catalogNames.has(m.name)) continue;
      try {
        const st = await fsp.stat(m.dst, { bigint: true });
        const encrypted = await isEncryptedFile(m.dst);
        const compression = walNameKind(m.name) === 'partial' || encrypted ? null : await identifyCompression(m.dst, this.archiveCustom);
        out.push({ name: m.name, size: Number(st.size), time: pyStatMtime(st.mtimeNs), compression, encryption: encrypted ? GPG_ENCRYPTION : null });
      } catch (err) {
        this.warning(`Cannot index ${m.dst}: ${errorMessage(err)}`);
      }
    }
    return out;
  }
}
