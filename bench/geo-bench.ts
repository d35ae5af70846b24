/**
 * Geo-redundancy speed (`npm run bench -- --geo-only`, or a section of `npm run bench`): a
 * passive node copying a full backup of the pgbench cluster from a barman-ts primary backup
 * server, beside, on the same data in the same run:
 *   - the floor: `tar | ssh | tar` + sync of the primary's backup directory (one stream, the
 *     same sshd, the same cipher);
 *   - barman-ts `sync-backup` with parallel_jobs = 1 and 2;
 *   - Barman 3.4's own `sync-backup` (Debian's package) as the passive node, against the same
 *     primary (its sync-info is ours: what a Barman passive of a barman-ts primary does).
 * Then a second backup after a small change (an UPDATE of 3 rows + CHECKPOINT) is synced by each
 * passive, reusing its copy of the first (reuse_backup = link on both).
 *
 * Every passive reaches the primary with the same ssh (cipher SSH_CIPHER), at LogLevel VERBOSE
 * into a log of its own: ssh's "Transferred: sent N, received M bytes" lines give the bytes that
 * really crossed the network, for every tool alike. Each timed run starts with the page cache
 * dropped (see rsync-bench.ts); the best of --rounds is kept, the order alternating.
 *
 * Options: --scale N (100), --rounds N (2). Needs root (postgres and barman users, an sshd).
 */
import { existsSync, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { as, BARMAN_USER, chownTo, isRoot, LocalCluster, must, PG_USER } from '../src/sandbox/local.js';
import { BARMAN_SCRIPT } from '../src/util/self.js';
import { makeBenchRoot } from './bench-root.js';
import { argNum, buildPgbench, CHANGE_SQL, dropCaches, pipeAs, SSH_CIPHER, timed } from './rsync-bench.js';

const MB = 1024 * 1024;
const BARMAN34 = '/usr/bin/barman';

/** Bytes ssh received, summed over the sessions logged in `file` (then emptied). */
async function takeReceived(file: string): Promise<number> {
  const text = await fs.readFile(file, 'utf8').catch(() => '');
  await fs.writeFile(file, '');
  let total = 0;
  for (const m of text.matchAll(/Transferred: sent \d+, received (\d+) bytes/g)) total += Number(m[1]);
  return total;
}

interface Passive {
  label: string;
  home: string;
  conf: string;
  sshLog: string;
  run: (...a: string[]) => Promise<string>;
}

interface Row {
  times: number[];
  bytes: number[];
  note?: string;
}

export async function geoBench(): Promise<void> {
  const SCALE = argNum('scale', 100);
  const ROUNDS = argNum('rounds', 2);
  console.log(`\nGEO-REDUNDANCY: PASSIVE NODE SYNC (pgbench scale ${SCALE} + random text, best of ${ROUNDS} rounds, sshd on 127.0.0.1, ssh -c ${SSH_CIPHER})`);
  if (!isRoot) {
    console.log('  skipped: needs root (postgres and barman users, a real sshd, drop_caches)');
    return;
  }
  const sys = await import('../test/helpers/system.js');
  const { startPrimarySshd } = await import('../test/helpers/geo.js');
  await sys.ensureBarmanUser();
  const { root, mkdirFor } = await makeBenchRoot('barman-geo-bench-');
  const pgDir = await mkdirFor('pg', PG_USER);
  const primaryHome = await mkdirFor('primary', BARMAN_USER, 0o700);
  const scratch = await mkdirFor('scratch', BARMAN_USER);
  const primaryConf = path.join(root, 'primary.conf');
  const primary = (...a: string[]) => must(BARMAN_USER, process.execPath, [BARMAN_SCRIPT, '-c', primaryConf, ...a]);
  let pg: LocalCluster | null = null;
  let stopSshd: (() => Promise<void>) | null = null;
  const rows = new Map<string, Row>();
  const row = (label: string): Row => {
    let r = rows.get(label);
    if (!r) rows.set(label, (r = { times: [], bytes: [] }));
    return r;
  };
  let backupBytes = 0;
  try {
    pg = await LocalCluster.create(path.join(pgDir, 'data'), pgDir, 'shared_buffers = 256MB\nmax_wal_size = 8GB\nsynchronous_commit = off\nautovacuum = off\n');
    const cluster = pg;
    const tBuild = await timed(() => buildPgbench(cluster, pgDir, SCALE));
    console.log(`  database built in ${tBuild.toFixed(1)} s; primary: barman-ts, backup_method = postgres (pg_basebackup)`);
    await fs.writeFile(
      primaryConf,
      `[barman]\nbarman_home = ${primaryHome}\nbarman_user = ${BARMAN_USER}\nlog_file = ${primaryHome}/barman.log\n\n[pg]\nconninfo = ${cluster.conninfo}\nstreaming_conninfo = ${cluster.conninfo}\nbackup_method = postgres\nstreaming_archiver = on\nslot_name = barman\ncreate_slot = auto\n`,
      { mode: 0o644 },
    );
    // WAL streaming first (cron starts receive-wal): the backups wait for their WAL files.
    for (let i = 0; ; i++) {
      await primary('cron');
      const check = await as(BARMAN_USER, process.execPath, [BARMAN_SCRIPT, '-c', primaryConf, 'check', 'pg']);
      if (/receive-wal running: OK/.test(check.stdout) && /replication slot: OK/.test(check.stdout)) break;
      if (i > 120) throw new Error(`receive-wal did not start: ${check.stdout}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
    // A backup is refused until a first WAL file is archived (as Barman 3.4's check does).
    await primary('switch-wal', '--force', '--archive', '--archive-timeout', '120', 'pg');
    const newest = async () => (await primary('list-backups', '--minimal', 'pg')).trim().split('\n')[0] ?? '';
    await primary('backup', '--wait', '--wait-timeout', '900', '--immediate-checkpoint', 'pg');
    const first = await newest();

    const ssh = await startPrimarySshd(primaryConf, 'barman-ts');
    stopSshd = ssh.stop;
    const cfg = /-F (\S+)/.exec(ssh.sshCommand)?.[1] ?? '';
    const cipherCfg = path.join(path.dirname(cfg), 'ssh_config_geo_bench');
    await fs.writeFile(cipherCfg, `Ciphers ${SSH_CIPHER}\n${await fs.readFile(cfg, 'utf8')}`, { mode: 0o600 });
    chownTo(BARMAN_USER, cipherCfg);
    const logs = await mkdirFor('ssh-logs', BARMAN_USER);
    const passives: Passive[] = [];
    const addPassive = async (label: string, program: 'barman-ts' | 'barman34', extra: string): Promise<Passive> => {
      const dir = await mkdirFor(`passive-${passives.length}`, BARMAN_USER, 0o700);
      const sshLog = path.join(logs, `${passives.length}.log`);
      await fs.writeFile(sshLog, '');
      chownTo(BARMAN_USER, sshLog);
      const conf = path.join(root, `passive-${passives.length}.conf`);
      const sshCommand = `ssh -F ${cipherCfg} -o LogLevel=VERBOSE -E ${sshLog} barman@127.0.0.1`;
      await fs.writeFile(
        conf,
        `[barman]\nbarman_home = ${dir}\nbarman_user = ${BARMAN_USER}\nlog_file = ${dir}/barman.log\n\n[pg]\nprimary_ssh_command = ${sshCommand}\narchiver = on\nreuse_backup = link\n${extra}`,
        { mode: 0o644 },
      );
      const run =
        program === 'barman34'
          ? (...a: string[]) => must(BARMAN_USER, BARMAN34, ['-c', conf, ...a])
          : (...a: string[]) => must(BARMAN_USER, process.execPath, [BARMAN_SCRIPT, '-c', conf, ...a]);
      const p = { label, home: dir, conf, sshLog, run };
      passives.push(p);
      return p;
    };
    await addPassive('barman-ts sync-backup (parallel_jobs 1)', 'barman-ts', '');
    await addPassive('barman-ts sync-backup (parallel_jobs 2)', 'barman-ts', 'parallel_jobs = 2\n');
    if (existsSync(BARMAN34)) await addPassive('Barman 3.4 sync-backup', 'barman34', '');
    else row('Barman 3.4 sync-backup').note = `skipped: ${BARMAN34} not installed`;

    const primaryBackup = (id: string) => path.join(primaryHome, 'pg', 'base', id);
    backupBytes = Number((/^size=(\d+)/m.exec(await fs.readFile(path.join(primaryBackup(first), 'backup.info'), 'utf8')) ?? [])[1] ?? 0);
    for (const p of passives) {
      await p.run('sync-info', '--primary', 'pg');
      await takeReceived(p.sshLog);
    }

    /** One timed step per tool, alternating; the copies are removed between rounds but the last. */
    const syncRound = async (id: string, phase: string, keepLast: boolean) => {
      const floor = `${phase}: tar | ssh | tar + sync (1 stream)`;
      const steps: [string, () => Promise<unknown>, () => Promise<number>, () => Promise<unknown>][] = [
        ...(phase === 'full'
          ? [
              [
                floor,
                async () => {
                  const dest = path.join(scratch, 'tar');
                  await must(BARMAN_USER, 'mkdir', ['-m', '0700', dest]);
                  await pipeAs(BARMAN_USER, ['ssh', '-F', cipherCfg, 'barman@127.0.0.1', 'tar', '-C', primaryBackup(id), '-cf', '-', '.'], ['tar', '-C', dest, '-xf', '-']);
                  await must(BARMAN_USER, 'sync', ['-f', dest]);
                },
                async () => 0,
                () => fs.rm(path.join(scratch, 'tar'), { recursive: true, force: true }),
              ] as [string, () => Promise<unknown>, () => Promise<number>, () => Promise<unknown>],
            ]
          : []),
        ...passives.map((p): [string, () => Promise<unknown>, () => Promise<number>, () => Promise<unknown>] => [
          `${phase}: ${p.label}`,
          () => p.run('sync-backup', 'pg', id),
          () => takeReceived(p.sshLog),
          () => fs.rm(path.join(p.home, 'pg', 'base', id), { recursive: true, force: true }),
        ]),
      ];
      /**
       * Barman 3.4 does not fsync what it copies: its row ends with the data still in the page
       * cache. The same copy made durable (its time + `sync -f` right after) is shown beside it.
       */
      const durable = async (label: string, t: number) => {
        const p = passives.find((x) => label === `${phase}: ${x.label}`);
        if (!p || !label.includes('Barman 3.4')) return;
        const extra = await timed(() => must(BARMAN_USER, 'sync', ['-f', path.join(p.home, 'pg', 'base', id)]));
        row(`${label} + sync`).times.push(t + extra);
        row(`${label} + sync`).bytes.push(0);
      };
      for (let round = 0; round < ROUNDS; round++) {
        const order = round % 2 === 1 ? [...steps].reverse() : steps;
        for (const [label, fn, bytes, cleanup] of order) {
          const r = row(label);
          if (r.note) continue;
          try {
            await dropCaches();
            const t = await timed(fn);
            r.times.push(t);
            r.bytes.push(await bytes());
            await durable(label, t);
          } catch (err) {
            r.note = `FAILED: ${(err as Error).message.split('\n').slice(0, 3).join(' | ')}`;
          }
          if (!(keepLast && round === ROUNDS - 1)) await cleanup().catch(() => undefined);
        }
      }
    };
    await syncRound(first, 'full', true);
    await cluster.psql(CHANGE_SQL);
    await primary('backup', '--wait', '--wait-timeout', '900', '--immediate-checkpoint', 'pg');
    const second = await newest();
    for (const p of passives) {
      await p.run('sync-info', '--primary', 'pg');
      await takeReceived(p.sshLog);
    }
    await syncRound(second, 'second', false);
  } finally {
    await primary('receive-wal', '--stop', 'pg').catch(() => undefined);
    await pg?.stop('immediate').catch(() => undefined);
    await stopSshd?.().catch(() => undefined);
    await fs.rm(root, { recursive: true, force: true }).catch(() => undefined);
  }

  // ---- report --------------------------------------------------------------------------------
  const best = (label: string): { t: number; bytes: number } | undefined => {
    const r = rows.get(label);
    if (!r || r.times.length === 0) return undefined;
    const i = r.times.indexOf(Math.min(...r.times));
    return { t: r.times[i] ?? 0, bytes: r.bytes[i] ?? 0 };
  };
  const mib = (b: number) => `${(b / MB).toFixed(1)} MiB`;
  console.log(`FULL BACKUP SYNC (backup size ${mib(backupBytes)})`);
  const show = (label: string) => {
    const b = best(label);
    if (!b) return console.log(`  ${label.padEnd(52)} ${rows.get(label)?.note ?? 'not run'}`);
    console.log(`  ${label.padEnd(52)} ${b.t.toFixed(2).padStart(8)} s ${(backupBytes / MB / b.t).toFixed(0).padStart(6)} MB/s${b.bytes ? `   ${mib(b.bytes)} received` : ''}`);
  };
  const labels = ['barman-ts sync-backup (parallel_jobs 1)', 'barman-ts sync-backup (parallel_jobs 2)', 'Barman 3.4 sync-backup'];
  show('full: tar | ssh | tar + sync (1 stream)');
  for (const l of labels) show(`full: ${l}`);
  show(`full: ${labels[2]} + sync`);
  console.log('SECOND BACKUP SYNC (after an UPDATE of 3 rows of pgbench_branches + CHECKPOINT; reuse_backup = link)');
  for (const l of labels) show(`second: ${l}`);
  show(`second: ${labels[2]} + sync`);
  console.log('TARGETS (ratios in this run)');
  const target = (what: string, value: number | undefined, limit: number, pct = false) => {
    if (value === undefined || !Number.isFinite(value)) return console.log(`  ${what.padEnd(52)} n/a`);
    const shown = pct ? `${(value * 100).toFixed(2)}%` : `${value.toFixed(2)}x`;
    const goal = pct ? `< ${(limit * 100).toFixed(0)}%` : `<= ${limit.toFixed(2)}x`;
    console.log(`  ${what.padEnd(52)} ${shown.padStart(7)}  (target ${goal})  ${(pct ? value < limit : value <= limit) ? 'PASS' : 'MISS'}`);
  };
  const floor = best('full: tar | ssh | tar + sync (1 stream)')?.t;
  const ours = best(`full: ${labels[0]}`);
  const ours2 = best(`full: ${labels[1]}`);
  const theirs = best(`full: ${labels[2]}`);
  const ratio = (a?: number, b?: number) => (a !== undefined && b !== undefined ? a / b : undefined);
  target('full sync (parallel_jobs 1) / tar | ssh | tar', ratio(ours?.t, floor), 1.2);
  target('full sync (parallel_jobs 2) / tar | ssh | tar', ratio(ours2?.t, floor), 1.2);
  target('full sync (parallel_jobs 1) / Barman 3.4 sync', ratio(ours?.t, theirs?.t), 1);
  // Ours is on disk when it ends (fsync); Barman's is not: the same durability, compared.
  const theirsDurable = best(`full: ${labels[2]} + sync`);
  target('full sync (parallel_jobs 1) / Barman 3.4 sync + sync', ratio(ours?.t, theirsDurable?.t), 1);
  const secondOurs = best(`second: ${labels[0]}`);
  target('second sync bytes / full sync bytes (parallel_jobs 1)', ours?.bytes ? (secondOurs?.bytes ?? NaN) / ours.bytes : undefined, 0.1, true);
  const secondTheirs = best(`second: ${labels[2]}`);
  if (theirs?.bytes && secondTheirs) console.log(`  (Barman 3.4: second sync moved ${((secondTheirs.bytes / theirs.bytes) * 100).toFixed(2)}% of the bytes of the first)`);
}
