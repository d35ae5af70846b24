/**
 * Where the time of an agent backup goes (`node dist/bench/agent-profile.js [--scale N]`):
 * one full agent backup, then an incremental after 1% of pgbench_accounts updated in one
 * contiguous range, then one after 1% updated at random, page cache dropped before each, with
 * the DEBUG log lines of each backup printed with their time offsets. Not a comparison (that is
 * agent-bench.ts): a profile. Must run as root.
 *
 * --alt DIR: another build of barman-ts (a checkout with dist/ and node_modules) takes each
 * incremental too, on the same change and basis (its backup is deleted afterwards): an A/B of
 * two versions in one run, the order alternating. --repeat N: each build takes each incremental
 * N times (the same change and basis: all but the last backup are deleted again).
 * --per-process: the CPU seconds of each kind of process (barman, agent, ssh, sshd, postgres...)
 * during each backup. --xfs: the backups on an XFS file system with reflink (a loop device, as in
 * agent-bench.ts), where changed files start as clones of their basis copies.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { BARMAN_USER, isRoot, must, type LocalCluster } from '../src/sandbox/local.js';
import { BARMAN_SCRIPT } from '../src/util/self.js';
import { run } from '../src/util/proc.js';
import { cronUntilStreaming, makeBenchRoot, mountXfs } from './bench-root.js';
import { argNum, buildBenchCluster, cipherSshConfig, dropCaches, timed } from './rsync-bench.js';
import { PG_USER } from '../src/sandbox/local.js';

/** CPU seconds spent by the whole machine so far, not idle nor waiting for I/O (/proc/stat). */
async function busyCpuSeconds(): Promise<number> {
  const f = (await fs.readFile('/proc/stat', 'utf8')).split('\n')[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
  return (user + nice + system + irq + softirq + steal) / 100;
}

/**
 * CPU seconds per kind of process while `fn` runs (--per-process): /proc/PID/stat sampled every
 * 200 ms, each process counted from its first sample to its last (a process that lives less
 * than a sample is missed, one's last 200 ms may be; the sampling itself shows as `node`).
 */
async function perProcessCpu<X>(fn: () => Promise<X>): Promise<{ result: X; table: [string, number][] }> {
  // USER_HZ: 100 on Linux.
  const tck = 100;
  const seen = new Map<number, { kind: string; first: number; last: number }>();
  const kindOf = async (pid: number, comm: string): Promise<string> => {
    const cmd = (await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0').slice(0, 3).join(' ');
    if (comm === 'node' && cmd.includes('barman-agent')) return 'agent (node)';
    if (comm === 'node' && cmd.includes('barman.js')) return 'barman (node)';
    if (comm === 'ssh') return 'ssh client';
    if (comm.startsWith('postgres') || comm.startsWith('postmaster')) return 'postgres';
    return comm;
  };
  let stop = false;
  const sampler = (async () => {
    while (!stop) {
      for (const d of await fs.readdir('/proc')) {
        if (!/^\d+$/.test(d)) continue;
        const st = await fs.readFile(`/proc/${d}/stat`, 'utf8').catch(() => null);
        if (!st) continue;
        const r = st.lastIndexOf(')');
        const f = st.slice(r + 2).split(' ');
        const ticks = Number(f[11]) + Number(f[12]);
        const pid = Number(d);
        const e = seen.get(pid);
        if (e) e.last = ticks;
        else seen.set(pid, { kind: await kindOf(pid, st.slice(st.indexOf('(') + 1, r)), first: ticks, last: ticks });
      }
      await new Promise((res) => setTimeout(res, 200));
    }
  })();
  let result: X;
  try {
    result = await fn();
  } finally {
    stop = true;
    await sampler;
  }
  const sums = new Map<string, number>();
  for (const e of seen.values()) sums.set(e.kind, (sums.get(e.kind) ?? 0) + (e.last - e.first) / tck);
  return { result, table: [...sums].filter(([, v]) => v > 0).sort((x, y) => y[1] - x[1]) };
}

async function main(): Promise<void> {
  if (!isRoot) throw new Error('needs root');
  const SCALE = argNum('scale', 20);
  /** Backups taken of each incremental change by each build (all but the last deleted again). */
  const REPEAT = argNum('repeat', 1);
  /** --per-process: the CPU of each kind of process during each backup (perProcessCpu). */
  const PER_PROCESS = process.argv.includes('--per-process');
  const XFS = process.argv.includes('--xfs');
  const { startSshd } = await import('../test/helpers/sshd.js');
  const sys = await import('../test/helpers/system.js');
  await sys.ensureBarmanUser();
  const { root, mkdirFor } = await makeBenchRoot('barman-agent-profile-');
  const pgDir = await mkdirFor('pg', PG_USER);
  const home = await mkdirFor('barman', BARMAN_USER, 0o700);
  const conf = path.join(root, 'barman.conf');
  const altIdx = process.argv.indexOf('--alt');
  const alt = altIdx >= 0 ? path.resolve(process.argv[altIdx + 1] ?? '') : null;
  const ours = path.dirname(path.dirname(BARMAN_SCRIPT));
  let script = BARMAN_SCRIPT;
  const barman = (...a: string[]) => must(BARMAN_USER, process.execPath, [script, '-c', conf, ...a]);
  const sshd = await startSshd();
  let pg: LocalCluster | null = null;
  let xfs: string | null = null;
  try {
    if (XFS && !(xfs = await mountXfs(root, mkdirFor))) throw new Error('--xfs: mkfs.xfs is not installed (xfsprogs)');
    const { sshCommand } = await cipherSshConfig(await sshd.clientConfigFor(BARMAN_USER, [PG_USER]), root);
    const built = await buildBenchCluster(pgDir, SCALE);
    pg = built.cluster;
    const cluster = pg;
    console.log(`database: ${(built.dbSize / 1048576).toFixed(0)} MiB`);
    const log = path.join(home, 'barman.log');
    await fs.writeFile(
      conf,
      `[barman]\nbarman_home = ${home}\nbarman_user = ${BARMAN_USER}\nlog_file = ${log}\nlog_level = DEBUG\n\n` +
        `[ag]\nconninfo = ${cluster.conninfo}\nstreaming_conninfo = ${cluster.conninfo}\nbackup_method = rsync\nssh_command = ${sshCommand}\n` +
        `streaming_archiver = on\nslot_name = barman_ag\ncreate_slot = auto\nparallel_jobs = 2\ntransfer_method = agent\n` +
        (xfs ? `basebackups_directory = ${xfs}/base\n` : ''),
      { mode: 0o644 },
    );
    await cronUntilStreaming(barman, home, ['ag']);
    await barman('switch-wal', '--force', '--archive', '--archive-timeout', '120', 'ag');
    const rows = Number(await cluster.psql('SELECT count(*) FROM pgbench_accounts'));
    const steps: [string, string | null, string][] = [
      ['full', null, 'off'],
      ['incr 1% contiguous', `UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= ${Math.floor(rows / 100)}; CHECKPOINT;`, 'link'],
      ['incr 1% random', 'UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE random() < 0.01; CHECKPOINT;', 'link'],
    ];
    /** The build whose barman and barman-agent run (the agent wrapper on the ssh PATH points to it). */
    const use = async (repo: string) => {
      script = path.join(repo, 'bin', 'barman.js');
      await fs.writeFile(path.join(sshd.binDir, 'barman-agent'), `#!/bin/sh\nexec '${process.execPath}' '${path.join(repo, 'bin', 'barman-agent')}' "$@"\n`, { mode: 0o755 });
    };
    let round = 0;
    const summary = new Map<string, number[]>();
    for (const [label0, sql, reuse] of steps) {
      if (sql) await cluster.psql(sql);
      const builds: string[] = [];
      for (let r = 0; r < (sql ? REPEAT : 1); r++) builds.push(...(alt && sql ? (round++ % 2 === 0 ? [alt, ours] : [ours, alt]) : [ours]));
      for (const [bi, repo] of builds.entries()) {
        const label = builds.length > 1 ? `${label0} [${repo === ours ? 'this build' : 'alt'}]` : label0;
        await use(repo);
        await dropCaches();
        // dropCaches loads this build's code again: the other build's too.
        if (repo !== ours) await run('sh', ['-c', 'find "$1" -name "*.js" -exec cat {} + > /dev/null', 'sh', path.join(repo, 'dist', 'src')]);
        const before = (await fs.readFile(log, 'utf8')).length;
        const t0 = Date.now();
        const cpu0 = await busyCpuSeconds();
        const backup = () => timed(() => barman('backup', '--immediate-checkpoint', '--reuse-backup', reuse, 'ag'));
        let table: [string, number][] = [];
        let secs: number;
        if (PER_PROCESS) ({ result: secs, table } = await perProcessCpu(backup));
        else secs = await backup();
        const cpu = (await busyCpuSeconds()) - cpu0;
        console.log(`\n=== ${label}: ${secs.toFixed(2)} s (CPU busy on the whole machine: ${cpu.toFixed(2)} s)`);
        if (table.length > 0) console.log(`   CPU seconds per process kind: ${table.map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')}`);
        summary.set(label, [...(summary.get(label) ?? []), secs]);
        const text = (await fs.readFile(log, 'utf8')).slice(before);
        for (const line of text.split('\n')) {
          const m = /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \[(\d+)\] (\S+) (\w+): (.*)$/.exec(line);
          if (!m) continue;
          const at = new Date(`${m[1]?.replace(' ', 'T')}.${m[2]}`).getTime() - t0;
          console.log(`${String(at).padStart(6)} ms ${m[4]} ${(m[6] ?? '').slice(0, 220)}`);
        }
        // The first of two builds: its backup goes, the other one takes the same change.
        if (bi < builds.length - 1) {
          const id = (await barman('list-backups', '--minimal', 'ag')).trim().split('\n')[0] ?? '';
          await barman('delete', 'ag', id);
        }
      }
    }
    await use(ours);
    console.log('\n=== summary (seconds, in the order taken)');
    for (const [label, times] of summary) console.log(`${label.padEnd(36)} ${times.map((t) => t.toFixed(2)).join(' ')}  median ${[...times].sort((a, b) => a - b)[Math.floor(times.length / 2)]?.toFixed(2)}`);
  } finally {
    await must(BARMAN_USER, process.execPath, [BARMAN_SCRIPT, '-c', conf, 'receive-wal', '--stop', 'ag']).catch(() => undefined);
    await pg?.stop('immediate').catch(() => undefined);
    if (xfs) await run('umount', [xfs]).catch(() => undefined);
    await sshd.stop().catch(() => undefined);
    await fs.rm(root, { recursive: true, force: true }).catch(() => undefined);
  }
}

await main();
