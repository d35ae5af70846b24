/**
 * The checks `backup` runs, silently, before it starts (spec §4.4): any failing check that is not
 * known to be harmless for a new backup stops it before anything is written, as in Barman
 * (`Impossible to start the backup...`, exit 1). That includes the WAL-arrival checks: with no
 * WAL archived yet (`WAL archive`), no replication slot or no receive-wal running, Barman 3.4
 * refuses, and so do we (`barman switch-wal --archive SRV` archives the first WAL file).
 */
import type { ServerConfig } from '../config/config.js';
import { NON_BLOCKING_FOR_BACKUP, runChecks, type CheckOptions, type CheckResult } from '../checks/server-checks.js';
import { BarmanError } from '../util/errors.js';
import { logger } from '../util/log.js';

const log = logger('backup.precheck');

export interface PrecheckOutcome {
  /** Failures that stop the backup. */
  blocking: CheckResult[];
  /** Failures Barman ignores before a backup (only logged). */
  ignored: CheckResult[];
}

/** Sort failed checks by what they mean for a backup about to start (pure, unit-tested). */
export function classifyPrecheck(results: readonly CheckResult[]): PrecheckOutcome {
  const out: PrecheckOutcome = { blocking: [], ignored: [] };
  for (const r of results) {
    if (r.ok) continue;
    if (NON_BLOCKING_FOR_BACKUP.has(r.name)) out.ignored.push(r);
    else out.blocking.push(r);
  }
  return out;
}

/** `\t<name>: FAILED (<hint>)`, as `barman check` prints it. */
export function failedCheckLine(r: CheckResult): string {
  return `\t${r.name}: FAILED${r.hint ? ` (${r.hint})` : ''}`;
}

/** The checks failed: nothing was started or written. */
export class BackupPrecheckError extends BarmanError {
  constructor(
    readonly server: string,
    readonly failed: readonly CheckResult[],
  ) {
    super(`Impossible to start the backup. Check the log for more details, or run 'barman check ${server}'`);
  }
}

/** Run the checks of `srv`; throws BackupPrecheckError when one that matters failed. */
export async function precheckBackup(srv: ServerConfig, opts: CheckOptions = {}): Promise<PrecheckOutcome> {
  const t0 = Date.now();
  const outcome = classifyPrecheck(await runChecks(srv, opts));
  log.debug(`checks of ${srv.name} done in ${Date.now() - t0} ms`);
  for (const r of outcome.ignored) log.info(`Ignoring failed check '${r.name}' for server '${srv.name}'${r.hint ? `: ${r.hint}` : ''}`);
  for (const r of outcome.blocking) log.error(`Check '${r.name}' failed for server '${srv.name}'${r.hint ? `: ${r.hint}` : ''}`);
  if (outcome.blocking.length > 0) throw new BackupPrecheckError(srv.name, outcome.blocking);
  return outcome;
}
