/** barman-cloud-backup-keep SOURCE_URL SERVER_NAME BACKUP_ID (-r | -s | --target full|standalone) (spec §11.2). */
import { Option } from 'commander';
import { BarmanError, errorMessage } from '../../util/errors.js';
import { runIfEntryPoint } from '../../walclient/cli-common.js';
import { cloudCommand, commonOptions, cloudMain, withStorage, EXIT_CLI, EXIT_OPERATION } from './common.js';

function program() {
  return cloudCommand('barman-cloud-backup-keep', 'This script can be used to tag backups in cloud storage as archival backups such that they will not be deleted. Currently AWS S3 and Azure Blob Storage are supported.', 'source')
    .argument('<BACKUP_ID>', 'the backup ID of the backup to be kept')
    .option('-r, --release', 'If specified, the command will remove the keep annotation and the backup will be eligible for deletion')
    .option('-s, --status', 'Print the keep status of the backup')
    .addOption(new Option('--target <TARGET>', 'Specify the recovery target for this backup').choices(['full', 'standalone']));
}

export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<number> {
  const cmd = program();
  return cloudMain(argv, cmd, 'Barman cloud keep exception', async () => {
    const o = cmd.opts<{ release?: boolean; status?: boolean; target?: 'full' | 'standalone' }>();
    const given = [o.release, o.status, o.target !== undefined].filter(Boolean).length;
    if (given !== 1) throw new BarmanError('one of the arguments -r/--release -s/--status --target is required (and only one)', EXIT_CLI);
    const common = commonOptions(cmd);
    return withStorage(common, true, async (opened) => {
      const { CloudCatalog } = await import('../../cloud/catalog.js');
      const catalog = new CloudCatalog(opened.storage, opened.layout, (m) => common.log.warning(m));
      let entry;
      try {
        entry = await catalog.resolve(cmd.args[2] as string);
      } catch (err) {
        throw new BarmanError(errorMessage(err), EXIT_OPERATION);
      }
      if (o.release) {
        await catalog.releaseKeep(entry.id);
      } else if (o.status) {
        process.stdout.write(`Keep: ${(await catalog.keepTarget(entry.id, false)) ?? 'nokeep'}\n`);
      } else {
        if (entry.info.status !== 'DONE') {
          throw new BarmanError(`Cannot add keep to backup ${entry.id} because it has status ${entry.info.status}. Only backups with status DONE can be kept.`, EXIT_OPERATION);
        }
        await catalog.setKeep(entry.id, o.target as 'full' | 'standalone');
      }
      return 0;
    });
  });
}

runIfEntryPoint(import.meta.url, () => main());
