/**
 * WAL shipping speed (`npm run bench -- --wal-only`, or the last section of `npm run bench`).
 *
 * Builds >= 200 real 16 MiB WAL segments (pgbench tables plus rows of md5 text on a throw-away
 * cluster, collected by a `cp` archive_command), then drives each archive_command candidate the
 * way PostgreSQL's archiver does — one shell command per segment, oldest `.ready` first, and
 * `.ready` → `.done` on success — on a copy of pg_wal (hard links) where every segment is ready:
 *   cp + sync                          the floor: a local copy
 *   rsync over ssh, one per call       one segment per SSH session (floor reference)
 *   Barman 3.4 barman-wal-archive      the real one (Debian's Python package), one per call,
 *                                      against Python `barman put-wal` (bench/barman34.ts)
 *   barman-wal-archive                 ours, default options (push-ahead of ready segments)
 *   barman-wal-archive --zstd --compression-level low   ours, compressed (server `benchz`)
 *   barman-wal-archive --batch 1       ours, no push-ahead
 *   pgbackrest archive-push            pgBackRest 2.45, archive-async=y, process-max=2,
 *                                      compress-type=none and zst level 1 (like for like), with
 *                                      the repository local, and on the "backup host" over ssh
 *                                      (repo1-host=127.0.0.1, same ssh config and cipher as ours)
 *   floors                             one pipeline for all segments, no files, no checksums:
 *                                      `cat | ssh 'cat >/dev/null'`, with `zstd -1 -T2` between
 * then PostgreSQL itself running our archive_command under a write-heavy pgbench for ~60 s,
 * sampling the pg_wal `.ready` backlog every second. Restore side, each segment requested in
 * order as a restore_command would: barman-wal-restore with -p 0, without -p (its default
 * prefetch) and with -p 32 from the
 * plain archive (`bench`) and -p 32 from the zstd one (`benchz`), Barman 3.4's barman-wal-restore
 * without prefetch and with -p 32 from the Python server's archive, pgbackrest archive-get
 * (none and zst; local repository async and sync, repository over ssh async), and the floors
 * `ssh 'cat archived files' [| zstd -d] | split -b 16M`. The TARGETS lines show each floor beside
 * its target: a target below the floor is out of reach of any ssh-based client on this machine.
 * SSH goes through real sshds on 127.0.0.1 (test/helpers/sshd.ts).
 *
 * Options: --wal-segments N (200), --wal-pgbench-seconds S (60), --wal-ssh-cipher C
 * (aes128-gcm@openssh.com, as the rsync bench — used by every ssh-based row alike: ours, rsync
 * and Barman 3.4). Each row also says how many calls found their segment done before they
 * started (push-ahead marker, or file in the prefetch spool): a prefetch that silently does not
 * work shows up there. (A restore call that waits in sh for a file the background prefetch is
 * fetching does not count, though it starts no ssh either.) A row whose command fails (e.g. an
 * option that does not exist yet) says FAILED with the reason and the bench goes on. Must run as root (users postgres and barman, sshd).
 * Installs Debian's pgbackrest, barman and barman-cli if missing (rows skipped with a note if
 * that fails).
 */
import { existsSync, promises as fs, readdirSync } from 'node:fs';
import { loadavg } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { spawn } from 'node:child_process';
import { setupBarman34, type Barman34 } from './barman34.js';

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
   * as a hit: the call is served at once. Shows whether push-ahead/prefetch really works.
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
      if (res.code !== 0) return { count, seconds: elapsed(), hits: spec.hitDir ? hits : undefined, error: `archive of ${name} failed (exit ${res.code}): ${res.stderr.trim().split('\n').slice(-3).join(' | ')}` };
      await fs.rename(path.join(status, next), path.join(status, `${name}.done`));
      count++;
    }
  } else {
    for (const name of spec.names ?? []) {
      const dest = path.join(spec.destDir ?? '', name);
      if (isHit(name)) hits++;
      const res = await runShellCommand(expand(spec.command, dest, name), spec.dataDir);
      if (res.code !== 0) return { count, seconds: elapsed(), hits: spec.hitDir ? hits : undefined, error: `restore of ${name} failed (exit ${res.code}): ${res.stderr.trim().split('\n').slice(-3).join(' | ')}` };
      count++;
    }
  }
  return { count, seconds: elapsed(), hits: spec.hitDir ? hits : undefined };
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

const PGBR_KINDS = ['none', 'zst'] as const;
type PgbrKind = (typeof PGBR_KINDS)[number];

/** Row labels the targets are computed from (one place, so a renamed row cannot drop a target). */
const L = {
  rsync: 'rsync over ssh, 1 per call',
  b34Archive: 'Barman 3.4 barman-wal-archive, 1 per call',
  ours: 'barman-wal-archive',
  oursZstd: 'barman-wal-archive --zstd --compression-level low',
  pgbrPush: (k: PgbrKind) => `pgbackrest archive-push async, ${k === 'none' ? 'compress-type=none' : 'zst level 1'}`,
  oursRestore: 'barman-wal-restore -p 32',
  oursRestoreZstd: 'barman-wal-restore -p 32 (zstd archive)',
  b34Restore: 'Barman 3.4 barman-wal-restore (no prefetch)',
  b34RestoreP: 'Barman 3.4 barman-wal-restore -p 32',
  pgbrGet: (k: PgbrKind, mode: 'async' | 'sync') => `pgbackrest archive-get ${mode}, ${k === 'none' ? 'compress-type=none' : 'zst level 1'}`,
  // pgBackRest with its repository on the backup host, reached over SSH as ours is: same transport.
  pgbrPushSsh: (k: PgbrKind) => `pgbackrest archive-push async, ${k === 'none' ? 'none' : 'zst level 1'}, repo over ssh`,
  pgbrGetSsh: (k: PgbrKind) => `pgbackrest archive-get async, ${k === 'none' ? 'none' : 'zst level 1'}, repo over ssh`,
  // Transport floors: one pipeline for all segments, no files written, no checksums, no fsync.
  floorPush: (k: PgbrKind) => `floor: cat segments${k === 'none' ? '' : ' | zstd -1 -T2'} | ssh 'cat >/dev/null'`,
  floorGet: (k: PgbrKind) => `floor: ssh 'cat ${k === 'none' ? 'plain' : 'zstd'} archive'${k === 'none' ? '' : ' | zstd -d'} | split -b 16M`,
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
  // The rsync bench's cipher (bench/rsync-bench.ts SSH_CIPHER): AES-GCM is the cheapest one on
  // CPUs with AES-NI, and every ssh-based row uses the same one so that they compare.
  const CIPHER = cipherAt >= 0 ? (process.argv[cipherAt + 1] ?? '') : 'aes128-gcm@openssh.com';
  if (!/^[A-Za-z0-9@.+-]+$/.test(CIPHER)) throw new Error(`invalid --wal-ssh-cipher '${CIPHER}'`);
  const repo = path.dirname(path.dirname(BARMAN_SCRIPT));
  const walArchive = path.join(repo, 'bin', 'barman-wal-archive');
  const walRestore = path.join(repo, 'bin', 'barman-wal-restore');
  const selfScript = path.join(repo, 'dist', 'bench', 'wal-bench.js');

  console.log(`\nWAL SHIPPING (${SEGMENTS} real 16 MiB segments, sshd on 127.0.0.1, ssh cipher: ${CIPHER})`);
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
  let b34Log = '';
  let b34: Barman34 | null = null;
  let b34Problem: string | null = null;
  /** Our servers whose `barman archive-wal` failed (their restore rows are skipped), with why. */
  const archiveWalProblems = new Map<string, string>();
  const pgbrRepos: Array<{ kind: PgbrKind; remote: boolean; conf: string; fake: string }> = [];
  try {
    const baseSsh = await sshd.clientConfigFor(POSTGRES_USER, [BARMAN_USER]);
    // The same cipher for every ssh row: ssh keeps the first value it reads, so it goes on top.
    const pgSsh = path.join(path.dirname(baseSsh), 'ssh_config_bench');
    await fs.writeFile(pgSsh, `Ciphers ${CIPHER}\n${await fs.readFile(baseSsh, 'utf8')}`, { mode: 0o600 });
    await sys.chownR(pgSsh, POSTGRES_USER);
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
    const quarter = Math.ceil(segments.length / 4);
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

    // --- barman servers ----------------------------------------------------------------------
    // `bench` receives the plain segments and `benchz` the zstd-compressed ones, so that the
    // restore side reads both kinds of archive.
    const home = path.join(root, 'barman-home');
    await fs.mkdir(home, { mode: 0o700 });
    await sys.chownR(home, BARMAN_USER);
    const barmanConf = path.join(root, 'barman.conf');
    const serverSection = (name: string) => `[${name}]\nconninfo = ${pg.conninfo}\nbackup_method = postgres\narchiver = on\nstreaming_archiver = off\n`;
    await fs.writeFile(
      barmanConf,
      `[barman]\nbarman_home = ${home}\nbarman_user = ${BARMAN_USER}\nlog_file = ${home}/barman.log\nlog_level = INFO\n\n${serverSection('bench')}\n${serverSection('benchz')}`,
      { mode: 0o644 },
    );
    const SERVERS = ['bench', 'benchz'] as const;
    type Server = (typeof SERVERS)[number];
    // `check` creates the directories (its verdict on the cluster does not matter here).
    for (const s of SERVERS) await sys.runAs(BARMAN_USER, process.execPath, [BARMAN_SCRIPT, '-c', barmanConf, 'check', s]);
    const incoming = (s: Server) => path.join(home, s, 'incoming');
    const clearIncoming = async (s: Server = 'bench') => {
      for (const n of await fs.readdir(incoming(s))) await fs.rm(path.join(incoming(s), n), { force: true });
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
      label: L.rsync,
      result: await runDriver({ mode: 'archive', dataDir: await fakeDataDir(), command: `rsync -a -e ${sq(`ssh -F ${pgSsh}`)} %p ${BARMAN_USER}@127.0.0.1:${sq(incoming('bench'))}/%f` }),
    });
    await clearIncoming();

    // The real Barman 3.4: one ssh session and one Python `barman put-wal` per segment. Slow
    // and steady, so a quarter of the segments tells its rate; they are then archived on the
    // Python server for its restore rows.
    try {
      b34 = await setupBarman34({ root, cipher: CIPHER, conninfo: pg.conninfo, say: (l) => console.log(l) });
    } catch (err) {
      b34Problem = (err as Error).message.split('\n').slice(0, 2).join(' ');
    }
    if (b34) {
      console.log(`  Barman 3.4 reference: Debian barman ${b34.version} (Python), behind an sshd of its own whose sessions run /usr/bin/barman`);
      const result = await runDriver({ mode: 'archive', dataDir: await fakeDataDir(quarter), command: b34.archiveCommand });
      rows.push({ label: L.b34Archive, result });
      if (result.error) b34Problem = 'its archive row failed';
      else {
        await b34.archiveWal().catch((err: Error) => {
          b34Problem = `Python barman archive-wal failed: ${err.message.split('\n').slice(-1)[0]}`;
        });
      }
    } else rows.push({ label: L.b34Archive, note: `skipped: ${b34Problem}` });

    const archiveProblem = await clientProblem(walArchive);
    const spool = await pgDir('archive-spool', 0o700);
    const ours = (extra: string, server: Server = 'bench') =>
      `${sq(walArchive)} -c ${sq(barmanConf)} --ssh-config ${sq(pgSsh)} --spool-dir ${sq(spool)}${extra} 127.0.0.1 ${server} %p`;
    if (archiveProblem) {
      rows.push({ label: L.ours, note: `skipped: ${archiveProblem}` });
      rows.push({ label: L.oursZstd, note: 'skipped' });
    } else {
      // Every row starts from an empty server (a segment already in wals/ is compared, not
      // written); the rows marked `keep` leave their segments in incoming/, archived into wals/
      // afterwards for the restore side: default options into `bench`, zstd into `benchz`.
      const variants: Array<{ label: string; extra: string; server: Server; quarter?: boolean; keep?: boolean }> = [
        // One session per segment is slow and steady: a quarter of the segments tells its rate.
        { label: 'barman-wal-archive --batch 1', extra: ' --batch 1', server: 'bench', quarter: true },
        { label: 'barman-wal-archive --lz4', extra: ' --lz4', server: 'bench' },
        { label: 'barman-wal-archive --sessions 2', extra: ' --sessions 2', server: 'bench' },
        { label: L.oursZstd, extra: ' --zstd --compression-level low', server: 'benchz', keep: true },
        { label: L.ours, extra: '', server: 'bench', keep: true },
      ];
      for (const v of variants) {
        const markers = path.join(spool, v.server);
        const dataDir = await fakeDataDir(v.quarter ? quarter : segments.length);
        rows.push({ label: v.label, result: await runDriver({ mode: 'archive', dataDir, command: ours(v.extra, v.server), hitDir: markers }) });
        if (!v.keep) await clearIncoming(v.server);
        // Hard links share one inode: a marker left by one row must not answer the next one.
        await fs.rm(markers, { recursive: true, force: true });
      }
      for (const s of SERVERS) {
        const r = await sys.runAs(BARMAN_USER, process.execPath, [BARMAN_SCRIPT, '-c', barmanConf, 'archive-wal', s]);
        if (r.code !== 0) archiveWalProblems.set(s, `archive-wal ${s} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim().split('\n').slice(-1)[0]}`);
      }
    }

    // pgBackRest: a stanza on the live cluster per compression (each its own repo and spool, so
    // that no push finds its segment already there), then archive-push from a fake data directory.
    const pgbr = '/usr/bin/pgbackrest';
    let pgbrInstallProblem: string | null = null;
    if (!existsSync(pgbr)) {
      console.log('  installing Debian pgbackrest for the comparison (apt-get install -y pgbackrest)');
      const inst = await run('apt-get', ['install', '-y', '-q', 'pgbackrest'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
      if (inst.code !== 0) pgbrInstallProblem = `apt-get install pgbackrest failed: ${inst.stderr.trim().split('\n').slice(-1)[0]}`;
    }
    // One stanza per compression and per repository place: local (the repository on the
    // PostgreSQL host) and over ssh (repo1-host: a pgBackRest on the backup host, reached as
    // barman@127.0.0.1 through the same ssh config and cipher as ours). Each has its own repo
    // and spool, so that no push finds its segment already there.
    const pgbrConf = (file: string, lines: string[]) =>
      fs.writeFile(file, ['[global]', 'log-level-console=warn', 'log-level-file=off', ...lines, ''].join('\n'), { mode: 0o644 });
    const compressLines = (kind: PgbrKind) => (kind === 'none' ? ['compress-type=none'] : ['compress-type=zst', 'compress-level=1']);
    const stanzaLines = [`pg1-path=${pg.dataDir}`, `pg1-port=${pg.port}`, `pg1-socket-path=${pg.socketDir}`];
    // pgBackRest runs `cmd-ssh` with its own options: the wrapper adds our config (cipher, keys).
    const sshWrapper = path.join(root, 'pgbackrest-ssh');
    await fs.writeFile(sshWrapper, `#!/bin/sh\nexec ssh -F ${sq(pgSsh)} "$@"\n`, { mode: 0o755 });
    for (const kind of PGBR_KINDS) {
      for (const remote of [false, true]) {
        const label = remote ? L.pgbrPushSsh(kind) : L.pgbrPush(kind);
        let problem = pgbrInstallProblem;
        const name = `pgbackrest-${remote ? 'ssh-' : ''}${kind}`;
        const conf = path.join(root, `${name}.conf`);
        if (!problem) {
          try {
            const local = await pgDir(name, 0o700);
            for (const sub of ['repo', 'spool', 'log', 'lock']) await fs.mkdir(path.join(local, sub), { mode: 0o700 });
            await sys.chownR(local, POSTGRES_USER);
            // Over ssh, the repository lives in a directory of the barman user's.
            const repo = remote ? path.join(root, `${name}-host`) : path.join(local, 'repo');
            const common = ['archive-async=y', 'process-max=2', ...compressLines(kind), `spool-path=${local}/spool`, `log-path=${local}/log`, `lock-path=${local}/lock`];
            if (remote) {
              for (const sub of ['repo', 'log', 'lock']) await fs.mkdir(path.join(repo, sub), { recursive: true, mode: 0o700 });
              await sys.chownR(repo, POSTGRES_USER);
              // stanza-create reads the cluster: run where it is, on the repository path, which
              // then goes to the barman user (pgBackRest on the backup host owns its repository).
              const create = path.join(root, `${name}-create.conf`);
              await pgbrConf(create, [`repo1-path=${repo}/repo`, `log-path=${local}/log`, `lock-path=${local}/lock`, '', '[bench]', ...stanzaLines]);
              await asPg(pgbr, [`--config=${create}`, '--stanza=bench', 'stanza-create']);
              await sys.chownR(repo, BARMAN_USER);
              const hostConf = path.join(root, `${name}-host.conf`);
              await pgbrConf(hostConf, [`repo1-path=${repo}/repo`, `log-path=${repo}/log`, `lock-path=${repo}/lock`, ...compressLines(kind)]);
              await pgbrConf(conf, ['repo1-host=127.0.0.1', `repo1-host-user=${BARMAN_USER}`, `repo1-host-config=${hostConf}`, `cmd-ssh=${sshWrapper}`, ...common]);
            } else {
              await pgbrConf(conf, [`repo1-path=${repo}`, ...common, 'start-fast=y', '', '[bench]', ...stanzaLines]);
              await asPg(pgbr, [`--config=${conf}`, '--stanza=bench', 'stanza-create']);
            }
          } catch (err) {
            problem = (err as Error).message.split('\n').slice(0, 2).join(' ');
          }
        }
        if (problem) {
          rows.push({ label, note: `skipped: ${problem}` });
          continue;
        }
        const fake = await fakeDataDir();
        pgbrRepos.push({ kind, remote, conf, fake });
        rows.push({ label, result: await runDriver({ mode: 'archive', dataDir: fake, command: `${pgbr} --config=${sq(conf)} --stanza=bench --pg1-path=${sq(fake)} archive-push %p` }) });
      }
    }
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

    // --- transport floors ----------------------------------------------------------------
    // What the SSH transport (and zstd) cost alone: every segment through one pipeline, no
    // checksums, no fsync, no process per segment; archive: nothing written on the server;
    // restore: the segments written into files, as a restore must. A target below its floor
    // cannot be met on this machine by any client that ships WAL over ssh.
    const floorRows = async () => {
      const ssh = `ssh -F ${sq(pgSsh)} ${BARMAN_USER}@127.0.0.1`;
      const zstdCli = existsSync('/usr/bin/zstd');
      /** Time `cmd`; `check` (after it succeeded) says what is wrong with its output, if anything. */
      const timed = async (label: string, cmd: string, into: Row[], check: () => Promise<string | null> = async () => null) => {
        if (!zstdCli && cmd.includes('zstd')) return void into.push({ label, note: 'skipped: no zstd command (apt-get install zstd)' });
        const t0 = process.hrtime.bigint();
        // pipefail: a failing stage (ssh, zstd, cat) must not pass for a fast floor.
        const r = await sys.runAs(POSTGRES_USER, '/bin/bash', ['-o', 'pipefail', '-c', cmd]);
        const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
        const error = r.code === 0 ? await check() : `exit ${r.code}: ${r.stderr.trim().split('\n').slice(-1)[0]}`;
        into.push({ label, result: error === null ? { count: segments.length, seconds, load: loadavg()[0] } : { count: 0, seconds, error } });
      };
      const listFile = async (name: string, files: string[]) => {
        const file = path.join(root, name);
        await fs.writeFile(file, `${files.join('\n')}\n`, { mode: 0o644 });
        return file;
      };
      const plainList = await listFile('floor-segments.list', segments.map((n) => path.join(collected, n)));
      await timed(L.floorPush('none'), `xargs cat < ${sq(plainList)} | ${ssh} 'cat >/dev/null'`, rows);
      await timed(L.floorPush('zst'), `xargs cat < ${sq(plainList)} | zstd -q -1 -T2 -c | ${ssh} 'cat >/dev/null'`, rows);
      // The archived files as stored on the server (plain in bench, zstd in benchz).
      const stored = async (s: Server) => {
        const wanted = new Set(segments);
        const found: string[] = [];
        for (const dir of await fs.readdir(path.join(home, s, 'wals'), { withFileTypes: true })) {
          if (!dir.isDirectory()) continue;
          for (const n of await fs.readdir(path.join(home, s, 'wals', dir.name))) if (wanted.has(n.slice(0, 24))) found.push(path.join(home, s, 'wals', dir.name, n));
        }
        return found.sort();
      };
      for (const [kind, s] of [['none', 'bench'], ['zst', 'benchz']] as const) {
        const files = await stored(s);
        if (files.length !== segments.length) {
          restoreRows.push({ label: L.floorGet(kind), note: `skipped: ${files.length} of ${segments.length} segments archived in ${s}` });
          continue;
        }
        const list = await listFile(`floor-${s}.list`, files);
        // Into 16 MiB files kept until the row ends, as the restore rows leave theirs: the
        // page cache and its writeback cost the same here as there.
        const out = await pgDir(`floor-restore-${kind}`, 0o700);
        await timed(L.floorGet(kind), `${ssh} 'xargs cat' < ${sq(list)}${kind === 'zst' ? ' | zstd -q -d -c' : ''} | split -b 16M -a 4 - ${sq(out)}/seg.`, restoreRows, async () => {
          const written = (await fs.readdir(out)).length;
          return written === segments.length ? null : `${written} files written, ${segments.length} expected`;
        });
        await fs.rm(out, { recursive: true, force: true });
      }
    };

    // --- restore side -----------------------------------------------------------------------
    const restoreRun = async (label: string, names: string[], command: (dest: string) => string, hitDir?: string) => {
      const dest = await pgDir(`restore-${restoreRows.length}`, 0o700);
      const result = await runDriver({ mode: 'restore', dataDir: dest, destDir: dest, names, command: command(dest), hitDir });
      // Spot check: the restored bytes are the originals.
      if (!result.error) {
        for (const n of [names[0], names[names.length - 1]]) {
          if (!n) continue;
          const [a, b] = await Promise.all([fs.readFile(path.join(dest, n)), fs.readFile(path.join(collected, n))]);
          if (!a.equals(b)) result.error = `${n} restored with different content`;
        }
      }
      restoreRows.push({ label, result });
      await fs.rm(dest, { recursive: true, force: true });
    };
    // A fresh spool per row, as a restore_command user would have it: the postgres user's own,
    // 0700 (the client trusts nothing else), and nothing left over from another row.
    let spools = 0;
    const freshSpool = () => pgDir(`restore-spool-${++spools}`, 0o700);
    const restoreProblem = archiveProblem ?? (await clientProblem(walRestore));
    if (restoreProblem) {
      restoreRows.push({ label: L.oursRestore, note: `skipped: ${restoreProblem}` });
    } else {
      const ourRestore = (rspool: string, extra: string, server: Server = 'bench') =>
        `${sq(walRestore)} -c ${sq(barmanConf)} --ssh-config ${sq(pgSsh)} --spool-dir ${sq(rspool)}${extra} 127.0.0.1 ${server} %f %p`;
      const ourRow = async (label: string, extra: string, server: Server) => {
        const problem = archiveWalProblems.get(server);
        if (problem) return void restoreRows.push({ label, note: `skipped: ${problem}` });
        const rspool = await freshSpool();
        await restoreRun(label, segments, () => ourRestore(rspool, extra, server), rspool);
      };
      await ourRow('barman-wal-restore -p 0 (no prefetch)', ' -p 0', 'bench');
      // Barman's manual restore_command as it is: our default prefetch (RESTORE_DEFAULT_PARALLEL).
      await ourRow('barman-wal-restore (no -p: default prefetch)', '', 'bench');
      await ourRow(L.oursRestore, ' -p 32', 'bench');
      await ourRow(L.oursRestoreZstd, ' -p 32', 'benchz');
      await ourRow('barman-wal-restore -p 32 --keep-compression (zstd archive)', ' -p 32 --keep-compression', 'benchz');
    }
    if (b34 && !b34Problem) {
      const b34Names = segments.slice(0, quarter);
      for (const [label, extra] of [[L.b34Restore, ''], [L.b34RestoreP, ' -p 32']] as const) {
        const rspool = await freshSpool();
        const cmd = b34.restoreCommand(rspool, extra);
        await restoreRun(label, b34Names, () => cmd, rspool);
      }
    } else restoreRows.push({ label: 'Barman 3.4 barman-wal-restore', note: `skipped: ${b34Problem ?? 'not set up'}` });
    for (const kind of PGBR_KINDS) {
      for (const remote of [false, true]) {
        const repo = pgbrRepos.find((r) => r.kind === kind && r.remote === remote);
        const asyncLabel = remote ? L.pgbrGetSsh(kind) : L.pgbrGet(kind, 'async');
        if (!repo) {
          restoreRows.push({ label: asyncLabel, note: 'skipped (no archive-push)' });
          continue;
        }
        const get = (extra: string) => `${pgbr} --config=${sq(repo.conf)} --stanza=bench --pg1-path=${sq(repo.fake)}${extra} archive-get %f %p`;
        await restoreRun(asyncLabel, segments, () => get(''));
        // Synchronous gets over ssh take one session per segment: the async row is the one to beat.
        if (!remote) await restoreRun(L.pgbrGet(kind, 'sync'), segments, () => get(' --no-archive-async'));
      }
    }
    // Transport floors, after everything else: what ssh (and zstd) alone cost per segment here.
    await floorRows();
  } finally {
    sshdLog = sshd.log();
    b34Log = b34?.log() ?? '';
    await b34?.stop().catch(() => undefined);
    await cleanupAll().catch(() => undefined);
    await sshd.stop().catch(() => undefined);
    await fs.rm(root, { recursive: true, force: true }).catch(() => undefined);
  }

  // --- report --------------------------------------------------------------------------------
  const W = 58;
  const line = (r: Row) => {
    if (!r.result) return `  ${r.label.padEnd(W)} ${r.note ?? ''}`;
    const { count, seconds, error, hits } = r.result;
    if (error) return `  ${r.label.padEnd(W)} FAILED after ${count} segments: ${error}`;
    const ms = (seconds * 1000) / count;
    const served = hits === undefined || count === 0 ? '' : `  ${hits}/${count} found done`;
    const load = r.result.load === undefined ? '' : `  (load ${r.result.load.toFixed(1)})`;
    const of = count < SEGMENTS ? `  [${count} segments]` : '';
    return `  ${r.label.padEnd(W)} ${ms.toFixed(1).padStart(8)} ms/seg ${(count / seconds).toFixed(1).padStart(8)} seg/s ${(((count / seconds) * SEG_SIZE) / 1e6).toFixed(0).padStart(5)} MB/s${served}${load}${of}`;
  };
  console.log('ARCHIVE (archive_command driven like PostgreSQL, all segments .ready)');
  rows.forEach((r) => console.log(line(r)));
  console.log('RESTORE (restore_command called per segment, in order)');
  restoreRows.forEach((r) => console.log(line(r)));
  // A failed client run is easier to explain with what sshd saw (refused sessions and the like).
  if ([...rows, ...restoreRows].some((r) => r.result?.error)) {
    const tail = (log: string) => log.split('\n').filter((l) => l && !/Accepted publickey|session opened|Disconnected from|Received disconnect|Close session|Starting session|Connection from|User child is on pid|Transferred: sent|Connection closed|Postponed publickey|Accepted key/.test(l));
    console.log(`  (sshd log, last lines: ${tail(sshdLog).slice(-8).join(' | ') || 'nothing unusual'})`);
    if (b34Log) console.log(`  (Barman 3.4's sshd log, last lines: ${tail(b34Log).slice(-8).join(' | ') || 'nothing unusual'})`);
  }
  if (backlogPeak !== undefined) console.log(`PostgreSQL + barman-wal-archive under pgbench: peak .ready backlog ${backlogPeak} — ${backlogNote}`);

  const rate = (rs: Row[], label: string) => {
    const r = rs.find((x) => x.label === label)?.result;
    return r && !r.error && r.count > 0 ? r.count / r.seconds : undefined;
  };
  const ms = (r: number | undefined) => (r === undefined ? 'not measured' : `${(1000 / r).toFixed(1)} ms/seg`);
  // A target whose rows are missing is reported as NOT MEASURED and counted as not met.
  let met = 0;
  let total = 0;
  const target = (what: string, value: string | undefined, goal: string, ok: boolean | undefined, context = '') => {
    total++;
    if (ok) met++;
    const verdict = ok === undefined ? 'NOT MEASURED (row failed or skipped)' : ok ? 'OK' : 'MISSED';
    console.log(`  ${what.padEnd(86)} ${(value ?? '-').padStart(13)}  (target ${goal})  ${verdict}${context}`);
  };
  const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined ? a / b : undefined);
  const ours = rate(rows, L.ours);
  const oursZ = rate(rows, L.oursZstd);
  const pgbrNone = rate(rows, L.pgbrPush('none'));
  const pgbrZst = rate(rows, L.pgbrPush('zst'));
  const b34Rate = rate(rows, L.b34Archive);
  const rsync = rate(rows, L.rsync);
  const rNone = ratio(ours, pgbrNone);
  const rZst = ratio(oursZ, pgbrZst);
  const rNoneSsh = ratio(ours, rate(rows, L.pgbrPushSsh('none')));
  const rZstSsh = ratio(oursZ, rate(rows, L.pgbrPushSsh('zst')));
  const floorPush = { none: rate(rows, L.floorPush('none')), zst: rate(rows, L.floorPush('zst')) };
  const floorGet = { none: rate(restoreRows, L.floorGet('none')), zst: rate(restoreRows, L.floorGet('zst')) };
  const rB34 = ratio(ours, b34Rate);
  const rRsync = ratio(ours, rsync);
  const pre = rate(restoreRows, L.oursRestore);
  const preZ = rate(restoreRows, L.oursRestoreZstd);
  const x = (r: number | undefined, digits = 2) => (r === undefined ? undefined : `${r.toFixed(digits)}x`);
  console.log('TARGETS (ratios of rows of this run; seg/s over seg/s)');
  // The floor as a ratio: the best any ssh-based client could show against that reference here.
  const floorVs = (floor: number | undefined, ref: number | undefined, digits = 2) => `   [ssh floor / it: ${x(ratio(floor, ref), digits) ?? 'not measured'}]`;
  target('archive, uncompressed: ours / pgBackRest async push, none, local repository', x(rNone), '>= 1', rNone === undefined ? undefined : rNone >= 1, floorVs(floorPush.none, pgbrNone));
  target('archive, compressed: ours --zstd low / pgBackRest async push, zst-1, local repository', x(rZst), '>= 1', rZst === undefined ? undefined : rZst >= 1, floorVs(floorPush.zst, pgbrZst));
  target('archive, uncompressed: ours / pgBackRest async push, none, repo over ssh', x(rNoneSsh), '>= 1', rNoneSsh === undefined ? undefined : rNoneSsh >= 1);
  target('archive, compressed: ours --zstd low / pgBackRest async push, zst-1, repo over ssh', x(rZstSsh), '>= 1', rZstSsh === undefined ? undefined : rZstSsh >= 1);
  target('archive: ours (barman-wal-archive) / real Barman 3.4 barman-wal-archive', x(rB34, 1), '>= 20', rB34 === undefined ? undefined : rB34 >= 20, `${floorVs(floorPush.none, b34Rate, 1)}, zstd floor / it: ${x(ratio(floorPush.zst, b34Rate), 1) ?? 'not measured'}, ours --zstd low / it: ${x(ratio(oursZ, b34Rate), 1) ?? 'not measured'}`);
  console.log(`  ${'(reference) ours / rsync over ssh, one segment per session'.padEnd(86)} ${(x(rRsync, 1) ?? '-').padStart(13)}  (floor reference, no target)`);
  const restoreContext = (pgbrKind: PgbrKind) =>
    `   [ssh floor: ${ms(floorGet[pgbrKind])}; pgBackRest archive-get async ${pgbrKind === 'none' ? 'none' : 'zst'}: ${ms(rate(restoreRows, L.pgbrGet(pgbrKind, 'async')))} local, ${ms(rate(restoreRows, L.pgbrGetSsh(pgbrKind)))} repo over ssh; Barman 3.4 -p 32: ${ms(rate(restoreRows, L.b34RestoreP))}, no prefetch: ${ms(rate(restoreRows, L.b34Restore))}]`;
  target('restore: ours -p 32 from the plain archive (bench)', ms(pre), '< 40 ms', pre === undefined ? undefined : 1000 / pre < 40, restoreContext('none'));
  target('restore: ours -p 32 from the zstd archive (benchz)', ms(preZ), '< 40 ms', preZ === undefined ? undefined : 1000 / preZ < 40, restoreContext('zst'));
  target('peak pg_wal .ready backlog under pgbench', backlogPeak?.toString(), '< 64', backlogPeak === undefined ? undefined : backlogPeak < 64);
  console.log(`  ${met} of ${total} targets met${met < total ? ` — ${total - met} MISSED or NOT MEASURED` : ''}`);
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
