/**
 * Recovery drill speed (`npm run bench -- --drill-only`, or a section of `npm run bench`): the
 * phases of `barman drill` of a pgbench database (scale 100 by default) beside a manual
 * `barman recover` + `pg_ctl start -w` of the same backup, on the same data in the same run.
 *
 * After the backup, `pgbench -T` writes some WAL, so both replay the same segments (the manual
 * restore copies them into pg_wal; the drill fetches them through get-wal, as its sandbox's
 * restore_command). Reported: the drill's phases, its RTO (restore + prepare + replay +
 * promotion) beside the manual recover + start, and the drill's own overhead (setup, sandbox
 * preparation, promotion, stop, cleanup; checks excluded), whose target is under 3 s.
 *
 * Options: --scale N (100), --pgbench-seconds N (10). Must run as root (postgres and barman users).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { DrillRecord } from '../src/drill/records.js';
import { as, BARMAN_USER, BIN, chownTo, freePort, LocalCluster, must, PG_USER } from '../src/sandbox/local.js';
import { BARMAN_SCRIPT } from '../src/util/self.js';
import { benchRoot, cronUntilStreaming } from './bench-root.js';

const argNum = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : Number(process.env[`BENCH_${name.toUpperCase().replace(/-/g, '_')}`] ?? def);
  return Number.isFinite(v) && v > 0 ? v : def;
};

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

const MB = 1024 * 1024;
const f2 = (s: number | null | undefined) => (s === null || s === undefined ? '-' : `${s.toFixed(2)} s`);

export async function drillBench(): Promise<void> {
  const scale = argNum('scale', 100);
  const pgbenchSeconds = argNum('pgbench-seconds', 10);
  const { root, pgDir, home, scratch, conf, barman } = benchRoot('barman-drill-bench-');
  let pg: LocalCluster | null = null;
  let manualDest: string | null = null;
  try {
    console.log(`\nRECOVERY DRILL (pgbench scale ${scale}, ${os.cpus().length} CPUs, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')})`);
    pg = await LocalCluster.create(path.join(pgDir, 'data'), pgDir, 'shared_buffers = 256MB\nmax_wal_size = 8GB\nsynchronous_commit = off\n');
    await must(PG_USER, path.join(BIN, 'pgbench'), ['-i', '-q', '-s', String(scale), '-h', pgDir, '-p', String(pg.port), 'postgres']);
    await pg.psql('CHECKPOINT');
    fs.writeFileSync(
      conf,
      `[barman]\nbarman_home = ${home}\nbarman_user = ${BARMAN_USER}\nlog_file = ${home}/barman.log\n\n[bench]\nconninfo = ${pg.conninfo}\nstreaming_conninfo = ${pg.conninfo}\nbackup_method = postgres\nstreaming_archiver = on\nslot_name = barman\ncreate_slot = auto\ndrill_directory = ${scratch}/drills\n`,
      { mode: 0o644 },
    );
    await cronUntilStreaming(barman, home, ['bench']);
    // A backup is refused until a first WAL file is archived (as Barman 3.4's check does).
    await barman('switch-wal', '--force', '--archive', '--archive-timeout', '120', 'bench');
    await barman('backup', '--immediate-checkpoint', '--wait', 'bench');
    const id = (await barman('list-backups', '--minimal', 'bench')).trim().split('\n')[0] ?? '';
    await must(PG_USER, path.join(BIN, 'pgbench'), ['-n', '-T', String(pgbenchSeconds), '-c', '2', '-h', pgDir, '-p', String(pg.port), 'postgres']);
    await barman('switch-wal', '--archive', '--archive-timeout', '120', 'bench');
    const dbBytes = Number(await pg.psql('SELECT sum(pg_database_size(oid)) FROM pg_database'));
    console.log(`  database ${(dbBytes / MB).toFixed(0)} MiB, backup ${id}, then pgbench -T ${pgbenchSeconds}`);

    // Manual: recover, then pg_ctl start -w until it accepts connections (promoted at the end of
    // the WAL): with the WAL copied into pg_wal (recover's default), and with --get-wal (the
    // drill's way: PostgreSQL fetches each segment through barman get-wal).
    const manual = async (extra: string[]): Promise<{ recover: number; start: number }> => {
      manualDest = path.join(scratch, 'manual');
      const sock = fs.mkdtempSync('/tmp/bdb-');
      chownTo(BARMAN_USER, sock);
      try {
        const recover = await timed(() => barman('recover', ...extra, 'bench', id, manualDest as string));
        const port = await freePort();
        const start = await timed(() =>
          must(BARMAN_USER, path.join(BIN, 'pg_ctl'), [
            'start', '-w', '-t', '3600', '-D', manualDest as string, '-l', path.join(sock, 'log'),
            '-o', `-c port=${port} -c listen_addresses='' -c unix_socket_directories=${sock} -c archive_mode=off`,
          ]),
        );
        await as(BARMAN_USER, path.join(BIN, 'pg_ctl'), ['stop', '-D', manualDest, '-m', 'immediate', '-w']);
        return { recover, start };
      } finally {
        fs.rmSync(manualDest, { recursive: true, force: true });
        fs.rmSync(sock, { recursive: true, force: true });
        manualDest = null;
      }
    };
    const copied = await manual([]);
    const viaGetWal = await manual(['--get-wal']);

    // The drill.
    const out = await barman('-f', 'json', 'drill', 'bench', id);
    const rec = (JSON.parse(out) as Record<string, DrillRecord>).bench as DrillRecord;
    const p = rec.phases;
    console.log(`  manual recover + pg_ctl start -w             ${f2(copied.recover)} + ${f2(copied.start)} = ${f2(copied.recover + copied.start)}`);
    console.log(`  manual recover --get-wal + pg_ctl start -w   ${f2(viaGetWal.recover)} + ${f2(viaGetWal.start)} = ${f2(viaGetWal.recover + viaGetWal.start)}`);
    console.log(
      `  barman drill phases                          setup ${f2(p.setup_seconds)}, restore ${f2(p.restore_seconds)} (${((rec.bytes_restored ?? 0) / MB).toFixed(0)} MiB), prepare ${f2(p.prepare_seconds)}, ` +
        `replay ${f2(p.replay_seconds)} (${rec.wal_segments ?? 0} WAL segments, consistent after ${f2(p.consistency_seconds)}), promote ${f2(p.promote_seconds)}, ` +
        `checks ${f2(p.checks_seconds)} (${rec.checks.map((c) => `${c.name} ${c.seconds.toFixed(1)} s`).join(', ')}), stop ${f2(p.stop_seconds)}, cleanup ${f2(p.cleanup_seconds)}; total ${f2(p.total_seconds)}`,
    );
    console.log(`  drill RTO (restore+prepare+replay+promote) ${f2(p.rto_seconds)}   vs manual ${f2(copied.recover + copied.start)}, manual with get-wal ${f2(viaGetWal.recover + viaGetWal.start)}`);
    console.log(`  drill overhead (setup, prepare, promote, stop, cleanup; checks excluded) ${f2(p.overhead_seconds)}   (target < 3 s)`);
    console.log(`  result: ${rec.status.toUpperCase()}${rec.error ? ` (${rec.error})` : ''}; load average now ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  } finally {
    if (manualDest) await as(BARMAN_USER, path.join(BIN, 'pg_ctl'), ['stop', '-D', manualDest, '-m', 'immediate', '-w']).catch(() => undefined);
    await as(BARMAN_USER, process.execPath, [BARMAN_SCRIPT, '-c', conf, 'receive-wal', '--stop', 'bench']).catch(() => undefined);
    await pg?.stop('immediate').catch(() => undefined);
    fs.rmSync(root, { recursive: true, force: true });
  }
}
