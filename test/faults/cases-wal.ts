/**
 * The WAL side beyond put-wal: archive-wal killed or failing at each stage (with files put in
 * incoming/ by put-wal, so every one of them is acknowledged), junk in incoming/, xlog.db
 * corrupted and rebuilt, rebuild-xlogdb killed mid-rewrite, get-wal and barman-wal-restore
 * asked for hostile names or fed a corrupted archived file, receive-wal killed.
 */
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, exec, type CmdResult } from './exec.js';
import { dirNames, expectRefused, firstLine, how, incomingDir, putWal, synthSegment, walsFile } from './common.js';
import { walTar } from './tar.js';
import type { CaseContext, FaultCase, FaultKind } from './types.js';
import { BARMAN_USER, POSTGRES_USER } from '../helpers/system.js';
import { REPO } from './exec.js';

const SRV = 'wal' as const;

/** put-wal `n` fresh segments into incoming/ of `wal` (acknowledged); returns their names. */
async function feed(ctx: CaseContext, n: number): Promise<string[]> {
  const files = Array.from({ length: n }, () => synthSegment());
  const r = await putWal(ctx.world, SRV, walTar(files));
  if (r.code !== 0) throw new Error(`put-wal to set up the case failed: ${describe(r)}`);
  for (const [name, data] of files) ctx.world.ack(SRV, name, data);
  return files.map(([name]) => name);
}

function xlogDb(ctx: CaseContext, srv: 'wal' | 'strm' | 'rsy' = SRV): string {
  return path.join(ctx.world.server(srv).dir, 'wals', 'xlog.db');
}

/** archive-wal under a fault, then archive-wal again: every fed segment must end up archived. */
function archiveCase(point: string, action: string, kind: FaultKind): FaultCase {
  return {
    id: `archive-wal/${action.replace(/:.*/, '')}@${point}`,
    process: 'archive-wal',
    point,
    kind,
    servers: [SRV],
    async run(ctx) {
      const names = await feed(ctx, 3);
      const r = await ctx.world.barman(SRV, ['archive-wal', SRV], { fault: `${point}=${action}` });
      ctx.requireFired(point);
      if (action.startsWith('throw:')) ctx.expect(r.code !== 0 && /ERROR/.test(r.stderr), `the failure is reported: ${describe(r)}`);
      const again = await ctx.world.barman(SRV, ['archive-wal', SRV]);
      ctx.expect(again.code === 0, `archive-wal after the fault: ${describe(again)}`);
      for (const n of names) ctx.expect(existsSync(walsFile(ctx.world, SRV, n)), `${n} archived after the second run`);
      return `${how(r)}${r.code !== 0 && firstLine(r) ? `: ${firstLine(r)}` : ''}; next archive-wal ${how(again)}`;
    },
  };
}

/** archive-wal with one system call failing on one path (strace -P). */
/**
 * `fires`: what archive-wal says when the injected call failed. strace reports nothing back, so
 * without it a case whose call never matched (strace -P matches only some path arguments) would
 * pass having tested nothing.
 */
function archiveStrace(id: string, syscall: string, error: string, kind: FaultKind, where: (ctx: CaseContext, names: string[]) => string, fires: RegExp, when = '1'): FaultCase {
  return {
    id: `archive-wal/${id}`,
    process: 'archive-wal',
    point: `${syscall} ${error} #${when} on one path`,
    kind,
    servers: [SRV],
    async run(ctx) {
      const names = await feed(ctx, 2);
      const r = await ctx.world.barman(SRV, ['archive-wal', SRV], { strace: { syscall, error, when, path: where(ctx, names) } });
      if (r.code !== 0) ctx.expect(/ERROR|WARNING/.test(r.stderr), `the failure is reported: ${describe(r)}`);
      ctx.expect(fires.test(r.stderr), `the injected ${error} was hit (stderr matches ${fires}): ${describe(r)}`);
      const again = await ctx.world.barman(SRV, ['archive-wal', SRV]);
      ctx.expect(again.code === 0, `archive-wal once the disk works: ${describe(again)}`);
      for (const n of names) ctx.expect(existsSync(walsFile(ctx.world, SRV, n)), `${n} archived after the second run`);
      return `${how(r)}${firstLine(r) ? `: ${firstLine(r)}` : ''}; next ${how(again)}`;
    },
  };
}

/** Junk dropped in incoming/: archive-wal moves it to errors/ (or leaves it), never archives it, never fails for good. */
function junkCase(id: string, what: string, make: (dir: string) => Promise<string>): FaultCase {
  return {
    id: `archive-wal/junk/${id}`,
    process: 'archive-wal',
    point: `incoming/: ${what}`,
    kind: 'hostile input',
    servers: [SRV],
    async run(ctx) {
      const dir = incomingDir(ctx.world, SRV);
      const name = await make(dir);
      const names = await feed(ctx, 1);
      const r = await ctx.world.barman(SRV, ['archive-wal', SRV]);
      ctx.expect(existsSync(walsFile(ctx.world, SRV, names[0]!)), `the good segment ${names[0]} next to the junk is archived`);
      const stillThere = existsSync(path.join(dir, name));
      const inErrors = dirNames(path.join(ctx.world.server(SRV).dir, 'errors')).some((f) => f.startsWith(name));
      if (/^[0-9A-F]{24}$/.test(name)) ctx.expect(!existsSync(walsFile(ctx.world, SRV, name)), `the junk ${name} is not archived as a WAL segment`);
      if (/\.history$/.test(name)) ctx.expect(!existsSync(path.join(ctx.world.server(SRV).dir, 'wals', name)), `the junk ${name} is not archived as a history file`);
      // Leave no junk for later cases.
      await fs.rm(path.join(dir, name), { recursive: true, force: true });
      return `archive-wal ${how(r)}${firstLine(r) ? `: ${firstLine(r)}` : ''}; junk ${inErrors ? 'moved to errors/' : stillThere ? 'left in incoming/' : 'gone'}`;
    },
  };
}

async function asBarman(file: string, data: Buffer | string, mode = 0o600): Promise<void> {
  await fs.writeFile(file, data, { mode });
  const { uid, gid } = await fs.stat(path.dirname(file));
  await fs.chown(file, uid, gid);
}

/** xlog.db damaged by hand: rebuild-xlogdb repairs it; archive-wal and get-wal keep working. */
function xlogCorruption(id: string, what: string, damage: (text: string) => string): FaultCase {
  return {
    id: `xlog.db/corrupt/${id}`,
    process: 'rebuild-xlogdb',
    point: `xlog.db: ${what}`,
    kind: 'corruption',
    servers: [SRV],
    async run(ctx) {
      await feed(ctx, 1);
      await ctx.world.barmanOk(SRV, ['archive-wal', SRV]);
      const file = xlogDb(ctx);
      const good = readFileSync(file, 'latin1');
      await asBarman(file, Buffer.from(damage(good), 'latin1'));
      // An ordinary reader first: a clear error or success, never a crash.
      const list = await ctx.world.barman(SRV, ['show-servers', SRV]);
      const rb = await ctx.world.barman(SRV, ['rebuild-xlogdb', SRV]);
      ctx.expect(rb.code === 0, `rebuild-xlogdb repairs a damaged xlog.db: ${describe(rb)}`);
      const after = readFileSync(file, 'latin1');
      const sortLines = (t: string) => t.split('\n').filter(Boolean).map((l) => l.split('\t')[0]).sort().join('\n');
      ctx.expect(sortLines(after) === sortLines(good), 'the rebuilt xlog.db lists the same WAL files as before the damage');
      return `show-servers ${how(list)}; rebuild-xlogdb ${how(rb)}`;
    },
  };
}

function rebuildKill(point: string, action: 'kill' | 'term'): FaultCase {
  return {
    id: `rebuild-xlogdb/${action}@${point}`,
    process: 'rebuild-xlogdb',
    point,
    kind: action === 'kill' ? 'SIGKILL' : 'SIGTERM',
    servers: [SRV],
    async run(ctx) {
      const before = readFileSync(xlogDb(ctx), 'latin1');
      const r = await ctx.world.barman(SRV, ['rebuild-xlogdb', SRV], { fault: `${point}=${action}` });
      ctx.requireFired(point);
      const after = existsSync(xlogDb(ctx)) ? readFileSync(xlogDb(ctx), 'latin1') : '';
      const names = (t: string) => t.split('\n').filter(Boolean).map((l) => l.split('\t')[0]).sort().join(',');
      ctx.expect(names(after) === names(before), 'xlog.db is the old or the new one, whole (the same WAL names)');
      const tmps = dirNames(path.dirname(xlogDb(ctx))).filter((f) => f.startsWith('xlog.db') && f !== 'xlog.db');
      return `${how(r)}; leftovers: ${tmps.length ? tmps.join(',') : 'none'}`;
    },
  };
}

/** get-wal (as the server's user) and barman-wal-restore (over ssh as postgres) with hostile names. */
function getWalHostile(id: string, name: string, pattern?: RegExp): FaultCase[] {
  return [
    {
      id: `get-wal/hostile/${id}`,
      process: 'get-wal',
      point: `name ${JSON.stringify(name)}`,
      kind: 'hostile input',
      servers: [SRV],
      async run(ctx) {
        const r = await ctx.world.barman(SRV, ['get-wal', SRV, name]);
        expectRefused(ctx, r, `get-wal ${JSON.stringify(name)}`, pattern);
        ctx.expect(r.stdout.length === 0, 'nothing sent on stdout');
        ctx.expect(!existsSync('/tmp/faults-pwned'), 'no shell ran the name');
        return `refused: ${firstLine(r)}`;
      },
    },
    {
      id: `barman-wal-restore/hostile/${id}`,
      process: 'barman-wal-restore',
      point: `name ${JSON.stringify(name)}`,
      kind: 'hostile input',
      servers: [SRV],
      async run(ctx) {
        const dest = path.join(await ctx.world.scratch('walrestore', POSTGRES_USER), 'out');
        const r = await walRestore(ctx, name, dest);
        ctx.expect(r.code !== 0, `barman-wal-restore ${JSON.stringify(name)} fails: ${describe(r)}`);
        ctx.expect(!existsSync(dest), 'nothing written at the destination');
        ctx.expect(!/root:x:0:/.test(r.stdout + r.stderr), 'no file outside the archive is sent');
        ctx.expect(!existsSync('/tmp/faults-pwned'), 'no shell ran the name');
        return `${how(r)}: ${firstLine(r)}`;
      },
    },
  ];
}

function walRestore(ctx: CaseContext, name: string, dest: string, extra: string[] = []): Promise<CmdResult> {
  const w = ctx.world;
  return exec([path.join(REPO, 'bin', 'barman-wal-restore'), '-c', w.server(SRV).conf, '--ssh-config', w.sshCfgPostgres, '-U', BARMAN_USER, ...extra, '127.0.0.1', SRV, name, dest], {
    user: POSTGRES_USER,
    timeoutMs: 60_000,
  });
}

export function walCases(): FaultCase[] {
  const cases: FaultCase[] = [];
  for (const p of ['archive-wal:prepared', 'archive-wal:placed', 'xlogdb:appended', 'archive-wal:cataloged', 'archive-wal:source-removed']) {
    cases.push(archiveCase(p, 'kill', 'SIGKILL'));
  }
  for (const p of ['archive-wal:placed', 'archive-wal:cataloged']) cases.push(archiveCase(p, 'term', 'SIGTERM'));
  cases.push(archiveCase('archive-wal:placed', 'throw:EIO', 'EIO'));
  cases.push(archiveCase('archive-wal:prepared', 'throw:ENOSPC', 'ENOSPC'));
  cases.push(archiveCase('xlogdb:appended', 'throw:EIO', 'EIO'));

  cases.push(archiveStrace('xlogdb-fsync-eio', 'fsync,fdatasync', 'EIO', 'EIO', (ctx) => xlogDb(ctx), /EIO/));
  cases.push(archiveStrace('xlogdb-write-enospc', 'write,writev,pwrite64,pwritev', 'ENOSPC', 'ENOSPC', (ctx) => xlogDb(ctx), /ENOSPC/));
  cases.push(archiveStrace('xlogdb-open-eacces', 'openat', 'EACCES', 'EACCES', (ctx) => xlogDb(ctx), /EACCES/));
  cases.push(archiveStrace('hashdir-fsync-eio', 'fsync,fdatasync', 'EIO', 'EIO', (ctx, n) => path.dirname(walsFile(ctx.world, SRV, n[0]!)), /EIO/));
  // `wal` compresses (gzip): each file is placed by renaming <dst>.tmp, and strace -P matches a
  // rename by its first (source) path only, so the fault is set on the .tmp name.
  cases.push(archiveStrace('place-link-or-rename-eio', 'rename,renameat,renameat2', 'EIO', 'EIO', (ctx, n) => `${walsFile(ctx.world, SRV, n[0]!)}.tmp`, /Cannot archive .*EIO/));
  cases.push(archiveStrace('unlink-source-eacces', 'unlink,unlinkat', 'EACCES', 'EACCES', (ctx, n) => path.join(incomingDir(ctx.world, SRV), n[0]!), /Cannot remove .*EACCES/));

  const junkSeg = () => synthSegment();
  cases.push(junkCase('random-name', 'a file named notes.txt', async (d) => (await asBarman(path.join(d, 'notes.txt'), 'hello'), 'notes.txt')));
  cases.push(
    junkCase('wrong-header', 'a 16 MiB file with a segment name and a foreign header', async (d) => {
      const [n, data] = junkSeg();
      data.writeUInt32LE(0xdeadbeef, 8); // xlp_pageaddr of another position
      await asBarman(path.join(d, n), data);
      // old enough for archive-wal to decide now (not still arriving)
      const old = new Date(Date.now() - 3600_000);
      await fs.utimes(path.join(d, n), old, old);
      return n;
    }),
  );
  cases.push(
    junkCase('truncated-old', 'a truncated segment (1 MiB), an hour old', async (d) => {
      const [n, data] = junkSeg();
      await asBarman(path.join(d, n), data.subarray(0, 1 << 20));
      const old = new Date(Date.now() - 3600_000);
      await fs.utimes(path.join(d, n), old, old);
      return n;
    }),
  );
  cases.push(junkCase('subdirectory', 'a directory named like a segment', async (d) => {
    const [n] = junkSeg();
    await fs.mkdir(path.join(d, n));
    const { uid, gid } = await fs.stat(d);
    await fs.chown(path.join(d, n), uid, gid);
    return n;
  }));
  cases.push(junkCase('symlink', 'a symlink named like a segment pointing to /etc/passwd', async (d) => {
    const [n] = junkSeg();
    await fs.symlink('/etc/passwd', path.join(d, n));
    return n;
  }));
  const oldJunk = async (d: string, name: string, data: string | Buffer): Promise<string> => {
    await asBarman(path.join(d, name), data);
    const old = new Date(Date.now() - 3600_000); // past the grace period of a file still arriving
    await fs.utimes(path.join(d, name), old, old);
    return name;
  };
  cases.push(junkCase('empty-file', 'an empty file named like a history file, an hour old', (d) => oldJunk(d, '0000000F.history', '')));
  cases.push(junkCase('history-garbage', 'a history file of garbage, an hour old', (d) => oldJunk(d, '0000000E.history', 'garbage\n')));
  cases.push(junkCase('history-recent-empty', 'an empty history file just written (may still be arriving)', async (d) => (await asBarman(path.join(d, '0000000D.history'), ''), '0000000D.history')));
  cases.push(junkCase('gzip-garbage', 'gzip magic then garbage, segment name', async (d) => {
    const [n] = junkSeg();
    await asBarman(path.join(d, n), Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0x00]), Buffer.alloc(1000, 0x55)]));
    return n;
  }));

  cases.push(xlogCorruption('truncated-line', 'last line cut in the middle', (t) => t.replace(/\n$/, '').slice(0, -5)));
  cases.push(xlogCorruption('garbage-line', 'a line of garbage appended', (t) => `${t}this is not\ta valid line\n`));
  cases.push(xlogCorruption('emptied', 'emptied', () => ''));
  cases.push(xlogCorruption('duplicated', 'every line twice', (t) => t + t));
  cases.push(xlogCorruption('nul-bytes', 'NUL bytes in the middle (a torn page)', (t) => t.slice(0, Math.floor(t.length / 2)) + '\0'.repeat(512) + t.slice(Math.floor(t.length / 2))));
  cases.push(xlogCorruption('missing-entry', 'the line of one archived segment removed', (t) => t.split('\n').slice(1).join('\n')));

  cases.push(rebuildKill('xlogdb:tmp-written', 'kill'));
  cases.push(rebuildKill('xlogdb:renamed', 'kill'));
  cases.push(rebuildKill('xlogdb:tmp-written', 'term'));

  cases.push(...getWalHostile('traversal', '../../../../etc/passwd'));
  cases.push(...getWalHostile('absolute', '/etc/passwd'));
  cases.push(...getWalHostile('xlogdb-name', 'xlog.db'));
  cases.push(...getWalHostile('missing-segment', '000000010000000A000000FE'));
  cases.push(...getWalHostile('hash-dir-traversal', '000000010000000A/../../../etc/passwd'));
  cases.push(...getWalHostile('shell-metachars', '000000010000000A00000001;touch /tmp/faults-pwned'));
  cases.push(...getWalHostile('command-substitution', '$(touch /tmp/faults-pwned)'));

  // Bit flip in an archived (gzip) segment of `wal`: get-wal must not hand PostgreSQL bad WAL.
  cases.push({
    id: 'get-wal/bitflip-archived-gzip',
    process: 'get-wal',
    point: 'one bit flipped in an archived gzip segment',
    kind: 'corruption',
    servers: [SRV],
    async run(ctx) {
      const [name] = await feed(ctx, 1);
      await ctx.world.barmanOk(SRV, ['archive-wal', SRV]);
      const file = walsFile(ctx.world, SRV, name!);
      const good = await fs.readFile(file);
      const stGood = await fs.stat(file);
      const bad = Buffer.from(good);
      const at = Math.floor(bad.length / 2);
      bad[at] = (bad[at] ?? 0) ^ 0x01;
      await asBarman(file, bad);
      const dest = path.join(await ctx.world.scratch('bitflip', POSTGRES_USER), name!);
      let r: CmdResult;
      try {
        r = await walRestore(ctx, name!, dest);
      } finally {
        await asBarman(file, good); // put the acknowledged content back, with its mtime (xlog.db has it)
        await fs.utimes(file, stGood.atime, stGood.mtime);
      }
      ctx.expect(r.code !== 0, `barman-wal-restore of a corrupted segment fails: ${describe(r)}`);
      ctx.expect(!existsSync(dest), 'no corrupted segment handed to PostgreSQL');
      const ok = await walRestore(ctx, name!, `${dest}.again`);
      ctx.expect(ok.code === 0, `once repaired it restores: ${describe(ok)}`);
      return `corrupted: ${how(r)}: ${firstLine(r)}; repaired: ${how(ok)}`;
    },
  });
  // barman-wal-restore with ssh killed in the middle of the transfer.
  cases.push({
    id: 'barman-wal-restore/ssh-killed',
    process: 'barman-wal-restore',
    point: 'ssh SIGKILLed after 150 ms',
    kind: 'ssh killed',
    servers: [SRV],
    async run(ctx) {
      const [name] = await feed(ctx, 1);
      await ctx.world.barmanOk(SRV, ['archive-wal', SRV]);
      const dir = await ctx.world.scratch('walrestore-ssh', POSTGRES_USER);
      const dest = path.join(dir, name!);
      const w = ctx.world;
      const { start } = await import('./exec.js');
      const run = start([path.join(REPO, 'bin', 'barman-wal-restore'), '-c', w.server(SRV).conf, '--ssh-config', w.sshCfgPostgres, '-U', BARMAN_USER, '127.0.0.1', SRV, name!, dest], { user: POSTGRES_USER });
      const { descendants } = await import('./exec.js');
      let killed = false;
      const t0 = Date.now();
      while (!killed && Date.now() - t0 < 10_000) {
        for (const pid of descendants(run.pgid)) {
          try {
            if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'ssh') {
              process.kill(pid, 'SIGKILL');
              killed = true;
            }
          } catch {
            // gone
          }
        }
        await new Promise((res) => setTimeout(res, 20));
      }
      const r = await run.done;
      if (r.code === 0) {
        const data = await fs.readFile(dest);
        ctx.expect(data.length === 16 << 20, `a success wrote a whole segment (${data.length} bytes)`);
      } else ctx.expect(!existsSync(dest), `a failed restore leaves no partial segment at ${dest}`);
      const again = await walRestore(ctx, name!, dest);
      ctx.expect(again.code === 0, `the next restore works: ${describe(again)}`);
      return `ssh ${killed ? 'killed' : 'ended before it could be killed'}; ${how(r)}${r.code ? `: ${firstLine(r)}` : ''}; again ${how(again)}`;
    },
  });

  // receive-wal: SIGKILL of the barman process and of pg_receivewal; cron restarts it, no WAL lost.
  for (const victim of ['barman', 'pg_receivewal'] as const) {
    cases.push({
      id: `receive-wal/kill-${victim}`,
      process: 'receive-wal',
      point: `${victim} SIGKILLed while streaming`,
      kind: 'SIGKILL',
      servers: ['strm'],
      async run(ctx) {
        await ctx.world.churn(20);
        const pids = await findProcs(victim === 'barman' ? /receive-wal.*strm/ : /pg_receivewal.*bts_strm/);
        ctx.expect(pids.length > 0, `a ${victim} process of strm runs`);
        for (const p of pids) process.kill(p, 'SIGKILL');
        await ctx.world.churn(20);
        await ctx.world.waitStreaming('strm');
        return `killed ${pids.length} process(es); cron restarted streaming`;
      },
    });
  }
  return cases;
}

async function findProcs(re: RegExp): Promise<number[]> {
  const out: number[] = [];
  for (const d of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const cmd = (await fs.readFile(`/proc/${d}/cmdline`, 'utf8')).split('\0').join(' ');
      if (re.test(cmd) && Number(d) !== process.pid) out.push(Number(d));
    } catch {
      // gone
    }
  }
  return out;
}

export { findProcs, feed, asBarman };
