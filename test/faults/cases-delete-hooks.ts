/**
 * `delete` of the oldest backup of `strm` with wal_delete hook scripts (pre_wal_delete_script,
 * post_wal_delete_script, spec §9), killed in the middle of the hooks: between the pre and the
 * post hook of a WAL file (fault point `delete:wal-unlinked`), while a pre hook runs (SIGKILL)
 * and while a post hook runs (SIGTERM). The hook script logs each call and, at the chosen call,
 * waits for the campaign (which kills barman meanwhile). Expected: the backup FAILED or gone,
 * the delete run again completes; then the shared invariants on strm: xlog.db agrees with
 * wals/ (rebuild-xlogdb changes nothing), no WAL a remaining backup needs is gone.
 */
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe } from './exec.js';
import { firstLine, how, startBarman, waitForFile } from './common.js';
import type { CaseContext, FaultCase, FaultKind } from './types.js';

const S = 'strm' as const;

async function statusOf(ctx: CaseContext, id: string): Promise<string | undefined> {
  return (await ctx.checker.catalog(S)).find((e) => e.id === id)?.info.status;
}

/** The oldest DONE backup and how many WAL segments deleting it removes (those before the next DONE backup's begin). */
async function oldestAndWals(ctx: CaseContext): Promise<{ id: string; count: number }> {
  const done = (await ctx.checker.catalog(S)).filter((e) => e.info.status === 'DONE');
  const id = done[0]?.id;
  const next = done[1]?.info.begin_wal;
  if (!id || !next) throw new Error('strm needs two DONE backups');
  const db = path.join(ctx.world.server(S).dir, 'wals', 'xlog.db');
  const names = readFileSync(db, 'latin1').split('\n').map((l) => l.split('\t')[0] ?? '').filter((n) => /^[0-9A-F]{24}/.test(n));
  return { id, count: names.filter((n) => n.slice(0, 24) < next).length };
}

/** A hook script that logs its calls and, at call `at` of `phase`, waits for `flag` (creating `flag.reached`). */
async function hookScript(ctx: CaseContext, phase: 'pre' | 'post' | 'none', at: number, flag: string): Promise<{ file: string; log: string }> {
  const log = path.join(ctx.dir, 'wal-hooks.log');
  const file = path.join(ctx.dir, 'wal-hook.sh');
  await fs.writeFile(
    file,
    [
      '#!/bin/sh',
      `echo "$BARMAN_PHASE $BARMAN_SEGMENT" >> ${log}`,
      `n=$(grep -c "^$BARMAN_PHASE " ${log})`,
      `if [ "$BARMAN_PHASE" = "${phase}" ] && [ "$n" = "${at}" ] && [ ! -e ${flag}.reached ]; then`,
      `  echo $$ > ${flag}.reached`,
      `  i=0; while [ ! -e ${flag} ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done`,
      'fi',
      'exit 0',
      '',
    ].join('\n'),
    { mode: 0o755 },
  );
  await fs.writeFile(log, '', { mode: 0o666 });
  await fs.chmod(log, 0o666);
  return { file, log };
}

type Variant = { label: string; kind: FaultKind; phase: 'pre' | 'post' | 'none'; signal: NodeJS.Signals | null; point: string | null; at: number };

function hooksDeleteCase(v: Variant): FaultCase {
  return {
    id: `delete-strm/wal_delete-hooks/${v.label}`,
    process: 'delete',
    point: v.point ? `${v.point} with wal_delete hooks (between the pre and post hook of WAL #${v.at})` : `${v.signal} while the ${v.phase} wal_delete hook of WAL #${v.at} runs`,
    kind: v.kind,
    servers: [S],
    needs: { strm: 3 },
    async run(ctx) {
      const { id, count } = await oldestAndWals(ctx);
      // The chosen call, or the last one when fewer WAL files go.
      const at = Math.max(1, Math.min(v.at, count));
      const flag = ctx.flag('hook-paused');
      const { file, log } = await hookScript(ctx, v.phase, at, flag);
      await ctx.world.setServerOptions(S, { pre_wal_delete_script: file, post_wal_delete_script: file });
      try {
        let outcome: string;
        if (v.point) {
          const r = await ctx.world.barman(S, ['delete', S, id], { fault: `${v.point}@${at}=kill` });
          ctx.requireFired(v.point);
          outcome = how(r);
        } else {
          const run = startBarman(ctx.world, S, ['delete', S, id]);
          const reached = await waitForFile(`${flag}.reached`, run);
          ctx.expect(reached, `the ${v.phase} hook of WAL #${at} ran (${count} WAL files to remove)`);
          if (reached) run.signal(v.signal as NodeJS.Signals);
          await new Promise((res) => setTimeout(res, 300));
          await fs.writeFile(flag, '');
          const r = await run.done;
          run.killGroup();
          outcome = `${v.signal} in the ${v.phase} hook: ${how(r)}${r.code ? ` ${firstLine(r)}` : ''}`;
        }
        const calls = readFileSync(log, 'utf8').split('\n').filter(Boolean).length;
        const st = await statusOf(ctx, id);
        ctx.expect(st === undefined || st === 'FAILED', `an interrupted delete leaves the backup FAILED or gone, not ${st}`);
        let again = 'not needed';
        if (st !== undefined) {
          const r2 = await ctx.world.barman(S, ['delete', S, id]);
          ctx.expect(r2.code === 0, `delete run again: ${describe(r2)}`);
          again = how(r2);
        }
        ctx.expect((await statusOf(ctx, id)) === undefined, `${id} is gone after the rerun`);
        return `${outcome}; ${calls} hook calls of ${count} WAL files; status then ${st ?? 'gone'}; delete again ${again}`;
      } finally {
        await ctx.world.setServerOptions(S, { pre_wal_delete_script: null, post_wal_delete_script: null });
        if (!existsSync(flag)) await fs.writeFile(flag, '').catch(() => undefined);
      }
    },
  };
}

export function deleteHooksCases(): FaultCase[] {
  return [
    hooksDeleteCase({ label: 'kill@delete:wal-unlinked', kind: 'SIGKILL', phase: 'none', signal: null, point: 'delete:wal-unlinked', at: 2 }),
    hooksDeleteCase({ label: 'kill-in-pre-hook', kind: 'SIGKILL', phase: 'pre', signal: 'SIGKILL', point: null, at: 2 }),
    hooksDeleteCase({ label: 'term-in-post-hook', kind: 'SIGTERM', phase: 'post', signal: 'SIGTERM', point: null, at: 2 }),
  ];
}
