/** barman-cloud-backup-show SOURCE_URL SERVER_NAME BACKUP_ID [--format console|json] (spec §11.2). */
import { BarmanError, errorMessage } from '../../util/errors.js';
import { runIfEntryPoint } from '../../walclient/cli-common.js';
import { cloudCommand, commonOptions, cloudMain, withStorage, EXIT_CLI, EXIT_OPERATION } from './common.js';

function program() {
  return cloudCommand('barman-cloud-backup-show', 'This script can be used to show metadata for backups made with barman-cloud-backup command. Currently AWS S3 and Azure Blob Storage are supported.', 'source')
    .argument('<BACKUP_ID>', 'the backup ID (or a shortcut, or a backup name)')
    .option('--format <FORMAT>', 'Output format (console or json). Default console.', 'console');
}

export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<number> {
  const cmd = program();
  return cloudMain(argv, cmd, 'Barman cloud backup show exception', async () => {
    const { format } = cmd.opts<{ format: string }>();
    if (format !== 'console' && format !== 'json') throw new BarmanError(`invalid format '${format}' (console or json)`, EXIT_CLI);
    const common = commonOptions(cmd);
    const backupArg = cmd.args[2] as string;
    return withStorage(common, true, async (opened) => {
      const { CloudCatalog } = await import('../../cloud/catalog.js');
      const { backupJson, showLines, pyJsonDumps } = await import('../../cloud/report.js');
      const catalog = new CloudCatalog(opened.storage, opened.layout, (m) => common.log.warning(m));
      let entry;
      try {
        entry = await catalog.resolve(backupArg);
      } catch (err) {
        throw new BarmanError(`Backup ${backupArg} for server ${common.server} does not exist (${errorMessage(err)})`, EXIT_OPERATION);
      }
      if (format === 'console') process.stdout.write(`${showLines(entry.id, entry.info).join('\n')}\n`);
      else process.stdout.write(`${pyJsonDumps(new Map([[entry.info.server_name ?? 'None', backupJson(entry.id, entry.info)]]))}\n`);
      return 0;
    });
  });
}

runIfEntryPoint(import.meta.url, () => main());
