/**
 * backup_method = rsync speed (`npm run bench -- --rsync-only`, or a section of `npm run bench`),
 * beside plain copies and pgBackRest 2.45 (Debian) on the same data in the same run:
 *   full backup    cp -a + sync, rsync -a + sync (local, PGDATA without pg_wal), tar | ssh | tar
 *                  (the one-stream floor of any copy through this sshd),
 *                  barman backup -j 1 / -j 2 over ssh (a real sshd on 127.0.0.1),
 *                  pgbackrest backup --type=full process-max=1 / 2, compress-type=none
 *   second backup  after an UPDATE of a few rows of pgbench_branches + CHECKPOINT:
 *                  barman --reuse-backup link -j 2 (time, deduplicated_size, du of new inodes)
 *                  vs pgbackrest --type=incr process-max=2 (time, du of its backup directory)
 *   recovery       cp -a + sync of the backup, barman recover -j 2 (local), barman recover -j 2
 *                  --remote-ssh-command (skipped while unsupported), pgbackrest restore process-max=2
 * Each measurement is the best of --rounds (default 2); within a round the tools alternate (the
 * order is reversed on odd rounds) and the page cache is dropped (sync; drop_caches=3) before
 * every timed run, then the programs (node + barman's code, rsync, ssh, tar, pgbackrest) are
 * loaded again: every tool reads cold data, none pays for loading its own binary from disk.
 *
 * What is compared is the copy engines: pgBackRest runs as postgres on the database host with a
 * local repository (no ssh), while barman pulls through ssh (encryption included, every ssh-based
 * row with the same cipher, SSH_CIPHER). Neither waits
 * for WAL archiving (pgBackRest archive-check=n; barman without --wait). autovacuum is off on the
 * bench cluster so that only the bench's own change modifies files between backups.
 *
 * Options: --scale N (100), --rounds N (2). Must run as root (postgres and barman users, sshd).
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { as, BARMAN_USER, BIN, chownTo, isRoot, LocalCluster, must, PG_USER } from '../src/sandbox/local.js';
import { run } from '../src/util/proc.js';
import { BARMAN_SCRIPT } from '../src/util/self.js';
import { cronUntilStreaming, makeBenchRoot } from './bench-root.js';

export const argNum = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : Number(process.env[`BENCH_${name.toUpperCase()}`] ?? def);
  return Number.isFinite(v) && v > 0 ? v : def;
};

export const MB = 1024 * 1024;
/** Cipher of every ssh-based row (see the README: backup traffic on trusted networks). */
export const SSH_CIPHER = 'aes128-gcm@openssh.com';
export const PGBACKREST = '/usr/bin/pgbackrest';
/** Rows touched by the "small change" between the full and the second backup. */
export const CHANGE_SQL = 'UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid <= 3; CHECKPOINT;';

/** The `pgbackrest restore process-max=2` row of a restore table: into pgScratch/pgbr, removed after. */
export function pgbackrestRestoreRow(pgScratch: string, pgbr: (...a: string[]) => Promise<unknown>): [string, () => Promise<unknown>, () => Promise<unknown>] {
  return [
    'pgbackrest restore process-max=2',
    async () => {
      const dest = path.join(pgScratch, 'pgbr');
      await must(PG_USER, 'mkdir', ['-m', '0700', dest]);
      await pgbr(`--pg1-path=${dest}`, '--process-max=2', 'restore');
    },
    () => fs.rm(path.join(pgScratch, 'pgbr'), { recursive: true, force: true }),
  ];
}

export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Every file under `dir` read once (skipping `skip` names), so that it sits in the page cache. */
async function readTree(dir: string, skip: readonly string[] = []): Promise<void> {
  for (const e of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
    if (skip.includes(e.name)) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) await readTree(p, skip);
    else if (e.isFile()) await fs.readFile(p).catch(() => undefined);
  }
}

/**
 * Cold data, warm programs, for the next timed run: write back dirty pages, drop the page cache,
 * then load every tool and barman's own code again. Without the warm-up, the cold start of a
 * 95 MB node binary and its modules would be charged to barman, not the copy engine measured.
 */
export async function dropCaches(): Promise<void> {
  await run('sync', []);
  await fs.writeFile('/proc/sys/vm/drop_caches', '3\n');
  const repo = path.dirname(path.dirname(BARMAN_SCRIPT));
  await readTree(path.join(repo, 'dist', 'src'));
  await readTree(path.join(repo, 'node_modules'), ['typescript', '@typescript', '@types', 'parse-prometheus-text-format']);
  await run(process.execPath, [BARMAN_SCRIPT, '--help']);
  for (const [cmd, arg] of [['rsync', '--version'], ['ssh', '-V'], ['tar', '--version'], ['cp', '--version'], [PGBACKREST, 'version']] as const) {
    await run(cmd, [arg]).catch(() => undefined);
  }
}

/** `left | right`, each an argument array run as `user` (no shell); throws unless both exit 0. */
export function pipeAs(user: string, left: string[], right: string[]): Promise<void> {
  const start = (argv: string[], stdio: StdioOptions) => spawn('runuser', ['-u', user, '--', ...argv], { stdio, cwd: '/tmp' });
  return new Promise((resolve, reject) => {
    const a = start(left, ['ignore', 'pipe', 'pipe']);
    const b = start(right, ['pipe', 'ignore', 'pipe']);
    if (a.stdout && b.stdin) a.stdout.pipe(b.stdin);
    let err = '';
    for (const c of [a, b]) c.stderr?.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-2000)));
    const done = (c: ChildProcess) => new Promise<number>((r) => c.on('close', (code) => r(code ?? -1)));
    Promise.all([done(a), done(b)]).then(([x, y]) => (x === 0 && y === 0 ? resolve() : reject(new Error(`pipe failed (${x}, ${y}): ${err.trim()}`))), reject);
  });
}

/** Debian's pgbackrest, installed for the bench only; waits while another dpkg holds the lock. */
export async function ensurePgbackrest(): Promise<void> {
  if (existsSync(PGBACKREST)) return;
  console.log('  installing Debian pgbackrest for the comparison (apt-get install -y pgbackrest)');
  for (let attempt = 1; ; attempt++) {
    const r = await run('apt-get', ['install', '-y', '-q', 'pgbackrest'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    if (r.code === 0) return;
    if (attempt < 30 && /Could not get lock|dpkg.*lock|Resource temporarily unavailable/i.test(r.stderr)) {
      await sleep(10_000);
      continue;
    }
    throw new Error(`apt-get install pgbackrest failed: ${r.stderr.trim().split('\n').slice(-1)[0] ?? ''}`);
  }
}

/** `key=value` field of a backup.info file. */
export const infoField = (text: string, key: string): string => new RegExp(`^${key}=(.*)$`, 'm').exec(text)?.[1] ?? '';

/** Bytes of the last operand of `du -s -B1 a b ... last`: du counts each inode once, at its first sight. */
export async function duNew(before: readonly string[], target: string): Promise<number> {
  const r = await run('du', ['-s', '-B1', ...before, target]);
  if (r.code !== 0) throw new Error(`du failed: ${r.stderr.trim()}`);
  const last = r.stdout.trim().split('\n').pop() ?? '';
  return Number(last.split(/\s+/)[0]);
}

/**
 * pgbench at `scale`, plus random text as in the main bench (so that nothing is trivially
 * compressible), then every hint bit set and frozen now, so later reads do not dirty pages
 * between backups.
 */
export async function buildPgbench(cluster: LocalCluster, pgDir: string, scale: number): Promise<void> {
  await must(PG_USER, path.join(BIN, 'pgbench'), ['-i', '-q', '-s', String(scale), '-h', pgDir, '-p', String(cluster.port), 'postgres']);
  await cluster.psql(
    `CREATE TABLE random_text AS SELECT g AS id, string_agg(md5(random()::text), '') AS body FROM generate_series(1, ${scale * 2000}) g, generate_series(1, 16) x GROUP BY g;`,
  );
  await cluster.psql('VACUUM (FREEZE, ANALYZE); CHECKPOINT;');
}

interface Measure {
  times: number[];
  note?: string;
}

/**
 * Every ssh-based row (tar | ssh, barman backup, remote recover) goes through this one config,
 * with the cipher the README recommends for backup traffic on a trusted network: the AES-GCM
 * of the CPU's AES instructions moves ~1.5x the bytes of the default chacha20 per stream.
 */
export async function cipherSshConfig(clientConfig: string, root: string): Promise<{ cfg: string; sshCommand: string }> {
  const cfg = path.join(root, 'ssh_config');
  const base = await fs.readFile(clientConfig, 'utf8');
  await fs.writeFile(cfg, `Ciphers ${SSH_CIPHER}\n${base}`, { mode: 0o600 });
  chownTo(BARMAN_USER, cfg);
  return { cfg, sshCommand: `ssh -F ${cfg} postgres@127.0.0.1` };
}

/**
 * The bench cluster in `pgDir`: pgbench at `scale`, then random text as in the main bench (so
 * that nothing is trivially compressible), then every hint bit set and frozen, so later reads
 * do not dirty pages between backups. autovacuum off: only the bench's own changes modify files.
 */
export async function buildBenchCluster(pgDir: string, scale: number): Promise<{ cluster: LocalCluster; seconds: number; dbSize: number }> {
  const cluster = await LocalCluster.create(path.join(pgDir, 'data'), pgDir, 'shared_buffers = 256MB\nmax_wal_size = 8GB\nsynchronous_commit = off\nautovacuum = off\n');
  const seconds = await timed(async () => {
    await must(PG_USER, path.join(BIN, 'pgbench'), ['-i', '-q', '-s', String(scale), '-h', pgDir, '-p', String(cluster.port), 'postgres']);
    await cluster.psql(
      `CREATE TABLE random_text AS SELECT g AS id, string_agg(md5(random()::text), '') AS body FROM generate_series(1, ${scale * 2000}) g, generate_series(1, 16) x GROUP BY g;`,
    );
    await cluster.psql('VACUUM (FREEZE, ANALYZE); CHECKPOINT;');
  });
  const dbSize = Number(await cluster.psql('SELECT sum(pg_database_size(oid)) FROM pg_database'));
  return { cluster, seconds, dbSize };
}

/**
 * pgBackRest for the bench cluster: repository, logs, locks and spool in `dir` (created, the
 * postgres user's), configuration in `conf`, stanza `bench` created. Returns the problem, if any.
 */
export async function setupPgbackrest(dir: string, conf: string, cluster: LocalCluster, pgDir: string, compressType: 'none' | 'lz4'): Promise<string | null> {
  try {
    await ensurePgbackrest();
    await fs.mkdir(dir, { mode: 0o700 });
    for (const sub of ['repo', 'log', 'lock', 'spool']) await fs.mkdir(path.join(dir, sub), { mode: 0o700 });
    chownTo(PG_USER, dir, true);
    await fs.writeFile(
      conf,
      [
        '[global]',
        `repo1-path=${dir}/repo`,
        'repo1-retention-full=99',
        `log-path=${dir}/log`,
        `lock-path=${dir}/lock`,
        `spool-path=${dir}/spool`,
        'log-level-console=warn',
        'log-level-file=off',
        `compress-type=${compressType}`,
        'start-fast=y',
        // As barman here: the backup ends when the copy ends, not when its last WAL is archived.
        'archive-check=n',
        '',
        '[bench]',
        `pg1-path=${cluster.dataDir}`,
        `pg1-port=${cluster.port}`,
        `pg1-socket-path=${pgDir}`,
        '',
      ].join('\n'),
      { mode: 0o644 },
    );
    await must(PG_USER, PGBACKREST, [`--config=${conf}`, '--stanza=bench', 'stanza-create']);
    return null;
  } catch (err) {
    return (err as Error).message.split('\n').slice(0, 2).join(' ');
  }
}

export async function rsyncBench(): Promise<void> {
  const SCALE = argNum('scale', 100);
  const ROUNDS = argNum('rounds', 2);
  console.log(`\nRSYNC BACKUP AND RECOVERY (pgbench scale ${SCALE} + random text, best of ${ROUNDS} rounds, sshd on 127.0.0.1, ssh -c ${SSH_CIPHER})`);
  if (!isRoot) {
    console.log('  skipped: needs root (postgres and barman users, a real sshd, drop_caches)');
    return;
  }
  // Test helpers are loaded here, not at the top: only this section needs an sshd.
  const { startSshd } = await import('../test/helpers/sshd.js');
  const sys = await import('../test/helpers/system.js');
  await sys.ensureBarmanUser();

  const { root, mkdirFor } = await makeBenchRoot('barman-rsync-bench-');
  const pgDir = await mkdirFor('pg', PG_USER);
  const pgScratch = await mkdirFor('pg-scratch', PG_USER);
  const home = await mkdirFor('barman', BARMAN_USER, 0o700);
  const scratch = await mkdirFor('scratch', BARMAN_USER);
  const conf = path.join(root, 'barman.conf');
  const pgbrConf = path.join(root, 'pgbackrest.conf');
  const barmanArgs = (...a: string[]) => [BARMAN_SCRIPT, '-c', conf, ...a];
  const barman = (...a: string[]) => must(BARMAN_USER, process.execPath, barmanArgs(...a));
  const pgbr = (...a: string[]) => must(PG_USER, PGBACKREST, [`--config=${pgbrConf}`, '--stanza=bench', ...a]);

  const sshd = await startSshd();
  let pg: LocalCluster | null = null;
  const m = new Map<string, Measure>();
  const get = (label: string): Measure => {
    let x = m.get(label);
    if (!x) m.set(label, (x = { times: [] }));
    return x;
  };
  /** One timed run, cold cache; a failure is recorded (first line) instead of ending the bench. */
  const measure = async (label: string, fn: () => Promise<unknown>, after?: () => Promise<unknown>): Promise<void> => {
    const x = get(label);
    if (x.note) return;
    try {
      await dropCaches();
      x.times.push(await timed(fn));
    } catch (err) {
      x.note = `FAILED: ${(err as Error).message.split('\n').slice(0, 3).join(' | ')}`;
    }
    await after?.().catch(() => undefined);
  };
  const alternate = <T>(list: T[], round: number): T[] => (round % 2 === 1 ? [...list].reverse() : list);

  let dataBytes = 0;
  let fullDisk = 0;
  let incrInfo = '';
  let incrStats = '';
  let incrDu = 0;
  let pgbrIncrDu = 0;
  let pgbrFullDu = 0;
  let pgbrProblem: string | null = null;
  let remoteNote: string | null = null;
  let copyStats = '';
  try {
    const { cfg, sshCommand } = await cipherSshConfig(await sshd.clientConfigFor(BARMAN_USER, [PG_USER]), root);
    const built = await buildBenchCluster(pgDir, SCALE);
    pg = built.cluster;
    const cluster = pg;
    console.log(`  database built in ${built.seconds.toFixed(1)} s: ${(built.dbSize / MB).toFixed(0)} MiB; before every timed run: page cache dropped, programs re-warmed`);

    await fs.writeFile(
      conf,
      `[barman]\nbarman_home = ${home}\nbarman_user = ${BARMAN_USER}\nlog_file = ${home}/barman.log\n\n[bench]\nconninfo = ${cluster.conninfo}\nstreaming_conninfo = ${cluster.conninfo}\nbackup_method = rsync\nssh_command = ${sshCommand}\nstreaming_archiver = on\nslot_name = barman\ncreate_slot = auto\n`,
      { mode: 0o644 },
    );
    await cronUntilStreaming(barman, home, ['bench']);
    // A backup is refused until a first WAL file is archived (as Barman 3.4's check does).
    await barman('switch-wal', '--force', '--archive', '--archive-timeout', '120', 'bench');
    pgbrProblem = await setupPgbackrest(path.join(root, 'pgbackrest'), pgbrConf, cluster, pgDir, 'none');
    const repoBackups = path.join(root, 'pgbackrest', 'repo', 'backup', 'bench');
    const newestLabel = async (suffix: string): Promise<string> => {
      const names = (await fs.readdir(repoBackups)).filter((n) => n.endsWith(suffix)).sort();
      const last = names.at(-1);
      if (!last) throw new Error(`no pgBackRest backup ending in ${suffix}`);
      return path.join(repoBackups, last);
    };

    // ---- full backups ------------------------------------------------------------------------
    // The plain copies take what a base backup takes: PGDATA without the WAL and postmaster.pid.
    const dataEntries = (await fs.readdir(cluster.dataDir)).filter((n) => !['pg_wal', 'postmaster.pid', 'postmaster.opts'].includes(n));
    const newestBarman = async (): Promise<string> => (await barman('list-backups', '--minimal', 'bench')).trim().split('\n')[0] ?? '';
    const baseDir = path.join(home, 'bench', 'base');
    const readInfo = (id: string) => fs.readFile(path.join(baseDir, id, 'backup.info'), 'utf8');
    const fullIds: string[] = [];
    const fullSteps: [string, () => Promise<unknown>, () => Promise<unknown>][] = [
      [
        'cp -a + sync (local)',
        async () => {
          const dest = path.join(pgScratch, 'cp');
          await must(PG_USER, 'mkdir', ['-m', '0700', dest]);
          await must(PG_USER, 'cp', ['-a', ...dataEntries.map((n) => path.join(cluster.dataDir, n)), `${dest}/`]);
          await must(PG_USER, 'sync', ['-f', dest]);
        },
        () => fs.rm(path.join(pgScratch, 'cp'), { recursive: true, force: true }),
      ],
      [
        'rsync -a + sync (local)',
        async () => {
          const dest = path.join(pgScratch, 'rsync');
          await must(PG_USER, 'rsync', ['-a', '--exclude=/pg_wal/*', '--exclude=/postmaster.*', `${cluster.dataDir}/`, `${dest}/`]);
          await must(PG_USER, 'sync', ['-f', dest]);
        },
        () => fs.rm(path.join(pgScratch, 'rsync'), { recursive: true, force: true }),
      ],
      [
        // The floor of any copy through ssh here: one stream, the cipher and nothing else.
        'tar | ssh | tar + sync (1 stream)',
        async () => {
          const dest = path.join(scratch, 'tar');
          await must(BARMAN_USER, 'mkdir', ['-m', '0700', dest]);
          const remote = ['tar', '-C', cluster.dataDir, '--exclude=./pg_wal/*', '--exclude=./postmaster.*', '-cf', '-', '.'];
          await pipeAs(BARMAN_USER, ['ssh', '-F', cfg, 'postgres@127.0.0.1', ...remote], ['tar', '-C', dest, '-xf', '-']);
          await must(BARMAN_USER, 'sync', ['-f', dest]);
        },
        () => fs.rm(path.join(scratch, 'tar'), { recursive: true, force: true }),
      ],
      ...[1, 2].map((j): [string, () => Promise<unknown>, () => Promise<unknown>] => [
        `barman backup -j ${j} (ssh)`,
        () => barman('backup', '--immediate-checkpoint', '--reuse-backup', 'off', '-j', String(j), 'bench'),
        async () => fullIds.push(await newestBarman()),
      ]),
      ...(pgbrProblem
        ? []
        : [1, 2].map((p): [string, () => Promise<unknown>, () => Promise<unknown>] => [
            `pgbackrest full process-max=${p}`,
            () => pgbr('--type=full', `--process-max=${p}`, 'backup'),
            async () => undefined,
          ])),
    ];
    for (let round = 0; round < ROUNDS; round++) {
      for (const [label, fn, after] of alternate(fullSteps, round)) await measure(label, fn, after);
    }
    const fullId = fullIds.at(-1);
    if (!fullId) throw new Error(`no barman rsync backup was taken: ${get('barman backup -j 2 (ssh)').note ?? get('barman backup -j 1 (ssh)').note ?? ''}`);
    const fullInfo = await readInfo(fullId);
    dataBytes = Number(infoField(fullInfo, 'size'));
    fullDisk = await duNew([], path.join(baseDir, fullId));
    const j2 = fullIds.map(async (id) => ({ id, info: await readInfo(id) }));
    copyStats = (await Promise.all(j2)).map((b) => infoField(b.info, 'copy_stats')).reverse().find((s) => /'number_of_workers': 2/.test(s)) ?? '';
    if (!pgbrProblem) pgbrFullDu = await duNew([], await newestLabel('F')).catch(() => 0);

    // ---- second backup after a small change ---------------------------------------------------
    const incrSteps: [string, () => Promise<unknown>, () => Promise<unknown>][] = [
      [
        'barman --reuse-backup link -j 2',
        () => barman('backup', '--immediate-checkpoint', '--reuse-backup', 'link', '-j', '2', 'bench'),
        async () => {
          const id = await newestBarman();
          const others = (await fs.readdir(baseDir)).filter((n) => n !== id).sort().map((n) => path.join(baseDir, n));
          incrInfo = await readInfo(id);
          incrStats = infoField(incrInfo, 'copy_stats');
          incrDu = await duNew(others, path.join(baseDir, id));
        },
      ],
      ...(pgbrProblem
        ? []
        : [
            [
              'pgbackrest incr process-max=2',
              () => pgbr('--type=incr', '--process-max=2', 'backup'),
              async () => (pgbrIncrDu = await duNew([], await newestLabel('I'))),
            ] as [string, () => Promise<unknown>, () => Promise<unknown>],
          ]),
    ];
    for (let round = 0; round < ROUNDS; round++) {
      await cluster.psql(CHANGE_SQL);
      for (const [label, fn, after] of alternate(incrSteps, round)) await measure(label, fn, after);
    }

    // ---- recovery ------------------------------------------------------------------------------
    // The WAL the newest backup needs must be in barman's archive before it can be recovered.
    await barman('switch-wal', '--force', '--archive', '--archive-timeout', '120', 'bench');
    const latest = await newestBarman();
    // -j 2 for both barman rows: pgBackRest restores with process-max=2, the same parallelism.
    const remoteCmd = ['recover', '-j', '2', '--remote-ssh-command', sshCommand, 'bench', latest];
    const probe = await as(BARMAN_USER, process.execPath, barmanArgs(...remoteCmd, path.join(pgScratch, 'probe')));
    await fs.rm(path.join(pgScratch, 'probe'), { recursive: true, force: true });
    if (probe.code !== 0) {
      const line = (probe.stderr || probe.stdout).trim().split('\n')[0] ?? '';
      remoteNote = /not supported/i.test(line) ? `skipped: remote recovery is not available yet (${line})` : `FAILED: ${line}`;
    }
    const recSteps: [string, () => Promise<unknown>, () => Promise<unknown>][] = [
      [
        'cp -a + sync of the backup',
        async () => {
          await must(BARMAN_USER, 'cp', ['-a', path.join(baseDir, latest, 'data'), path.join(scratch, 'cp')]);
          await must(BARMAN_USER, 'sync', ['-f', path.join(scratch, 'cp')]);
        },
        () => fs.rm(path.join(scratch, 'cp'), { recursive: true, force: true }),
      ],
      ['barman recover -j 2 (local)', () => barman('recover', '-j', '2', 'bench', latest, path.join(scratch, 'rec')), () => fs.rm(path.join(scratch, 'rec'), { recursive: true, force: true })],
      ...(remoteNote
        ? []
        : [
            [
              'barman recover -j 2 (remote, ssh)',
              () => barman(...remoteCmd, path.join(pgScratch, 'remote')),
              () => fs.rm(path.join(pgScratch, 'remote'), { recursive: true, force: true }),
            ] as [string, () => Promise<unknown>, () => Promise<unknown>],
          ]),
      ...(pgbrProblem
        ? []
        : [
            pgbackrestRestoreRow(pgScratch, pgbr),
          ]),
    ];
    for (let round = 0; round < ROUNDS; round++) {
      for (const [label, fn, after] of alternate(recSteps, round)) await measure(label, fn, after);
    }
    if (remoteNote) get('barman recover -j 2 (remote, ssh)').note = remoteNote;
  } finally {
    await as(BARMAN_USER, process.execPath, barmanArgs('receive-wal', '--stop', 'bench')).catch(() => undefined);
    await pg?.stop('immediate').catch(() => undefined);
    await sshd.stop().catch(() => undefined);
    await fs.rm(root, { recursive: true, force: true }).catch(() => undefined);
  }

  // ---- report --------------------------------------------------------------------------------
  const best = (label: string): number | undefined => {
    const t = m.get(label)?.times ?? [];
    return t.length > 0 ? Math.min(...t) : undefined;
  };
  const row = (label: string, extra = '') => {
    const x = m.get(label);
    const t = best(label);
    if (t === undefined) return console.log(`  ${label.padEnd(38)} ${x?.note ?? 'not run'}`);
    console.log(`  ${label.padEnd(38)} ${t.toFixed(2).padStart(8)} s ${(dataBytes / MB / t).toFixed(0).padStart(6)} MB/s${extra}`);
  };
  const mib = (b: number) => `${(b / MB).toFixed(1)} MiB`;
  console.log(`FULL BACKUP (PGDATA without pg_wal: ${mib(dataBytes)})`);
  for (const l of ['cp -a + sync (local)', 'rsync -a + sync (local)', 'tar | ssh | tar + sync (1 stream)', 'barman backup -j 1 (ssh)', 'barman backup -j 2 (ssh)', 'pgbackrest full process-max=1', 'pgbackrest full process-max=2'])
    row(l);
  if (copyStats) console.log(`  (last barman -j 2 backup's copy_stats: ${copyStats})`);
  console.log(`  disk: barman ${mib(fullDisk)}, pgBackRest ${pgbrFullDu ? mib(pgbrFullDu) : 'n/a'}`);
  const dedup = Number(infoField(incrInfo, 'deduplicated_size'));
  console.log('SECOND BACKUP (UPDATE of 3 rows of pgbench_branches + CHECKPOINT before each)');
  row('barman --reuse-backup link -j 2', incrInfo ? `   deduplicated_size ${mib(dedup)}, du of new inodes ${mib(incrDu)}` : '');
  if (incrStats) console.log(`  (last second backup's copy_stats: ${incrStats})`);
  row('pgbackrest incr process-max=2', pgbrIncrDu ? `   du ${mib(pgbrIncrDu)}` : '');
  console.log('RECOVERY (newest backup, into an empty directory)');
  for (const l of ['cp -a + sync of the backup', 'barman recover -j 2 (local)', 'barman recover -j 2 (remote, ssh)', 'pgbackrest restore process-max=2']) row(l);

  console.log('TARGETS (ratios in this run)');
  /** Ratios (x) pass at <= limit ("no slower"); shares (%) must stay under it. */
  const target = (what: string, value: number | undefined, limit: number, unit: 'x' | '%', ref = '') => {
    if (value === undefined || !Number.isFinite(value)) return console.log(`  ${what.padEnd(46)} n/a`);
    const ok = unit === 'x' ? value <= limit : value < limit;
    const shown = unit === 'x' ? `${value.toFixed(2)}x` : `${(value * 100).toFixed(2)}%`;
    const goal = unit === 'x' ? `<= ${limit.toFixed(2)}x` : `< ${(limit * 100).toFixed(0)}%`;
    console.log(`  ${what.padEnd(46)} ${shown.padStart(7)}  (target ${goal}${ref})  ${ok ? 'PASS' : 'MISS'}`);
  };
  const ratio = (a?: number, b?: number) => (a !== undefined && b !== undefined ? a / b : undefined);
  const full2 = ratio(best('barman backup -j 2 (ssh)'), best('pgbackrest full process-max=2'));
  target('full -j 2 / pgBackRest process-max=2', full2, 1, 'x', '; Barman 3.4: 1.5x');
  target('second backup disk / full (deduplicated_size)', incrInfo && dataBytes ? dedup / dataBytes : undefined, 0.05, '%');
  target('second backup disk / full (du new inodes)', incrInfo && fullDisk ? incrDu / fullDisk : undefined, 0.05, '%');
  target('second backup time / full -j 2 time', ratio(best('barman --reuse-backup link -j 2'), best('barman backup -j 2 (ssh)')), 0.3, '%');
  const pgbrRestore = best('pgbackrest restore process-max=2');
  target('recover (local) / pgBackRest restore', ratio(best('barman recover -j 2 (local)'), pgbrRestore), 1, 'x', '; Barman 3.4: 1.8x');
  target('recover (remote) / pgBackRest restore', ratio(best('barman recover -j 2 (remote, ssh)'), pgbrRestore), 1, 'x', '; Barman 3.4: 4.6x');
}
