/**
 * Buffers at page-aligned addresses (a WebAssembly memory is mapped whole, at a page boundary).
 *
 * Direct I/O needs them (agent/direct-io.ts). Ordinary reads gain from them too: on this
 * project's machines the kernel copies file data into a user buffer about five times faster when
 * the buffer's address is aligned to a cache line. Reading 512 MiB of a cached file in 1 MiB
 * reads took 60 ms into a 64-byte-aligned buffer and 309 ms into one 16 bytes further on, and
 * Node's own buffers (malloc's) are only 16-byte aligned. Hot read loops (the agent's reads,
 * delta comparisons, whole-file checksums) therefore read into these.
 */

const WASM_PAGE = 65536;

/** A buffer of `bytes` (best a multiple of 64 KiB: the memory is rounded up to one) at a page-aligned address. */
export function alignedBuffer(bytes: number): Buffer {
  const pages = Math.ceil(bytes / WASM_PAGE);
  return Buffer.from(new WebAssembly.Memory({ initial: pages, maximum: pages }).buffer, 0, bytes);
}

/** The same, shareable with worker threads. */
export function alignedSharedBuffer(bytes: number): SharedArrayBuffer {
  const pages = Math.ceil(bytes / WASM_PAGE);
  const memory: ArrayBufferLike = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true }).buffer;
  if (!(memory instanceof SharedArrayBuffer)) throw new Error('internal error: a shared WebAssembly memory is not a SharedArrayBuffer');
  return memory;
}
