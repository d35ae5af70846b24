/**
 * `barman drill`: prove that a backup restores. Restore it into a sandbox exactly as `recover`
 * does (src/recovery, with get-wal), start PostgreSQL of the backup's major version there on a
 * private Unix socket with nothing that can reach production or write to the archive, replay
 * WAL through get-wal up to the target (or the end of the archive), promote, check the data,
 * compare the point reached with the target, measure every phase, record the result in the
 * catalog (drills/, which Barman ignores), and stop and remove the sandbox whatever happens.
 *
 * The domain never prints: progress goes through `events`, the result is the DrillRecord.
 */
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { loadCatalog, resolveBackupId, type BackupEntry } from '../catalog/catalog.js';
import { acquireLock, isLockHeld, type HeldLock } from '../catalog/lock.js';
import { lockPath } from '../catalog/server-dirs.js';
import { subprocessEnv } from '../postgres/binaries.js';
import { parseRecoveryTarget } from '../recovery/options.js';
import { BarmanError } from '../util/errors.js';
import { logger } from '../util/log.js';
import { cleanupInterrupted } from './cleanup.js';
import { drillHost } from './host.js';
import { checkDrillable, drillId, hostKey, isInside, normalizeDir, type DrillEvents, type DrillOutcome, type DrillRequest } from './plan.js';
import { isDrillProcessAlive } from './records.js';
import { DrillInterrupted, DrillRun, interruptedMessage } from './run.js';
import { drillDueFor, drillLockPath } from './schedule.js';
import { parseSqlChecks, type SqlCheckStatement } from './sql-checks.js';

export type { DrillEvents, DrillOutcome, DrillRequest } from './plan.js';
export { DrillInterrupted } from './run.js';

const log = logger('drill');
const now = () => performance.now();

/** Run a drill. See the module comment. */
export async function runDrill(srv: ServerConfig, req: DrillRequest, events: DrillEvents = {}): Promise<DrillOutcome> {
  const info = (m: string) => {
    log.info(m);
    events.info?.(m);
  };
  const signal = req.signal;
  const interrupted = () => new DrillInterrupted(interruptedMessage(signal));

  // ---- validation: nothing is started or recorded before all of it passes ----
  const { target } = parseRecoveryTarget(req);
  if (req.targetAction) throw new BarmanError('--target-action is not a drill option: a drill always pauses at the target, then promotes');
  const statements: SqlCheckStatement[] | null = req.sql ? parseSqlChecks(req.sql.text, req.sql.file) : null;
  const sshCommand = req.remoteSshCommand && req.remoteSshCommand.trim() !== '' ? req.remoteSshCommand.trim() : null;
  const env = subprocessEnv(srv.path_prefix);
  const host = drillHost(sshCommand, env);

  let entries = await loadCatalog(srv);
  let entry: BackupEntry = resolveBackupId(srv, entries, req.backupId ?? 'latest');
  if (!req.ifDue) checkDrillable(entry.id, entry.info, target);

  const started = new Date();
  const id = drillId(started, process.pid);
  const dir = req.directory ? normalizeDir(req.directory, sshCommand !== null) : path.join(srv.drill_directory, `${srv.name}-${entry.id}-${id}`);
  if (!sshCommand && isInside(dir, path.resolve(srv.backup_directory))) {
    throw new BarmanError(`The drill directory '${dir}' is inside the backup directory of server ${srv.name}: a drill never writes into the catalog`);
  }
  if (!sshCommand && isInside(path.resolve(srv.backup_directory), dir)) {
    throw new BarmanError(`The drill directory '${dir}' contains the backup directory of server ${srv.name}`);
  }
  await host.checkSandboxDir(dir);
  if (await isLockHeld(lockPath(srv, 'backup'))) {
    if (req.ifDue) return { record: null, notDue: `a backup of server ${srv.name} is running` };
    throw new BarmanError(`A backup of server ${srv.name} is running: no drill meanwhile (try again when it has finished)`);
  }

  // ---- one drill per host at a time ----
  const waitStart = now();
  const lockFile = drillLockPath(srv, hostKey(sshCommand));
  let lock: HeldLock;
  {
    const pending = acquireLock(lockFile, 'drill', true);
    const aborted = new Promise<never>((_, reject) => {
      if (signal?.aborted) reject(interrupted());
      signal?.addEventListener('abort', () => reject(interrupted()), { once: true });
    });
    try {
      lock = await Promise.race([pending, aborted]);
    } catch (err) {
      pending.then((l) => l.release()).catch(() => undefined);
      throw err;
    }
  }
  const waitMs = now() - waitStart;
  try {
    if (waitMs > 1000) {
      // Another drill ran meanwhile: what it left (or a backup started since) is checked again.
      await host.checkSandboxDir(dir);
      if (await isLockHeld(lockPath(srv, 'backup'))) {
        if (req.ifDue) return { record: null, notDue: `a backup of server ${srv.name} is running` };
        throw new BarmanError(`A backup of server ${srv.name} is running: no drill meanwhile (try again when it has finished)`);
      }
    }
    await cleanupInterrupted(srv, host, info);
    let sandbox = dir;
    if (req.ifDue) {
      const due = await drillDueFor(srv, isDrillProcessAlive);
      if (!due.due || due.backupId === null) return { record: null, notDue: due.reason };
      entries = await loadCatalog(srv);
      entry = resolveBackupId(srv, entries, due.backupId);
      checkDrillable(entry.id, entry.info, target);
      if (!req.directory) sandbox = path.join(srv.drill_directory, `${srv.name}-${entry.id}-${id}`);
    }
    return await new DrillRun({ srv, req, events, host, entry, target, statements, dir: sandbox, id, waitMs, sshCommand }).run();
  } finally {
    lock.release();
  }
}

