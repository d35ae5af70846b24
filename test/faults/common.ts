/** Helpers shared by the case tables. */
import { existsSync, promises as fs, readdirSync } from 'node:fs';
import path from 'node:path';
import { prng } from '../helpers/testing.js';
import { segmentHeader } from '../helpers/wal-segment.js';
import { describe, exec, start, waitForFile, type CmdOptions, type CmdResult, type Running } from './exec.js';
import type { CaseContext } from './types.js';
import { sha256, walTar } from './tar.js';
import type { ServerName, World } from './world.js';

export const SEG = 16 << 20;
let segNo = 0x10;

/** A fresh segment name of timeline 1 that cluster A will never write (log 0x0A), and its content. */
export function synthSegment(size = SEG): [string, Buffer] {
  const n = segNo++;
  const name = `000000010000000A${n.toString(16).toUpperCase().padStart(8, '0')}`;
  const data = Buffer.alloc(size, 0);
  const rnd = prng(n * 7919 + 1);
  // A WAL-like head (records) and zeros (a switched segment): distinct per name, compressible.
  for (let off = 0; off < Math.min(size, 64 * 1024); off += 4) data.writeUInt32LE(rnd() >>> 0, off);
  // A valid long page header (what archive-wal checks); a wrong size keeps the 16 MiB one.
  segmentHeader(name, SEG).copy(data, 0, 0, Math.min(40, size));
  return [name, data];
}

export function dirNames(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

export function incomingDir(world: World, srv: ServerName): string {
  return path.join(world.server(srv).dir, 'incoming');
}

export function walsFile(world: World, srv: ServerName, name: string): string {
  return path.join(world.server(srv).dir, 'wals', name.slice(0, 16), name);
}

export function firstLine(r: CmdResult): string {
  const line = (r.stderr.trim() || r.stdout.trim()).split('\n')[0] ?? '';
  return line.length > 140 ? `${line.slice(0, 137)}...` : line;
}

/** exit status in words */
export function how(r: CmdResult): string {
  return r.signal ? `killed by ${r.signal}` : `exit ${r.code}`;
}

/** `barman put-wal SRV` with `input` on stdin. */
export function putWal(world: World, srv: ServerName, input: Buffer, opts: CmdOptions = {}): Promise<CmdResult> {
  const b = world.barmanArgv(srv, ['put-wal', srv]);
  return exec(b.argv, { user: b.user, input, ...opts, env: { ...b.env, ...(opts.env ?? {}) } });
}

export function startBarman(world: World, srv: ServerName | null, args: string[], opts: CmdOptions = {}): Running {
  const b = world.barmanArgv(srv, args);
  return start(b.argv, { user: b.user, ...opts, env: { ...b.env, ...(opts.env ?? {}) } });
}

/**
 * Send segments with put-wal under a fault; if it fails, send them again without it (what
 * PostgreSQL does): that must succeed. Whatever got exit 0 is acknowledged.
 */
export async function putWalAndRetry(ctx: CaseContext, srv: ServerName, files: Array<[string, Buffer]>, opts: CmdOptions): Promise<{ first: CmdResult; retried: CmdResult | null }> {
  const input = walTar(files);
  const first = await putWal(ctx.world, srv, input, opts);
  if (first.code === 0) {
    for (const [n, b] of files) ctx.world.ack(srv, n, b);
    return { first, retried: null };
  }
  const retried = await putWal(ctx.world, srv, input);
  ctx.expect(retried.code === 0, `put-wal of the same stream after the fault succeeds: ${describe(retried)}`);
  if (retried.code === 0) for (const [n, b] of files) ctx.world.ack(srv, n, b);
  return { first, retried };
}

/** A refused command: non-zero exit, one ERROR line, no stack (checked by the driver). */
export function expectRefused(ctx: CaseContext, r: CmdResult, what: string, pattern?: RegExp): void {
  ctx.expect(r.code !== 0 && r.code !== null, `${what} is refused (non-zero exit): ${describe(r)}`);
  const lines = r.stderr.trim().split('\n').filter((l) => l.trim() !== '');
  ctx.expect(lines.length >= 1 && /^ERROR: /.test(lines[0] ?? ''), `${what}: a clear ERROR line: ${describe(r)}`);
  if (pattern) ctx.expect(pattern.test(r.stderr), `${what}: message matches ${pattern}: ${describe(r)}`);
}

/** Fill the campaign's tmpfs until `leaveBytes` are free; returns the filler (remove it to free the space). */
export async function fillTmpfs(world: World, name: string, leaveBytes: number): Promise<string> {
  const filler = path.join(world.tmpfs, name);
  const { bavail, bsize } = await fs.statfs(world.tmpfs);
  await fs.writeFile(filler, Buffer.alloc(Math.max(0, bavail * bsize - leaveBytes)));
  return filler;
}

/** Pause files the barman/postgres users can create. */
export async function makeWorldWritable(dir: string): Promise<void> {
  await fs.chmod(dir, 0o1777);
}

export { sha256, waitForFile };
