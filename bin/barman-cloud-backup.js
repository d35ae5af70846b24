#!/usr/bin/env node
// barman-cloud-backup (barman-ts): runs dist/src/cli/cloud/backup.js.
process.stdout.on('error', (err) => {
  if (err.code !== 'EPIPE') throw err;
});
const { main } = await import('../dist/src/cli/cloud/backup.js');
process.exitCode = 2;
process.exitCode = await main();
