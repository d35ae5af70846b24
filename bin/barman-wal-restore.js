#!/usr/bin/env node
// Node entry of barman-wal-restore (npm's bin). bin/barman-wal-restore (sh) is the fast one: it
// serves prefetched files without starting Node and execs dist/src/walclient/restore-main.js.
const { main } = await import('../dist/src/walclient/restore-main.js');
try {
  process.exitCode = await main();
} catch (err) {
  process.stderr.write(`ERROR: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 2;
}
