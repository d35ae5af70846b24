/**
 * `get-wal --batch N` (barman-ts servers): WAL_NAME and up to N-1 following files in one tar
 * stream over one SSH session, with SHA-256 checksums; the first into its destination, the
 * others into the spool, each only once its checksum is verified.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { BATCH_CHECKSUM_MEMBER, MEMBER_CHECKSUM_SUFFIX } from '../wal/batch-protocol.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { assertSafeWalName } from '../wal/names.js';
import { MemberWriter } from './restore-decompress.js';
import { getWalSshArgs, MAX_CHECKSUM_BYTES, parseChecksums, rejectsBatch, remoteFailure, runSsh, type RestoreOptions, type SshRun } from './remote-get-wal.js';
import { commitToSpool, ensureSpool, syncSpool, tempNameFor } from './spool.js';

export type BatchOutcome =
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

/** One received member: its temporary file, the SHA-256 of what travelled, its write. */
interface Received {
  tmp: string;
  sha256: string;
  done: Promise<void>;
  /** From its own `<name>.sha256` member, when the server sends one. */
  sum?: string;
}

/** Reads one batch stream: members to their files, checksums kept for the verdict. */
class BatchReceiver {
  readonly received = new Map<string, Received>();
  private readonly writer = new MemberWriter();
  /** Spool files renamed into place during the stream (their own checksum member verified). */
  readonly committed = new Set<string>();
  private readonly commits: Promise<void>[] = [];
  sumsText: string | null = null;
  bytesSeen = 0;

  constructor(
    private readonly o: RestoreOptions,
    private readonly mainTmp: string | null,
    private readonly spoolSync: boolean,
    private readonly name: string,
  ) {}

  /** The ssh consumer: every member of the tar stream, in order. */
  readonly consume = async (stdout: Readable): Promise<void> => {
    stdout.on('data', (c: Buffer) => (this.bytesSeen += c.length));
    const extract = tar.extract();
    const feeding = pipeline(stdout, extract);
    feeding.catch(() => undefined);
    for await (const entry of extract) {
      const member = entry.header.name.replace(/^\.\//, '');
      if (entry.header.type !== 'file') throw new BarmanError(`unexpected member '${member}' in the batch`, 2);
      if (member === BATCH_CHECKSUM_MEMBER) this.sumsText = await readSmall(entry as AsyncIterable<Buffer>, MAX_CHECKSUM_BYTES, 'checksum member of the batch');
      else if (member.endsWith(MEMBER_CHECKSUM_SUFFIX)) await this.takeMemberChecksum(member.slice(0, -MEMBER_CHECKSUM_SUFFIX.length), entry as AsyncIterable<Buffer>);
      else await this.takeWal(member, entry as AsyncIterable<Buffer>);
    }
    await feeding;
  };

  /** A WAL member: hashed as it comes, then written (or decompressed) while the next arrives. */
  private async takeWal(member: string, data: AsyncIterable<Buffer>): Promise<void> {
    assertSafeWalName(member, 2);
    if (this.received.has(member) || (this.received.size === 0 && member !== this.name)) {
      throw new BarmanError(`unexpected member '${member}' in the batch (asked for ${this.name})`, 2);
    }
    const isMain = member === this.name && this.mainTmp !== null;
    if (!isMain && this.received.size === (this.mainTmp === null ? 0 : 1)) await ensureSpool(this.o.spoolDir);
    const tmp = isMain ? (this.mainTmp as string) : tempNameFor(this.o.spoolDir, member);
    // The whole member in memory (a segment, 16 MiB at most when plain), hashed as it comes.
    const hash = createHash('sha256');
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of data) {
      hash.update(c);
      chunks.push(c);
      size += c.length;
    }
    // Without a boot id to tell a crashed boot's spool apart, spool files outlive this
    // process and a crash must not leave a torn one under a WAL name; with it, they are a
    // cache of this boot only (see spool.ts). WAL_DEST never: PostgreSQL asks again after a crash.
    const { done } = await this.writer.write(Buffer.concat(chunks, size), tmp, !isMain && this.spoolSync);
    this.received.set(member, { tmp, sha256: hash.digest('hex'), done });
  }

  /**
   * `<name>.sha256` (servers that know --accept-compression): that file's checksum, right after
   * it. A spool file whose checksum matches gets its WAL name at once, once written: a call
   * waiting for it (restore-prefetch.ts) need not wait for the whole batch.
   */
  private async takeMemberChecksum(of: string, data: AsyncIterable<Buffer>): Promise<void> {
    const item = this.received.get(of);
    const sum = parseChecksums(await readSmall(data, 1024, `checksum member of ${of} in the batch`)).get(of);
    if (!item || item.sum !== undefined || sum === undefined) throw new BarmanError(`unexpected checksum member for '${of}' in the batch`, 2);
    item.sum = sum;
    if (item.tmp === this.mainTmp || sum !== item.sha256) return;
    this.commits.push(
      item.done
        .then(() => commitToSpool(item.tmp, this.o.spoolDir, of))
        .then(
          () => void this.committed.add(of),
          // Not written whole, or cannot be renamed: the end of the batch decides, as for others.
          () => undefined,
        ),
    );
  }

  /** No write may still be running on a file that is renamed or removed next. */
  async quiesce(): Promise<void> {
    await this.writer.close();
    await Promise.all(this.commits);
  }

  /** Remove the spool temporaries of `names` (all by default); WAL_DEST's is the caller's. */
  async drop(names?: Iterable<string>): Promise<void> {
    for (const n of names ?? [...this.received.keys()]) {
      const tmp = this.received.get(n)?.tmp;
      if (tmp !== undefined && tmp !== this.mainTmp) await fsp.unlink(tmp).catch(() => undefined);
    }
  }

  /** After a clean end of the session: WAL_NAME verified, the others into the spool or dropped. */
  async verdict(): Promise<BatchOutcome> {
    const broken = async (reason: string): Promise<BatchOutcome> => {
      await this.drop();
      return { kind: 'broken', reason };
    };
    const { name } = this;
    if (!this.received.has(name)) return broken(`the Barman server sent no ${name}`);
    if (this.sumsText === null) return broken('the batch from the Barman server has no checksums');
    let sums: Map<string, string>;
    try {
      sums = parseChecksums(this.sumsText);
    } catch (err) {
      return broken(errorMessage(err));
    }
    const main = this.received.get(name);
    const mainSum = sums.get(name);
    if (mainSum === undefined) return broken(`Missing checksum for file ${name} in the batch`);
    if (mainSum !== main?.sha256) return broken(`Bad file checksum for ${name} in the batch (transfer corrupted)`);
    const mainWritten = await main.done.then(
      () => null,
      (err: unknown) => errorMessage(err),
    );
    if (mainWritten !== null) return broken(`cannot decompress ${name} from the batch: ${mainWritten}`);
    const prefetched = await this.spoolTheOthers(sums);
    if (prefetched.length > 0 && this.spoolSync) await syncSpool(this.o.spoolDir);
    return { kind: 'ok', prefetched };
  }

  /** Every member but WAL_NAME that was written whole and vouched for, renamed into the spool. */
  private async spoolTheOthers(sums: ReadonlyMap<string, string>): Promise<string[]> {
    const prefetched: string[] = [];
    for (const [n, { tmp, sha256, done }] of this.received) {
      if (n === this.name && this.mainTmp !== null) continue;
      if (this.committed.has(n)) {
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
        await this.drop([n]);
        continue;
      }
      try {
        await commitToSpool(tmp, this.o.spoolDir, n);
        prefetched.push(n);
      } catch {
        // A prefetched file that cannot be moved into the spool is only a miss later;
        // WAL_NAME, verified, must not fail with it.
        await fsp.unlink(tmp).catch(() => undefined);
      }
    }
    return prefetched;
  }
}

/** A small member read whole; longer than `max` bytes is not ours. */
async function readSmall(data: AsyncIterable<Buffer>, max: number, what: string): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of data) {
    size += c.length;
    if (size > max) throw new BarmanError(`${what} is too large`, 2);
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}

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
  const rx = new BatchReceiver(o, mainTmp, spoolSync, name);
  let run: SshRun;
  try {
    try {
      run = await runSsh(getWalSshArgs(o, { batch: o.parallel, walName: name, accept: request === 'accept' }), rx.consume);
    } finally {
      await rx.quiesce();
    }
  } catch (err) {
    // ssh could not run, or ended well but the stream was not a valid batch (cut, garbled,
    // unexpected members): the single get-wal that follows gives the real answer.
    await rx.drop();
    return { kind: 'broken', reason: `invalid batch stream from the Barman server: ${errorMessage(err)}` };
  }
  if (rejectsBatch(run)) {
    await rx.drop();
    // Only our own CLI (commander) names the one option it does not know; Barman's argparse
    // lists every unknown argument, --batch included: a plain --batch would be refused too.
    return { kind: 'unsupported', retryPlain: /unknown option '--accept-compression'/.test(run.stderr) };
  }
  if (run.code !== 0 || run.signal) {
    await rx.drop();
    const failure = remoteFailure(run, 'get-wal --batch');
    // The server's own answer about WAL_NAME: a single get-wal would say the same.
    if (!run.signal && ((run.code === 1 && rx.bytesSeen === 0) || run.code === 3)) throw failure;
    return { kind: 'broken', reason: failure.message };
  }
  try {
    return await rx.verdict();
  } catch (err) {
    await rx.drop();
    throw err;
  }
}
