/**
 * `get-wal --batch N [--accept-compression LIST]` (barman-ts extension): the names both ends of
 * the batch stream agree on. Kept apart from get-wal.ts so that barman-wal-restore, which runs
 * once per WAL file on the PostgreSQL host, does not load the server side to learn them.
 */

/** Name of the checksum member that ends a batch (same format as barman-wal-archive's). */
export const BATCH_CHECKSUM_MEMBER = 'SHA256SUMS';

/** With --accept-compression, `<name>.sha256` follows each member (one SHA256SUMS line). */
export const MEMBER_CHECKSUM_SUFFIX = '.sha256';

/**
 * Algorithms a client decompresses without the server's configuration (magic bytes known to
 * src/wal/compression.ts); `custom` is not among them: only the server has its filter.
 */
export const CLIENT_DECODABLE = ['gzip', 'bzip2', 'xz', 'zstd', 'lz4', 'snappy'] as const;
