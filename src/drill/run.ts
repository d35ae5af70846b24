/**
 * One drill, once it holds its host's drill lock: the phases in order (setup, restore, sandbox
 * start, replay, promotion, checks, stop, cleanup), each timed so that they add up to the
 * total, the result recorded when the drill starts and when it ends, and the sandbox removed
 * whatever happened (unless --keep). A signal stops the sandbox server at once (and pulls the
 * destination from under a running restore), then the drill ends as failed.
 */
import * as os from 'node:os';
import type { ServerConfig } from '../config/config.js';
import type { BackupEntry } from '../catalog/catalog.js';
import { hasStopTarget, type RecoveryTarget } from '../recovery/options.js';
import { restoreBackup } from '../recovery/recover.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { prettySize } from '../util/format.js';
import { logger } from '../util/log.js';
import { freePort } from '../util/net.js';
import { pause } from '../util/pause.js';
import { localNowPyDateTime } from '../util/pytime.js';
import { historyName } from '../wal/names.js';
import { amcheckCheck, checksumsCheck, sqlCheck } from './checks.js';
import { DRILL_PROGRAMS, FIND_BINDIR_SCRIPT, type DrillHost } from './host.js';
import { describeTarget, saveDrillRecord, type DrillCheck, type DrillPhases, type DrillRecord } from './records.js';
import { checksumsEnabled, hotStandbySettings } from './sandbox-config.js';
import { psqlError, SandboxServer, withCEnv, type Login } from './sandbox.js';
import type { SqlCheckStatement } from './sql-checks.js';
import { diagnoseRecoveryLog, endOfArchive, lastHistoryEntry, targetRecord, verifyTarget, walOfLastByte } from './target.js';
import { loginCandidates, neededBytes, type DrillEvents, type DrillOutcome, type DrillRequest } from './plan.js';

const log = logger('drill');

/** A drill interrupted by a signal. */
export class DrillInterrupted extends BarmanError {}

export function interruptedMessage(signal: AbortSignal | undefined): string {
  return `Drill interrupted${typeof signal?.reason === 'string' ? ` by ${signal.reason}` : ''}`;
}

const now = () => performance.now();
const secs = (ms: number) => Math.round(ms) / 1000;

const POLL_SQL =
  "SELECT (SELECT rolname FROM pg_roles WHERE oid = 10), pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE 'not paused' END";
const REACHED_SQL =
  "SELECT pg_last_wal_replay_lsn(), coalesce(to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00:00', ''), " +
  "coalesce(extract(epoch FROM pg_last_xact_replay_timestamp())::text, ''), pg_walfile_name(pg_current_wal_lsn())";

/** Wait that grows with the time already spent: reactive at first, cheap on long replays. */
export function pollDelay(elapsedMs: number): number {
  if (elapsedMs < 2000) return 50;
  if (elapsedMs < 10_000) return 150;
  if (elapsedMs < 60_000) return 400;
  return 1000;
}

type PhaseKey = 'setup_seconds' | 'restore_seconds' | 'prepare_seconds' | 'replay_seconds' | 'promote_seconds' | 'checks_seconds' | 'stop_seconds' | 'cleanup_seconds';

/** Consecutive phases on one clock: each ends where the next begins, so they add up. */
class PhaseClock {
  readonly t0 = now();
  mark = this.t0;
  private phase: PhaseKey = 'setup_seconds';

  constructor(private readonly phases: DrillPhases) {}

  /** Close the current phase and open `next` (null: the last one). */
  lap(next: PhaseKey | null): void {
    const t = now();
    this.phases[this.phase] = secs(t - this.mark);
    this.mark = t;
    if (next) this.phase = next;
  }

  /** Totals once the last phase is closed. */
  finish(): void {
    const p = this.phases;
    const z = (v: number | null) => v ?? 0;
    const r3 = (v: number) => Math.round(v * 1000) / 1000;
    p.total_seconds = secs(this.mark - this.t0);
    if (p.restore_seconds !== null && p.replay_seconds !== null && p.promote_seconds !== null) {
      p.rto_seconds = r3(p.restore_seconds + z(p.prepare_seconds) + p.replay_seconds + p.promote_seconds);
      p.overhead_seconds = r3(p.setup_seconds + z(p.prepare_seconds) + p.promote_seconds + z(p.stop_seconds) + z(p.cleanup_seconds));
    }
  }
}

export interface DrillRunInput {
  srv: ServerConfig;
  req: DrillRequest;
  events: DrillEvents;
  host: DrillHost;
  entry: BackupEntry;
  target: RecoveryTarget;
  statements: SqlCheckStatement[] | null;
  dir: string;
  id: string;
  waitMs: number;
  sshCommand: string | null;
}

function newRecord(d: DrillRunInput, directoryCreated: boolean): DrillRecord {
  const started = localNowPyDateTime();
  return {
    format: 1,
    id: d.id,
    server: d.srv.name,
    backup_id: d.entry.id,
    status: 'running',
    error: null,
    started_at: started.format(),
    started_at_timestamp: Number(started.epochMicros) / 1e6,
    ended_at: null,
    ended_at_timestamp: null,
    pid: process.pid,
    host: d.host.label,
    directory: d.dir,
    directory_created: directoryCreated,
    private_directory: null,
    postmaster_pid: null,
    port: null,
    kept: false,
    postgres: { version: d.entry.info.version as number, bindir: null },
    target: targetRecord(d.target),
    reached: null,
    wal_segments: null,
    bytes_restored: null,
    phases: {
      wait_seconds: secs(d.waitMs),
      setup_seconds: 0,
      restore_seconds: null,
      prepare_seconds: null,
      replay_seconds: null,
      consistency_seconds: null,
      promote_seconds: null,
      checks_seconds: null,
      stop_seconds: null,
      cleanup_seconds: null,
      total_seconds: 0,
      rto_seconds: null,
      overhead_seconds: null,
    },
    checks: [],
    log_tail: [],
  };
}

export class DrillRun {
  private rec!: DrillRecord;
  private clock!: PhaseClock;
  private sb: SandboxServer | null = null;
  private privateDir: string | null = null;
  private restoring = false;
  private withChecksums = false;
  /** What a signal set off at once (stopping the server, emptying the destination). */
  private abortWork: Promise<void> = Promise.resolve();

  constructor(private readonly d: DrillRunInput) {}

  private get signal(): AbortSignal | undefined {
    return this.d.req.signal;
  }

  private info(m: string): void {
    log.info(m);
    this.d.events.info?.(m);
  }

  private checkAbort(): void {
    if (this.signal?.aborted) throw new DrillInterrupted(interruptedMessage(this.signal));
  }

  private readonly onAbort = () => {
    this.abortWork = (async () => {
      if (this.sb?.pid) await this.sb.stop('immediate').catch(() => undefined);
      if (this.restoring) await this.d.host.remove(this.d.dir, 'contents').catch(() => undefined);
    })();
  };

  async run(): Promise<DrillOutcome> {
    this.rec = newRecord(this.d, !(await this.d.host.exists(this.d.dir)));
    this.clock = new PhaseClock(this.rec.phases);
    await saveDrillRecord(this.d.srv, this.rec);
    this.signal?.addEventListener('abort', this.onAbort, { once: true });
    let failure: string | null = null;
    try {
      failure = await this.phases();
    } catch (err) {
      await this.abortWork;
      failure = this.signal?.aborted ? interruptedMessage(this.signal) : errorMessage(err);
      if (!(err instanceof BarmanError)) log.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
      if (this.sb) this.rec.log_tail = (await this.sb.readLog()).split('\n').filter((l) => l.trim() !== '').slice(-20);
      // The failed phase keeps the time it took; stopping and removing come next.
      this.clock.lap('stop_seconds');
    } finally {
      this.signal?.removeEventListener('abort', this.onAbort);
    }
    let kept: DrillOutcome['kept'];
    if (this.d.req.keep) {
      this.rec.kept = true;
      kept = { dataDir: this.d.dir, privateDir: this.privateDir, port: this.rec.port, bindir: this.rec.postgres.bindir };
    } else {
      const problem = await this.teardown();
      if (problem) failure = failure ? `${failure} (${problem})` : `Drill passed its checks, but ${problem}`;
    }
    this.clock.finish();
    const ended = localNowPyDateTime();
    this.rec.status = failure === null ? 'passed' : 'failed';
    this.rec.error = failure;
    this.rec.ended_at = ended.format();
    this.rec.ended_at_timestamp = Number(ended.epochMicros) / 1e6;
    await saveDrillRecord(this.d.srv, this.rec);
    return { record: this.rec, ...(kept ? { kept } : {}) };
  }

  /** Every phase up to the checks; the failure of a check, or null. Throws on any other failure. */
  private async phases(): Promise<string | null> {
    const bindir = await this.setup();
    this.clock.lap('restore_seconds');
    const restoreCommand = await this.restore();
    this.clock.lap('prepare_seconds');
    await this.startSandbox(bindir, restoreCommand);
    this.clock.lap('replay_seconds');
    const paused = await this.replay();
    this.clock.lap('promote_seconds');
    await this.promote(paused);
    // The target verification is the first of the checks.
    this.clock.lap('checks_seconds');
    await this.verify();
    const checks = await this.checks();
    this.clock.lap('stop_seconds');
    const bad = checks.filter((c) => c.status === 'failed');
    return bad.length > 0 ? `Check failed: ${bad.map((c) => `${c.name}: ${c.detail}`).join('; ')}` : null;
  }

  /** Free space, the PostgreSQL programs, the end of the archive; returns the bin directory. */
  private async setup(): Promise<string> {
    const { host, entry, srv, target } = this.d;
    const where = host.kind === 'remote' ? ' on the remote host' : '';
    const need = neededBytes(entry.info);
    const free = await host.freeBytes(this.d.dir);
    if (free.bytes < need.needed) {
      throw new BarmanError(
        `Not enough free space for the drill in ${free.dir}${where}: ${prettySize(free.bytes)} available, ` +
          `${prettySize(need.needed)} needed (backup ${entry.id} restores ${need.estimated ? 'to an estimated ' : 'to '}${prettySize(need.data)}, plus room for WAL)`,
      );
    }
    const major = Math.floor((entry.info.version as number) / 10000);
    const found = await host.script(FIND_BINDIR_SCRIPT, [String(major), ...(srv.path_prefix ?? '').split(':').filter((x) => x !== '')], { timeoutMs: 120_000 });
    const bindir = found.stdout.trim().split('\n').at(-1) ?? '';
    if (found.code !== 0 || bindir === '' || bindir.startsWith('NOTFOUND')) {
      const seen = bindir.startsWith('NOTFOUND') ? bindir.slice('NOTFOUND'.length).trim() : '';
      throw new BarmanError(`PostgreSQL ${major} server programs (${DRILL_PROGRAMS.join(', ')}) not found${where}: install them or set path_prefix${seen ? ` (found: ${seen})` : ''}`);
    }
    this.rec.postgres.bindir = bindir;
    if (!hasStopTarget(target)) this.rec.target = targetRecord(target, await endOfArchive(srv, entry.info, target));
    this.checkAbort();
    return bindir;
  }

  /** The restore, as `recover` does it with get-wal; returns the restore_command it wrote. */
  private async restore(): Promise<string> {
    const { srv, req, entry, dir } = this.d;
    this.info(`Restoring backup ${entry.id} of server ${srv.name} into ${dir}${this.d.sshCommand ? ` on ${this.d.sshCommand}` : ''}`);
    this.restoring = true;
    try {
      const restored = await restoreBackup(srv, {
        backupId: entry.id,
        destination: dir,
        targetTime: req.targetTime,
        targetXid: req.targetXid,
        targetLsn: req.targetLsn,
        targetName: req.targetName,
        targetImmediate: req.targetImmediate,
        targetTli: req.targetTli,
        exclusive: req.exclusive,
        // Tablespaces go inside the sandbox, never to their production paths.
        tablespaces: (entry.info.tablespaces ?? []).map((t) => `${t.name}:${dir}/barman_drill_tablespaces/${t.oid}`),
        remoteSshCommand: this.d.sshCommand,
        getWal: true,
        deltaRestore: false,
        jobs: req.jobs ?? null,
        stagingPath: srv.local_staging_path ?? null,
        runHooks: false,
        ...(req.barmanCommand ? { barmanCommand: req.barmanCommand } : {}),
      });
      this.rec.bytes_restored = restored.copy.bytes;
      if (!restored.restoreCommand) throw new BarmanError('the restore wrote no restore_command');
      return restored.restoreCommand;
    } finally {
      this.restoring = false;
      await this.abortWork;
      this.checkAbort();
    }
  }

  /** Private directory, control file settings, port, and PostgreSQL started. */
  private async startSandbox(bindir: string, restoreCommand: string): Promise<void> {
    const { host, dir, entry, target, srv } = this.d;
    await host.run(['chmod', '700', dir]);
    this.privateDir = await host.makePrivateDir();
    this.rec.private_directory = this.privateDir;
    const controldata = await host.run(withCEnv([`${bindir}/pg_controldata`, '-D', dir]), { timeoutMs: 120_000 });
    if (controldata.code !== 0) throw new BarmanError(`pg_controldata cannot read the restored data directory: ${controldata.stderr.trim().split('\n').at(-1) ?? ''}`);
    this.withChecksums = checksumsEnabled(controldata.stdout);
    // With a private socket directory any port is free; on this host, one nobody uses anyway.
    const port = host.kind === 'local' ? await freePort() : 20000 + Math.floor(Math.random() * 40000);
    this.rec.port = port;
    const version = entry.info.version as number;
    this.sb = new SandboxServer(
      host,
      { version, bindir, dataDir: dir, privateDir: this.privateDir, port, restoreCommand, target, controlSettings: hotStandbySettings(controldata.stdout) },
      loginCandidates(srv),
    );
    this.info(`Starting PostgreSQL ${Math.floor(version / 10000)} in the sandbox (socket ${this.privateDir}, port ${port}) and replaying WAL through get-wal`);
    this.checkAbort();
    this.rec.postmaster_pid = await this.sb.start();
    await saveDrillRecord(srv, this.rec);
  }

  private server(): SandboxServer {
    if (!this.sb) throw new BarmanError('the sandbox PostgreSQL is not started');
    return this.sb;
  }

  /**
   * Wait for the target (paused there: true) or the end of the archive (promoted by
   * PostgreSQL itself: false), noting when the server became consistent.
   */
  private async replay(): Promise<boolean> {
    const sb = this.server();
    const { req, srv, target } = this.d;
    const pgStart = this.clock.mark;
    const limit = (req.timeoutSeconds ?? srv.drill_timeout ?? 0) * 1000;
    const desc = describeTarget(this.rec.target);
    let consistentAt: number | null = null;
    let lastQuery = -Infinity;
    let failures = 0;
    for (;;) {
      this.checkAbort();
      const st = await sb.state();
      const t = now();
      if (!st.alive) {
        await this.abortWork;
        this.checkAbort();
        throw new BarmanError(diagnoseRecoveryLog(await sb.readLog(), desc));
      }
      const up = st.pm.startsWith('standby') || st.pm.startsWith('ready');
      // psql only when there is something to learn: the first connection (consistency), the
      // end of recovery, the pause at the target; and once a second, for any other pause.
      if (up && (consistentAt === null || st.pm.startsWith('ready') || st.paused || t - lastQuery >= 1000)) {
        lastQuery = t;
        const q = await sb.tryQuery(POLL_SQL);
        if (q.ok) {
          const [su, inRecovery, pauseState] = q.output.split('|');
          if (consistentAt === null) {
            consistentAt = t;
            this.rec.phases.consistency_seconds = secs(t - pgStart);
            // From now on as the bootstrap superuser: the checks need one.
            if (su && sb.login) sb.login = { user: su, db: sb.login.db } satisfies Login;
            this.info(`Consistent after ${secs(t - pgStart)} s`);
          }
          if (inRecovery === 'f') return false;
          if (hasStopTarget(target) && pauseState === 'paused') return true;
          failures = 0;
        } else if (sb.login !== null && ++failures >= 20) {
          throw new BarmanError(`Cannot query the sandbox PostgreSQL: ${psqlError(q.output)}`);
        }
      }
      if (limit > 0 && t - pgStart > limit) {
        throw new BarmanError(`Recovery did not reach the target (${desc}) within ${limit / 1000} s${consistentAt === null ? ' (not even a consistent state)' : ''}`);
      }
      await pause(pollDelay(t - pgStart), this.signal);
    }
  }

  private async promote(paused: boolean): Promise<void> {
    if (!paused) return;
    this.info('Target reached: promoting');
    const ok = await this.server().query('SELECT pg_promote(true, 600)');
    if (ok !== 't') throw new BarmanError('the sandbox PostgreSQL did not finish its promotion within 600 s');
  }

  /** Where recovery stopped (LSN, timeline, last commit, PostgreSQL's reason) against the target. */
  private async verify(): Promise<void> {
    const sb = this.server();
    const [lsn = '', commitText = '', commitEpoch = '', walfile = ''] = (await sb.query(REACHED_SQL)).split('|');
    const newTli = parseInt(walfile.slice(0, 8), 16);
    const hist = newTli > 1 ? lastHistoryEntry(await sb.query(`SELECT pg_read_file('pg_wal/${historyName(newTli)}')`).catch(() => '')) : null;
    const reachedTli = hist?.parentTli ?? newTli;
    this.rec.reached = {
      lsn,
      timeline: reachedTli,
      new_timeline: hist ? newTli : null,
      last_commit_time: commitText === '' ? null : commitText,
      reason: hist?.reason ?? null,
      wal: walOfLastByte(lsn, reachedTli, this.d.entry.info.xlog_segment_size),
    };
    const pgLog = await sb.readLog();
    this.rec.wal_segments = new Set([...pgLog.matchAll(/restored log file "([0-9A-F]{24})" from archive/g)].map((m) => m[1])).size;
    const t = this.d.target.time;
    const verdict = verifyTarget(this.rec.target, this.rec.reached, {
      lastCommitEpoch: commitEpoch === '' ? null : Number(commitEpoch),
      targetEpoch: t ? Number(t.epochMicros) / 1e6 : null,
    });
    if (!verdict.ok) throw new BarmanError(verdict.message);
    this.info(verdict.message);
    this.checkAbort();
  }

  /** pg_amcheck, the SQL file, pg_checksums after a clean stop (when the cluster has checksums). */
  private async checks(): Promise<DrillCheck[]> {
    const sb = this.server();
    const { req } = this.d;
    const checks: DrillCheck[] = [];
    this.info('Checking the data: pg_amcheck over every database');
    checks.push(await amcheckCheck(sb, req.jobs ?? Math.max(1, Math.min(4, os.availableParallelism()))));
    this.checkAbort();
    if (this.d.statements && req.sql) {
      this.info(`Running the checks of ${req.sql.file}`);
      checks.push(await sqlCheck(sb, this.d.statements, req.sql.file));
      this.checkAbort();
    }
    if (this.withChecksums && !req.keep) {
      this.info('Stopping the sandbox cleanly for pg_checksums');
      await sb.stop('fast');
      sb.pid = null;
      checks.push(await checksumsCheck(sb));
    } else {
      checks.push({ name: 'checksums', status: 'skipped', detail: this.withChecksums ? 'the sandbox is kept running (--keep)' : 'the cluster has no data checksums', seconds: 0 });
    }
    this.rec.checks = checks;
    this.checkAbort();
    return checks;
  }

  /** Stop the server and remove the sandbox; what went wrong, or null. */
  private async teardown(): Promise<string | null> {
    try {
      if (this.sb?.pid) await this.sb.stop('immediate');
      this.clock.lap('cleanup_seconds');
      await this.d.host.remove(this.d.dir, this.rec.directory_created ? 'all' : 'contents');
      if (this.privateDir) await this.d.host.remove(this.privateDir, 'all');
      this.clock.lap(null);
      return null;
    } catch (err) {
      this.clock.lap(null);
      return `the sandbox could not be removed: ${errorMessage(err)}`;
    }
  }
}
