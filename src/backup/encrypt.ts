/**
 * encryption = gpg for postgres-method backups (Barman 3.14+ format): once pg_basebackup has
 * written its tar files, every `*.tar` / `*.tar.<ext>` of the backup's data directory
 * (base.tar.gz, <oid>.tar.gz, ...) is encrypted with gpg for encryption_key_id into
 * `<name>.gpg`, and the file in clear is removed. backup_manifest stays as it is (it holds
 * checksums, not data), as in Barman.
 *
 * Durability: each `.gpg` is written under a temporary name, fsynced and renamed; the
 * directory is fsynced before any file in clear is removed, and again after. An interruption
 * leaves a backup that is not DONE (the caller records it FAILED).
 */
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { gpgRunner } from '../catalog/encryption.js';
import { BarmanError } from '../util/errors.js';
import { fsyncDir } from '../util/fsutil.js';
import { GPG_SUFFIX, gpgEncryptFile } from '../util/gpg.js';
import { runPool } from '../util/pool.js';

/** The files Barman encrypts: `.tar` with at most one more extension. */
const TAR_FILE_RE = /\.tar(\.[^.]+)?$/;

export function isTarToEncrypt(name: string): boolean {
  return TAR_FILE_RE.test(name) && !name.endsWith(GPG_SUFFIX);
}

/**
 * Encrypt the tar files of `dataDir` for the server's key. Returns the names written
 * (`base.tar.gz.gpg`, ...). No tar file at all is an error: an encrypted backup without
 * encrypted data must never be recorded.
 */
export async function encryptTarBackup(srv: Pick<ServerConfig, 'encryption_key_id' | 'path_prefix'>, dataDir: string): Promise<string[]> {
  const key = srv.encryption_key_id;
  if (!key) throw new BarmanError('Encryption is set as gpg, but encryption_key_id is unset');
  const gpg = gpgRunner(srv);
  const names = (await fsp.readdir(dataDir)).filter(isTarToEncrypt).sort();
  if (names.length === 0) throw new BarmanError(`no tar file to encrypt in ${dataDir} (encryption needs backup_compression with the tar format)`);
  // Base and tablespaces at once, within the cores of this host (gpg is CPU bound).
  const workers = Math.max(1, Math.min(names.length, os.availableParallelism()));
  const written: string[] = [];
  try {
    await runPool(names, workers, async (name) => {
      const src = path.join(dataDir, name);
      const tmp = path.join(dataDir, `${name}${GPG_SUFFIX}.tmp`);
      // Compressed tars (base.tar.gz ...) gain nothing from gpg's own compression.
      await gpgEncryptFile(gpg, src, tmp, key, { compressed: /\.tar\.[^.]+$/.test(name) });
      await fsp.rename(tmp, path.join(dataDir, `${name}${GPG_SUFFIX}`));
      written.push(`${name}${GPG_SUFFIX}`);
    });
  } catch (err) {
    // Nothing half done stays behind; the files in clear are still complete.
    for (const n of names) await fsp.unlink(path.join(dataDir, `${n}${GPG_SUFFIX}.tmp`)).catch(() => undefined);
    throw err;
  }
  await fsyncDir(dataDir);
  for (const name of names) await fsp.unlink(path.join(dataDir, name));
  await fsyncDir(dataDir);
  return written.sort();
}
