#!/usr/bin/env node
// Test runner behind `npm test` (run after `npm run build`):
//   1. unit tests        dist/test/unit/**/*.test.js
//   2. integration tests dist/test/integration/**/*.test.js, 2 files at a time (real PostgreSQL)
//
//   npm test                     everything
//   npm test -- backup wal       only files whose path (under dist/test/) contains "backup" or "wal"
//   npm test -- --test-name-pattern=foo   options starting with "-" go to `node --test`
//
//   npm run test:unit            unit tests only (no root, no PostgreSQL needed)
//
// Integration tests need root (to run PostgreSQL as postgres and the CLI as barman), the
// `barman` system user and PostgreSQL 15's server binaries. When they cannot run, `npm test`
// fails with the reason and the way out (never a silent skip that exits 0): run it as root
// (sudo npm test), or select the unit tests only (npm run test:unit, or npm test -- unit/).
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const distTest = path.join(root, 'dist', 'test');
const isRoot = process.getuid?.() === 0;

const cliArgs = process.argv.slice(2);
const nodeOpts = cliArgs.filter((a) => a.startsWith('-'));
const filters = cliArgs.filter((a) => !a.startsWith('-'));

function banner(text) {
  process.stdout.write(`\n==== ${text} ====\n`);
}

/** Compiled test files under dist/test/<kind>, skipping stale ones whose .ts source is gone. */
function testFiles(kind) {
  const dir = path.join(distTest, kind);
  const out = [];
  const walk = (d) => {
    if (!existsSync(d)) return;
    for (const ent of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, ent.name);
      if (ent.isDirectory()) walk(p);
      else if (ent.name.endsWith('.test.js')) out.push(p);
    }
  };
  walk(dir);
  return out
    .filter((f) => {
      const src = path.join(root, path.relative(path.join(root, 'dist'), f)).replace(/\.js$/, '.ts');
      if (existsSync(src)) return true;
      process.stdout.write(`(skipping stale ${path.relative(root, f)}: no ${path.relative(root, src)})\n`);
      return false;
    })
    .filter((f) => filters.length === 0 || filters.some((s) => path.relative(distTest, f).includes(s)))
    .sort();
}

function userExists(name) {
  try {
    execFileSync('getent', ['passwd', name], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** True when this node is at least major.minor (test runner flags arrived during Node 20). */
function nodeAtLeast(major, minor) {
  const [ma, mi] = process.versions.node.split('.').map(Number);
  return ma > major || (ma === major && mi >= minor);
}

function runNodeTest(files, extra) {
  const args = ['--test'];
  if (process.stdout.isTTY) args.push('--test-reporter=spec');
  // A test file that leaves a handle open (socket, timer) must not hang the run.
  if (nodeAtLeast(20, 14)) args.push('--test-force-exit');
  args.push(...extra, ...nodeOpts, ...files);
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { stdio: 'inherit', cwd: root });
    const forward = (sig) => child.kill(sig);
    process.on('SIGINT', forward).on('SIGTERM', forward);
    child.on('close', (code, signal) => {
      process.off('SIGINT', forward).off('SIGTERM', forward);
      resolve(code ?? (signal ? 128 : 1));
    });
  });
}

function seconds(since) {
  return `${((Date.now() - since) / 1000).toFixed(1)}s`;
}

const results = [];

async function phase(name, files, extra) {
  banner(`${name} tests (${files.length} file${files.length === 1 ? '' : 's'})`);
  if (files.length === 0) {
    process.stdout.write(filters.length ? `no ${name} test file matches ${filters.join(', ')}\n` : `no ${name} test files\n`);
    results.push({ name, status: 'none' });
    return;
  }
  const t0 = Date.now();
  const code = await runNodeTest(files, extra);
  results.push({ name, status: code === 0 ? 'passed' : `FAILED (exit ${code})`, time: seconds(t0) });
}

if (!existsSync(distTest)) {
  process.stderr.write(`no ${path.relative(root, distTest)}: run \`npm run build\` first\n`);
  process.exit(1);
}

// Unit files wait on subprocesses (fake ssh, compression workers) as much as on the CPU: three at a time.
await phase('unit', testFiles('unit'), nodeAtLeast(20, 10) ? ['--test-concurrency=3'] : []);

const integration = testFiles('integration');
let skipReason;
if (!isRoot) {
  skipReason = `not running as root (uid ${process.getuid?.()}): the harness runs PostgreSQL as postgres and barman as barman, which needs root`;
  if (!userExists('barman')) skipReason += '; the `barman` system user does not exist either (useradd --system --user-group --home-dir /var/lib/barman --create-home --shell /bin/bash barman)';
} else if (!existsSync('/usr/lib/postgresql/15/bin/initdb') && !process.env.PG_BINDIR) {
  skipReason = 'PostgreSQL 15 server binaries not found in /usr/lib/postgresql/15/bin (apt-get install postgresql-15, or set PG_BINDIR)';
}
if (skipReason && integration.length > 0) {
  banner('integration tests');
  process.stderr.write(
    `ERROR: ${integration.length} integration test file(s) cannot run: ${skipReason}.\n` +
      'Run them as root (sudo npm test, or bash .ci/run on a fresh Debian 12), or run the unit tests only: npm run test:unit\n',
  );
  results.push({ name: 'integration', status: 'FAILED (cannot run)' });
} else {
  // Two files at a time (CI has 2 cores); a hung file fails after 15 minutes instead of stalling
  // CI (the agent and drill files take 5 to 10 minutes on a loaded 2-core machine).
  const extra = nodeAtLeast(20, 10) ? ['--test-concurrency=2'] : [];
  if (!nodeOpts.some((o) => o.startsWith('--test-timeout'))) extra.push('--test-timeout=900000');
  await phase('integration', integration, extra);
}

banner('summary');
for (const r of results) process.stdout.write(`${r.name.padEnd(12)} ${r.status}${r.time ? ` in ${r.time}` : ''}\n`);
const failed = results.some((r) => r.status.startsWith('FAILED'));
const ranNothing = results.every((r) => r.status === 'none');
if (ranNothing && filters.length) {
  process.stderr.write(`no test file matches ${filters.join(', ')}\n`);
  process.exit(1);
}
process.exit(failed ? 1 : 0);
