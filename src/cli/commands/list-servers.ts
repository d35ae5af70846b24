import type { Command } from 'commander';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .option('--minimal', 'print only the server names')
    .addHelpText('after', '\nLists every server of the configuration with its description.\nInactive servers are marked "(inactive)", servers with configuration errors "(WARNING: disabled)",\npassive nodes "(Passive)".');
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
