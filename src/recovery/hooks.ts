/**
 * pre/post recovery hook scripts (spec §9): `pre_recovery_script`, `pre_recovery_retry_script`,
 * `post_recovery_retry_script`, `post_recovery_script`, run through the shell (they are
 * administrator-written commands) with the Barman environment variables.
 *
 * Kept local to recovery until a shared hook runner exists.
 */
import type { ServerConfig } from '../config/config.js';
import { BarmanError } from '../util/errors.js';
import { logger } from '../util/log.js';
import { runShell } from '../util/proc.js';
import { subprocessEnv } from '../postgres/binaries.js';
import { VERSION } from '../version.js';

const log = logger('recovery.hooks');

export const ABORT_CONTINUE = 62;
export const ABORT_STOP = 63;

export type HookPhase = 'pre' | 'post';

export interface RecoveryHookEnv {
  backupDir: string;
  backupInfoPath: string;
  backupId: string;
  previousId: string | null;
  nextId: string | null;
  status: string;
  backupError: string | null;
  destination: string;
  /** name → location of the restored tablespaces (relocations applied), or null. */
  tablespaces: Record<string, string> | null;
  remoteCommand: string | null;
  /** Non-empty restore options (targets...), serialised as sorted JSON. */
  recoverOptions: Record<string, unknown>;
  /** The error of the operation, for post hooks. */
  error?: string | null;
}

function sortedJson(obj: Record<string, unknown>): string {
  const keys = Object.keys(obj).sort();
  const out: Record<string, unknown> = {};
  for (const k of keys) out[k] = obj[k];
  return JSON.stringify(out);
}

export function hookEnvironment(srv: ServerConfig, hook: 'recovery_script' | 'recovery_retry_script', phase: HookPhase, e: RecoveryHookEnv): NodeJS.ProcessEnv {
  return subprocessEnv(srv.path_prefix, {
    BARMAN_VERSION: VERSION,
    BARMAN_SERVER: srv.name,
    BARMAN_CONFIGURATION: srv.global.configFile,
    BARMAN_HOOK: hook,
    BARMAN_PHASE: phase,
    BARMAN_RETRY: hook === 'recovery_retry_script' ? '1' : '0',
    BARMAN_ERROR: e.error ?? e.backupError ?? '',
    BARMAN_BACKUP_DIR: e.backupDir,
    BARMAN_BACKUP_INFO_PATH: e.backupInfoPath,
    BARMAN_BACKUP_ID: e.backupId,
    BARMAN_PREVIOUS_ID: e.previousId ?? '',
    BARMAN_NEXT_ID: e.nextId ?? '',
    BARMAN_STATUS: e.status,
    BARMAN_DESTINATION_DIRECTORY: e.destination,
    BARMAN_TABLESPACES: e.tablespaces && Object.keys(e.tablespaces).length ? sortedJson(e.tablespaces) : '',
    BARMAN_REMOTE_COMMAND: e.remoteCommand ?? '',
    BARMAN_RECOVER_OPTIONS: Object.keys(e.recoverOptions).length ? sortedJson(e.recoverOptions) : '',
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface HookTiming {
  /** Pause between attempts of a retry hook (3 s). */
  attemptPauseMs: number;
  /** Longer pause after every 5 failed attempts (60 s). */
  napMs: number;
}

const DEFAULT_TIMING: HookTiming = { attemptPauseMs: 3000, napMs: 60000 };

/**
 * Run the hooks of one phase in Barman's order (pre: standard then retry; post: retry then
 * standard). Standard hooks' exit codes are logged and ignored; a retry hook runs until it
 * exits 0, 62 or 63; 63 in the pre phase aborts the restore.
 */
export async function runRecoveryHooks(
  srv: ServerConfig,
  phase: HookPhase,
  e: RecoveryHookEnv,
  report: { warning?: (m: string) => void } = {},
  timing: HookTiming = DEFAULT_TIMING,
): Promise<void> {
  const standard = phase === 'pre' ? srv.pre_recovery_script : srv.post_recovery_script;
  const retry = phase === 'pre' ? srv.pre_recovery_retry_script : srv.post_recovery_retry_script;
  const runStandard = async () => {
    if (!standard) return;
    log.info(`${phase}_recovery_script: ${standard}`);
    const res = await runShell(standard, { env: hookEnvironment(srv, 'recovery_script', phase, e) });
    if (res.code !== 0) {
      const msg = `${phase}_recovery_script returned ${res.code}: ${res.stderr.trim().split('\n').slice(-1)[0] ?? ''}`;
      log.warning(msg);
      report.warning?.(msg);
    }
  };
  const runRetry = async () => {
    if (!retry) return;
    for (let attempt = 1; ; attempt++) {
      log.info(`${phase}_recovery_retry_script (attempt ${attempt}): ${retry}`);
      const res = await runShell(retry, { env: hookEnvironment(srv, 'recovery_retry_script', phase, e) });
      if (res.code === 0 || res.code === ABORT_CONTINUE) return;
      if (res.code === ABORT_STOP) {
        if (phase === 'pre') throw new BarmanError(`pre_recovery_retry_script asked to abort the restore (exit code ${ABORT_STOP})`);
        return;
      }
      log.warning(`${phase}_recovery_retry_script failed with exit code ${res.code}, retrying`);
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
