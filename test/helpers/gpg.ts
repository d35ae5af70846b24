/**
 * A throw-away GnuPG home for encryption tests: one key pair (ed25519 + cv25519 encryption
 * subkey, fast to generate) protected by a passphrase, kept in a file that a configured
 * `encryption_passphrase_command` reads. The agent caches nothing, so a wrong passphrase is
 * really tried. `remove()` stops the agent and deletes everything.
 */
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { run, type RunResult } from '../../src/util/proc.js';
import { currentUser, isRoot, lookupUser } from './system.js';

export interface GpgHome {
  /** GNUPGHOME. */
  home: string;
  /** Fingerprint of the key (encryption_key_id). */
  fingerprint: string;
  passphrase: string;
  /** `cat <file>`: a value for encryption_passphrase_command. */
  passphraseCommand: string;
  /** Environment with GNUPGHOME set (for gpg runs of the test itself). */
  env: NodeJS.ProcessEnv;
  gpg(args: readonly string[], input?: string): Promise<RunResult>;
  /** Encrypt a file as Barman does (binary OpenPGP message for the key). */
  encrypt(src: string, dst: string): Promise<void>;
  remove(): Promise<void>;
}

/** Run as `owner` (root only), with GNUPGHOME. */
function gpgAs(owner: string | null, env: NodeJS.ProcessEnv, args: readonly string[], input?: string): Promise<RunResult> {
  if (owner && owner !== currentUser()) return run('runuser', ['-u', owner, '--', 'gpg', ...args], { env, input });
  return run('gpg', args, { env, input });
}

export async function createGpgHome(opts: { owner?: string; passphrase?: string } = {}): Promise<GpgHome> {
  const owner = opts.owner ?? null;
  // Short path: gpg-agent's socket lives there (sockaddr_un has room for ~108 bytes).
  const base = await fsp.mkdtemp(path.join(os.tmpdir(), 'gpgt-'));
  const home = path.join(base, 'h');
  await fsp.mkdir(home, { mode: 0o700 });
  await fsp.writeFile(path.join(home, 'gpg-agent.conf'), 'default-cache-ttl 0\nmax-cache-ttl 0\nallow-loopback-pinentry\n');
  const passphrase = opts.passphrase ?? 'correct horse battery staple';
  const passFile = path.join(base, 'passphrase');
  await fsp.writeFile(passFile, `${passphrase}\n`, { mode: 0o600 });
  if (owner && isRoot()) {
    const ids = lookupUser(owner);
    if (!ids) throw new Error(`no user ${owner}`);
    for (const p of [base, home, path.join(home, 'gpg-agent.conf'), passFile]) await fsp.chown(p, ids.uid, ids.gid);
  }
  const env: NodeJS.ProcessEnv = { ...process.env, GNUPGHOME: home };
  delete env.NODE_TEST_CONTEXT;
  const gpg = (args: readonly string[], input?: string) => gpgAs(owner, env, args, input);
  const gen = await gpg(['--batch', '--pinentry-mode', 'loopback', '--passphrase', passphrase, '--quick-gen-key', 'Barman Test <barman-test@example.invalid>', 'future-default', 'default', 'never']);
  if (gen.code !== 0) throw new Error(`gpg key generation failed: ${gen.stderr}`);
  const list = await gpg(['--batch', '--with-colons', '--list-keys']);
  const fingerprint = /^fpr:+([0-9A-F]{40}):/m.exec(list.stdout)?.[1];
  if (!fingerprint) throw new Error(`no fingerprint in: ${list.stdout}`);
  return {
    home,
    fingerprint,
    passphrase,
    passphraseCommand: `cat ${passFile}`,
    env,
    gpg,
    async encrypt(src, dst) {
      const r = await gpg(['--batch', '--yes', '--trust-model', 'always', '--encrypt', '--recipient', fingerprint, '--output', dst, src]);
      if (r.code !== 0) throw new Error(`gpg --encrypt failed: ${r.stderr}`);
    },
    async remove() {
      await (owner && owner !== currentUser() ? run('runuser', ['-u', owner, '--', 'gpgconf', '--kill', 'all'], { env }) : run('gpgconf', ['--kill', 'all'], { env })).catch(() => undefined);
      await fsp.rm(base, { recursive: true, force: true });
    },
  };
}
