/**
 * The world the fault campaign attacks, built once and shared by every case (clusters and
 * catalogs are reused: the campaign must run in minutes):
 *
 *   cluster A (PostgreSQL 15): pgbench data, archive_mode = on, archive_command = ack-archive.sh,
 *     which ships each segment with barman-wal-archive over a real sshd to `put-wal rsy` and,
 *     only when that exits 0, appends "<name> <sha256>" to the acknowledgement ledger;
 *   one barman_home (user barman) and one configuration with the servers
 *     strm  backup_method = postgres, WAL streaming (slot), compression = gzip
 *     rsy   backup_method = rsync over ssh, WAL through archive_command/put-wal, reuse_backup =
 *           link, manifests, retention_policy REDUNDANCY 3 enforced by cron
 *     agt   backup_method = rsync, transfer_method = agent, WAL streaming
 *     enc   backup_method = postgres, encryption = gpg (passphrase command), WAL streaming
 *     wal   no backups: the put-wal / archive-wal / get-wal target of synthetic cases
 *     full  its backup_directory on a 48 MiB tmpfs (ENOSPC cases)
 *     tl    (added by the timeline cases) WAL streaming from a standby that gets promoted
 *   a second barman installation run as postgres with `lr` (backup_method = local-rsync).
 *
 * Every conninfo carries a password and the gpg key a passphrase: SECRETS lists them, and the
 * campaign checks that no output ever shows them.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { createGpgHome, type GpgHome } from '../helpers/gpg.js';
import { PgCluster, quoteLiteral } from '../helpers/pg-cluster.js';
import { startSshd, type Sshd } from '../helpers/sshd.js';
import { startStandby } from '../helpers/standby.js';
import { BARMAN_USER, POSTGRES_USER, ensureBarmanUser, lookupUser, makeTempDir, onExitCleanup, runAs, sleep, waitFor } from '../helpers/system.js';
import { BARMAN_JS, NODE, REPO, exec, type CmdOptions, type CmdResult } from './exec.js';

export const DB_PASSWORD = 'Pw-fault-7f3c1d9e';
export const GPG_PASSPHRASE = 'Gpg-fault-a8b2e6c4';
export const SECRETS = [DB_PASSWORD, GPG_PASSPHRASE];
export const PY_BARMAN = '/usr/bin/barman';
/** Servers of WAL-only cases (no PostgreSQL behind them): their own configuration and lane. */
export const WAL_LANE: ReadonlySet<string> = new Set(['wal', 'full']);
/**
 * The rsync servers (rsync over ssh, agent), the encrypted one and the timeline one: a
 * configuration of their own (same barman_home, their own log), so that their cron (retention
 * of rsy included) and the main one never touch each other's servers, and their cases run in a
 * lane of their own (with the local-rsync installation's) beside the main lane, which keeps
 * strm (and the passive node that copies it).
 */
export const SIDE_LANE: ReadonlySet<string> = new Set(['rsy', 'agt', 'enc', 'tl']);

export type ServerName = 'strm' | 'rsy' | 'agt' | 'enc' | 'wal' | 'full' | 'tl' | 'lr' | 'pas';

export interface ServerInfo {
  name: ServerName;
  /** OS user barman runs as for this server. */
  user: string;
  conf: string;
  home: string;
  /** Root of this server's catalog (backup_directory). */
  dir: string;
  streaming: boolean;
  /** Does Barman 3.4 claim to read this catalog? (not for encryption = gpg, a 3.14 feature) */
  barman34: boolean;
  method: string;
  /**
   * The server's name in its configuration when it differs from the campaign's key: a passive
   * node bears its primary's name (`pas` is the passive copy of `strm`).
   */
  cmdName?: string;
}

const ini = (section: string, kv: Record<string, string>) => `[${section}]\n${Object.entries(kv).map(([k, v]) => `${k} = ${v}`).join('\n')}\n`;

export class World {
  root = '';
  home = '';
  conf = '';
  localRoot = '';
  localHome = '';
  localConf = '';
  /** Configuration of the WAL-only servers (WAL_LANE). */
  walConf = '';
  /** Configuration of the servers of the side lane (SIDE_LANE). */
  sideConf = '';
  tmpfs = '';
  ledger = '';
  remoteFaultFile = '';
  spool = '';
  sshCfgPostgres = '';
  sshCfgBarman = '';
  passFile = '';
  pg!: PgCluster;
  sshd!: Sshd;
  gpg!: GpgHome;
  servers = new Map<ServerName, ServerInfo>();
  private serverSections = new Map<string, Record<string, string>>();
  /** WAL acknowledged to a sender per server: name -> sha256 of the plain content. */
  acks = new Map<ServerName, Map<string, string>>();
  /**
   * Files acknowledged (put-wal exit 0, as Barman's put-wal does) that are not WAL they claim
   * to be (a segment whose page header is of another position, a history file that does not
   * parse): archive-wal must keep them out of wals/ and set them aside, whole, in errors/.
   * Per server: name -> sha256 of the bytes sent.
   */
  setAside = new Map<ServerName, Map<string, string>>();
  /** Highest begin_wal of a deleted backup per server: WAL before it may be gone. */
  horizon = new Map<ServerName, string>();
  standby: PgCluster | null = null;
  /** Log file of the passive installation (addPassive), '' until it exists. */
  passiveLog = '';
  private tmpfsMounted = false;
  /** What writeMainConfig last wrote to each configuration file. */
  private written = new Map<string, string>();
  private counter = 0;

  async setup(): Promise<void> {
    await ensureBarmanUser();
    this.root = await makeTempDir('faults-', { owner: BARMAN_USER, mode: 0o755 });
    this.home = path.join(this.root, 'home');
    this.conf = path.join(this.root, 'barman.conf');
    this.walConf = path.join(this.root, 'barman-wal.conf');
    this.sideConf = path.join(this.root, 'barman-side.conf');
    await runAs(BARMAN_USER, 'mkdir', ['-m', '0700', this.home], { check: true });

    // sshd, the gpg key and cluster A (initdb, pgbench data) do not depend on each other: at once.
    const sshdReady = (async () => {
      this.sshd = await startSshd();
      this.sshCfgPostgres = await this.sshd.clientConfigFor(POSTGRES_USER, [BARMAN_USER]);
      this.sshCfgBarman = await this.sshd.clientConfigFor(BARMAN_USER, [POSTGRES_USER]);
      // Remote `barman` (put-wal, get-wal over ssh) reads its fault from a file the campaign sets.
      this.remoteFaultFile = path.join(this.root, 'remote-fault');
      await fs.writeFile(this.remoteFaultFile, '', { mode: 0o644 });
      const wrapper = `#!/bin/sh\nf=$(cat ${this.remoteFaultFile} 2>/dev/null)\nif [ -n "$f" ]; then BARMAN_TS_FAULT="$f"; export BARMAN_TS_FAULT; fi\nexec ${NODE} ${BARMAN_JS} "$@"\n`;
      await fs.writeFile(path.join(this.sshd.binDir, 'barman'), wrapper, { mode: 0o755 });
    })();
    const gpgReady = (async () => {
      this.gpg = await createGpgHome({ owner: BARMAN_USER, passphrase: GPG_PASSPHRASE });
      process.env.GNUPGHOME = this.gpg.home;
    })();
    const pgReady = (async () => {
      this.pg = await PgCluster.create({
        archiveMode: true,
        // Set once the barman side exists: until then PostgreSQL keeps the segments .ready.
        extraConf: { wal_keep_size: '256MB', max_wal_senders: 20, max_replication_slots: 20, checkpoint_timeout: '30min', archive_timeout: 0 },
      });
      await this.pg.pgbench(['-i', '-s', '1', '-q']);
      await this.pg.psql('CREATE TABLE ticks (id bigserial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp(), pad text)');
    })();
    // Every one settled before going on (teardown stops what did start when one failed).
    const settled = await Promise.allSettled([sshdReady, gpgReady, pgReady]);
    for (const r of settled) if (r.status === 'rejected') throw r.reason;

    // The acknowledgement ledger and the marker spool of barman-wal-archive (postgres's).
    const pgSide = await makeTempDir('faults-pg-', { owner: POSTGRES_USER, mode: 0o755 });
    this.ledger = path.join(pgSide, 'acked-wal.ledger');
    this.spool = path.join(pgSide, 'spool');
    await runAs(POSTGRES_USER, 'mkdir', ['-m', '0700', this.spool], { check: true });
    await runAs(POSTGRES_USER, 'touch', [this.ledger], { check: true });
    const ack = path.join(pgSide, 'ack-archive.sh');
    await fs.writeFile(
      ack,
      [
        '#!/bin/sh',
        '# archive_command of the fault campaign: ship the segment, and only when that succeeded',
        '# record it (with its checksum) as acknowledged.',
        `${REPO}/bin/barman-wal-archive -c ${this.sideConf} --ssh-config ${this.sshCfgPostgres} --spool-dir ${this.spool} -U ${BARMAN_USER} 127.0.0.1 rsy "$1" || exit $?`,
        'sum=$(sha256sum "$1") || exit 1',
        `echo "$2 \${sum%% *}" >> ${this.ledger}`,
        '',
      ].join('\n'),
      { mode: 0o755 },
    );

    // tmpfs for the `full` server (ENOSPC cases).
    this.tmpfs = await makeTempDir('faults-tmpfs-', { owner: BARMAN_USER, mode: 0o755 });
    const ids = lookupUser(BARMAN_USER);
    const m = await runAs('root', 'mount', ['-t', 'tmpfs', '-o', `size=48m,mode=0700,uid=${ids?.uid},gid=${ids?.gid}`, 'faults-tmpfs', this.tmpfs]);
    if (m.code !== 0) throw new Error(`cannot mount a tmpfs (ENOSPC cases need root): ${m.stderr}`);
    this.tmpfsMounted = true;
    onExitCleanup(() => this.unmountSync());

    this.passFile = path.join(this.gpg.home, '..', 'passphrase');
    const conninfo = `${this.pg.conninfo} password=${DB_PASSWORD}`;
    const sshCmd = `"ssh -F ${this.sshCfgBarman} postgres@127.0.0.1"`;
    const common = { conninfo, streaming_conninfo: conninfo, create_slot: 'auto', description: '"fault campaign"' };
    this.serverSections.set('strm', { ...common, backup_method: 'postgres', streaming_archiver: 'on', archiver: 'off', slot_name: 'bts_strm', compression: 'gzip' });
    this.serverSections.set('rsy', {
      ...common,
      backup_method: 'rsync',
      ssh_command: sshCmd,
      archiver: 'on',
      streaming_archiver: 'off',
      reuse_backup: 'link',
      autogenerate_manifest: 'on',
      retention_policy: 'REDUNDANCY 3',
      minimum_redundancy: '1',
    });
    this.serverSections.set('agt', {
      ...common,
      backup_method: 'rsync',
      transfer_method: 'agent',
      ssh_command: sshCmd,
      streaming_archiver: 'on',
      archiver: 'off',
      slot_name: 'bts_agt',
      reuse_backup: 'link',
    });
    this.serverSections.set('enc', {
      ...common,
      backup_method: 'postgres',
      streaming_archiver: 'on',
      archiver: 'off',
      slot_name: 'bts_enc',
      compression: 'gzip',
      backup_compression: 'gzip',
      encryption: 'gpg',
      encryption_key_id: this.gpg.fingerprint,
      encryption_passphrase_command: `"${this.gpg.passphraseCommand}"`,
    });
    this.serverSections.set('wal', { ...common, backup_method: 'postgres', archiver: 'on', streaming_archiver: 'off', compression: 'gzip' });
    this.serverSections.set('full', {
      ...common,
      backup_method: 'postgres',
      archiver: 'on',
      streaming_archiver: 'off',
      backup_directory: path.join(this.tmpfs, 'full'),
    });
    await this.writeMainConfig();
    for (const name of ['strm', 'rsy', 'agt', 'enc', 'wal', 'full'] as const) {
      const sec = this.serverSections.get(name) ?? {};
      this.servers.set(name, {
        name,
        user: BARMAN_USER,
        conf: WAL_LANE.has(name) ? this.walConf : SIDE_LANE.has(name) ? this.sideConf : this.conf,
        home: this.home,
        dir: sec.backup_directory ?? path.join(this.home, name),
        streaming: sec.streaming_archiver === 'on',
        barman34: name !== 'enc',
        method: sec.transfer_method === 'agent' ? 'agent' : (sec.backup_method ?? ''),
      });
    }

    // The local-rsync installation: barman runs as postgres on the database host.
    this.localRoot = await makeTempDir('faults-local-', { owner: POSTGRES_USER, mode: 0o755 });
    this.localHome = path.join(this.localRoot, 'home');
    this.localConf = path.join(this.localRoot, 'barman.conf');
    await runAs(POSTGRES_USER, 'mkdir', ['-m', '0700', this.localHome], { check: true });
    const localText = `${ini('barman', { barman_home: this.localHome, barman_user: POSTGRES_USER, log_file: path.join(this.localRoot, 'barman.log'), log_level: 'INFO' })}\n${ini('lr', {
      ...common,
      backup_method: 'local-rsync',
      streaming_archiver: 'on',
      archiver: 'off',
      slot_name: 'bts_lr',
    })}`;
    await runAs(POSTGRES_USER, 'tee', [this.localConf], { input: localText, check: true });
    this.servers.set('lr', {
      name: 'lr',
      user: POSTGRES_USER,
      conf: this.localConf,
      home: this.localHome,
      dir: path.join(this.localHome, 'lr'),
      streaming: true,
      barman34: true,
      method: 'local-rsync',
    });

    // Directories, slots, receive-wal; then WAL shipping.
    // One cron per installation (they share no server): at once.
    await Promise.all(([null, 'rsy', 'wal', 'lr'] as const).map((s) => this.barmanOk(s, ['cron'])));
    await this.pg.psql(`ALTER SYSTEM SET archive_command = ${quoteLiteral(`${ack} %p %f`)}; SELECT pg_reload_conf();`);
    await this.waitAllStreaming();
  }

  /**
   * `pas`, a passive node of `strm` (spec §10), added by the sync cases: a third installation
   * (barman user, its own barman_home) whose server `strm` has primary_ssh_command pointing at
   * this world's main installation through the campaign's sshd; rsync pulls over that ssh.
   */
  async addPassive(): Promise<void> {
    if (this.servers.has('pas')) return;
    const root = await makeTempDir('faults-passive-', { owner: BARMAN_USER, mode: 0o755 });
    const home = path.join(root, 'home');
    const conf = path.join(root, 'barman.conf');
    await runAs(BARMAN_USER, 'mkdir', ['-m', '0700', home], { check: true });
    const cfg = await this.sshd.clientConfigFor(BARMAN_USER, [BARMAN_USER]);
    const primary = this.serverSections.get('strm') ?? {};
    const text = `${ini('barman', { barman_home: home, barman_user: BARMAN_USER, log_file: path.join(root, 'barman.log'), log_level: 'INFO' })}\n${ini('strm', {
      // The remote shell runs `BARMAN_CONFIG_FILE=... barman sync-info strm ...`: the primary's configuration.
      primary_ssh_command: `ssh -F ${cfg} barman@127.0.0.1 BARMAN_CONFIG_FILE=${this.conf}`,
      conninfo: primary.conninfo ?? '',
      backup_method: 'postgres',
      archiver: 'off',
      streaming_archiver: 'off',
      compression: primary.compression ?? 'gzip',
      // Keeps one backup: the sync cases copy the primary's newest, whose WAL then comes without
      // waiting for the older backups (obsolete here), however many the primary has.
      retention_policy: 'REDUNDANCY 1',
      description: '"fault campaign passive node"',
    })}`;
    await runAs(BARMAN_USER, 'tee', [conf], { input: text, check: true });
    this.passiveLog = path.join(root, 'barman.log');
    this.servers.set('pas', { name: 'pas', cmdName: 'strm', user: BARMAN_USER, conf, home, dir: path.join(home, 'strm'), streaming: false, barman34: true, method: 'passive' });
  }

  /**
   * `tl`, added by the timeline cases: WAL streaming (receive-wal, slot bts_tl) from a hot
   * standby of cluster A, which the cases promote (timeline 2) while it streams.
   */
  async addTimeline(): Promise<PgCluster> {
    if (this.standby && this.servers.has('tl')) return this.standby;
    this.standby = await startStandby(this.pg);
    const conninfo = `${this.standby.conninfo} password=${DB_PASSWORD}`;
    await this.addServer('tl', {
      conninfo,
      streaming_conninfo: conninfo,
      create_slot: 'auto',
      slot_name: 'bts_tl',
      backup_method: 'postgres',
      streaming_archiver: 'on',
      archiver: 'off',
      compression: 'gzip',
      description: '"fault campaign: streaming from a standby promoted on the way"',
    });
    await this.barmanOk('tl', ['cron']);
    await this.waitStreaming('tl', 60_000, this.standby);
    return this.standby;
  }

  /**
   * The main configuration, and beside it the one of the WAL-only servers (WAL_LANE): same
   * barman_home, its own log file. The main `cron` of the other cases never touches them, so
   * their cases can run at the same time as the others (campaign.ts, two lanes).
   */
  async writeMainConfig(): Promise<void> {
    const global = (log: string) => ({ barman_home: this.home, barman_user: BARMAN_USER, log_file: path.join(this.root, log), log_level: 'INFO' });
    let text = ini('barman', global('barman.log'));
    let walText = ini('barman', global('barman-wal.log'));
    let sideText = ini('barman', global('barman-side.log'));
    for (const [name, kv] of this.serverSections) {
      if (WAL_LANE.has(name)) walText += `\n${ini(name, kv)}`;
      else if (SIDE_LANE.has(name)) sideText += `\n${ini(name, kv)}`;
      else text += `\n${ini(name, kv)}`;
    }
    // Other lanes run barman with the other files meanwhile: only a changed file is written, and
    // atomically (a reader never sees it half written).
    for (const [file, content] of [[this.conf, text], [this.walConf, walText], [this.sideConf, sideText]] as const) {
      if (this.written.get(file) === content) continue;
      await runAs(BARMAN_USER, 'tee', [`${file}.tmp`], { input: content, check: true });
      await runAs(BARMAN_USER, 'mv', ['-f', `${file}.tmp`, file], { check: true });
      this.written.set(file, content);
    }
  }

  /** Log files of every installation (the campaign reads what each case added). */
  logFiles(): string[] {
    return [this.logOf('strm'), this.logOf('wal'), this.logOf('rsy'), this.logOf('lr'), ...(this.passiveLog ? [this.passiveLog] : [])];
  }

  /** The log file of the installation (configuration) of a server. */
  logOf(srv: ServerName): string {
    if (srv === 'lr') return path.join(this.localRoot, 'barman.log');
    if (srv === 'pas') return this.passiveLog;
    return path.join(this.root, WAL_LANE.has(srv) ? 'barman-wal.log' : SIDE_LANE.has(srv) ? 'barman-side.log' : 'barman.log');
  }

  /** Add (or replace) a server section of the main configuration. */
  async addServer(name: ServerName, kv: Record<string, string>, info: Partial<ServerInfo> = {}): Promise<void> {
    this.serverSections.set(name, kv);
    await this.writeMainConfig();
    this.servers.set(name, {
      name,
      user: BARMAN_USER,
      conf: SIDE_LANE.has(name) ? this.sideConf : this.conf,
      home: this.home,
      dir: kv.backup_directory ?? path.join(this.home, name),
      streaming: kv.streaming_archiver === 'on',
      barman34: true,
      method: kv.backup_method ?? 'postgres',
      ...info,
    });
  }

  /**
   * Set (a string) or remove (null) options of a server section of the main configuration,
   * for a case that needs them for a while (hook scripts): it puts them back afterwards.
   */
  async setServerOptions(name: ServerName, kv: Record<string, string | null>): Promise<void> {
    const sec = { ...(this.serverSections.get(name) ?? {}) };
    for (const [k, v] of Object.entries(kv)) {
      if (v === null) delete sec[k];
      else sec[k] = v;
    }
    this.serverSections.set(name, sec);
    await this.writeMainConfig();
  }

  /** The name to give barman for the campaign server `key` (see ServerInfo.cmdName). */
  cmd(key: ServerName): string {
    return this.server(key).cmdName ?? key;
  }

  server(name: ServerName): ServerInfo {
    const s = this.servers.get(name);
    if (!s) throw new Error(`unknown campaign server ${name}`);
    return s;
  }

  /** The configuration (and user) barman-ts runs with for `srv` (null: the main one). */
  private userConf(srv: ServerName | null): { user: string; conf: string } {
    if (srv === null) return { user: BARMAN_USER, conf: this.conf };
    const s = this.server(srv);
    return { user: s.user, conf: s.conf };
  }

  /** `barman -c CONF args` as the server's user (the command's server is for the config choice). */
  barman(srv: ServerName | null, args: string[], opts: CmdOptions = {}): Promise<CmdResult> {
    const { user, conf } = this.userConf(srv);
    return exec([NODE, BARMAN_JS, '-c', conf, ...args], { user, ...opts, env: { GNUPGHOME: this.gpg.home, ...(opts.env ?? {}) } });
  }

  barmanArgv(srv: ServerName | null, args: string[]): { argv: string[]; user: string; env: Record<string, string> } {
    const { user, conf } = this.userConf(srv);
    return { argv: [NODE, BARMAN_JS, '-c', conf, ...args], user, env: { GNUPGHOME: this.gpg.home } };
  }

  async barmanOk(srv: ServerName | null, args: string[], opts: CmdOptions = {}): Promise<CmdResult> {
    const r = await this.barman(srv, args, opts);
    if (r.code !== 0) throw new Error(`barman ${args.join(' ')} exited ${r.code}: ${r.stderr.trim().split('\n').slice(-5).join(' | ')} ${r.stdout.trim().slice(-300)}`);
    return r;
  }

  /** Debian's Barman 3.4 on the same configuration, as the same user. */
  py34(srv: ServerName, args: string[]): Promise<CmdResult> {
    const { user, conf } = this.userConf(srv);
    return exec([PY_BARMAN, '-c', conf, ...args], { user, timeoutMs: 120_000 });
  }

  /** A fresh directory (owned by `owner`) for recovery destinations and scratch files. */
  async scratch(prefix: string, owner = BARMAN_USER): Promise<string> {
    return makeTempDir(`faults-${prefix}-${++this.counter}-`, { owner, mode: 0o755 });
  }

  async setRemoteFault(spec: string): Promise<void> {
    await fs.writeFile(this.remoteFaultFile, spec);
  }

  /** receive-wal of every streaming server of cluster A running (one installation's after another's). */
  async waitAllStreaming(): Promise<void> {
    await Promise.all([
      this.waitStreaming('strm'),
      (async () => {
        await this.waitStreaming('agt');
        await this.waitStreaming('enc');
      })(),
      this.waitStreaming('lr'),
    ]);
  }

  async waitStreaming(srv: ServerName, timeoutMs = 60_000, on: PgCluster = this.pg): Promise<void> {
    const slot = `bts_${srv}`;
    await waitFor(
      async () => {
        const r = await on.psql(`SELECT active FROM pg_replication_slots WHERE slot_name = '${slot}'`);
        if (r === 't') return true;
        await this.barman(srv, ['cron']);
        return false;
      },
      { timeoutMs, intervalMs: 200, what: `receive-wal of ${srv}` },
    );
  }

  /** Write some rows and switch WAL: returns the segment just closed. */
  async churn(rows = 200): Promise<string> {
    await this.pg.psql(`INSERT INTO ticks (pad) SELECT repeat('x', 200) FROM generate_series(1, ${rows})`);
    return this.pg.switchWal();
  }

  /** The acknowledgement ledger of archive_command (what PostgreSQL was told is safe). */
  archiveLedger(): Map<string, string> {
    const out = new Map<string, string>();
    const text = existsSync(this.ledger) ? readFileSync(this.ledger, 'utf8') : '';
    for (const line of text.split('\n')) {
      const [name, sum] = line.trim().split(' ');
      if (name && sum) out.set(name, sum);
    }
    return out;
  }

  ack(srv: ServerName, name: string, plain: Buffer | string): void {
    const m = this.acks.get(srv) ?? new Map<string, string>();
    m.set(name, typeof plain === 'string' ? plain : createHash('sha256').update(plain).digest('hex'));
    this.acks.set(srv, m);
  }

  /** Record an acknowledged file that archive-wal must set aside in errors/ (see setAside). */
  ackSetAside(srv: ServerName, name: string, sent: Buffer): void {
    const m = this.setAside.get(srv) ?? new Map<string, string>();
    m.set(name, createHash('sha256').update(sent).digest('hex'));
    this.setAside.set(srv, m);
  }

  /** Wait until PostgreSQL's archiver has archived `wal` (ledger), or throw. */
  async waitArchived(wal: string, timeoutMs = 90_000): Promise<void> {
    await waitFor(async () => this.archiveLedger().has(wal), { timeoutMs, intervalMs: 200, what: `archive_command acknowledging ${wal}` });
  }

  /** Stop what runs in the background and unmount. */
  async teardown(): Promise<void> {
    for (const s of ['strm', 'agt', 'enc', 'tl'] as const) if (this.servers.has(s)) await this.barman(s, ['receive-wal', '--stop', s]).catch(() => undefined);
    await this.barman('lr', ['receive-wal', '--stop', 'lr']).catch(() => undefined);
    await sleep(200);
    this.unmountSync();
    await this.sshd?.stop();
    await this.gpg?.remove();
  }

  unmountSync(): void {
    if (!this.tmpfsMounted) return;
    this.tmpfsMounted = false;
    try {
      execFileSync('umount', ['-l', this.tmpfs], { stdio: 'ignore' });
    } catch {
      // best effort
    }
  }
}
