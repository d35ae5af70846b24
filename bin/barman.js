#!/usr/bin/env node
import { main } from '../dist/src/cli/main.js';

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`EXCEPTION: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
