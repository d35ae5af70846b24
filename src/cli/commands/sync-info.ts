import type { Command } from 'commander';
import { buildSyncInfo } from '../../geo/sync-info.js';
import { fetchPrimaryInfo } from '../../geo/primary-info.js';
import { BarmanError } from '../../util/errors.js';
import { walNameKind } from '../../wal/names.js';
import type { CliContext } from '../context.js';

export function define(cmd: Command): void {
  cmd
    .argument('<server>', 'server name')
    .argument('[last_wal]', 'the last WAL file the passive node has read from the xlog.db of this server')
    .argument('[last_position]', 'the byte offset in xlog.db of the line of LAST_WAL (a positive integer)')
    .option('--primary', 'on a passive node: run sync-info on the primary through primary_ssh_command and save the answer as primary.info')
    .addHelpText(
      'after',
      `
Geo-redundancy (passive backup servers). On a primary backup server, prints the JSON document a
passive node needs to mirror this server, exactly as Barman prints it: the DONE and
WAITING_FOR_WALS backups (their backup.info fields), the WAL files of the xlog.db catalog after
LAST_WAL (or from the oldest backup's begin WAL), the byte offset and name of the last line of
xlog.db (the passive sends them back as LAST_WAL LAST_POSITION next time, so that only the new
lines are read), the server's configuration (passwords redacted) and the version.

With --primary, on a passive node (primary_ssh_command set): runs 'barman sync-info SRV
[LAST_WAL [LAST_POSITION]]' on the primary (with '-c CONFIG' when forward_config_path is on),
checks the answer and saves it atomically as <backup_directory>/primary.info, then prints it.
When the primary refuses LAST_WAL (its xlog.db no longer has it), the full list is asked for
instead, with a warning. 'barman cron' does this on every run.

Exit status: 0 success; 1 unknown server, LAST_WAL older than the first or newer than the last
WAL of xlog.db, primary unreachable or answering with a malformed document (primary.info is then
left as it was); 2 LAST_POSITION not a positive integer.

Examples:
  barman sync-info pg
  barman sync-info pg 000000010000000A000000FF 20480
  barman sync-info --primary pg          (on the passive node)`,
    );
}

/** LAST_POSITION as Barman's argparse type check_positive accepts it. */
function positiveInt(text: string): number {
  if (!/^\s*\+?\d+\s*$/.test(text) || Number(text) <= 0) {
    throw new BarmanError(`argument last_position: '${text}' is not a valid positive integer`, 2);
  }
  return Number(text);
}

export async function run(ctx: CliContext, args: string[], opts: { primary?: boolean }): Promise<void> {
  const [name = '', lastWal, lastPosText] = args;
  const lastPosition = lastPosText === undefined ? null : positiveInt(lastPosText);
  if (lastWal !== undefined && /[\0\n]/.test(lastWal)) throw new BarmanError(`invalid WAL name '${lastWal}'`);
  const srv = ctx.server(name);
  if (opts.primary) {
    if (lastWal !== undefined && walNameKind(lastWal) === null) throw new BarmanError(`'${lastWal}' is not a WAL file name`);
    const { text } = await fetchPrimaryInfo(srv, lastWal ?? null, lastPosition, { warning: (m) => ctx.out.warning(m) });
    ctx.out.info(text.replace(/\n+$/, ''));
    return;
  }
  const { text } = await buildSyncInfo(srv, lastWal ?? null, lastPosition);
  // As Barman: the document itself on stdout (no final newline), whatever the output format.
  process.stdout.write(text);
}
