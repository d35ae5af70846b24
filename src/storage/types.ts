/**
 * The one storage interface of barman-ts: a flat namespace of objects named by `/`-separated
 * keys (no leading `/`), as object stores have, with streamed reads and writes, listing by
 * prefix, batched deletes and multipart uploads. Drivers: posix (a directory), aws-s3,
 * azure-blob-storage. Backup, restore, retention and WAL logic are written once against it
 * (src/cloud/), and test/integration/storage-conformance.test.ts holds every driver to it.
 */
import type { Readable } from 'node:stream';
import { BarmanError } from '../util/errors.js';

/** One stored object as listed. */
export interface ObjectInfo {
  key: string;
  size: number;
}

/** Result of a listing with a delimiter: objects right under the prefix, and "directories". */
export interface Listing {
  objects: ObjectInfo[];
  /** Common prefixes, each ending with the delimiter (`base/20240101T000000/`). */
  prefixes: string[];
}

/** Limits and features of a driver (the multipart and delete planners read them). */
export interface StorageCapabilities {
  /** Driver name as on the command line (`aws-s3`, `azure-blob-storage`, `posix`). */
  provider: string;
  /** Smallest part of a multipart upload (the last part may be smaller). */
  minPartSize: number;
  /** Most parts in one multipart upload. */
  maxParts: number;
  /** Largest object. */
  maxObjectSize: number;
  /** Most keys removed by one delete request. */
  maxDeleteBatch: number;
  /** Object metadata (string pairs) is stored with put and returned by get. */
  metadata: boolean;
}

/** Options of a write. */
export interface PutOptions {
  /** Object tags (S3 tagging, Azure blob index tags); ignored where the driver has none. */
  tags?: ReadonlyArray<readonly [string, string]> | null;
  /** User metadata (lowercase ASCII names); see StorageCapabilities.metadata. */
  metadata?: Readonly<Record<string, string>>;
}

/** A read: the body stream, its length and the metadata stored with the object. */
export interface GetResult {
  body: Readable;
  size: number;
  metadata: Record<string, string>;
}

/** An upload in progress; parts may be sent concurrently and in any order. */
export interface MultipartUpload {
  /** Send part `partNumber` (1-based); `body` is not reused by the caller until it resolves. */
  uploadPart(partNumber: number, body: Buffer): Promise<void>;
  /** Make the object visible, made of parts 1..partCount (with the metadata given at the start). */
  complete(partCount: number): Promise<void>;
  /** Give up: nothing of it remains visible (best effort for the parts). */
  abort(): Promise<void>;
}

export interface ObjectStorage {
  readonly capabilities: StorageCapabilities;
  /** The container (bucket) this storage works in, for messages. */
  readonly containerName: string;
  /** True when the bucket/container exists; network and permission problems throw. */
  containerExists(): Promise<boolean>;
  /** Create the bucket/container (already existing: no error). */
  createContainer(): Promise<void>;
  /** Store a whole object in one request (small objects: WAL, backup.info, annotations). */
  put(key: string, body: Buffer, opts?: PutOptions): Promise<void>;
  /** Read an object; null when it does not exist. */
  get(key: string): Promise<GetResult | null>;
  /** Objects under `prefix`: all of them, or with `delimiter` the level right under it. */
  list(prefix: string, delimiter?: string): Promise<Listing>;
  /** Remove up to capabilities.maxDeleteBatch keys in one request; missing keys are not errors. */
  deleteBatch(keys: readonly string[]): Promise<void>;
  /** Start a multipart upload of `key`. */
  startMultipart(key: string, opts?: PutOptions): Promise<MultipartUpload>;
  /** Release connections. */
  close(): Promise<void>;
}

/** What went wrong talking to storage: the CLI picks exit codes and wording from it. */
export type StorageErrorKind = 'network' | 'auth' | 'missing-container' | 'other';

export class StorageError extends BarmanError {
  constructor(
    message: string,
    readonly kind: StorageErrorKind,
    exitCode = 4,
  ) {
    super(message, exitCode);
    this.name = 'StorageError';
  }
}

/** Read a whole get() result into memory (small objects only). */
export async function readAll(result: GetResult): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of result.body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** get() + readAll(); null when the object does not exist. */
export async function getBuffer(storage: ObjectStorage, key: string): Promise<Buffer | null> {
  const res = await storage.get(key);
  return res ? readAll(res) : null;
}

/**
 * Delete any number of keys, in batches of at most `batchSize` (default: the driver's maximum);
 * `afterBatch` runs after each batch (a caller's fault point).
 */
export async function deleteKeys(storage: ObjectStorage, keys: readonly string[], batchSize?: number | null, afterBatch?: () => void): Promise<void> {
  const size = Math.max(1, Math.min(batchSize ?? storage.capabilities.maxDeleteBatch, storage.capabilities.maxDeleteBatch));
  for (let i = 0; i < keys.length; i += size) {
    await storage.deleteBatch(keys.slice(i, i + size));
    afterBatch?.();
  }
}

/** Every object under `prefix`, all levels. */
export async function listAll(storage: ObjectStorage, prefix: string): Promise<ObjectInfo[]> {
  return (await storage.list(prefix)).objects;
}
