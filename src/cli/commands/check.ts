import type { Command } from 'commander';
import { runChecks, type CheckResult } from '../../checks/server-checks.js';
import type { ServerConfig } from '../../config/config.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .argument('<server...>', "server names, or 'all'")
    .option('--nagios', 'Nagios plugin output (one status line; exit 2 when critical)')
    .option('--check-timeout <seconds>', 'give up a check after this many seconds')
    .addHelpText(
      'after',
      `
Checks the connection to PostgreSQL (normal and streaming), its settings, the replication slot,
receive-wal, the catalog directories, the backups (failed ones, minimum redundancy, maximum age)
and the archiver errors, printing one line per check:  <name>: OK|FAILED (hint).
Exit status 1 when any check fails on an active server. With --nagios: one line
'BARMAN OK - …' or 'BARMAN CRITICAL - …' and exit status 0 or 2.`,
    );
}

const jsonKey = (name: string) => name.toLowerCase().replace(/[ -]/g, '_').replace(/\./g, '');

export async function run(ctx: CliContext, names: string[], opts: { nagios?: boolean }): Promise<void> {
  const { out } = ctx;
  const servers = ctx.servers(names, { allowInactive: true, allowDisabled: true });
  const results = new Map<ServerConfig, CheckResult[]>();
  for (const srv of servers) {
    const res = srv.disabled ? srv.errors.map((e) => ({ name: 'configuration', ok: false, hint: e })) : await runChecks(srv);
    results.set(srv, res);
  }
  if (opts.nagios) {
    nagios(ctx, results);
    return;
  }
  for (const [srv, res] of results) {
    const suffix = !srv.active ? ' (inactive)' : srv.disabled ? ' (WARNING: disabled)' : '';
    out.line(`Server ${srv.name}${suffix}:`);
    for (const r of res) {
      const status = r.ok ? out.ok('OK') : out.failed('FAILED');
      out.line(`\t${r.name}: ${status}${r.hint ? ` (${r.hint})` : ''}`);
      out.set([srv.name, jsonKey(r.name)], { status: r.ok ? 'OK' : 'FAILED', hint: r.hint });
      if (!r.ok && srv.active) out.exitCode = Math.max(out.exitCode, 1);
    }
  }
}

function nagios(ctx: CliContext, results: Map<ServerConfig, CheckResult[]>): void {
  const active = [...results].filter(([s]) => s.active);
  const inactive = [...results].filter(([s]) => !s.active).map(([s]) => s.name);
  const failing = active.filter(([, r]) => r.some((c) => !c.ok));
  const ignoring = inactive.length ? ` * IGNORING: ${inactive.join(', ')}` : '';
  if (results.size === 0) {
    process.stdout.write('BARMAN OK - No server configured\n');
    return;
  }
  if (failing.length === 0) {
    const what = active.length === 1 ? `for ${active[0]?.[0].name ?? ''}` : `for ${active.length} servers`;
    process.stdout.write(`BARMAN OK - Ready to serve the Espresso backup ${what}${ignoring}\n`);
    return;
  }
  const details = failing.map(([s, r]) => `${s.name} FAILED: ${r.filter((c) => !c.ok).map((c) => c.name).join(', ')}`).join(' * ');
  const head =
    failing.length === 1 && active.length === 1
      ? `BARMAN CRITICAL - server ${failing[0]?.[0].name ?? ''} has issues`
      : `BARMAN CRITICAL - ${failing.length} server out of ${active.length} have issues`;
  process.stdout.write(`${head} * ${details}\n`);
  for (const [s, r] of failing) {
    for (const c of r.filter((x) => !x.ok)) process.stdout.write(`${s.name}.${c.name}: FAILED${c.hint ? ` (${c.hint})` : ''}\n`);
  }
  ctx.out.exitCode = 2;
}
