/**
 * `--help` of every command is the manual the DBA reads at night: each one must say what the
 * command does, explain every argument and option, give its exit status and an example. The
 * real executable is run (as a user would), a few commands at a time: 2 cores, shared machine.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { COMMANDS } from '../../src/cli/registry.js';
import { BARMAN_SCRIPT } from '../../src/util/self.js';

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function barman(args: readonly string[]): Promise<Result> {
  return new Promise((resolve) => {
    // COLUMNS is ignored by commander when stdout is a pipe (80 columns); set for clarity.
    const env = { ...process.env, COLUMNS: '80', NO_COLOR: '1' };
    execFile(process.execPath, [BARMAN_SCRIPT, ...args], { env, timeout: 120_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Run `fn` over `items` with at most `limit` in flight, results in input order. */
async function mapBounded<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** The lines of a commander section ("Options:", "Arguments:", "Commands:"), up to the blank line. */
function section(text: string, title: string): string[] {
  const lines = text.split('\n');
  const start = lines.indexOf(`${title}:`);
  if (start < 0) return [];
  const end = lines.findIndex((l, i) => i > start && l.trim() === '');
  return lines.slice(start + 1, end < 0 ? undefined : end);
}

/**
 * Entries of a section that have no description. An entry starts with two spaces and a
 * non-blank; commander pads the term and puts the description on the same line (wrapped
 * continuation lines are indented further, so they never look like entries).
 */
function undescribed(lines: readonly string[]): string[] {
  return lines.filter((l) => /^ {2}\S/.test(l) && !/^ {2}\S.*?\s{2,}\S/.test(l));
}

/** Description paragraph: the text between the usage line and the first section header. */
function description(text: string): string {
  const lines = text.split('\n');
  const usage = lines.findIndex((l) => l.startsWith('Usage:'));
  const header = lines.findIndex((l, i) => i > usage && /^(Arguments|Options|Commands):$/.test(l));
  return lines.slice(usage + 1, header < 0 ? undefined : header).join('\n').trim();
}

/** Text commander appends after its sections: the command's own manual. */
function manual(text: string): string {
  const idx = text.lastIndexOf('display help for command');
  return idx < 0 ? '' : text.slice(idx);
}

function assertManPage(name: string, r: Result): void {
  assert.equal(r.code, 0, `${name} --help exited ${r.code}: ${r.stderr}`);
  assert.equal(r.stderr, '', `${name} --help wrote to stderr`);
  assert.match(r.stdout, /^Usage: barman/m, name);
  assert.ok(description(r.stdout).length > 0, `${name}: no description`);
  // More than a one-liner: what the command does and when to use it.
  assert.ok(manual(r.stdout).length > 200, `${name}: no explanatory text after the options`);
  assert.match(r.stdout, /Exit status/, `${name}: no "Exit status"`);
  assert.match(r.stdout, /Examples?:?/, `${name}: no "Example"`);
  const options = section(r.stdout, 'Options');
  assert.ok(options.some((l) => l.includes('--help')), `${name}: no Options section`);
  assert.deepEqual(undescribed(options), [], `${name}: options without a description`);
  assert.deepEqual(undescribed(section(r.stdout, 'Arguments')), [], `${name}: arguments without a description`);
}

describe('--help of every command', () => {
  it('barman --help: description, commands with summaries, exit status, examples', async () => {
    const r = await barman(['--help']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(description(r.stdout).length > 0);
    assert.match(r.stdout, /Exit status/);
    assert.match(r.stdout, /Examples?:/);
    assert.deepEqual(undescribed(section(r.stdout, 'Options')), []);
    const commands = section(r.stdout, 'Commands');
    assert.deepEqual(undescribed(commands), [], 'commands without a summary');
    for (const c of COMMANDS) assert.ok(commands.some((l) => l.startsWith(`  ${c.name}`)), `${c.name} missing from barman --help`);
  });

  it('every registered command: description, every option explained, exit status, example', { timeout: 600_000 }, async () => {
    const results = await mapBounded(COMMANDS, 3, async (c) => ({ name: c.name, r: await barman([c.name, '--help']) }));
    for (const { name, r } of results) assertManPage(name, r);
  });

  it('an alias shows the same manual as its command', async () => {
    const [a, b] = await Promise.all([barman(['list-backup', '--help']), barman(['list-backups', '--help'])]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(a.stdout, b.stdout);
  });

  it('the checker itself: an option without description is caught', () => {
    const lines = ['  -x, --foo <v>   does foo', '  --bar', '                   wrapped continuation'];
    assert.deepEqual(undescribed(lines), ['  --bar']);
  });
});
