import type { Command } from 'commander';
import { serverStatusRows } from '../../reporting/server-status.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .argument('<server...>', "server names, or 'all'")
    .addHelpText(
      'after',
      `
Shows the status of each server: PostgreSQL version, cluster state, data size and directory,
current WAL and archive_command (when PostgreSQL answers), the last archived WAL, retention
policies, the available backups and the minimum redundancy requirements, one indented
"Description: value" line each. When PostgreSQL does not answer, "PostgreSQL version" says
"FAILED trying to get PostgreSQL version" and its other rows are left out. For a
verdict (OK/FAILED per check) use 'barman check'.

Exit status: 0 on success (also when PostgreSQL does not answer); 1 for an unknown or disabled
server (the other servers are still shown).

Examples:
  barman status pg
  barman -f json status all`,
    );
}

export async function run(ctx: CliContext, names: string[]): Promise<void> {
  const { out } = ctx;
  for (const srv of ctx.servers(names, { allowInactive: true })) {
    out.line(`Server ${srv.name}:`);
    for (const r of await serverStatusRows(srv)) {
      out.line(`\t${r.description}: ${r.message}`);
      out.set([srv.name, r.key], { description: r.description, message: r.message });
    }
  }
}
