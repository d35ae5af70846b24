/**
 * put-wal (the server side of barman-wal-archive): killed at each stage, failing system calls,
 * a full disk, a read-only incoming/, racing itself and archive-wal, and hostile tar streams.
 * An exit 0 is an acknowledgement (PostgreSQL drops the segment): it is recorded, and the
 * campaign checks that the segment is then in the archive, intact, for good.
 */
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, type CmdResult } from './exec.js';
import {
  dirNames,
  expectRefused,
  fillTmpfs,
  firstLine,
  how,
  incomingDir,
  putWal,
  putWalAndRetry,
  startBarman,
  synthSegment,
  waitForFile,
  walsFile,
} from './common.js';
import { buildTar, paxData, sumsFile, walTar, type MemberSpec } from './tar.js';
import type { CaseContext, FaultCase } from './types.js';

const SRV = 'wal' as const;

/** What a refused stream must leave: incoming/ exactly as before (temporary files removed too). */
async function refusedLeavesNothing(ctx: CaseContext, label: string, input: Buffer, pattern?: RegExp): Promise<string> {
  const before = dirNames(incomingDir(ctx.world, SRV));
  const r = await putWal(ctx.world, SRV, input);
  expectRefused(ctx, r, label, pattern);
  const after = dirNames(incomingDir(ctx.world, SRV));
  ctx.expect(JSON.stringify(before) === JSON.stringify(after), `${label}: incoming/ unchanged (before ${before.join(',')}, after ${after.join(',')})`);
  return `refused: ${firstLine(r)}`;
}

function hostile(id: string, point: string, build: () => Buffer, pattern?: RegExp): FaultCase {
  return {
    id: `put-wal/hostile/${id}`,
    process: 'put-wal',
    point,
    kind: 'hostile input',
    servers: [SRV],
    run: (ctx) => refusedLeavesNothing(ctx, point, build(), pattern),
  };
}

/** A valid one-segment stream with one member replaced by `m`. */
function withMember(m: MemberSpec, sumOf?: [string, Buffer]): Buffer {
  const members: MemberSpec[] = [m];
  if (sumOf) members.push({ name: 'SHA256SUMS', data: sumsFile([sumOf]) });
  return buildTar(members);
}

let historyTli = 0x30;
/** A fresh history file name of the synthetic server (timelines cluster A never reaches). */
function nextHistory(): string {
  return `${(historyTli++).toString(16).toUpperCase().padStart(8, '0')}.history`;
}

/** put-wal of a file that is not the WAL its name says: acknowledged, then set aside by archive-wal. */
function setAsideCase(id: string, point: string, make: () => [string, Buffer]): FaultCase {
  return {
    ...hostile(id, point, () => Buffer.alloc(0)),
    async run(ctx) {
      const [n, d] = make();
      const r = await putWal(ctx.world, SRV, walTar([[n, d]])); // tar mtime of 2023: past any grace period
      ctx.expect(r.code === 0, `put-wal accepts it as Barman's does (names and checksums only): ${describe(r)}`);
      if (r.code === 0) ctx.world.ackSetAside(SRV, n, d);
      const a = await ctx.world.barman(SRV, ['archive-wal', SRV]);
      ctx.expect(a.code === 0, `archive-wal sets it aside without failing: ${describe(a)}`);
      ctx.expect(/WARNING: .*moved to the errors directory/.test(a.stderr), `archive-wal warns: ${describe(a)}`);
      const archived = existsSync(walsFile(ctx.world, SRV, n)) || existsSync(path.join(ctx.world.server(SRV).dir, 'wals', n));
      ctx.expect(!archived, `${n} is not archived`);
      const kept = dirNames(path.join(ctx.world.server(SRV).dir, 'errors')).filter((f) => f.startsWith(`${n}.`));
      ctx.expect(kept.length === 1, `${n} is kept in errors/ (${kept.join(',')})`);
      return `put-wal ${how(r)}; archive-wal ${how(a)}: ${kept.length ? `kept as errors/${kept[0]}` : archived ? 'ARCHIVED' : 'lost'}`;
    },
  };
}

const killPoints = ['put-wal:member-written', 'put-wal:received', 'put-wal:verified', 'put-wal:linked', 'put-wal:committed'];

function killCase(point: string, action: 'kill' | 'term', segments: number): FaultCase {
  return {
    id: `put-wal/${action}@${point}${segments > 1 ? `/x${segments}` : ''}`,
    process: 'put-wal',
    point: `${point}${segments > 1 ? ` (${segments} segments)` : ''}`,
    kind: action === 'kill' ? 'SIGKILL' : 'SIGTERM',
    servers: [SRV],
    async run(ctx) {
      const files = Array.from({ length: segments }, () => synthSegment());
      const { first, retried } = await putWalAndRetry(ctx, SRV, files, { fault: `${point}=${action}` });
      ctx.requireFired(point);
      return `${how(first)}${first.code === 0 ? ' (stored: acknowledged)' : ''}; resent: ${retried ? how(retried) : 'not needed'}`;
    },
  };
}

function straceCase(id: string, syscall: string, error: string, when: string, kind: 'ENOSPC' | 'EIO' | 'EACCES', where?: (ctx: CaseContext, name: string) => string): FaultCase {
  return {
    id: `put-wal/${id}`,
    process: 'put-wal',
    point: `${syscall} #${when}${where ? ' (one path)' : ''}`,
    kind,
    servers: [SRV],
    async run(ctx) {
      const files = [synthSegment()];
      const p = where?.(ctx, files[0]![0]);
      const { first, retried } = await putWalAndRetry(ctx, SRV, files, { strace: { syscall, error, when, path: p } });
      ctx.expect(first.code !== 0, `the injected ${error} made put-wal fail (no acknowledgement): ${describe(first)}`);
      if (first.code !== 0) ctx.expect(/^ERROR: /m.test(first.stderr), `a clear error: ${describe(first)}`);
      return `${how(first)}: ${firstLine(first) || '(no message)'}; resent: ${retried ? how(retried) : 'not needed'}`;
    },
  };
}

export function putWalCases(): FaultCase[] {
  const cases: FaultCase[] = [];
  for (const p of killPoints) cases.push(killCase(p, 'kill', 1));
  for (const p of killPoints) cases.push(killCase(p, 'term', 1));
  cases.push(killCase('put-wal:linked', 'kill', 3));

  const inc = (ctx: CaseContext) => incomingDir(ctx.world, SRV);
  cases.push(straceCase('fsync-eio-tmp', 'fsync,fdatasync', 'EIO', '1', 'EIO'));
  cases.push(straceCase('fsync-eio-incoming-dir', 'fsync,fdatasync', 'EIO', '1', 'EIO', (ctx) => inc(ctx)));
  cases.push(straceCase('link-eio', 'link,linkat', 'EIO', '1', 'EIO', (ctx, n) => path.join(inc(ctx), n)));
  cases.push(straceCase('link-enospc', 'link,linkat', 'ENOSPC', '1', 'ENOSPC', (ctx, n) => path.join(inc(ctx), n)));
  cases.push(straceCase('open-incoming-eacces', 'openat', 'EACCES', '1', 'EACCES', (ctx) => inc(ctx)));

  cases.push({
    id: 'put-wal/tmpfs-full',
    process: 'put-wal',
    point: 'incoming/ on a full tmpfs',
    kind: 'ENOSPC',
    servers: ['full'],
    async run(ctx) {
      const w = ctx.world;
      await w.barmanOk('full', ['check', 'full']).catch(() => undefined);
      // Leave about 4 MiB free: a 16 MiB segment cannot fit.
      const filler = await fillTmpfs(w, 'filler', 4 << 20);
      const files = [synthSegment()];
      const before = dirNames(incomingDir(w, 'full'));
      const r = await putWal(w, 'full', walTar(files));
      expectRefused(ctx, r, 'put-wal on a full disk', /no space|ENOSPC/i);
      ctx.expect(JSON.stringify(dirNames(incomingDir(w, 'full'))) === JSON.stringify(before), 'a failed put-wal leaves incoming/ as it was');
      await fs.rm(filler, { force: true });
      const again = await putWal(w, 'full', walTar(files));
      ctx.expect(again.code === 0, `put-wal once space is back: ${describe(again)}`);
      if (again.code === 0) w.ack('full', files[0]![0], files[0]![1]);
      return `refused: ${firstLine(r)}; after freeing space: ${how(again)}`;
    },
  });

  cases.push({
    id: 'put-wal/incoming-readonly',
    process: 'put-wal',
    point: 'incoming/ mode 0500',
    kind: 'EACCES',
    servers: [SRV],
    async run(ctx) {
      const dir = incomingDir(ctx.world, SRV);
      await fs.chmod(dir, 0o500);
      const files = [synthSegment()];
      let r: CmdResult;
      try {
        r = await putWal(ctx.world, SRV, walTar(files));
      } finally {
        await fs.chmod(dir, 0o700);
      }
      expectRefused(ctx, r, 'put-wal into a read-only incoming/', /permission denied|EACCES/i);
      const again = await putWal(ctx.world, SRV, walTar(files));
      ctx.expect(again.code === 0, `put-wal once writable again: ${describe(again)}`);
      if (again.code === 0) ctx.world.ack(SRV, files[0]![0], files[0]![1]);
      return `refused: ${firstLine(r)}; then ${how(again)}`;
    },
  });

  // Races.
  cases.push({
    id: 'put-wal/race-same-segment-same-content',
    process: 'put-wal',
    point: 'two put-wal of one segment (paused at put-wal:verified)',
    kind: 'race',
    servers: [SRV],
    async run(ctx) {
      const files = [synthSegment()];
      const flag = ctx.flag('pw1');
      const first = startBarman(ctx.world, SRV, ['put-wal', SRV], { input: walTar(files), fault: `put-wal:verified=pause:${flag}` });
      ctx.expect(await waitForFile(`${flag}.reached`, first), 'first put-wal reached the pause');
      const second = await putWal(ctx.world, SRV, walTar(files));
      await fs.writeFile(flag, '');
      const r1 = await first.done;
      first.killGroup();
      ctx.expect(second.code === 0 && r1.code === 0, `both succeed with the same content: ${describe(second)} / ${describe(r1)}`);
      if (second.code === 0 || r1.code === 0) ctx.world.ack(SRV, files[0]![0], files[0]![1]);
      return `second ${how(second)}, first (resumed) ${how(r1)}`;
    },
  });
  cases.push({
    id: 'put-wal/race-same-segment-other-content',
    process: 'put-wal',
    point: 'two put-wal of one name, different contents',
    kind: 'race',
    servers: [SRV],
    async run(ctx) {
      const [name, a] = synthSegment();
      const b = Buffer.from(a);
      b[100] = (b[100] ?? 0) ^ 0xff;
      const flag = ctx.flag('pw2');
      const first = startBarman(ctx.world, SRV, ['put-wal', SRV], { input: walTar([[name, b]]), fault: `put-wal:verified=pause:${flag}` });
      ctx.expect(await waitForFile(`${flag}.reached`, first), 'first put-wal reached the pause');
      const second = await putWal(ctx.world, SRV, walTar([[name, a]]));
      ctx.expect(second.code === 0, `the first to commit wins: ${describe(second)}`);
      if (second.code === 0) ctx.world.ack(SRV, name, a);
      await fs.writeFile(flag, '');
      const r1 = await first.done;
      first.killGroup();
      expectRefused(ctx, r1, 'the other content', /different content/);
      return `winner ${how(second)}; loser ${how(r1)}: ${firstLine(r1)}`;
    },
  });
  cases.push({
    id: 'put-wal/race-archive-wal',
    process: 'put-wal',
    point: 'archive-wal runs between link and directory fsync',
    kind: 'race',
    servers: [SRV],
    async run(ctx) {
      const files = [synthSegment()];
      const flag = ctx.flag('pw3');
      const first = startBarman(ctx.world, SRV, ['put-wal', SRV], { input: walTar(files), fault: `put-wal:linked=pause:${flag}` });
      ctx.expect(await waitForFile(`${flag}.reached`, first), 'put-wal reached the pause');
      const aw = await ctx.world.barman(SRV, ['archive-wal', SRV]);
      await fs.writeFile(flag, '');
      const r1 = await first.done;
      first.killGroup();
      ctx.expect(r1.code === 0, `put-wal completes: ${describe(r1)}`);
      if (r1.code === 0) ctx.world.ack(SRV, files[0]![0], files[0]![1]);
      ctx.expect(existsSync(walsFile(ctx.world, SRV, files[0]![0])), 'archive-wal archived it meanwhile');
      return `archive-wal ${how(aw)}, put-wal ${how(r1)}`;
    },
  });
  cases.push({
    id: 'put-wal/resend-archived',
    process: 'put-wal',
    point: 'segment already archived, sent again (same content)',
    kind: 'race',
    servers: [SRV],
    async run(ctx) {
      const files = [synthSegment()];
      const r0 = await putWal(ctx.world, SRV, walTar(files));
      ctx.expect(r0.code === 0, describe(r0));
      if (r0.code === 0) ctx.world.ack(SRV, files[0]![0], files[0]![1]);
      await ctx.world.barmanOk(SRV, ['archive-wal', SRV]);
      const r = await putWal(ctx.world, SRV, walTar(files));
      ctx.expect(r.code === 0, `same content again is success: ${describe(r)}`);
      return `resent after archiving: ${how(r)}`;
    },
  });

  // Hostile and corrupted streams: refused with one line, nothing stored.
  const [n0, d0] = synthSegment();
  cases.push(hostile('traversal', "member '../<segment>'", () => withMember({ name: `../${n0}`, data: d0 }, [`../${n0}`, d0]), /Invalid member name/));
  cases.push(hostile('absolute', "member '/tmp/<segment>'", () => withMember({ name: `/tmp/${n0}`, data: d0 }, [`/tmp/${n0}`, d0]), /Invalid member name/));
  cases.push(hostile('subdir', "member 'sub/<segment>'", () => withMember({ name: `sub/${n0}`, data: d0 }), /Invalid member name/));
  cases.push(hostile('symlink', 'symlink member to /etc/passwd', () => withMember({ name: n0, type: '2', linkname: '/etc/passwd' }), /symbolic link/));
  cases.push(hostile('hardlink', 'hard-link member to /etc/shadow', () => withMember({ name: n0, type: '1', linkname: '/etc/shadow' }), /hard link/));
  cases.push(hostile('directory', 'directory member', () => withMember({ name: `${n0}/`, type: '5' })));
  cases.push(hostile('chardev', 'character device member', () => withMember({ name: n0, type: '3' }), /character device/));
  cases.push(hostile('fifo', 'FIFO member', () => withMember({ name: n0, type: '6' }), /FIFO/));
  cases.push(hostile('huge-base256', 'size 2^40 (base-256 header)', () => buildTar([{ name: n0, base256Size: 1n << 40n }], { end: false }), /more than|too large/));
  cases.push(hostile('over-1gib', 'size 1 GiB + 1, no data', () => buildTar([{ name: n0, size: (1 << 30) + 1 }], { end: false }), /more than/));
  cases.push(hostile('duplicate-members', 'the same member twice', () => buildTar([{ name: n0, data: d0 }, { name: n0, data: d0 }, { name: 'SHA256SUMS', data: sumsFile([[n0, d0]]) }]), /twice/));
  cases.push(hostile('no-checksum', 'no SHA256SUMS member', () => buildTar([{ name: n0, data: d0 }]), /Missing checksum/));
  cases.push(
    hostile('bad-checksum', 'checksum of other data', () => {
      const other = Buffer.from(d0);
      other[5] = (other[5] ?? 0) ^ 1;
      return buildTar([{ name: n0, data: d0 }, { name: 'SHA256SUMS', data: sumsFile([[n0, other]]) }]);
    }, /Bad file checksum/),
  );
  cases.push(
    hostile('bitflip-in-transit', 'one bit of the data flipped after the checksum', () => {
      const t = walTar([[n0, d0]]);
      t[512 + 4096] = (t[512 + 4096] ?? 0) ^ 0x10;
      return t;
    }, /Bad file checksum/),
  );
  cases.push(hostile('orphan-checksum', 'checksum line for an absent file', () => buildTar([{ name: n0, data: d0 }, { name: 'SHA256SUMS', data: Buffer.concat([sumsFile([[n0, d0]]), sumsFile([['000000010000000A000000FF', d0]])]) }]), /without corresponding file/));
  cases.push(hostile('truncated-member', 'stream cut inside a member', () => walTar([[n0, d0]]).subarray(0, 512 + 1_000_000), /Truncated/));
  cases.push(hostile('truncated-eoa', 'stream cut before the end-of-archive blocks', () => walTar([[n0, d0]], { end: false }), /Truncated|end-of-archive/));
  cases.push(hostile('garbage', 'random bytes', () => Buffer.from(Array.from({ length: 70_000 }, (_, i) => (i * 131 + 7) & 0xff))));
  cases.push(hostile('empty', 'empty stdin', () => Buffer.alloc(0)));
  cases.push(hostile('pax-path-traversal', 'PAX header path=../<segment>', () => buildTar([{ name: 'PaxHeader', type: 'x', data: paxData({ path: `../${n0}` }) }, { name: n0, data: d0 }, { name: 'SHA256SUMS', data: sumsFile([[n0, d0]]) }]), /Invalid member name/));
  cases.push(hostile('gnu-longname-traversal', 'GNU long name ../../etc/<segment>', () => buildTar([{ name: '././@LongLink', type: 'L', data: Buffer.from(`../../etc/${n0}\0`) }, { name: n0, data: d0 }, { name: 'SHA256SUMS', data: sumsFile([[n0, d0]]) }])));
  cases.push(hostile('control-chars', 'member name with a newline', () => withMember({ name: `${n0}\nx`, data: d0 }, [`${n0}\nx`, d0]), /not a WAL file name/));
  cases.push(hostile('not-wal-name', "member 'xlog.db'", () => withMember({ name: 'xlog.db', data: Buffer.from('x\t1\t1.0\tNone\n') }, ['xlog.db', Buffer.from('x\t1\t1.0\tNone\n')]), /not a WAL file name/));
  cases.push(hostile('two-checksum-files', 'SHA256SUMS and MD5SUMS', () => buildTar([{ name: n0, data: d0 }, { name: 'SHA256SUMS', data: sumsFile([[n0, d0]]) }, { name: 'MD5SUMS', data: sumsFile([[n0, d0]], 'md5') }]), /two checksum files/));
  cases.push(hostile('checksum-file-too-large', 'SHA256SUMS of 2 MiB', () => buildTar([{ name: n0, data: d0 }, { name: 'SHA256SUMS', data: Buffer.alloc(2 << 20, 0x61) }]), /too large/));
  cases.push(
    hostile('too-many-members', '4097 members', () => {
      const members: MemberSpec[] = [];
      for (let i = 0; i < 4097; i++) members.push({ name: `000000010000000B${i.toString(16).toUpperCase().padStart(8, '0')}`, data: Buffer.from('x') });
      return buildTar(members);
    }, /More than 4096/),
  );
  // Files whose name says WAL and whose content is not that WAL. Barman's put-wal stores them
  // (it checks names and checksums only) and so do we (spec §6.1): the sender gets exit 0. Then
  // archive-wal must keep them out of the archive, whole in errors/, never as WAL a restore
  // would replay (world.setAside; checked by the acknowledged-WAL invariant).
  const foreign = (): [string, Buffer] => {
    const [n, d] = synthSegment();
    d.writeUInt32LE(d.readUInt32LE(12) + 1, 12); // xlp_pageaddr of a segment 4 GiB further
    return [n, d];
  };
  cases.push(setAsideCase('wrong-segment-size', 'a 1 MiB file named as a 16 MiB segment', () => synthSegment(1 << 20)));
  cases.push(setAsideCase('foreign-header', 'a segment whose page header is of another position', foreign));
  cases.push(
    setAsideCase('foreign-header-gzip', 'the same, gzip-compressed (barman-wal-archive -z)', () => {
      const [n, d] = foreign();
      return [n, gzipSync(d)];
    }),
  );
  cases.push(setAsideCase('history-empty', 'an empty timeline history file', () => [nextHistory(), Buffer.alloc(0)]));
  cases.push(setAsideCase('history-garbage', 'a history file of garbage', () => [nextHistory(), Buffer.from('not a history file\n')]));
  cases.push(setAsideCase('history-bad-parent', 'a history file naming its own timeline as parent', () => {
    const name = nextHistory();
    return [name, Buffer.from(`1\t0/3000000\tr\n${parseInt(name.slice(0, 8), 16)}\t0/5000000\tr\n`)];
  }));
  cases.push({
    id: 'put-wal/history-good',
    process: 'put-wal',
    point: 'a valid timeline history file',
    kind: 'none',
    servers: [SRV],
    async run(ctx) {
      const name = nextHistory();
      const data = Buffer.from('1\t0/3000000\tno recovery target specified\n');
      const r = await putWal(ctx.world, SRV, walTar([[name, data]]));
      ctx.expect(r.code === 0, describe(r));
      if (r.code === 0) ctx.world.ack(SRV, name, data);
      const a = await ctx.world.barman(SRV, ['archive-wal', SRV]);
      ctx.expect(existsSync(path.join(ctx.world.server(SRV).dir, 'wals', name)), `${name} archived`);
      return `put-wal ${how(r)}; archive-wal ${how(a)}`;
    },
  });
  cases.push(
    hostile('duplicate-other-content', 'segment already archived with another content', () => {
      throw new Error('built in run');
    }),
  );
  // The last one needs an archived segment first: replace its run.
  const dup = cases[cases.length - 1] as FaultCase;
  dup.run = async (ctx) => {
    const [name, a] = synthSegment();
    const r0 = await putWal(ctx.world, SRV, walTar([[name, a]]));
    ctx.expect(r0.code === 0, describe(r0));
    if (r0.code === 0) ctx.world.ack(SRV, name, a);
    await ctx.world.barmanOk(SRV, ['archive-wal', SRV]);
    const b = Buffer.from(a);
    b[9] = (b[9] ?? 0) ^ 4;
    const r = await putWal(ctx.world, SRV, walTar([[name, b]]));
    expectRefused(ctx, r, 'a different content for an archived name', /different content/);
    return `refused: ${firstLine(r)}`;
  };

  // Valid variants that must be accepted.
  cases.push({
    id: 'put-wal/md5sums',
    process: 'put-wal',
    point: 'MD5SUMS stream (barman-wal-archive --md5)',
    kind: 'none',
    servers: [SRV],
    async run(ctx) {
      const files = [synthSegment()];
      const r = await putWal(ctx.world, SRV, walTar(files, { md5: true }));
      ctx.expect(r.code === 0, describe(r));
      if (r.code === 0) ctx.world.ack(SRV, files[0]![0], files[0]![1]);
      return how(r);
    },
  });
  return cases;
}
