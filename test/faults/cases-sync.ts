/**
 * Geo-redundancy (spec §10): `pas`, a passive node of `strm` (world.addPassive), copies the
 * primary's backups (sync-backup) and WAL files (sync-wals) by rsync through
 * primary_ssh_command. Attacked: sync-backup killed or terminated in the middle of the copy and
 * once it is complete, the primary's ssh killed under it, two sync-backups racing; sync-wals
 * killed between the copy and the catalog and between the catalog and its position file. A
 * backup is never DONE on the passive before its copy is complete, and the next run finishes
 * what the killed one started; the shared invariants then run on `pas` (xlog.db agrees with
 * wals/, check-backup and verify-backup of its DONE copies, Barman 3.4 reads its catalog).
 */
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { descendants, describe, type CmdResult, type Running } from './exec.js';
import { firstLine, how, startBarman, waitForFile } from './common.js';
import type { CaseContext, FaultCase, FaultKind } from './types.js';

const P = 'pas' as const;
const SRV = 'strm';
/** Small rsync runs during sync-backup: many buckets, so a fault lands in the middle of the copy. */
const SMALL_BUCKETS = { BARMAN_TS_SYNC_BUCKET_BYTES: String(2 << 20) };

async function passiveReady(ctx: CaseContext): Promise<void> {
  await ctx.world.addPassive();
  ctx.checker.reloadConfigs();
  const r = await ctx.world.barman(P, ['sync-info', '--primary', SRV]);
  if (r.code !== 0) throw new Error(`sync-info --primary on the passive node failed: ${describe(r)}`);
}

async function passiveStatus(ctx: CaseContext, id: string): Promise<string> {
  return (await ctx.checker.catalog(P)).find((e) => e.id === id)?.info.status ?? 'absent';
}

/** The newest DONE backup of the primary. */
async function primaryBackup(ctx: CaseContext): Promise<string> {
  const done = (await ctx.checker.catalog(SRV)).filter((e) => e.info.status === 'DONE');
  const id = done[done.length - 1]?.id;
  if (!id) throw new Error('the primary has no DONE backup');
  return id;
}

/**
 * Make `id` "not synced yet" on the passive again (its copy removed, as if it had never come),
 * so that every case copies it whole without a new backup on the primary.
 */
async function unsync(ctx: CaseContext, id: string): Promise<void> {
  await fs.rm(path.join(ctx.world.server(P).dir, 'base', id), { recursive: true, force: true });
}

/**
 * After a sync under a fault: the backup must not be DONE unless the run succeeded; then a plain
 * sync-backup (and sync-wals, check-backup, what cron does) must bring it to DONE.
 */
async function finishes(ctx: CaseContext, id: string, r: CmdResult): Promise<string> {
  const left = await passiveStatus(ctx, id);
  if (r.code !== 0) ctx.expect(left !== 'DONE' && left !== 'WAITING_FOR_WALS', `a sync-backup that failed (${how(r)}) left ${id} ${left}, not a complete copy`);
  const again = await ctx.world.barman(P, ['sync-backup', SRV, id], { timeoutMs: 300_000 });
  ctx.expect(again.code === 0, `sync-backup again completes the copy: ${describe(again)}`);
  await ctx.world.barman(P, ['sync-wals', SRV]);
  if ((await passiveStatus(ctx, id)) === 'WAITING_FOR_WALS') await ctx.world.barman(P, ['check-backup', SRV, id]);
  const final = await passiveStatus(ctx, id);
  ctx.expect(final === 'DONE', `${id} is DONE on the passive node after the rerun (${final})`);
  return `${how(r)}${r.code ? `: ${firstLine(r)}` : ''}; left ${left}; rerun ${how(again)}, ${final}`;
}

/** A whole copy of the primary's newest backup, started and paused after its first rsync run. */
async function pausedSync(ctx: CaseContext): Promise<{ id: string; run: Running; resume: () => Promise<void> }> {
  await passiveReady(ctx);
  const id = await primaryBackup(ctx);
  await unsync(ctx, id);
  const flag = ctx.flag('sync-paused');
  const run = startBarman(ctx.world, P, ['sync-backup', SRV, id], { fault: `sync-backup:bucket-copied=pause:${flag}`, env: SMALL_BUCKETS });
  ctx.expect(await waitForFile(`${flag}.reached`, run), 'sync-backup reached the pause');
  return { id, run, resume: () => fs.writeFile(flag, '') };
}

function syncBackupFault(point: string, action: 'kill' | 'term', kind: FaultKind): FaultCase {
  return {
    id: `sync-backup/${action}@${point}`,
    process: 'sync-backup',
    point,
    kind,
    servers: [P],
    needs: { strm: 2 },
    fullRestore: action === 'kill' && point.endsWith(':copied'),
    async run(ctx) {
      await passiveReady(ctx);
      const id = await primaryBackup(ctx);
      await unsync(ctx, id);
      const r = await ctx.world.barman(P, ['sync-backup', SRV, id], { fault: `${point}=${action}`, env: SMALL_BUCKETS, timeoutMs: 300_000 });
      ctx.requireFired(point.replace(/@\d+$/, ''));
      return finishes(ctx, id, r);
    },
  };
}

export function syncCases(): FaultCase[] {
  const cases: FaultCase[] = [];
  // The first copy: the passive node gets the primary's backup DONE (and is checked like any catalog).
  cases.push({
    id: 'sync-backup/first-copy',
    process: 'sync-backup',
    point: 'no fault: the first copy of a backup and its WAL',
    kind: 'none',
    servers: [P],
    needs: { strm: 2 },
    async run(ctx) {
      await passiveReady(ctx);
      const id = await primaryBackup(ctx);
      const r = await ctx.world.barman(P, ['sync-backup', SRV, id], { timeoutMs: 300_000 });
      ctx.expect(r.code === 0, describe(r));
      return finishes(ctx, id, r);
    },
  });
  cases.push(syncBackupFault('sync-backup:bucket-copied@2', 'kill', 'SIGKILL'));
  cases.push(syncBackupFault('sync-backup:copied', 'kill', 'SIGKILL'));
  cases.push(syncBackupFault('sync-backup:bucket-copied@2', 'term', 'SIGTERM'));

  // The primary's ssh (rsync's transport) killed in the middle of the copy.
  cases.push({
    id: 'sync-backup/ssh-killed',
    process: 'sync-backup',
    point: 'ssh to the primary SIGKILLed during the copy (paused after the first rsync run)',
    kind: 'ssh killed',
    servers: [P],
    needs: { strm: 2 },
    async run(ctx) {
      // Paused after the first bucket, the next rsync (and its ssh) is being started or runs:
      // resume and kill the first ssh seen.
      const { id, run, resume } = await pausedSync(ctx);
      await resume();
      let killed = 0;
      let ended = false;
      void run.done.then(() => (ended = true));
      const t0 = Date.now();
      while (killed === 0 && Date.now() - t0 < 20_000 && !ended) {
        for (const pid of descendants(run.pgid)) {
          try {
            if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'ssh') {
              process.kill(pid, 'SIGKILL');
              killed++;
            }
          } catch {
            // gone
          }
        }
        await new Promise((res) => setTimeout(res, 10));
      }
      const r = await run.done;
      ctx.note(`ssh processes killed: ${killed}`);
      ctx.expect(killed > 0 || r.code === 0, 'an ssh to the primary was killed (or the copy ended first)');
      return `ssh ${killed ? 'killed' : 'not seen'}; ${await finishes(ctx, id, r)}`;
    },
  });

  // Two sync-backups of one backup at once: one copies, the other is refused (its lock), none corrupts the copy.
  cases.push({
    id: 'sync-backup/race-same-backup',
    process: 'sync-backup',
    point: 'a second sync-backup while the first is paused in the copy',
    kind: 'race',
    servers: [P],
    needs: { strm: 2 },
    async run(ctx) {
      const { id, run: first, resume } = await pausedSync(ctx);
      const second = await ctx.world.barman(P, ['sync-backup', SRV, id]);
      await resume();
      const r = await first.done;
      ctx.expect(second.code !== 0 && /already running|in progress/i.test(second.stderr + second.stdout), `the second sync-backup is refused while the first copies: ${describe(second)}`);
      ctx.expect(r.code === 0, `the first completes: ${describe(r)}`);
      return `second ${how(second)}: ${firstLine(second)}; ${await finishes(ctx, id, r)}`;
    },
  });

  // sync-wals: new WAL on the primary, then the passive's copy killed between its steps.
  for (const [point, action] of [
    ['sync-wals:copied', 'kill'],
    ['sync-wals:cataloged', 'kill'],
    ['sync-wals:copied', 'term'],
  ] as const) {
    cases.push({
      id: `sync-wals/${action}@${point}`,
      process: 'sync-wals',
      point,
      kind: action === 'kill' ? 'SIGKILL' : 'SIGTERM',
      servers: [P],
      needs: { strm: 2 },
      async run(ctx) {
        const last = await newPrimaryWal(ctx);
        const r = await ctx.world.barman(P, ['sync-wals', SRV], { fault: `${point}=${action}` });
        ctx.requireFired(point);
        const again = await syncWalsAgain(ctx, last);
        return `${how(r)}; rerun ${how(again)}; ${last} synced`;
      },
    });
  }

  // The primary's ssh under sync-wals' rsync killed in the middle of the copy.
  cases.push({
    id: 'sync-wals/ssh-killed',
    process: 'sync-wals',
    point: "ssh to the primary under sync-wals' rsync SIGKILLed during the copy",
    kind: 'ssh killed',
    servers: [P],
    needs: { strm: 2 },
    async run(ctx) {
      const last = await newPrimaryWal(ctx, 6);
      const run = startBarman(ctx.world, P, ['sync-wals', SRV]);
      let killed = 0;
      let ended = false;
      void run.done.then(() => (ended = true));
      const t0 = Date.now();
      const comm = (pid: number | string) => {
        try {
          return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
        } catch {
          return '';
        }
      };
      const parentOf = (pid: number) => {
        try {
          const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
          return st.slice(st.lastIndexOf(')') + 2).split(' ')[1] ?? '';
        } catch {
          return '';
        }
      };
      // Only the ssh that carries rsync (not the one of sync-info before it).
      while (killed === 0 && Date.now() - t0 < 60_000 && !ended) {
        for (const pid of descendants(run.pgid)) {
          if (comm(pid) === 'ssh' && comm(parentOf(pid)) === 'rsync') {
            try {
              process.kill(pid, 'SIGKILL');
              killed++;
            } catch {
              // gone
            }
          }
        }
        await new Promise((res) => setTimeout(res, 5));
      }
      const r = await run.done;
      run.killGroup();
      ctx.note(`ssh processes killed: ${killed}`);
      ctx.expect(killed > 0, `the ssh under rsync was killed (sync-wals ${how(r)} first)`);
      ctx.expect(killed === 0 || r.code !== 0, `sync-wals whose rsync lost its ssh fails: ${describe(r)}`);
      const again = await syncWalsAgain(ctx, last);
      return `ssh ${killed ? 'killed' : 'not seen'}; ${how(r)}${r.code ? `: ${firstLine(r)}` : ''}; rerun ${how(again)}; ${last} synced`;
    },
  });
  return cases;
}

/** The passive has the primary's newest backup; new WAL archived on the primary (listed by sync-info). Returns the newest. */
async function newPrimaryWal(ctx: CaseContext, segments = 3): Promise<string> {
  await passiveReady(ctx);
  const id = await primaryBackup(ctx);
  if ((await passiveStatus(ctx, id)) !== 'DONE') await ctx.world.barman(P, ['sync-backup', SRV, id], { timeoutMs: 300_000 });
  // New WAL files archived on the primary (streamed, then archive-wal), listed by sync-info.
  let last = '';
  for (let i = 0; i < segments; i++) last = await ctx.world.churn(20);
  const deadline = Date.now() + 60_000;
  const primaryWals = path.join(ctx.world.server(SRV).dir, 'wals');
  while (!existsSync(path.join(primaryWals, last.slice(0, 16), last)) && Date.now() < deadline) {
    await ctx.world.barman(SRV, ['archive-wal', SRV]);
    await new Promise((res) => setTimeout(res, 300));
  }
  await ctx.world.barmanOk(P, ['sync-info', '--primary', SRV]);
  return last;
}

/** sync-wals run again completes: `last` is on the passive, listed once in its xlog.db. */
async function syncWalsAgain(ctx: CaseContext, last: string): Promise<CmdResult> {
  const again = await ctx.world.barman(P, ['sync-wals', SRV]);
  ctx.expect(again.code === 0, `sync-wals again: ${describe(again)}`);
  const mine = path.join(ctx.world.server(P).dir, 'wals', last.slice(0, 16), last);
  ctx.expect(existsSync(mine), `${last} (archived on the primary) is on the passive node after the rerun`);
  const db = readFileSync(path.join(ctx.world.server(P).dir, 'wals', 'xlog.db'), 'latin1').split('\n').filter(Boolean).map((l) => l.split('\t')[0]);
  ctx.expect(db.filter((n) => n === last).length === 1, `${last} is listed once in the passive's xlog.db`);
  ctx.expect(new Set(db).size === db.length, 'no name listed twice in xlog.db after the rerun');
  return again;
}
