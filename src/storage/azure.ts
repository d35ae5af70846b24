/**
 * Storage driver for Azure Blob Storage (and Azurite), on @azure/storage-blob.
 *
 * Credentials as Barman's users set them: AZURE_STORAGE_CONNECTION_STRING (required for an
 * emulator or any host outside blob.core.windows.net), else the account URL with
 * AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_KEY. Azure AD credentials (azure-cli,
 * managed-identity, default) are refused with one line: not supported yet.
 * Multipart uploads are staged blocks committed at the end; block IDs are Barman's
 * (the zero-padded part number). Deletes go one request per blob, a few at a time: blob batch
 * sub-requests naming only `/container/blob` are refused by Azurite, whose URLs carry the
 * account in the path.
 */
import type { Readable } from 'node:stream';
import { createRequire } from 'node:module';
import type { ContainerClient, StoragePipelineOptions } from '@azure/storage-blob';
import { BarmanError, errorMessage } from '../util/errors.js';
import { runPool } from '../util/pool.js';
import type { GetResult, Listing, MultipartUpload, ObjectInfo, ObjectStorage, PutOptions, StorageCapabilities } from './types.js';
import { StorageError } from './types.js';

// Required, not imported: the package's CommonJS build loads with about a fifth less CPU than
// its ESM build (about 270 modules either way), paid by every WAL call and at each restore's start.
const { BlobServiceClient, StorageSharedKeyCredential } = createRequire(import.meta.url)('@azure/storage-blob') as typeof import('@azure/storage-blob');

export interface AzureOptions {
  /** Account URL (`https://<account>.blob.core.windows.net`) when not using a connection string. */
  accountUrl?: string | null;
  container: string;
  encryptionScope?: string | null;
  /** Seconds to wait for one try of a request (default 60). */
  readTimeout?: number | null;
  /** Azure AD credential name; refused (not supported yet). */
  credential?: string | null;
  maxTries?: number;
}

interface RestLikeError {
  name?: string;
  code?: string;
  statusCode?: number;
  message?: string;
}

export function azureError(what: string, err: unknown): StorageError {
  const e = (err ?? {}) as RestLikeError;
  const detail = (errorMessage(err) || e.code || e.name || `HTTP ${e.statusCode ?? '?'}`).split('\n')[0] ?? '';
  if (e.code === 'REQUEST_SEND_ERROR' || /ECONNREFUSED|ENOTFOUND|ETIMEDOUT|EHOSTUNREACH|socket hang up|timeout|aborted/i.test(`${e.code ?? ''} ${detail}`)) {
    if (e.statusCode === undefined) return new StorageError(`${what}: cannot reach the object store (${detail})`, 'network', 2);
  }
  if (e.statusCode === 403 || e.code === 'AuthenticationFailed' || e.code === 'AuthorizationFailure') {
    return new StorageError(`${what}: access denied (${e.code ?? e.statusCode}): check the credentials`, 'auth', 4);
  }
  if (e.code === 'ContainerNotFound') return new StorageError(`${what}: the container does not exist`, 'missing-container', 1);
  return new StorageError(`${what}: ${e.code && !detail.includes(e.code) ? `${e.code}: ` : ''}${detail}`, 'other', 4);
}

function blockId(n: number): string {
  return Buffer.from(String(n).padStart(5, '0')).toString('base64');
}

/** The account name of an account URL (`https://acct.blob.core.windows.net` → `acct`). */
function accountNameOf(url: string): string {
  return new URL(url).hostname.split('.')[0] ?? '';
}

export class AzureStorage implements ObjectStorage {
  readonly capabilities: StorageCapabilities = {
    provider: 'azure-blob-storage',
    minPartSize: 64 << 10,
    maxParts: 50000,
    maxObjectSize: 2 ** 40,
    maxDeleteBatch: 256,
    metadata: true,
  };
  private readonly container: ContainerClient;

  constructor(private readonly opts: AzureOptions) {
    if (opts.credential) {
      throw new BarmanError(`--credential ${opts.credential} is not supported yet: set AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_KEY`, 3);
    }
    const tryTimeoutInMs = (opts.readTimeout ?? 60) * 1000;
    const pipeline: StoragePipelineOptions = {
      retryOptions: { maxTries: opts.maxTries ?? 3, tryTimeoutInMs, retryDelayInMs: 500, maxRetryDelayInMs: 2000 },
      userAgentOptions: { userAgentPrefix: 'barman-ts' },
    };
    const conn = process.env.AZURE_STORAGE_CONNECTION_STRING;
    if (conn) {
      this.container = BlobServiceClient.fromConnectionString(conn, pipeline).getContainerClient(opts.container);
      return;
    }
    if (!opts.accountUrl) throw new BarmanError('A connection string must be provided when using emulated storage (AZURE_STORAGE_CONNECTION_STRING)', 3);
    const sas = process.env.AZURE_STORAGE_SAS_TOKEN;
    const key = process.env.AZURE_STORAGE_KEY;
    if (sas) {
      const query = sas.startsWith('?') ? sas.slice(1) : sas;
      this.container = new BlobServiceClient(`${opts.accountUrl}?${query}`, undefined, pipeline).getContainerClient(opts.container);
    } else if (key) {
      const credential = new StorageSharedKeyCredential(accountNameOf(opts.accountUrl), key);
      this.container = new BlobServiceClient(opts.accountUrl, credential, pipeline).getContainerClient(opts.container);
    } else {
      throw new BarmanError(
        'no Azure credentials: set AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_KEY (Azure AD default credentials are not supported yet)',
        3,
      );
    }
  }

  get containerName(): string {
    return this.opts.container;
  }

  private async send<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw azureError(what, err);
    }
  }

  private scope(): { encryptionScope?: string } {
    return this.opts.encryptionScope ? { encryptionScope: this.opts.encryptionScope } : {};
  }

  private tags(opts: PutOptions): { tags?: Record<string, string> } {
    return opts.tags && opts.tags.length > 0 ? { tags: Object.fromEntries(opts.tags) } : {};
  }

  async containerExists(): Promise<boolean> {
    // Not exists(): container-level SAS tokens may list blobs but not read container properties.
    try {
      await this.container.listBlobsFlat().byPage({ maxPageSize: 1 }).next();
      return true;
    } catch (err) {
      if ((err as RestLikeError).statusCode === 404) return false;
      throw azureError(`cannot access container ${this.opts.container}`, err);
    }
  }

  async createContainer(): Promise<void> {
    await this.send(`cannot create container ${this.opts.container}`, async () => {
      await this.container.createIfNotExists();
    });
  }

  async put(key: string, body: Buffer, opts: PutOptions = {}): Promise<void> {
    await this.send(`cannot upload ${key}`, () =>
      this.container.getBlockBlobClient(key).upload(body, body.length, { ...this.scope(), ...this.tags(opts), metadata: opts.metadata ? { ...opts.metadata } : undefined }),
    );
  }

  async get(key: string): Promise<GetResult | null> {
    try {
      const res = await this.container.getBlobClient(key).download(0, undefined, { maxRetryRequests: 3 });
      return { body: res.readableStreamBody as Readable, size: Number(res.contentLength ?? 0), metadata: res.metadata ?? {} };
    } catch (err) {
      const e = err as RestLikeError;
      if (e.statusCode === 404 && e.code !== 'ContainerNotFound') return null;
      throw azureError(`cannot download ${key}`, err);
    }
  }

  async list(prefix: string, delimiter?: string): Promise<Listing> {
    const objects: ObjectInfo[] = [];
    const prefixes: string[] = [];
    await this.send(`cannot list ${prefix || '/'} in container ${this.opts.container}`, async () => {
      if (delimiter) {
        for await (const item of this.container.listBlobsByHierarchy(delimiter, { prefix })) {
          if (item.kind === 'prefix') prefixes.push(item.name);
          else objects.push({ key: item.name, size: Number(item.properties.contentLength ?? 0) });
        }
      } else {
        for await (const item of this.container.listBlobsFlat({ prefix })) objects.push({ key: item.name, size: Number(item.properties.contentLength ?? 0) });
      }
    });
    return { objects, prefixes };
  }

  async deleteBatch(keys: readonly string[]): Promise<void> {
    await runPool(keys, 8, async (key) => {
      try {
        await this.container.getBlobClient(key).delete();
      } catch (err) {
        if ((err as RestLikeError).statusCode === 404) return;
        throw azureError(`cannot delete ${key}`, err);
      }
    });
  }

  async startMultipart(key: string, opts: PutOptions = {}): Promise<MultipartUpload> {
    const blob = this.container.getBlockBlobClient(key);
    return {
      uploadPart: async (n, body) => {
        await this.send(`cannot upload block ${n} of ${key}`, () => blob.stageBlock(blockId(n), body, body.length, this.scope()));
      },
      complete: async (count) => {
        const ids = Array.from({ length: count }, (_, i) => blockId(i + 1));
        await this.send(`cannot commit ${key}`, () =>
          blob.commitBlockList(ids, { ...this.scope(), ...this.tags(opts), metadata: opts.metadata ? { ...opts.metadata } : undefined }),
        );
      },
      abort: async () => {
        // Uncommitted blocks are never visible and the service drops them after a week.
      },
    };
  }

  async close(): Promise<void> {
    // The SDK's HTTP agent holds no resources that keep the process alive.
  }
}
