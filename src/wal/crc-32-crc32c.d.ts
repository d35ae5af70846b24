/** SheetJS crc-32's CRC-32C (Castagnoli) module (CommonJS): signed 32-bit results; `seed` continues a CRC. */
declare module 'crc-32/crc32c.js' {
  const CRC32C: { buf(data: Uint8Array, seed?: number): number };
  export default CRC32C;
}
