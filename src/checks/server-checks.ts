/**
 * `barman check`: the checks that apply to a server, in Barman's order and with Barman's names
 * (scripts and Nagios parse them). Each check is independent: one failing never hides the
 * others. The whole run is bounded by check_timeout: when it is exceeded the results so far are
 * returned, followed by `check timeout: FAILED`, and whatever was still running is abandoned
 * (children killed, connections closed), so a dead network never hangs `check` or `backup`.
 */
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { loadCatalog, type BackupEntry } from '../catalog/catalog.js';
import { readTextIfExistsSync } from '../util/fsutil.js';
import { ensureServerDirs } from '../catalog/server-dirs.js';
import { errorMessage } from '../util/errors.js';
import { unsupportedCheckLine } from '../config/support.js';
import { subprocessEnv } from '../postgres/binaries.js';
import {
  archiverErrorsCheck,
  countQueue,
  fileArchiverLines,
  pgBasebackupChecks,
  prefetchClientVersions,
  streamingArchiverChecks,
  walQueueLine,
} from './archiver-checks.js';
import {
  backupCountLines,
  backupMaxAgeLine,
  backupMinSizeLine,
  compressionLine,
  encryptionCheck,
  lastBackup,
  walArchiveCheck,
  walValidityChecks,
} from './catalog-checks.js';
import { gatherPgFacts, postgresChecks, type PgFacts } from './postgres-checks.js';
import { checkSsh, runBoundedShell, sshCheckLines } from './ssh-checks.js';
import { drillCheck, DRILL_CHECK } from './drill-checks.js';
import { probeAgent } from './agent-checks.js';
import { passiveSyncChecks } from './sync-checks.js';
import { CheckCollector, type CheckOptions, type CheckResult } from './types.js';

export type { CheckOptions, CheckResult } from './types.js';

/** Checks that `backup` ignores when it runs them before starting (spec §4.4). */
export const NON_BLOCKING_FOR_BACKUP = new Set([
  'minimum redundancy requirements',
  'backup maximum age',
  'backup minimum size',
  'failed backups',
  'archiver errors',
  'empty incoming directory',
  'empty streaming directory',
  'incoming WALs directory',
  'streaming WALs directory',
  'wal maximum age',
  'PostgreSQL server is standby',
  // barman-ts: a failed or stale recovery drill is for monitoring, never a reason to stop backing up.
  DRILL_CHECK,
]);

/**
 * `systemid coherence`: the streaming and normal connections reach the same cluster, and that
 * cluster is the one whose identity was recorded at the first backup.
 */
export function systemIdLine(facts: Pick<PgFacts, 'systemId' | 'streaming'>, identityFile: string, stored: string | null | undefined): CheckResult {
  const name = 'systemid coherence';
  const fromStreaming = facts.streaming.systemId;
  const fromPg = facts.systemId;
  if (fromStreaming && fromPg && fromStreaming !== fromPg) {
    return { name, ok: false, hint: 'is the streaming DSN targeting the same server of the PostgreSQL connection string?' };
  }
  const live = fromStreaming ?? fromPg;
  if (!live) return { name, ok: true, hint: 'no system Id available' };
  if (stored === undefined) return { name, ok: true, hint: 'no system Id stored on disk' };
  if (stored !== live) return { name, ok: false, hint: `the system Id of the connected PostgreSQL server changed, stored in "${identityFile}"` };
  return { name, ok: true, hint: '' };
}

/** undefined: no file; null: a file that cannot be read or parsed (the check fails). */
function readStoredSystemId(file: string): string | null | undefined {
  try {
    const text = readTextIfExistsSync(file);
    if (text === null) return undefined;
    const parsed = JSON.parse(text) as { systemid?: unknown };
    return parsed.systemid == null ? null : String(parsed.systemid);
  } catch {
    return null;
  }
}

/**
 * `ssh`, `ssh output clean` and, for transfer_method = agent, `barman-ts agent` (shown only when
 * ssh itself works): both connections are made at once (each takes a second or more on a busy
 * host). Lines, in their order, not yet added.
 */
async function sshLines(col: CheckCollector, srv: ServerConfig, command: string, env: NodeJS.ProcessEnv, opts: CheckOptions): Promise<CheckResult[]> {
  const agent = srv.transfer_method === 'agent' ? probeAgent(col, command, env, opts.agents) : null;
  const o = await runBoundedShell(`${command} true`, col.remainingMs(), col, env);
  const lines: CheckResult[] = sshCheckLines(command, o);
  const agentLine = await agent;
  if (lines[0]?.ok === true && agentLine) lines.push({ name: 'barman-ts agent', ok: agentLine.ok, hint: agentLine.hint });
  return lines;
}

async function allChecks(col: CheckCollector, srv: ServerConfig, opts: CheckOptions): Promise<void> {
  const env = subprocessEnv(srv.path_prefix);
  // The probes of other hosts and programs (an ssh login, an agent's start, --version) take the
  // longest: started now, they run while the local and PostgreSQL checks do; their lines keep
  // their place.
  const sshProbe = !srv.passive && srv.backup_method === 'rsync' && srv.ssh_command ? sshLines(col, srv, srv.ssh_command, env, opts) : null;
  sshProbe?.catch(() => undefined);
  prefetchClientVersions(col, srv);
  let catalog: BackupEntry[] = [];
  try {
    catalog = await loadCatalog(srv);
  } catch (err) {
    // Never checked as an empty catalog (no backup, minimum redundancy...): say why.
    col.add('backup catalog', false, errorMessage(err));
  }

  await walArchiveCheck(col, srv, catalog);
  for (const [kind, dir, enabled] of [
    ['incoming', srv.incoming_wals_directory, srv.archiver],
    ['streaming', srv.streaming_wals_directory, srv.streaming_archiver],
  ] as const) {
    let count: number;
    try {
      count = await countQueue(dir);
    } catch (err) {
      col.add(`${kind} WALs directory`, false, errorMessage(err));
      continue;
    }
    const line = walQueueLine(kind, dir, enabled, count, srv.max_incoming_wals_queue);
    if (line) col.add(line.name, line.ok, line.hint);
  }

  let facts: PgFacts | null = null;
  if (!srv.passive) {
    facts = await gatherPgFacts(col, srv);
    await postgresChecks(col, srv, facts);
  }

  // A server disabled by its configuration gets no directories created (its paths may be the
  // very problem); every other check still runs, so that monitoring keeps its perfdata.
  if (!srv.disabled) {
    try {
      await ensureServerDirs(srv);
      col.add('directories', true);
    } catch (err) {
      col.add('directories', false, errorMessage(err));
    }
  }
  // An invalid retention_policy disables the server (its check is then `configuration`), so a
  // server that gets here has either no policy or one that is enforced.
  col.add('retention policy settings', true);

  const last = lastBackup(catalog);
  for (const l of [backupMaxAgeLine(srv.last_backup_maximum_age, last, col.now), backupMinSizeLine(srv.last_backup_minimum_size, last)]) {
    col.add(l.name, l.ok, l.hint, l.perfdata);
  }
  await encryptionCheck(col, srv);
  await walValidityChecks(col, srv, catalog);
  const comp = compressionLine(srv);
  col.add(comp.name, comp.ok, comp.hint);
  for (const l of backupCountLines(catalog, srv.minimum_redundancy)) col.add(l.name, l.ok, l.hint);
  await drillCheck(col, srv);

  // Executor checks.
  if (srv.passive) {
    if (srv.primary_ssh_command) await checkSsh(col, srv.primary_ssh_command, env, 'Barman primary node');
    await passiveSyncChecks(col, srv);
    col.add('systemid coherence', true, 'no system Id available');
  } else if (srv.backup_method === 'postgres') {
    await pgBasebackupChecks(col, srv, facts as PgFacts);
  } else if (sshProbe) {
    for (const l of await sshProbe) col.add(l.name, l.ok, l.hint);
  }

  // Barman's place for the configuration problems (listed under it by the command), and the
  // Barman options set here that barman-ts does not support (see config/support.ts).
  const unsupported = unsupportedCheckLine(srv);
  if (unsupported) col.add(unsupported.name, unsupported.ok, unsupported.hint);
  else if (srv.disabled) col.add('configuration', false);
  if (facts) {
    const identity = path.join(srv.backup_directory, 'identity.json');
    const l = systemIdLine(facts, identity, readStoredSystemId(identity));
    col.add(l.name, l.ok, l.hint);
    if (srv.archiver && facts.connected) for (const a of fileArchiverLines(facts)) col.add(a.name, a.ok, a.hint);
    if (srv.streaming_archiver) await streamingArchiverChecks(col, srv, facts);
  }
  await archiverErrorsCheck(col, srv);
}

/**
 * Run every check of a server. `opts.checkTimeout` (seconds; `--check-timeout`) overrides the
 * server's check_timeout; 0 means no limit. `opts.now` freezes the clock of the age checks.
 */
export async function runChecks(srv: ServerConfig, opts: CheckOptions = {}): Promise<CheckResult[]> {
  const timeout = opts.checkTimeout ?? srv.check_timeout;
  const col = new CheckCollector(timeout > 0 ? Date.now() + timeout * 1000 : Infinity, opts.now ?? new Date());
  const work = allChecks(col, srv, opts);
  if (!(timeout > 0)) {
    await work;
    return [...col.results];
  }
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<true>((resolve) => {
    timer = setTimeout(() => resolve(true), timeout * 1000);
  });
  // A check abandoned at the deadline may still fail later: nobody is listening any more.
  work.catch(() => undefined);
  const timedOut = await Promise.race([work.then(() => false as const), expired]);
  clearTimeout(timer);
  if (!timedOut) return [...col.results];
  col.close();
  return [...col.results, { name: 'check timeout', ok: false, hint: 'barman check command timed out' }];
}
