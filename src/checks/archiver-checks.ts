/**
 * WAL arrival checks: the incoming/streaming queues, archive_mode / archive_command /
 * continuous archiving (from pg_stat_archiver, so a failing archive_command shows), pg_receivewal
 * and receive-wal, and the files the archiver set aside in errors/.
 */
import { readdirIfExists } from '../util/fsutil.js';
import { errorMessage } from '../util/errors.js';
import type { ServerConfig } from '../config/config.js';
import { isLockHeld } from '../catalog/lock.js';
import { lockPath } from '../catalog/server-dirs.js';
import { findPgBinary } from '../postgres/binaries.js';
import { run } from '../util/proc.js';
import type { ArchiverStats, PgFacts } from './postgres-checks.js';
import type { CheckCollector } from './types.js';

type Line = { name: string; ok: boolean; hint: string };

/** Files waiting in a queue directory (`.tmp` files are writes in progress). */
export async function countQueue(dir: string): Promise<number> {
  const names = await readdirIfExists(dir);
  return names.filter((n) => !n.endsWith('.tmp')).length;
}

/**
 * `empty <kind> directory` (archiver of that kind off but files there) and `<kind> WALs
 * directory` (queue above max_incoming_wals_queue). Both lines appear only on failure. The
 * streaming directory always holds one `.partial` file, which does not count.
 */
export function walQueueLine(kind: 'incoming' | 'streaming', dir: string, enabled: boolean, fileCount: number, max: number | null): Line | null {
  const count = kind === 'streaming' ? fileCount - 1 : fileCount;
  const option = kind === 'incoming' ? 'archiver' : 'streaming_archiver';
  if (!enabled) return count > 0 ? { name: `empty ${kind} directory`, ok: false, hint: `'${dir}' must be empty when ${option}=off` } : null;
  if (max === null) return null;
  return count > max ? { name: `${kind} WALs directory`, ok: false, hint: `there are too many WALs in queue: ${count}, max ${max}` } : null;
}

/**
 * Is archive_command working? It is not when its last failure is more recent than its last
 * success (or it never succeeded). A failing `.history` file of a timeline not newer than the
 * current one is ignored, as Barman does: PostgreSQL retries those after a promotion.
 */
export function continuousArchivingLine(stats: ArchiverStats | null, archiveMode: string | null, currentWal: string | null): Line {
  const name = 'continuous archiving';
  const on = archiveMode === 'on' || archiveMode === 'always';
  if (!on) return { name, ok: false, hint: 'archive_mode is off' };
  if (!stats || stats.lastFailedWal === null || stats.lastFailedTime === null) return { name, ok: true, hint: '' };
  const failed = stats.lastFailedWal;
  if (failed.endsWith('.history') && currentWal && failed.slice(0, 8) <= currentWal.slice(0, 8)) return { name, ok: true, hint: '' };
  if (stats.lastArchivedTime && stats.lastFailedTime.getTime() <= stats.lastArchivedTime.getTime()) return { name, ok: true, hint: '' };
  return { name, ok: false, hint: `archive_command failed for WAL ${failed} (failures: ${stats.failedCount})` };
}

/** archive_mode, archive_command, continuous archiving (archiver=on and the server answered). */
export function fileArchiverLines(facts: Pick<PgFacts, 'archiveMode' | 'archiveCommand' | 'archiver' | 'currentWal'>): Line[] {
  const lines: Line[] = [];
  const modeOk = facts.archiveMode === 'on' || facts.archiveMode === 'always';
  lines.push({ name: 'archive_mode', ok: modeOk, hint: modeOk ? '' : "please set it to 'on' or 'always'" });
  const cmd = (facts.archiveCommand ?? '').trim();
  if (cmd === '' || cmd === '(disabled)') {
    lines.push({ name: 'archive_command', ok: false, hint: 'please set it accordingly to documentation' });
    return lines;
  }
  lines.push({ name: 'archive_command', ok: true, hint: '' });
  lines.push(continuousArchivingLine(facts.archiver, facts.archiveMode, facts.currentWal));
  return lines;
}

/**
 * The `archiver errors` hint: counts per kind, by file suffix (.duplicate, .unknown, .error =
 * not relevant, anything else = unknown failure), kinds in order of first appearance among the
 * sorted names, as Barman (whose order follows its directory listing). Empty with no files.
 */
export function summariseErrorFiles(names: readonly string[]): string {
  const counts = new Map<string, number>();
  for (const n of [...names].sort()) {
    const kind = n.endsWith('.error') ? 'not relevant' : n.endsWith('.duplicate') ? 'duplicates' : n.endsWith('.unknown') ? 'unknown' : 'unknown failure';
    counts.set(kind, (counts.get(kind) ?? 0) + 1);
  }
  return [...counts].map(([k, v]) => `${k}: ${v}`).join(', ');
}

export async function archiverErrorsCheck(col: CheckCollector, srv: ServerConfig): Promise<void> {
  let names: string[];
  try {
    names = await readdirIfExists(srv.errors_directory);
  } catch (err) {
    col.add('archiver errors', false, errorMessage(err));
    return;
  }
  col.add('archiver errors', names.length === 0, summariseErrorFiles(names));
}

type ClientVersion = { major: number; text: string } | null;
/** `<program> --version` of each check run, asked once (prefetchClientVersions starts it early). */
const versionRuns = new WeakMap<CheckCollector, Map<string, Promise<ClientVersion>>>();

function clientMajor(bin: string, col: CheckCollector): Promise<ClientVersion> {
  let runs = versionRuns.get(col);
  if (!runs) versionRuns.set(col, (runs = new Map()));
  let p = runs.get(bin);
  if (!p) {
    p = run(bin, ['--version'], { timeoutMs: col.remainingMs() })
      .catch(() => null)
      .then((res) => {
        const m = res ? /(\d+)(?:\.(\d+))?/.exec(res.stdout) : null;
        return m ? { major: Number(m[1]), text: m[2] !== undefined ? `${m[1]}.${m[2]}` : (m[1] ?? '') } : null;
      });
    runs.set(bin, p);
  }
  return p;
}

/**
 * Start the `--version` runs the executor checks will read (pg_receivewal for
 * streaming_archiver, pg_basebackup for backup_method = postgres), so that they overlap with
 * the checks before them rather than add to them.
 */
export function prefetchClientVersions(col: CheckCollector, srv: ServerConfig): void {
  if (srv.passive) return;
  const programs = [srv.streaming_archiver ? 'pg_receivewal' : null, srv.backup_method === 'postgres' ? 'pg_basebackup' : null];
  for (const program of programs) {
    if (program === null) continue;
    try {
      void clientMajor(findPgBinary(program, srv.path_prefix), col);
    } catch {
      // Not found: its check says so when its turn comes.
    }
  }
}

/**
 * `<label>` (the program is found) and `<label> compatible` (its major version is at least the
 * server's). Returns the client's version, null when unknown.
 */
async function clientProgramChecks(
  col: CheckCollector,
  srv: ServerConfig,
  facts: PgFacts,
  program: string,
  label: string,
): Promise<{ major: number; text: string } | null> {
  let bin: string | null = null;
  try {
    bin = findPgBinary(program, srv.path_prefix);
    col.add(label, true);
  } catch {
    col.add(label, false);
  }
  const client = bin ? await clientMajor(bin, col) : null;
  const serverMajor = facts.versionNum ? Math.floor(facts.versionNum / 10000) : null;
  const compatible = client !== null && serverMajor !== null && client.major >= serverMajor;
  // Barman's hint, and in plain words why when the programs are older than the server.
  const older = client !== null && serverMajor !== null && client.major < serverMajor;
  const why = older
    ? `: the client programs are older than the server (install ${program} ${serverMajor} or later, or point path_prefix at it)`
    : '';
  col.add(`${label} compatible`, compatible, compatible ? '' : `PostgreSQL version: ${serverMajor ?? 'None'}, ${label} version: ${client?.text ?? 'None'}${why}`);
  return client;
}

/** pg_receivexlog, pg_receivexlog compatible, receive-wal running (streaming_archiver=on). */
export async function streamingArchiverChecks(col: CheckCollector, srv: ServerConfig, facts: PgFacts): Promise<void> {
  await clientProgramChecks(col, srv, facts, 'pg_receivewal', 'pg_receivexlog');
  const running = await isLockHeld(lockPath(srv, 'receiveWal'));
  col.add('receive-wal running', running, running ? '' : 'See the Barman log file for more details');
}

export async function pgBasebackupChecks(col: CheckCollector, srv: ServerConfig, facts: PgFacts): Promise<void> {
  const client = await clientProgramChecks(col, srv, facts, 'pg_basebackup', 'pg_basebackup');
  // Tablespace mapping (-T) exists in every pg_basebackup since 9.4, older than any we accept.
  // Barman skips the line while PostgreSQL does not answer.
  if (client !== null && facts.connected) col.add('pg_basebackup supports tablespaces mapping', true);
}
