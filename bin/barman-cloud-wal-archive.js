#!/usr/bin/env node
// barman-cloud-wal-archive (barman-ts): runs dist/src/cli/cloud/wal-archive.js.
process.stdout.on('error', (err) => {
  if (err.code !== 'EPIPE') throw err;
});
const { main } = await import('../dist/src/cli/cloud/wal-archive.js');
process.exitCode = 2;
process.exitCode = await main();
