import type { Command } from 'commander';
import { lastBackup } from '../../checks/catalog-checks.js';
import { loadCatalog } from '../../catalog/catalog.js';
import { fetchRemoteStatus } from '../../reporting/remote-status.js';
import { serverSettings } from '../../reporting/server-status.js';
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
  const servers = ctx.servers(names, { allowInactive: true, allowDisabled: true });
  // Barman shows the servers sorted by name, whatever the order asked for.
  for (const srv of [...servers].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const suffix = !srv.active ? ' (inactive)' : srv.disabled ? ' (WARNING: disabled)' : '';
    const remote = srv.passive ? null : await fetchRemoteStatus(srv);
    const last = lastBackup(await loadCatalog(srv).catch(() => []));
    out.line(`Server ${srv.name}${suffix}:`);
    const json: Record<string, unknown> = {};
    for (const e of serverSettings(srv, remote, last?.info.end_time ?? null).entries) {
      out.line(`\t${e.key}: ${e.text}`);
      json[e.key] = e.json;
    }
    // Barman's JSON starts from the header's description, which a null value does not replace.
    if (json.description === null && suffix) json.description = suffix.trim();
    out.set([srv.name], json);
  }
}
