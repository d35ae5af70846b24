/**
 * The ranged copy of one file (src/backup/ranged-copy.ts) with the real `dd`, run here as for
 * local-rsync (no PostgreSQL, no root): ranges written in any order into one file, the exact
 * source mtime and mode 0600, a file shorter than listed (truncated during the copy), a vanished
 * file, and a dd that refuses GNU options (a fake one first in PATH) sending the file back to rsync.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { RangedFile, type ChildStarter, type HostState } from '../../src/backup/ranged-copy.js';
import { splitRanges } from '../../src/util/ranges.js';

const MiB = 1024 * 1024;

function starter(env: NodeJS.ProcessEnv = process.env): ChildStarter & { started: string[] } {
  const started: string[] = [];
  return {
    started,
    start(cmd: string, args: readonly string[], stdio: StdioOptions = ['ignore', 'pipe', 'pipe']): ChildProcess {
      started.push([cmd, ...args].join(' '));
      return spawn(cmd, [...args], { env, stdio });
    },
  };
}

describe('ranged copy of one file (local dd)', () => {
  let dir = '';
  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ranged-copy-'));
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  const plan = (name: string, size: number, parts: number, mtimeSec = 1000) => ({ name, size, mtimeSec, ranges: splitRanges(size, parts) });
  const copyAll = async (file: RangedFile, order: number[]) => {
    const res = await Promise.all(order.map((i) => file.copyRange(i)));
    return { received: res.reduce((n, r) => n + r.received, 0), outcomes: res.map((r) => r.outcome).filter((o) => o !== null) };
  };

  it('copies the ranges in parallel into one file with mode 0600 and the exact source mtime', async () => {
    const src = path.join(dir, 'src1');
    const data = randomBytes(5 * MiB + 12345);
    await fs.writeFile(src, data);
    await fs.utimes(src, 1_700_000_000.5, 1_700_000_000.5);
    const srcNs = (await fs.stat(src, { bigint: true })).mtimeNs;
    const dest = path.join(dir, 'dest1');
    const file = new RangedFile(starter(), null, { ddUnusable: null }, src, dest, plan('src1', data.length, 4));
    const { received, outcomes } = await copyAll(file, [3, 1, 0, 2]);
    assert.deepEqual(outcomes, ['copied']);
    assert.equal(received, data.length);
    assert.ok((await fs.readFile(dest)).equals(data));
    const st = await fs.stat(dest, { bigint: true });
    assert.equal(Number(st.mode & 0o777n), 0o600);
    assert.equal(st.mtimeNs, srcNs);
  });

  it('ends the copy where the data ended when the file shrank', async () => {
    const src = path.join(dir, 'src2');
    const data = randomBytes(2 * MiB + 100);
    await fs.writeFile(src, data);
    const dest = path.join(dir, 'dest2');
    // Listed at 4 MiB + 1: the third range reads 100 bytes, the fourth none.
    const file = new RangedFile(starter(), null, { ddUnusable: null }, src, dest, plan('src2', 4 * MiB + 1, 4));
    assert.equal(file.plan.ranges.length, 4);
    const { outcomes } = await copyAll(file, [0, 1, 2, 3]);
    assert.deepEqual(outcomes, ['copied']);
    assert.ok((await fs.readFile(dest)).equals(data));
  });

  it('drops the local file when the source vanished', async () => {
    const dest = path.join(dir, 'dest3');
    const file = new RangedFile(starter(), null, { ddUnusable: null }, path.join(dir, 'missing'), dest, plan('missing', 3 * MiB, 2));
    const { outcomes } = await copyAll(file, [0, 1]);
    assert.deepEqual(outcomes, ['vanished']);
    await assert.rejects(fs.access(dest));
  });

  it('fails on any other dd error', async () => {
    const src = path.join(dir, 'adir');
    await fs.mkdir(src);
    const file = new RangedFile(starter(), null, { ddUnusable: null }, src, path.join(dir, 'dest4'), plan('adir', 3 * MiB, 2));
    await assert.rejects(file.copyRange(0), /ranged copy of .*adir \(bytes 0\+\d+\) failed with exit code 1: .*Is a directory/);
  });

  it('gives the file back to rsync when dd refuses GNU options, and stops trying on that host', async () => {
    const bin = path.join(dir, 'bin');
    await fs.mkdir(bin);
    // What busybox dd says about iflag=skip_bytes.
    await fs.writeFile(path.join(bin, 'dd'), '#!/bin/sh\necho "dd: invalid input flag: skip_bytes" >&2\nexit 1\n', { mode: 0o755 });
    const env = { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` };
    const src = path.join(dir, 'src5');
    await fs.writeFile(src, randomBytes(3 * MiB));
    const host: HostState = { ddUnusable: null };
    const st = starter(env);
    const dest = path.join(dir, 'dest5');
    const first = new RangedFile(st, null, host, src, dest, plan('src5', 3 * MiB, 2));
    assert.deepEqual((await copyAll(first, [0, 1])).outcomes, ['fallback']);
    await assert.rejects(fs.access(dest));
    assert.match(host.ddUnusable ?? '', /invalid input flag/);
    const before = st.started.length;
    const second = new RangedFile(st, null, host, src, path.join(dir, 'dest6'), plan('src5', 3 * MiB, 2));
    assert.deepEqual((await copyAll(second, [0, 1])).outcomes, ['fallback']);
    assert.equal(st.started.length, before, 'no dd started once the host is known');
  });
});
