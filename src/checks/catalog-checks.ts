/**
 * Checks on what barman itself holds: the WAL archive, backup age and size, WAL age and size,
 * encryption and compression settings, failed backups and minimum redundancy. Ages use the
 * run's clock (`CheckCollector.now`), so that tests can freeze it.
 */
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { COPY_DONE, DONE, FAILED, WAITING_FOR_WALS } from '../catalog/backup-info.js';
import type { BackupEntry } from '../catalog/catalog.js';
import { readXlogDb, xlogDbPath, type XlogDbEntry } from '../catalog/xlogdb.js';
import { statIfExists } from '../util/fsutil.js';
import { computeWalStats } from '../reporting/wal-stats.js';
import { humanDuration, prettySize } from '../util/format.js';
import { findProgram } from '../util/proc.js';
import { encryptionConfigProblem, encryptionEnabled } from '../catalog/encryption.js';
import { subprocessEnv } from '../postgres/binaries.js';
import { errorMessage } from '../util/errors.js';
import { gpgEncryptFile } from '../util/gpg.js';
import { logger } from '../util/log.js';
import type { CheckCollector } from './types.js';

const log = logger('check');

type Line = { name: string; ok: boolean; hint: string; perfdata?: number };

/** `WAL archive`: shown only when failing (nothing archived yet and no backup waiting for WALs). */
export async function walArchiveCheck(col: CheckCollector, srv: ServerConfig, catalog: readonly BackupEntry[]): Promise<void> {
  let size: number;
  try {
    size = (await statIfExists(xlogDbPath(srv)))?.size ?? 0;
  } catch (err) {
    col.add('WAL archive', false, errorMessage(err));
    return;
  }
  if (size > 0) return;
  if (catalog.some((e) => e.info.status === WAITING_FOR_WALS)) return;
  col.add('WAL archive', false, 'please make sure WAL shipping is setup');
}

/** The last backup whose copy is done (DONE or WAITING_FOR_WALS), as Barman's default filter. */
export function lastBackup(catalog: readonly BackupEntry[]): BackupEntry | null {
  return catalog.filter((e) => COPY_DONE.has(e.info.status)).at(-1) ?? null;
}

export function backupMaxAgeLine(maxAge: number | null, last: BackupEntry | null, now: Date): Line {
  const name = 'backup maximum age';
  if (maxAge === null) return { name, ok: true, hint: 'no last_backup_maximum_age provided' };
  const end = last?.info.end_time;
  if (!last || !end) return { name, ok: false, hint: `interval provided: ${humanDuration(maxAge)}, latest backup age: No available backups` };
  const age = now.getTime() / 1000 - end.epochSeconds;
  return { name, ok: age <= maxAge, hint: `interval provided: ${humanDuration(maxAge)}, latest backup age: ${humanDuration(age)}` };
}

export function backupMinSizeLine(minSize: number | null, last: BackupEntry | null): Line {
  const name = 'backup minimum size';
  const size = last ? (last.info.size ?? 0) : 0;
  if (minSize === null) return { name, ok: true, hint: prettySize(size), perfdata: size };
  const ok = last !== null && size >= minSize;
  return { name, ok, hint: `last backup size ${prettySize(size)} ${ok ? '>' : '<'} ${prettySize(minSize)} minimum`, perfdata: size };
}

/** `wal maximum age` and `wal size`, from the WALs archived since the last backup. */
export function walAgeLines(maxAge: number | null, lastWalTime: number | null, walSize: number, hasBackup: boolean, now: Date): Line[] {
  let age: Line;
  if (maxAge === null) age = { name: 'wal maximum age', ok: true, hint: 'no last_wal_maximum_age provided' };
  else if (!hasBackup || lastWalTime === null) age = { name: 'wal maximum age', ok: false, hint: 'No WAL files archived for last backup' };
  else {
    const seconds = now.getTime() / 1000 - lastWalTime;
    age = { name: 'wal maximum age', ok: seconds <= maxAge, hint: `interval provided: ${humanDuration(maxAge)}, latest wal age: ${humanDuration(seconds)}` };
  }
  return [age, { name: 'wal size', ok: true, hint: prettySize(walSize), perfdata: walSize }];
}

export async function walValidityChecks(col: CheckCollector, srv: ServerConfig, catalog: readonly BackupEntry[]): Promise<void> {
  const last = lastBackup(catalog);
  let lastWalTime: number | null = null;
  let walSize = 0;
  if (last) {
    let wals: XlogDbEntry[];
    try {
      wals = await readXlogDb(srv);
    } catch (err) {
      col.add('wal maximum age', false, errorMessage(err));
      return;
    }
    const stats = computeWalStats(catalog, wals).get(last.id);
    lastWalTime = stats?.walLastTime ?? null;
    walSize = stats?.walUntilNextSize ?? 0;
  }
  for (const l of walAgeLines(srv.last_wal_maximum_age, lastWalTime, walSize, last !== null, col.now)) col.add(l.name, l.ok, l.hint, l.perfdata);
}

export { findProgram };

/** Compressors that run an external program (the others are in-process). */
const EXTERNAL_PROGRAM: Record<string, string> = { bzip2: 'bzip2', pybzip2: 'bzip2', xz: 'xz', pigz: 'pigz' };

export function compressionLine(
  srv: Pick<ServerConfig, 'compression' | 'custom_compression_filter' | 'custom_decompression_filter' | 'path_prefix'>,
  which: (program: string) => string | null = (p) => findProgram(p, srv.path_prefix),
): Line {
  const name = 'compression settings';
  const c = srv.compression;
  if (!c || c === 'none') return { name, ok: true, hint: '' };
  if (c === 'custom') {
    if (!srv.custom_compression_filter || !srv.custom_decompression_filter) {
      return { name, ok: false, hint: 'custom compression requires custom_compression_filter and custom_decompression_filter' };
    }
    return { name, ok: true, hint: '' };
  }
  const program = EXTERNAL_PROGRAM[c];
  if (program && !which(program)) return { name, ok: false, hint: `${c} compression requires the '${program}' program, not found` };
  return { name, ok: true, hint: '' };
}

/**
 * `encryption` (only when encryption = gpg): the settings backups need (Barman's messages), then
 * gpg must encrypt a test file for encryption_key_id, as the archiver and backups will.
 */
export async function encryptionCheck(col: CheckCollector, srv: ServerConfig): Promise<void> {
  if (!encryptionEnabled(srv)) return;
  const problem = encryptionConfigProblem(srv);
  if (problem) {
    col.add('encryption', false, problem);
    return;
  }
  const program = findProgram('gpg', srv.path_prefix);
  if (!program) {
    col.add('encryption', false, "encryption test failed: the 'gpg' program is not installed");
    return;
  }
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'barman-encrypt-test-'));
  try {
    const plain = path.join(dir, 'plain');
    await fsp.writeFile(plain, 'encryption check\n', { mode: 0o600 });
    const gpg = { program, env: subprocessEnv(srv.path_prefix) };
    const failure = await withTimeout(gpgEncryptFile(gpg, plain, path.join(dir, 'plain.gpg'), srv.encryption_key_id as string), col.remainingMs()).then(
      () => null,
      (err: unknown) => errorMessage(err),
    );
    if (failure !== null) log.warning(`${srv.name}: encryption check: ${failure}`);
    col.add('encryption', failure === null, failure === null ? 'encryption test succeeded' : 'encryption test failed. Check the log file for more details');
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

/** `p`, or a rejection after `ms` milliseconds (Infinity: no limit). */
function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  if (!Number.isFinite(ms)) return p;
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('timed out')), Math.max(0, ms));
  });
  p.catch(() => undefined);
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

export function backupCountLines(catalog: readonly BackupEntry[], minimumRedundancy: number): Line[] {
  const failed = catalog.filter((e) => e.info.status === FAILED).length;
  // Only full backups count: an incremental backup is nothing without its chain (Barman 3.11+).
  // Barman 3.4's words while the catalog has no incremental backup, 3.17's once it has.
  const done = catalog.filter((e) => e.info.status === DONE);
  const full = done.filter((e) => !e.info.parent_backup_id).length;
  const what = full === done.length ? 'backups' : 'non-incremental backups';
  return [
    { name: 'failed backups', ok: failed === 0, hint: `there are ${failed} failed backups` },
    { name: 'minimum redundancy requirements', ok: full >= minimumRedundancy, hint: `have ${full} ${what}, expected at least ${minimumRedundancy}` },
  ];
}
