/**
 * A timeline switch during WAL streaming: `tl` streams (receive-wal, a slot on the standby)
 * from a hot standby of cluster A (world.addTimeline); the standby is promoted while it streams
 * (timeline 2). Every segment of timeline 1 it had streamed stays archived, the history file
 * arrives and parses, timeline 2 follows without a gap; then receive-wal is killed on the new
 * timeline and cron restarts it there. The shared invariants run on `tl` (xlog.db agrees with
 * wals/, every segment seen stays archived with the same content, the next commands succeed).
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseHistoryFile } from '../../src/wal/names.js';
import { decompressBuffer, identifyCompression } from '../../src/wal/compression.js';
import { findProcs } from './cases-wal.js';
import type { CaseContext, FaultCase } from './types.js';

const T = 'tl' as const;

function archived(ctx: CaseContext, name: string): string {
  const wals = path.join(ctx.world.server(T).dir, 'wals');
  return name.endsWith('.history') ? path.join(wals, name) : path.join(wals, name.slice(0, 16), name);
}

/** cron and archive-wal of `tl` until every one of `names` is archived (or the time is up). */
async function untilArchived(ctx: CaseContext, names: string[], timeoutMs = 90_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const missing = names.filter((n) => !existsSync(archived(ctx, n)));
    if (missing.length === 0 || Date.now() > deadline) return missing;
    await ctx.world.barman(T, ['cron']);
    await ctx.world.barman(T, ['archive-wal', T]);
    await new Promise((res) => setTimeout(res, 500));
  }
}

/** Write on `db` and switch: the name of the segment just closed. */
async function churnOn(db: { psql(sql: string): Promise<string> }): Promise<string> {
  await db.psql("INSERT INTO ticks (pad) SELECT repeat('t', 200) FROM generate_series(1, 100)");
  return db.psql('SELECT pg_walfile_name(pg_switch_wal())');
}

async function plain(file: string): Promise<Buffer> {
  const data = readFileSync(file);
  const algo = identifyCompression(data);
  return algo === null ? data : decompressBuffer(data, algo);
}

export function timelineCases(): FaultCase[] {
  return [
    {
      id: 'timeline/promote-while-streaming',
      process: 'receive-wal',
      point: 'the streamed standby promoted (pg_promote), then written on timeline 2',
      kind: 'timeline switch',
      servers: [T],
      async run(ctx) {
        const standby = await ctx.world.addTimeline();
        ctx.checker.reloadConfigs();
        // Timeline 1, streamed through the standby.
        const tl1 = await churnOn(ctx.world.pg);
        await new Promise((res) => setTimeout(res, 500));
        ctx.expect((await untilArchived(ctx, [tl1])).length === 0, `${tl1} (timeline 1, through the standby) archived before the switch`);
        const promoted = await standby.psql('SELECT pg_promote(true, 60)');
        ctx.expect(promoted === 't', `the standby promoted (${promoted})`);
        // The new timeline: written and switched on the promoted standby (its segments name it;
        // pg_control_checkpoint() would still say 1 until the next checkpoint).
        const first = await churnOn(standby);
        const second = await churnOn(standby);
        const tli = parseInt(first.slice(0, 8), 16);
        const history = `${first.slice(0, 8)}.history`;
        ctx.expect(tli === parseInt(tl1.slice(0, 8), 16) + 1, `${first} is of the timeline after ${tl1}'s`);
        const missing = await untilArchived(ctx, [history, first, second]);
        ctx.expect(missing.length === 0, `after the switch: ${missing.join(', ') || 'nothing'} missing from the archive of tl`);
        if (existsSync(archived(ctx, history))) {
          const entries = parseHistoryFile((await plain(archived(ctx, history))).toString('latin1'));
          ctx.expect(entries.length >= 1 && entries.at(-1)?.parentTli === tli - 1, `${history} names timeline ${tli - 1} as parent: ${JSON.stringify(entries.map((e) => e.parentTli))}`);
        }
        ctx.expect(existsSync(archived(ctx, tl1)), `${tl1} of timeline 1 is still archived`);
        return `promoted to timeline ${tli}; archived ${history}, ${first}, ${second}${missing.length ? `; missing ${missing.join(', ')}` : ''}`;
      },
    },
    {
      id: 'timeline/kill-receive-wal-after-switch',
      process: 'receive-wal',
      point: 'pg_receivewal SIGKILLed on the new timeline, restarted by cron',
      kind: 'SIGKILL',
      servers: [T],
      async run(ctx) {
        const standby = await ctx.world.addTimeline();
        const before = await churnOn(standby);
        const pids = await findProcs(/pg_receivewal.*bts_tl/);
        ctx.expect(pids.length > 0, 'a pg_receivewal of tl runs');
        for (const p of pids) process.kill(p, 'SIGKILL');
        const after = await churnOn(standby);
        const missing = await untilArchived(ctx, [before, after]);
        ctx.expect(missing.length === 0, `${missing.join(', ') || 'nothing'} missing after the restart`);
        return `killed ${pids.length} pg_receivewal; cron restarted it; ${before} and ${after} archived`;
      },
    },
  ];
}
