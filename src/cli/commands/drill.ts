import { promises as fsp } from 'node:fs';
import type { Command } from 'commander';
import { runDrill, type DrillOutcome } from '../../drill/drill.js';
import { drillSummaryLines, drillJson } from '../../reporting/drills.js';
import { BarmanError, errorMessage } from '../../util/errors.js';
import type { CliContext } from '../context.js';
import { intOption, targetOptions, type TargetCliOptions } from '../restore-options.js';

interface Opts extends TargetCliOptions {
  directory?: string;
  sql?: string;
  keep?: boolean;
  remoteSshCommand?: string;
  jobs?: string;
  timeout?: string;
  ifDue?: boolean;
}

export function define(cmd: Command): void {
  cmd
    .usage('[options] <server> [backup_id]')
    .argument('<server>', 'name of the server whose backup is drilled')
    .argument('[backup_id]', 'backup ID, name, or latest|last, oldest|first, latest-full|last-full (default: latest)')
    .option('--target-time <timestamp>', "replay up to this time, e.g. '2024-05-01 12:00:00+02:00' (default: all archived WAL)")
    .option('--target-xid <xid>', 'replay up to this transaction ID')
    .option('--target-lsn <lsn>', 'replay up to this WAL location, e.g. 0/3000060')
    .option('--target-name <name>', 'replay up to this restore point (pg_create_restore_point())')
    .option('--target-immediate', 'stop as soon as the backup is consistent')
    .option('--target-tli <tli>', "replay along this timeline: a number, 'current' or 'latest' (the default)")
    .option('--exclusive', 'stop just before the target (with --target-time, --target-xid or --target-lsn)')
    .option('--directory <dir>', 'sandbox data directory, empty or new (default: a new directory under drill_directory)')
    .option('--sql <file>', 'SQL checks to run in the promoted sandbox (default: drill_sql_file); see below')
    .option('--keep', 'leave the sandbox in place, PostgreSQL running, for inspection (you stop and remove it)')
    .option('--remote-ssh-command <command>', 'drill on another host through this SSH command, e.g. "ssh postgres@restore-test"')
    .option('-j, --jobs <n>', 'concurrent copies of the restore and pg_amcheck jobs')
    .option('--timeout <seconds>', 'give up when the target is not reached within this many seconds of replay (default: drill_timeout, 6 hours; 0 = no limit)')
    .option('--if-due', 'drill the newest DONE backup only if a drill is due (drill_interval); used by cron')
    .addHelpText(
      'after',
      `
barman-ts extension (Barman has no drills). Proves that a backup restores: the backup is
restored into a sandbox exactly as 'barman recover' does (with get-wal for the WAL), PostgreSQL
of the backup's major version (path_prefix first, then the usual install directories) starts
there on a free port listening only on a private Unix socket directory, with archiving off,
no primary_conninfo, no preloaded libraries, no logical replication workers and every
recovery target other than the drill's cleared; WAL is replayed through get-wal to the target
(default: the end of the archive), PostgreSQL is promoted, and the data is checked:

  * pg_amcheck over every database (heap and B-tree indexes; the amcheck extension is created
    in the sandbox where missing);
  * the SQL file, if any: statements separated by ';', each must return one row holding true,
    unless a comment line before it says '-- drill: rows', '-- drill: no rows' or
    '-- drill: any'; '-- drill: database NAME' switches database for what follows; psql
    backslash commands are refused;
  * pg_checksums --check after a clean shutdown, when the cluster has data checksums.

The point reached (LSN, timeline, last commit time, and PostgreSQL's reason for stopping) is
compared with the target: a drill that stops short of it fails ("did not reach the target").
Every phase is measured (restore, replay and WAL segments, time to consistency, promotion,
checks, stop and cleanup; the RTO is restore + replay + promotion) and the result is recorded
in the catalog (<backup_directory>/drills/, which Barman ignores), shown by 'list-drills',
'show-backup', 'check' (recovery drill) and 'metrics'. The sandbox is stopped and removed on
success, failure, Ctrl-C and SIGTERM, unless --keep. One drill runs at a time per host (the
others wait); none starts while a backup of the server runs. Free space is checked first.
With drill_interval set, 'barman cron' starts drills in the background when one is due.

Exit status: 0 when the drill passed (or --if-due found none due); 1 when it failed, was
interrupted, or could not start (unknown backup, backup not DONE, target before the backup's
end, directory not empty or a live PGDATA, no free space, PostgreSQL programs missing).

Examples:
  barman drill pg
  barman drill --target-name before_upgrade --sql /etc/barman/checks.sql pg 20240501T020000
  barman drill --remote-ssh-command "ssh postgres@restore-test" --directory /srv/drill pg latest
  barman -f json drill pg`,
    );
}

async function readSql(file: string): Promise<{ file: string; text: string }> {
  try {
    return { file, text: await fsp.readFile(file, 'utf8') };
  } catch (err) {
    throw new BarmanError(`Cannot read the SQL file '${file}': ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`);
  }
}

const SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

export async function run(ctx: CliContext, [serverName, backupId]: string[], opts: Opts): Promise<void> {
  const { out } = ctx;
  const srv = ctx.server(serverName ?? '');
  const jobs = intOption('--jobs', opts.jobs, 1);
  const timeoutSeconds = intOption('--timeout', opts.timeout, 0);
  const sqlFile = opts.sql ?? srv.drill_sql_file ?? null;
  const sql = sqlFile ? await readSql(sqlFile) : null;

  // Ctrl-C, SIGTERM, SIGHUP: the drill stops and removes its sandbox, records the failure,
  // and only then does the process end (a second signal changes nothing).
  const controller = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (!controller.signal.aborted) controller.abort(sig);
  };
  for (const s of SIGNALS) process.on(s, onSignal);
  let outcome: DrillOutcome;
  try {
    outcome = await runDrill(
      srv,
      {
        backupId: backupId ?? 'latest',
        ...targetOptions(opts),
        directory: opts.directory ?? null,
        sql,
        keep: opts.keep === true,
        remoteSshCommand: opts.remoteSshCommand ?? null,
        jobs,
        timeoutSeconds,
        ifDue: opts.ifDue === true,
        signal: controller.signal,
      },
      { info: (m) => out.info(m), warning: (m) => out.warning(m) },
    );
  } finally {
    for (const s of SIGNALS) process.off(s, onSignal);
  }

  if (!outcome.record) {
    out.info(`No drill of server ${srv.name} started: ${outcome.notDue ?? 'none is due'}`);
    out.set([srv.name], null);
    return;
  }
  const rec = outcome.record;
  out.set([srv.name], drillJson(rec));
  for (const l of drillSummaryLines(rec)) out.line(l);
  if (outcome.kept) {
    const k = outcome.kept;
    out.info(`Sandbox kept: data directory ${k.dataDir}${k.privateDir ? `, socket directory ${k.privateDir}, port ${k.port ?? '?'}` : ''}`);
    if (k.privateDir && k.bindir) {
      out.info(`Connect with: ${k.bindir}/psql -h ${k.privateDir} -p ${k.port ?? '?'} postgres`);
      out.info(`Stop and remove it with: ${k.bindir}/pg_ctl -D ${k.dataDir} -m fast stop; rm -rf ${k.dataDir} ${k.privateDir}`);
    }
  }
  if (rec.status !== 'passed') out.error(rec.error ?? 'the drill failed');
}
