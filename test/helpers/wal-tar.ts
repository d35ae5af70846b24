/** Shared pieces of the WAL transfer tests: synthetic WAL content, the CLI, tar streams in memory. */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import tar from 'tar-stream';

export const BARMAN_BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/barman.js');

/** Deterministic, mildly compressible bytes standing in for a WAL file. */
export function syntheticWal(seed: number, size = 256 * 1024): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4) b.writeUInt32LE(((i * 2654435761 + seed) >>> 0) & 0xffff, i);
  return b;
}

/** Run our CLI with a configuration file; stdout stays binary (a tar stream). */
export function runBarman(conf: string, args: string[]): { code: number | null; stdout: Buffer; stderr: string } {
  const r = spawnSync(process.execPath, [BARMAN_BIN, '-c', conf, ...args], { maxBuffer: 256 << 20 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

/** The members of a tar stream held in memory, in order. */
export async function untar(data: Buffer): Promise<Array<{ name: string; data: Buffer; mtime?: Date }>> {
  const out: Array<{ name: string; data: Buffer; mtime?: Date }> = [];
  const extract = tar.extract();
  Readable.from([data]).pipe(extract);
  for await (const entry of extract) {
    const chunks: Buffer[] = [];
    for await (const c of entry as AsyncIterable<Buffer>) chunks.push(c);
    out.push({ name: entry.header.name, data: Buffer.concat(chunks), mtime: entry.header.mtime });
  }
  return out;
}

/** A writable sink that keeps what it receives (a tar stream written by the code under test). */
export function collect(): { sink: PassThrough; data: () => Buffer } {
  const sink = new PassThrough();
  const chunks: Buffer[] = [];
  sink.on('data', (c: Buffer) => chunks.push(c));
  return { sink, data: () => Buffer.concat(chunks) };
}
