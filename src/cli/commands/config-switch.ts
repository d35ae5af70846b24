import type { Command } from 'commander';
import { resetModel, switchModel } from '../../operations/config-switch.js';
import { BarmanError } from '../../util/errors.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .usage('[options] <server> [model]')
    .argument('<server>', 'server name')
    .argument('[model]', "name of a model section (model = true) whose 'cluster' is the server's")
    .option('--reset', 'stop applying the active model: the server uses its own configuration again')
    .addHelpText(
      'after',
      `
Applies a configuration model to a server: the options set in the model's section (a section
with 'model = true' and the same 'cluster' as the server, which defaults to the server name)
replace the server's own, for every command from now on, until another model is applied or
--reset is given. Typical use: one model per node of a cluster, switched after a failover.
Models may set any server option except the directories and the hook scripts.

The active model is recorded in <backup_directory>/.active-model.auto (as Barman does), and
shown by 'status', 'show-servers' and 'diagnose'. A running receive-wal is stopped so that cron
starts it again with the new settings.

Exit status: 0 on success (also when the model is already active); 1 for an unknown server or
model, a model of another cluster, or when neither MODEL nor --reset is given.

Examples:
  barman config-switch pg pg-node2
  barman config-switch pg --reset`,
    );
}

export async function run(ctx: CliContext, [name, model]: string[], opts: { reset?: boolean }): Promise<void> {
  if (model === undefined && !opts.reset) throw new BarmanError("Either a model name or '--reset' flag need to be given");
  const events = { info: (m: string) => ctx.out.info(m), warning: (m: string) => ctx.out.warning(m) };
  // A server disabled because its active model no longer exists must be resettable.
  const srv = ctx.server(name ?? '', { allowInactive: true, allowDisabled: opts.reset === true });
  if (opts.reset) {
    await resetModel(srv, events);
    ctx.out.set([srv.name], { active_model: null });
    return;
  }
  await switchModel(ctx.config, srv, model as string, events);
  ctx.out.set([srv.name], { active_model: model });
}
