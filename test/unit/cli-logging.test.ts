/**
 * The real CLI's log file and console machinery: an unwritable log_file (missing directory, a
 * directory, a full disk, permission denied) costs one warning and never the operation;
 * `--log-level DEBUG` and the line format; passwords redacted; `-q`; `--color`.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatLogLine, DEFAULT_LOG_FORMAT } from '../../src/util/log.js';
import { useColor } from '../../src/cli/output.js';
import { makeCliFixture, type CliFixture } from '../helpers/cli-fixture.js';

const ESC = '\u001b';
const WARN_RE = /^WARNING: cannot write log file (.+): (.+); logging to stderr is off$/;

function fixture(global: Record<string, string> = {}): Promise<CliFixture> {
  return makeCliFixture({
    prefix: 'barman-logging-',
    global,
    server: { description: '"Logging test"', conninfo: 'host=127.0.0.1 port=1 user=barman password=secret connect_timeout=5' },
  });
}

const lines = (s: string) => s.split('\n').filter((l) => l !== '');

describe('unwritable log_file', () => {
  it('missing directory: one warning, the command works and exits 0', async () => {
    const f = await fixture();
    const log = path.join(f.root, 'no', 'such', 'dir', 'barman.log');
    await fsp.appendFile(f.configFile, '');
    const conf = await fsp.readFile(f.configFile, 'utf8');
    await fsp.writeFile(f.configFile, conf.replace('[barman]\n', `[barman]\nlog_file = ${log}\n`));
    const r = await f.run('list-servers');
    assert.equal(r.code, 0);
    assert.equal(r.stdout, 'pg - Logging test\n');
    const err = lines(r.stderr);
    assert.equal(err.length, 1, r.stderr);
    assert.match(err[0] ?? '', WARN_RE);
    assert.ok(err[0]?.includes(log));
    assert.equal(fs.existsSync(path.dirname(log)), false, 'nothing created');
  });

  it('a full disk (/dev/full): one warning however many lines, own exit code kept', async () => {
    const f = await fixture({ log_file: '/dev/full', log_level: 'DEBUG' });
    const r = await f.run('check', 'pg', 'nosuch');
    assert.equal(r.code, 1, 'the unknown server error decides the exit code');
    const err = lines(r.stderr);
    assert.equal(err.filter((l) => l.startsWith('WARNING:')).length, 1, r.stderr);
    assert.match(err.find((l) => l.startsWith('WARNING:')) ?? '', /ENOSPC/);
    assert.ok(err.some((l) => l === "ERROR: Unknown server 'nosuch'"), r.stderr);
  });

  it('a directory as log file: one warning, exit 0', async () => {
    const f = await fixture();
    const conf = await fsp.readFile(f.configFile, 'utf8');
    await fsp.writeFile(f.configFile, conf.replace('[barman]\n', `[barman]\nlog_file = ${f.root}\n`));
    const r = await f.run('list-servers', '--minimal');
    assert.equal(r.code, 0);
    assert.equal(r.stdout, 'pg\n');
    assert.match(r.stderr.trim(), WARN_RE);
  });

  it('permission denied: one warning, exit 0', { skip: process.getuid?.() === 0 ? 'root can write anywhere' : false }, async () => {
    const f = await fixture();
    const log = path.join(f.root, 'ro.log');
    await fsp.writeFile(log, '', { mode: 0o400 });
    const conf = await fsp.readFile(f.configFile, 'utf8');
    await fsp.writeFile(f.configFile, conf.replace('[barman]\n', `[barman]\nlog_file = ${log}\n`));
    const r = await f.run('list-servers', '--minimal');
    assert.equal(r.code, 0);
    assert.match(r.stderr.trim(), /EACCES/);
  });

  it('in JSON mode the warning is in _WARNING and stdout stays one JSON document', async () => {
    const f = await fixture({ log_file: '/dev/full', log_level: 'DEBUG' });
    const r = await f.run('-f', 'json', 'list-servers');
    assert.equal(r.code, 0);
    const doc = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.match(String((doc._WARNING as string[])[0]), /cannot write log file \/dev\/full/);
  });
});

describe('log lines', () => {
  it('--log-level DEBUG: time, PID, module, level and server in each line; passwords redacted', async () => {
    const f = await makeCliFixture({
      prefix: 'barman-logging-',
      logFile: true,
      global: { log_level: 'ERROR' },
      server: { conninfo: 'host=127.0.0.1 port=1 user=barman password=secret' },
    });
    const r = await f.run('--log-level', 'DEBUG', 'check', 'pg', 'password=hunter2');
    assert.equal(r.code, 1);
    const log = lines(await fsp.readFile(path.join(f.root, 'barman.log'), 'utf8'));
    assert.ok(log.length >= 2, log.join('\n'));
    const re = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[(\d+)\] barman\.[\w-]+ (DEBUG|INFO|WARNING|ERROR|CRITICAL): /;
    for (const l of log) assert.match(l, re);
    assert.ok(log.some((l) => / DEBUG: \[pg\] exit code 1 for: barman /.test(l)), log.join('\n'));
    assert.ok(log.some((l) => / ERROR: Unknown server 'password=\*REDACTED\*/.test(l)), log.join('\n'));
    assert.doesNotMatch(log.join('\n'), /hunter2|secret/);
  });

  it('the configured log_level filters (ERROR hides DEBUG)', async () => {
    const f = await makeCliFixture({ prefix: 'barman-logging-', logFile: true, global: { log_level: 'ERROR' } });
    await f.run('check', 'pg', 'nosuch');
    const log = await fsp.readFile(path.join(f.root, 'barman.log'), 'utf8');
    assert.match(log, / ERROR: Unknown server 'nosuch'/);
    assert.doesNotMatch(log, / DEBUG: /);
  });

  it('formatLogLine follows log_format (Python %-style) and redacts', () => {
    const time = new Date(2024, 0, 2, 3, 4, 5, 6);
    const line = formatLogLine(DEFAULT_LOG_FORMAT, { time, level: 'INFO', module: 'wal', server: 'pg', message: 'conninfo password=x host=h' });
    assert.equal(line, `2024-01-02 03:04:05,006 [${process.pid}] barman.wal INFO: [pg] conninfo password=*REDACTED* host=h`);
    const custom = formatLogLine('%(levelname)-8s|%(server)s|%(message)s|%(unknown)s', { time, level: 'ERROR', module: 'x', server: null, message: 'm' });
    assert.equal(custom, 'ERROR   ||m|%(unknown)s');
  });
});

describe('console options', () => {
  it('-q hides results and info but not errors', async () => {
    const f = await fixture();
    const ok = await f.run('-q', 'list-servers');
    assert.equal(ok.code, 0);
    assert.equal(ok.stdout, '');
    const bad = await f.run('-q', 'check', 'nosuch');
    assert.equal(bad.code, 1);
    assert.equal(bad.stdout, '');
    assert.match(bad.stderr, /^ERROR: Unknown server 'nosuch'$/m);
  });

  it('--color always paints ERROR red and check results; --colour never and auto (no TTY) do not', async () => {
    const f = await fixture();
    const red = await f.run('--color', 'always', 'check', 'nosuch');
    assert.ok(red.stderr.includes(`${ESC}[31mERROR${ESC}[0m: Unknown server 'nosuch'`), JSON.stringify(red.stderr));
    const check = await f.run('--colour', 'always', 'check', 'pg');
    assert.ok(check.stdout.includes(`${ESC}[31mFAILED${ESC}[0m`), JSON.stringify(check.stdout));
    assert.ok(check.stdout.includes(`${ESC}[32mOK${ESC}[0m`), JSON.stringify(check.stdout));
    for (const mode of ['never', 'auto']) {
      const r = await f.run('--colour', mode, 'check', 'pg');
      assert.ok(!(r.stdout + r.stderr).includes(ESC), `${mode}: ${JSON.stringify(r.stdout)}`);
    }
  });

  it('auto colours only when both stdout and stderr are terminals', () => {
    assert.equal(useColor('auto', true, true), true);
    assert.equal(useColor('auto', true, false), false);
    assert.equal(useColor('auto', false, true), false);
    assert.equal(useColor('always', false, false), true);
    assert.equal(useColor('never', true, true), false);
  });

  it('-d sends the log to stderr when no log_file is set', async () => {
    const f = await fixture();
    const r = await f.run('-d', 'check', 'nosuch');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /\[\d+\] barman\.cli ERROR: Unknown server 'nosuch'/);
  });
});
