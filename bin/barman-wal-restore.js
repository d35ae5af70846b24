#!/usr/bin/env node
// Placeholder: the WAL shipping client arrives with the SSH work. Failing loudly is the only
// safe answer for an archive_command or restore_command (PostgreSQL retries; nothing is lost).
process.stderr.write('ERROR: barman-wal-restore is not available yet in this barman-ts version\n');
process.exitCode = 2;
