#!/usr/bin/env node
// barman-wal-archive for those who call it with node (`node bin/barman-wal-archive.js ...`).
// The usual entry is bin/barman-wal-archive (sh), which answers already-pushed segments
// without starting Node at all.
const { main } = await import('../dist/src/walclient/archive-main.js');
process.exitCode = await main();
