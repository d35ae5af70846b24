/**
 * barman-cloud-backup-delete SOURCE_URL SERVER_NAME (-b BACKUP_ID | -r POLICY)
 * [-m/--minimum-redundancy N] [--dry-run] [--batch-size N] (spec §11.2).
 */
import { BarmanError, errorMessage } from '../../util/errors.js';
import { runIfEntryPoint } from '../../walclient/cli-common.js';
import { cloudCommand, commonOptions, cloudMain, withStorage, EXIT_CLI, EXIT_OPERATION } from './common.js';

function program() {
  return cloudCommand('barman-cloud-backup-delete', 'This script can be used to delete backups made with barman-cloud-backup command. Currently AWS S3 and Azure Blob Storage are supported.', 'source')
    .option('-b, --backup-id <BACKUP_ID>', 'Backup ID of the backup to be deleted (or a shortcut, or a backup name)')
    .option('-r, --retention-policy <POLICY>', 'If specified, delete all backups eligible for deletion according to the supplied retention policy. Syntax: REDUNDANCY value | RECOVERY WINDOW OF value {DAYS | WEEKS | MONTHS}')
    .option('-m, --minimum-redundancy <N>', 'The minimum number of backups that should always be available (default: 0)', '0')
    .option('--dry-run', 'Find the objects which need to be deleted but do not delete them')
    .option('--batch-size <N>', 'The maximum number of objects to be deleted in a single request to the cloud provider (default: 1000 for aws-s3, 256 for azure-blob-storage)')
    .option('--check-object-lock', 'aws-s3: not supported yet (no object-locked backups are deleted by barman-ts)')
    .addHelpText('after', '\nKept backups (barman-cloud-backup-keep) are never deleted. Exit codes: 0 ok, 1 operation error\n(unknown or kept backup, unreadable catalog), 2 connection problem, 3 invalid option, 4 other errors.');
}

interface Raw {
  backupId?: string;
  retentionPolicy?: string;
  minimumRedundancy: string;
  dryRun?: boolean;
  batchSize?: string;
  checkObjectLock?: boolean;
}

export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<number> {
  const cmd = program();
  return cloudMain(argv, cmd, 'Barman cloud backup delete exception', async () => {
    const o = cmd.opts<Raw>();
    if ((o.backupId === undefined) === (o.retentionPolicy === undefined)) throw new BarmanError('one of the arguments -b/--backup-id -r/--retention-policy is required (and only one)', EXIT_CLI);
    if (o.checkObjectLock) throw new BarmanError('--check-object-lock is not supported yet', EXIT_CLI);
    if (!/^\d+$/.test(o.minimumRedundancy)) throw new BarmanError(`argument -m/--minimum-redundancy: invalid value '${o.minimumRedundancy}'`, EXIT_CLI);
    const minimum = Number(o.minimumRedundancy);
    const batchSize = o.batchSize === undefined ? null : /^-?\d+$/.test(o.batchSize) ? Math.max(1, Number(o.batchSize)) : NaN;
    if (Number.isNaN(batchSize)) throw new BarmanError(`argument --batch-size: invalid int value: '${o.batchSize}'`, EXIT_CLI);
    let policy = null;
    if (o.retentionPolicy !== undefined) {
      const { parseRetentionPolicy } = await import('../../config/values.js');
      try {
        policy = parseRetentionPolicy(o.retentionPolicy);
      } catch (err) {
        throw new BarmanError(`Could not create retention policy ${o.retentionPolicy}: ${errorMessage(err)}`, EXIT_CLI);
      }
    }
    const common = commonOptions(cmd);
    return withStorage(common, true, async (opened) => {
      const { CloudCatalog } = await import('../../cloud/catalog.js');
      const { deleteCloudBackup, obsoleteBackups } = await import('../../cloud/delete.js');
      const catalog = new CloudCatalog(opened.storage, opened.layout, (m) => common.log.warning(m));
      const entries = await catalog.backups();
      if (catalog.unreadable.length > 0) {
        throw new BarmanError(`Cannot read the following backups: ${catalog.unreadable.join(', ')}. Unsafe to proceed with deletion due to failure reading backup catalog`, EXIT_OPERATION);
      }
      const ev = {
        info: (m: string) => common.log.info(m),
        dryRun: (keys: string[]) => process.stdout.write(`Skipping deletion of objects [${keys.map((k) => `'${k}'`).join(', ')}] due to --dry-run option\n`),
      };
      const opts = { dryRun: o.dryRun === true, batchSize };
      if (o.backupId !== undefined) {
        let entry;
        try {
          entry = await catalog.resolve(o.backupId);
        } catch (err) {
          throw new BarmanError(errorMessage(err), EXIT_OPERATION);
        }
        if ((await catalog.keepTarget(entry.id, false)) !== null) {
          throw new BarmanError(
            `Skipping delete of backup ${entry.id} for server ${common.server} as it has a current keep request. If you really want to delete this backup please remove the keep and try again.`,
            EXIT_OPERATION,
          );
        }
        const doneFull = entries.filter((e) => e.info.status === 'DONE').length;
        if (minimum > 0 && entry.info.status === 'DONE' && doneFull <= minimum) {
          throw new BarmanError(`Skipping delete of backup ${entry.id} for server ${common.server} due to minimum redundancy requirements (minimum redundancy = ${minimum}, current redundancy = ${doneFull})`, EXIT_OPERATION);
        }
        await deleteCloudBackup(catalog, entry, { ...opts, byPolicy: false }, ev);
      } else if (policy) {
        for (const entry of await obsoleteBackups(catalog, policy, minimum)) await deleteCloudBackup(catalog, entry, { ...opts, byPolicy: true }, ev);
      }
      return 0;
    });
  });
}

runIfEntryPoint(import.meta.url, () => main());
