/**
 * A backup of the primary, as its `sync-info` describes it, on the passive side: turned back into
 * a backup.info (the local copy's metadata), and the decision whether `sync-backup` copies it,
 * leaves it, or removes the local leftover of a failed copy (spec §10, Barman's
 * check_sync_required).
 */
import type { ServerConfig } from '../config/config.js';
import { BACKUP_INFO_KEYS, COPY_DONE, DONE, NOT_EMPTY, RAW_FIELDS, parseBackupInfo, type BackupInfo } from '../catalog/backup-info.js';
import type { BackupEntry } from '../catalog/catalog.js';
import { pyFromJs, pyRepr, PyTuple } from '../catalog/pyliteral.js';
import { enforcedPolicy } from '../retention/enforce.js';
import type { KeepTarget } from '../retention/keep.js';
import { OBSOLETE, retentionReport, type RetentionBackup } from '../retention/policy.js';
import { BarmanError } from '../util/errors.js';
import { parsePyDatetime, type PyDateTime } from '../util/pytime.js';
import type { PrimaryBackup } from './primary-info.js';

const KNOWN: ReadonlySet<string> = new Set(BACKUP_INFO_KEYS);
/** Keys of Barman's backup JSON that are not backup.info fields. */
const EXTRA_KEYS: ReadonlySet<string> = new Set(['backup_id', 'begin_time_iso', 'end_time_iso']);

/** One field's backup.info text from its JSON form (see backupSyncJson for the forms). */
function fieldText(id: string, key: string, v: unknown): string {
  const bad = (why: string): never => {
    throw new BarmanError(`backup ${id} of the primary: field '${key}' ${why}`);
  };
  if (v === null || v === undefined) return 'None';
  if (typeof v === 'string') return /[\r\n]/.test(v) ? bad('holds a line break') : v;
  if (typeof v === 'number') return Number.isSafeInteger(v) ? String(v) : bad(`is not an integer: ${v}`);
  if (key === 'tablespaces') {
    if (!Array.isArray(v)) return bad('is not a list');
    return pyRepr(
      v.map((t: unknown) => {
        if (!Array.isArray(t) || t.length !== 3) return bad('is not a list of [name, oid, location]');
        return new PyTuple(t.map(pyFromJs));
      }),
    );
  }
  if (typeof v === 'object') return pyRepr(pyFromJs(v));
  return bad(`has an unexpected value ${JSON.stringify(v)}`);
}

/**
 * The backup.info of the local copy of backup `id` from the primary's JSON. Every field goes
 * through the backup.info reader (types checked); a field we do not know is refused rather than
 * dropped, since it may matter for a restore. Times come as ctime (local time, whole seconds),
 * or exactly when the primary also sends the ISO form (Barman >= 3.13).
 */
export function backupInfoFromPrimary(id: string, json: PrimaryBackup): BackupInfo {
  if (json.backup_id !== undefined && json.backup_id !== id) throw new BarmanError(`backup ${id} of the primary: its backup_id says '${String(json.backup_id)}'`);
  let text = '';
  for (const [key, v] of Object.entries(json)) {
    if (EXTRA_KEYS.has(key)) continue;
    if (!KNOWN.has(key)) throw new BarmanError(`backup ${id} of the primary has a field barman-ts does not know: '${key}'`);
    text += `${key}=${fieldText(id, key, v)}\n`;
  }
  const info = parseBackupInfo(text, `the primary's backup ${id}`);
  // Written in canonical forms (a ctime read back would otherwise be written as such).
  delete info[RAW_FIELDS];
  for (const key of ['begin_time', 'end_time'] as const) {
    const iso = json[`${key}_iso`];
    if (typeof iso === 'string' && iso !== '') {
      try {
        info[key] = parsePyDatetime(iso);
      } catch {
        /* the ctime form stays */
      }
    }
  }
  return info;
}

/** end_time of a primary backup (for the retention simulation); null when absent or unreadable. */
function endTimeOf(json: PrimaryBackup): PyDateTime | null {
  const t = json.end_time_iso ?? json.end_time;
  if (typeof t !== 'string') return null;
  try {
    return parsePyDatetime(t);
  } catch {
    return null;
  }
}

/**
 * Would the local retention policy delete the primary's backup `id` as soon as it is copied?
 * The policy is applied to the local backups plus this one (Barman's is_backup_locally_obsolete).
 */
export function isLocallyObsolete(
  srv: ServerConfig,
  id: string,
  remote: PrimaryBackup,
  local: readonly BackupEntry[],
  keeps: ReadonlyMap<string, KeepTarget>,
  now: Date,
): boolean {
  const policy = enforcedPolicy(srv);
  if (!policy || srv.retention_policy_mode !== 'auto') return false;
  const parent = typeof remote.parent_backup_id === 'string' ? remote.parent_backup_id : null;
  const candidate: RetentionBackup = { id, info: { status: remote.status, parent_backup_id: parent, end_time: endTimeOf(remote) } };
  // A local copy that is complete and only waits for its WAL files counts as DONE here (Barman's
  // passive marks it DONE at once): otherwise an older backup would stay "needed" until the newer
  // one is DONE, while sync-wals waits for that older backup before copying the newer one's WAL.
  const asDone = (e: BackupEntry): RetentionBackup => (COPY_DONE.has(e.info.status) && e.info.status !== DONE ? { id: e.id, info: { ...e.info, status: DONE } } : e);
  const entries: RetentionBackup[] = [...local.filter((e) => e.id !== id && NOT_EMPTY.has(e.info.status)).map(asDone), candidate];
  const report = retentionReport({ entries, keeps, policy, minimumRedundancy: srv.minimum_redundancy, now });
  return report.statuses.get(id) === OBSOLETE;
}

export type SyncDecision =
  | { kind: 'sync' }
  /** Nothing to do (info message). */
  | { kind: 'nothing'; message: string }
  /** The local copy is incomplete and the primary no longer has the backup: remove it (warning). */
  | { kind: 'purge'; message: string }
  /** A request that makes no sense (error). */
  | { kind: 'refuse'; message: string };

/**
 * What `sync-backup SRV ID` does (Barman's check_sync_required, with two fixes: a local copy
 * waiting for its WAL files counts as synced, and one left SYNCING by a dead process is
 * incomplete like a FAILED one). `obsolete` is only asked when the copy would happen.
 */
export function decideSync(srvName: string, id: string, onPrimary: boolean, local: BackupInfo | null, primaryName: string, obsolete: () => boolean): SyncDecision {
  const localDone = local !== null && COPY_DONE.has(local.status);
  if (!onPrimary) {
    if (local === null) return { kind: 'refuse', message: `Backup ${id} is absent on ${srvName} server` };
    if (localDone) return { kind: 'nothing', message: `Backup ${id} is absent on ${srvName} server, but present locally (local copy only)` };
    return { kind: 'purge', message: `Backup ${id} is absent on ${srvName} server and is incomplete locally` };
  }
  if (localDone) return { kind: 'nothing', message: `Backup ${id} is already synced with ${srvName} server` };
  if (obsolete()) return { kind: 'nothing', message: `Remote backup ${primaryName}/${id} is obsolete for local retention policies.` };
  return { kind: 'sync' };
}
