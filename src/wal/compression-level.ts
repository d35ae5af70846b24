/**
 * Compression levels as options give them (`compression_level`, `--compression-level`): kept
 * apart from compression.ts so that a program that only parses them (barman-wal-archive on
 * every WAL segment) does not load the compressors.
 */
import { BarmanError } from '../util/errors.js';

export type CompressionLevel = 'low' | 'medium' | 'high' | number;

/** Parse a `compression_level` option value: low, medium, high or an integer. */
export function parseCompressionLevel(text: string): CompressionLevel {
  const v = text.trim().toLowerCase();
  if (v === 'low' || v === 'medium' || v === 'high') return v;
  if (/^[-+]?\d+$/.test(v)) return Number(v);
  throw new BarmanError(`invalid compression level '${text}': expected low, medium, high or an integer`);
}
