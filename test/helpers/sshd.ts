/**
 * A real OpenSSH server for integration tests and the bench: `/usr/sbin/sshd -D -e` run as root
 * on 127.0.0.1 and a free port, with its own host key, public-key authentication only, and
 * authorized_keys files of its own (nothing in the users' homes is touched).
 *
 *   const sshd = await startSshd();
 *   const cfg = await sshd.clientConfigFor('postgres', ['barman']); // postgres may log in as barman
 *   await runAs('postgres', 'ssh', ['-F', cfg, 'barman@127.0.0.1', 'barman', '--version']);
 *   await sshd.stop();
 *
 * A remote `barman ...` resolves to this repository's CLI: sshd puts a directory holding a
 * `barman` wrapper (and a `barman-agent` one) first on the session PATH (SetEnv), as a package
 * install would.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { freePort, isRoot, lookupUser, makeTempDir, onExitCleanup, runAs, sleep, untrackTempDir } from './system.js';

const SSHD = '/usr/sbin/sshd';
/** Privilege-separation directory compiled into Debian's sshd; systemd normally creates it. */
const PRIVSEP_DIR = '/run/sshd';
const LOG_KEEP = 64 * 1024;
const START_TIMEOUT_MS = 20_000;

export interface SshdOptions {
  /** Extra sshd_config lines, appended after the defaults (sshd keeps the first value of most keywords, so these cannot override them). */
  extraConfig?: string[];
}

export interface Sshd {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** Private directory of this server (config, host key, authorized keys, client configs). */
  readonly dir: string;
  /** Directory first on the PATH of remote sessions (holds the `barman` wrapper). */
  readonly binDir: string;
  /**
   * Key pair for OS user `user` (created once, 0600, owned by that user) plus an ssh client
   * configuration for `ssh -F FILE` (Host 127.0.0.1 and the alias `barman-host`, this port,
   * that key, this server's host key as the only known host, BatchMode). Authorises the key
   * for every login user in `authorizeFor`. Returns the path of the client config.
   */
  clientConfigFor(user: string, authorizeFor?: readonly string[]): Promise<string>;
  /** Let `clientUser`'s key (created if needed) log in as `loginUser`. */
  authorize(loginUser: string, clientUser: string): Promise<void>;
  /** Server log so far (sshd -e writes it to stderr), for failure messages. */
  log(): string;
  /** Kill sshd and remove its directory. */
  stop(): Promise<void>;
}

interface ClientKey {
  privateKey: string;
  publicKey: string;
}

const running = new Set<ChildProcess>();
onExitCleanup(() => {
  for (const child of running) child.kill('SIGKILL');
});

/** Quote a value for an ssh/sshd config file (paths under /tmp never contain quotes). */
function cfgQuote(value: string): string {
  if (/["\n]/.test(value)) throw new Error(`unsupported character in ssh config value: ${value}`);
  return `"${value}"`;
}

function requireIds(user: string): { uid: number; gid: number } {
  const ids = lookupUser(user);
  if (!ids) throw new Error(`system user "${user}" does not exist`);
  return ids;
}

async function writeOwned(file: string, content: string, user: string, mode: number): Promise<void> {
  await fs.writeFile(file, content, { mode });
  await fs.chmod(file, mode);
  const ids = requireIds(user);
  await fs.chown(file, ids.uid, ids.gid);
}

/** Repository root, from the CLI script this build runs (dist/src/util/self.js → <repo>/bin/barman.js). */
function repoRoot(): string {
  return path.dirname(path.dirname(BARMAN_SCRIPT));
}

function sshdConfig(port: number, dir: string, binDir: string, extra: readonly string[]): string {
  return [
    `Port ${port}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${cfgQuote(path.join(dir, 'ssh_host_ed25519_key'))}`,
    `PidFile ${cfgQuote(path.join(dir, 'sshd.pid'))}`,
    // %u: one file per login user, so authorize() never edits a file another user reads.
    `AuthorizedKeysFile ${cfgQuote(path.join(dir, 'authorized_keys', '%u'))}`,
    'AuthenticationMethods publickey',
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    // The accounts of the Debian packages (postgres, barman) are "locked" (`!` in /etc/shadow);
    // without PAM, sshd refuses locked accounts even for keys, and with PAM it asks pam_unix,
    // which lets key logins through: so PAM stays on, as in Debian's stock sshd_config.
    'UsePAM yes',
    // Our files live in /tmp (world-writable parents), which StrictModes would reject.
    'StrictModes no',
    'PermitRootLogin no',
    'UseDNS no',
    'PrintMotd no',
    'PrintLastLog no',
    'X11Forwarding no',
    'AllowTcpForwarding no',
    'AllowAgentForwarding no',
    'PermitUserEnvironment no',
    // The bench opens hundreds of sessions in a row and restore prefetch opens many at once.
    'MaxStartups 200',
    'MaxSessions 200',
    'LoginGraceTime 30',
    'LogLevel VERBOSE',
    `SetEnv PATH=${binDir}:/usr/local/bin:/usr/bin:/bin`,
    ...extra,
    '',
  ].join('\n');
}

async function prepare(): Promise<void> {
  if (!isRoot()) throw new Error('startSshd() needs root: sshd must switch to the login users');
  if (!existsSync(SSHD)) throw new Error(`${SSHD} not found (install openssh-server)`);
  await fs.mkdir(PRIVSEP_DIR, { recursive: true, mode: 0o755 });
  await fs.chmod(PRIVSEP_DIR, 0o755);
}

/** Spawn sshd; resolves once it listens, rejects (with its log) if it exits first. */
function launch(configFile: string, logSink: (s: string) => void): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(SSHD, ['-D', '-e', '-f', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    let settled = false;
    const timer = setTimeout(() => finish(new Error(`sshd did not start listening within ${START_TIMEOUT_MS} ms\n${log}`)), START_TIMEOUT_MS);
    function finish(err?: Error): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) {
        child.kill('SIGKILL');
        reject(err);
      } else resolve(child);
    }
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      log += d;
      logSink(d);
      if (/Server listening on 127\.0\.0\.1 port/.test(log)) finish();
    });
    child.on('error', (err) => finish(new Error(`cannot run ${SSHD}: ${err.message}`)));
    child.on('exit', (code, signal) => finish(new Error(`sshd exited (${signal ?? code}) before listening\n${log}`)));
  });
}

export async function startSshd(opts: SshdOptions = {}): Promise<Sshd> {
  await prepare();
  // 0711: login users must reach (not list) the authorized_keys and client dirs inside.
  const dir = await makeTempDir('sshd-', { mode: 0o711 });
  const binDir = path.join(dir, 'bin');
  const keysDir = path.join(dir, 'authorized_keys');
  const clientsDir = path.join(dir, 'clients');
  for (const d of [binDir, keysDir, clientsDir]) await fs.mkdir(d, { mode: 0o755 });

  const wrapper = `#!/bin/sh\n# barman-ts test wrapper: a remote \`barman\` runs this checkout's CLI\nexec ${shQuote(process.execPath)} ${shQuote(path.join(repoRoot(), 'bin', 'barman.js'))} "$@"\n`;
  await fs.writeFile(path.join(binDir, 'barman'), wrapper, { mode: 0o755 });
  await fs.chmod(path.join(binDir, 'barman'), 0o755);
  // The barman-ts agent (transfer_method = agent), as a package install puts it on PATH.
  const agent = `#!/bin/sh\nexec ${shQuote(process.execPath)} ${shQuote(path.join(repoRoot(), 'bin', 'barman-agent'))} "$@"\n`;
  await fs.writeFile(path.join(binDir, 'barman-agent'), agent, { mode: 0o755 });
  await fs.chmod(path.join(binDir, 'barman-agent'), 0o755);

  const hostKey = path.join(dir, 'ssh_host_ed25519_key');
  await runAs('root', 'ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'barman-ts-test-host', '-f', hostKey], { check: true });
  const hostPub = (await fs.readFile(`${hostKey}.pub`, 'utf8')).trim().split(/\s+/).slice(0, 2).join(' ');

  let logText = '';
  const logSink = (s: string) => {
    logText = (logText + s).slice(-LOG_KEEP);
  };
  const configFile = path.join(dir, 'sshd_config');
  let child: ChildProcess | undefined;
  let port = 0;
  for (let attempt = 1; !child; attempt++) {
    port = await freePort();
    await fs.writeFile(configFile, sshdConfig(port, dir, binDir, opts.extraConfig ?? []), { mode: 0o600 });
    try {
      child = await launch(configFile, logSink);
    } catch (err) {
      // Another process took the port between freePort() and the bind: try another one.
      if (attempt < 5 && /Address already in use|Cannot bind any address/.test((err as Error).message)) continue;
      throw err;
    }
  }
  const proc = child;
  running.add(proc);
  proc.on('exit', () => running.delete(proc));

  const clientKeys = new Map<string, ClientKey>();
  const authorized = new Map<string, Set<string>>();

  async function keyOf(user: string): Promise<ClientKey> {
    const known = clientKeys.get(user);
    if (known) return known;
    const ids = requireIds(user);
    const userDir = path.join(clientsDir, user);
    await fs.mkdir(userDir, { mode: 0o700 });
    await fs.chown(userDir, ids.uid, ids.gid);
    const privateKey = path.join(userDir, 'id_ed25519');
    // Generated by the user itself, so the files are its own with ssh's modes (0600 / 0644).
    await runAs(user, 'ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `${user}@barman-ts-test`, '-f', privateKey], { check: true });
    await fs.chmod(privateKey, 0o600);
    const publicKey = (await fs.readFile(`${privateKey}.pub`, 'utf8')).trim();
    const key = { privateKey, publicKey };
    clientKeys.set(user, key);
    return key;
  }

  async function authorize(loginUser: string, clientUser: string): Promise<void> {
    requireIds(loginUser);
    const key = await keyOf(clientUser);
    const set = authorized.get(loginUser) ?? new Set<string>();
    set.add(key.publicKey);
    authorized.set(loginUser, set);
    // Read by sshd with the login user's privileges: owned by that user.
    await writeOwned(path.join(keysDir, loginUser), `${[...set].join('\n')}\n`, loginUser, 0o600);
  }

  async function clientConfigFor(user: string, authorizeFor: readonly string[] = []): Promise<string> {
    const key = await keyOf(user);
    for (const login of authorizeFor) await authorize(login, user);
    const userDir = path.dirname(key.privateKey);
    const knownHosts = path.join(userDir, 'known_hosts');
    // HostKeyAlias: the same known_hosts line serves every name the config accepts.
    await writeOwned(knownHosts, `barman-ts-test-sshd ${hostPub}\n`, user, 0o644);
    const config = path.join(userDir, 'ssh_config');
    const text = [
      'Host 127.0.0.1 localhost barman-host',
      '  HostName 127.0.0.1',
      `  Port ${port}`,
      `  IdentityFile ${cfgQuote(key.privateKey)}`,
      '  IdentitiesOnly yes',
      `  UserKnownHostsFile ${cfgQuote(knownHosts)}`,
      '  GlobalKnownHostsFile /dev/null',
      '  HostKeyAlias barman-ts-test-sshd',
      '  StrictHostKeyChecking yes',
      '  BatchMode yes',
      '  LogLevel ERROR',
      '  ConnectTimeout 20',
      '',
    ].join('\n');
    // ssh refuses a config file that others may write to: owned by the user, 0600.
    await writeOwned(config, text, user, 0o600);
    return config;
  }

  async function stop(): Promise<void> {
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise<void>((r) => proc.once('exit', () => r()));
      proc.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    }
    running.delete(proc);
    if (process.env.BTS_KEEP_TMP === '1') return;
    await fs.rm(dir, { recursive: true, force: true });
    untrackTempDir(dir);
  }

  return {
    host: '127.0.0.1',
    port,
    dir,
    binDir,
    clientConfigFor,
    authorize,
    log: () => logText,
    stop,
  };
}

/** Single-quote for /bin/sh (the wrapper script). */
function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
