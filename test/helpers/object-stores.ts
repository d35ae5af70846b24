/**
 * Real object stores on 127.0.0.1 for integration tests: s3rver (S3) and Azurite (Azure Blob
 * Storage, Microsoft's emulator), both from npm devDependencies, each started as a child
 * process on a free port with its data in a temp dir, and stopped by stop() or at exit.
 *
 * The environment a client needs to reach them (credentials, connection string) is in `env`;
 * `url(bucket, path)` builds the barman-cloud URL for it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, makeTempDir, onExitCleanup, waitFor } from './system.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const BIN = path.join(ROOT, 'node_modules', '.bin');

/** Azurite's well-known development account. */
export const AZURITE_ACCOUNT = 'devstoreaccount1';
export const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export type Provider = 'aws-s3' | 'azure-blob-storage';

export interface ObjectStoreServer {
  provider: Provider;
  port: number;
  /** Environment for a client: credentials / connection string. */
  env: Record<string, string>;
  /** Command-line options every barman-cloud tool needs for this server. */
  args: string[];
  /** barman-cloud URL of `bucket` and key prefix `prefix`. */
  url(bucket: string, prefix?: string): string;
  /** Endpoint for the SDK (S3) or the account URL (Azure). */
  endpoint: string;
  /** PID of the server process (fault tests stop it for a moment: SIGSTOP / SIGCONT). */
  pid: number;
  /** Directory holding the stored data (a restarted server reads it again). */
  dir: string;
  stop(): Promise<void>;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

async function startProcess(cmd: string, args: string[], port: number, what: string): Promise<ChildProcess> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], detached: false });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  const kill = () => {
    try {
      child.kill('SIGKILL');
    } catch {
      // gone
    }
  };
  onExitCleanup(kill);
  try {
    await waitFor(async () => child.exitCode === null && (await portOpen(port)), { timeoutMs: 120_000, what: `${what} on port ${port}` });
  } catch (err) {
    kill();
    throw new Error(`${(err as Error).message}\n${stderr}`);
  }
  return child;
}

function stopper(child: ChildProcess): () => Promise<void> {
  return async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    await gone;
    clearTimeout(timer);
  };
}

/** `at`: the data directory and port of a server stopped before (a restart, as after a crash). */
export async function startS3rver(at?: { dir: string; port: number }): Promise<ObjectStoreServer> {
  const dir = at?.dir ?? (await makeTempDir('s3rver'));
  const port = at?.port ?? (await freePort());
  const child = await startProcess(path.join(BIN, 's3rver'), ['-d', dir, '-a', '127.0.0.1', '-p', String(port), '--silent', '--no-vhost-buckets'], port, 's3rver');
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    provider: 'aws-s3',
    port,
    endpoint,
    env: { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' },
    args: ['--cloud-provider', 'aws-s3', '--endpoint-url', endpoint],
    url: (bucket, prefix = '') => `s3://${bucket}${prefix ? `/${prefix}` : ''}`,
    pid: child.pid ?? 0,
    dir,
    stop: stopper(child),
  };
}

export async function startAzurite(): Promise<ObjectStoreServer> {
  const dir = await makeTempDir('azurite');
  const port = await freePort();
  const child = await startProcess(
    path.join(BIN, 'azurite-blob'),
    ['--blobHost', '127.0.0.1', '--blobPort', String(port), '--location', dir, '--silent', '--skipApiVersionCheck', '--loose', '--disableTelemetry'],
    port,
    'Azurite',
  );
  const endpoint = `http://127.0.0.1:${port}/${AZURITE_ACCOUNT}`;
  const conn = `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};BlobEndpoint=${endpoint};`;
  return {
    provider: 'azure-blob-storage',
    port,
    endpoint,
    env: { AZURE_STORAGE_CONNECTION_STRING: conn },
    args: ['--cloud-provider', 'azure-blob-storage'],
    url: (container, prefix = '') => `${endpoint}/${container}${prefix ? `/${prefix}` : ''}`,
    pid: child.pid ?? 0,
    dir,
    stop: stopper(child),
  };
}

export function startObjectStore(provider: Provider): Promise<ObjectStoreServer> {
  return provider === 'aws-s3' ? startS3rver() : startAzurite();
}
