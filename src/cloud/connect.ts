/**
 * From a barman-cloud URL and the common options to an ObjectStorage and a key prefix.
 *
 * URLs as Barman reads them (spec §11): `s3://bucket/path`; Azure
 * `https://<account>.blob.core.windows.net/<container>/path`, or for an emulator or any other
 * host `http(s)://host[:port]/<account>/<container>/path` with AZURE_STORAGE_CONNECTION_STRING;
 * google-cloud-storage is refused (not supported yet). The SDK of the chosen provider is
 * imported only here and only for that provider, so a WAL call never loads the other one.
 */
import { BarmanError } from '../util/errors.js';
import type { ObjectStorage } from '../storage/types.js';

export type CloudProvider = 'aws-s3' | 'azure-blob-storage' | 'google-cloud-storage';
export const CLOUD_PROVIDERS: readonly CloudProvider[] = ['aws-s3', 'azure-blob-storage', 'google-cloud-storage'];

export interface CloudConnectOptions {
  url: string;
  provider: CloudProvider;
  endpointUrl?: string | null;
  awsProfile?: string | null;
  readTimeout?: number | null;
  azureCredential?: string | null;
  encryption?: 'AES256' | 'aws:kms' | null;
  kmsKeyId?: string | null;
  encryptionScope?: string | null;
}

export interface CloudLocation {
  provider: CloudProvider;
  /** Bucket or container. */
  container: string;
  /** Key prefix from the URL path, without leading or trailing `/` ('' for none). */
  prefix: string;
  /** Azure: account URL when no connection string is used. */
  accountUrl: string | null;
}

const AZURE_DOMAIN = 'blob.core.windows.net';

function trimSlashes(s: string): string {
  return s.replace(/^\/+/, '').replace(/\/+$/, '');
}

/** Parse a barman-cloud URL for `provider` (exit 3 on a malformed one). */
export function parseCloudUrl(url: string, provider: CloudProvider, env: NodeJS.ProcessEnv = process.env): CloudLocation {
  if (provider === 'google-cloud-storage') {
    throw new BarmanError('--cloud-provider google-cloud-storage is not supported yet (use aws-s3 or azure-blob-storage)', 3);
  }
  if (provider === 'aws-s3') {
    const m = /^s3:\/\/([^/]+)(\/.*)?$/.exec(url);
    if (!m) throw new BarmanError(`Invalid s3 URL address: ${url}`, 3);
    return { provider, container: m[1] as string, prefix: trimSlashes(m[2] ?? ''), accountUrl: null };
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new BarmanError(`azure blob storage URL ${url} is malformed`, 3);
  }
  const parts = parsed.pathname.split('/').map((p) => decodeURIComponent(p));
  if (parsed.hostname.endsWith(AZURE_DOMAIN)) {
    const container = parts[1];
    if (!container) throw new BarmanError(`azure blob storage URL ${url} is malformed`, 3);
    return { provider, container, prefix: trimSlashes(parts.slice(2).join('/')), accountUrl: `${parsed.protocol}//${parsed.host}` };
  }
  if (!env.AZURE_STORAGE_CONNECTION_STRING) {
    throw new BarmanError('A connection string must be provided when using emulated storage (AZURE_STORAGE_CONNECTION_STRING)', 3);
  }
  const container = parts[2];
  if (!container) throw new BarmanError(`emulated storage URL ${url} is malformed`, 3);
  return { provider, container, prefix: trimSlashes(parts.slice(3).join('/')), accountUrl: null };
}

/** Open the storage a URL names (the provider's SDK is loaded here). */
export async function openCloudStorage(o: CloudConnectOptions): Promise<{ storage: ObjectStorage; location: CloudLocation }> {
  const location = parseCloudUrl(o.url, o.provider);
  if (location.provider === 'aws-s3') {
    const { S3Storage } = await import('../storage/s3.js');
    const storage = await S3Storage.open({
      bucket: location.container,
      endpointUrl: o.endpointUrl,
      profile: o.awsProfile,
      readTimeout: o.readTimeout,
      encryption: o.encryption,
      kmsKeyId: o.kmsKeyId,
    });
    return { storage, location };
  }
  const { AzureStorage } = await import('../storage/azure.js');
  const storage = new AzureStorage({
    accountUrl: location.accountUrl,
    container: location.container,
    encryptionScope: o.encryptionScope,
    readTimeout: o.readTimeout,
    credential: o.azureCredential,
  });
  return { storage, location };
}
