/**
 * The agent's work once the backup host said hello: its requests, served one after the other
 * until BYE or the end of the input. Loaded by main.ts after the agent has greeted the backup
 * host (these modules take a while to load: it happens while the other side answers).
 */
import { Decoder, Encoder, isCodecName } from './codec.js';
import type { Faults } from './faults.js';
import { PageHasher, isSeed } from './pages.js';
import { FrameReader, FrameWriter, ProtocolError, T, decodePages, decodeRanges, decodeWithBinary, parseJson, type HostHello } from './protocol.js';
import { serveList, serveRead, serveReadPages, type ListRequest, type ReadPagesRequest, type ReadRequest } from './serve-read.js';
import { WriteServer, type TreeRequest, type WriteRequest } from './serve-write.js';

export async function serveRequests(reader: FrameReader, out: FrameWriter, hello: HostHello, faults: Faults): Promise<number> {
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
        case T.READ_PAGES: {
          const { value, bin } = decodeWithBinary<ReadPagesRequest>(f.body, 'READ_PAGES');
          if (!Number.isSafeInteger(value.from) || value.from < 0) throw new ProtocolError('READ_PAGES without a valid first page');
          await serveReadPages(value, decodeRanges(bin), readCtx);
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
