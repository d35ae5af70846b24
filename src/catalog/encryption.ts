/**
 * `encryption = gpg` of a server (Barman 3.14+ format, spec §1, §3.2, §5.2, §7): what the
 * configuration must hold, how gpg is run for the server, and the passphrase that decrypts its
 * files. What is encrypted: every file archived into wals/ (stored under its plain name,
 * xlog.db's fifth column `gpg`), and the tar files of postgres-method backups (`.gpg` added
 * to their names, backup.info `encryption=gpg`). Reading either needs
 * `encryption_passphrase_command`.
 */
import type { ServerConfig } from '../config/config.js';
import { subprocessEnv } from '../postgres/binaries.js';
import { BarmanError } from '../util/errors.js';
import { gpgDecryptToBuffer, passphraseFromCommand, type GpgRunner } from '../util/gpg.js';
import { findProgram } from '../util/proc.js';

export const GPG_ENCRYPTION = 'gpg';

type EncryptionSettings = Pick<
  ServerConfig,
  'encryption' | 'encryption_key_id' | 'backup_method' | 'backup_compression' | 'backup_compression_format'
>;

/** Does the server encrypt what it stores (encryption = gpg)? */
export function encryptionEnabled(srv: Pick<ServerConfig, 'encryption'>): boolean {
  return srv.encryption === GPG_ENCRYPTION;
}

/**
 * What makes `encryption = gpg` unusable for backups, in Barman's words (its `check` hint and
 * its backup error), or null. Encrypted backups are pg_basebackup tar files, hence the rules.
 */
export function encryptionConfigProblem(srv: EncryptionSettings): string | null {
  if (!encryptionEnabled(srv)) return null;
  if (!srv.encryption_key_id) return 'Encryption is set as gpg, but encryption_key_id is unset';
  if (srv.backup_method !== 'postgres') return 'Encryption is set as gpg, but backup_method != postgres';
  if (!srv.backup_compression) return 'Encryption is set as gpg, but backup_compression is unset';
  if ((srv.backup_compression_format ?? 'tar') !== 'tar') return 'Encryption is set as gpg, but backup_compression_format != tar';
  return null;
}

/**
 * WAL files are encrypted whenever encryption = gpg: that only needs the key. Without it the
 * archiver refuses to archive (the files wait in incoming/ and streaming/, `check` fails)
 * rather than store them in clear.
 */
export function walEncryptionKey(srv: Pick<ServerConfig, 'name' | 'encryption' | 'encryption_key_id'>): string | null {
  if (!encryptionEnabled(srv)) return null;
  if (!srv.encryption_key_id) {
    throw new BarmanError(`Encryption is set as gpg, but encryption_key_id is unset: WAL files of server '${srv.name}' are not archived until it is set`);
  }
  return srv.encryption_key_id;
}

/** gpg for this server: path_prefix honoured; GNUPGHOME (or ~/.gnupg) of the barman user. */
export function gpgRunner(srv: Pick<ServerConfig, 'path_prefix'>): GpgRunner {
  const program = findProgram('gpg', srv.path_prefix ?? null);
  if (!program) throw new BarmanError("the 'gpg' program is not installed (needed by encryption = gpg): install GnuPG or set path_prefix");
  return { program, env: subprocessEnv(srv.path_prefix) };
}

/** One run of the passphrase command per server and process (a batch of WAL asks once). */
const passphrases = new Map<string, Promise<Buffer>>();

/**
 * The passphrase that decrypts the server's files, from `encryption_passphrase_command`.
 * `what` says what needs it, for the error when the option is not set.
 */
export function serverPassphrase(srv: Pick<ServerConfig, 'name' | 'encryption_passphrase_command' | 'path_prefix'>, what: string): Promise<Buffer> {
  const command = srv.encryption_passphrase_command;
  if (!command) {
    return Promise.reject(new BarmanError(`${what} is encrypted: set encryption_passphrase_command for server '${srv.name}' to decrypt it`));
  }
  const key = `${srv.name}\0${command}`;
  let p = passphrases.get(key);
  if (!p) {
    p = passphraseFromCommand(command, subprocessEnv(srv.path_prefix));
    passphrases.set(key, p);
    // A failed command is not cached: a later call may succeed (agent unlocked, vault back).
    p.catch(() => passphrases.delete(key));
  }
  return p;
}

/**
 * How the server's encrypted files are read: gpg and the passphrase, both looked up only when
 * an encrypted file is actually met (so a server without encryption needs neither).
 */
export interface ServerDecryptor {
  gpg: () => GpgRunner;
  passphrase: () => Promise<Buffer>;
}

export function serverDecryptor(srv: ServerConfig, what: string): ServerDecryptor {
  return { gpg: () => gpgRunner(srv), passphrase: () => serverPassphrase(srv, what) };
}

/** The decrypted content of an encrypted archived file (history files, duplicate checks). */
export async function decryptToBuffer(srv: ServerConfig, file: string, what: string): Promise<Buffer> {
  const d = serverDecryptor(srv, what);
  return gpgDecryptToBuffer(d.gpg(), file, await d.passphrase());
}
