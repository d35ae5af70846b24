/**
 * The real Barman 3.4 (Debian 12's `barman` and `barman-cli` packages, Python) as the WAL bench's
 * reference, set up beside ours without disturbing it:
 *
 *   - the packages are installed if missing (apt-get, like pgbackrest); /etc/cron.d/barman, which
 *     the package adds, is removed: no cron daemon may run Python barman against our users' homes;
 *   - Barman 3.4's clients run `barman put-wal` / `barman get-wal` on the remote side BY NAME. The
 *     test sshd (test/helpers/sshd.ts) puts a directory holding a `barman` wrapper first on every
 *     session's PATH (SetEnv), and that wrapper runs our CLI. So Barman 3.4 gets a second sshd of
 *     its own whose wrapper runs /usr/bin/barman instead: the same `barman` system user, but
 *     every session on that port resolves `barman` to Python Barman, and ours are never affected;
 *   - Barman 3.4's clients call `ssh` by name with no way to pass `-F`, and ssh reads the login
 *     user's real home (not $HOME), which we must not edit: their archive/restore commands run with
 *     PATH starting at a directory whose `ssh` is `exec /usr/bin/ssh -F <config> "$@"`;
 *   - its own barman.conf, barman_home and log file under the bench root (the machine's
 *     /etc/barman.conf is never read: every call passes -c).
 */
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';

export interface Barman34 {
  /** Package version, e.g. 3.4.0-1. */
  version: string;
  /** archive_command (with %p) for Barman 3.4's barman-wal-archive to server `bench`. */
  archiveCommand: string;
  /**
   * restore_command (with %f %p) for Barman 3.4's barman-wal-restore; `spool` is its --spool-dir
   * (prefetched files wait there; a directory of the postgres user's), `extra` e.g. ' -p 32'.
   */
  restoreCommand(spool: string, extra: string): string;
  /** `/usr/bin/barman -c CONF archive-wal bench` as the barman user. */
  archiveWal(): Promise<void>;
  /** The ssh client configuration its clients use (`ssh -F`), e.g. to add ControlMaster lines. */
  sshConfig: string;
  /** Its sshd's log so far (for failure messages). */
  log(): string;
  stop(): Promise<void>;
}

export interface Barman34Options {
  /** Bench root (0755; the files created here are removed with it). */
  root: string;
  /** ssh cipher for the client config (the same one as every other ssh row). */
  cipher: string;
  /** conninfo of the bench cluster (Barman's config requires one; put-wal and get-wal never use it). */
  conninfo: string;
  /** Progress lines for the bench output. */
  say(line: string): void;
}

const PKG_BARMAN = '/usr/bin/barman';
const PKG_ARCHIVE = '/usr/bin/barman-wal-archive';
const PKG_RESTORE = '/usr/bin/barman-wal-restore';
const CRON_FILE = '/etc/cron.d/barman';

function sq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const firstLine = (s: string) => s.trim().split('\n').slice(-1)[0] ?? '';

/** Installs the packages if needed; returns the installed version of `barman`. Throws with the reason. */
export async function ensurePackages(say: (l: string) => void): Promise<string> {
  const { run } = await import('../src/util/proc.js');
  const version = async () => (await run('dpkg-query', ['-W', '-f=${Version}', 'barman'])).stdout.trim();
  if (!existsSync(PKG_BARMAN) || !existsSync(PKG_ARCHIVE) || !existsSync(PKG_RESTORE) || !(await version())) {
    say('  installing Debian barman + barman-cli for the Barman 3.4 rows (apt-get install -y barman barman-cli)');
    const inst = await run('apt-get', ['install', '-y', '-q', 'barman', 'barman-cli'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    if (inst.code !== 0) throw new Error(`apt-get install barman barman-cli failed: ${firstLine(inst.stderr)}`);
  }
  if (existsSync(CRON_FILE)) {
    // Debian's package runs `barman cron` every minute as the barman user; our tests own that user.
    await fs.rm(CRON_FILE, { force: true });
    say(`  removed ${CRON_FILE} (installed by the barman package)`);
  }
  const v = await version();
  if (!v.startsWith('3.4.')) throw new Error(`Debian's barman is ${v || 'not installed'}, not 3.4`);
  return v;
}

export async function setupBarman34(opts: Barman34Options): Promise<Barman34> {
  const version = await ensurePackages(opts.say);
  const { startSshd } = await import('../test/helpers/sshd.js');
  const sys = await import('../test/helpers/system.js');
  const { BARMAN_USER, POSTGRES_USER } = sys;

  const sshd = await startSshd();
  try {
    // This sshd's sessions must find Python Barman under the name `barman`.
    const wrapper = path.join(sshd.binDir, 'barman');
    await fs.writeFile(wrapper, `#!/bin/sh\n# bench: Barman 3.4's sshd runs Debian's Python barman\nexec ${PKG_BARMAN} "$@"\n`, { mode: 0o755 });
    await fs.chmod(wrapper, 0o755);

    const baseCfg = await sshd.clientConfigFor(POSTGRES_USER, [BARMAN_USER]);
    const cfg = path.join(path.dirname(baseCfg), 'ssh_config_bench');
    await fs.writeFile(cfg, `Ciphers ${opts.cipher}\n${await fs.readFile(baseCfg, 'utf8')}`, { mode: 0o600 });
    await sys.chownR(cfg, POSTGRES_USER);

    const binDir = path.join(opts.root, 'barman34-bin');
    await fs.mkdir(binDir, { mode: 0o755 });
    await fs.writeFile(path.join(binDir, 'ssh'), `#!/bin/sh\nexec /usr/bin/ssh -F ${sq(cfg)} "$@"\n`, { mode: 0o755 });
    await fs.chmod(path.join(binDir, 'ssh'), 0o755);

    const home = path.join(opts.root, 'barman34-home');
    await fs.mkdir(home, { mode: 0o700 });
    // Barman creates these in `barman cron`/`check`; made here so no call needs PostgreSQL.
    for (const d of ['incoming', 'wals', 'errors', 'streaming', 'base']) await fs.mkdir(path.join(home, 'bench', d), { recursive: true, mode: 0o700 });
    await sys.chownR(home, BARMAN_USER);
    const conf = path.join(opts.root, 'barman34.conf');
    await fs.writeFile(
      conf,
      [
        '[barman]',
        `barman_home = ${home}`,
        `barman_user = ${BARMAN_USER}`,
        `log_file = ${home}/barman.log`,
        'log_level = INFO',
        '',
        '[bench]',
        'description = barman-ts WAL bench (Barman 3.4 reference)',
        `conninfo = ${opts.conninfo}`,
        'backup_method = postgres',
        'archiver = on',
        'streaming_archiver = off',
        '',
      ].join('\n'),
      { mode: 0o644 },
    );

    // ssh wrapper first; /usr/bin next so that python3 is Debian's, whatever the caller's PATH.
    const env = `PATH=${sq(`${binDir}:/usr/bin:/bin`)}`;
    const archiveCommand = `${env} ${PKG_ARCHIVE} -c ${sq(conf)} 127.0.0.1 bench %p`;
    const restoreCommand = (spool: string, extra: string) => `${env} ${PKG_RESTORE} -c ${sq(conf)} --spool-dir ${sq(spool)}${extra} 127.0.0.1 bench %f %p`;

    // The same test Barman 3.4's clients run: connection, remote `barman` and the server config.
    const check = await sys.runAs(POSTGRES_USER, '/bin/sh', ['-c', `${env} ${PKG_ARCHIVE} -c ${sq(conf)} --test 127.0.0.1 bench DUMMY`]);
    if (check.code !== 0) throw new Error(`barman-wal-archive --test failed (exit ${check.code}): ${firstLine(check.stderr || check.stdout)}`);

    return {
      version,
      archiveCommand,
      restoreCommand,
      archiveWal: async () => {
        await sys.runAs(BARMAN_USER, PKG_BARMAN, ['-c', conf, 'archive-wal', 'bench'], { check: true });
      },
      sshConfig: cfg,
      log: () => sshd.log(),
      stop: () => sshd.stop(),
    };
  } catch (err) {
    await sshd.stop().catch(() => undefined);
    throw err;
  }
}
