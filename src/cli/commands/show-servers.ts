import type { Command } from 'commander';
import { fetchPgFacts, serverSettings } from '../../reporting/server-status.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .argument('<server...>', "server names, or 'all'")
    .addHelpText('after', '\nShows every configuration setting of each server (and what PostgreSQL reports, when it answers),\nsorted by name. Passwords are hidden.');
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
