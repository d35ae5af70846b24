/**
 * WAL shipping speed (`npm run bench -- --wal-only`, or the last section of `npm run bench`).
 *
 * Builds >= 200 real 16 MiB WAL segments (pgbench tables plus rows of md5 text on a throw-away
 * cluster, collected by a `cp` archive_command), then drives each archive_command candidate the
 * way PostgreSQL's archiver does — one shell command per segment, oldest `.ready` first, and
 * `.ready` → `.done` on success — on a copy of pg_wal (hard links) where every segment is ready:
 *   cp + sync                     the floor: a local copy
 *   rsync over ssh, one per call  one segment per SSH session (stands in for Barman 3.4)
 *   barman-wal-archive            ours, default options (push-ahead of ready segments)
 *   barman-wal-archive --batch 1  ours, no push-ahead
 *   pgbackrest archive-push       pgBackRest 2.45, archive-async=y, process-max=2, local repo
 * then PostgreSQL itself running our archive_command under a write-heavy pgbench for ~60 s,
 * sampling the pg_wal `.ready` backlog every second. Restore side, each segment requested in
 * order as a restore_command would: barman-wal-restore without prefetch and with -p 32, and
 * pgbackrest archive-get. SSH goes through a real sshd on 127.0.0.1 (test/helpers/sshd.ts).
 *
 * Options: --wal-segments N (200), --wal-pgbench-seconds S (60), --wal-ssh-cipher C (ssh's
 * default; e.g. aes128-gcm@openssh.com — used by every ssh-based row alike, ours and rsync).
 * Each row also says how many calls were answered without ssh (push-ahead marker or prefetch
 * spool present before the call): a prefetch that silently does not work shows up there.
 * Must run as root (users postgres and barman, sshd). Installs Debian's pgbackrest if missing.
 */
import { existsSync, promises as fs, readdirSync } from 'node:fs';
import { loadavg } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { spawn } from 'node:child_process';

const SEG_SIZE = 16 * 1024 * 1024;
const SEGMENT_RE = /^[0-9A-F]{24}$/;

// ---------------------------------------------------------------------------------------------
// Driver: runs as the postgres user (started with runuser), does what PostgreSQL's archiver or
// startup process does with archive_command / restore_command, and prints one JSON line.

interface DriveSpec {
  mode: 'archive' | 'restore';
  /** Shell command with %p and %f, as in postgresql.conf. */
  command: string;
  /** archive: the fake data directory (cwd, holds pg_wal/archive_status). restore: cwd too. */
  dataDir: string;
  /** restore: the WAL names to fetch, in order, into <dataDir>/pg_wal/RECOVERYXLOG-like targets. */
  names?: string[];
  /** restore: where %p points (a directory; each file is written as <destDir>/<name>). */
  destDir?: string;
  /**
   * Where a call finds its segment already done (barman-wal-archive: push-ahead markers;
   * barman-wal-restore: the prefetch spool). A `<hitDir>/<name>` present before a call counts
   * as a hit: the call is served without ssh. Shows whether push-ahead/prefetch really works.
   */
  hitDir?: string;
}

interface DriveResult {
  count: number;
  seconds: number;
  /** Calls that found their segment in hitDir (see DriveSpec.hitDir). */
  hits?: number;
  /** 1-minute load average when the run ended (other work on the machine skews the numbers). */
  load?: number;
  error?: string;
}

function runShellCommand(command: string, cwd: string): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    // PostgreSQL runs archive_command and restore_command through /bin/sh -c as well.
    const child = spawn('/bin/sh', ['-c', command], { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
    child.on('close', (code) => resolve({ code: code ?? -1, stderr }));
    child.on('error', (err) => resolve({ code: -1, stderr: err.message }));
  });
}

/** PostgreSQL's %p/%f substitution (%% is a literal %). */
function expand(command: string, p: string, f: string): string {
  return command.replace(/%[pf%]/g, (m) => (m === '%p' ? p : m === '%f' ? f : '%'));
}

async function drive(spec: DriveSpec): Promise<DriveResult> {
  const started = process.hrtime.bigint();
  let count = 0;
  let hits = 0;
  const isHit = (name: string) => (spec.hitDir ? existsSync(path.join(spec.hitDir, name)) : false);
  const elapsed = () => Number(process.hrtime.bigint() - started) / 1e9;
  if (spec.mode === 'archive') {
    const status = path.join(spec.dataDir, 'pg_wal', 'archive_status');
    for (;;) {
      // As pgarch.c: rescan archive_status and take the oldest .ready (names sort by age).
      const ready = readdirSync(status).filter((n) => n.endsWith('.ready')).sort();
      const next = ready[0];
      if (!next) break;
      const name = next.slice(0, -'.ready'.length);
      if (isHit(name)) hits++;
      const res = await runShellCommand(expand(spec.command, path.join('pg_wal', name), name), spec.dataDir);
      if (res.code !== 0) return { count, seconds: elapsed(), hits, error: `archive of ${name} failed (exit ${res.code}): ${res.stderr.trim().split('\n').slice(-3).join(' | ')}` };
      await fs.rename(path.join(status, next), path.join(status, `${name}.done`));
      count++;
    }
  } else {
    for (const name of spec.names ?? []) {
      const dest = path.join(spec.destDir ?? '', name);
      if (isHit(name)) hits++;
      const res = await runShellCommand(expand(spec.command, dest, name), spec.dataDir);
      if (res.code !== 0) return { count, seconds: elapsed(), hits, error: `restore of ${name} failed (exit ${res.code}): ${res.stderr.trim().split('\n').slice(-3).join(' | ')}` };
      count++;
    }
  }
  return { count, seconds: elapsed(), hits };
}

// ---------------------------------------------------------------------------------------------
// The bench (as root)

interface Row {
  label: string;
  result?: DriveResult;
  note?: string;
}

const argNum = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : def;
  return Number.isFinite(v) && v > 0 ? v : def;
};

/** Shell-quote one word for the archive_command strings built here from our own temp paths. */
function sq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export async function walBench(): Promise<void> {
  // Test helpers are loaded here, not at the top, so that the driver process stays light.
  const { startSshd } = await import('../test/helpers/sshd.js');
  const { PgCluster, cleanupAll } = await import('../test/helpers/pg-cluster.js');
  const sys = await import('../test/helpers/system.js');
  const { run } = await import('../src/util/proc.js');
  const { BARMAN_SCRIPT } = await import('../src/util/self.js');
  const { BARMAN_USER, POSTGRES_USER } = sys;

  const SEGMENTS = argNum('wal-segments', 200);
  const PGBENCH_SECONDS = argNum('wal-pgbench-seconds', 60);
  const cipherAt = process.argv.indexOf('--wal-ssh-cipher');
  const CIPHER = cipherAt >= 0 ? process.argv[cipherAt + 1] : undefined;
  if (CIPHER !== undefined && !/^[A-Za-z0-9@.+-]+$/.test(CIPHER)) throw new Error(`invalid --wal-ssh-cipher '${CIPHER}'`);
  const repo = path.dirname(path.dirname(BARMAN_SCRIPT));
  const walArchive = path.join(repo, 'bin', 'barman-wal-archive');
  const walRestore = path.join(repo, 'bin', 'barman-wal-restore');
  const selfScript = path.join(repo, 'dist', 'bench', 'wal-bench.js');

  console.log(`\nWAL SHIPPING (${SEGMENTS} real 16 MiB segments, sshd on 127.0.0.1, ssh cipher: ${CIPHER ?? "ssh's default"})`);
  if (!sys.isRoot()) {
    console.log('  skipped: needs root (postgres and barman users, a real sshd)');
    return;
  }
  await sys.ensureBarmanUser();
  const root = await sys.makeTempDir('walbench-', { mode: 0o755 });
  const sshd = await startSshd();
  const rows: Row[] = [];
  const restoreRows: Row[] = [];
  let backlogPeak: number | undefined;
  let backlogNote = '';
  let sshdLog = '';
  try {
    const baseSsh = await sshd.clientConfigFor(POSTGRES_USER, [BARMAN_USER]);
    // The same cipher for every ssh row: ssh keeps the first value it reads, so it goes on top.
    let pgSsh = baseSsh;
    if (CIPHER) {
      pgSsh = path.join(path.dirname(baseSsh), 'ssh_config_bench');
      await fs.writeFile(pgSsh, `Ciphers ${CIPHER}\n${await fs.readFile(baseSsh, 'utf8')}`, { mode: 0o600 });
      await sys.chownR(pgSsh, POSTGRES_USER);
    }
    const asPg = (cmd: string, args: string[]) => sys.runAs(POSTGRES_USER, cmd, args, { check: true });
    const asBarman = (cmd: string, args: string[]) => sys.runAs(BARMAN_USER, cmd, args, { check: true });
    const pgDir = async (name: string, mode = 0o755) => {
      const d = path.join(root, name);
      await fs.mkdir(d, { mode });
      await fs.chmod(d, mode);
      await sys.chownR(d, POSTGRES_USER);
      return d;
    };
    const runDriver = async (spec: DriveSpec): Promise<DriveResult> => {
      const r = await sys.runAs(POSTGRES_USER, process.execPath, [selfScript, '--wal-drive', JSON.stringify(spec)]);
      const line = r.stdout.trim().split('\n').pop() ?? '';
      try {
        return { ...(JSON.parse(line) as DriveResult), load: loadavg()[0] };
      } catch {
        return { count: 0, seconds: 0, error: `driver failed (exit ${r.code}): ${r.stderr.trim().slice(-500)}` };
      }
    };

    // --- real WAL ----------------------------------------------------------------------------
    const collected = await pgDir('collected');
    const pg = await PgCluster.create({
      archiveMode: true,
      archiveCommand: `cp %p ${collected}/%f`,
      extraConf: { max_wal_size: '4GB', checkpoint_timeout: '30min', shared_buffers: '128MB', synchronous_commit: 'off' },
    });
    const tGen = Date.now();
    await pg.pgbench(['-i', '-q', '-s', '20']);
    await pg.psql('CREATE TABLE filler (id bigint, body text)');
    const countSegments = () => readdirSync(collected).filter((n) => SEGMENT_RE.test(n)).length;
    // md5 text: compressible like real rows, not zeros. Stop a few past the goal (timeline-ordered).
    while (countSegments() < SEGMENTS + 2) {
      await pg.psql("INSERT INTO filler SELECT g, md5(random()::text) || md5(random()::text) || md5(g::text) FROM generate_series(1, 400000) g; UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 50 = 0;");
      const last = await pg.switchWal();
      await pg.waitArchived(last, 600_000);
    }
    const segments = readdirSync(collected).filter((n) => SEGMENT_RE.test(n)).sort().slice(0, SEGMENTS);
    console.log(`  ${segments.length} segments generated in ${((Date.now() - tGen) / 1000).toFixed(0)} s`);

    // A fake data directory per run: hard links of the segments in pg_wal, all of them .ready,
    // plus what pgBackRest reads (PG_VERSION, global/pg_control).
    let fakeCount = 0;
    const fakeDataDir = async (count = segments.length): Promise<string> => {
      const d = await pgDir(`data-${++fakeCount}`, 0o700);
      const wal = path.join(d, 'pg_wal');
      await fs.mkdir(path.join(wal, 'archive_status'), { recursive: true });
      await fs.mkdir(path.join(d, 'global'));
      await fs.copyFile(path.join(pg.dataDir, 'PG_VERSION'), path.join(d, 'PG_VERSION'));
      await fs.copyFile(path.join(pg.dataDir, 'global', 'pg_control'), path.join(d, 'global', 'pg_control'));
      for (const n of segments.slice(0, count)) {
        await fs.link(path.join(collected, n), path.join(wal, n));
        await fs.writeFile(path.join(wal, 'archive_status', `${n}.ready`), '');
      }
      await sys.chownR(d, POSTGRES_USER);
      return d;
    };

    // --- barman server ---------------------------------------------------------------------
    const home = path.join(root, 'barman-home');
    await fs.mkdir(home, { mode: 0o700 });
    await sys.chownR(home, BARMAN_USER);
    const barmanConf = path.join(root, 'barman.conf');
    await fs.writeFile(
      barmanConf,
      `[barman]\nbarman_home = ${home}\nbarman_user = ${BARMAN_USER}\nlog_file = ${home}/barman.log\nlog_level = INFO\n\n[bench]\nconninfo = ${pg.conninfo}\nbackup_method = postgres\narchiver = on\nstreaming_archiver = off\n`,
      { mode: 0o644 },
    );
    const barman = (...a: string[]) => asBarman(process.execPath, [BARMAN_SCRIPT, '-c', barmanConf, ...a]);
    await sys.runAs(BARMAN_USER, process.execPath, [BARMAN_SCRIPT, '-c', barmanConf, 'check', 'bench']); // creates the directories
    const incoming = path.join(home, 'bench', 'incoming');
    const clearIncoming = async () => {
      for (const n of await fs.readdir(incoming)) await fs.rm(path.join(incoming, n), { force: true });
    };

    const clientProblem = async (launcher: string): Promise<string | null> => {
      if (!existsSync(launcher)) return `${path.basename(launcher)} not found`;
      const r = await sys.runAs(POSTGRES_USER, launcher, ['--help']);
      if (r.code !== 0 || /not available/.test(r.stderr + r.stdout)) return `${path.basename(launcher)} is not ready (${(r.stderr || r.stdout).trim().split('\n')[0]})`;
      return null;
    };

    // --- archive side ----------------------------------------------------------------------
    const cpDest = await pgDir('cp-dest');
    rows.push({ label: 'cp + sync (local)', result: await runDriver({ mode: 'archive', dataDir: await fakeDataDir(), command: `cp %p ${sq(cpDest)}/%f && sync ${sq(cpDest)}/%f` }) });
    await fs.rm(cpDest, { recursive: true, force: true });

    rows.push({
      label: 'rsync over ssh, 1 per call',
      result: await runDriver({ mode: 'archive', dataDir: await fakeDataDir(), command: `rsync -a -e ${sq(`ssh -F ${pgSsh}`)} %p ${BARMAN_USER}@127.0.0.1:${sq(incoming)}/%f` }),
    });
    await clearIncoming();

    const archiveProblem = await clientProblem(walArchive);
    const spool = await pgDir('archive-spool', 0o700);
    const ours = (extra: string) =>
      `${sq(walArchive)} -c ${sq(barmanConf)} --ssh-config ${sq(pgSsh)} --spool-dir ${sq(spool)}${extra} 127.0.0.1 bench %p`;
    if (archiveProblem) {
      rows.push({ label: 'barman-wal-archive', note: `skipped: ${archiveProblem}` });
      rows.push({ label: 'barman-wal-archive --batch 1', note: 'skipped' });
    } else {
      const markers = path.join(spool, 'bench');
      // Every row starts from an empty server (a segment already in wals/ is compared, not
      // written); the last one's segments (default options) are archived into wals/ for the
      // restore side.
      const variants = [
        ['barman-wal-archive --batch 1', ' --batch 1'],
        ['barman-wal-archive --lz4', ' --lz4'],
        ['barman-wal-archive --sessions 2', ' --sessions 2'],
        ['barman-wal-archive', ''],
      ] as const;
      for (const [label, extra] of variants) {
        // One session per segment is slow and steady: a quarter of the segments tells its rate.
        const dataDir = await fakeDataDir(extra === ' --batch 1' ? Math.ceil(segments.length / 4) : segments.length);
        rows.push({ label, result: await runDriver({ mode: 'archive', dataDir, command: ours(extra), hitDir: markers }) });
        if (extra !== '') await clearIncoming();
        // Hard links share one inode: a marker left by one row must not answer the next one.
        await fs.rm(markers, { recursive: true, force: true });
      }
      await barman('archive-wal', 'bench');
    }

    // pgBackRest: a stanza on the live cluster, then archive-push from the fake data directory.
    let pgbr: string | null = null;
    let pgbrProblem: string | null = null;
    const pgbrConf = path.join(root, 'pgbackrest.conf');
    try {
      if (!existsSync('/usr/bin/pgbackrest')) {
        console.log('  installing Debian pgbackrest for the comparison (apt-get install -y pgbackrest)');
        const inst = await run('apt-get', ['install', '-y', '-q', 'pgbackrest'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
        if (inst.code !== 0) throw new Error(`apt-get install pgbackrest failed: ${inst.stderr.trim().split('\n').slice(-1)[0]}`);
      }
      pgbr = '/usr/bin/pgbackrest';
      const pgbrDir = await pgDir('pgbackrest', 0o700);
      for (const sub of ['repo', 'spool', 'log', 'lock']) await fs.mkdir(path.join(pgbrDir, sub), { mode: 0o700 });
      await sys.chownR(pgbrDir, POSTGRES_USER);
      await fs.writeFile(
        pgbrConf,
        [
          '[global]',
          `repo1-path=${pgbrDir}/repo`,
          `spool-path=${pgbrDir}/spool`,
          `log-path=${pgbrDir}/log`,
          `lock-path=${pgbrDir}/lock`,
          'log-level-console=warn',
          'log-level-file=off',
          'archive-async=y',
          'process-max=2',
          'compress-type=none',
          'start-fast=y',
          '',
          '[bench]',
          `pg1-path=${pg.dataDir}`,
          `pg1-port=${pg.port}`,
          `pg1-socket-path=${pg.socketDir}`,
          '',
        ].join('\n'),
        { mode: 0o644 },
      );
      await asPg(pgbr, [`--config=${pgbrConf}`, '--stanza=bench', 'stanza-create']);
    } catch (err) {
      pgbrProblem = (err as Error).message.split('\n').slice(0, 2).join(' ');
    }
    const pgbrFake = pgbr && !pgbrProblem ? await fakeDataDir() : '';
    if (pgbr && !pgbrProblem) {
      rows.push({
        label: 'pgbackrest archive-push async',
        result: await runDriver({ mode: 'archive', dataDir: pgbrFake, command: `${pgbr} --config=${sq(pgbrConf)} --stanza=bench --pg1-path=${sq(pgbrFake)} archive-push %p` }),
      });
    } else rows.push({ label: 'pgbackrest archive-push async', note: `skipped: ${pgbrProblem ?? 'pgbackrest missing'}` });

    // --- PostgreSQL driving our archive_command under load -------------------------------------
    if (!archiveProblem) {
      await pg.psql(`ALTER SYSTEM SET archive_command = ${quote(ours(''))}; SELECT pg_reload_conf();`);
      await pg.psql('CREATE TABLE IF NOT EXISTS heavy (id bigint, body text)');
      const script = path.join(root, 'heavy.sql');
      await fs.writeFile(script, "INSERT INTO heavy SELECT g, md5(random()::text) || md5(random()::text) FROM generate_series(1, 2000) g;\n", { mode: 0o644 });
      const status = path.join(pg.dataDir, 'pg_wal', 'archive_status');
      const lsnBefore = await pg.psql('SELECT pg_current_wal_lsn()');
      let peak = 0;
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          const ready = readdirSync(status).filter((n) => n.endsWith('.ready')).length;
          peak = Math.max(peak, ready);
          await sys.sleep(1000);
        }
      })();
      const t0 = Date.now();
      await pg.pgbench(['-n', '-c', '2', '-j', '2', '-T', String(PGBENCH_SECONDS), '-f', script]);
      const loadSeconds = (Date.now() - t0) / 1000;
      const walBytes = Number(await pg.psql(`SELECT pg_current_wal_lsn() - '${lsnBefore}'::pg_lsn`));
      const last = await pg.switchWal();
      const tDrain = Date.now();
      await pg.waitArchived(last, 600_000).catch((err: Error) => (backlogNote = ` (did not drain: ${err.message.split('\n')[0]})`));
      sampling = false;
      await sampler;
      backlogPeak = peak;
      backlogNote = `${(walBytes / SEG_SIZE).toFixed(0)} segments in ${loadSeconds.toFixed(0)} s (${(walBytes / 1048576 / loadSeconds).toFixed(1)} MiB/s), drained ${((Date.now() - tDrain) / 1000).toFixed(1)} s after the run${backlogNote}`;
      await pg.psql("ALTER SYSTEM SET archive_command = '/bin/true'; SELECT pg_reload_conf();");
    }

    // --- restore side -----------------------------------------------------------------------
    const restoreProblem = archiveProblem ?? (await clientProblem(walRestore));
    const restoreRun = async (label: string, command: (dest: string) => string, hitDir?: string) => {
      const dest = await pgDir(`restore-${restoreRows.length}`, 0o700);
      const result = await runDriver({ mode: 'restore', dataDir: dest, destDir: dest, names: segments, command: command(dest), hitDir });
      // Spot check: the restored bytes are the originals.
      if (!result.error) {
        for (const n of [segments[0], segments[segments.length - 1]]) {
          if (!n) continue;
          const [a, b] = await Promise.all([fs.readFile(path.join(dest, n)), fs.readFile(path.join(collected, n))]);
          if (!a.equals(b)) result.error = `${n} restored with different content`;
        }
      }
      restoreRows.push({ label, result });
      await fs.rm(dest, { recursive: true, force: true });
    };
    if (restoreProblem) {
      restoreRows.push({ label: 'barman-wal-restore', note: `skipped: ${restoreProblem}` });
    } else {
      // The spool as a restore_command user would have it: the postgres user's own, 0700. (The
      // client trusts nothing else; a spool it cannot create or own silently meant no prefetch.)
      const rspool = await pgDir('restore-spool', 0o700);
      const ourRestore = (extra: string) =>
        `${sq(walRestore)} -c ${sq(barmanConf)} --ssh-config ${sq(pgSsh)} --spool-dir ${sq(rspool)}${extra} 127.0.0.1 bench %f %p`;
      await restoreRun('barman-wal-restore (no prefetch)', () => ourRestore(''), rspool);
      await restoreRun('barman-wal-restore -p 32', () => ourRestore(' -p 32'), rspool);
    }
    if (pgbr && !pgbrProblem) {
      await restoreRun('pgbackrest archive-get async', () => `${pgbr} --config=${sq(pgbrConf)} --stanza=bench --pg1-path=${sq(pgbrFake)} archive-get %f %p`);
      await restoreRun('pgbackrest archive-get sync', () => `${pgbr} --config=${sq(pgbrConf)} --stanza=bench --pg1-path=${sq(pgbrFake)} --no-archive-async archive-get %f %p`);
    } else restoreRows.push({ label: 'pgbackrest archive-get', note: `skipped: ${pgbrProblem ?? 'pgbackrest missing'}` });
  } finally {
    sshdLog = sshd.log();
    await cleanupAll().catch(() => undefined);
    await sshd.stop().catch(() => undefined);
    await fs.rm(root, { recursive: true, force: true }).catch(() => undefined);
  }

  // --- report --------------------------------------------------------------------------------
  const line = (r: Row) => {
    if (!r.result) return `  ${r.label.padEnd(34)} ${r.note ?? ''}`;
    const { count, seconds, error, hits } = r.result;
    if (error) return `  ${r.label.padEnd(34)} FAILED after ${count} segments: ${error}`;
    const ms = (seconds * 1000) / count;
    const served = hits === undefined || count === 0 ? '' : `  ${hits}/${count} calls without ssh`;
    const load = r.result.load === undefined ? '' : `  (load ${r.result.load.toFixed(1)})`;
    return `  ${r.label.padEnd(34)} ${ms.toFixed(1).padStart(8)} ms/seg ${(count / seconds).toFixed(1).padStart(8)} seg/s ${(((count / seconds) * SEG_SIZE) / 1e6).toFixed(0).padStart(5)} MB/s${served}${load}`;
  };
  console.log('ARCHIVE (archive_command driven like PostgreSQL, all segments .ready)');
  rows.forEach((r) => console.log(line(r)));
  console.log('RESTORE (restore_command called per segment, in order)');
  restoreRows.forEach((r) => console.log(line(r)));
  // A failed client run is easier to explain with what sshd saw (refused sessions and the like).
  if ([...rows, ...restoreRows].some((r) => r.result?.error)) {
    const tail = sshdLog.split('\n').filter((l) => !/Accepted publickey|session opened|Disconnected from|Received disconnect|Close session|Starting session|Connection from/.test(l));
    console.log(`  (sshd log, last lines: ${tail.slice(-8).join(' | ') || 'nothing unusual'})`);
  }
  if (backlogPeak !== undefined) console.log(`PostgreSQL + barman-wal-archive under pgbench: peak .ready backlog ${backlogPeak} — ${backlogNote}`);

  const rate = (rs: Row[], label: string) => {
    const r = rs.find((x) => x.label === label)?.result;
    return r && !r.error && r.count > 0 ? r.count / r.seconds : undefined;
  };
  const ours = rate(rows, 'barman-wal-archive');
  const pgbrRate = rate(rows, 'pgbackrest archive-push async');
  const rsync = rate(rows, 'rsync over ssh, 1 per call');
  const prefetch = rate(restoreRows, 'barman-wal-restore -p 32');
  const verdict = (ok: boolean) => (ok ? 'OK' : 'MISSED');
  console.log('TARGETS');
  if (ours && pgbrRate) console.log(`  ours / pgBackRest async archive-push   ${(ours / pgbrRate).toFixed(2)}x   (target >= 1)   ${verdict(ours >= pgbrRate)}`);
  if (ours && rsync) console.log(`  ours / rsync one-segment-per-session   ${(ours / rsync).toFixed(1)}x   (target >= 20)  ${verdict(ours >= 20 * rsync)}`);
  if (prefetch) console.log(`  restore with -p 32                     ${(1000 / prefetch).toFixed(1)} ms/seg   (target < 40)  ${verdict(1000 / prefetch < 40)}`);
  if (backlogPeak !== undefined) console.log(`  peak .ready backlog under pgbench      ${backlogPeak}   (target < 64)  ${verdict(backlogPeak < 64)}`);
}

/** SQL string literal. */
function quote(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

// Driver entry point: `node dist/bench/wal-bench.js --wal-drive '<json>'` (as the postgres user).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const i = process.argv.indexOf('--wal-drive');
  if (i >= 0) {
    drive(JSON.parse(process.argv[i + 1] ?? '{}') as DriveSpec)
      .then((r) => process.stdout.write(`${JSON.stringify(r)}\n`))
      .catch((err: unknown) => {
        process.stdout.write(`${JSON.stringify({ count: 0, seconds: 0, error: String(err) })}\n`);
      });
  } else {
    walBench().catch((err: unknown) => {
      console.error(`wal bench failed: ${err instanceof Error ? err.message : String(err)}`);
      process.exitCode = 1;
    });
  }
}
