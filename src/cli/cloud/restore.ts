/**
 * barman-cloud-restore SOURCE_URL SERVER_NAME BACKUP_ID|auto RECOVERY_DIR (spec §11.2):
 * extract a backup from object storage. `auto` picks the newest backup ending before
 * --target-time / --target-lsn (on --target-tli). No recovery configuration is written: set
 * restore_command (barman-cloud-wal-restore) and the recovery target yourself.
 */
import { BarmanError, errorMessage } from '../../util/errors.js';
import { runIfEntryPoint } from '../../walclient/cli-common.js';
import { cloudCommand, commonOptions, cloudMain, withStorage, positiveInt, EXIT_CLI, EXIT_OPERATION } from './common.js';

const HELP_AFTER = `
Restore runbook (the README has the whole one):

  barman-cloud-backup-list s3://bucket/path pg
  barman-cloud-restore s3://bucket/path pg latest /var/lib/postgresql/15/main
  # then in postgresql.conf: restore_command = 'barman-cloud-wal-restore s3://bucket/path pg %f %p'
  # and recovery_target_* as needed; touch recovery.signal; start PostgreSQL.

Exit codes: 0 restored, 1 backup not found or destination not empty, 2 connection problem,
3 invalid option, 4 other errors (a corrupted or truncated archive among them: nothing is
left in the destination then). Snapshot backups are not supported yet.`;

function program() {
  return cloudCommand('barman-cloud-restore', 'This script can be used to download a backup previously made with barman-cloud-backup command. Currently AWS S3 and Azure Blob Storage are supported.', 'source')
    .argument('<BACKUP_ID>', 'the backup ID, a shortcut (latest, oldest, last-failed...), a backup name, or auto')
    .argument('<RECOVERY_DIR>', 'the path to a directory for recovery.')
    .option('--tablespace <NAME:LOCATION>', 'tablespace relocation rule', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--target-tli <TLI>', 'with auto: the timeline of the backup to choose')
    .option('--target-time <TIME>', 'with auto: choose the newest backup that ended before this time')
    .option('--target-lsn <LSN>', 'with auto: choose the newest backup that ended before this LSN')
    .option('-J, --jobs <N>', 'archives downloaded and extracted at once (barman-ts; default 2)', '2')
    .option('--snapshot-recovery-instance <NAME>', 'snapshot backups: not supported yet')
    .option('--snapshot-recovery-zone <ZONE>', 'snapshot backups: not supported yet')
    .addHelpText('after', HELP_AFTER);
}

interface Raw {
  tablespace: string[];
  targetTli?: string;
  targetTime?: string;
  targetLsn?: string;
  jobs: string;
  snapshotRecoveryInstance?: string;
  snapshotRecoveryZone?: string;
}

export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<number> {
  const cmd = program();
  return cloudMain(argv, cmd, 'Barman cloud restore exception', async () => {
    const o = cmd.opts<Raw>();
    const common = commonOptions(cmd);
    const [, , backupArg, recoveryDir] = cmd.args as [string, string, string, string];
    if (o.snapshotRecoveryInstance || o.snapshotRecoveryZone) throw new BarmanError('snapshot backups are not supported yet', EXIT_CLI);
    const jobs = positiveInt(o.jobs, '-J/--jobs', 2);
    for (const rule of o.tablespace) {
      if (!/^[^:]+:.+$/.test(rule)) throw new BarmanError(`Invalid tablespace relocation rule '${rule}' HINT: The valid syntax for a relocation rule is NAME:LOCATION`, EXIT_CLI);
    }
    const { parseRecoveryTarget, chooseAutoBackup } = await import('../../recovery/options.js');
    let target;
    try {
      target = parseRecoveryTarget({ targetTime: o.targetTime, targetLsn: o.targetLsn, targetTli: o.targetTli }).target;
    } catch (err) {
      throw new BarmanError(errorMessage(err), EXIT_CLI);
    }
    if (backupArg !== 'auto' && (o.targetTime || o.targetLsn || o.targetTli)) {
      throw new BarmanError('--target-time, --target-lsn and --target-tli choose a backup with BACKUP_ID auto only', EXIT_CLI);
    }
    return withStorage(common, 'alongside', async (opened) => {
      const { CloudCatalog } = await import('../../cloud/catalog.js');
      const catalog = new CloudCatalog(opened.storage, opened.layout, (m) => common.log.warning(m));
      let entry;
      try {
        entry = backupArg === 'auto' ? (chooseAutoBackup(await catalog.backups(), target, common.server) as Awaited<ReturnType<typeof catalog.resolve>>) : await catalog.resolve(backupArg);
      } catch (err) {
        if (err instanceof BarmanError && err.exitCode !== 1) throw err;
        throw new BarmanError(errorMessage(err), EXIT_OPERATION);
      }
      if (entry.info.snapshots_info) throw new BarmanError(`Backup ${entry.id} is a snapshot backup: not supported yet`, EXIT_OPERATION);
      if (entry.info.status !== 'DONE') throw new BarmanError(`Backup ${entry.id} has status ${entry.info.status}: only DONE backups can be restored`, EXIT_OPERATION);
      const relocate = new Map<string, string>();
      for (const rule of o.tablespace) {
        const i = rule.indexOf(':');
        relocate.set(rule.slice(0, i), rule.slice(i + 1));
      }
      const { cloudRestore } = await import('../../cloud/restore.js');
      await cloudRestore({ catalog, entry, destination: recoveryDir, relocate, jobs, info: (m) => common.log.info(m) });
      common.log.info(`Backup ${entry.id} restored into ${recoveryDir}`);
      return 0;
    });
  });
}

runIfEntryPoint(import.meta.url, () => main());
