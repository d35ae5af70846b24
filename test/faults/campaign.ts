/**
 * The fault campaign (`npm run test:faults`, run by .ci/run after `npm test`): one driver runs
 * the table of (process × fault point × fault kind) cases against one shared world (world.ts),
 * and after each case the next ordinary commands and the invariants (invariants.ts) on the
 * servers the case may have touched. It writes reports/fault-report.md and .json and exits 1
 * when any invariant or case expectation was violated.
 *
 *   npm run test:faults                     every case
 *   npm run test:faults -- put-wal backup   cases whose id contains one of the words
 *   npm run test:faults -- --list           the table, without running anything
 *
 * Needs root (PostgreSQL as postgres, barman as barman, sshd, tmpfs, strace), like the
 * integration tests. BTS_KEEP_TMP=1 keeps the world's directories for a post-mortem.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { cleanupAll } from '../helpers/pg-cluster.js';
import { BARMAN_USER, isRoot, makeTempDir, sleep } from '../helpers/system.js';
import { caseTrace, REPO, type CaseTrace } from './exec.js';
import { Checker, logSince, outputViolations, type Violation } from './invariants.js';
import { reportBase, writeReports } from './report.js';
import type { CaseContext, CaseResult, FaultCase } from './types.js';
import { SIDE_LANE, WAL_LANE, World, type ServerName } from './world.js';
import { allCases } from './table.js';
import { stopCloud } from './cases-cloud.js';
import { stopCloudBackupStores } from './cases-cloud-backup.js';

function cpuNowMs(): number {
  // Our own CPU and that of every child we waited for (barman, runuser, strace, ssh...).
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  return (ticks * 1000) / 100;
}

/** CPU of a daemon (the postmaster and its children, which are not ours). */
function cpuOfPidMs(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * 1000) / 100;
  } catch {
    return 0;
  }
}

async function ensureBackups(world: World, checker: Checker, needs: Partial<Record<ServerName, number>>): Promise<void> {
  for (const [name, n] of Object.entries(needs) as Array<[ServerName, number]>) {
    for (let i = 0; i < 5; i++) {
      const done = (await checker.catalog(name)).filter((e) => e.info.status === 'DONE').length;
      if (done >= (n ?? 0)) break;
      await world.barmanOk(name, ['backup', '--wait', '--wait-timeout', '120', name]);
    }
  }
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const list = args.includes('--list');
  const filters = args.filter((a) => !a.startsWith('--'));
  const cases = allCases().filter((c) => filters.length === 0 || filters.some((f) => c.id.includes(f)));
  if (list) {
    for (const c of cases) process.stdout.write(`${c.id.padEnd(60)} ${c.kind.padEnd(16)} ${c.point}\n`);
    process.stdout.write(`${cases.length} cases\n`);
    return 0;
  }
  if (!isRoot()) {
    process.stderr.write('the fault campaign needs root (PostgreSQL as postgres, barman as barman, sshd, a tmpfs, strace): run it as root\n');
    return 1;
  }
  const t0 = Date.now();
  const cpu0 = cpuNowMs();
  const world = new World();
  const checker = new Checker(world);
  const results: CaseResult[] = [];
  let setupMs = 0;
  /** stateKey of a server set after its last full round of next commands and checks. */
  const lastKeys = new Map<string, string>();
  let pgCpuMs = 0;
  try {
    process.stdout.write(`fault campaign: ${cases.length} cases; setting up the world...\n`);
    await world.setup();
    const flagsRoot = await makeTempDir('faults-flags-', { owner: BARMAN_USER, mode: 0o1777 });
    // Baseline: every server checked once before any fault (and Barman 3.4's known differences).
    const baseServers = [...world.servers.keys()];
    const logOffsets = new Map<string, number>();
    for (const f of world.logFiles()) logOffsets.set(f, 0);
    // The world's first WAL archived everywhere, then every server checked once.
    for (const v of await checker.next(baseServers)) process.stdout.write(`  baseline next: ${v.invariant}: ${v.detail}\n`);
    // (Servers apart share no catalog: checked at once.)
    const baseResults = await Promise.all(baseServers.map((s) => checker.check(s)));
    baseServers.forEach((s, i) => {
      for (const v of baseResults[i]?.violations ?? []) process.stdout.write(`  baseline ${s}: ${v.invariant}: ${v.detail}\n`);
    });
    setupMs = Date.now() - t0;
    process.stdout.write(`world ready in ${(setupMs / 1000).toFixed(1)} s\n`);

    type Lane = 'wal' | 'main' | 'side' | 'cloud';
    // The log files of each lane's installations (the barman-cloud tools write no barman log).
    const laneLogs = (lane: Lane): string[] =>
      lane === 'wal' ? [world.logOf('wal')] : lane === 'side' ? [world.logOf('rsy'), world.logOf('lr')] : lane === 'main' ? world.logFiles().filter((f) => f === world.logOf('strm') || f === world.passiveLog) : [];
    const runCase = async (c: FaultCase, i: number, lane: Lane): Promise<void> => {
      const trace = caseTrace.getStore() as CaseTrace;
      const caseDir = path.join(flagsRoot, c.id.replace(/[^A-Za-z0-9_.-]/g, '_'));
      mkdirSync(caseDir, { recursive: true, mode: 0o1777 });
      await fs.chmod(caseDir, 0o1777);
      const faultLog = trace.faultLog;
      faultLog.file = path.join(caseDir, 'fired.log');
      appendFileSync(faultLog.file, '');
      await fs.chmod(faultLog.file, 0o666);
      const firedFile = faultLog.file;
      const notes: string[] = [];
      const violations: Violation[] = [];
      const ctx: CaseContext = {
        world,
        checker,
        dir: caseDir,
        flag: (name) => path.join(caseDir, name),
        fired: () => (existsSync(firedFile) ? readFileSync(firedFile, 'utf8').split('\n').filter(Boolean).map((l) => l.split(' ').slice(1).join(' ')) : []),
        expect: (ok, what) => {
          if (!ok) violations.push({ invariant: 'case expectation', detail: what });
        },
        requireFired: (point) => {
          if (!ctx.fired().some((l) => l.startsWith(`${point} `))) violations.push({ invariant: 'fault reached', detail: `fault point ${point} never fired: the case tested nothing` });
        },
        note: (t) => notes.push(t),
      };
      const tc = Date.now();
      const cc = cpuNowMs();
      const transcript = trace.transcript;
      transcript.length = 0;
      let outcome = '';
      let result: CaseResult;
      let phases: CaseResult['phases'];
      try {
        if (c.needs) await ensureBackups(world, checker, c.needs);
        const before = new Set<string>();
        for (const s of c.servers) for (const e of await checker.catalog(s).catch(() => [])) before.add(`${s}/${e.id}`);
        transcript.length = 0;
        try {
          outcome = await c.run(ctx);
        } catch (err) {
          outcome = `case error: ${(err as Error).message.split('\n')[0]}`;
          violations.push({ invariant: 'case expectation', detail: `the case threw: ${(err as Error).stack ?? String(err)}` });
        }
        faultLog.file = '';
        const checked: string[] = [];
        const key = await checker.stateKey(c.servers);
        phases = { caseMs: Date.now() - tc, nextMs: 0, checksMs: 0, checkParts: {}, nextParts: {} };
        if (key === lastKeys.get(c.servers.join(',')) && !c.fullRestore && !c.always34 && c.kind !== 'corruption') {
          // Nothing the invariants depend on changed since they were last checked on these servers.
          notes.push('catalogs and locks unchanged: the next commands and checks would repeat the last ones');
        } else {
          const tn = Date.now();
          const nextParts: Record<string, number> = {};
          violations.push(...(await checker.next(c.servers, nextParts)));
          const tk = Date.now();
          const parts: Record<string, number> = {};
          for (const s of c.servers) {
            const r = await checker.check(s, { fullRestore: c.fullRestore, before, always34: c.always34 || c.kind === 'corruption' });
            violations.push(...r.violations);
            if (!r.skipped) checked.push(s);
            for (const [k, v] of Object.entries(r.ms)) parts[k] = (parts[k] ?? 0) + v;
          }
          lastKeys.set(c.servers.join(','), await checker.stateKey(c.servers));
          phases = { caseMs: tn - tc, nextMs: tk - tn, checksMs: Date.now() - tk, checkParts: parts, nextParts };
          const sec = (ms: number) => (ms / 1000).toFixed(1);
          const partText = (p: Record<string, number>) => (Object.keys(p).length ? ` (${Object.entries(p).map(([k, v]) => `${k} ${sec(v)}`).join(', ')})` : '');
          notes.push(`times: case ${sec(phases.caseMs)} s, next commands ${sec(phases.nextMs)} s${partText(nextParts)}, checks ${sec(phases.checksMs)} s${partText(parts)}`);
        }
        // Each lane reads the log of its own installations: the other lanes' lines are their own.
        const logs: Array<[string, string]> = [];
        for (const f of laneLogs(lane)) {
          const { text, size } = await logSince(f, logOffsets.get(f) ?? 0);
          logOffsets.set(f, size);
          logs.push([f, text]);
        }
        violations.push(...outputViolations(transcript, logs));
        result = { id: c.id, process: c.process, point: c.point, kind: c.kind, outcome, violations, notes, ms: Date.now() - tc, cpuMs: cpuNowMs() - cc, checkedServers: checked, knownFailure: c.knownFailure, lane, phases };
      } catch (err) {
        violations.push({ invariant: 'campaign', detail: `the checks themselves failed: ${(err as Error).stack ?? String(err)}` });
        result = { id: c.id, process: c.process, point: c.point, kind: c.kind, outcome, violations, notes, ms: Date.now() - tc, cpuMs: cpuNowMs() - cc, checkedServers: [], lane, phases };
      }
      byIndex.set(i, result);
      const mark = result.violations.length === 0 ? 'ok  ' : 'FAIL';
      const lines = [`${mark} [${i + 1}/${cases.length}] ${c.id} (${(result.ms / 1000).toFixed(1)} s): ${result.outcome}\n`];
      for (const v of result.violations) lines.push(`       ${v.invariant}${v.server ? ` [${v.server}]` : ''}: ${v.detail.split('\n').join('\n         ')}\n`);
      process.stdout.write(lines.join(''));
    };

    // Four lanes at once, each in table order: the WAL-only cases (servers of their own
    // configuration, no PostgreSQL behind them, no cron of the main installation), the side
    // servers (SIDE_LANE: a configuration and a cron of their own) with the local-rsync
    // installation, the
    // barman-cloud cases (object stores of their own, no barman catalog), and all the others.
    // Most of a case's time is spent waiting (processes starting, PostgreSQL, ssh): the lanes
    // overlap those waits. A case that restarts cluster A waits until the running cases of the
    // other lanes that use it (main, rsync, cloud: barman-cloud-backup reads cluster A too) end,
    // and none of theirs starts meanwhile. BTS_FAULT_LANES=1 runs everything in one lane.
    const byIndex = new Map<number, CaseResult>();
    const isWal = (c: FaultCase) => c.servers.length > 0 && c.servers.every((s) => WAL_LANE.has(s));
    const isSide = (c: FaultCase) => c.servers.length > 0 && c.servers.every((s) => SIDE_LANE.has(s) || s === 'lr');
    const isCloud = (c: FaultCase) => c.servers.length === 0 && c.process.startsWith('barman-cloud');
    const laneOf = (c: FaultCase): Lane => (isWal(c) ? 'wal' : isSide(c) ? 'side' : isCloud(c) ? 'cloud' : 'main');
    const oneLane = process.env.BTS_FAULT_LANES === '1';
    const indexed = cases.map((c, i): [FaultCase, number] => [c, i]);
    const lanes: Array<[Lane, Array<[FaultCase, number]>]> = oneLane
      ? [['main', indexed]]
      : (['wal', 'side', 'cloud', 'main'] as const).map((l): [Lane, Array<[FaultCase, number]>] => [l, indexed.filter(([c]) => laneOf(c) === l)]);
    // Cluster A as a read/write lock: cases of the lanes that use it share it, a restart is alone.
    let usingPg = 0;
    let restarting = false;
    let restartWaiting = 0;
    const gated = async (c: FaultCase, i: number, lane: Lane): Promise<void> => {
      const usesPg = lane !== 'wal';
      if (c.restartsPostgres) {
        restartWaiting++;
        while (restarting || usingPg > 0) await sleep(50);
        restartWaiting--;
        restarting = true;
      } else if (usesPg) {
        while (restarting || restartWaiting > 0) await sleep(50);
        usingPg++;
      }
      try {
        await runCase(c, i, lane);
      } finally {
        if (c.restartsPostgres) restarting = false;
        else if (usesPg) usingPg--;
      }
    };
    await Promise.all(
      lanes.map(([lane, list]) =>
        caseTrace.run({ transcript: [], faultLog: { file: '' } }, async () => {
          for (const [c, i] of list) await gated(c, i, oneLane ? laneOf(c) : lane);
        }),
      ),
    );
    results.push(...[...byIndex.entries()].sort((x, y) => x[0] - y[0]).map(([, r]) => r));
    pgCpuMs = cpuOfPidMs(world.pg?.postmasterPid());
  } finally {
    await stopCloud().catch(() => undefined);
    await stopCloudBackupStores().catch(() => undefined);
    await world.teardown().catch(() => undefined);
    await cleanupAll();
  }
  const totalMs = Date.now() - t0;
  const cpuMs = cpuNowMs() - cpu0 + pgCpuMs;
  const reportDir = path.join(REPO, 'reports');
  await writeReports(reportDir, { results, totalMs, cpuMs, setupMs, restores: checker.restores, verifies: checker.verifies, baseline34: checker.baselineOf34(), filters });
  const bad = results.filter((r) => r.violations.length > 0);
  process.stdout.write(
    `\n${results.length} cases, ${bad.length} with violations (${bad.reduce((n, r) => n + r.violations.length, 0)} violations); ` +
      `wall ${(totalMs / 1000).toFixed(0)} s, CPU ${(cpuMs / 1000).toFixed(0)} s; report: ${path.relative(REPO, path.join(reportDir, `${reportBase(filters)}.md`))}\n`,
  );
  return bad.length === 0 && results.length === cases.length ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`fault campaign failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
