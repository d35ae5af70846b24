/**
 * The invariants the campaign checks after every case, on every server the case may have
 * touched:
 *
 *   output      no stack trace, no EXCEPTION (an unexpected error instead of a clear one), no
 *               secret (password of the conninfo, gpg passphrase) in any output or log line;
 *   next        the next ordinary commands succeed: `cron`, `archive-wal` (stale locks handled);
 *   xlogdb      xlog.db agrees with wals/: `rebuild-xlogdb` changes no line;
 *   acked-wal   every WAL file acknowledged (archive_command or put-wal exit 0, or seen in the
 *               archive once) is still in the archive with the same content, unless a
 *               retention/delete was entitled to remove it (older than the oldest backup);
 *   backups     no backup left STARTED/EMPTY without a process; every DONE backup passes
 *               check-backup and its verification: verify-backup (pg_verifybackup with WAL
 *               parsing, or the agent's checksums) whenever its files changed since it was last
 *               proven, and a full recover + start of PostgreSQL for the cases that could affect
 *               data, for the first DONE backup of each method and for backups that cannot be
 *               verified otherwise (encrypted ones);
 *   barman34    Debian's Barman 3.4 lists the same backups (same statuses) and `check --nagios`
 *               fails for no reason barman-ts does not report too;
 *   modes       xlog.db and backup.info are 0600.
 *
 * A server whose catalog did not change since it was last checked (same fingerprint: names,
 * sizes, mtimes, inodes) is not checked again: the checks are functions of what is on disk.
 */
import { createHash } from 'node:crypto';
import { existsSync, promises as fs, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { loadConfig, type ServerConfig } from '../../src/config/config.js';
import { loadCatalog, type BackupEntry } from '../../src/catalog/catalog.js';
import { ARCHIVING } from '../../src/catalog/backup-info.js';
import { isLockHeld } from '../../src/catalog/lock.js';
import { lockPath } from '../../src/catalog/server-dirs.js';
import { decompressBuffer, identifyCompression } from '../../src/wal/compression.js';
import { isOpenPgpMessage } from '../../src/util/gpg.js';
import { walNameKind } from '../../src/wal/names.js';
import { startRecoveredCluster } from '../helpers/pg-cluster.js';
import { sleep } from '../helpers/system.js';
import { describe, type CmdResult } from './exec.js';
import { SECRETS, WAL_LANE, type ServerName, type World } from './world.js';

export interface Violation {
  invariant: string;
  server?: string;
  detail: string;
}

/**
 * Start PostgreSQL on a restored data directory and read cluster A's pgbench rows: null when
 * all is well, else why not. The cluster is stopped and the directory removed afterwards.
 */
export async function startAndReadRows(dest: string): Promise<string | null> {
  try {
    const { cluster } = await startRecoveredCluster(dest, undefined, { extraConf: { archive_mode: 'off' }, timeoutMs: 180_000 });
    try {
      const rows = await cluster.psql('SELECT count(*) FROM pgbench_accounts');
      return rows === '100000' ? null : `restored cluster has ${rows} rows in pgbench_accounts, not 100000`;
    } finally {
      await cluster.destroy();
    }
  } catch (err) {
    return `restored data directory does not start: ${(err as Error).message.split('\n').slice(0, 3).join(' | ')}`;
  }
}

export interface CheckResult {
  violations: Violation[];
  /** The catalog did not change since it was last checked: nothing was run. */
  skipped: boolean;
  /** Time spent per part of the check (wall; barman34 runs beside the others). */
  ms: Record<string, number>;
}

export interface CatalogCheckOptions {
  /** Restore + start every DONE backup that appeared or changed in this case. */
  fullRestore?: boolean;
  /** Backups present before the case (to know which ones are new). */
  before?: Set<string>;
  /** Ask Barman 3.4 even if base/ did not change (xlog.db or WAL corruption cases). */
  always34?: boolean;
}

/** Await `p`, adding the wall time it took to `ms[what]`. */
async function timeInto<T>(ms: Record<string, number>, what: string, p: Promise<T>): Promise<T> {
  const t = Date.now();
  try {
    return await p;
  } finally {
    ms[what] = (ms[what] ?? 0) + Date.now() - t;
  }
}

const STACK_RES = [/^\s+at .+:\d+:\d+\)?\s*$/m, /\bnode:internal\//, /Traceback \(most recent call last\)/];

export function outputViolations(results: readonly CmdResult[], extraTexts: Array<[string, string]> = []): Violation[] {
  const out: Violation[] = [];
  for (const r of results) {
    const text = `${r.stdout}\n${r.stderr}`;
    for (const re of STACK_RES) {
      if (re.test(text)) {
        out.push({ invariant: 'output: no stack trace', detail: describe(r) });
        break;
      }
    }
    // Barman 3.4 prints EXCEPTION for its own bugs too; for barman-ts it is an unexpected error.
    if (!r.argv[0]?.endsWith('/usr/bin/barman') && r.argv[0] !== '/usr/bin/barman' && /^EXCEPTION:/m.test(r.stderr)) {
      out.push({ invariant: 'output: clear errors (no EXCEPTION)', detail: describe(r) });
    }
    for (const s of SECRETS) if (text.includes(s)) out.push({ invariant: 'output: no secret', detail: `${s.slice(0, 4)}... in ${describe(r)}` });
  }
  for (const [name, text] of extraTexts) {
    for (const s of SECRETS) if (text.includes(s)) out.push({ invariant: 'output: no secret', detail: `${s.slice(0, 4)}... in ${name}` });
  }
  return out;
}

interface ServerState {
  fingerprint: string;
  baseFingerprint: string;
  backups: Map<string, string | null>;
}

export class Checker {
  private states = new Map<ServerName, ServerState>();
  /** `${srv}/${id}` -> fingerprint of the backup directory when it was last proven. */
  private verified = new Map<string, string>();
  /** Methods whose first DONE backup went through a full restore + start. */
  private sampledMethods = new Set<string>();
  /** Plain-content sha256 of archived files, by `path size mtime ino`. */
  private sums = new Map<string, string>();
  /** The archive_command ledger as it was before the last archive-wal run of the next commands. */
  private ledgerBeforeArchive = new Map<ServerName, Map<string, string>>();
  /** WAL seen in each server's archive once (name -> plain sha): must not change or vanish. */
  private observed = new Map<ServerName, Map<string, string>>();
  /** Barman 3.4 check failures that barman-ts does not report, found before any fault. */
  private baseline34 = new Map<ServerName, Set<string>>();
  private configs = new Map<string, Map<string, ServerConfig>>();
  restores: Array<{ server: string; id: string; why: string; ok: boolean }> = [];
  verifies = 0;

  constructor(private readonly world: World) {}

  srvConfig(name: ServerName): ServerConfig {
    const info = this.world.server(name);
    const cmd = this.world.cmd(name);
    let m = this.configs.get(info.conf);
    if (!m || !m.has(cmd)) {
      m = loadConfig(info.conf).servers as Map<string, ServerConfig>;
      this.configs.set(info.conf, m);
    }
    const srv = m.get(cmd);
    if (!srv) throw new Error(`server ${name} not in ${info.conf}`);
    return srv;
  }

  /** Forget cached configurations (after the campaign rewrote one). */
  reloadConfigs(): void {
    this.configs.clear();
  }

  async catalog(name: ServerName): Promise<BackupEntry[]> {
    return loadCatalog(this.srvConfig(name));
  }

  /** The fingerprint of base/ only (backup.info files and data). */
  async baseFingerprint(name: ServerName): Promise<string> {
    return this.fingerprint(name, 'base');
  }

  /** Names, sizes, mtimes and inodes of everything of the server but streaming/. */
  async fingerprint(name: ServerName, sub = ''): Promise<string> {
    const root = path.join(this.world.server(name).dir, sub);
    const h = createHash('sha256');
    const walk = async (d: string, rel: string): Promise<void> => {
      let ents;
      try {
        ents = await fs.readdir(d, { withFileTypes: true });
      } catch {
        return;
      }
      ents.sort((a, b) => (a.name < b.name ? -1 : 1));
      for (const e of ents) {
        const r = rel ? `${rel}/${e.name}` : e.name;
        if (r === 'streaming') continue;
        const p = path.join(d, e.name);
        const st = await fs.lstat(p, { bigint: true }).catch(() => null);
        if (!st) continue;
        h.update(`${r}\0${st.size}\0${st.mtimeNs}\0${st.ino}\0${st.mode}\n`);
        if (e.isDirectory()) await walk(p, r);
      }
    };
    await walk(root, '');
    return h.digest('hex');
  }

  // ---------------------------------------------------------------------------------------
  // The next ordinary commands

  /** Where a server's WAL arrives from: archive_command (rsy), streaming, or nowhere (synthetic). */
  private walSource(name: ServerName): 'archive' | 'stream' | 'none' {
    if (name === 'rsy') return 'archive';
    // The timeline cases write their own WAL (on the standby they promote), not on cluster A.
    if (name === 'tl') return 'none';
    return this.world.server(name).streaming ? 'stream' : 'none';
  }

  /**
   * `cron` (both installations), then `archive-wal` for every server in scope until it runs
   * (a background one may hold the lock), after new WAL was written and switched: what an
   * operator's crontab does next. A failure twice in a row is a violation.
   */
  async next(servers: readonly ServerName[], ms: Record<string, number> = {}): Promise<Violation[]> {
    const v: Violation[] = [];
    const timed = <T>(what: string, p: Promise<T>): Promise<T> => timeInto(ms, what, p);
    // New WAL written and switched, and the cron of each installation in scope (at once: cron
    // starts what is missing and archives what it finds; the new segment is waited for below).
    // The WAL-only servers (no backups, no PostgreSQL behind them) need their archiver only (cron
    // would run the same archive-wal at the cost of a second); a passive node's primary (strm)
    // is the main installation's.
    const churn = servers.some((s) => this.walSource(s) !== 'none')
      ? timed(
          'churn',
          this.world.churn(50).catch(() => null), // null: PostgreSQL down on purpose (the case starts it again)
        )
      : Promise.resolve(null);
    const crons = new Map<string, ServerName>();
    for (const s of servers) {
      if (WAL_LANE.has(s)) continue;
      const via: ServerName = this.world.server(s).method === 'passive' ? 'strm' : s;
      crons.set(this.world.server(via).conf, via);
    }
    const cronResults = timed('cron', Promise.all([...crons.values()].map((via) => this.world.barman(via, ['cron']))));
    const seg = await churn;
    for (const r of await cronResults) {
      if (r.code !== 0) v.push({ invariant: 'next command succeeds', detail: describe(r) });
    }
    // Each server's archiver (servers apart hold locks apart: at once).
    const perServer = await Promise.all(
      servers.map(async (s): Promise<Violation[]> => {
        if (this.world.server(s).method === 'passive') return timed('sync', this.passiveNext(s));
        const out: Violation[] = [];
        if (seg && this.walSource(s) !== 'none') await timed('wait-wal', this.waitWal(s, seg));
        // What archive_command acknowledged so far is in incoming/ or wals/: archive-wal must
        // have it in wals/ when it ends. Cluster A keeps archiving meanwhile (the other lanes
        // write WAL too): what is acknowledged later may still be in incoming/ at the check and
        // is expected at the next one.
        if (this.walSource(s) === 'archive') this.ledgerBeforeArchive.set(s, this.world.archiveLedger());
        out.push(...(await timed('archive-wal', this.archiveWal(s))));
        out.push(...(await timed('settle', this.settleWaiting(s))));
        return out;
      }),
    );
    for (const x of perServer) v.push(...x);
    return v;
  }

  private async waitWal(s: ServerName, seg: string): Promise<void> {
    const info = this.world.server(s);
    const deadline = Date.now() + 30_000;
    let lastCron = Date.now();
    while (Date.now() < deadline) {
      if (this.walSource(s) === 'archive') {
        if (this.world.archiveLedger().has(seg)) return;
      } else {
        const inStream = existsSync(path.join(info.dir, 'streaming', seg));
        const inWals = existsSync(path.join(info.dir, 'wals', seg.slice(0, 16), seg));
        if (inStream || inWals) return;
        if (Date.now() - lastCron > 3000) {
          await this.world.barman(s, ['cron']); // restarts receive-wal
          lastCron = Date.now();
        }
      }
      await sleep(50);
    }
  }

  /**
   * A passive node's ordinary commands (what its cron spawns, run in the foreground): ask the
   * primary (sync-info --primary), then copy the new WAL (sync-wals). A sync-backup still
   * running (a race case) holds its own lock and does not stop these.
   */
  private async passiveNext(s: ServerName): Promise<Violation[]> {
    const v: Violation[] = [];
    for (const args of [['sync-info', '--primary', this.world.cmd(s)], ['sync-wals', this.world.cmd(s)]]) {
      const r = await this.world.barman(s, args);
      if (r.code !== 0) v.push({ invariant: 'next command succeeds', server: s, detail: describe(r) });
    }
    return v;
  }

  private async archiveWal(s: ServerName): Promise<Violation[]> {
    let last: CmdResult | null = null;
    let failures = 0;
    for (let i = 0; i < 60; i++) {
      const r = await this.world.barman(s, ['archive-wal', this.world.cmd(s)]);
      if (r.code === 0) return [];
      last = r;
      if (/Another archive-wal process is already running/.test(r.stderr)) {
        await sleep(100);
        continue;
      }
      // One failure (a duplicate moved to errors/, say) is the archiver reporting: the next run must work.
      if (++failures >= 2) break;
    }
    return [{ invariant: 'next command succeeds', server: s, detail: last ? describe(last) : 'archive-wal never ran' }];
  }

  /** WAITING_FOR_WALS backups get a few chances to complete (their WAL is being switched and archived). */
  private async settleWaiting(s: ServerName): Promise<Violation[]> {
    const v: Violation[] = [];
    for (let round = 0; round < 3; round++) {
      const waiting = (await this.catalog(s)).filter((e) => e.info.status === 'WAITING_FOR_WALS');
      if (waiting.length === 0) return v;
      for (const e of waiting) {
        const r = await this.world.barman(s, ['check-backup', this.world.cmd(s), e.id]);
        if (r.code !== 0 && !/FAILED/.test(r.stderr)) v.push({ invariant: 'next command succeeds', server: s, detail: describe(r) });
      }
      if (this.walSource(s) !== 'none') {
        try {
          const seg = await this.world.churn(10);
          await this.waitWal(s, seg);
        } catch {
          return v;
        }
        v.push(...(await this.archiveWal(s)));
      } else return v;
    }
    return v;
  }

  /**
   * Everything the invariants of `servers` depend on: their catalogs (fingerprint) and the lock
   * files of the barman home. Equal keys mean equal checks: a case that changed none of it (a
   * hostile input refused before touching the disk) need not run the next commands again.
   */
  async stateKey(servers: readonly ServerName[]): Promise<string> {
    const h = createHash('sha256');
    for (const s of servers) h.update(`${s}\0${await this.fingerprint(s)}\n`);
    for (const home of new Set(servers.map((s) => this.world.server(s).home))) {
      for (const f of (await fs.readdir(home).catch(() => [] as string[])).sort()) {
        if (!f.endsWith('.lock')) continue;
        const st = await fs.stat(path.join(home, f), { bigint: true }).catch(() => null);
        h.update(`${f}\0${st?.size}\0${st?.mtimeNs}\n`);
      }
    }
    return h.digest('hex');
  }

  // ---------------------------------------------------------------------------------------
  // Catalog invariants

  async check(name: ServerName, opts: CatalogCheckOptions = {}): Promise<CheckResult> {
    const fp = await this.fingerprint(name);
    const prev = this.states.get(name);
    if (prev && prev.fingerprint === fp && !opts.fullRestore) return { violations: [], skipped: true, ms: {} };
    const ms: Record<string, number> = {};
    const timed = <T>(what: string, p: Promise<T>): Promise<T> => timeInto(ms, what, p);
    const v: Violation[] = [];
    await timed('archiver', this.archiverIdle(name));
    const entries = await this.catalog(name);
    const info = this.world.server(name);
    // Barman 3.4 reads backup.info files and the layout: asked again whenever base/ changed. It
    // only reads, as do our checks below (rebuild-xlogdb replaces xlog.db atomically, check-backup
    // of a DONE backup and recover change no backup.info of a sound catalog): both run at once.
    const baseFp = await this.baseFingerprint(name);
    const py = info.barman34 && (opts.always34 || prev?.baseFingerprint !== baseFp) ? timed('barman34', this.barman34(name, entries, opts.always34 === true || prev === undefined)) : null;
    try {
      v.push(...(await timed('xlogdb', this.xlogdbAgrees(name))));
      this.moveHorizon(name, entries, prev);
      v.push(...(await timed('wal', this.ackedWal(name, entries, prev))));
      v.push(...(await timed('backups', this.backups(name, entries, opts))));
      v.push(...this.modes(name, entries));
    } finally {
      if (py) v.push(...(await py));
    }
    const backups = new Map(entries.map((e) => [e.id, e.info.begin_wal ?? null]));
    this.states.set(name, { fingerprint: await this.fingerprint(name), baseFingerprint: baseFp, backups });
    return { violations: v, skipped: false, ms };
  }

  /**
   * A backup gone since the last check: WAL before its begin may have gone with it. When the
   * last backup went, Barman's rule removes every WAL file (there is nothing left to restore):
   * then every segment seen at the previous check may be gone, none archived since.
   */
  private moveHorizon(name: ServerName, entries: readonly BackupEntry[], prev: ServerState | undefined): void {
    const now = new Set(entries.map((e) => e.id));
    const vanished = [...(prev?.backups ?? [])].filter(([id]) => !now.has(id));
    if (vanished.length === 0) return;
    let h = this.world.horizon.get(name);
    for (const [, begin] of vanished) if (begin && (!h || begin > h)) h = begin;
    if (!entries.some((e) => ARCHIVING.has(e.info.status))) {
      for (const seen of this.observed.get(name)?.keys() ?? []) {
        const seg = seen.slice(0, 24);
        // 'Z' sorts after every hex digit: segments up to and including the newest seen.
        if (!h || `${seg}Z` > h) h = `${seg}Z`;
      }
    }
    if (h) this.world.horizon.set(name, h);
  }

  /**
   * An archive-wal that cron started in the background places its files, then appends their
   * lines and may complete WAITING_FOR_WALS backups: wait until it is done (at most a minute).
   */
  private async archiverIdle(name: ServerName): Promise<void> {
    const archiving = lockPath(this.srvConfig(name), 'archiveWal');
    for (const deadline = Date.now() + 60_000; Date.now() < deadline && (await isLockHeld(archiving)); ) await sleep(50);
  }

  private async xlogdbAgrees(name: ServerName): Promise<Violation[]> {
    const file = path.join(this.world.server(name).dir, 'wals', 'xlog.db');
    const read = () => (existsSync(file) ? readFileSync(file, 'latin1') : null);
    // An archive-wal that cron started in the background places its files, then appends their
    // lines: read xlog.db only once it is done (at most a minute), not between its two steps.
    await this.archiverIdle(name);
    const before = read();
    const r = await this.world.barman(name, ['rebuild-xlogdb', this.world.cmd(name)]);
    if (r.code !== 0) return [{ invariant: 'xlog.db agrees with wals/', server: name, detail: `rebuild-xlogdb failed: ${describe(r)}` }];
    const after = read() ?? '';
    if (before === null) return after.trim() === '' ? [] : [{ invariant: 'xlog.db agrees with wals/', server: name, detail: 'xlog.db missing although wals/ has files' }];
    const lines = (t: string) => t.split('\n').filter((l) => l !== '');
    const a = lines(before);
    const b = lines(after);
    const setA = new Map<string, number>();
    for (const l of a) setA.set(l, (setA.get(l) ?? 0) + 1);
    const onlyAfter: string[] = [];
    for (const l of b) {
      const n = setA.get(l) ?? 0;
      if (n > 0) setA.set(l, n - 1);
      else onlyAfter.push(l);
    }
    // Barman's rebuild-xlogdb does not index .partial files (spec §13), which its archiver
    // catalogs (a timeline switch archives the old timeline's last .partial): barman-ts does the
    // same. Such a line dropped while its file is still in wals/ is that known difference, not a
    // disagreement; any other line is.
    const walsDir = path.join(this.world.server(name).dir, 'wals');
    const partialKept = (l: string) => {
      const wal = l.split('\t')[0] ?? '';
      return walNameKind(wal) === 'partial' && existsSync(path.join(walsDir, wal.slice(0, 16), wal));
    };
    const onlyBefore = [...setA.entries()].flatMap(([l, n]) => Array<string>(n).fill(l)).filter((l) => !partialKept(l));
    if (onlyAfter.length === 0 && onlyBefore.length === 0) return [];
    const show = (xs: string[]) => xs.slice(0, 4).map((l) => l.replace(/\t/g, ' ')).join('; ');
    return [
      {
        invariant: 'xlog.db agrees with wals/',
        server: name,
        detail: `rebuild-xlogdb changed it: ${onlyBefore.length} line(s) only before [${show(onlyBefore)}], ${onlyAfter.length} only after [${show(onlyAfter)}]`,
      },
    ];
  }

  /** sha256 of the plain content of an archived file (null: encrypted, not checked). */
  async plainSum(file: string): Promise<string | null> {
    const st = statSync(file, { bigint: true });
    const key = `${file} ${st.size} ${st.mtimeNs} ${st.ino}`;
    const known = this.sums.get(key);
    if (known) return known;
    const data = await fs.readFile(file);
    if (isOpenPgpMessage(data.subarray(0, 16))) return null;
    const partial = walNameKind(path.basename(file)) === 'partial';
    const algo = partial ? null : identifyCompression(data);
    const plain = algo === null ? data : await decompressBuffer(data, algo);
    const sum = createHash('sha256').update(plain).digest('hex');
    this.sums.set(key, sum);
    return sum;
  }

  private archivedPath(name: ServerName, wal: string): string {
    const dir = path.join(this.world.server(name).dir, 'wals');
    return walNameKind(wal) === 'history' ? path.join(dir, wal) : path.join(dir, wal.slice(0, 16), wal);
  }

  /** May `wal` be absent from the archive of `name`? (older than what any remaining backup needs) */
  private removable(name: ServerName, wal: string, entries: readonly BackupEntry[]): boolean {
    if (walNameKind(wal) === 'history') return false;
    const seg = wal.slice(0, 24);
    const begins = entries.filter((e) => ARCHIVING.has(e.info.status) && e.info.begin_wal).map((e) => e.info.begin_wal as string);
    if (begins.length > 0) return seg < begins.sort()[0]!;
    const h = this.world.horizon.get(name);
    return h !== undefined && seg < h;
  }

  /**
   * Acknowledged files that are not the WAL they claim to be: never in wals/, and once
   * archive-wal has seen them (they left incoming/), kept whole in errors/.
   */
  private async setAsideWal(name: ServerName, present: ReadonlyMap<string, string>): Promise<Violation[]> {
    const v: Violation[] = [];
    const dir = this.world.server(name).dir;
    const errorsDir = path.join(dir, 'errors');
    const errors = await fs.readdir(errorsDir).catch(() => [] as string[]);
    for (const [wal, sum] of this.world.setAside.get(name) ?? []) {
      if (present.has(wal)) {
        v.push({ invariant: 'acknowledged WAL intact', server: name, detail: `${wal} is not the WAL its name says, yet it was archived` });
        continue;
      }
      if (existsSync(path.join(dir, 'incoming', wal))) continue; // not seen by archive-wal yet
      let kept = false;
      for (const f of errors.filter((e) => e.startsWith(`${wal}.`))) {
        if (createHash('sha256').update(await fs.readFile(path.join(errorsDir, f))).digest('hex') === sum) kept = true;
      }
      if (!kept) v.push({ invariant: 'acknowledged WAL intact', server: name, detail: `${wal} was acknowledged, is not WAL and is neither in incoming/ nor kept in errors/` });
    }
    return v;
  }

  private async ackedWal(name: ServerName, entries: readonly BackupEntry[], prev: ServerState | undefined): Promise<Violation[]> {
    const v: Violation[] = [];
    const expected = new Map<string, string>(this.world.acks.get(name) ?? []);
    if (name === 'rsy') for (const [k, s] of this.ledgerBeforeArchive.get(name) ?? this.world.archiveLedger()) expected.set(k, s);
    const observed = this.observed.get(name) ?? new Map<string, string>();
    const ledger = this.world.archiveLedger();
    // What is in the archive now: newly seen files join the observed set.
    const walsDir = path.join(this.world.server(name).dir, 'wals');
    const present = new Map<string, string>();
    for (const top of await fs.readdir(walsDir).catch(() => [] as string[])) {
      const p = path.join(walsDir, top);
      if (/^[0-9A-F]{16}$/.test(top)) {
        for (const f of await fs.readdir(p).catch(() => [] as string[])) if (walNameKind(f) !== null) present.set(f, path.join(p, f));
      } else if (walNameKind(top) === 'history') present.set(top, p);
    }
    for (const [wal, file] of present) {
      const sum = await this.plainSum(file).catch(() => 'unreadable');
      if (sum === null) continue;
      const want = expected.get(wal) ?? observed.get(wal) ?? (this.world.server(name).streaming ? ledger.get(wal) : undefined);
      if (want !== undefined && walNameKind(wal) === 'segment' && want !== sum) {
        v.push({ invariant: 'acknowledged WAL intact', server: name, detail: `${wal}: content differs from what was acknowledged` });
      }
      if (!observed.has(wal) && walNameKind(wal) === 'segment') observed.set(wal, sum);
    }
    for (const [wal] of [...expected, ...observed]) {
      if (present.has(wal)) continue;
      if (this.removable(name, wal, entries)) {
        observed.delete(wal);
        continue;
      }
      v.push({ invariant: 'acknowledged WAL intact', server: name, detail: `${wal} is missing from the archive` });
      observed.delete(wal);
    }
    this.observed.set(name, observed);
    v.push(...(await this.setAsideWal(name, present)));
    void prev;
    return v;
  }

  private async backups(name: ServerName, entries: readonly BackupEntry[], opts: CatalogCheckOptions): Promise<Violation[]> {
    const v: Violation[] = [];
    const srv = this.srvConfig(name);
    const info = this.world.server(name);
    for (const e of entries) {
      const st = e.info.status;
      if (st === 'STARTED' || st === 'EMPTY') {
        if (!(await isLockHeld(lockPath(srv, 'backup')))) v.push({ invariant: 'no backup left in progress', server: name, detail: `${e.id} is ${st} and no backup runs` });
        continue;
      }
      if (st !== 'DONE') continue;
      const key = `${name}/${e.id}`;
      const fp = await this.backupFingerprint(name, e.id);
      const isNew = opts.before !== undefined && !opts.before.has(key);
      const changed = this.verified.has(key) && this.verified.get(key) !== fp;
      let why: string | null = null;
      if (opts.fullRestore && (isNew || changed)) why = 'the fault could affect its data';
      else if (!this.sampledMethods.has(info.method)) why = `first DONE backup of method ${info.method} (sample)`;
      else if (this.verified.get(key) === fp) continue;
      else if (name === 'enc') why = 'encrypted: no cheaper verification';
      // check-backup and the verification (or restore) only read the backup: at once.
      if (why !== null) this.sampledMethods.add(info.method);
      const [cb, proof] = await Promise.all([
        this.world.barman(name, ['check-backup', this.world.cmd(name), e.id]),
        why === null ? this.world.barman(name, ['verify-backup', this.world.cmd(name), e.id]) : this.restoreAndStart(name, e.id),
      ]);
      if (cb.code !== 0) v.push({ invariant: 'DONE backups pass check-backup', server: name, detail: describe(cb) });
      if (why === null) {
        const r = proof as CmdResult;
        this.verifies++;
        if (r.code !== 0) {
          v.push({ invariant: 'DONE backups verify', server: name, detail: describe(r) });
          continue;
        }
      } else {
        const problem = proof as string | null;
        this.restores.push({ server: name, id: e.id, why, ok: problem === null });
        if (problem !== null) {
          v.push({ invariant: 'DONE backups restore and start', server: name, detail: `${e.id}: ${problem}` });
          continue;
        }
      }
      this.verified.set(key, fp);
    }
    return v;
  }

  async backupFingerprint(name: ServerName, id: string): Promise<string> {
    const root = path.join(this.world.server(name).dir, 'base', id);
    const h = createHash('sha256');
    const walk = async (d: string, rel: string): Promise<void> => {
      const ents = await fs.readdir(d, { withFileTypes: true }).catch(() => []);
      ents.sort((a, b) => (a.name < b.name ? -1 : 1));
      for (const e of ents) {
        const r = `${rel}/${e.name}`;
        const p = path.join(d, e.name);
        const st = await fs.lstat(p, { bigint: true }).catch(() => null);
        if (!st) continue;
        if (e.name === 'backup.info') continue; // rewritten by cron (Barman 3.4 form) without touching data
        h.update(`${r}\0${st.size}\0${st.mtimeNs}\0${st.ino}\n`);
        if (e.isDirectory()) await walk(p, r);
      }
    };
    await walk(root, '');
    return h.digest('hex');
  }

  /** barman recover + start PostgreSQL + read the data: null when all is well, else why not. */
  async restoreAndStart(name: ServerName, id: string): Promise<string | null> {
    const info = this.world.server(name);
    const dest = path.join(await this.world.scratch('restore', info.user), 'data');
    const r = await this.world.barman(name, ['recover', this.world.cmd(name), id, dest]);
    if (r.code !== 0) return `recover failed: ${describe(r)}`;
    try {
      return await startAndReadRows(dest);
    } finally {
      await fs.rm(path.dirname(dest), { recursive: true, force: true });
    }
  }

  private modes(name: ServerName, entries: readonly BackupEntry[]): Violation[] {
    const v: Violation[] = [];
    const files = [path.join(this.world.server(name).dir, 'wals', 'xlog.db'), ...entries.map((e) => e.infoFile)];
    for (const f of files) {
      try {
        const mode = statSync(f).mode & 0o777;
        if (mode & 0o077) v.push({ invariant: 'catalog files 0600', server: name, detail: `${f} has mode ${mode.toString(8)}` });
      } catch {
        // gone: not a mode problem
      }
    }
    return v;
  }

  /** Barman 3.4: same backups and statuses; `check --nagios` fails for nothing barman-ts does not report. */
  private async barman34(name: ServerName, entries: readonly BackupEntry[], withCheck: boolean): Promise<Violation[]> {
    const v: Violation[] = [];
    const lb = await this.world.py34(name, ['-f', 'json', 'list-backups', this.world.cmd(name)]);
    if (lb.code !== 0) {
      v.push({ invariant: 'Barman 3.4 reads the catalog', server: name, detail: describe(lb) });
    } else {
      try {
        const listed = (JSON.parse(lb.stdout) as Record<string, Array<{ backup_id: string; status: string }>>)[this.world.cmd(name)] ?? [];
        const theirs = new Map(listed.map((b) => [b.backup_id, b.status]));
        for (const e of entries) {
          const s = theirs.get(e.id);
          if (s === undefined) v.push({ invariant: 'Barman 3.4 reads the catalog', server: name, detail: `Barman 3.4 does not list ${e.id} (${e.info.status})` });
          else if (s !== e.info.status) v.push({ invariant: 'Barman 3.4 reads the catalog', server: name, detail: `${e.id}: Barman 3.4 says ${s}, barman-ts ${e.info.status}` });
        }
        for (const id of theirs.keys()) if (!entries.some((e) => e.id === id)) v.push({ invariant: 'Barman 3.4 reads the catalog', server: name, detail: `Barman 3.4 lists ${id}, barman-ts does not` });
      } catch (err) {
        v.push({ invariant: 'Barman 3.4 reads the catalog', server: name, detail: `unparsable JSON from Barman 3.4: ${(err as Error).message}` });
      }
    }
    // `check` (a PostgreSQL connection, ssh, every directory) costs seconds: asked at the baseline
    // and after the cases that damage the catalog on purpose; list-backups reads every backup.info.
    if (!withCheck) return v;
    const failed = (r: CmdResult) => {
      const m = /FAILED: ([^|\n]*)/.exec(r.stdout);
      return new Set((m?.[1] ?? '').split(',').map((s) => s.trim()).filter(Boolean));
    };
    const [py, ts] = await Promise.all([this.world.py34(name, ['check', '--nagios', this.world.cmd(name)]), this.world.barman(name, ['check', '--nagios', this.world.cmd(name)])]);
    const pyFailed = failed(py);
    const tsFailed = failed(ts);
    if (!this.baseline34.has(name)) {
      // Before any fault: what 3.4 fails on and barman-ts does not is a known difference of the setup.
      this.baseline34.set(name, new Set([...pyFailed].filter((c) => !tsFailed.has(c))));
      return v;
    }
    const known = this.baseline34.get(name) ?? new Set<string>();
    const extra = [...pyFailed].filter((c) => !tsFailed.has(c) && !known.has(c));
    if (py.code !== 0 && extra.length > 0) {
      v.push({ invariant: 'Barman 3.4 reads the catalog', server: name, detail: `Barman 3.4 check fails on ${extra.join(', ')} which barman-ts reports OK: ${py.stdout.trim().slice(0, 300)}` });
    }
    return v;
  }

  baselineOf34(): Record<string, string[]> {
    return Object.fromEntries([...this.baseline34].map(([k, s]) => [k, [...s]]));
  }
}

/** Texts appended to a log file since `offset`. */
export async function logSince(file: string, offset: number): Promise<{ text: string; size: number }> {
  try {
    const buf = await fs.readFile(file);
    return { text: buf.subarray(Math.min(offset, buf.length)).toString('utf8'), size: buf.length };
  } catch {
    return { text: '', size: offset };
  }
}

