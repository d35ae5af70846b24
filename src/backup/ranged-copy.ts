/**
 * One big file of an rsync backup copied as byte ranges read in parallel (see RangedFilePlan in
 * rsync-plan.ts): each range is one `dd` on the PostgreSQL host, through the server's
 * ssh_command for backup_method = rsync or run directly for local-rsync (the only difference is
 * how the words are started, see hostCommand), its output piped straight into a local `dd`
 * writing the local file at the range's offset. Every range is a job of the backup's worker
 * pool; the last range of a file to end settles the file (truncation, vanished file, mode and
 * mtime).
 *
 * Why a local dd rather than node writing the pipe's chunks: measured on 940 MB through ssh,
 * node's read-then-write costs ~2 CPU seconds more than dd's, more than rsync's whole
 * pipeline, and a ranged copy only pays off when CPU is left for the second stream.
 */
import type { ChildProcess, StdioOptions } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { BarmanError, lastLine } from '../util/errors.js';
import { ddReadWords, ddWriteWords, type ByteRange } from '../util/ranges.js';
import { sshInvocation } from '../util/ssh-command.js';
import type { RangedFilePlan } from './rsync-plan.js';

/** Program and arguments running `words` on the PostgreSQL host: through ssh, or here (local-rsync). */
export function hostCommand(sshCommand: string | null, words: readonly string[]): { cmd: string; args: string[] } {
  if (sshCommand) return sshInvocation(sshCommand, words);
  const [cmd = '', ...args] = words;
  return { cmd, args };
}

/** Starts the children of a backup, all of which it kills at once on a failure or an abort. */
export interface ChildStarter {
  /** Throws a BarmanError once the backup is stopping. stdio: ['ignore', 'pipe', 'pipe'] unless given. */
  start(cmd: string, args: readonly string[], stdio?: StdioOptions): ChildProcess;
}

/**
 * The local writer of a range: ranges.ts's ddWriteWords with `status=progress` for
 * `status=none`, since the bytes it wrote (its stderr: "N bytes ... copied", every second and at
 * the end) are how a short range is known; run through `env LC_ALL=C` so that line is not
 * translated.
 */
export function localWriterWords(dest: string, offset: number): string[] {
  return ['env', 'LC_ALL=C', ...ddWriteWords(dest, offset).map((w) => (w === 'status=none' ? 'status=progress' : w))];
}

/** The last byte count GNU dd reported on stderr (`status=progress` lines and the summary), or null. */
export function lastDdByteCount(stderr: string): number | null {
  let last: number | null = null;
  for (const m of stderr.matchAll(/(?:^|[\r\n])(\d+) bytes? /g)) last = Number(m[1]);
  return last;
}

export type DdFailure = 'vanished' | 'not-gnu' | 'failed';

/**
 * Why a range read failed. ssh's own failures (exit 255: connection refused or dropped) are
 * always failures. A missing source file is a file dropped during the backup, like rsync's
 * "vanished" (exit 24). A dd that refuses GNU options (iflag=skip_bytes...: busybox, BSD) cannot
 * read ranges: that file goes back to rsync.
 */
export function classifyDdFailure(code: number, stderr: string): DdFailure {
  if (code === 255 || code < 0 || code >= 128) return 'failed';
  if (/No such file or directory/.test(stderr)) return 'vanished';
  if (/\b(invalid|unrecognized|unknown operand|unknown option)\b/i.test(stderr)) return 'not-gnu';
  return 'failed';
}

/** `stat -c %.9Y` output (seconds with up to 9 decimals), or null when it is not that. */
export function parseStatMtime(text: string): string | null {
  const t = text.trim();
  return /^\d+(\.\d{1,9})?$/.test(t) ? t : null;
}

/** Exit code and stderr of a child (stdout handled by the caller); `onStderr` sees it as it comes. */
function waitChild(child: ChildProcess, onStderr?: (text: string) => void): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      // Bounded: status=progress writes a line a second; the end is what matters.
      stderr = (stderr + d).slice(-64 * 1024);
      onStderr?.(stderr);
    });
    let done = false;
    child.on('error', (err) => {
      if (!done) (done = true), resolve({ code: -1, stderr: err.message });
    });
    child.on('close', (code, sig) => {
      if (!done) (done = true), resolve({ code: code ?? 128, stderr: sig && stderr === '' ? `killed by ${sig}` : stderr });
    });
  });
}

type RangeResult = { kind: 'ok'; received: number } | { kind: 'vanished' } | { kind: 'not-gnu'; detail: string };

/** How a ranged file ended, told by the range that settled it. */
export type RangedFileOutcome = 'copied' | 'vanished' | 'fallback';

/** Shared by the ranged files of one host: once its dd is known not to be GNU, stop trying. */
export interface HostState {
  ddUnusable: string | null;
}

/** The ranged copy of one file; `copyRange(i)` for each of its ranges, in any order, at once. */
export class RangedFile {
  private prepared: Promise<void> | null = null;
  private sourceMtime: Promise<string | null> | null = null;
  private readonly results: (RangeResult | undefined)[];
  private pending: number;

  constructor(
    private readonly starter: ChildStarter,
    private readonly sshCommand: string | null,
    private readonly host: HostState,
    /** Absolute path on the PostgreSQL host. */
    readonly src: string,
    /** Absolute local path (its directory exists). */
    readonly dest: string,
    readonly plan: RangedFilePlan,
  ) {
    this.results = plan.ranges.map(() => undefined);
    this.pending = plan.ranges.length;
  }

  /**
   * Copy range `i`. Returns the bytes written, and the file's outcome when this was the last of
   * its ranges to end (null otherwise). Throws a BarmanError on any failure other than a
   * vanished source or a non-GNU dd. `onData` is told of the bytes as they arrive (write-back
   * and progress need not wait for the end of a range of hundreds of MB).
   */
  async copyRange(i: number, onData?: (bytes: number) => void): Promise<{ received: number; outcome: RangedFileOutcome | null }> {
    const range = this.plan.ranges[i];
    if (!range) throw new BarmanError(`no range ${i} for ${this.src}`);
    let result: RangeResult;
    if (this.host.ddUnusable !== null) {
      result = { kind: 'not-gnu', detail: this.host.ddUnusable };
    } else {
      await this.prepare();
      result = await this.readRange(range, onData);
      if (result.kind === 'not-gnu') this.host.ddUnusable ??= result.detail;
    }
    this.results[i] = result;
    this.pending -= 1;
    const received = result.kind === 'ok' ? result.received : 0;
    return { received, outcome: this.pending === 0 ? await this.settle() : null };
  }

  /**
   * Once per file, before its first range: the empty local file (0600, like every catalog file;
   * each range then writes into it without truncating), and the source's mtime with full
   * precision, read before any data like rsync's listing, alongside the first range.
   */
  private prepare(): Promise<void> {
    if (this.sourceMtime === null) {
      const { cmd, args } = hostCommand(this.sshCommand, ['stat', '-c', '%.9Y', this.src]);
      const child = this.starter.start(cmd, args);
      let out = '';
      child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
      this.sourceMtime = waitChild(child).then((r) => (r.code === 0 ? parseStatMtime(out) : null));
    }
    this.prepared ??= fsp.open(this.dest, 'w', 0o600).then((fh) => fh.close());
    return this.prepared;
  }

  private async readRange(range: ByteRange, onData?: (bytes: number) => void): Promise<RangeResult> {
    // The writer first, its stdin then handed to the reader as stdout: the data goes from one
    // process to the other through one pipe, never through this one.
    const w = hostCommand(null, localWriterWords(this.dest, range.offset));
    const writer = this.starter.start(w.cmd, w.args, ['pipe', 'ignore', 'pipe']);
    let reported = 0;
    const written = waitChild(writer, (text) => {
      const n = lastDdByteCount(text);
      if (n !== null && n > reported && onData) onData(n - reported);
      if (n !== null && n > reported) reported = n;
    });
    let reader: ChildProcess;
    try {
      if (!writer.stdin) throw new BarmanError(`no pipe to dd for ${this.dest}`);
      const r = hostCommand(this.sshCommand, ddReadWords(this.src, range));
      reader = this.starter.start(r.cmd, r.args, ['ignore', writer.stdin, 'pipe']);
    } catch (err) {
      writer.kill('SIGTERM');
      throw err;
    } finally {
      // Only the reader may hold the pipe's write end: the writer ends when the reader does.
      writer.stdin?.destroy();
    }
    const [rd, wr] = await Promise.all([waitChild(reader), written]);
    const received = lastDdByteCount(wr.stderr);
    const wrErr = lastLine(wr.stderr.replace(/\r/g, '\n'));
    if (rd.code !== 0) {
      const why = classifyDdFailure(rd.code, rd.stderr);
      if (why === 'vanished') return { kind: 'vanished' };
      if (why === 'not-gnu') return { kind: 'not-gnu', detail: lastLine(rd.stderr) };
    }
    if (wr.code !== 0 || received === null) {
      // The local dd too may be another one (its PATH comes from path_prefix).
      if (wr.code !== 0 && classifyDdFailure(wr.code, wr.stderr) === 'not-gnu') return { kind: 'not-gnu', detail: wrErr };
      throw new BarmanError(`cannot write ${this.dest} at ${range.offset} (dd exit code ${wr.code}): ${wrErr}`);
    }
    if (rd.code !== 0) {
      throw new BarmanError(`ranged copy of ${this.src} (bytes ${range.offset}+${range.length}) failed with exit code ${rd.code}: ${lastLine(rd.stderr)}`);
    }
    if (received > reported && onData) onData(received - reported);
    return { kind: 'ok', received };
  }

  private async settle(): Promise<RangedFileOutcome> {
    const results = this.results;
    if (results.some((r) => r?.kind === 'vanished' || r?.kind === 'not-gnu')) {
      await fsp.rm(this.dest, { force: true });
      return results.some((r) => r?.kind === 'vanished') ? 'vanished' : 'fallback';
    }
    // A short range: the file shrank during the copy (truncated by PostgreSQL; WAL replay redoes
    // it). The copy ends where the contiguous data ended, never with a hole of zeros after it.
    const short = this.plan.ranges.findIndex((r, i) => {
      const res = results[i];
      return res?.kind === 'ok' && res.received < r.length;
    });
    if (short >= 0) {
      const r = this.plan.ranges[short] as ByteRange;
      const res = results[short] as { received: number };
      await fsp.truncate(this.dest, r.offset + res.received);
    }
    await fsp.chmod(this.dest, 0o600);
    await this.setMtime();
    return 'copied';
  }

  /**
   * The source's mtime: reuse_backup compares size and mtime (rsync --link-dest) with the next
   * backup's listing, so a different mtime would never let this file be shared again. Node's
   * utimes takes a double (sub-microsecond digits lost), hence `touch -d @sec.nsec` for the
   * exact value; the listing's whole seconds when the source's stat could not tell.
   */
  private async setMtime(): Promise<void> {
    const exact = await (this.sourceMtime ?? Promise.resolve(null));
    if (exact !== null) {
      const child = this.starter.start('touch', ['-c', '-d', `@${exact}`, '--', this.dest]);
      child.stdout?.resume();
      const r = await waitChild(child);
      if (r.code === 0) return;
    }
    await fsp.utimes(this.dest, this.plan.mtimeSec, this.plan.mtimeSec);
  }
}
