/**
 * Back-pressure for writable streams of either kind we write into: Node's own and the streamx
 * Writables of tar-stream entries (which are not Node streams but speak the same events).
 */

/** What is used of a writable stream (Node Writable or streamx Writable, e.g. a tar entry). */
export interface WritableSink {
  readonly destroyed: boolean;
  write(data: Buffer): boolean;
  end(data?: unknown): unknown;
  on(event: 'drain' | 'close' | 'error', fn: () => void): unknown;
  off(event: 'drain' | 'close' | 'error', fn: () => void): unknown;
}

/**
 * Resolve when the stream wants more data, or can take none any more (closed, failed): the
 * caller checks `destroyed` (or its own state) afterwards, so a dead stream never hangs it.
 */
export function drained(stream: Pick<WritableSink, 'on' | 'off'> & { readonly destroyed?: boolean }): Promise<void> {
  return new Promise((resolve) => {
    // Already gone (e.g. a pipe whose reader went away): no event will ever come.
    if (stream.destroyed === true) {
      resolve();
      return;
    }
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      stream.off('error', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
    stream.on('error', done);
  });
}
