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
import { Decoder, Encoder, isCodecName } from './codec.js';
import { parseFaults } from './faults.js';
import { PageHasher, isSeed } from './pages.js';
import {
  FrameReader,
  FrameWriter,
  GREETING,
  PROTOCOL_VERSION,
  ProtocolError,
  T,
  decodePages,
  decodeWithBinary,
  parseJson,
  type Hello,
  type HostHello,
} from './protocol.js';
import { serveList, serveRead, type ListRequest, type ReadRequest } from './serve-read.js';
import { WriteServer, type TreeRequest, type WriteRequest } from './serve-write.js';

export const USAGE = `usage: barman-agent

The barman-ts agent. It is started by barman on the backup host through ssh_command (backups
with transfer_method = agent) or --remote-ssh-command (restores), and speaks a binary protocol
on its standard input and output: it is not meant to be run by hand.`;

/** The agent's stdout: asynchronous writes to the pipe (process.stdout writes to pipes synchronously). */
function openStdout(): { stream: fs.WriteStream; out: FrameWriter } {
  const stream = fs.createWriteStream('', { fd: 1, highWaterMark: 1 << 20 });
  return { stream, out: new FrameWriter(stream) };
}

async function serve(stream: fs.WriteStream, out: FrameWriter): Promise<number> {
  const faults = parseFaults(process.env.BARMAN_TS_AGENT_FAULT);
  const reader = new FrameReader(process.stdin);
  stream.write(GREETING);
  const protocol = faults.protocol ?? PROTOCOL_VERSION;
  await out.json(T.HELLO, { protocol, version: BARMAN_TS_VERSION, pid: process.pid } satisfies Hello);
  const first = await reader.next();
  if (!first) return 0;
  if (first.type !== T.HELLO) throw new ProtocolError('the backup host did not start with HELLO');
  const hello = parseJson<HostHello>(first.body, 'HELLO');
  // Another protocol: the backup host, which knows both versions, reports it. Just leave.
  if (hello.protocol !== protocol) return 3;
  if (!isCodecName(hello.codec) || !isSeed(hello.seed)) throw new ProtocolError('HELLO without a valid codec and seed');
  const hasher = await PageHasher.create(hello.seed);
  const encoder = new Encoder(hello.codec, hello.level);
  const decoder = new Decoder();
  const writes = new WriteServer(out, hasher, decoder);
  const readCtx = { out, hasher, encoder, faults };
  try {
    for (;;) {
      // Borrowed: each request is served before the next one is read (WRITE copies its map).
      const f = await reader.next(true);
      if (!f || f.type === T.BYE) break;
      switch (f.type) {
        case T.LIST:
          await serveList(parseJson<ListRequest>(f.body, 'LIST'), out);
          break;
        case T.READ: {
          const { value, bin } = decodeWithBinary<ReadRequest>(f.body, 'READ');
          await serveRead(value, bin, readCtx);
          break;
        }
        case T.TREE:
          await writes.tree(parseJson<TreeRequest>(f.body, 'TREE'));
          break;
        case T.WRITE: {
          const { value, bin } = decodeWithBinary<WriteRequest>(f.body, 'WRITE');
          await writes.write(value, bin);
          break;
        }
        case T.PAGES:
          await writes.pages(decodePages(f.body));
          break;
        case T.WRITE_END:
          await writes.end(parseJson<{ id: number }>(f.body, 'WRITE_END').id);
          break;
        case T.FINISH:
          await writes.finish(parseJson<{ dirs: [string, number, number][]; sync: string[] }>(f.body, 'FINISH'));
          break;
        default:
          throw new ProtocolError(`unknown request type ${f.type}`);
      }
    }
  } finally {
    await writes.closeAll();
  }
  return 0;
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
