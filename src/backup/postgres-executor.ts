/**
 * backup_method = postgres: pg_basebackup over the streaming replication protocol (no SSH), plain
 * format by default, tablespaces mapped into `base/<id>/<oid>`, WAL left to the archiver
 * (`-X none`), which is what makes the WAITING_FOR_WALS → DONE step necessary.
 */
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { conninfoForChild } from '../postgres/conninfo.js';
import { findPgBinary, subprocessEnv } from '../postgres/binaries.js';
import { withConnection, type Tablespace } from '../postgres/connection.js';
import { manifestWalRanges } from '../postgres/backup-label.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { faultPoint } from '../util/fault.js';
import { logger } from '../util/log.js';
import { run } from '../util/proc.js';
import type { CopyOutcome } from './copy-outcome.js';
import { readTextIfExists } from '../util/fsutil.js';
import { parseTarName, tarDecompressArgs } from '../recovery/copy.js';

const log = logger('backup.postgres');

export interface BasebackupRequest {
  srv: ServerConfig;
  /** `base/<id>` */
  destDir: string;
  tablespaces: readonly Tablespace[];
  immediateCheckpoint: boolean;
  label: string;
  /** Called with (done bytes, total bytes) while pg_basebackup reports progress. */
  onProgress?: (doneKb: number, totalKb: number) => void;
  /** Set by the caller to abort (e.g. on SIGTERM). */
  signal?: AbortSignal;
}

export interface BasebackupResult {
  /** From pg_basebackup's verbose output; the manifest is preferred when present. */
  endLsn: string | null;
  format: 'plain' | 'tar';
  compression: string | null;
}

/**
 * pg_basebackup arguments for the server's configuration (pure, unit-tested), and the extra
 * environment of the child (`PGPASSWORD`: a password never goes on the command line).
 */
export function basebackupArgs(req: Pick<BasebackupRequest, 'srv' | 'destDir' | 'tablespaces' | 'immediateCheckpoint' | 'label'>, progress: boolean): {
  args: string[];
  env: Record<string, string>;
  format: 'plain' | 'tar';
  compression: string | null;
} {
  const { srv } = req;
  const { conninfo, env } = conninfoForChild(srv.streaming_conninfo ?? srv.conninfo ?? '', { application_name: srv.streaming_backup_name });
  // backup_compression = none: tar files without compression (Barman 3.8+), compression 'none'.
  const setting = srv.backup_compression ?? null;
  const compression = setting && setting !== 'none' ? setting : null;
  const format: 'plain' | 'tar' = setting && srv.backup_compression_format !== 'plain' ? 'tar' : 'plain';
  if (compression && format === 'plain' && srv.backup_compression_location !== 'server') {
    throw new BarmanError('backup_compression_format = plain requires backup_compression_location = server');
  }
  const args = [
    `--dbname=${conninfo}`,
    `--pgdata=${path.join(req.destDir, 'data')}`,
    `--format=${format === 'tar' ? 'tar' : 'plain'}`,
    '--wal-method=none',
    '--no-password',
    '--verbose',
    `--checkpoint=${req.immediateCheckpoint ? 'fast' : 'spread'}`,
    `--label=${req.label}`,
  ];
  if (progress) args.push('--progress');
  if (compression) {
    const loc = srv.backup_compression_location ?? 'client';
    let spec = `${loc}-${compression}`;
    const detail: string[] = [];
    if (srv.backup_compression_level !== null) detail.push(`level=${srv.backup_compression_level}`);
    if (compression === 'zstd' && srv.backup_compression_workers > 0) detail.push(`workers=${srv.backup_compression_workers}`);
    if (detail.length) spec += `:${detail.join(',')}`;
    args.push(`--compress=${spec}`);
  }
  if (format === 'plain') {
    for (const ts of req.tablespaces) args.push(tablespaceMappingArg(ts.location, path.join(req.destDir, String(ts.oid))));
  }
  return { args, env, format, compression: format === 'tar' ? setting : compression };
}

/**
 * `--tablespace-mapping=OLDDIR=NEWDIR` for pg_basebackup, which splits at the first `=` not
 * preceded by a backslash: an `=` in either path is written `\=` (a backslash before anything
 * else stays a backslash). A path ending in a backslash cannot be written at all (its last
 * backslash would escape the separator): refused with a clear line rather than mis-mapped.
 */
export function tablespaceMappingArg(oldDir: string, newDir: string): string {
  for (const dir of [oldDir, newDir]) {
    if (dir.endsWith('\\')) throw new BarmanError(`pg_basebackup cannot map the tablespace directory '${dir}': it ends with a backslash`);
  }
  const escape = (dir: string) => dir.replace(/=/g, '\\=');
  return `--tablespace-mapping=${escape(oldDir)}=${escape(newDir)}`;
}

const PROGRESS_RE = /(\d+)\/(\d+) kB/;
const END_RE = /write-ahead log end point: ([0-9A-F]+\/[0-9A-F]+)/i;

/** The copy did not start: the abort signal (SIGINT/SIGTERM) came first. */
function abortedBeforeStart(): BarmanError {
  return new BarmanError('interrupted by signal before pg_basebackup started');
}

/**
 * Run pg_basebackup. Throws BarmanError with pg_basebackup's last error line on failure. An
 * already aborted `signal` means pg_basebackup is never started ('abort' fired before we listen
 * would never reach the child).
 */
export async function runBasebackup(req: BasebackupRequest): Promise<BasebackupResult> {
  if (req.signal?.aborted) throw abortedBeforeStart();
  const { args, env, format, compression } = basebackupArgs(req, req.onProgress !== undefined);
  await fsp.mkdir(path.join(req.destDir, 'data'), { recursive: true, mode: 0o700 });
  const bin = findPgBinary('pg_basebackup', req.srv.path_prefix);
  log.info(`running ${bin} ${args.map((a) => (a.startsWith('--dbname=') ? '--dbname=***' : a)).join(' ')}`);
  return new Promise<BasebackupResult>((resolve, reject) => {
    // Checked and listened to in the same synchronous run: no signal can fall in between.
    if (req.signal?.aborted) return reject(abortedBeforeStart());
    const child = spawn(bin, args, { env: subprocessEnv(req.srv.path_prefix, env), stdio: ['ignore', 'ignore', 'pipe'] });
    const onAbort = () => child.kill('SIGTERM');
    req.signal?.addEventListener('abort', onAbort);
    faultPoint('backup:basebackup-spawned');
    let endLsn: string | null = null;
    const errors: string[] = [];
    let buf = '';
    child.stderr.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      const parts = buf.split(/[\r\n]/);
      buf = parts.pop() ?? '';
      for (const line of parts) {
        if (line === '') continue;
        const pm = PROGRESS_RE.exec(line);
        if (pm && req.onProgress) {
          req.onProgress(Number(pm[1]), Number(pm[2]));
          continue;
        }
        log.info(`pg_basebackup: ${line}`);
        const em = END_RE.exec(line);
        if (em?.[1]) endLsn = em[1];
        if (/error|fatal|could not/i.test(line)) errors.push(line.replace(/^pg_basebackup: (error: )?/, ''));
      }
    });
    child.on('error', (err) => reject(new BarmanError(`cannot run pg_basebackup: ${err.message}`)));
    child.on('close', (code, signal) => {
      req.signal?.removeEventListener('abort', onAbort);
      if (code === 0) resolve({ endLsn, format, compression });
      else {
        const why = errors.at(-1) ?? (signal ? `killed by ${signal}` : `exit code ${code}`);
        reject(new BarmanError(`pg_basebackup: ${why}`));
      }
    });
  });
}

/**
 * End LSN from backup_manifest (exact), else from pg_basebackup's verbose output (printed only
 * when it streams WAL itself), else, as Barman does, the server's WAL position once pg_basebackup
 * is done: a PostgreSQL 12 server writes no manifest. That position is at or after the real
 * end, so the backup waits for all the WAL it needs (maybe a little more).
 */
async function backupEnd(srv: ServerConfig, dataDir: string, fallback: string | null): Promise<string> {
  // No manifest: fall back. One that cannot be read means a backup that cannot be read: an error.
  const text = await readTextIfExists(path.join(dataDir, 'backup_manifest'));
  if (text !== null) {
    try {
      const last = manifestWalRanges(text).at(-1);
      if (last) return last.endLsn;
    } catch {
      /* a manifest without a usable WAL range: fall back */
    }
  }
  if (fallback) return fallback;
  try {
    return await withConnection(srv.conninfo ?? '', (pg) => pg.value<string>('SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text'));
  } catch (err) {
    throw new BarmanError(`cannot determine the end of the backup (no backup_manifest, no end point reported, no WAL position from the server: ${errorMessage(err)})`);
  }
}

/**
 * The backup_label of the copy. In a tar backup it is read with --occurrence=1: pg_basebackup
 * puts backup_label first in base.tar, and without it GNU tar reads (decompresses) the whole
 * archive looking for more copies: seconds of CPU for a large gzip backup, after the copy.
 */
async function readLabel(dataDir: string, format: 'plain' | 'tar'): Promise<string> {
  if (format === 'plain') return fsp.readFile(path.join(dataDir, 'backup_label'), 'utf8');
  const tarFile = (await fsp.readdir(dataDir)).find((n) => parseTarName(n)?.oid === null);
  const parsed = tarFile === undefined ? null : parseTarName(tarFile);
  if (!tarFile || !parsed) throw new BarmanError('base.tar not found in the backup');
  const res = await run('tar', ['--occurrence=1', ...tarDecompressArgs(parsed.compression), '-xOf', path.join(dataDir, tarFile), 'backup_label']);
  if (res.code !== 0) throw new BarmanError(`cannot read backup_label from ${tarFile}: ${res.stderr.trim()}`);
  return res.stdout;
}

/** The postgres method's copy step for the backup frame: pg_basebackup, then its label and end. */
export async function postgresCopy(req: BasebackupRequest): Promise<CopyOutcome> {
  const copyStart = Date.now();
  const result = await runBasebackup(req);
  const copySeconds = (Date.now() - copyStart) / 1000;
  const dataDir = path.join(req.destDir, 'data');
  const labelText = await readLabel(dataDir, result.format);
  const endLsn = await backupEnd(req.srv, dataDir, result.endLsn);
  return { labelText, endLsn, format: result.format, compression: result.compression, copySeconds, extraCopyStats: [], deduplicatedSize: null };
}
