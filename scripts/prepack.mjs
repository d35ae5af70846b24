#!/usr/bin/env node
// npm's prepack step (after `npm run build`): makes the package contents that are not compiled
// TypeScript. Run by `npm pack`, `npm publish` and scripts/build-deb.sh.
//   1. removes compiled files in dist/src whose source is gone (they would ship otherwise);
//   2. writes dist/share: man pages (man1/*.1 for every executable of package.json `bin`,
//      man5/barman.5) and the commented sample barman.conf (src/cli/man/generate.ts);
//   3. copies package-lock.json to npm-shrinkwrap.json, which npm ships in the package: an
//      installation gets the dependency versions this checkout was tested with (and needs no
//      registry metadata, so it also works offline from npm's cache).
// `node scripts/prepack.mjs --postpack` (npm's postpack step) removes npm-shrinkwrap.json again.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const distSrc = path.join(root, 'dist', 'src');
const shrinkwrap = path.join(root, 'npm-shrinkwrap.json');

if (process.argv[2] === '--postpack') {
  rmSync(shrinkwrap, { force: true });
  process.exit(0);
}

if (!existsSync(path.join(distSrc, 'cli', 'main.js'))) {
  console.error('prepack: dist/src is not built (run `npm run build` first)');
  process.exit(1);
}

function prune(dir) {
  for (const ent of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, ent.name);
    if (ent.isDirectory()) {
      prune(p);
      if (readdirSync(p).length === 0) rmSync(p, { recursive: true });
      continue;
    }
    const src = path.join(root, path.relative(path.join(root, 'dist'), p)).replace(/\.js$/, '.ts');
    if (p.endsWith('.js') && !existsSync(src)) {
      console.log(`prepack: removing stale ${path.relative(root, p)}`);
      rmSync(p);
    }
  }
}
prune(distSrc);

execFileSync(process.execPath, [path.join(distSrc, 'cli', 'man', 'generate.js'), path.join(root, 'dist', 'share')], { stdio: 'inherit' });

copyFileSync(path.join(root, 'package-lock.json'), shrinkwrap);
