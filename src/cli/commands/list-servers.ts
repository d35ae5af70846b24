import type { Command } from 'commander';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .option('--minimal', 'print only the server names')
    .addHelpText(
      'after',
      `
Lists every server of the configuration, one "NAME - DESCRIPTION" line each (just NAME when it
has no description, or with --minimal). Inactive servers are marked "(inactive)", servers with
configuration errors "(WARNING: disabled)", passive nodes "(Passive)". PostgreSQL is not
contacted. With -f json: {"NAME": {"description": ...}}.

Exit status: 0 on success; 1 when the configuration cannot be read.

Examples:
  barman list-servers
  for s in $(barman list-servers --minimal); do barman check "$s"; done`,
    );
}

export async function run(ctx: CliContext, _args: string[], opts: { minimal?: boolean }): Promise<void> {
  const { out } = ctx;
  for (const srv of ctx.config.servers.values()) {
    let desc = srv.description ?? '';
    if (!srv.active) desc += ' (inactive)';
    if (srv.disabled) desc += ' (WARNING: disabled)';
    if (srv.passive) desc += ' (Passive)';
    desc = desc.trim();
    out.set([srv.name], { description: srv.description });
    out.line(opts.minimal || desc === '' ? srv.name : `${srv.name} - ${desc}`);
  }
}
