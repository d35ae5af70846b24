#!/usr/bin/env node
// barman-cloud-backup-show (barman-ts): runs dist/src/cli/cloud/backup-show.js.
process.stdout.on('error', (err) => {
  if (err.code !== 'EPIPE') throw err;
});
const { main } = await import('../dist/src/cli/cloud/backup-show.js');
process.exitCode = 2;
process.exitCode = await main();
