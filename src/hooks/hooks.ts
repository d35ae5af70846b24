/**
 * Hook scripts (spec §9), shared by the five families: backup, archive, delete, wal_delete and
 * recovery. For one family the order is: standard pre → retry pre → operation → retry post →
 * standard post; `runHooks` runs one phase (pre: standard then retry; post: retry then standard).
 *
 * Scripts are administrator-written shell commands (`runShell`), run with PATH prefixed by
 * path_prefix and the Barman environment variables; their output goes to the log. A standard
 * script's exit code is only reported. A retry script runs until it exits 0, 62 (ABORT_CONTINUE)
 * or 63 (ABORT_STOP), pausing between attempts, forever; 63 in the pre phase aborts the operation
 * (HookAbortError), in the post phase it acts like 62.
 *
 * Callers must not hold the xlogdb lock while hooks run: a hanging hook would block archiving.
 */
import type { ServerConfig } from '../config/config.js';
import { backupDir, neighbours, type BackupEntry } from '../catalog/catalog.js';
import { subprocessEnv } from '../postgres/binaries.js';
import { BarmanError } from '../util/errors.js';
import { logger } from '../util/log.js';
import { runShell } from '../util/proc.js';
import { pyFloatStr } from '../util/pytime.js';
import { VERSION } from '../version.js';

const log = logger('hooks');

export const ABORT_CONTINUE = 62;
export const ABORT_STOP = 63;

export type HookFamily = 'backup' | 'archive' | 'delete' | 'wal_delete' | 'recovery';
export type HookPhase = 'pre' | 'post';

/** What the operation is called in the abort message. */
const OPERATION: Record<HookFamily, string> = {
  backup: 'the backup',
  archive: 'the archiving',
  delete: 'the deletion',
  wal_delete: 'the WAL deletion',
  recovery: 'the restore',
};

/** A pre retry script exited with ABORT_STOP (63): the operation must not go on. */
export class HookAbortError extends BarmanError {
  constructor(
    readonly family: HookFamily,
    readonly script: string,
  ) {
    super(`${script} asked to abort ${OPERATION[family]} (exit code ${ABORT_STOP})`);
  }
}

export interface HookTiming {
  /** Pause between attempts of a retry hook (3 s). */
  attemptPauseMs: number;
  /** Longer pause after every 5 failed attempts (60 s). */
  napMs: number;
  /** How to wait (injectable so tests do not sleep). */
  sleep?: (ms: number) => Promise<void>;
}

export const DEFAULT_HOOK_TIMING: HookTiming = { attemptPauseMs: 3000, napMs: 60000 };

export interface HookRunOptions {
  /** A failing standard script (its exit code is otherwise ignored). */
  warning?: (msg: string) => void;
  timing?: HookTiming;
}

// ---------------------------------------------------------------------------------------------
// Environment

/** Variables of the backup, delete and recovery families. */
export interface BackupHookInfo {
  backupDir: string;
  backupInfoPath: string;
  backupId: string;
  previousId: string | null;
  nextId: string | null;
  status: string;
  /** The backup's own error (backup.info `error`), if any. */
  backupError: string | null;
  /** The error of the operation, for post hooks (wins over backupError in BARMAN_ERROR). */
  error?: string | null;
}

/** Recovery adds the restore's destination and options. */
export interface RecoveryHookInfo extends BackupHookInfo {
  destination: string;
  /** name → location of the restored tablespaces (relocations applied), or null. */
  tablespaces: Record<string, string> | null;
  remoteCommand: string | null;
  /** Non-empty restore options (targets...), serialised as sorted JSON. */
  recoverOptions: Record<string, unknown>;
}

/** Variables of the archive and wal_delete families. */
export interface WalHookInfo {
  segment: string;
  /** Source path before archiving, archive path after (and for wal_delete). */
  file: string;
  size: number;
  /** mtime, seconds (float); null when unknown (an xlog.db line written as `None`). */
  timestamp: number | null;
  compression: string | null;
  error?: string | null;
}

function sortedJson(obj: Record<string, unknown>): string {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(obj).sort()) out[k] = obj[k];
  return JSON.stringify(out);
}

/**
 * The backup part of a hook environment for `entry`, its previous and next backups taken from
 * `catalog` (the entry itself may not be in it yet: a backup being taken).
 */
export function backupHookInfo(srv: ServerConfig, entry: BackupEntry, catalog: readonly BackupEntry[]): BackupHookInfo {
  const known = catalog.some((e) => e.id === entry.id) ? catalog : [...catalog, entry].sort((a, b) => (a.id < b.id ? -1 : 1));
  const { previous, next } = neighbours(known, entry.id);
  return {
    backupDir: backupDir(srv, entry.id),
    backupInfoPath: entry.infoFile,
    backupId: entry.id,
    previousId: previous?.id ?? null,
    nextId: next?.id ?? null,
    status: entry.info.status,
    backupError: entry.info.error,
  };
}

export function backupHookVars(e: BackupHookInfo): Record<string, string> {
  return {
    BARMAN_ERROR: e.error ?? e.backupError ?? '',
    BARMAN_BACKUP_DIR: e.backupDir,
    BARMAN_BACKUP_INFO_PATH: e.backupInfoPath,
    BARMAN_BACKUP_ID: e.backupId,
    BARMAN_PREVIOUS_ID: e.previousId ?? '',
    BARMAN_NEXT_ID: e.nextId ?? '',
    BARMAN_STATUS: e.status,
  };
}

export function recoveryHookVars(e: RecoveryHookInfo): Record<string, string> {
  return {
    ...backupHookVars(e),
    BARMAN_DESTINATION_DIRECTORY: e.destination,
    BARMAN_TABLESPACES: e.tablespaces && Object.keys(e.tablespaces).length ? sortedJson(e.tablespaces) : '',
    BARMAN_REMOTE_COMMAND: e.remoteCommand ?? '',
    BARMAN_RECOVER_OPTIONS: Object.keys(e.recoverOptions).length ? sortedJson(e.recoverOptions) : '',
  };
}

export function walHookVars(w: WalHookInfo): Record<string, string> {
  return {
    BARMAN_ERROR: w.error ?? '',
    BARMAN_SEGMENT: w.segment,
    BARMAN_FILE: w.file,
    BARMAN_SIZE: String(w.size),
    BARMAN_TIMESTAMP: w.timestamp === null ? '' : pyFloatStr(w.timestamp),
    BARMAN_COMPRESSION: w.compression ?? '',
  };
}

/** The full environment of one script run. */
export function hookEnvironment(srv: ServerConfig, family: HookFamily, phase: HookPhase, retry: boolean, vars: Record<string, string>): NodeJS.ProcessEnv {
  return subprocessEnv(srv.path_prefix, {
    BARMAN_VERSION: VERSION,
    BARMAN_SERVER: srv.name,
    BARMAN_CONFIGURATION: srv.global.configFile,
    BARMAN_HOOK: retry ? `${family}_retry_script` : `${family}_script`,
    BARMAN_PHASE: phase,
    BARMAN_RETRY: retry ? '1' : '0',
    BARMAN_ERROR: '',
    ...vars,
  });
}

// ---------------------------------------------------------------------------------------------
// Running

type ScriptKey = `${HookPhase}_${HookFamily}_${'' | 'retry_'}script`;

function scriptOf(srv: ServerConfig, key: ScriptKey): string | null {
  // Every `<phase>_<family>[_retry]_script` is a string option (config/options.ts).
  const v = (srv as unknown as Record<string, unknown>)[key];
  return typeof v === 'string' && v.trim() !== '' ? v : null;
}

/** Is any script of the family configured (callers may skip work for hooks otherwise)? */
export function hasHooks(srv: ServerConfig, family: HookFamily): boolean {
  return (['pre', 'post'] as const).some((p) => scriptOf(srv, `${p}_${family}_script`) !== null || scriptOf(srv, `${p}_${family}_retry_script`) !== null);
}

const realSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function logOutput(name: string, out: string, err: string): void {
  for (const line of out.split('\n')) if (line.trim() !== '') log.info(`${name}: ${line}`);
  for (const line of err.split('\n')) if (line.trim() !== '') log.warning(`${name}: ${line}`);
}

/**
 * Run the scripts of one phase of a family in Barman's order (pre: standard then retry; post:
 * retry then standard). Throws HookAbortError when the pre retry script exits 63.
 */
export async function runHooks(
  srv: ServerConfig,
  family: HookFamily,
  phase: HookPhase,
  vars: Record<string, string>,
  opts: HookRunOptions = {},
): Promise<void> {
  const timing = opts.timing ?? DEFAULT_HOOK_TIMING;
  const sleep = timing.sleep ?? realSleep;
  const stdName = `${phase}_${family}_script` as const;
  const retryName = `${phase}_${family}_retry_script` as const;
  const standard = scriptOf(srv, stdName);
  const retry = scriptOf(srv, retryName);

  const runStandard = async () => {
    if (!standard) return;
    log.info(`${srv.name}: running ${stdName}: ${standard}`);
    const res = await runShell(standard, { env: hookEnvironment(srv, family, phase, false, vars) });
    logOutput(stdName, res.stdout, res.stderr);
    if (res.code !== 0) {
      const last = res.stderr.trim().split('\n').slice(-1)[0] ?? '';
      const msg = `${stdName} returned ${res.code}${last ? `: ${last}` : ''}`;
      log.warning(`${srv.name}: ${msg}`);
      opts.warning?.(msg);
    }
  };

  const runRetry = async () => {
    if (!retry) return;
    for (let attempt = 1; ; attempt++) {
      log.info(`${srv.name}: running ${retryName} (attempt ${attempt}): ${retry}`);
      const res = await runShell(retry, { env: hookEnvironment(srv, family, phase, true, vars) });
      logOutput(retryName, res.stdout, res.stderr);
      if (res.code === 0) return;
      if (res.code === ABORT_CONTINUE) {
        log.warning(`${srv.name}: ${retryName} asked to continue (exit code ${ABORT_CONTINUE})`);
        return;
      }
      if (res.code === ABORT_STOP) {
        if (phase === 'pre') {
          log.warning(`${srv.name}: ${retryName} asked to stop (exit code ${ABORT_STOP})`);
          throw new HookAbortError(family, retryName);
        }
        log.warning(`${srv.name}: ${retryName} exited ${ABORT_STOP} in the post phase: continuing`);
        return;
      }
      log.warning(`${srv.name}: ${retryName} failed with exit code ${res.code}, retrying`);
      await sleep(attempt % 5 === 0 ? timing.napMs : timing.attemptPauseMs);
    }
  };

  if (phase === 'pre') {
    await runStandard();
    await runRetry();
  } else {
    await runRetry();
    await runStandard();
  }
}

/** Recovery hooks (kept as a function of its own: the restore code and its tests use it). */
export function runRecoveryHooks(
  srv: ServerConfig,
  phase: HookPhase,
  e: RecoveryHookInfo,
  report: { warning?: (m: string) => void } = {},
  timing: HookTiming = DEFAULT_HOOK_TIMING,
): Promise<void> {
  return runHooks(srv, 'recovery', phase, recoveryHookVars(e), { warning: report.warning, timing });
}
