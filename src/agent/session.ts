/**
 * The backup host's end of one conversation with a barman-ts agent: the agent is started
 * through the administrator's ssh command (`sh -c '<ssh_command> "$@"' sh barman-agent`, in a
 * process group of its own so that ssh goes with it), or as a local child process; its greeting
 * and protocol version are checked; frames then go both ways. Whatever ends the conversation
 * early (ssh failing, the agent dying, garbage on its stdout, an ERROR it reports) becomes one
 * BarmanError that says what happened on which host.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BarmanError, lastLine } from '../util/errors.js';
import { logger } from '../util/log.js';
import { sshInvocation, streamingSshEnv } from '../util/ssh-command.js';
import { BARMAN_TS_VERSION } from '../version.js';
import { FrameReader, FrameWriter, PROTOCOL_VERSION, ProtocolError, T, parseJson, type Frame, type Hello, type HostHello } from './protocol.js';

const log = logger('agent');

/** dist/src/agent/session.js → <package>/bin/barman-agent */
export const AGENT_SCRIPT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'barman-agent');
/** The program run on the other host: barman-ts installs it on PATH beside barman-wal-archive. */
export const AGENT_COMMAND = 'barman-agent';
const STDERR_KEEP = 4096;

export interface AgentEndpoint {
  /** The admin's ssh command (ssh_command, --remote-ssh-command); null: run the agent here. */
  sshCommand: string | null;
  /** For messages: "the database host", "the recovery host", "this host". */
  where: string;
  env?: NodeJS.ProcessEnv;
}

export interface SessionOptions {
  codec: string;
  level: number;
  seed: string;
  signal?: AbortSignal;
}

export class AgentSession {
  private stderr = '';
  private exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private closed = false;
  private greeted = false;
  private helloSent = false;
  private agentPid = '?';
  private readonly reader: FrameReader;
  readonly writer: FrameWriter;
  agentVersion = '';

  private constructor(
    private readonly child: ChildProcess,
    readonly ep: AgentEndpoint,
  ) {
    if (!child.stdout || !child.stdin || !child.stderr) throw new BarmanError('internal error: agent started without pipes');
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      this.stderr = (this.stderr + d).slice(-STDERR_KEEP);
    });
    this.exited = new Promise((resolve) => {
      child.on('close', (code, signal) => resolve({ code, signal }));
      child.on('error', () => resolve({ code: null, signal: null }));
    });
    this.reader = new FrameReader(child.stdout);
    this.writer = new FrameWriter(child.stdin);
  }

  /** Bytes received from / sent to the agent (its stdout / stdin, what ssh carries). */
  get bytesIn(): number {
    return this.reader.bytes;
  }

  get bytesOut(): number {
    return this.writer.bytes;
  }

  /** Start an agent and say hello; throws a BarmanError if it cannot be used. */
  static async open(ep: AgentEndpoint, opts: SessionOptions): Promise<AgentSession> {
    const s = await AgentSession.connect(ep, opts.signal);
    try {
      await s.hello(opts);
    } catch (err) {
      s.kill();
      throw err;
    }
    return s;
  }

  /**
   * Start an agent and check its greeting and protocol version, without saying hello yet: the
   * ssh login and the agent's start-up (the slow part) can then overlap with other work while
   * what the conversation needs (codec, seed) is not known yet. The agent waits for hello().
   */
  static async connect(ep: AgentEndpoint, signal?: AbortSignal): Promise<AgentSession> {
    if (signal?.aborted) throw new BarmanError('interrupted');
    const t0 = Date.now();
    const inv = ep.sshCommand === null ? { cmd: process.execPath, args: [AGENT_SCRIPT] } : sshInvocation(ep.sshCommand, [AGENT_COMMAND]);
    log.debug(`starting the agent on ${ep.where}: ${inv.cmd} ${inv.args.join(' ')}`);
    const env = ep.env ?? process.env;
    const child = spawn(inv.cmd, inv.args, { env: ep.sshCommand === null ? env : streamingSshEnv(env), stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    const s = new AgentSession(child, ep);
    const onAbort = () => s.kill();
    signal?.addEventListener('abort', onAbort, { once: true });
    s.exited.then(() => signal?.removeEventListener('abort', onAbort)).catch(() => undefined);
    try {
      await s.greet();
    } catch (err) {
      s.kill();
      throw err;
    }
    log.debug(`agent on ${ep.where} ready in ${Date.now() - t0} ms`);
    return s;
  }

  /** The agent's greeting and HELLO: a barman-ts agent speaking our protocol version. */
  private async greet(): Promise<void> {
    let greeted: true | null;
    try {
      greeted = await this.reader.greeting();
    } catch (err) {
      if (err instanceof ProtocolError) {
        throw new BarmanError(`the program started as ${AGENT_COMMAND} on ${this.ep.where} is not a barman-ts agent: ${err.message}`);
      }
      throw err;
    }
    if (greeted === null) throw await this.deathError();
    this.greeted = true;
    const f = await this.next();
    if (f.type !== T.HELLO) throw new BarmanError(`the barman-ts agent on ${this.ep.where} did not say hello`);
    const hello = parseJson<Hello>(f.body, 'HELLO');
    this.agentVersion = String(hello.version ?? '?');
    if (hello.protocol !== PROTOCOL_VERSION) {
      throw new BarmanError(
        `the barman-ts agent on ${this.ep.where} (barman-ts ${this.agentVersion}) speaks protocol version ${String(hello.protocol)}, ` +
          `this barman-ts ${BARMAN_TS_VERSION} speaks version ${PROTOCOL_VERSION}: install the same barman-ts version on both hosts`,
      );
    }
    this.agentPid = String(hello.pid ?? '?');
  }

  /** Our HELLO (once, after connect()): how pages travel and are hashed in this conversation. */
  async hello(opts: Omit<SessionOptions, 'signal'>): Promise<void> {
    if (this.helloSent) throw new BarmanError('internal error: the agent was already greeted');
    this.helloSent = true;
    await this.json(T.HELLO, { protocol: PROTOCOL_VERSION, version: BARMAN_TS_VERSION, codec: opts.codec, level: opts.level, seed: opts.seed } satisfies HostHello);
    log.debug(`agent on ${this.ep.where}: barman-ts ${this.agentVersion} (pid ${this.agentPid})`);
  }

  /** Why the agent's output ended: how the process (ssh, or the agent itself) exited. */
  private async deathError(): Promise<BarmanError> {
    const { code, signal } = await Promise.race([this.exited, new Promise<{ code: null; signal: null }>((r) => setTimeout(() => r({ code: null, signal: null }), 5000).unref())]);
    const detail = lastLine(this.stderr);
    const tail = detail ? `: ${detail}` : '';
    if (this.ep.sshCommand !== null && code === 255) {
      return new BarmanError(
        this.greeted
          ? `the connection to ${this.ep.where} was lost (ssh exit code 255)${tail}`
          : `cannot reach ${this.ep.where} with '${this.ep.sshCommand}' (ssh exit code 255)${tail}`,
      );
    }
    if (code === 127) return new BarmanError(`${AGENT_COMMAND} was not found on ${this.ep.where} (install barman-ts there, with ${AGENT_COMMAND} on the PATH)${tail}`);
    const how = signal ? `was killed by ${signal}` : code === null ? 'stopped' : `exited with code ${code}`;
    return new BarmanError(`the barman-ts agent on ${this.ep.where} ${how}${tail}`);
  }

  /**
   * The next frame; an ERROR frame, the end of the stream or garbage become a BarmanError.
   * A `borrowed` frame is valid until the next call only (FrameReader.next).
   */
  async next(borrowed = false): Promise<Frame> {
    let f: Frame | null;
    try {
      f = await this.reader.next(borrowed);
    } catch (err) {
      if (err instanceof ProtocolError) throw new BarmanError(`the barman-ts agent on ${this.ep.where} sent something unexpected: ${err.message}`);
      throw await this.deathError();
    }
    if (f === null) throw await this.deathError();
    if (f.type === T.ERROR) {
      const { message } = parseJson<{ message?: string }>(f.body, 'ERROR');
      throw new BarmanError(`the barman-ts agent on ${this.ep.where} failed: ${message ?? 'unknown error'}`);
    }
    return f;
  }

  /** Like next(), and the frame must be of this type. */
  async expect(type: number, what: string): Promise<Frame> {
    const f = await this.next();
    if (f.type !== type) throw new BarmanError(`the barman-ts agent on ${this.ep.where} sent message type ${f.type} where ${what} was expected`);
    return f;
  }

  /** Send a frame; a closed pipe means the agent is gone: say why. */
  send(type: number, ...parts: Buffer[]): Promise<void> {
    return this.sendThen(null, type, ...parts);
  }

  /** Send a frame whose parts live in a pooled buffer (FrameWriter.sendThen). */
  async sendThen(release: (() => void) | null, type: number, ...parts: Buffer[]): Promise<void> {
    try {
      await this.writer.sendThen(release, type, ...parts);
    } catch {
      throw await this.deathError();
    }
  }

  async json(type: number, value: unknown): Promise<void> {
    await this.send(type, Buffer.from(JSON.stringify(value), 'utf8'));
  }

  /** End the conversation: BYE, then wait a little for the agent to exit (killed otherwise). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // An agent not greeted yet (prestart.ts) leaves on the end of its input alone.
    if (this.helloSent) await this.writer.json(T.BYE, {}).catch(() => undefined);
    this.child.stdin?.end();
    // unref: a pending timer would keep the whole command alive for ten seconds after the agent exited.
    const done = await Promise.race([this.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 10_000).unref())]);
    if (!done) this.kill();
  }

  /** Kill the agent's process group (sh, ssh and a local agent alike). */
  kill(): void {
    this.closed = true;
    const pid = this.child.pid;
    if (pid === undefined) return;
    try {
      process.kill(-pid, 'SIGTERM');
    } catch {
      // Already gone.
    }
  }
}
