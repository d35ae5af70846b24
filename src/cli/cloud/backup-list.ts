/** barman-cloud-backup-list SOURCE_URL SERVER_NAME [--format console|json] (spec §11.2). */
import { BarmanError } from '../../util/errors.js';
import { runIfEntryPoint } from '../../walclient/cli-common.js';
import { cloudCommand, commonOptions, cloudMain, withStorage, EXIT_CLI } from './common.js';

function program() {
  return cloudCommand('barman-cloud-backup-list', 'This script can be used to list backups made with barman-cloud-backup command. Currently AWS S3 and Azure Blob Storage are supported.', 'source')
    .option('--format <FORMAT>', 'Output format (console or json). Default console.', 'console')
    .addHelpText('after', '\nThe console list shows DONE backups only; --format json lists every backup with a backup.info.\nExit codes: 0 ok, 1 bucket missing, 2 connection problem, 3 invalid option, 4 other errors.');
}

export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<number> {
  const cmd = program();
  return cloudMain(argv, cmd, 'Barman cloud backup list exception', async () => {
    const { format } = cmd.opts<{ format: string }>();
    if (format !== 'console' && format !== 'json') throw new BarmanError(`invalid format '${format}' (console or json)`, EXIT_CLI);
    const common = commonOptions(cmd);
    return withStorage(common, true, async (opened) => {
      const { CloudCatalog } = await import('../../cloud/catalog.js');
      const { backupJson, listLines, pyJsonDumps } = await import('../../cloud/report.js');
      const catalog = new CloudCatalog(opened.storage, opened.layout, (m) => common.log.warning(m));
      const entries = await catalog.backups();
      if (format === 'console') {
        const keeps = await catalog.keeps();
        process.stdout.write(`${listLines(entries, keeps).join('\n')}\n`);
      } else {
        process.stdout.write(`${pyJsonDumps({ backups_list: entries.map((e) => backupJson(e.id, e.info)) })}\n`);
      }
      return 0;
    });
  });
}

runIfEntryPoint(import.meta.url, () => main());
