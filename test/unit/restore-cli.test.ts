import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Command } from 'commander';
import { define, humanDuration } from '../../src/cli/commands/restore.js';

function parse(argv: string[]): { args: string[]; opts: Record<string, unknown> } {
  const quiet = { writeErr: () => undefined, writeOut: () => undefined };
  const program = new Command('barman').exitOverride().configureOutput(quiet);
  const cmd = program.command('restore').alias('recover').exitOverride().configureOutput(quiet);
  define(cmd);
  let seen: { args: string[]; opts: Record<string, unknown> } | null = null;
  cmd.action(() => {
    seen = { args: cmd.args, opts: cmd.opts() };
  });
  program.parse(argv, { from: 'user' });
  assert.ok(seen);
  return seen;
}

describe('restore command line', () => {
  it('accepts every option of Barman restore', () => {
    const { args, opts } = parse([
      'recover', 'pg', 'latest', '/dest',
      '--target-tli', 'latest', '--target-time', '2024-01-01 00:00:00+00:00', '--exclusive',
      '--target-action', 'pause', '--standby-mode',
      '--tablespace', 'a:/x', '--tablespace', 'b:/y',
      '--remote-ssh-command', 'ssh pg', '--staging-wal-directory', '/w',
      '--bwlimit', '10', '--retry-times', '2', '--retry-sleep', '3', '--no-retry',
      '-j', '4', '--jobs-start-batch-period', '1', '--jobs-start-batch-size', '10',
      '--get-wal', '--network-compression', '--delta-restore',
      '--staging-path', '/s', '--staging-location', 'local', '--combine-mode', 'link',
      '--recovery-staging-path', '/r', '--local-staging-path', '/l',
      '--recovery-conf-filename', 'custom.conf', '--recovery-option-port', '2222',
      '--snapshot-recovery-instance', 'i', '--snapshot-recovery-zone', 'z', '--gcp-zone', 'z',
      '--azure-resource-group', 'g', '--aws-region', 'r',
    ]);
    assert.deepEqual(args, ['pg', 'latest', '/dest']);
    assert.deepEqual(opts.tablespace, ['a:/x', 'b:/y']);
    assert.equal(opts.targetTli, 'latest');
    assert.equal(opts.exclusive, true);
    assert.equal(opts.getWal, true);
    assert.equal(opts.deltaRestore, true);
    assert.equal(opts.retry, false);
    assert.equal(opts.jobs, '4');
    assert.equal(opts.recoveryConfFilename, 'custom.conf');
    assert.equal(opts.targetXid, undefined);
    for (const o of ['--target-xid', '--target-lsn', '--target-name']) {
      assert.equal(Object.values(parse(['restore', 'pg', 'x', '/d', o, '1']).opts).includes('1'), true);
    }
    assert.equal(parse(['restore', 'pg', 'x', '/d', '--target-immediate']).opts.targetImmediate, true);
  });

  it('leaves the tri-state options unset unless given', () => {
    const { opts } = parse(['restore', 'pg', 'x', '/d']);
    assert.equal(opts.getWal, undefined);
    assert.equal(opts.deltaRestore, undefined);
    assert.equal(parse(['restore', 'pg', 'x', '/d', '--no-get-wal']).opts.getWal, false);
    assert.equal(parse(['restore', 'pg', 'x', '/d', '--no-delta-restore']).opts.deltaRestore, false);
  });

  it('rejects a bad --target-action and missing arguments', () => {
    assert.throws(() => parse(['restore', 'pg', 'x', '/d', '--target-action', 'explode']));
    assert.throws(() => parse(['restore', 'pg', 'x']));
  });
});

describe('humanDuration', () => {
  it('formats like Barman', () => {
    assert.equal(humanDuration(0.4), 'less than one second');
    assert.equal(humanDuration(1), '1 second');
    assert.equal(humanDuration(62), '1 minute, 2 seconds');
    assert.equal(humanDuration(3600 * 26 + 3), '1 day, 2 hours, 3 seconds');
    assert.equal(humanDuration(-120), '2 minutes ago');
  });
});
