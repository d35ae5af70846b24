/**
 * Tar streams for put-wal, built by hand so that hostile ones can be made too: traversal and
 * absolute names, links, devices, base-256 sizes, PAX and GNU long-name overrides, duplicate
 * members, truncations. `walTar` builds the valid stream barman-wal-archive sends (members, then
 * SHA256SUMS).
 */
import { createHash } from 'node:crypto';

export const BLOCK = 512;

export interface MemberSpec {
  name: string;
  data?: Buffer;
  /** ustar type flag: '0' file, '1' hard link, '2' symlink, '3' char dev, '5' dir, '6' fifo, 'x' PAX, 'L' GNU long name. */
  type?: string;
  /** Size written in the header (default: data length). */
  size?: number;
  /** Size in base-256 (GNU) encoding, for sizes an octal field cannot hold. */
  base256Size?: bigint;
  linkname?: string;
  mtime?: number;
  mode?: number;
}

function octal(value: number, width: number): string {
  return `${value.toString(8).padStart(width - 1, '0')}\0`;
}

export function header(m: MemberSpec): Buffer {
  const h = Buffer.alloc(BLOCK, 0);
  const data = m.data ?? Buffer.alloc(0);
  h.write(m.name, 0, 100, 'latin1');
  h.write(octal(m.mode ?? 0o600, 8), 100, 'latin1');
  h.write(octal(0, 8), 108, 'latin1');
  h.write(octal(0, 8), 116, 'latin1');
  if (m.base256Size !== undefined) {
    // GNU base-256: high bit of the first byte set, big-endian value in the rest.
    let v = m.base256Size;
    for (let i = 11; i >= 1; i--) {
      h[124 + i] = Number(v & 0xffn);
      v >>= 8n;
    }
    h[124] = 0x80;
  } else h.write(octal(m.size ?? data.length, 12), 124, 'latin1');
  h.write(octal(Math.floor(m.mtime ?? 1_700_000_000), 12), 136, 'latin1');
  h.write('        ', 148, 'latin1');
  h.write(m.type ?? '0', 156, 'latin1');
  if (m.linkname) h.write(m.linkname, 157, 100, 'latin1');
  h.write('ustar\0', 257, 'latin1');
  h.write('00', 263, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return h;
}

function padded(data: Buffer): Buffer {
  const rem = data.length % BLOCK;
  return rem === 0 ? data : Buffer.concat([data, Buffer.alloc(BLOCK - rem)]);
}

/** PAX extended header records (`<len> key=value\n`). */
export function paxData(records: Record<string, string>): Buffer {
  let out = '';
  for (const [k, v] of Object.entries(records)) {
    const body = ` ${k}=${v}\n`;
    let len = body.length + 1;
    while (`${len}${body}`.length !== len) len = `${len}${body}`.length;
    out += `${len}${body}`;
  }
  return Buffer.from(out, 'utf8');
}

export interface TarOptions {
  /** Write the two zero blocks that end an archive (default true). */
  end?: boolean;
}

export function buildTar(members: MemberSpec[], opts: TarOptions = {}): Buffer {
  const parts: Buffer[] = [];
  for (const m of members) {
    parts.push(header(m));
    if (m.data && m.data.length > 0) parts.push(padded(m.data));
  }
  if (opts.end !== false) parts.push(Buffer.alloc(2 * BLOCK));
  return Buffer.concat(parts);
}

export const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
export const md5 = (b: Buffer | string) => createHash('md5').update(b).digest('hex');

export function sumsFile(files: Array<[string, Buffer]>, algo: 'sha256' | 'md5' = 'sha256'): Buffer {
  return Buffer.from(files.map(([n, b]) => `${algo === 'sha256' ? sha256(b) : md5(b)} *${n}\n`).join(''));
}

/** The stream barman-wal-archive sends: the files, then SHA256SUMS. */
export function walTar(files: Array<[string, Buffer]>, opts: TarOptions & { md5?: boolean } = {}): Buffer {
  const sumName = opts.md5 ? 'MD5SUMS' : 'SHA256SUMS';
  return buildTar(
    [...files.map(([name, data]) => ({ name, data })), { name: sumName, data: sumsFile(files, opts.md5 ? 'md5' : 'sha256') }],
    opts,
  );
}
