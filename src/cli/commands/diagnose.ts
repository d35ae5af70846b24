import type { Command } from 'commander';
import { buildDiagnosis, formatDiagnosis, redactDeep } from '../../reporting/diagnose.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .option('--show-config-source', 'show each configuration value as {"value": ..., "source": FILE | "default"}')
    .addHelpText(
      'after',
      `
Prints one JSON document (keys sorted, indented by 4) that describes the installation, to
attach to a support request:
  global.config          the [barman] options, with errors_list (configuration errors)
  global.system_info     OS release, kernel, Node.js, rsync, ssh and PostgreSQL client
                         versions, barman version, timestamp
  servers.NAME           config, msg_list (configuration messages), active_model, status
                         (as "barman status" shows it; PostgreSQL is asked), backups (every
                         backup.info), wals.last_archived_wal_per_timeline (from xlog.db)
  models.NAME            config
Passwords (password=... in connection strings and commands, postgresql://user:pw@ URIs)
are replaced by *REDACTED* everywhere in the document. Nothing is changed on disk.

The document is the same with -f json; -q prints nothing.

Exit status: 0 on success; 1 when the configuration cannot be read.

Examples:
  barman diagnose > diagnose.json
  barman diagnose --show-config-source`,
    );
}

export async function run(ctx: CliContext, _args: string[], opts: { showConfigSource?: boolean }): Promise<void> {
  const doc = await buildDiagnosis(ctx.config, { showConfigSource: opts.showConfigSource === true });
  if (ctx.out.isJson) {
    // The output redacts each string of its JSON object (and so keeps it valid); ours are
    // redacted already: a second pass changes nothing.
    for (const [k, v] of Object.entries(redactDeep(doc) as Record<string, unknown>)) ctx.out.set([k], v);
    return;
  }
  // Written as it is, not through ctx.out: the document is redacted value by value already, and
  // the output's line-level redaction (made for conninfo strings in messages) would also swallow
  // the quote and comma that follow a password inside JSON text.
  if (!ctx.out.quiet) process.stdout.write(`${formatDiagnosis(doc)}\n`);
}
