/**
 * Where a drill's sandbox lives: this host, or a restore-test host reached through the
 * administrator's `--remote-ssh-command`. Both run the same small fixed `sh` scripts (values
 * are positional parameters, quoted for the remote shell by sshInvocation), so one code path
 * drives a local and a remote sandbox.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CHECK_SCRIPT, parseCheckOutput, remoteScriptWords, SCRIPT_DONE, lastErrorLine, type CheckProblem } from '../recovery/remote-shell.js';
import { BarmanError, errorMessage } from '../util/errors.js';
import { run, type RunResult } from '../util/proc.js';
import { sshInvocation } from '../util/ssh-command.js';

export interface HostRunOptions {
  input?: string;
  timeoutMs?: number;
}

/** Programs a drill needs, all from one PostgreSQL installation. */
export const DRILL_PROGRAMS = ['postgres', 'pg_ctl', 'psql', 'pg_amcheck', 'pg_checksums', 'pg_controldata'] as const;

/**
 * Finds the bin directory of PostgreSQL major version $1: the directories given after it
 * (path_prefix) first, then the usual install locations, then PATH. A directory qualifies when
 * `postgres -V` names that major version and every drill program is there. Prints the
 * directory, or `NOTFOUND <what was seen>`.
 */
export const FIND_BINDIR_SCRIPT = `
major=$1; shift
seen=
try() {
  [ -x "$1/postgres" ] || return 1
  v=$("$1/postgres" -V 2>/dev/null | sed -n 's/^postgres (PostgreSQL) \\([0-9][0-9]*\\).*/\\1/p')
  [ -n "$v" ] && seen="$seen $1/postgres:$v"
  [ "$v" = "$major" ] || return 1
  for p in ${DRILL_PROGRAMS.join(' ')}; do [ -x "$1/$p" ] || { seen="$seen $1/$p:missing"; return 1; }; done
  echo "$1"; exit 0
}
for d in "$@"; do try "$d"; done
for d in /usr/lib/postgresql/$major/bin /usr/pgsql-$major/bin /usr/local/pgsql-$major/bin /opt/postgresql/$major/bin /usr/local/pgsql/bin; do try "$d"; done
old=$IFS; IFS=:; for d in $PATH; do IFS=$old; try "$d"; done
echo "NOTFOUND$seen"
`;

/** What PostgreSQL logs (lc_messages = C) when it stops at its recovery target to pause. */
export const PAUSED_AT_TARGET = 'pausing at the end of recovery';

/** The postmaster as seen from outside: alive, its postmaster.pid status, paused at the target. */
export interface PostmasterState {
  alive: boolean;
  /** Line 8 of postmaster.pid: `starting`, `standby`, `ready`, `stopping`; '' when absent. */
  pm: string;
  /** Its log says it paused at the recovery target. */
  paused: boolean;
}

/**
 * $1 alive (and not a zombie: a postmaster reparented to an init that does not reap, as in
 * some containers, stays one after it exits), the status in postmaster.pid $2, and whether
 * log $3 says it paused at the target.
 */
const STATE_SCRIPT = `
pid=$1; pidfile=$2; log=$3
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  if [ -r "/proc/$1/stat" ]; then
    case "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null)" in Z*) return 1;; esac
  fi
  return 0
}
if alive "$pid"; then echo alive; else echo dead; fi
echo "pm:$(sed -n 8p "$pidfile" 2>/dev/null)"
tail -c 65536 "$log" 2>/dev/null | grep -q '${PAUSED_AT_TARGET}' && echo paused
echo ${SCRIPT_DONE}
`;

export function parseState(stdout: string): PostmasterState | null {
  if (!stdout.includes(SCRIPT_DONE)) return null;
  return { alive: /^alive$/m.test(stdout), pm: (/^pm:(.*)$/m.exec(stdout)?.[1] ?? '').trim(), paused: /^paused$/m.test(stdout) };
}

/** Free bytes for a directory that may not exist yet (its nearest existing parent). */
const FREE_SPACE_SCRIPT = `
d=$1
while [ ! -e "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done
echo "dir:$d"
df -Pk "$d" | tail -n 1
echo ${SCRIPT_DONE}
`;

/** Start $2... detached with its output in $1 (PostgreSQL's log); prints its PID. */
const SPAWN_SCRIPT = `
log=$1; shift
umask 077
nohup "$@" > "$log" 2>&1 < /dev/null &
echo "pid:$!"
`;

/** Remove $1 (the drill's directory) entirely, or only its contents when $2 = contents. */
const REMOVE_SCRIPT = `
d=$1
[ -e "$d" ] || [ -L "$d" ] || { echo ${SCRIPT_DONE}; exit 0; }
if [ "$2" = contents ]; then find "$d" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
else rm -rf "$d"; fi
echo ${SCRIPT_DONE}
`;

export interface DrillHost {
  readonly kind: 'local' | 'remote';
  /** `local`, or the ssh command. */
  readonly label: string;
  /** Run a program with arguments on the host. */
  run(argv: readonly string[], opts?: HostRunOptions): Promise<RunResult>;
  /** Run a fixed sh script with positional arguments on the host. */
  script(script: string, args: readonly string[], opts?: HostRunOptions): Promise<RunResult>;
  /** Start `argv` in the background, stdout and stderr into `logFile`; returns its PID. */
  spawnDetached(argv: readonly string[], logFile: string): Promise<number>;
  /** A new private (0700) directory under /tmp: short, so a Unix socket path fits in it. */
  makePrivateDir(): Promise<string>;
  writeFile(file: string, text: string): Promise<void>;
  /** The file's text, null when it does not exist. */
  readFile(file: string): Promise<string | null>;
  /** Remove a directory tree (or only what it contains). */
  remove(dir: string, what: 'all' | 'contents'): Promise<void>;
  /** Free bytes where `dir` is (or would be created). */
  freeBytes(dir: string): Promise<{ dir: string; bytes: number }>;
  /** Throw one line unless `dir` is absent or empty and no running server owns it. */
  checkSandboxDir(dir: string): Promise<void>;
  /** Does `dir` exist? */
  exists(dir: string): Promise<boolean>;
  /** Postmaster `pid`: alive, status in `pidFile`, paused at the target per `logFile`. */
  postmasterState(pid: number, pidFile: string, logFile: string): Promise<PostmasterState>;
}

const SCRIPT_TIMEOUT_MS = 10 * 60 * 1000;

abstract class BaseHost implements DrillHost {
  abstract readonly kind: 'local' | 'remote';
  abstract readonly label: string;
  abstract run(argv: readonly string[], opts?: HostRunOptions): Promise<RunResult>;
  abstract makePrivateDir(): Promise<string>;

  async checkSandboxDir(dir: string): Promise<void> {
    const res = await this.script(CHECK_SCRIPT, ['empty', dir], { timeoutMs: 120_000 });
    const problems = res.code === 0 ? parseCheckOutput(res.stdout) : null;
    if (problems === null) {
      throw new BarmanError(`Cannot check the drill directory '${dir}'${this.where}: ${lastErrorLine(res.stderr, res.stdout) || `exit code ${res.code}`}`);
    }
    const first = problems[0];
    if (first) throw new BarmanError(sandboxDirProblem(first, dir, this.where));
  }

  /** ` on the remote host` for messages, or nothing. */
  protected get where(): string {
    return this.kind === 'remote' ? ' on the remote host' : '';
  }

  script(script: string, args: readonly string[], opts: HostRunOptions = {}): Promise<RunResult> {
    return this.run(remoteScriptWords(script, args), { timeoutMs: SCRIPT_TIMEOUT_MS, ...opts });
  }

  /** A script that must print SCRIPT_DONE; throws `what` with the last error line otherwise. */
  protected async checkedScript(script: string, args: readonly string[], what: string): Promise<string> {
    const res = await this.script(script, args);
    if (res.code !== 0 || !res.stdout.includes(SCRIPT_DONE)) {
      throw new BarmanError(`${what} failed${this.kind === 'remote' ? ' on the remote host' : ''}: ${lastErrorLine(res.stderr, res.stdout) || `exit code ${res.code}`}`);
    }
    return res.stdout;
  }

  async spawnDetached(argv: readonly string[], logFile: string): Promise<number> {
    const res = await this.script(SPAWN_SCRIPT, [logFile, ...argv], { timeoutMs: 60_000 });
    const m = /^pid:(\d+)$/m.exec(res.stdout);
    if (res.code !== 0 || !m) throw new BarmanError(`cannot start ${path.basename(argv[0] ?? '')}: ${lastErrorLine(res.stderr, res.stdout) || `exit code ${res.code}`}`);
    return Number(m[1]);
  }

  async writeFile(file: string, text: string): Promise<void> {
    const res = await this.script(`umask 077; cat > "$1" && echo ${SCRIPT_DONE}`, [file], { input: text });
    if (res.code !== 0 || !res.stdout.includes(SCRIPT_DONE)) {
      throw new BarmanError(`cannot write ${file}: ${lastErrorLine(res.stderr, res.stdout) || `exit code ${res.code}`}`);
    }
  }

  async readFile(file: string): Promise<string | null> {
    const res = await this.script(`if [ -f "$1" ]; then echo ${SCRIPT_DONE}; cat "$1"; else echo MISSING; fi`, [file]);
    if (res.code !== 0) throw new BarmanError(`cannot read ${file}: ${lastErrorLine(res.stderr) || `exit code ${res.code}`}`);
    if (!res.stdout.startsWith(SCRIPT_DONE)) return null;
    return res.stdout.slice(SCRIPT_DONE.length + 1);
  }

  async remove(dir: string, what: 'all' | 'contents'): Promise<void> {
    await this.checkedScript(REMOVE_SCRIPT, [dir, what], `Removing ${dir}`);
  }

  async freeBytes(dir: string): Promise<{ dir: string; bytes: number }> {
    const out = await this.checkedScript(FREE_SPACE_SCRIPT, [dir], `Measuring the free space for ${dir}`);
    return parseDfOutput(out, dir);
  }

  async exists(dir: string): Promise<boolean> {
    const res = await this.script('[ -e "$1" ] && echo yes || echo no', [dir]);
    return res.stdout.trim() === 'yes';
  }

  async postmasterState(pid: number, pidFile: string, logFile: string): Promise<PostmasterState> {
    const res = await this.script(STATE_SCRIPT, [String(pid), pidFile, logFile], { timeoutMs: 120_000 });
    const st = parseState(res.stdout);
    if (!st) throw new BarmanError(`Cannot watch the sandbox PostgreSQL${this.where}: ${lastErrorLine(res.stderr, res.stdout) || `exit code ${res.code}`}`);
    return st;
  }
}

/** `dir:<d>` then the last line of `df -Pk`: available KiB is the 4th column. */
export function parseDfOutput(out: string, asked: string): { dir: string; bytes: number } {
  const dir = /^dir:(.*)$/m.exec(out)?.[1] ?? asked;
  const line = out.split('\n').find((l) => /^\S+\s+\d+\s+\d+\s+\d+\s+\d+%/.test(l.trim()));
  const kb = line ? Number(line.trim().split(/\s+/)[3]) : NaN;
  if (!Number.isFinite(kb)) throw new BarmanError(`cannot measure the free space for ${asked}: unexpected df output`);
  return { dir, bytes: kb * 1024 };
}

/** This host: the drill runs as the barman user. */
export class LocalHost extends BaseHost {
  readonly kind = 'local' as const;
  readonly label = 'local';

  constructor(private readonly env: NodeJS.ProcessEnv) {
    super();
  }

  run(argv: readonly string[], opts: HostRunOptions = {}): Promise<RunResult> {
    const [cmd, ...args] = argv;
    return run(cmd ?? 'true', args, { env: this.env, cwd: '/', ...opts });
  }

  override async spawnDetached(argv: readonly string[], logFile: string): Promise<number> {
    const [cmd, ...args] = argv;
    const fd = fs.openSync(logFile, 'a', 0o600);
    try {
      const child = spawn(cmd ?? 'false', args, { cwd: '/', env: this.env, detached: true, stdio: ['ignore', fd, fd] });
      const pid = await new Promise<number>((resolve, reject) => {
        child.once('error', (err) => reject(new BarmanError(`cannot start ${path.basename(cmd ?? '')}: ${err.message}`)));
        child.once('spawn', () => resolve(child.pid ?? 0));
      });
      // Reaped by libuv when it exits; never keeps this process alive.
      child.unref();
      return pid;
    } finally {
      fs.closeSync(fd);
    }
  }

  async makePrivateDir(): Promise<string> {
    return fsp.mkdtemp('/tmp/barman-drill-');
  }

  override async writeFile(file: string, text: string): Promise<void> {
    await fsp.writeFile(file, text, { mode: 0o600 });
  }

  override async readFile(file: string): Promise<string | null> {
    try {
      return await fsp.readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new BarmanError(`cannot read ${file}: ${errorMessage(err)}`);
    }
  }

  override async remove(dir: string, what: 'all' | 'contents'): Promise<void> {
    if (what === 'all') {
      await fsp.rm(dir, { recursive: true, force: true });
      return;
    }
    const names = await fsp.readdir(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    for (const n of names) await fsp.rm(path.join(dir, n), { recursive: true, force: true });
  }

  override async freeBytes(dir: string): Promise<{ dir: string; bytes: number }> {
    let d = path.resolve(dir);
    while (!fs.existsSync(d) && d !== '/') d = path.dirname(d);
    const st = await fsp.statfs(d);
    return { dir: d, bytes: Number(st.bavail) * Number(st.bsize) };
  }

  override async exists(dir: string): Promise<boolean> {
    return fs.existsSync(dir);
  }

  /** In-process: polling a local sandbox costs no process (replay keeps the CPU). */
  override async postmasterState(pid: number, pidFile: string, logFile: string): Promise<PostmasterState> {
    let alive = false;
    try {
      process.kill(pid, 0);
      const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
      alive = !/^Z/.test(stat.slice(stat.lastIndexOf(')') + 2));
    } catch (err) {
      alive = (err as NodeJS.ErrnoException).code === 'EPERM';
    }
    const pidText = await fsp.readFile(pidFile, 'utf8').catch(() => '');
    const pm = (pidText.split('\n')[7] ?? '').trim();
    return { alive, pm, paused: (await tailOf(logFile, 65536)).includes(PAUSED_AT_TARGET) };
  }
}

/** The last `bytes` of a file ('' when it cannot be read). */
async function tailOf(file: string, bytes: number): Promise<string> {
  let fh: fsp.FileHandle | null = null;
  try {
    fh = await fsp.open(file, 'r');
    const size = (await fh.stat()).size;
    const len = Math.min(size, bytes);
    const buf = Buffer.alloc(len);
    await fh.read(buf, 0, len, size - len);
    return buf.toString('utf8');
  } catch {
    return '';
  } finally {
    await fh?.close();
  }
}

/** A restore-test host reached through `--remote-ssh-command`. */
export class RemoteHost extends BaseHost {
  readonly kind = 'remote' as const;

  constructor(
    private readonly sshCommand: string,
    private readonly env: NodeJS.ProcessEnv,
  ) {
    super();
  }

  get label(): string {
    return this.sshCommand;
  }

  async run(argv: readonly string[], opts: HostRunOptions = {}): Promise<RunResult> {
    const inv = sshInvocation(this.sshCommand, argv);
    try {
      return await run(inv.cmd, inv.args, { env: this.env, ...opts });
    } catch (err) {
      throw new BarmanError(`Cannot run the remote ssh command: ${errorMessage(err)}`);
    }
  }

  async makePrivateDir(): Promise<string> {
    const res = await this.run(['mktemp', '-d', '/tmp/barman-drill-XXXXXXXXXX'], { timeoutMs: 120_000 });
    const dir = res.stdout.trim();
    if (res.code !== 0 || !dir.startsWith('/tmp/barman-drill-')) {
      throw new BarmanError(`Cannot create a private directory on the remote host: ${lastErrorLine(res.stderr, res.stdout) || `exit code ${res.code}`}`);
    }
    return dir;
  }

}

export function drillHost(sshCommand: string | null, env: NodeJS.ProcessEnv): DrillHost {
  return sshCommand ? new RemoteHost(sshCommand, env) : new LocalHost(env);
}

/** One line for a problem CHECK_SCRIPT found with the drill directory. */
export function sandboxDirProblem(p: CheckProblem, dir: string, where = ''): string {
  switch (p.code) {
    case 'RUNNING':
      return `The drill directory '${dir}'${where} is the data directory of a running PostgreSQL server (PID ${p.pid ?? '?'}): a drill never touches it`;
    case 'NOTEMPTY':
      return `The drill directory '${dir}'${where} is not empty: a drill restores only into an empty or new directory`;
    case 'NOTDIR':
      return `The drill directory '${dir}'${where} exists and is not a directory`;
    case 'UNREADABLE':
      return `Cannot read the drill directory '${dir}'${where}: permission denied`;
    case 'NOTWRITABLE':
      return `The drill directory '${dir}'${where} is not writable: permission denied`;
    case 'PARENT_NOTDIR':
      return `Cannot create the drill directory '${dir}'${where}: a parent is not a directory`;
    case 'PARENT_NOTWRITABLE':
      return `Cannot create the drill directory '${dir}'${where}: permission denied`;
  }
}
