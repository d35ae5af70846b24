import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { classifyDdFailure, hostCommand, lastDdByteCount, localWriterWords, parseStatMtime } from '../../src/backup/ranged-copy.js';
import { RANGED_COPY_MIN_BYTES, rangedMinBytes } from '../../src/util/ranges.js';

describe('ranged copy helpers', () => {
  it('tells a vanished source and a non-GNU dd from real failures', () => {
    assert.equal(classifyDdFailure(1, "dd: failed to open '/pg/base/5/16384': No such file or directory\n"), 'vanished');
    // GNU dd refuses nothing of ours; busybox and BSD dd refuse iflag= / skip_bytes.
    assert.equal(classifyDdFailure(1, "dd: invalid input flag: 'skip_bytes'\nTry 'dd --help' for more information.\n"), 'not-gnu');
    assert.equal(classifyDdFailure(1, 'dd: unknown operand iflag\n'), 'not-gnu');
    assert.equal(classifyDdFailure(1, "dd: unrecognized operand 'iflag=skip_bytes'\n"), 'not-gnu');
    // ssh's own failures, and signals, are never taken for the file or the dd.
    assert.equal(classifyDdFailure(255, 'ssh: connect to host pg port 22: Connection refused\n'), 'failed');
    assert.equal(classifyDdFailure(255, 'Warning: Identity file /x not accessible: No such file or directory.\nConnection closed'), 'failed');
    assert.equal(classifyDdFailure(137, ''), 'failed');
    assert.equal(classifyDdFailure(-1, 'spawn dd ENOENT'), 'failed');
    assert.equal(classifyDdFailure(1, "dd: error reading '/pg/base/5/1': Input/output error\n"), 'failed');
  });

  it('reads stat %.9Y output and nothing else', () => {
    assert.equal(parseStatMtime('1700000000.123456789\n'), '1700000000.123456789');
    assert.equal(parseStatMtime('1700000000\n'), '1700000000');
    assert.equal(parseStatMtime('%.9Y\n'), null);
    assert.equal(parseStatMtime(''), null);
    assert.equal(parseStatMtime('1; rm -rf /'), null);
  });

  it('takes the threshold from BARMAN_TS_RANGED_MIN_BYTES when it is a positive integer', () => {
    assert.equal(rangedMinBytes({}), RANGED_COPY_MIN_BYTES);
    assert.equal(rangedMinBytes({ BARMAN_TS_RANGED_MIN_BYTES: '4194304' }), 4194304);
    assert.equal(rangedMinBytes({ BARMAN_TS_RANGED_MIN_BYTES: '' }), RANGED_COPY_MIN_BYTES);
    for (const bad of ['0', '-5', '1.5', 'abc']) assert.throws(() => rangedMinBytes({ BARMAN_TS_RANGED_MIN_BYTES: bad }), /Invalid BARMAN_TS_RANGED_MIN_BYTES/, bad);
  });

  it('writes locally with dd reporting its byte count, in the C locale', () => {
    const w = localWriterWords('/b/data/base/5/16384', 1048576);
    assert.deepEqual(w.slice(0, 3), ['env', 'LC_ALL=C', 'dd']);
    assert.ok(w.includes('of=/b/data/base/5/16384') && w.includes('seek=1048576') && w.includes('conv=notrunc'));
    assert.ok(w.includes('status=progress') && !w.includes('status=none'));
    const progress = '104857600 bytes (105 MB, 100 MiB) copied, 1 s, 105 MB/s\r209715200 bytes (210 MB, 200 MiB) copied, 2 s, 105 MB/s\r';
    assert.equal(lastDdByteCount(progress), 209715200);
    const summary = `${progress}\n260+1 records in\n260+1 records out\n272629861 bytes (273 MB, 260 MiB) copied, 2.5 s, 109 MB/s\n`;
    assert.equal(lastDdByteCount(summary), 272629861);
    assert.equal(lastDdByteCount('0+0 records in\n0+0 records out\n0 bytes copied, 0.0001 s, 0 B/s\n'), 0);
    assert.equal(lastDdByteCount('1 byte copied, 0.0001 s, 10 kB/s\n'), 1);
    assert.equal(lastDdByteCount('dd: error writing: No space left on device\n'), null);
  });

  it('runs the words through ssh_command, or here for local-rsync', () => {
    assert.deepEqual(hostCommand(null, ['dd', 'if=/a b']), { cmd: 'dd', args: ['if=/a b'] });
    const r = hostCommand('ssh -p 2222 postgres@pg', ['dd', "if=/a b'c"]);
    assert.equal(r.cmd, '/bin/sh');
    assert.deepEqual(r.args.slice(0, 3), ['-c', 'ssh -p 2222 postgres@pg "$@"', 'sh']);
    assert.equal(r.args[3], "dd 'if=/a b'\\''c'");
  });
});
