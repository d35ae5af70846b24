/**
 * The catalog attacked by hand: backup.info truncated, emptied, garbled or gone, a bit flipped
 * in a backup's data file, and hostile backup ids and server names given to the commands that
 * write. Every damage is undone by the case itself after the commands under test ran: the
 * driver then checks that nothing else changed.
 */
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, type CmdResult } from './exec.js';
import { expectRefused, firstLine, how } from './common.js';
import type { CaseContext, FaultCase } from './types.js';
import { asBarman } from './cases-wal.js';

const SRV = 'strm' as const;

async function latestDone(ctx: CaseContext): Promise<string> {
  const done = (await ctx.checker.catalog(SRV)).filter((e) => e.info.status === 'DONE');
  if (done.length === 0) throw new Error('no DONE backup');
  return done[done.length - 1]!.id;
}

async function infoFileOf(ctx: CaseContext, id: string): Promise<string> {
  const e = (await ctx.checker.catalog(SRV)).find((x) => x.id === id);
  if (!e) throw new Error(`no backup ${id}`);
  return e.infoFile;
}

/** Readers that must not crash on a damaged catalog (a clear error, or the damaged backup shown as such). */
async function readers(ctx: CaseContext, id: string): Promise<CmdResult[]> {
  const w = ctx.world;
  return [await w.barman(SRV, ['list-backups', SRV]), await w.barman(SRV, ['show-backup', SRV, id]), await w.barman(SRV, ['check', SRV]), await w.barman(null, ['cron'])];
}

function infoDamage(id: string, what: string, damage: (text: string) => string | null): FaultCase {
  return {
    id: `catalog/backup.info/${id}`,
    process: 'list-backups, show-backup, check, cron',
    point: `backup.info ${what}`,
    kind: 'corruption',
    servers: [SRV],
    needs: { strm: 1 },
    async run(ctx) {
      const bid = await latestDone(ctx);
      const file = await infoFileOf(ctx, bid);
      const good = await fs.readFile(file, 'latin1');
      const bad = damage(good);
      if (bad === null) await fs.rm(file);
      else await asBarman(file, Buffer.from(bad, 'latin1'));
      let rs: CmdResult[];
      try {
        rs = await readers(ctx, bid);
        ctx.expect(existsSync(path.join(ctx.world.server(SRV).dir, 'base', bid)), `the damaged backup ${bid} is still there (no command removed it on a guess)`);
      } finally {
        await asBarman(file, Buffer.from(good, 'latin1'));
      }
      return rs.map((r) => `${r.argv.find((a) => ['list-backups', 'show-backup', 'check', 'cron'].includes(a))} ${how(r)}`).join(', ');
    },
  };
}

function hostileId(cmd: string, args: (id: string) => string[], id: string, label: string): FaultCase {
  return {
    id: `catalog/hostile-id/${cmd}/${label}`,
    process: cmd,
    point: `backup id ${JSON.stringify(id)}`,
    kind: 'hostile input',
    // The WAL-only server: no background activity, so a refusal that changed nothing is seen as such.
    servers: ['wal'],
    async run(ctx) {
      const r = await ctx.world.barman('wal', args(id));
      expectRefused(ctx, r, `${cmd} ${JSON.stringify(id)}`);
      return `refused: ${firstLine(r)}`;
    },
  };
}

export function catalogCases(): FaultCase[] {
  const c: FaultCase[] = [];
  c.push(infoDamage('truncated', 'cut in half', (t) => t.slice(0, Math.floor(t.length / 2))));
  c.push(infoDamage('emptied', 'emptied', () => ''));
  c.push(infoDamage('garbage', 'replaced by binary garbage', () => '\u0000\u00ff\u0013garbage=\u0001\n'.repeat(20)));
  c.push(infoDamage('bad-status', 'status=BOGUS', (t) => t.replace(/^status=.*$/m, 'status=BOGUS')));
  c.push(infoDamage('bad-begin-wal', 'begin_wal=../../etc/passwd', (t) => t.replace(/^begin_wal=.*$/m, 'begin_wal=../../etc/passwd')));
  c.push(infoDamage('bad-time', "end_time=not a date", (t) => t.replace(/^end_time=.*$/m, 'end_time=not a date')));
  c.push(infoDamage('missing', 'deleted (data still there)', () => null));

  // A bit flipped in a data file of a DONE backup: verify-backup must notice.
  c.push({
    id: 'catalog/backup-data/bitflip',
    process: 'verify-backup, check-backup',
    point: 'one bit flipped in a data file of a DONE backup',
    kind: 'corruption',
    servers: [SRV],
    needs: { strm: 1 },
    async run(ctx) {
      const bid = await latestDone(ctx);
      const data = path.join(ctx.world.server(SRV).dir, 'base', bid, 'data');
      // pgbench_accounts' heap is the largest file of base/<db>: flip one bit in it.
      let target = '';
      let size = 0;
      for (const db of await fs.readdir(path.join(data, 'base'))) {
        for (const f of await fs.readdir(path.join(data, 'base', db))) {
          const st = await fs.stat(path.join(data, 'base', db, f));
          if (st.isFile() && st.size > size) [target, size] = [path.join(data, 'base', db, f), st.size];
        }
      }
      if (!target) throw new Error('no data file found');
      const good = await fs.readFile(target);
      const st = await fs.stat(target);
      const bad = Buffer.from(good);
      bad[Math.floor(bad.length / 3)] = (bad[Math.floor(bad.length / 3)] ?? 0) ^ 0x20;
      await fs.writeFile(target, bad);
      let v: CmdResult;
      try {
        v = await ctx.world.barman(SRV, ['verify-backup', SRV, bid], { timeoutMs: 120_000 });
      } finally {
        await fs.writeFile(target, good);
        await fs.utimes(target, st.atime, st.mtime);
      }
      ctx.expect(v.code !== 0, `verify-backup detects the flipped bit: ${describe(v)}`);
      const again = await ctx.world.barman(SRV, ['verify-backup', SRV, bid], { timeoutMs: 120_000 });
      ctx.expect(again.code === 0, `verify-backup passes once repaired: ${describe(again)}`);
      return `damaged: ${how(v)}: ${firstLine(v)}; repaired: ${how(again)}`;
    },
  });

  const ids: Array<[string, string]> = [
    ['traversal', '../../../../etc'],
    ['absolute', '/etc/passwd'],
    ['shell', '20260101T000000;touch${IFS}/tmp/faults-pwned'],
    ['newline', '20260101T000000\nstatus=DONE'],
  ];
  for (const [label, id] of ids) {
    c.push(hostileId('delete', (x) => ['delete', 'wal', x], id, label));
    c.push(hostileId('keep', (x) => ['keep', 'wal', x, '--target', 'full'], id, label));
  }
  c.push(hostileId('recover', (x) => ['recover', 'wal', x, '/tmp/faults-never'], '../../../../etc', 'traversal'));
  c.push(hostileId('check-backup', (x) => ['check-backup', 'wal', x], '../../../../etc', 'traversal'));
  c.push(hostileId('verify-backup', (x) => ['verify-backup', 'wal', x], '../../../../etc', 'traversal'));
  c.push(hostileId('show-backup', (x) => ['show-backup', 'wal', x], '/etc/passwd', 'absolute'));
  c.push({
    id: 'catalog/hostile-server/backup',
    process: 'backup',
    point: "server name '../../etc'",
    kind: 'hostile input',
    servers: ['wal'],
    async run(ctx) {
      const r = await ctx.world.barman('wal', ['backup', '../../etc']);
      expectRefused(ctx, r, 'backup ../../etc');
      ctx.expect(!existsSync('/tmp/faults-pwned'), 'no shell ran');
      return `refused: ${firstLine(r)}`;
    },
  });
  return c;
}
