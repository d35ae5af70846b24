/**
 * `node dist/src/cli/install-check.js [-c CONFIG]`: what the Debian package's postinst prints
 * after an installation (see src/checks/install-preflight.ts). Read-only; always exits 0 unless
 * its own arguments are wrong, because a configuration problem must not fail the installation.
 */
import { preflight } from '../checks/install-preflight.js';

function main(argv: string[]): number {
  let config: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if ((a === '-c' || a === '--config') && argv[i + 1] !== undefined) config = argv[++i];
    else if (a?.startsWith('--config=')) config = a.slice('--config='.length);
    else {
      process.stderr.write(`usage: install-check.js [-c CONFIG]\n`);
      return 2;
    }
  }
  for (const f of preflight(config)) {
    const prefix = f.level === 'info' ? '' : `${f.level.toUpperCase()}: `;
    process.stdout.write(`barman-ts: ${prefix}${f.text}\n`);
  }
  return 0;
}

process.exitCode = main(process.argv.slice(2));
