import type { Command } from 'commander';
import { fetchPgFacts, serverSettings } from '../../reporting/server-status.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .argument('<server...>', "server names, or 'all'")
    .addHelpText(
      'after',
      `
Shows every configuration setting of each server, one indented "key: value" line each, sorted
by name: the values after inheritance from [barman] and defaults, together with what
PostgreSQL reports when it answers (version, data directory, archive settings, current WAL,
...). Use it to see which value a server really uses. Passwords are hidden. Inactive and
disabled servers are shown too, marked "(inactive)" or "(WARNING: disabled)"; PostgreSQL is
not asked for disabled and passive servers.

Exit status: 0 on success (also when PostgreSQL does not answer); 1 for an unknown server.

Examples:
  barman show-servers pg
  barman show-servers all | grep -E 'retention_policy|compression'`,
    );
}

export async function run(ctx: CliContext, names: string[]): Promise<void> {
  const { out } = ctx;
  for (const srv of ctx.servers(names, { allowInactive: true, allowDisabled: true })) {
    const suffix = !srv.active ? ' (inactive)' : srv.disabled ? ' (WARNING: disabled)' : '';
    const facts = srv.disabled || srv.passive ? {} : await fetchPgFacts(srv);
    out.line(`Server ${srv.name}${suffix}:`);
    const json: Record<string, unknown> = {};
    for (const e of serverSettings(srv, facts).entries) {
      out.line(`\t${e.key}: ${e.text}`);
      json[e.key] = e.json;
    }
    out.set([srv.name], json);
  }
}
