/**
 * `barman-agent`: the barman-ts agent, run on the database host (backups) or on the recovery
 * host (restores) by the backup host through the administrator's ssh command, or locally for a
 * local delta restore. It speaks the protocol of protocol.ts on stdin/stdout and does what the
 * backup host asks, one request after the other; stderr carries one line when it fails.
 *
 * It never prints anything else on stdout, holds no state between runs and exits when its
 * stdin closes (the backup host went away) or on BYE.
 */
import * as fs from 'node:fs';
import { BARMAN_TS_VERSION } from '../version.js';
import { parseFaults } from './faults.js';
import { FrameReader, FrameWriter, GREETING, PROTOCOL_VERSION, ProtocolError, T, parseJson, type Hello, type HostHello } from './protocol.js';

export const USAGE = `usage: barman-agent

The barman-ts agent. It is started by barman on the backup host through ssh_command (backups
with transfer_method = agent) or --remote-ssh-command (restores), and speaks a binary protocol
on its standard input and output: it is not meant to be run by hand.`;

/** The agent's stdout: asynchronous writes to the pipe (process.stdout writes to pipes synchronously). */
function openStdout(): { stream: fs.WriteStream; out: FrameWriter } {
  const stream = fs.createWriteStream('', { fd: 1, highWaterMark: 1 << 20 });
  return { stream, out: new FrameWriter(stream) };
}

/**
 * Greet at once, with as little loaded as possible (the backup host waits for this before it
 * goes on): the modules that do the work (serve.ts: hashing, compression, reading, writing)
 * load while the backup host answers.
 */
async function serve(stream: fs.WriteStream, out: FrameWriter): Promise<number> {
  const faults = parseFaults(process.env.BARMAN_TS_AGENT_FAULT);
  const reader = new FrameReader(process.stdin);
  stream.write(GREETING);
  const protocol = faults.protocol ?? PROTOCOL_VERSION;
  await out.json(T.HELLO, { protocol, version: BARMAN_TS_VERSION, pid: process.pid } satisfies Hello);
  const loading = import('./serve.js');
  loading.catch(() => undefined);
  const first = await reader.next();
  if (!first) return 0;
  if (first.type !== T.HELLO) throw new ProtocolError('the backup host did not start with HELLO');
  const hello = parseJson<HostHello>(first.body, 'HELLO');
  // Another protocol: the backup host, which knows both versions, reports it. Just leave.
  if (hello.protocol !== protocol) return 3;
  const { serveRequests } = await loading;
  return serveRequests(reader, out, hello, faults);
}

/** Entry point of bin/barman-agent. */
export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stderr.write(`${USAGE}\n`);
    return 0;
  }
  if (argv.includes('--version')) {
    process.stderr.write(`barman-agent (barman-ts ${BARMAN_TS_VERSION}), protocol ${PROTOCOL_VERSION}\n`);
    return 0;
  }
  const { stream, out } = openStdout();
  let code: number;
  try {
    code = await serve(stream, out);
  } catch (err) {
    const msg = (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
    // The same line on stderr (for logs) and, if the backup host still listens, as ERROR.
    process.stderr.write(`barman-agent: ${msg}\n`);
    await Promise.race([out.json(T.ERROR, { message: msg }).catch(() => undefined), new Promise((r) => setTimeout(r, 2000))]);
    code = 1;
  }
  await Promise.race([new Promise<void>((resolve) => stream.end(resolve)), new Promise((r) => setTimeout(r, 2000))]);
  return code;
}
