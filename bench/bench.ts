/**
 * `npm run bench [-- --scale N]`: backup and recovery speed of barman-ts beside the plain tools,
 * on the same data in the same run. Builds a pgbench database (scale 100 by default) plus a table
 * of random text (so that compression figures are honest), then measures:
 *   - plain `pg_basebackup -X none` vs `barman backup` (postgres method)
 *   - `cp -a` + `sync` of the same data vs `barman recover`
 *   - CLI start-up: `barman --version`, `barman list-servers`
 *   - catalog commands on 1,000 backups and 200,000 WALs (`-- --catalog-only` runs just that)
 *   - WAL shipping over SSH beside cp, rsync and pgBackRest (`-- --wal-only`, bench/wal-bench.ts)
 *   - encrypted WAL archiving and get-wal beside gzip | gpg (`-- --encryption-only`,
 *     bench/encryption-bench.ts; not part of the full run)
 *   - rsync backups and local/remote recovery beside cp, rsync and pgBackRest (`-- --rsync-only`,
 *     bench/rsync-bench.ts)
 *   - recovery drill phases beside a manual recover + pg_ctl start (`-- --drill-only`,
 *     bench/drill-bench.ts)
 *   - transfer_method = agent: full, incremental, delta and remote restores beside the ssh floor,
 *     rsync and pgBackRest (`-- --agent-only`, bench/agent-bench.ts)
 *   - barman-cloud-* on s3rver and Azurite beside barman-cloud 3.4 (`-- --cloud-only`,
 *     bench/cloud-bench.ts)
 *   - every Barman-compatible setting (postgres method with each backup_compression, rsync,
 *     local-rsync, WAL archive/restore per call) beside Barman 3.4 (`-- --compat-only`,
 *     bench/compat-bench.ts)
 *   - passive node sync (geo-redundancy) beside tar | ssh | tar and Barman 3.4's passive
 *     (`-- --geo-only`, bench/geo-bench.ts)
 * Each backup/copy is run twice, alternating, and the faster run is kept (page cache fairness).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { as, BARMAN_USER, BIN, chownTo, LocalCluster, must, PG_USER } from '../src/sandbox/local.js';
import { treeSize } from '../src/util/fsutil.js';
import { run } from '../src/util/proc.js';
import { BARMAN_SCRIPT } from '../src/util/self.js';
import { benchRoot, cronUntilStreaming } from './bench-root.js';
import { catalogScale } from './catalog-scale.js';
import { drillBench } from './drill-bench.js';
import { cloudBench } from './cloud-bench.js';
import { compatBench } from './compat-bench.js';
import { rsyncBench } from './rsync-bench.js';
import { agentBench } from './agent-bench.js';
import { walBench } from './wal-bench.js';
import { encryptionBench } from './encryption-bench.js';
import { geoBench } from './geo-bench.js';

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : Number(process.env[`BENCH_${name.toUpperCase()}`] ?? def);
};
const SCALE = arg('scale', 100);
const ROUNDS = arg('rounds', 2);

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

const MB = 1024 * 1024;
const fmt = (s: number) => `${s.toFixed(2)} s`;
const rate = (bytes: number, s: number) => `${(bytes / MB / s).toFixed(0)} MB/s`;

async function main(): Promise<void> {
  const { root, pgDir, home, scratch, conf, barman } = benchRoot('barman-bench-');
  let pg: LocalCluster | null = null;
  try {
    console.log(`barman-ts benchmark: pgbench scale ${SCALE}, ${ROUNDS} rounds, ${os.cpus().length} CPUs`);
    pg = await LocalCluster.create(path.join(pgDir, 'data'), pgDir, 'shared_buffers = 256MB\nmax_wal_size = 8GB\nsynchronous_commit = off\n');
    const tBuild = await timed(async () => {
      await must(PG_USER, path.join(BIN, 'pgbench'), ['-i', '-q', '-s', String(SCALE), '-h', pgDir, '-p', String(pg?.port), 'postgres']);
      await pg?.psql(
        `CREATE TABLE random_text AS SELECT g AS id, string_agg(md5(random()::text), '') AS body FROM generate_series(1, ${SCALE * 2000}) g, generate_series(1, 16) x GROUP BY g; CHECKPOINT;`,
      );
    });
    const dbSize = Number(await pg.psql('SELECT sum(pg_database_size(oid)) FROM pg_database'));
    console.log(`database built in ${fmt(tBuild)}: ${(dbSize / MB).toFixed(0)} MiB\n`);

    fs.writeFileSync(
      conf,
      `[barman]\nbarman_home = ${home}\nbarman_user = ${BARMAN_USER}\nlog_file = ${home}/barman.log\n\n[bench]\nconninfo = ${pg.conninfo}\nstreaming_conninfo = ${pg.conninfo}\nbackup_method = postgres\nstreaming_archiver = on\nslot_name = barman\ncreate_slot = auto\n`,
      { mode: 0o644 },
    );
    await cronUntilStreaming(barman, home, ['bench']);
    // A backup is refused until a first WAL file is archived (as Barman 3.4's check does).
    await barman('switch-wal', '--force', '--archive', '--archive-timeout', '120', 'bench');

    const results: Record<string, number[]> = { pgbb: [], barman: [], cp: [], recover: [] };
    let backupBytes = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const plain = path.join(scratch, `plain-${round}`);
      results.pgbb?.push(
        await timed(() => must(BARMAN_USER, path.join(BIN, 'pg_basebackup'), ['-d', pg?.conninfo ?? '', '-D', plain, '-X', 'none', '-c', 'fast', '--no-password'])),
      );
      fs.rmSync(plain, { recursive: true, force: true });
      results.barman?.push(await timed(() => barman('backup', '--immediate-checkpoint', 'bench')));
    }
    const ids = (await barman('list-backups', '--minimal', 'bench')).trim().split('\n');
    const latest = ids[0] ?? '';
    const backupData = path.join(home, 'bench', 'base', latest, 'data');
    backupBytes = await treeSize(backupData);
    for (let round = 0; round < ROUNDS; round++) {
      const cpDest = path.join(scratch, `cp-${round}`);
      results.cp?.push(
        await timed(async () => {
          await must(BARMAN_USER, 'cp', ['-a', backupData, cpDest]);
          await must(BARMAN_USER, 'sync', ['-f', cpDest]);
        }),
      );
      fs.rmSync(cpDest, { recursive: true, force: true });
      const dest = path.join(scratch, `restore-${round}`);
      results.recover?.push(await timed(() => barman('recover', 'bench', latest, dest)));
      fs.rmSync(dest, { recursive: true, force: true });
    }
    const best = (k: string) => Math.min(...(results[k] ?? [Infinity]));
    const pgbb = best('pgbb');
    const bk = best('barman');
    const cp = best('cp');
    const rec = best('recover');
    console.log('BACKUP (same data, best of rounds)');
    console.log(`  pg_basebackup -X none   ${fmt(pgbb).padStart(9)}  ${rate(backupBytes, pgbb)}`);
    console.log(`  barman backup           ${fmt(bk).padStart(9)}  ${rate(backupBytes, bk)}   ratio ${(bk / pgbb).toFixed(2)}x (target <= 1.10x)`);
    console.log('RECOVER');
    console.log(`  cp -a + sync            ${fmt(cp).padStart(9)}  ${rate(backupBytes, cp)}`);
    console.log(`  barman recover          ${fmt(rec).padStart(9)}  ${rate(backupBytes, rec)}   ratio ${(rec / cp).toFixed(2)}x (target <= 2x)`);

    // Start-up is measured as the current user (no runuser in between): it is the CLI's own cost.
    const mean = async (args: string[]) => {
      const n = 20;
      let total = 0;
      for (let i = 0; i < n; i++) total += await timed(() => run(process.execPath, args));
      return (total / n) * 1000;
    };
    const startup = (...a: string[]) => mean([BARMAN_SCRIPT, '-c', conf, ...a]);
    const nodeBase = await mean(['-e', '']);
    console.log('CLI START-UP (mean of 20)');
    console.log(`  node -e ''              ${nodeBase.toFixed(0).padStart(6)} ms`);
    console.log(`  barman --version        ${(await mean([BARMAN_SCRIPT, '--version'])).toFixed(0).padStart(6)} ms   (target < 100 ms: a third of Barman 3.4's 0.3 s)`);
    console.log(`  barman list-servers     ${(await startup('list-servers')).toFixed(0).padStart(6)} ms`);
  } finally {
    await as(BARMAN_USER, process.execPath, [BARMAN_SCRIPT, '-c', conf, 'receive-wal', '--stop', 'bench']).catch(() => undefined);
    await pg?.stop('immediate').catch(() => undefined);
    fs.rmSync(root, { recursive: true, force: true });
  }
}

// One `--<name>-only` flag runs that section alone (see the header comment); without one, the
// start-up and backup rows above run, then the sections marked `full`, in this order.
const SECTIONS: ReadonlyArray<{ flag: string; run: () => Promise<unknown>; full: boolean }> = [
  { flag: '--catalog-only', run: catalogScale, full: true },
  { flag: '--wal-only', run: walBench, full: true },
  { flag: '--rsync-only', run: rsyncBench, full: true },
  { flag: '--agent-only', run: agentBench, full: true },
  { flag: '--drill-only', run: drillBench, full: true },
  { flag: '--cloud-only', run: cloudBench, full: true },
  { flag: '--compat-only', run: compatBench, full: true },
  { flag: '--geo-only', run: geoBench, full: true },
  { flag: '--encryption-only', run: encryptionBench, full: false },
];
const chosen = SECTIONS.find((sec) => process.argv.includes(sec.flag));
const everything = async () => {
  await main();
  for (const sec of SECTIONS) if (sec.full) await sec.run();
};
(chosen ? chosen.run() : everything()).catch((err: unknown) => {
  console.error(`bench failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
