/**
 * What the nine barman-cloud-* programs share: the common options of Barman's cloud argument
 * parser (URL, SERVER_NAME, -V, --help, -v/-q, -t/--test, --cloud-provider, --endpoint-url,
 * -P/--aws-profile, --read-timeout, --azure-credential), Barman's exit codes (0 ok, 1
 * operation error, 2 network, 3 usage, 4 other) and its log line format on stderr.
 */
import { Command, CommanderError, Option } from 'commander';
import { openCloudStorage, CLOUD_PROVIDERS, type CloudConnectOptions, type CloudLocation, type CloudProvider } from '../../cloud/connect.js';
import { CloudLayout } from '../../cloud/layout.js';
import type { ObjectStorage } from '../../storage/types.js';
import { StorageError } from '../../storage/types.js';
import { BarmanError, errorMessage } from '../../util/errors.js';
import { VERSION } from '../../version.js';

export const EXIT_OPERATION = 1;
export const EXIT_NETWORK = 2;
export const EXIT_CLI = 3;
export const EXIT_GENERAL = 4;

/** Barman's log levels and its `-v`/`-q` arithmetic (WARNING by default). */
const LEVELS = { DEBUG: 10, INFO: 20, WARNING: 30, ERROR: 40 } as const;
type Level = keyof typeof LEVELS;

export class CloudLog {
  constructor(private readonly threshold: number) {}

  static fromCounts(verbose: number, quiet: number): CloudLog {
    return new CloudLog(Math.max(LEVELS.WARNING - (verbose - quiet) * 10, LEVELS.DEBUG));
  }

  private stamp(): string {
    const d = new Date();
    const p = (n: number, w = 2) => String(n).padStart(w, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())},${p(d.getMilliseconds(), 3)}`;
  }

  log(level: Level, message: string): void {
    if (LEVELS[level] < this.threshold) return;
    // One line per message, as Barman's logging prints it.
    process.stderr.write(`${this.stamp()} [${process.pid}] ${level}: ${message.replace(/\n/g, ' ')}\n`);
  }
  debug(m: string): void {
    this.log('DEBUG', m);
  }
  info(m: string): void {
    this.log('INFO', m);
  }
  warning(m: string): void {
    this.log('WARNING', m);
  }
  error(m: string): void {
    this.log('ERROR', m);
  }
}

export interface CommonRaw {
  verbose: number;
  quiet: number;
  test?: boolean;
  cloudProvider: string;
  endpointUrl?: string;
  awsProfile?: string;
  profile?: string;
  readTimeout?: string;
  azureCredential?: string;
  credential?: string;
}

const count = (_v: string, prev: number) => prev + 1;

/** A Command with Barman's common cloud options; `what` is "source" or "destination". */
export function cloudCommand(name: string, description: string, what: 'source' | 'destination'): Command {
  const cmd = new Command(name)
    .description(description)
    .argument(`<${what.toUpperCase()}_URL>`, `URL of the cloud ${what}, such as a bucket in AWS S3. For example: \`s3://bucket/path/to/folder\`.`)
    .argument('<SERVER_NAME>', 'the name of the server as configured in Barman.')
    .version(`${name} ${VERSION}`, '-V, --version', 'show the version and exit')
    .helpOption('--help', 'show this help message and exit')
    .option('-v, --verbose', 'increase output verbosity (e.g., -vv is more than -v)', count, 0)
    .option('-q, --quiet', 'decrease output verbosity (e.g., -qq is less than -q)', count, 0)
    .option('-t, --test', 'Test cloud connectivity and exit')
    .addOption(new Option('--cloud-provider <PROVIDER>', 'The cloud provider to use as a storage backend (google-cloud-storage: not supported yet)').choices(CLOUD_PROVIDERS).default('aws-s3'))
    .option('--endpoint-url <URL>', 'aws-s3: override default S3 endpoint URL with the given one')
    .option('-P, --aws-profile <PROFILE>', 'aws-s3: profile name (e.g. INI section in AWS credentials file)')
    .addOption(new Option('--profile <PROFILE>', 'aws-s3: profile name (deprecated: use --aws-profile)').hideHelp())
    .option('--read-timeout <SECONDS>', 'the time in seconds until a timeout is raised when waiting to read from a connection (defaults to 60 seconds)')
    .option('--azure-credential, --credential <CREDENTIAL>', 'azure-blob-storage: azure-cli, managed-identity or default (Azure AD credentials: not supported yet)')
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(str.endsWith('\n') ? str : `${str}\n`) });
  return cmd;
}

/** `k,v` (CSV) tag values of --tags / --history-tags. */
export function parseTags(values: readonly string[] | undefined): Array<[string, string]> | null {
  if (!values) return null;
  return values.map((v) => {
    const m = /^("(?:[^"]|"")*"|[^,]*),("(?:[^"]|"")*"|[^,]*)$/.exec(v);
    if (!m) throw new BarmanError(`Invalid tag format: ${v}`, EXIT_CLI);
    const unq = (s: string) => (s.startsWith('"') ? s.slice(1, -1).replace(/""/g, '"') : s);
    return [unq(m[1] as string), unq(m[2] as string)];
  });
}

/** Positive integer option (argparse check_positive). */
export function positiveInt(value: string | undefined, option: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new BarmanError(`argument ${option}: ${value} is not a positive integer`, EXIT_CLI);
  return Number(value);
}

/**
 * Sizes as Barman parses them: a number, optionally followed by k/kB, M/MB, G/GB, T/TB (powers
 * of 1024) or Ki/KiB, Mi/MiB... (powers of 1000: Barman's own, reversed, convention).
 */
export function parseSize(value: string, option: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kKMGTP]?)(i?)(B?)\s*$/.exec(value);
  if (!m) throw new BarmanError(`argument ${option}: '${value}' is not a valid size`, EXIT_CLI);
  const exp = ' kMGTP'.indexOf((m[2] as string).replace('K', 'k') || ' ');
  const base = m[3] ? 1000 : 1024;
  return Math.floor(Number(m[1]) * base ** Math.max(0, exp));
}

export interface CommonOptions {
  url: string;
  server: string;
  test: boolean;
  log: CloudLog;
  connect: CloudConnectOptions;
}

/** The log of the command running (set by commonOptions), for the failure line of runCloud. */
let activeLog: CloudLog | null = null;

/** The common part of a parsed command line. */
export function commonOptions(cmd: Command, extra: Partial<CloudConnectOptions> = {}): CommonOptions {
  const o = cmd.opts<CommonRaw>();
  const [url, server] = cmd.args as [string, string];
  const readTimeout = o.readTimeout === undefined ? null : Number(o.readTimeout);
  if (readTimeout !== null && !(Number.isInteger(readTimeout) && readTimeout > 0)) throw new BarmanError(`argument --read-timeout: invalid int value: '${o.readTimeout}'`, EXIT_CLI);
  activeLog = CloudLog.fromCounts(o.verbose, o.quiet);
  return {
    url,
    server,
    test: o.test === true,
    log: activeLog,
    connect: {
      url,
      provider: o.cloudProvider as CloudProvider,
      endpointUrl: o.endpointUrl ?? null,
      awsProfile: o.awsProfile ?? o.profile ?? null,
      readTimeout,
      azureCredential: o.azureCredential ?? o.credential ?? null,
      ...extra,
    },
  };
}

export interface Opened {
  storage: ObjectStorage;
  location: CloudLocation;
  layout: CloudLayout;
  /** The bucket/container exists (checked once, as Barman's test_connectivity does). */
  exists: boolean;
}

/**
 * Open the storage and check connectivity (Barman's test_connectivity: the bucket's existence
 * is looked up). With `-t` the caller exits 0 after this.
 */
export async function openAndCheck(common: CommonOptions): Promise<Opened> {
  const { storage, location } = await openCloudStorage(common.connect);
  const layout = new CloudLayout(location.prefix, common.server);
  let exists: boolean;
  try {
    exists = await storage.containerExists();
  } catch (err) {
    await storage.close();
    throw err;
  }
  return { storage, location, layout, exists };
}

/** A missing bucket for a command that reads: Barman's "Bucket X does not exist", exit 1. */
export function requireBucket(opened: Opened): void {
  if (!opened.exists) throw new BarmanError(`Bucket ${opened.location.container} does not exist`, EXIT_OPERATION);
}

/**
 * Run a cloud command's body; failures become one log line and Barman's exit code. `what` is
 * the prefix of Barman's message ("Barman cloud WAL archiver exception").
 */
async function runCloud(what: string, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (err) {
    const logger = activeLog ?? CloudLog.fromCounts(0, 0);
    if (err instanceof StorageError && err.kind === 'network') {
      logger.error(`Can't connect to cloud provider: ${errorMessage(err)}`);
      return EXIT_NETWORK;
    }
    if (err instanceof BarmanError && err.exitCode !== EXIT_GENERAL && !(err instanceof StorageError)) {
      logger.error(errorMessage(err));
      return err.exitCode;
    }
    logger.error(`${what}: ${errorMessage(err)}`);
    return err instanceof StorageError && err.exitCode !== EXIT_NETWORK ? EXIT_GENERAL : err instanceof BarmanError ? err.exitCode : EXIT_GENERAL;
  }
}

/** Exit code after a command-line parsing failure (help and version are successes). */
export function parseFailure(err: unknown): number {
  if (err instanceof CommanderError) {
    const ok = err.code === 'commander.helpDisplayed' || err.code === 'commander.help' || err.code === 'commander.version';
    return ok ? 0 : EXIT_CLI;
  }
  CloudLog.fromCounts(0, 0).error(errorMessage(err));
  return err instanceof BarmanError ? err.exitCode : EXIT_CLI;
}

/**
 * A cloud program: parse `argv` with `cmd` (usage errors: exit 3), run `body`, turn its
 * failures into one log line and Barman's exit code (`what` prefixes the line, as Barman's).
 */
export async function cloudMain(argv: readonly string[], cmd: Command, what: string, body: () => Promise<number>): Promise<number> {
  try {
    cmd.parse([...argv], { from: 'user' });
  } catch (err) {
    return parseFailure(err);
  }
  return runCloud(what, body);
}

/**
 * Open the storage, answer `-t` (exit 0 once connected), require the bucket when reading,
 * run `fn`, and close the storage whatever happens. `needBucket` 'alongside' (a body that only
 * reads): the bucket's existence is looked up while `fn` sends its first requests instead of
 * before them, one round trip less before a restore's data flows; a missing bucket, or a lookup
 * that fails, is still the error reported, whatever `fn` met meanwhile.
 */
export async function withStorage(common: CommonOptions, needBucket: boolean | 'alongside', fn: (opened: Opened) => Promise<number>): Promise<number> {
  if (needBucket === 'alongside' && !common.test) return withBucketAlongside(common, fn);
  const opened = await openAndCheck(common);
  try {
    if (common.test) return 0;
    if (needBucket) requireBucket(opened);
    return await fn(opened);
  } finally {
    await opened.storage.close();
  }
}

async function withBucketAlongside(common: CommonOptions, fn: (opened: Opened) => Promise<number>): Promise<number> {
  const { storage, location } = await openCloudStorage(common.connect);
  const opened: Opened = { storage, location, layout: new CloudLayout(location.prefix, common.server), exists: true };
  const exists = storage.containerExists();
  exists.catch(() => undefined);
  const check = async () => requireBucket({ ...opened, exists: await exists });
  try {
    let code: number;
    try {
      code = await fn(opened);
    } catch (err) {
      await check();
      throw err;
    }
    await check();
    return code;
  } finally {
    await storage.close();
  }
}
