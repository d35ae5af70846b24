/**
 * barman-cloud-wal-archive DESTINATION_URL SERVER_NAME [WAL_PATH]: PostgreSQL's
 * archive_command to an object store (spec §11.2), or Barman's pre_archive[_retry]_script
 * (reads BARMAN_FILE). Usually started by bin/barman-cloud-wal-archive (sh), which answers
 * calls for segments an earlier call already pushed ahead without starting Node.
 */
import { Option } from 'commander';
import * as path from 'node:path';
import { archiveWal, DEFAULT_CLOUD_SPOOL_DIR, DEFAULT_PUSH_AHEAD, type PushAhead } from '../../cloud/wal-archive.js';
import { BarmanError } from '../../util/errors.js';
import { parseCompressionLevel, type CompressionLevel } from '../../wal/compression.js';
import { isAnyXlogFile } from '../../wal/names.js';
import { COMPRESSION_FLAGS, type CompressionFlagOptions } from '../../walclient/archive-main.js';
import { runIfEntryPoint } from '../../walclient/cli-common.js';
import { cloudCommand, commonOptions, cloudMain, parseSize, parseTags, positiveInt, EXIT_CLI, EXIT_GENERAL } from './common.js';


const HELP_AFTER = `
Use it as PostgreSQL's archive_command, e.g.:

  archive_command = 'barman-cloud-wal-archive -z s3://bucket/path pg %p'

Exit codes: 0 stored, 1 operation error, 2 connection problem, 3 invalid name or option,
4 other errors. A missing bucket or container is created.

Compression: Barman 3.4's cloud tools read only gzip (.gz), bzip2 (.bz2) and snappy
(.snappy) WAL objects; WAL stored with --xz, --zstd or --lz4 is invisible to them (Barman 3.8
and later read them).

Push-ahead (barman-ts): the segments PostgreSQL has already marked ready after WAL_PATH are
stored by the same call (up to --push-ahead files, in parallel) and recorded in --spool-dir;
PostgreSQL's calls for them then return at once from the launcher, without a request.`;

function program() {
  const cmd = cloudCommand('barman-cloud-wal-archive', 'This script can be used in the `archive_command` of a PostgreSQL server to ship WAL files to the Cloud. Currently AWS S3 and Azure Blob Storage are supported.', 'destination')
    .argument('[WAL_PATH]', "the value of the '%p' keyword (according to 'archive_command').")
    .option('-z, --gzip', 'gzip-compress the WAL while uploading to the cloud')
    .option('-j, --bzip2', 'bzip2-compress the WAL while uploading to the cloud')
    .option('--xz', 'xz-compress the WAL while uploading to the cloud (not readable by Barman 3.4)')
    .option('--snappy', 'snappy-compress the WAL while uploading to the cloud')
    .option('--zstd', 'zstd-compress the WAL while uploading to the cloud (not readable by Barman 3.4)')
    .option('--lz4', 'lz4-compress the WAL while uploading to the cloud (not readable by Barman 3.4)')
    .option('--compression-level <LEVEL>', 'compression level: low, medium, high or a number')
    .option('--tags <TAG...>', 'Tags to be added to archived WAL files in cloud storage (k,v ...)')
    .option('--history-tags <TAG...>', 'Tags to be added to archived history files in cloud storage (k,v ...)')
    .addOption(new Option('-e, --encryption <ENCRYPTION>', "aws-s3: the encryption algorithm used when storing the uploaded data in S3").choices(['AES256', 'aws:kms']))
    .option('--sse-kms-key-id <ID>', 'aws-s3: the AWS KMS key ID for --encryption aws:kms')
    .option('--encryption-scope <SCOPE>', 'azure-blob-storage: the name of an encryption scope defined in the Azure Blob Storage service')
    .option('--max-block-size <SIZE>', 'azure-blob-storage: the chunk size when a WAL is uploaded in blocks (default: 4MB)', '4MB')
    .option('--max-concurrency <N>', 'azure-blob-storage: the number of blocks uploaded concurrently (default: 1)', '1')
    .option('--max-single-put-size <SIZE>', 'azure-blob-storage: largest WAL object uploaded in a single request (default: 64MB)', '64MB')
    .option('--spool-dir <DIR>', 'barman-ts: directory recording segments already pushed ahead', DEFAULT_CLOUD_SPOOL_DIR)
    .option('--push-ahead <N>', `barman-ts: most WAL files stored by one call (0 or 1: no push-ahead; default ${DEFAULT_PUSH_AHEAD})`)
    .addHelpText('after', HELP_AFTER);
  return cmd;
}

interface Raw extends CompressionFlagOptions {
  tags?: string[];
  historyTags?: string[];
  encryption?: 'AES256' | 'aws:kms';
  sseKmsKeyId?: string;
  encryptionScope?: string;
  maxBlockSize: string;
  maxConcurrency: string;
  maxSinglePutSize: string;
  spoolDir: string;
  pushAhead?: string;
}

/** True when Barman runs us as a pre-archive hook; any other hook is an error. */
function hookFile(env: NodeJS.ProcessEnv): string | null {
  if (env.BARMAN_HOOK === undefined || env.BARMAN_PHASE === undefined) return null;
  if ((env.BARMAN_HOOK === 'archive_script' || env.BARMAN_HOOK === 'archive_retry_script') && env.BARMAN_PHASE === 'pre') {
    if (!env.BARMAN_FILE) throw new BarmanError('Expected environment variable BARMAN_FILE not set', EXIT_GENERAL);
    return env.BARMAN_FILE;
  }
  throw new BarmanError(`barman-cloud-wal-archive called as unsupported hook script: ${env.BARMAN_PHASE}_${env.BARMAN_HOOK}`, EXIT_GENERAL);
}

export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<number> {
  const cmd = program();
  return cloudMain(argv, cmd, 'Barman cloud WAL archiver exception', async () => {
    const o = cmd.opts<Raw>();
    const chosen = COMPRESSION_FLAGS.filter(([flag]) => o[flag] === true).map(([, c]) => c);
    if (chosen.length > 1) throw new BarmanError(`only one compression option may be given (got ${chosen.join(', ')})`, EXIT_CLI);
    let level: CompressionLevel | null = null;
    if (o.compressionLevel !== undefined) {
      try {
        level = parseCompressionLevel(o.compressionLevel);
      } catch (err) {
        throw new BarmanError((err as Error).message, EXIT_CLI);
      }
    }
    const common = commonOptions(cmd, { encryption: o.encryption ?? null, kmsKeyId: o.sseKmsKeyId ?? null, encryptionScope: o.encryptionScope ?? null });
    const hook = hookFile(process.env);
    const walArg = cmd.args[2];
    const walPath = hook ?? walArg;
    if (!walPath) throw new BarmanError('the following arguments are required: wal_path', EXIT_CLI);
    if (!isAnyXlogFile(path.basename(walPath))) throw new BarmanError(`${walPath} is an invalid name for a WAL file`, EXIT_CLI);
    const tags = parseTags(o.tags);
    const historyTags = parseTags(o.historyTags);
    const maxSinglePut = parseSize(o.maxSinglePutSize, '--max-single-put-size');
    const blockSize = parseSize(o.maxBlockSize, '--max-block-size');
    const concurrency = positiveInt(o.maxConcurrency, '--max-concurrency', 1);
    const batch = o.pushAhead === undefined ? DEFAULT_PUSH_AHEAD : /^\d+$/.test(o.pushAhead) ? Number(o.pushAhead) : NaN;
    if (!Number.isFinite(batch)) throw new BarmanError(`invalid value for --push-ahead: '${o.pushAhead}'`, EXIT_CLI);

    const opened = await openLazily(common);
    try {
      if (common.test) {
        await opened.storage.containerExists();
        return 0;
      }
      // Push-ahead markers name the destination by the command line itself (all arguments but
      // the last, WAL_PATH), exactly as the sh launcher rebuilds it.
      const ahead: PushAhead | null =
        !hook && argv.length > 0 && argv[argv.length - 1] === walArg && !argv.some((a) => a.includes('\x1f'))
          ? { spoolDir: o.spoolDir, destination: argv.slice(0, -1).join('\x1f'), batch }
          : null;
      const storage = opened.storage;
      const outcome = await archiveWal(
        {
          storage:
            common.connect.provider === 'azure-blob-storage'
              ? (await import('../../storage/chunked.js')).chunkedPuts(storage, { maxSinglePut, blockSize, concurrency })
              : storage,
          layout: opened.layout,
          compression: chosen[0] ?? null,
          level,
          tags,
          historyTags,
        },
        walPath,
        ahead,
      );
      for (const w of outcome.warnings) common.log.warning(w);
      common.log.info(`Uploaded ${walPath} as ${outcome.key}${outcome.pushed.length ? ` (and ${outcome.pushed.length} more ahead)` : ''}`);
      return 0;
    } finally {
      await opened.storage.close();
    }
  });
}

/** Open without the existence check (one request per segment saved); -t checks it. */
async function openLazily(common: ReturnType<typeof commonOptions>) {
  const { openCloudStorage } = await import('../../cloud/connect.js');
  const { CloudLayout } = await import('../../cloud/layout.js');
  const { storage, location } = await openCloudStorage(common.connect);
  return { storage, location, layout: new CloudLayout(location.prefix, common.server) };
}

runIfEntryPoint(import.meta.url, () => main());
