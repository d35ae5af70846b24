/**
 * Object names of barman-cloud (spec §11.1), shared with Barman's cloud tools:
 *
 *   <prefix>/<server>/wals/<TTTTTTTTLLLLLLLL>/<WAL>[.gz|.bz2|.xz|.snappy|.zst|.lz4]
 *   <prefix>/<server>/wals/<TTTTTTTT>.history[.ext]
 *   <prefix>/<server>/base/<ID>/backup.info
 *   <prefix>/<server>/base/<ID>/data.tar[.gz|.bz2|.snappy]   (+ data_0001.tar... parts)
 *   <prefix>/<server>/base/<ID>/<oid>.tar[...]               one per tablespace
 *   <prefix>/<server>/base/<ID>/annotations/keep
 *
 * barman-ts adds `base/<ID>/barman-ts.sha256` (SHA-256 of each object of the backup, for
 * verification on restore); Barman's tools ignore it.
 */
import { BarmanError } from '../util/errors.js';
import type { CompressionName } from '../wal/compression.js';
import { hashDir, isAnyXlogFile } from '../wal/names.js';

/** WAL compressions and their extensions. Barman 3.4 reads only .gz, .bz2 and .snappy. */
export const WAL_EXTENSIONS: ReadonlyArray<readonly [string, CompressionName]> = [
  ['.gz', 'gzip'],
  ['.bz2', 'bzip2'],
  ['.xz', 'xz'],
  ['.snappy', 'snappy'],
  ['.zst', 'zstd'],
  ['.lz4', 'lz4'],
];

/** Compressions of backup tars (Barman's: gzip, bzip2, snappy). */
export type TarCompression = 'gz' | 'bz2' | 'snappy';
export const TAR_COMPRESSIONS: Readonly<Record<TarCompression, CompressionName>> = { gz: 'gzip', bz2: 'bzip2', snappy: 'snappy' };

export const SUMS_OBJECT = 'barman-ts.sha256';

export function walExtension(c: CompressionName | null): string {
  if (c === null) return '';
  const e = WAL_EXTENSIONS.find(([, name]) => name === c);
  if (!e) throw new BarmanError(`compression ${c} cannot be used for cloud WAL archives`);
  return e[0];
}

/** Split a WAL object's base name into the WAL name and its compression; null when it is not one. */
export function parseWalObjectName(base: string): { name: string; compression: CompressionName | null } | null {
  if (isAnyXlogFile(base)) return { name: base, compression: null };
  for (const [ext, c] of WAL_EXTENSIONS) {
    if (base.endsWith(ext) && isAnyXlogFile(base.slice(0, -ext.length))) return { name: base.slice(0, -ext.length), compression: c };
  }
  return null;
}

/** Keys of one server in one bucket. */
export class CloudLayout {
  readonly root: string;
  constructor(
    readonly prefix: string,
    readonly server: string,
  ) {
    if (!server || server.includes('/') || server === '.' || server === '..') throw new BarmanError(`invalid server name '${server}'`, 3);
    this.root = prefix ? `${prefix}/${server}` : server;
  }

  get walsPrefix(): string {
    return `${this.root}/wals/`;
  }

  get basePrefix(): string {
    return `${this.root}/base/`;
  }

  /** Directory (with trailing `/`) holding a WAL file: its hash dir, or wals/ for history files. */
  walDir(name: string): string {
    const h = hashDir(name);
    return h ? `${this.walsPrefix}${h}/` : this.walsPrefix;
  }

  walKey(name: string, compression: CompressionName | null): string {
    return `${this.walDir(name)}${name}${walExtension(compression)}`;
  }

  backupDir(id: string): string {
    return `${this.basePrefix}${id}/`;
  }

  backupInfoKey(id: string): string {
    return `${this.backupDir(id)}backup.info`;
  }

  keepKey(id: string): string {
    return `${this.backupDir(id)}annotations/keep`;
  }

  sumsKey(id: string): string {
    return `${this.backupDir(id)}${SUMS_OBJECT}`;
  }

  /** `data` or the tablespace oid, with the part number and extension. */
  tarKey(id: string, base: string, part: number, compression: TarCompression | null): string {
    return `${this.backupDir(id)}${tarName(base, part, compression)}`;
  }
}

export function tarName(base: string, part: number, compression: TarCompression | null): string {
  return `${base}${part > 0 ? `_${String(part).padStart(4, '0')}` : ''}.tar${compression ? `.${compression}` : ''}`;
}

/** Parse a tar object name of a backup: base (`data` or oid), part, compression; null otherwise. */
export function parseTarName(name: string): { base: string; part: number; compression: TarCompression | null } | null {
  const m = /^(data|\d+)(?:_(\d{4,}))?\.tar(?:\.(gz|bz2|snappy))?$/.exec(name);
  if (!m) return null;
  return { base: m[1] as string, part: m[2] ? Number(m[2]) : 0, compression: (m[3] as TarCompression | undefined) ?? null };
}
