#!/usr/bin/env node
// `barman --version` is called by monitoring and packaging scripts: answer it without loading
// the CLI at all.
const args = process.argv.slice(2);
// A reader that goes away (`barman list-backups | head -1`) is not worth a stack trace; commands
// that must notice it (get-wal) watch their own writes.
process.stdout.on('error', (err) => {
  if (err.code !== 'EPIPE') throw err;
});
if (args.length === 1 && (args[0] === '--version' || args[0] === '-v')) {
  const { versionText } = await import('../dist/src/version.js');
  process.stdout.write(`${versionText()}\n`);
} else {
  const { main } = await import('../dist/src/cli/main.js');
  try {
    process.exitCode = await main();
  } catch (err) {
    process.stderr.write(`EXCEPTION: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}
