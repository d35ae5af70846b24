import type { Command } from 'commander';
import { configUpdate } from '../../operations/config-update.js';
import { BarmanError } from '../../util/errors.js';
import { stopReceiveWal } from '../../wal/receive-wal.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .usage('[options] <json_changes>')
    .argument('<json_changes>', 'a JSON list of documents: {"scope": "server"|"model", "server_name"|"model_name": NAME, OPTION: VALUE, ...}')
    .addHelpText(
      'after',
      `
Changes options of servers and models without editing the files by hand. Each change is
written into the file that already sets that option for that section (or for [barman], when
the server inherits it), else into <barman_home>/.barman.auto.conf, which is read after every
other file and so wins. A new model needs 'cluster' ('model = on' is added). Each option and
value is checked first: an unknown option, one the scope cannot set (a model cannot set
directories or hook scripts) or an invalid value is reported and left out.

The changes go through a queue (config_changes_queue, default <barman_home>/cfg_changes.queue):
a run that is interrupted, or cannot write a file, leaves the rest queued for the next run. One
config-update runs at a time. A running receive-wal of a changed server is stopped, so that
cron starts it again with the new settings.

Exit status: 0 when every queued change was written; 1 for invalid JSON or a file that cannot
be written (the change stays queued).

Example:
  barman config-update '[{"scope": "server", "server_name": "pg", "archiver": "on", "streaming_archiver": "off"}]'`,
    );
}

export async function run(ctx: CliContext, [json]: string[]): Promise<void> {
  let docs: unknown;
  try {
    docs = JSON.parse(json ?? '');
  } catch (err) {
    throw new BarmanError(`config-update: invalid JSON: ${(err as Error).message}`);
  }
  const cfg = ctx.config;
  const changed = await configUpdate(cfg, docs, { info: (m) => ctx.out.info(m), warning: (m) => ctx.out.warning(m) });
  ctx.out.set(['changed_sections'], changed);
  for (const name of changed) {
    const srv = cfg.servers.get(name);
    if (srv && (await stopReceiveWal(srv))) ctx.out.info(`Stopped receive-wal of server '${name}': cron starts it again with the new configuration`);
  }
}
