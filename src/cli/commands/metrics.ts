import type { Command } from 'commander';
import { collectMetrics, writeMetricsFile } from '../../reporting/metrics.js';
import type { CliContext } from '../context.js';

interface Opts {
  output?: string;
  checks?: boolean;
}

export function define(cmd: Command): void {
  cmd
    .argument('[server...]', "server names, or 'all' (default: every server)")
    .option('-o, --output <file>', 'write the metrics to FILE atomically (mode 0644) instead of stdout, for the textfile collector')
    .option('--no-checks', 'skip the checks of barman check (no barman_check_ok metrics; faster)')
    .addHelpText(
      'after',
      `
Prints the state of the servers in the Prometheus text exposition format, for node_exporter's
textfile collector. Per server (label server):

  barman_up                             1 when PostgreSQL answered, 0 otherwise
  barman_last_backup_age_seconds        seconds since the end of the newest DONE backup
  barman_last_backup_timestamp_seconds  end time of the newest DONE backup (epoch seconds)
  barman_last_backup_size_bytes         size of the newest DONE backup
  barman_backups{status}                backups in the catalog by status
  barman_wal_archive_lag_segments       complete WAL segments not archived yet
  barman_wal_archive_lag_seconds        seconds since the newest WAL was archived
  barman_wal_archive_segments           WAL segments in the archive
  barman_wal_archive_size_bytes         bytes of the WAL archive
  barman_archiver_failed_total          pg_stat_archiver.failed_count
  barman_archiver_errors{kind}          files in errors/ (duplicate, unknown, failure, not_relevant)
  barman_receive_wal_running            1 when receive-wal runs
  barman_check_ok{check}                each check of 'barman check' (1 OK, 0 FAILED)
  barman_drill_last_result              last recovery drill (barman drill): 1 passed, 0 failed
  barman_drill_last_success_timestamp_seconds, barman_drill_last_success_age_seconds
                                        end of the last successful drill, and its age
  barman_drill_last_success_rto_seconds RTO measured by the last successful drill

A server that does not answer still gets its catalog metrics (barman_up 0) within check_timeout.
With --output the file is replaced atomically: the collector never reads half a file.

Exit status: 0 on success; 1 when a server is unknown or disabled (the others are still
reported) or the output file cannot be written (then it is left as it was).

Example (cron, every minute, as the barman user):
  barman -q metrics -o /var/lib/node_exporter/textfile/barman.prom all`,
    );
}

export async function run(ctx: CliContext, names: string[], opts: Opts): Promise<void> {
  const { out } = ctx;
  const servers = ctx.servers(names, { allowInactive: true });
  const text = await collectMetrics(servers, {}, { checks: opts.checks !== false });
  if (opts.output) {
    await writeMetricsFile(opts.output, text);
    out.debug(`metrics of ${servers.length} server(s) written to ${opts.output}`);
    return;
  }
  if (out.isJson) out.set(['metrics'], text);
  else out.line(text.replace(/\n$/, ''));
}
