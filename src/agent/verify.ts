/**
 * `verify-backup` without PostgreSQL: every file of a plain backup is read and its size and
 * SHA-256 compared with what was recorded when it was taken: the barman-ts agent's metadata
 * (every file, checksummed on the database host as it was read) and the backup_manifest's SHA256
 * entries (backup_label, tablespace_map, and every file of a backup the agent did not take).
 * Files missing, changed, or present but recorded nowhere are reported, one line each.
 */
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { backupDataDir, type BackupEntry } from '../catalog/catalog.js';
import { MANIFEST_NAME, backupFiles, sha256File } from '../backup/manifest.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { runPool } from '../util/pool.js';
import { StoreReader } from './store.js';

export interface ChecksumReport {
  ok: boolean;
  files: number;
  bytes: number;
  /** Where the expected checksums came from. */
  sources: ('agent' | 'manifest')[];
  problems: string[];
}

interface Expected {
  size: number;
  sha256: string;
}

/** SHA256 entries of a backup_manifest, by path; null when there is no manifest. */
async function manifestChecksums(file: string): Promise<Map<string, Expected> | null> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new BarmanError(`cannot read ${file}: ${errorMessage(err)}`);
  }
  let doc: { Files?: Record<string, unknown>[] };
  try {
    doc = JSON.parse(text) as typeof doc;
  } catch {
    throw new BarmanError(`${file} is not a valid backup manifest`);
  }
  const out = new Map<string, Expected>();
  for (const f of doc.Files ?? []) {
    const p = typeof f.Path === 'string' ? f.Path : typeof f['Encoded-Path'] === 'string' ? Buffer.from(f['Encoded-Path'], 'hex').toString('utf8') : null;
    if (p === null || f['Checksum-Algorithm'] !== 'SHA256' || typeof f.Checksum !== 'string' || typeof f.Size !== 'number') continue;
    out.set(p, { size: f.Size, sha256: f.Checksum });
  }
  return out;
}

/** What the agent recorded, by manifest path (tablespace `<oid>/x` → `pg_tblspc/<oid>/x`). */
async function agentChecksums(srv: ServerConfig, id: string): Promise<Map<string, Expected> | null> {
  const reader = await StoreReader.open(srv, id);
  if (!reader) return null;
  try {
    if (!reader.meta.complete) return null;
    const out = new Map<string, Expected>();
    for (const rec of reader.files.values()) {
      const slash = rec.p.indexOf('/');
      const top = rec.p.slice(0, slash);
      const rest = rec.p.slice(slash + 1);
      out.set(top === 'data' ? rest : `pg_tblspc/${top}/${rest}`, { size: rec.s, sha256: rec.h });
    }
    return out;
  } finally {
    await reader.close();
  }
}

/**
 * Check a plain backup's files against the recorded checksums; null when nothing was recorded
 * (no agent metadata, no manifest with SHA-256 checksums).
 */
export async function verifyChecksums(srv: ServerConfig, entry: Pick<BackupEntry, 'id' | 'info'>, workers = Math.max(1, Math.min(4, os.availableParallelism()))): Promise<ChecksumReport | null> {
  const { id, info } = entry;
  if (info.compression) return null;
  const agent = await agentChecksums(srv, id);
  const manifest = await manifestChecksums(path.join(backupDataDir(srv, id), MANIFEST_NAME));
  const sources: ChecksumReport['sources'] = [];
  const expected = new Map<string, Expected>();
  if (manifest && manifest.size > 0) {
    sources.push('manifest');
    for (const [p, e] of manifest) expected.set(p, e);
  }
  if (agent) {
    sources.push('agent');
    for (const [p, e] of agent) expected.set(p, e);
  }
  if (sources.length === 0) return null;
  const found = await backupFiles(srv, entry);
  const problems: string[] = [];
  const onDisk = new Set(found.map((f) => f.rel));
  for (const p of expected.keys()) if (!onDisk.has(p)) problems.push(`${p}: missing`);
  let bytes = 0;
  let files = 0;
  await runPool(found, workers, async (f) => {
    const want = expected.get(f.rel);
    if (!want) {
      problems.push(`${f.rel}: present in the backup but recorded nowhere`);
      return;
    }
    const st = await fsp.stat(f.abs);
    if (st.size !== want.size) {
      problems.push(`${f.rel}: size ${st.size}, ${want.size} expected`);
      return;
    }
    const sha = await sha256File(f.abs);
    if (sha !== want.sha256) problems.push(`${f.rel}: checksum mismatch (the file changed since the backup was taken)`);
    files += 1;
    bytes += st.size;
  });
  problems.sort();
  return { ok: problems.length === 0, files, bytes, sources, problems };
}
