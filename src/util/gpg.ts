/**
 * GnuPG plumbing for Barman's `encryption = gpg` (spec §1, §5.2, §7): files are encrypted for
 * a public key (`encryption_key_id`) with the real `gpg` program, as binary OpenPGP messages,
 * and decrypted with the passphrase printed by `encryption_passphrase_command`, which reaches
 * gpg through a pipe of its own (file descriptor 3): never on a command line, never in a file,
 * never in the log. Everything here runs gpg with argument arrays.
 */
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { BarmanError } from './errors.js';
import { runShell } from './proc.js';

/** What an encrypted tar file of a backup gets after its own name (`base.tar.gz.gpg`). */
export const GPG_SUFFIX = '.gpg';

/** How many leading bytes `isOpenPgpMessage` needs at most. */
export const OPENPGP_HEAD_BYTES = 16;

/** The start of an ASCII-armored message (`-----BEGIN PGP MESSAGE-----`), within OPENPGP_HEAD_BYTES. */
const ARMOR = Buffer.from('-----BEGIN PGP M');

/**
 * Does `head` (the first bytes of a file) start an encrypted OpenPGP message? An encrypted
 * message begins with a session key packet: public-key (tag 1, version 3 or 6) or symmetric
 * (tag 3, version 4 to 6), in the old or the new packet format; an ASCII-armored message with
 * its armor line. No WAL page (its magic is 0xD0xx..0xD1xx little-endian), history or label
 * text, nor any compressed format archived here starts like that, so this is how an encrypted
 * file is recognised, whatever key type made it (`file(1)` only knows RSA session keys).
 */
export function isOpenPgpMessage(head: Uint8Array): boolean {
  if (head.length >= ARMOR.length && Buffer.from(head.buffer, head.byteOffset, ARMOR.length).equals(ARMOR)) return true;
  const first = head[0];
  if (first === undefined || (first & 0x80) === 0) return false;
  let tag: number;
  let bodyAt: number;
  if (first & 0x40) {
    // New format: tag in the low 6 bits, then a 1, 2 or 5 byte length.
    tag = first & 0x3f;
    const l0 = head[1];
    if (l0 === undefined) return false;
    if (l0 < 192) bodyAt = 2;
    else if (l0 < 224) bodyAt = 3;
    else if (l0 === 255) bodyAt = 6;
    else return false; // partial body lengths never start a session key packet
  } else {
    // Old format: tag in bits 5..2, length type in bits 1..0 (3 = indeterminate: not for these packets).
    tag = (first >> 2) & 0x0f;
    const lengthType = first & 0x03;
    if (lengthType === 3) return false;
    bodyAt = 1 + [1, 2, 4][lengthType]!;
  }
  const version = head[bodyAt];
  if (version === undefined) return false;
  if (tag === 1) return version === 3 || version === 6;
  if (tag === 3) return version >= 4 && version <= 6;
  return false;
}

/** Is the file at `file` (or an open handle) an encrypted OpenPGP message? */
export async function isEncryptedFile(file: string | fsp.FileHandle): Promise<boolean> {
  const head = Buffer.alloc(OPENPGP_HEAD_BYTES);
  const read = async (fh: fsp.FileHandle): Promise<number> => {
    let got = 0;
    while (got < head.length) {
      const { bytesRead } = await fh.read(head, got, head.length - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return got;
  };
  let got: number;
  if (typeof file === 'string') {
    const fh = await fsp.open(file, 'r');
    try {
      got = await read(fh);
    } finally {
      await fh.close();
    }
  } else {
    got = await read(file);
  }
  return isOpenPgpMessage(head.subarray(0, got));
}

/** How to run gpg: the program (path_prefix honoured) and its environment (GNUPGHOME, PATH). */
export interface GpgRunner {
  program: string;
  env: NodeJS.ProcessEnv;
}

/** The last meaningful line gpg wrote on stderr, turned into a message a DBA can act on. */
export function gpgFailure(stderr: string, code: number | null, signal: NodeJS.Signals | null): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.replace(/^gpg: /, '').trim())
    .filter((l) => l !== '');
  const all = lines.join('\n');
  if (/bad passphrase/i.test(all)) return 'bad passphrase (check encryption_passphrase_command)';
  if (/no passphrase given/i.test(all)) return 'no passphrase given (check encryption_passphrase_command)';
  if (/no secret key/i.test(all)) return 'no secret key for this file in the keyring of this user (GNUPGHOME)';
  if (/no public key|unusable public key|skipped: no public key|no valid addressees/i.test(all)) {
    return `the key of encryption_key_id is not usable for encryption in the keyring of this user (GNUPGHOME): ${lines.at(-1) ?? ''}`;
  }
  const last = lines.filter((l) => !/^(WARNING|Note): /i.test(l)).at(-1) ?? lines.at(-1);
  return last ?? (signal ? `killed by ${signal}` : `exit code ${code}`);
}

interface GpgRun {
  child: ReturnType<typeof spawn>;
  done: Promise<void>;
}

/**
 * Start gpg with `args`; the passphrase, if any, is written to its file descriptor 3 and the
 * pipe closed. `stdout` 'pipe' makes the output readable from `child.stdout`. `done` settles
 * when gpg has exited: a BarmanError (`what` and gpg's reason) on failure.
 */
function startGpg(gpg: GpgRunner, args: readonly string[], what: string, opts: { passphrase?: Uint8Array; stdout?: 'pipe' | 'ignore' }): GpgRun {
  const withPass = opts.passphrase !== undefined;
  const child = spawn(gpg.program, [...args], {
    env: gpg.env,
    stdio: ['ignore', opts.stdout ?? 'ignore', 'pipe', ...(withPass ? (['pipe'] as const) : [])],
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    // Bounded: only the last lines matter.
    stderr = (stderr + d).slice(-8192);
  });
  if (withPass) {
    const fd3 = child.stdio[3] as Writable | null;
    fd3?.on('error', () => undefined);
    fd3?.end(Buffer.from(opts.passphrase as Uint8Array));
  }
  const done = new Promise<void>((resolve, reject) => {
    child.on('error', (err) => reject(new BarmanError(`${what}: cannot run ${gpg.program}: ${err.message}`)));
    child.on('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new BarmanError(`${what}: gpg failed: ${gpgFailure(stderr, code, signal)}`));
    });
  });
  return { child, done };
}

// Not --quiet: the line that says why a decryption failed (bad passphrase) is only said without it.
const COMMON = ['--batch', '--yes', '--no-tty'];

/**
 * Encrypt `src` into `dst` for `recipient` (a binary OpenPGP message). `dst` is written by gpg,
 * then made private (0600) and fsynced; on failure it is removed. `compressed`: the input is
 * already compressed, so gpg's own compression would only cost CPU and is turned off (the
 * message format is the same; any gpg decrypts either).
 */
export async function gpgEncryptFile(gpg: GpgRunner, src: string, dst: string, recipient: string, opts: { compressed?: boolean } = {}): Promise<void> {
  const args = [
    ...COMMON,
    '--trust-model',
    'always',
    '--encrypt',
    '--recipient',
    recipient,
    ...(opts.compressed ? ['--compress-algo', 'none'] : []),
    '--output',
    dst,
    '--',
    src,
  ];
  try {
    await startGpg(gpg, args, `cannot encrypt ${path.basename(src)}`, {}).done;
    const fh = await fsp.open(dst, 'r+');
    try {
      await fh.chmod(0o600);
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (err) {
    await fsp.unlink(dst).catch(() => undefined);
    throw err;
  }
}

function decryptArgs(src: string, output: string): string[] {
  return [...COMMON, '--pinentry-mode', 'loopback', '--passphrase-fd', '3', '--output', output, '--decrypt', '--', src];
}

/**
 * Decrypt `src` into `dst` (created 0600; removed on failure). Not fsynced: decrypted copies
 * are temporary, or made durable by the caller with the rest of what it writes.
 */
export async function gpgDecryptFile(gpg: GpgRunner, src: string, dst: string, passphrase: Uint8Array): Promise<void> {
  // gpg creates the output with the umask: create it private first, gpg then writes into it.
  const fh = await fsp.open(dst, 'w', 0o600);
  await fh.close();
  try {
    await startGpg(gpg, decryptArgs(src, dst), `cannot decrypt ${path.basename(src)}`, { passphrase }).done;
    // gpg may have replaced the file (with the umask's mode): private again.
    await fsp.chmod(dst, 0o600);
  } catch (err) {
    await fsp.unlink(dst).catch(() => undefined);
    throw err;
  }
}

/** Decrypt `src` into memory (small files: history files, duplicate checks). */
export async function gpgDecryptToBuffer(gpg: GpgRunner, src: string, passphrase: Uint8Array): Promise<Buffer> {
  const run = startGpg(gpg, decryptArgs(src, '-'), `cannot decrypt ${path.basename(src)}`, { passphrase, stdout: 'pipe' });
  const chunks: Buffer[] = [];
  run.child.stdout?.on('data', (c: Buffer) => chunks.push(c));
  await run.done;
  return Buffer.concat(chunks);
}

/**
 * Decrypt `src` as a stream (a tar file piped into tar): the plain bytes never touch a disk.
 * `done` rejects when gpg fails; the caller must await it after the stream is consumed.
 */
export function gpgDecryptStream(gpg: GpgRunner, src: string, passphrase: Uint8Array): { stream: Readable; done: Promise<void>; kill: () => void } {
  const run = startGpg(gpg, decryptArgs(src, '-'), `cannot decrypt ${path.basename(src)}`, { passphrase, stdout: 'pipe' });
  return { stream: run.child.stdout as Readable, done: run.done, kill: () => run.child.kill('SIGTERM') };
}

/**
 * The passphrase `command` (a configured shell command) prints on stdout, as bytes. Its output
 * and errors are never logged or shown (they may hold the secret); an empty output or a
 * non-zero exit is an error naming the option, not the output.
 */
export async function passphraseFromCommand(command: string, env: NodeJS.ProcessEnv): Promise<Buffer> {
  const res = await runShell(command, { env, binary: true });
  if (res.code !== 0) throw new BarmanError(`encryption_passphrase_command failed with exit code ${res.code}`);
  const out = res.stdoutBytes ?? Buffer.alloc(0);
  if (out.length === 0) throw new BarmanError('encryption_passphrase_command printed an empty passphrase');
  return out;
}

/** A private (0700) temporary directory for decrypted copies; removed by the returned function. */
export async function privateTempDir(base: string, prefix: string): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await fsp.mkdtemp(path.join(base, prefix));
  await fsp.chmod(dir, 0o700);
  return { dir, remove: () => fsp.rm(dir, { recursive: true, force: true }) };
}
