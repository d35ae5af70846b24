/**
 * barman-cloud-backup DESTINATION_URL SERVER_NAME (spec §11.2): a backup of the local
 * PostgreSQL server streamed into object storage, or, as Barman's post_backup[_retry]_script,
 * the upload of the backup Barman just took (exit 63 when it is not DONE).
 */
import { Option } from 'commander';
import { BarmanError, errorMessage } from '../../util/errors.js';
import { runIfEntryPoint } from '../../walclient/cli-common.js';
import type { TarCompression } from '../../cloud/layout.js';
import { cloudCommand, commonOptions, cloudMain, openAndCheck, parseSize, parseTags, positiveInt, EXIT_CLI, EXIT_GENERAL, EXIT_NETWORK } from './common.js';

const HELP_AFTER = `
Run it on the database host, e.g. from cron as the postgres user:

  0 3 * * *  barman-cloud-backup -z -J 4 s3://bucket/path pg

Exit codes: 0 done, 1 backup failed (backup.info records FAILED and the error), 2 connection
problem, 3 invalid option, 4 other errors; 63 as a Barman hook for a backup that is not DONE.
Snapshot backups (--snapshot-*) are not supported yet.`;

function program() {
  return cloudCommand('barman-cloud-backup', 'This script can be used to perform a backup of a local PostgreSQL instance and ship the resulting tarball(s) to the Cloud. Currently AWS S3 and Azure Blob Storage are supported.', 'destination')
    .option('-z, --gzip', 'gzip-compress the backup while uploading to the cloud')
    .option('-j, --bzip2', 'bzip2-compress the backup while uploading to the cloud')
    .option('--snappy', 'snappy-compress the backup while uploading to the cloud')
    .option('-h, --host <HOST>', 'host or Unix socket for PostgreSQL connection (default: libpq settings)')
    .option('-p, --port <PORT>', 'port for PostgreSQL connection (default: libpq settings)')
    .option('-U, --user <USER>', 'user name for PostgreSQL connection (default: libpq settings)')
    .option('-d, --dbname <DBNAME>', 'Database name or conninfo string for Postgres connection (default: postgres)', 'postgres')
    .option('--immediate-checkpoint', 'forces the initial checkpoint to be done as quickly as possible')
    .option('-J, --jobs <N>', 'number of parts uploaded at once (default: 2)', '2')
    .option('-S, --max-archive-size <SIZE>', 'maximum size of an archive when uploading to cloud storage (default: 100GB)', '100GB')
    .option('--min-chunk-size <SIZE>', 'minimum size of an individual chunk when uploading to cloud storage')
    .option('--max-bandwidth <SIZE>', 'the maximum amount of data to be uploaded per second')
    .option('-n, --name <NAME>', 'a name which can be used to reference this backup in commands such as barman-cloud-restore and barman-cloud-backup-delete')
    .option('--tags <TAG...>', 'Tags to be added to all uploaded files in cloud storage (k,v ...)')
    .addOption(new Option('-e, --encryption <ENCRYPTION>', 'aws-s3: the encryption algorithm used when storing the uploaded data in S3').choices(['AES256', 'aws:kms']))
    .option('--sse-kms-key-id <ID>', 'aws-s3: the AWS KMS key ID for --encryption aws:kms')
    .option('--encryption-scope <SCOPE>', 'azure-blob-storage: the name of an encryption scope defined in the Azure Blob Storage service')
    .addOption(new Option('--snapshot-instance <NAME>').hideHelp())
    .addOption(new Option('--snapshot-disk <NAME>').hideHelp())
    .addOption(new Option('--snapshot-zone <ZONE>').hideHelp())
    .addOption(new Option('--snapshot-gcp-project <PROJECT>').hideHelp())
    .addOption(new Option('--kms-key-name <NAME>').hideHelp())
    .addHelpText('after', HELP_AFTER);
}

interface Raw {
  gzip?: boolean;
  bzip2?: boolean;
  snappy?: boolean;
  host?: string;
  port?: string;
  user?: string;
  dbname: string;
  immediateCheckpoint?: boolean;
  jobs: string;
  maxArchiveSize: string;
  minChunkSize?: string;
  maxBandwidth?: string;
  name?: string;
  tags?: string[];
  encryption?: 'AES256' | 'aws:kms';
  sseKmsKeyId?: string;
  encryptionScope?: string;
  snapshotInstance?: string;
  snapshotDisk?: string;
  snapshotZone?: string;
  snapshotGcpProject?: string;
  kmsKeyName?: string;
}

/** Barman's quoting of one conninfo value. */
function quoteConninfo(v: string): string {
  if (!v) return "''";
  if (!/\s/.test(v)) return v;
  return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

export function buildConninfo(o: Pick<Raw, 'host' | 'port' | 'user' | 'dbname'>): string {
  if (o.dbname === '' || o.dbname.includes('=')) return o.dbname;
  const parts: string[] = [];
  if (o.host) parts.push(`host=${quoteConninfo(o.host)}`);
  if (o.port) parts.push(`port=${quoteConninfo(o.port)}`);
  if (o.user) parts.push(`user=${quoteConninfo(o.user)}`);
  if (o.dbname) parts.push(`dbname=${quoteConninfo(o.dbname)}`);
  return parts.join(' ');
}

/** As a Barman hook: true for post backup[_retry]_script; any other hook is an error. */
function isHook(env: NodeJS.ProcessEnv): boolean {
  if (env.BARMAN_HOOK === undefined || env.BARMAN_PHASE === undefined) return false;
  if ((env.BARMAN_HOOK === 'backup_script' || env.BARMAN_HOOK === 'backup_retry_script') && env.BARMAN_PHASE === 'post') return true;
  throw new BarmanError(`barman-cloud-backup called as unsupported hook script: ${env.BARMAN_PHASE}_${env.BARMAN_HOOK}`, EXIT_GENERAL);
}

export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<number> {
  const cmd = program();
  return cloudMain(argv, cmd, 'Barman cloud backup exception', async () => {
    const o = cmd.opts<Raw>();
    const chosen: TarCompression[] = [];
    if (o.gzip) chosen.push('gz');
    if (o.bzip2) chosen.push('bz2');
    if (o.snappy) chosen.push('snappy');
    if (chosen.length > 1) throw new BarmanError('only one of -z/--gzip, -j/--bzip2 and --snappy may be given', EXIT_CLI);
    if (o.snapshotInstance || o.snapshotDisk || o.snapshotZone || o.snapshotGcpProject) throw new BarmanError('snapshot backups (--snapshot-*) are not supported yet', EXIT_CLI);
    if (o.kmsKeyName) throw new BarmanError('--kms-key-name is for google-cloud-storage, which is not supported yet', EXIT_CLI);
    const jobs = positiveInt(o.jobs, '-J/--jobs', 2);
    const maxArchiveSize = parseSize(o.maxArchiveSize, '-S/--max-archive-size');
    if (maxArchiveSize <= 0) throw new BarmanError('argument -S/--max-archive-size: must be positive', EXIT_CLI);
    const minChunkSize = o.minChunkSize === undefined ? 0 : parseSize(o.minChunkSize, '--min-chunk-size');
    const bandwidth = o.maxBandwidth === undefined ? null : parseSize(o.maxBandwidth, '--max-bandwidth');
    if (o.name !== undefined) {
      const { validateBackupName } = await import('../../catalog/catalog.js');
      try {
        validateBackupName(o.name);
      } catch (err) {
        throw new BarmanError(`argument -n/--name: ${errorMessage(err)}`, EXIT_CLI);
      }
    }
    const tags = parseTags(o.tags);
    const common = commonOptions(cmd, { encryption: o.encryption ?? null, kmsKeyId: o.sseKmsKeyId ?? null, encryptionScope: o.encryptionScope ?? null });
    const hook = isHook(process.env);
    const opened = await openAndCheck(common);
    const { storage, layout } = opened;
    try {
      if (common.test) return 0;
      if (!opened.exists) {
        common.log.info(`Bucket '${opened.location.container}' does not exist, creating it`);
        await storage.createContainer();
      }
      const { Throttle } = await import('../../storage/upload.js');
      const throttle = bandwidth ? new Throttle(bandwidth) : null;
      const abort = new AbortController();
      const onSignal = () => abort.abort();
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      const say = (m: string) => common.log.info(m);
      const base = { storage, layout, compression: chosen[0] ?? null, maxArchiveSize, minChunkSize, jobs, throttle, tags, signal: abort.signal, info: say };
      try {
        if (hook) {
          if (o.name !== undefined) throw new BarmanError('Cannot set backup name when running as a hook script', EXIT_GENERAL);
          const env = process.env;
          if (!env.BARMAN_BACKUP_DIR) throw new BarmanError('BARMAN_BACKUP_DIR environment variable not set', EXIT_GENERAL);
          if (!env.BARMAN_BACKUP_ID) throw new BarmanError('BARMAN_BACKUP_ID environment variable not set', EXIT_GENERAL);
          if (env.BARMAN_STATUS !== 'DONE') {
            throw new BarmanError(`Barman cloud backup exception: backup in '${env.BARMAN_BACKUP_DIR}' has status '${env.BARMAN_STATUS ?? ''}' (status should be: DONE)`, 63);
          }
          const { uploadBarmanBackup } = await import('../../cloud/backup.js');
          const path = await import('node:path');
          await uploadBarmanBackup({ ...base, backupDir: env.BARMAN_BACKUP_DIR, backupId: env.BARMAN_BACKUP_ID, infoPath: env.BARMAN_BACKUP_INFO_PATH || path.join(env.BARMAN_BACKUP_DIR, 'backup.info') });
          say(`Upload of backup ${env.BARMAN_BACKUP_ID} completed`);
          return 0;
        }
        const { cloudBackup } = await import('../../cloud/backup.js');
        const res = await cloudBackup({ ...base, conninfo: buildConninfo(o), immediateCheckpoint: o.immediateCheckpoint === true, name: o.name ?? null });
        say(`Backup completed: ${res.id}`);
        return 0;
      } catch (err) {
        if (err instanceof BarmanError && (err.exitCode === EXIT_NETWORK || err.exitCode === 63 || err.exitCode === EXIT_CLI)) throw err;
        // Barman: a failed backup (backup.info says FAILED) is exit 1.
        common.log.error(`Backup failed uploading data (${errorMessage(err)})`);
        return 1;
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    } finally {
      await storage.close();
    }
  });
}

runIfEntryPoint(import.meta.url, () => main());
