/**
 * Recovery settings (spec §7) as pure text functions: the `restore_command` / target lines,
 * `recovery.conf` for PostgreSQL < 12, and the "mangling" of the restored postgresql.conf and
 * postgresql.auto.conf (archive_command disabled, stale recovery targets commented out,
 * dangerous options reported).
 */
import type { RecoveryTarget } from './options.js';

export const BARMAN_MARK = '#BARMAN#';

/** Quote a value for postgresql.conf / recovery.conf: single quotes, `'` and `\` escaped. */
export function confQuote(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

/** Quote one word for /bin/sh unless it is made only of harmless characters. */
export function shellQuote(word: string): string {
  if (word !== '' && /^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * One literal word of a restore_command / recovery_end_command: quoted for /bin/sh, and `%`
 * doubled, since PostgreSQL replaces %f, %p, %r and %% in those commands before the shell runs
 * them (a directory named `50%p` would otherwise become the WAL path).
 */
export function commandWord(word: string): string {
  return shellQuote(word).replace(/%/g, '%%');
}

/** The words of a command, `%f` and `%p` (PostgreSQL's placeholders) left as they are. */
function commandLine(words: readonly string[]): string {
  return words.map((w) => (w === '%f' || w === '%p' ? w : commandWord(w))).join(' ');
}

export interface RecoverySettingsInput {
  /** server_version_num of the backup. */
  version: number;
  serverName: string;
  target: RecoveryTarget;
  /** Fetch WAL with `barman get-wal` instead of copying it. */
  getWal: boolean;
  standbyMode: boolean;
  /** Directory holding the copied WAL (PITR without get-wal), as PostgreSQL will see it. */
  walDir: string | null;
  /** The barman command as words, e.g. ['barman', '-c', '/etc/barman.conf']. */
  barmanCommand: readonly string[];
  barmanUser: string;
  /**
   * Remote restore with get-wal: PostgreSQL runs barman-wal-restore (barman-cli) on the
   * recovery host, reaching this Barman host over ssh.
   */
  remoteGetWal?: { barmanHost: string; port: number | null; parallel: number } | null;
}

/** Are recovery settings written at all? Only for PITR, get-wal or standby restores. */
export function needsRecoverySettings(pitr: boolean, getWal: boolean, standbyMode: boolean): boolean {
  return pitr || getWal || standbyMode;
}

/**
 * The restore_command value (unquoted) the settings give PostgreSQL, or null when WAL is
 * already in pg_wal: barman-wal-restore (remote get-wal), barman get-wal, or a copy from the
 * staged WAL directory.
 */
export function restoreCommandValue(s: RecoverySettingsInput): string | null {
  if (s.getWal && s.remoteGetWal) {
    const r = s.remoteGetWal;
    const words = ['barman-wal-restore', '-P', '-U', s.barmanUser, ...(r.port ? ['--port', String(r.port)] : []), r.barmanHost, s.serverName, '%f', '%p'];
    if (r.parallel > 1) words.push('-p', String(r.parallel));
    return commandLine(words);
  }
  if (s.getWal) {
    const cmd = commandLine([...s.barmanCommand, 'get-wal', ...(s.standbyMode ? [] : ['-P']), s.serverName]);
    return `${cmd} %f > %p`;
  }
  if (s.walDir !== null) return `cp ${commandWord(s.walDir)}/%f %p`;
  return null;
}

/** One `key = value` line per recovery setting, in Barman's order (with its comment lines). */
export function recoveryLines(s: RecoverySettingsInput): string[] {
  const lines: string[] = [];
  const restore = restoreCommandValue(s);
  if (restore !== null) {
    if (s.getWal && s.remoteGetWal) lines.push("# The 'barman-wal-restore' command is provided in the 'barman-cli' package");
    else if (s.getWal) lines.push(`# The 'barman get-wal' command must run as '${s.barmanUser}' user`);
    lines.push(`restore_command = ${confQuote(restore)}`);
    if (!s.getWal && s.walDir !== null && !s.standbyMode) lines.push(`recovery_end_command = ${confQuote(`rm -fr ${commandWord(s.walDir)}`)}`);
  }
  const t = s.target;
  if (t.time !== null) lines.push(`recovery_target_time = ${confQuote(t.time.format())}`);
  if (t.xid !== null) lines.push(`recovery_target_xid = ${confQuote(t.xid)}`);
  if (t.lsn !== null) lines.push(`recovery_target_lsn = ${confQuote(t.lsn)}`);
  if (t.name !== null) lines.push(`recovery_target_name = ${confQuote(t.name)}`);
  if (t.immediate) lines.push(`recovery_target = 'immediate'`);
  if (t.exclusive && (t.time !== null || t.xid !== null || t.lsn !== null)) lines.push(`recovery_target_inclusive = 'False'`);
  if (t.tli !== null) lines.push(`recovery_target_timeline = ${String(t.tli)}`);
  if (t.action !== null) {
    if (s.version >= 90500) lines.push(`recovery_target_action = ${confQuote(t.action)}`);
    else if (t.action === 'pause') lines.push(`pause_at_recovery_target = 'on'`);
  }
  return lines;
}

/** recovery.conf text (PostgreSQL < 12). */
export function recoveryConfText(s: RecoverySettingsInput): string {
  const lines = recoveryLines(s);
  if (s.standbyMode) lines.push(`standby_mode = 'on'`);
  return `${lines.join('\n')}\n`;
}

/** Text appended to postgresql.auto.conf (PostgreSQL >= 12). */
export function autoConfAppendix(existing: string, s: RecoverySettingsInput): string {
  const lines = recoveryLines(s);
  if (lines.length === 0) return '';
  const sep = existing === '' || existing.endsWith('\n') ? '' : '\n';
  return `${sep}${lines.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------------------
// Config mangling

export interface ConfigLine {
  /** File name relative to the destination directory (e.g. `postgresql.conf`). */
  file: string;
  /** Line of the setting in the original file, counted from 0 as Barman reports it. */
  line: number;
  key: string;
  value: string;
}

export interface MangleResult {
  text: string;
  /** Settings changed to prevent data loss (`archive_command = false`). */
  changes: ConfigLine[];
  /** Stale recovery settings commented out with `#BARMAN#` (value = the old one). */
  commented: ConfigLine[];
  /** Options pointing outside the data directory, to be reviewed (value as written, quotes and all). */
  dangerous: ConfigLine[];
  modified: boolean;
}

export const DANGEROUS_OPTIONS: readonly string[] = [
  'data_directory',
  'config_file',
  'hba_file',
  'ident_file',
  'external_pid_file',
  'ssl_cert_file',
  'ssl_key_file',
  'ssl_ca_file',
  'ssl_crl_file',
  'unix_socket_directory',
  'unix_socket_directories',
  'include',
  'include_dir',
  'include_if_exists',
];

/** Recovery settings a restored postgresql.conf must not keep (PostgreSQL >= 12 reads them there). */
const STALE_RECOVERY_RE = /^recovery_target(?:_\w+)?$/;

const SETTING_RE = /^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(?:=\s*|\s+)(.*)$/;

/** The value of a setting line without a trailing comment and without quotes. */
export function settingValue(raw: string): string {
  const s = raw.trim();
  if (s.startsWith("'")) {
    let out = '';
    for (let i = 1; i < s.length; i++) {
      const c = s[i] as string;
      if (c === '\\' && i + 1 < s.length) {
        out += s[++i];
      } else if (c === "'") {
        if (s[i + 1] === "'") {
          out += "'";
          i++;
        } else {
          return out;
        }
      } else {
        out += c;
      }
    }
    return out;
  }
  const hash = s.indexOf('#');
  return (hash >= 0 ? s.slice(0, hash) : s).trim();
}

/**
 * Mangle one configuration file: every active `archive_command` line becomes
 * `#BARMAN#<line>` followed by `archive_command = false`; every active `recovery_target*`
 * line is prefixed with `#BARMAN#` (Barman appends its own later). Dangerous options are
 * reported, not changed.
 */
export function mangleConfig(text: string, file: string, opts: { commentRecoveryTargets?: boolean } = {}): MangleResult {
  const commentTargets = opts.commentRecoveryTargets ?? true;
  const src = text.split('\n');
  const trailingNewline = src.length > 0 && src[src.length - 1] === '';
  if (trailingNewline) src.pop();
  const out: string[] = [];
  const res: MangleResult = { text: '', changes: [], commented: [], dangerous: [], modified: false };
  for (const [index, line] of src.entries()) {
    const m = SETTING_RE.exec(line);
    const key = m ? (m[1] as string).toLowerCase() : '';
    if (m && key === 'archive_command') {
      out.push(`${BARMAN_MARK}${line}`);
      out.push('archive_command = false');
      res.changes.push({ file, line: index, key: 'archive_command', value: 'false' });
      res.modified = true;
    } else if (m && commentTargets && STALE_RECOVERY_RE.test(key)) {
      out.push(`${BARMAN_MARK}${line}`);
      res.commented.push({ file, line: index, key, value: settingValue(m[2] as string) });
      res.modified = true;
    } else {
      out.push(line);
      if (m && DANGEROUS_OPTIONS.includes(key)) {
        res.dangerous.push({ file, line: index, key, value: (m[2] as string).trim() });
      }
    }
  }
  res.text = out.join('\n') + (trailingNewline ? '\n' : '');
  return res;
}
