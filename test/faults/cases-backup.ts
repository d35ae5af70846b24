/**
 * Backups (postgres, rsync over ssh, agent, local-rsync) killed, terminated or failing at each
 * named stage and at time offsets, ssh killed mid-copy, PostgreSQL restarted during a backup,
 * a full disk, and races (two backups, backup + delete, cron + cron); then delete, retention,
 * keep, check-backup and recover (local and remote) attacked the same way; drill killed.
 * After each case the driver checks that a backup left behind is FAILED (never DONE with
 * missing data), that every DONE backup still verifies/restores, and that the next commands run.
 */
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, start, descendants, type CmdResult, type Running } from './exec.js';
import { fillTmpfs, firstLine, how, putWal, startBarman, synthSegment, waitForFile } from './common.js';
import { walTar } from './tar.js';
import type { CaseContext, FaultCase, FaultKind } from './types.js';
import type { ServerName } from './world.js';
import { POSTGRES_USER, BARMAN_USER } from '../helpers/system.js';
import { startRecoveredCluster } from '../helpers/pg-cluster.js';

type BackupSrv = 'strm' | 'rsy' | 'agt' | 'lr';

/** Killed by a signal (runuser reports the child's death by signal N as exit 128 + N). */
const wasKilled = (r: CmdResult) => r.signal !== null || r.code === 137 || r.code === 143;

const kindOf = (action: string): FaultKind => (action === 'kill' ? 'SIGKILL' : action === 'term' ? 'SIGTERM' : (action.slice(6) as FaultKind));

async function statuses(ctx: CaseContext, srv: ServerName): Promise<Map<string, string>> {
  return new Map((await ctx.checker.catalog(srv)).map((e) => [e.id, e.info.status]));
}

/** What a backup under a fault left: the new backup ids and their statuses. */
async function newBackups(ctx: CaseContext, srv: ServerName, before: Map<string, string>): Promise<string> {
  const after = await statuses(ctx, srv);
  const fresh = [...after].filter(([id]) => !before.has(id));
  return fresh.length ? fresh.map(([id, st]) => `${id} ${st}`).join(', ') : 'no backup left';
}

/** A backup that exited non-zero (or died) must not have left a DONE backup behind. */
async function expectNoDoneFromFailure(ctx: CaseContext, srv: ServerName, before: Map<string, string>, r: CmdResult): Promise<void> {
  if (r.code === 0) return;
  const after = await statuses(ctx, srv);
  for (const [id, st] of after) {
    if (before.has(id)) continue;
    // A killed backup is FAILED (or STARTED until cron marks it); WAITING_FOR_WALS only if the copy finished.
    ctx.expect(st !== 'DONE' || !wasKilled(r), `${id} is DONE although its backup process was killed before the end`);
  }
}

function backupCase(srv: BackupSrv, point: string, action: string, opts: { needs?: number; fullRestore?: boolean } = {}): FaultCase {
  return {
    id: `backup-${srv}/${action.replace(/:.*/, '')}@${point}`,
    process: `backup (${srv === 'strm' ? 'postgres' : srv === 'rsy' ? 'rsync' : srv === 'agt' ? 'agent' : 'local-rsync'})`,
    point,
    kind: kindOf(action),
    servers: [srv],
    fullRestore: opts.fullRestore,
    async run(ctx) {
      const before = await statuses(ctx, srv);
      const r = await ctx.world.barman(srv, ['backup', '--wait', '--wait-timeout', '60', srv], { fault: `${point}=${action}`, timeoutMs: 180_000 });
      ctx.requireFired(point);
      await expectNoDoneFromFailure(ctx, srv, before, r);
      if (r.code !== 0 && !wasKilled(r)) ctx.expect(/ERROR/.test(r.stderr), `a clear error line: ${describe(r)}`);
      return `${how(r)}${r.code && firstLine(r) ? `: ${firstLine(r)}` : ''}; left: ${await newBackups(ctx, srv, before)}`;
    },
  };
}

function backupAfter(srv: BackupSrv, ms: number, sig: 'SIGKILL' | 'SIGTERM'): FaultCase {
  return {
    id: `backup-${srv}/${sig}-after-${ms}ms`,
    process: `backup (${srv === 'strm' ? 'postgres' : srv === 'rsy' ? 'rsync' : srv === 'agt' ? 'agent' : 'local-rsync'})`,
    point: `${ms} ms after start`,
    kind: sig,
    servers: [srv],
    async run(ctx) {
      const before = await statuses(ctx, srv);
      const r = await ctx.world.barman(srv, ['backup', '--wait', '--wait-timeout', '60', srv], { killAfter: { ms, signal: sig }, timeoutMs: 180_000 });
      await expectNoDoneFromFailure(ctx, srv, before, r);
      return `${how(r)}; left: ${await newBackups(ctx, srv, before)}`;
    },
  };
}

/**
 * Killed at a point, then the next backup of the server without a fault: it must end DONE and
 * (fullRestore) restore, start and have the data. For the agent, the next backup resumes the
 * killed one: the files it had received and made durable are not sent again.
 */
function killedThenNext(srv: 'agt' | 'enc', point: string): FaultCase {
  return {
    id: `backup-${srv}/kill@${point}+next`,
    process: srv === 'agt' ? 'backup (agent)' : 'backup (postgres, encrypted)',
    point: `${point}, then the next backup`,
    kind: 'SIGKILL',
    servers: [srv],
    fullRestore: true,
    async run(ctx) {
      const before = await statuses(ctx, srv);
      const r = await ctx.world.barman(srv, ['backup', '--wait', '--wait-timeout', '60', srv], { fault: `${point}=kill`, timeoutMs: 180_000 });
      ctx.requireFired(point);
      await expectNoDoneFromFailure(ctx, srv, before, r);
      const killed = await newBackups(ctx, srv, before);
      const mid = await statuses(ctx, srv);
      const log = ctx.world.logOf(srv);
      const logBefore = (await fs.stat(log).catch(() => null))?.size ?? 0;
      const next = await ctx.world.barman(srv, ['backup', '--wait', '--wait-timeout', '60', srv], { timeoutMs: 180_000 });
      ctx.expect(next.code === 0, `the next backup succeeds: ${describe(next)}`);
      const fresh = [...(await statuses(ctx, srv))].filter(([id]) => !mid.has(id));
      ctx.expect(fresh.length === 1 && fresh[0]?.[1] === 'DONE', `the next backup is DONE: ${fresh.map(([id, st]) => `${id} ${st}`).join(', ') || 'none'}`);
      let resumed = '';
      if (srv === 'agt') {
        const fh = await fs.open(log, 'r');
        const added = await fh.readFile().finally(() => fh.close());
        const line = added.subarray(logBefore).toString('utf8').split('\n').find((l) => l.includes('agent copy:'));
        ctx.expect(line !== undefined && /resumed from/.test(line), `the next agent backup resumes the killed one: ${line ?? 'no agent copy line in the log'}`);
        const sent = /(\d+) of (\d+) pages read were sent/.exec(line ?? '');
        resumed = sent ? `; resumed, ${sent[1]} of ${sent[2]} pages sent` : '';
      }
      return `killed: ${how(r)}, left ${killed}; next backup ${how(next)}${resumed}`;
    },
  };
}

/** Kill every `comm` process below the running command once one appears. */
const commOf = (pid: number | string): string => {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
};
const parentOf = (pid: number): string => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1] ?? '';
  } catch {
    return '';
  }
};

async function killChild(run: Running, comm: string, afterMs = 0, timeoutMs = 60_000, parent?: string): Promise<boolean> {
  const t0 = Date.now();
  let seenAt = 0;
  while (Date.now() - t0 < timeoutMs) {
    const pids = descendants(run.pgid).filter((p) => commOf(p) === comm && (parent === undefined || commOf(parentOf(p)) === parent));
    if (pids.length > 0) {
      if (!seenAt) seenAt = Date.now();
      if (Date.now() - seenAt >= afterMs) {
        for (const p of pids) {
          try {
            process.kill(p, 'SIGKILL');
          } catch {
            // gone
          }
        }
        return true;
      }
    }
    const ended = await Promise.race([run.done.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 20))]);
    if (ended) return false;
  }
  return false;
}

function childKilled(srv: BackupSrv, comm: string, afterMs: number, kind: FaultKind, parent?: string): FaultCase {
  return {
    id: `backup-${srv}/${comm}-killed${parent ? `-under-${parent}` : ''}`,
    process: `backup (${srv === 'strm' ? 'postgres' : srv === 'rsy' ? 'rsync' : srv === 'agt' ? 'agent' : 'local-rsync'})`,
    point: `${comm} SIGKILLed ${afterMs} ms into the copy`,
    kind,
    servers: [srv],
    async run(ctx) {
      const before = await statuses(ctx, srv);
      const run = startBarman(ctx.world, srv, ['backup', '--wait', '--wait-timeout', '60', srv], { timeoutMs: 180_000 });
      const killed = await killChild(run, comm, afterMs, 120_000, parent);
      const r = await run.done;
      run.killGroup();
      await expectNoDoneFromFailure(ctx, srv, before, r);
      if (killed && r.code === 0) ctx.note(`the backup survived the loss of ${comm} (retried)`);
      if (r.code !== 0 && !wasKilled(r)) ctx.expect(/ERROR/.test(r.stderr), `a clear error line: ${describe(r)}`);
      return `${comm} ${killed ? 'killed' : 'never seen'}; ${how(r)}${r.code ? `: ${firstLine(r)}` : ''}; left: ${await newBackups(ctx, srv, before)}`;
    },
  };
}

/** Pause a command at `point`, do `meanwhile`, resume; returns both results. */
async function pausedAt(ctx: CaseContext, srv: ServerName, args: string[], point: string, meanwhile: () => Promise<string>): Promise<{ r: CmdResult; during: string; reached: boolean }> {
  const flag = ctx.flag(point.replace(/[^a-z0-9]/gi, '_'));
  const run = startBarman(ctx.world, srv, args, { fault: `${point}=pause:${flag}`, timeoutMs: 240_000 });
  const reached = await waitForFile(`${flag}.reached`, run, 120_000);
  let during = '';
  try {
    during = reached ? await meanwhile() : 'pause never reached';
  } finally {
    await fs.writeFile(flag, '');
  }
  const r = await run.done;
  run.killGroup();
  return { r, during, reached };
}

async function oldestDone(ctx: CaseContext, srv: ServerName): Promise<string> {
  const done = (await ctx.checker.catalog(srv)).filter((e) => e.info.status === 'DONE');
  if (done.length === 0) throw new Error(`no DONE backup on ${srv}`);
  return done[0]!.id;
}

async function aFailed(ctx: CaseContext, srv: ServerName): Promise<string | null> {
  const f = (await ctx.checker.catalog(srv)).filter((e) => e.info.status === 'FAILED');
  return f.length ? f[f.length - 1]!.id : null;
}

function deleteCase(srv: 'strm' | 'rsy' | 'lr', point: string, action: string, which: 'failed' | 'oldest'): FaultCase {
  return {
    id: `delete-${srv}/${action.replace(/:.*/, '')}@${point}/${which}`,
    process: 'delete',
    point: `${point} (${which === 'oldest' ? 'oldest DONE backup: its WAL go too' : 'a FAILED backup'})`,
    kind: kindOf(action),
    servers: [srv],
    needs: { [srv]: which === 'oldest' ? 3 : 1 },
    async run(ctx) {
      let id = which === 'failed' ? await aFailed(ctx, srv) : await oldestDone(ctx, srv);
      if (!id) {
        // Make a FAILED backup to delete: a backup killed once its copy began.
        await ctx.world.barman(srv, ['backup', srv], { fault: 'backup:started=kill' });
        await ctx.world.barman(srv, ['cron']);
        id = await aFailed(ctx, srv);
      }
      if (!id) throw new Error('no backup to delete');
      const r = await ctx.world.barman(srv, ['delete', srv, id], { fault: `${point}=${action}` });
      ctx.requireFired(point);
      const st = (await statuses(ctx, srv)).get(id);
      ctx.expect(st === undefined || st === 'FAILED', `an interrupted delete leaves the backup FAILED or gone, not ${st}`);
      const again = await ctx.world.barman(srv, ['delete', srv, id]);
      const gone = !(await statuses(ctx, srv)).has(id);
      ctx.expect(gone, `delete run again finishes the job: ${describe(again)}`);
      return `${how(r)}; status then ${st ?? 'gone'}; delete again ${how(again)}`;
    },
  };
}

function recoverCase(srv: 'strm' | 'rsy', point: string, action: string, remote: boolean): FaultCase {
  return {
    id: `recover-${remote ? 'remote' : 'local'}-${srv}/${action.replace(/:.*/, '')}@${point}`,
    process: remote ? 'recover (remote)' : 'recover (local)',
    point,
    kind: kindOf(action),
    servers: [srv],
    needs: { [srv]: 1 },
    async run(ctx) {
      const id = await oldestDone(ctx, srv);
      const owner = remote ? POSTGRES_USER : BARMAN_USER;
      const dest = path.join(await ctx.world.scratch('recover', owner), 'data');
      const extra = remote ? ['--remote-ssh-command', `ssh -F ${ctx.world.sshCfgBarman} postgres@127.0.0.1`] : [];
      const r = await ctx.world.barman(srv, ['recover', ...extra, srv, id, dest], { fault: `${point}=${action}`, timeoutMs: 180_000 });
      ctx.requireFired(point);
      const signal = path.join(dest, 'recovery.signal');
      if (r.code !== 0) ctx.expect(!existsSync(signal) || point === 'recover:finished', `an interrupted recover does not leave a startable-looking destination (recovery.signal) before its end`);
      // An interrupted recover leaves a partial directory: recover refuses a non-empty one unless
      // told to reuse it (--delta-restore), which must then give a complete copy.
      const again = await ctx.world.barman(srv, ['recover', '--delta-restore', ...extra, srv, id, dest], { timeoutMs: 180_000 });
      ctx.expect(again.code === 0, `recover --delta-restore into the same directory: ${describe(again)}`);
      if (again.code === 0 && !remote && point === 'recover:before-finish') {
        // The reused directory must be a whole cluster: start it and read the data.
        try {
          const { cluster } = await startRecoveredCluster(dest, undefined, { extraConf: { archive_mode: 'off' }, timeoutMs: 180_000 });
          try {
            const rows = await cluster.psql('SELECT count(*) FROM pgbench_accounts');
            ctx.expect(rows === '100000', `the cluster recovered over a partial copy has all its rows (${rows})`);
          } finally {
            await cluster.destroy();
          }
        } catch (err) {
          ctx.expect(false, `the cluster recovered over a partial copy starts: ${(err as Error).message.split('\n')[0]}`);
        }
      }
      await fs.rm(path.dirname(dest), { recursive: true, force: true });
      return `${how(r)}; recover --delta-restore again ${how(again)}`;
    },
  };
}

export function backupCases(): FaultCase[] {
  const c: FaultCase[] = [];
  // postgres method (pg_basebackup), WAL streaming, gzip WAL.
  for (const p of ['backup:empty', 'backup:started', 'backup:basebackup-spawned', 'backup:copied', 'backup:waiting', 'backup:purged']) c.push(backupCase('strm', p, 'kill'));
  c.push(backupCase('strm', 'backup:basebackup-spawned', 'term'));
  c.push(backupCase('strm', 'backup:copied', 'term'));
  c.push(backupCase('strm', 'write-atomic:backup.info:tmp-written', 'throw:EIO'));
  c.push(backupAfter('strm', 1500, 'SIGKILL'));
  c.push(childKilled('strm', 'pg_basebackup', 300, 'SIGKILL'));
  // rsync over ssh, reuse_backup = link, manifests.
  for (const p of ['backup:pg-started', 'backup:files-copied', 'backup:pg-stopped', 'backup:manifest-done']) c.push(backupCase('rsy', p, 'kill'));
  c.push(backupCase('rsy', 'backup:files-copied', 'term'));
  c.push(backupCase('rsy', 'write-atomic:backup.info:renamed', 'throw:ENOSPC'));
  c.push(childKilled('rsy', 'ssh', 300, 'ssh killed'));
  c.push(childKilled('rsy', 'ssh', 200, 'ssh killed', 'rsync'));
  c.push(childKilled('rsy', 'rsync', 500, 'SIGKILL'));
  // agent
  c.push(backupCase('agt', 'backup:pg-started', 'kill'));
  c.push(backupCase('agt', 'backup:files-copied', 'kill'));
  c.push(childKilled('agt', 'ssh', 300, 'ssh killed'));
  c.push(killedThenNext('agt', 'backup:files-copied'));
  // encrypted catalog (postgres method, gpg): only a full restore proves a DONE backup.
  c.push(killedThenNext('enc', 'backup:copied'));
  // local-rsync (barman as postgres on the database host)
  c.push(backupCase('lr', 'backup:pg-started', 'kill'));
  c.push(backupCase('lr', 'backup:files-copied', 'term'));

  // PostgreSQL restarted while a backup holds its session.
  for (const srv of ['rsy', 'strm'] as const) {
    const point = srv === 'rsy' ? 'backup:pg-started' : 'backup:basebackup-spawned';
    c.push({
      id: `backup-${srv}/postgres-restart@${point}`,
      process: `backup (${srv === 'rsy' ? 'rsync' : 'postgres'})`,
      point: `PostgreSQL restarted (fast) at ${point}`,
      kind: 'PostgreSQL crash',
      servers: [srv],
      restartsPostgres: true,
      async run(ctx) {
        const before = await statuses(ctx, srv);
        const { r, during } = await pausedAt(ctx, srv, ['backup', '--wait', '--wait-timeout', '60', srv], point, async () => {
          await ctx.world.pg.stop('immediate');
          await ctx.world.pg.start();
          return 'restarted (immediate stop: a crash)';
        });
        await expectNoDoneFromFailure(ctx, srv, before, r);
        await ctx.world.waitAllStreaming();
        return `${during}; backup ${how(r)}${r.code ? `: ${firstLine(r)}` : ''}; left: ${await newBackups(ctx, srv, before)}`;
      },
    });
  }

  // ENOSPC: the `full` server (backup_directory on a 48 MiB tmpfs) with 8 MiB left.
  c.push({
    id: 'backup-full/tmpfs-enospc',
    process: 'backup (postgres)',
    point: 'backup_directory on a tmpfs with 8 MiB free',
    kind: 'ENOSPC',
    servers: ['full'],
    async run(ctx) {
      const w = ctx.world;
      // `full` gets no WAL from PostgreSQL: one put-wal segment makes its WAL archive check pass,
      // so that the backup really starts and meets the full disk.
      const [n, d] = synthSegment();
      const pw = await putWal(w, 'full', walTar([[n, d]]));
      if (pw.code === 0) w.ack('full', n, d);
      await w.barman('full', ['archive-wal', 'full']);
      const filler = await fillTmpfs(w, 'filler-backup', 8 << 20);
      const before = await statuses(ctx, 'full');
      let r: CmdResult;
      try {
        r = await w.barman('full', ['backup', 'full'], { timeoutMs: 180_000 });
      } finally {
        await fs.rm(filler, { force: true });
      }
      ctx.expect(r.code !== 0, `a backup onto a full disk fails: ${describe(r)}`);
      ctx.expect(/ERROR/.test(r.stderr) && !/EXCEPTION/.test(r.stderr), `a clear error: ${describe(r)}`);
      await expectNoDoneFromFailure(ctx, 'full', before, r);
      const left = await newBackups(ctx, 'full', before);
      // Free the space the failed backup holds: later cases need the tmpfs.
      for (const [id, st] of await statuses(ctx, 'full')) if (!before.has(id) && st === 'FAILED') await w.barman('full', ['delete', 'full', id]);
      return `${how(r)}: ${firstLine(r)}; left: ${left} (deleted afterwards)`;
    },
  });

  // Races.
  c.push({
    id: 'backup-strm/race-two-backups',
    process: 'backup (postgres)',
    point: 'a second backup while the first is paused at backup:started',
    kind: 'race',
    servers: ['strm'],
    async run(ctx) {
      const before = await statuses(ctx, 'strm');
      let second: CmdResult | null = null;
      const { r } = await pausedAt(ctx, 'strm', ['backup', '--wait', '--wait-timeout', '60', 'strm'], 'backup:started', async () => {
        second = await ctx.world.barman('strm', ['backup', 'strm'], { timeoutMs: 60_000 });
        return 'second ran';
      });
      const s = second as CmdResult | null;
      ctx.expect(r.code === 0, `the first backup completes: ${describe(r)}`);
      ctx.expect(s !== null && s.code !== 0, `the second is refused while one runs: ${s ? describe(s) : 'not run'}`);
      return `first ${how(r)}; second ${s ? `${how(s)}: ${firstLine(s)}` : 'not run'}; left: ${await newBackups(ctx, 'strm', before)}`;
    },
  });
  c.push({
    id: 'backup-strm/race-delete-oldest',
    process: 'delete',
    point: 'delete of the oldest backup while a backup is paused at backup:copied',
    kind: 'race',
    servers: ['strm'],
    needs: { strm: 3 },
    async run(ctx) {
      const victim = await oldestDone(ctx, 'strm');
      let del: CmdResult | null = null;
      const { r } = await pausedAt(ctx, 'strm', ['backup', '--wait', '--wait-timeout', '60', 'strm'], 'backup:copied', async () => {
        del = await ctx.world.barman('strm', ['delete', 'strm', victim]);
        return 'delete ran';
      });
      const d = del as CmdResult | null;
      ctx.expect(r.code === 0, `the backup completes: ${describe(r)}`);
      return `backup ${how(r)}; delete ${d ? `${how(d)}${d.code ? `: ${firstLine(d)}` : ''}` : 'not run'}`;
    },
  });
  c.push({
    id: 'recover-local-strm/race-delete',
    process: 'recover (local)',
    point: 'delete of the backup being recovered (recover paused at recover:base-copied)',
    kind: 'race',
    servers: ['strm'],
    needs: { strm: 3 },
    async run(ctx) {
      const id = await oldestDone(ctx, 'strm');
      const dest = path.join(await ctx.world.scratch('recover-race'), 'data');
      let del: CmdResult | null = null;
      const { r } = await pausedAt(ctx, 'strm', ['recover', 'strm', id, dest], 'recover:base-copied', async () => {
        del = await ctx.world.barman('strm', ['delete', 'strm', id]);
        return 'delete ran';
      });
      const d = del as CmdResult | null;
      ctx.expect(d !== null && d.code !== 0, `a backup being recovered is not deleted under the recovery: ${d ? describe(d) : 'not run'}`);
      ctx.expect(r.code === 0, `the recovery completes: ${describe(r)}`);
      await fs.rm(path.dirname(dest), { recursive: true, force: true });
      return `recover ${how(r)}; delete ${d ? `${how(d)}: ${firstLine(d)}` : 'not run'}`;
    },
  });
  c.push({
    id: 'cron/race-cron-cron',
    process: 'cron',
    point: 'two cron at once, the first paused at cron:stale-checked',
    kind: 'race',
    // The server of the main installation, which this cron manages (the others have a
    // configuration and a cron of their own: cron-retention-rsy attacks that one).
    servers: ['strm'],
    async run(ctx) {
      let second: CmdResult | null = null;
      const { r } = await pausedAt(ctx, null as unknown as ServerName, ['cron'], 'cron:stale-checked', async () => {
        second = await ctx.world.barman(null, ['cron']);
        return 'second ran';
      });
      const s = second as CmdResult | null;
      ctx.expect(r.code === 0, `the first cron: ${describe(r)}`);
      ctx.expect(s !== null && s.code === 0, `the second cron: ${s ? describe(s) : 'not run'}`);
      return `first ${how(r)}; second ${s ? how(s) : 'not run'}`;
    },
  });

  // cron killed at its stages; retention (rsy: REDUNDANCY 3) killed while it deletes.
  for (const p of ['cron:stale-checked', 'cron:backups-checked']) {
    c.push({
      id: `cron/kill@${p}`,
      process: 'cron',
      point: p,
      kind: 'SIGKILL',
      servers: ['strm'],
      async run(ctx) {
        const r = await ctx.world.barman(null, ['cron'], { fault: `${p}=kill` });
        ctx.requireFired(p);
        return how(r);
      },
    });
  }
  for (const p of ['retention:deleted', 'delete:marked', 'delete:xlogdb-rewritten']) {
    c.push({
      id: `cron-retention-rsy/kill@${p}`,
      process: 'cron retention',
      point: `${p} (retention_policy REDUNDANCY 3 on rsy)`,
      kind: 'SIGKILL',
      servers: ['rsy'],
      needs: { rsy: 4 },
      async run(ctx) {
        const before = await statuses(ctx, 'rsy');
        const r = await ctx.world.barman('rsy', ['cron'], { fault: `${p}=kill` });
        ctx.requireFired(p);
        const again = await ctx.world.barman('rsy', ['cron']);
        ctx.expect(again.code === 0, `the next cron: ${describe(again)}`);
        const after = await statuses(ctx, 'rsy');
        const done = [...after.values()].filter((s) => s === 'DONE').length;
        ctx.expect(done >= 3, `REDUNDANCY 3 keeps 3 DONE backups (has ${done})`);
        return `${how(r)}; next cron ${how(again)}; backups ${before.size} -> ${after.size}`;
      },
    });
  }

  // delete killed at each stage (FAILED backups left by the cases above, then the oldest DONE).
  for (const p of ['delete:locked', 'delete:marked', 'delete:data-item-removed', 'delete:data-removed', 'delete:base-removed']) c.push(deleteCase('strm', p, 'kill', 'failed'));
  c.push(deleteCase('strm', 'delete:marked', 'term', 'failed'));
  c.push(deleteCase('strm', 'delete:data-item-removed', 'throw:EIO', 'failed'));
  c.push(deleteCase('strm', 'delete:xlogdb-rewritten', 'kill', 'oldest'));
  c.push(deleteCase('strm', 'delete:wal-unlinked', 'kill', 'oldest'));
  c.push(deleteCase('rsy', 'delete:data-item-removed', 'kill', 'failed'));

  // keep: killed while writing its annotation; release killed.
  c.push({
    id: 'keep-strm/kill@write-atomic',
    process: 'keep',
    point: 'write-atomic:*:tmp-written (keep annotation)',
    kind: 'SIGKILL',
    servers: ['strm'],
    needs: { strm: 1 },
    async run(ctx) {
      const id = await oldestDone(ctx, 'strm');
      const r = await ctx.world.barman('strm', ['keep', 'strm', id, '--target', 'standalone'], { fault: 'write-atomic:*:tmp-written=kill' });
      const show = await ctx.world.barman('strm', ['keep', 'strm', id, '--status']);
      ctx.expect(show.code === 0, `keep --status after the kill: ${describe(show)}`);
      const again = await ctx.world.barman('strm', ['keep', 'strm', id, '--target', 'standalone']);
      ctx.expect(again.code === 0, `keep again: ${describe(again)}`);
      const rel = await ctx.world.barman('strm', ['keep', 'strm', id, '--release']);
      ctx.expect(rel.code === 0, `keep --release: ${describe(rel)}`);
      return `${how(r)}; status: ${show.stdout.trim().split('\n')[0] ?? ''}; keep again ${how(again)}; release ${how(rel)}`;
    },
  });

  // check-backup killed after deciding a WAITING_FOR_WALS backup's fate.
  c.push({
    id: 'check-backup-strm/kill@check-backup:decided',
    process: 'check-backup',
    point: 'check-backup:decided (a backup WAITING_FOR_WALS becomes DONE)',
    kind: 'SIGKILL',
    servers: ['strm'],
    async run(ctx) {
      const before = await statuses(ctx, 'strm');
      // A backup that ends WAITING_FOR_WALS: killed right after saving that status.
      const b = await ctx.world.barman('strm', ['backup', 'strm'], { fault: 'backup:purged=kill' });
      const st = [...(await statuses(ctx, 'strm'))].filter(([id]) => !before.has(id));
      const id = st[0]?.[0];
      if (!id) return `backup ${how(b)} left nothing`;
      await ctx.world.churn(10);
      const r = await ctx.world.barman('strm', ['check-backup', 'strm', id], { fault: 'check-backup:decided=kill' });
      const after = (await statuses(ctx, 'strm')).get(id);
      return `backup ${how(b)} left ${id} ${st[0]?.[1]}; check-backup ${how(r)}${ctx.fired().length > 1 ? ' at the point' : ' (nothing to decide)'}; now ${after}`;
    },
  });

  // recover: local and remote, killed at each stage, then run again into the same directory.
  for (const p of ['recover:base-copied', 'recover:wals-copied', 'recover:before-finish', 'recover:finished']) c.push(recoverCase('strm', p, 'kill', false));
  c.push(recoverCase('strm', 'recover:base-copied', 'term', false));
  c.push(recoverCase('rsy', 'recover:base-copied', 'kill', true));
  c.push(recoverCase('rsy', 'recover:before-finish', 'kill', true));
  c.push({
    id: 'recover-remote-rsy/ssh-killed',
    process: 'recover (remote)',
    point: 'ssh SIGKILLed 300 ms into the copy',
    kind: 'ssh killed',
    servers: ['rsy'],
    needs: { rsy: 1 },
    async run(ctx) {
      const id = await oldestDone(ctx, 'rsy');
      const dest = path.join(await ctx.world.scratch('recover-ssh', POSTGRES_USER), 'data');
      const extra = ['--remote-ssh-command', `ssh -F ${ctx.world.sshCfgBarman} postgres@127.0.0.1`];
      const run = startBarman(ctx.world, 'rsy', ['recover', ...extra, 'rsy', id, dest], { timeoutMs: 180_000 });
      const killed = await killChild(run, 'ssh', 300);
      const r = await run.done;
      run.killGroup();
      if (r.code !== 0) ctx.expect(/ERROR/.test(r.stderr), `a clear error: ${describe(r)}`);
      const again = await ctx.world.barman('rsy', ['recover', '--delta-restore', ...extra, 'rsy', id, dest], { timeoutMs: 180_000 });
      ctx.expect(again.code === 0, `recover --delta-restore again: ${describe(again)}`);
      await fs.rm(path.dirname(dest), { recursive: true, force: true });
      return `ssh ${killed ? 'killed' : 'never seen'}; ${how(r)}${r.code ? `: ${firstLine(r)}` : ''}; again ${how(again)}`;
    },
  });
  // recover into a destination that is not writable, and onto a full disk.
  c.push({
    id: 'recover-local-strm/dest-eacces',
    process: 'recover (local)',
    point: 'destination directory owned by root, mode 0700',
    kind: 'EACCES',
    servers: ['strm'],
    needs: { strm: 1 },
    async run(ctx) {
      const id = await oldestDone(ctx, 'strm');
      const dir = await ctx.world.scratch('recover-eacces', 'root');
      await fs.chmod(dir, 0o700);
      const r = await ctx.world.barman('strm', ['recover', 'strm', id, path.join(dir, 'data')]);
      ctx.expect(r.code !== 0 && /ERROR/.test(r.stderr) && !/EXCEPTION/.test(r.stderr), `refused with a clear error: ${describe(r)}`);
      await fs.rm(dir, { recursive: true, force: true });
      return `${how(r)}: ${firstLine(r)}`;
    },
  });
  c.push({
    id: 'recover-local-strm/dest-enospc',
    process: 'recover (local)',
    point: 'destination on a tmpfs with 4 MiB free',
    kind: 'ENOSPC',
    servers: ['strm'],
    needs: { strm: 1 },
    async run(ctx) {
      const id = await oldestDone(ctx, 'strm');
      const w = ctx.world;
      const filler = await fillTmpfs(w, 'filler-recover', 4 << 20);
      const dest = path.join(w.tmpfs, 'recover-dest');
      let r: CmdResult;
      try {
        r = await w.barman('strm', ['recover', 'strm', id, dest], { timeoutMs: 120_000 });
      } finally {
        await fs.rm(filler, { force: true });
        await fs.rm(dest, { recursive: true, force: true });
      }
      ctx.expect(r.code !== 0 && /ERROR/.test(r.stderr) && !/EXCEPTION/.test(r.stderr), `fails with a clear error: ${describe(r)}`);
      return `${how(r)}: ${firstLine(r)}`;
    },
  });

  // drill: killed while its sandbox runs; the next drill and cron clean up.
  c.push({
    id: 'drill-strm/SIGKILL-after-3s',
    process: 'drill',
    point: '3 s after start (sandbox restoring or replaying)',
    kind: 'SIGKILL',
    servers: ['strm'],
    needs: { strm: 1 },
    async run(ctx) {
      const r = await ctx.world.barman('strm', ['drill', 'strm'], { killAfter: { ms: 3000, signal: 'SIGKILL' }, timeoutMs: 180_000 });
      const next = await ctx.world.barman('strm', ['drill', 'strm'], { timeoutMs: 240_000 });
      ctx.expect(next.code === 0, `the next drill: ${describe(next)}`);
      const list = await ctx.world.barman('strm', ['list-drills', 'strm']);
      return `${how(r)}; next drill ${how(next)}; list-drills ${how(list)}`;
    },
  });

  return c;
}

export { killChild, start };
