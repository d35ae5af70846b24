import type { Command } from 'commander';
import { renderNagios, type NagiosServer } from '../../checks/nagios.js';
import { runChecks, type CheckResult } from '../../checks/server-checks.js';
import type { ServerConfig } from '../../config/config.js';
import { BarmanError } from '../../util/errors.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .argument('<server...>', "server names, or 'all'")
    .option('--nagios', 'Nagios plugin output (one status line; exit 2 when critical)')
    .option('--check-timeout <seconds>', 'give up the checks of a server after this many seconds (0 = no limit; default check_timeout)')
    .addHelpText(
      'after',
      `
Checks the connection to PostgreSQL (normal and streaming), its settings, the replication slot,
receive-wal, WAL archiving, the catalog directories, the backups (failed ones, minimum redundancy,
maximum age, minimum size), the WAL age, ssh, compression and the archiver errors, printing one
line per check:  <name>: OK|FAILED (hint). The whole run of a server is bounded by
--check-timeout / check_timeout (30 s by default): past it, the remaining checks are given up
and a "check timeout: FAILED" line is printed. Nothing is changed, except that missing catalog
directories are created. Run it after every configuration change and from monitoring.

With --nagios: one status line, 'BARMAN OK - Ready to serve the Espresso backup for SERVER' or
'BARMAN CRITICAL - server SERVER has issues * SERVER FAILED: check1, check2', then one
'SERVER.check: FAILED (hint)' line per failure, with perfdata (last backup and WAL sizes).

Exit status: 0 when every check passed (failures of inactive servers do not count); 1 when any
check failed on an active server or a server is unknown; 2 for invalid options. With --nagios:
0 OK, 2 CRITICAL (also for unknown servers and configuration errors).

Examples:
  barman check pg
  barman check all
  barman check --nagios all          (Nagios/Icinga plugin, as the barman user)`,
    );
}

/** JSON key of a check: lowercased, spaces and dashes to `_`, dots removed (as Barman). */
export const jsonKey = (name: string): string => name.toLowerCase().replace(/[ -]/g, '_').replace(/\./g, '');

function parseTimeout(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text.trim())) throw new BarmanError(`--check-timeout: expected a number of seconds, got '${text}'`, 2);
  return Number(text.trim());
}

interface Checked {
  srv: ServerConfig;
  results: CheckResult[];
}

async function checkAll(servers: readonly ServerConfig[], checkTimeout: number | undefined): Promise<Checked[]> {
  const out: Checked[] = [];
  // Barman checks servers in name order, whatever the order on the command line or in the files.
  for (const srv of [...servers].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    // Disabled servers are checked too (as Barman): their failing `configuration` check lists
    // the problems, and --nagios keeps their perfdata.
    const results = await runChecks(srv, { checkTimeout });
    out.push({ srv, results });
  }
  return out;
}

export async function run(ctx: CliContext, names: string[], opts: { nagios?: boolean; checkTimeout?: string }): Promise<void> {
  const checkTimeout = parseTimeout(opts.checkTimeout);
  if (opts.nagios) {
    await nagios(ctx, names, checkTimeout);
    return;
  }
  const { out } = ctx;
  const checked = await checkAll(ctx.servers(names, { allowInactive: true, allowDisabled: true }), checkTimeout);
  for (const { srv, results } of checked) {
    const suffix = !srv.active ? ' (inactive)' : srv.disabled ? ' (WARNING: disabled)' : '';
    out.line(`Server ${srv.name}${suffix}:`);
    for (const r of results) {
      const status = r.ok ? out.ok('OK') : out.failed('FAILED');
      out.line(`\t${r.name}: ${status}${r.hint ? ` (${r.hint})` : ''}`);
      out.set([srv.name, jsonKey(r.name)], { status: r.ok ? 'OK' : 'FAILED', hint: r.hint });
      if (!r.ok && srv.active) out.exitCode = Math.max(out.exitCode, 1);
      // The configuration problems themselves, one per line under the check (as Barman).
      if (r.name === 'configuration') for (const e of srv.errors) out.line(`\t\t${e}`);
    }
  }
}

/**
 * Nagios mode prints nothing but the plugin output: unknown servers and configuration errors
 * are not printed, they make the result `Global configuration errors` (CRITICAL).
 */
async function nagios(ctx: CliContext, names: string[], checkTimeout: number | undefined): Promise<void> {
  const cfg = ctx.config;
  let globalError = cfg.errors.length > 0;
  const all = names.length === 0 || names.includes('all');
  const picked: ServerConfig[] = [];
  if (!globalError) {
    for (const n of names) if (n !== 'all' && !cfg.servers.has(n)) globalError = true;
    if (all) picked.push(...cfg.servers.values());
    else for (const n of names) {
      const s = cfg.servers.get(n);
      if (s && !picked.includes(s)) picked.push(s);
    }
  }
  const checked = await checkAll(picked, checkTimeout);
  const servers: NagiosServer[] = checked.map(({ srv, results }) => ({ name: srv.name, active: srv.active, results }));
  const report = renderNagios(servers, globalError);
  process.stdout.write(report.text);
  ctx.out.exitCode = report.exitCode;
}
