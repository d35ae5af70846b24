/**
 * The npm package as a user gets it: `npm pack` of this checkout, then `npm install -g` of the
 * tarball into a scratch prefix (npm's cache first: the shrinkwrap pins what `npm ci` fetched).
 * The tarball holds what runs (compiled code, launchers, completion, man pages, README,
 * licence) and no tests; every executable of package.json `bin` starts, as root and as the
 * barman user, and answers --version and --help; the native dependencies load.
 *
 * The checkout is already built (`npm test` builds first), and other test files run from its
 * dist/ meanwhile: the pack runs npm's prepack step without its `npm run build` (which would
 * rewrite dist/ under them), that is scripts/prepack.mjs alone.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { PACKAGE_ROOT, packageBins } from '../../src/cli/man/generate.js';
import { run } from '../../src/util/proc.js';
import { BARMAN_USER, ensureBarmanUser, makeTempDir, removeTempDirs, runAs } from '../helpers/system.js';

const NPM_TIMEOUT = 15 * 60_000;

async function checked(cmd: string, args: readonly string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<string> {
  const res = await run(cmd, args, { cwd: opts.cwd, timeoutMs: opts.timeoutMs ?? 120_000 });
  assert.equal(res.code, 0, `${cmd} ${args.join(' ')} exited ${res.code}: ${(res.stderr || res.stdout).trim().split('\n').slice(-10).join('\n')}`);
  return res.stdout;
}

describe('npm package: pack, install -g into a scratch prefix, run every executable', () => {
  let dir: string;
  let tarball: string;
  let prefix: string;
  let entries: string[];
  let bins: Record<string, string>;

  before(async () => {
    await ensureBarmanUser();
    dir = await makeTempDir('npm-pkg-');
    prefix = path.join(dir, 'prefix');
    bins = await packageBins(PACKAGE_ROOT);
    try {
      await checked(process.execPath, [path.join(PACKAGE_ROOT, 'scripts', 'prepack.mjs')], { cwd: PACKAGE_ROOT });
      const out = await checked('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', dir], { cwd: PACKAGE_ROOT });
      tarball = path.join(dir, out.trim().split('\n').pop() ?? '');
    } finally {
      await run(process.execPath, [path.join(PACKAGE_ROOT, 'scripts', 'prepack.mjs'), '--postpack'], { cwd: PACKAGE_ROOT });
    }
    entries = (await checked('tar', ['-tzf', tarball])).split('\n').filter((l) => l !== '');
    await checked('npm', ['install', '-g', tarball, '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], {
      timeoutMs: NPM_TIMEOUT,
    });
  });
  after(removeTempDirs);

  it('holds the compiled code, launchers, completion, man pages, README, LICENSE and shrinkwrap, no tests or sources', () => {
    const has = (p: string) => entries.includes(`package/${p}`);
    for (const p of ['package.json', 'README.md', 'LICENSE', 'npm-shrinkwrap.json', 'scripts/barman-completion.bash', 'dist/src/cli/main.js', 'dist/share/man/man1/barman.1', 'dist/share/man/man5/barman.5', 'dist/share/barman.conf']) {
      assert.ok(has(p), `tarball lacks ${p}`);
    }
    for (const [name, rel] of Object.entries(bins)) {
      assert.ok(has(rel.replace(/^\.\//, '')), `tarball lacks the launcher of ${name} (${rel})`);
      if (name !== 'barman') assert.ok(has(`dist/share/man/man1/${name}.1`), `tarball lacks ${name}(1)`);
    }
    const unwanted = entries.filter((e) => /^package\/(test|bench|src|dist\/test|dist\/bench|node_modules|\.ci)\//.test(e) || /\.ts$/.test(e) && !e.endsWith('.d.ts'));
    assert.deepEqual(unwanted, []);
  });

  it('installs every executable of package.json bin, which answers --version and --help as root and as barman', async () => {
    const names = Object.keys(bins);
    assert.ok(names.length >= 13, `only ${names.length} executables in package.json bin`);
    for (const name of ['barman', 'barman-wal-archive', 'barman-wal-restore', 'barman-agent', 'barman-cloud-backup', 'barman-cloud-restore']) assert.ok(names.includes(name), name);
    for (const name of names) {
      const exe = path.join(prefix, 'bin', name);
      for (const user of ['root', BARMAN_USER]) {
        const version = await runAs(user, exe, ['--version'], { timeoutMs: 60_000 });
        assert.equal(version.code, 0, `${name} --version as ${user}: ${version.stderr}`);
        assert.match(version.stdout + version.stderr, name === 'barman' ? /barman-ts \d+\.\d+\.\d+/ : /\d+\.\d+\.\d+/, `${name} --version as ${user}`);
        const help = await runAs(user, exe, ['--help'], { timeoutMs: 60_000 });
        assert.equal(help.code, 0, `${name} --help as ${user}: ${help.stderr}`);
        assert.match(help.stdout + help.stderr, /usage:/i, `${name} --help as ${user}`);
      }
    }
  });

  it('runs a command that reads a configuration, and its native dependencies load', async () => {
    const conf = path.join(dir, 'barman.conf');
    await fsp.writeFile(conf, `[barman]\nbarman_home = ${dir}/home\nbarman_user = ${BARMAN_USER}\n\n[pg]\ndescription = "npm test"\nconninfo = host=/nonexistent dbname=postgres\nbackup_method = postgres\nstreaming_conninfo = host=/nonexistent\narchiver = on\n`);
    await fsp.chmod(conf, 0o644);
    const res = await runAs(BARMAN_USER, path.join(prefix, 'bin', 'barman'), ['-c', conf, '-f', 'json', 'list-servers'], { timeoutMs: 60_000 });
    assert.equal(res.code, 0, res.stderr);
    assert.deepEqual(Object.keys(JSON.parse(res.stdout) as object), ['pg']);
    const pkgDir = path.join(prefix, 'lib', 'node_modules', 'barman-ts');
    const deps = Object.keys((JSON.parse(await fsp.readFile(path.join(pkgDir, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }).dependencies);
    const load = await run(process.execPath, ['--input-type=module', '-e', `for (const d of ${JSON.stringify(deps)}) await import(d);`], { cwd: pkgDir, timeoutMs: 60_000 });
    assert.equal(load.code, 0, `dependencies do not load from the installed package: ${load.stderr}`);
    // package.json `man`: npm links the pages into the prefix's man directories.
    for (const name of Object.keys(bins)) await fsp.access(path.join(prefix, 'share', 'man', 'man1', `${name}.1`));
    await fsp.access(path.join(prefix, 'share', 'man', 'man5', 'barman.5'));
  });
});
