/**
 * Storage driver for AWS S3 and S3-compatible services, on the AWS SDK for JavaScript v3.
 *
 * Credentials come from the SDK's default chain, as boto3 users set them: the AWS_*
 * environment variables, the shared credentials and config files with `--aws-profile`
 * (AWS_PROFILE otherwise), SSO, web identity, instance metadata. No region has to be set:
 * like boto3 we sign for us-east-1 unless AWS_REGION / AWS_DEFAULT_REGION or the profile's
 * `region` says otherwise. Requests time out and are retried a bounded number of times, so an
 * unreachable endpoint fails within seconds instead of hanging PostgreSQL's archiver.
 */
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { createRequire } from 'node:module';
import type { BucketLocationConstraint, ServerSideEncryption } from '@aws-sdk/client-s3';
import { errorMessage } from '../util/errors.js';
import type { GetResult, Listing, MultipartUpload, ObjectInfo, ObjectStorage, PutOptions, StorageCapabilities } from './types.js';
import { StorageError } from './types.js';

// The SDK is CommonJS: required, not imported, because an ESM import of a CommonJS module
// first scans its source for export names (cjs-module-lexer), which costs about a quarter of
// the SDK's load time (~0.1 s of CPU on a loaded 2-core machine), paid by every WAL call.
const {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} = createRequire(import.meta.url)('@aws-sdk/client-s3') as typeof import('@aws-sdk/client-s3');
type S3Client = InstanceType<typeof S3Client>;

export interface S3Options {
  bucket: string;
  endpointUrl?: string | null;
  profile?: string | null;
  /** Seconds to wait for a response (--read-timeout; default 60). */
  readTimeout?: number | null;
  encryption?: 'AES256' | 'aws:kms' | null;
  kmsKeyId?: string | null;
  /** Attempts per request (default 3). */
  maxAttempts?: number;
}

/** Region of a profile in the shared config file (AWS_CONFIG_FILE or ~/.aws/config), if any. */
async function profileRegion(profile: string): Promise<string | null> {
  const file = process.env.AWS_CONFIG_FILE ?? path.join(os.homedir(), '.aws', 'config');
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch {
    return null;
  }
  const wanted = profile === 'default' ? ['default', 'profile default'] : [`profile ${profile}`];
  let inSection = false;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const section = /^\[\s*(.+?)\s*\]$/.exec(line);
    if (section) {
      inSection = wanted.includes((section[1] as string).replace(/\s+/g, ' '));
      continue;
    }
    const kv = /^region\s*=\s*(\S+)/.exec(line);
    if (inSection && kv) return kv[1] as string;
  }
  return null;
}

/** The region to sign for: environment, then the profile, then us-east-1 (as boto3). */
export async function resolveRegion(profile?: string | null): Promise<string> {
  const env = process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION;
  if (env) return env;
  return (await profileRegion(profile ?? process.env.AWS_PROFILE ?? 'default')) ?? 'us-east-1';
}

interface AwsLikeError {
  name?: string;
  code?: string;
  Code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  cause?: unknown;
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'TimeoutError', 'RequestTimeout']);
const AUTH_CODES = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'Forbidden', 'ExpiredToken', 'InvalidToken', 'CredentialsProviderError', 'InvalidClientTokenId']);

function statusOf(err: unknown): number | undefined {
  return (err as AwsLikeError | null)?.$metadata?.httpStatusCode;
}

/** A one-line StorageError for an SDK failure (never echoing credentials: the SDK does not put them in messages). */
export function s3Error(what: string, err: unknown): StorageError {
  const e = (err ?? {}) as AwsLikeError;
  // Errors of HEAD requests carry no body, so no code: the SDK names them 'Unknown'.
  const named = e.code ?? e.Code ?? e.name ?? '';
  const code = named === 'Unknown' ? '' : named;
  const status = statusOf(err);
  const detail = errorMessage(err) || code || `HTTP ${status ?? '?'}`;
  if (NETWORK_CODES.has(code) || (status === undefined && /ECONNREFUSED|ENOTFOUND|timed? ?out|socket hang up|ECONNRESET|EHOSTUNREACH/i.test(detail))) {
    return new StorageError(`${what}: cannot reach the object store (${detail})`, 'network', 2);
  }
  if (code === 'CredentialsProviderError') {
    return new StorageError(`${what}: no AWS credentials found (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile with --aws-profile or AWS_PROFILE, or an instance role)`, 'auth', 4);
  }
  if (AUTH_CODES.has(code) || status === 403 || /credential/i.test(code)) {
    return new StorageError(`${what}: access denied (${code || `HTTP ${status ?? '?'}`}): check the credentials`, 'auth', 4);
  }
  if (code === 'NoSuchBucket') return new StorageError(`${what}: the bucket does not exist`, 'missing-container', 1);
  return new StorageError(`${what}: ${code && !detail.includes(code) ? `${code}: ` : ''}${detail}`, 'other', 4);
}

export class S3Storage implements ObjectStorage {
  readonly capabilities: StorageCapabilities = {
    provider: 'aws-s3',
    minPartSize: 5 << 20,
    maxParts: 10000,
    maxObjectSize: 2 ** 40,
    maxDeleteBatch: 1000,
    metadata: true,
  };
  private readonly client: S3Client;

  private constructor(
    private readonly opts: S3Options,
    region: string,
  ) {
    const readTimeoutMs = (opts.readTimeout ?? 60) * 1000;
    this.client = new S3Client({
      region,
      endpoint: opts.endpointUrl ?? undefined,
      // Custom endpoints (MinIO, Ceph, s3rver) address buckets in the path, as boto3 does for them.
      forcePathStyle: !!opts.endpointUrl,
      profile: opts.profile ?? undefined,
      maxAttempts: opts.maxAttempts ?? 3,
      // Bounded: a connection that is not up within 10 s, or a response that does not come within
      // --read-timeout, fails that attempt; maxAttempts bounds the whole.
      requestHandler: { connectionTimeout: 10_000, requestTimeout: readTimeoutMs },
      // Only the checksums a request requires: S3-compatible servers often know no others.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  }

  static async open(opts: S3Options): Promise<S3Storage> {
    // The SDK warns on stderr about Node versions it will drop; archive_command output is no place for it.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    return new S3Storage(opts, await resolveRegion(opts.profile));
  }

  get containerName(): string {
    return this.opts.bucket;
  }

  private async send<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw s3Error(what, err);
    }
  }

  private writeArgs(opts: PutOptions): Record<string, unknown> {
    const args: Record<string, unknown> = {};
    if (this.opts.encryption) args.ServerSideEncryption = this.opts.encryption as ServerSideEncryption;
    if (this.opts.kmsKeyId) args.SSEKMSKeyId = this.opts.kmsKeyId;
    if (opts.tags && opts.tags.length > 0) args.Tagging = new URLSearchParams(opts.tags.map(([k, v]) => [k, v])).toString();
    if (opts.metadata && Object.keys(opts.metadata).length > 0) args.Metadata = { ...opts.metadata };
    return args;
  }

  async containerExists(): Promise<boolean> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.opts.bucket }));
      return true;
    } catch (err) {
      if (statusOf(err) === 404 || (err as AwsLikeError).name === 'NotFound' || (err as AwsLikeError).name === 'NoSuchBucket') return false;
      throw s3Error(`cannot access bucket ${this.opts.bucket}`, err);
    }
  }

  async createContainer(): Promise<void> {
    const region = await this.client.config.region();
    await this.send(`cannot create bucket ${this.opts.bucket}`, async () => {
      try {
        await this.client.send(
          new CreateBucketCommand({
            Bucket: this.opts.bucket,
            ACL: 'private',
            ...(region !== 'us-east-1' ? { CreateBucketConfiguration: { LocationConstraint: region as BucketLocationConstraint } } : {}),
          }),
        );
      } catch (err) {
        const name = (err as AwsLikeError).name;
        if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw err;
      }
    });
  }

  async put(key: string, body: Buffer, opts: PutOptions = {}): Promise<void> {
    await this.send(`cannot upload ${key}`, () =>
      this.client.send(new PutObjectCommand({ Bucket: this.opts.bucket, Key: key, Body: body, ContentLength: body.length, ...this.writeArgs(opts) })),
    );
  }

  async get(key: string): Promise<GetResult | null> {
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.opts.bucket, Key: key }));
      return { body: res.Body as Readable, size: Number(res.ContentLength ?? 0), metadata: res.Metadata ?? {} };
    } catch (err) {
      const name = (err as AwsLikeError).name;
      if (name === 'NoSuchKey' || (statusOf(err) === 404 && name !== 'NoSuchBucket')) return null;
      throw s3Error(`cannot download ${key}`, err);
    }
  }

  async list(prefix: string, delimiter?: string): Promise<Listing> {
    const objects: ObjectInfo[] = [];
    const prefixes: string[] = [];
    let token: string | undefined;
    do {
      const res = await this.send(`cannot list ${prefix || '/'} in bucket ${this.opts.bucket}`, () =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.opts.bucket, Prefix: prefix, Delimiter: delimiter, ContinuationToken: token })),
      );
      for (const o of res.Contents ?? []) if (o.Key !== undefined) objects.push({ key: o.Key, size: Number(o.Size ?? 0) });
      for (const p of res.CommonPrefixes ?? []) if (p.Prefix !== undefined) prefixes.push(p.Prefix);
      token = res.IsTruncated ? res.NextContinuationToken : undefined;
    } while (token);
    return { objects, prefixes };
  }

  async deleteBatch(keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return;
    const res = await this.send('cannot delete objects', () =>
      this.client.send(new DeleteObjectsCommand({ Bucket: this.opts.bucket, Delete: { Objects: keys.map((Key) => ({ Key })), Quiet: true } })),
    );
    const errors = (res.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
    if (errors.length > 0) {
      const first = errors[0];
      throw new StorageError(`cannot delete ${errors.length} object(s), first ${first?.Key}: ${first?.Code} ${first?.Message ?? ''}`.trim(), 'other');
    }
  }

  async startMultipart(key: string, opts: PutOptions = {}): Promise<MultipartUpload> {
    const { bucket } = this.opts;
    const created = await this.send(`cannot start the upload of ${key}`, () =>
      this.client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ...this.writeArgs(opts) })),
    );
    const uploadId = created.UploadId as string;
    const etags = new Map<number, string>();
    return {
      uploadPart: async (n, body) => {
        const res = await this.send(`cannot upload part ${n} of ${key}`, () =>
          this.client.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumber: n, Body: body, ContentLength: body.length })),
        );
        etags.set(n, res.ETag as string);
      },
      complete: async (count) => {
        const parts = Array.from({ length: count }, (_, i) => ({ PartNumber: i + 1, ETag: etags.get(i + 1) }));
        await this.send(`cannot complete the upload of ${key}`, () =>
          this.client.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: parts } })),
        );
      },
      abort: async () => {
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId })).catch(() => undefined);
      },
    };
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}
