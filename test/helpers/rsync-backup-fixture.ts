/**
 * What the rsync backup tests (backup-rsync over ssh, backup-local-rsync) share: source data
 * with a tablespace and a fingerprint to compare a recovered copy with, a hard-link census of a
 * backup directory, and `barman backup` + backup.info readers bound to one BarmanEnv.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { listBackups, startStreaming, type BarmanEnv } from './barman-env.js';
import { startRecoveredCluster, type PgCluster } from './pg-cluster.js';
import { POSTGRES_USER, makeTempDir, runAs } from './system.js';

/** What must be identical between the source (at backup time) and a recovered copy. */
export const FINGERPRINT = `SELECT (SELECT count(*) FROM pgbench_accounts) || '|' ||
  (SELECT md5(string_agg(aid::text || ':' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts) || '|' ||
  (SELECT sum(bbalance) FROM pgbench_branches) || '|' || (SELECT count(*) FROM in_ts) || '|' || (SELECT count(*) FROM marks)`;

/**
 * Tablespace `extra` (table in_ts, 5000 rows) in a new directory, table marks and pgbench's
 * tables (scale 1): what FINGERPRINT reads. Returns the tablespace's OID.
 */
export async function createFingerprintData(pg: PgCluster, tempPrefix: string): Promise<string> {
  const tsDir = path.join(await makeTempDir(tempPrefix, { owner: POSTGRES_USER, mode: 0o755 }), 'space');
  await runAs(POSTGRES_USER, 'mkdir', ['-m', '0700', tsDir], { check: true });
  await pg.psql(`CREATE TABLESPACE extra LOCATION '${tsDir}'`);
  await pg.psql('CREATE TABLE in_ts (v int) TABLESPACE extra; INSERT INTO in_ts SELECT generate_series(1, 5000); CREATE TABLE marks (v int); INSERT INTO marks VALUES (1);');
  await pg.pgbench(['-i', '-s', '1', '-q']);
  return pg.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'extra'");
}

/**
 * Start WAL streaming, then vacuum, read FINGERPRINT and checkpoint: the vacuum leaves
 * autovacuum nothing to rewrite later (the visibility maps of the freshly filled tables), the
 * reads set hint bits on what pgbench -i wrote, and the checkpoint flushes them, so that files
 * stay unchanged between backups and reuse_backup = link can share them.
 */
export async function startStreamingOnSettledData(env: BarmanEnv, pg: PgCluster): Promise<void> {
  await startStreaming(env);
  await pg.psql('VACUUM (FREEZE, ANALYZE)');
  await pg.psql(FINGERPRINT);
  await pg.checkpoint();
  // A file modified in the second before a backup starts (or 1 s earlier) counts as changed for
  // the next backup (isAfterHorizon's margin): let the checkpoint's writes age past it, so that
  // "unchanged" does not depend on how fast the first backup follows.
  await new Promise((resolve) => setTimeout(resolve, 2500));
}

export interface LinkCensus {
  files: number;
  linked: number;
}

/** Regular files under a directory, and how many of them have other hard links. */
export async function walkLinks(dir: string): Promise<LinkCensus> {
  const res: LinkCensus = { files: 0, linked: 0 };
  const walk = async (d: string): Promise<void> => {
    for (const e of await fs.readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) {
        res.files += 1;
        if ((await fs.lstat(p)).nlink >= 2) res.linked += 1;
      }
    }
  };
  await walk(dir);
  return res;
}

/** The value of `key=` in a backup.info text ('' when absent). */
export const infoField = (text: string, key: string): string => new RegExp(`^${key}=(.*)$`, 'm').exec(text)?.[1] ?? '';

/**
 * Backups of one server, taken in order: `env` is a getter because the tests create the
 * BarmanEnv in before(), after these helpers are bound.
 */
export function backupRecorder(env: () => BarmanEnv) {
  /** Ids of the backups taken through `backup`, oldest first. */
  const ids: string[] = [];
  const backupDir = (id: string): string => path.join(env().home, env().server, 'base', id);
  /** backup.info of a backup: the meta/ copy when there is one (the backup may be deleted). */
  const infoText = async (id: string): Promise<string> => {
    const meta = path.join(env().home, env().server, 'meta', `${id}-backup.info`);
    return fs.readFile(meta, 'utf8').catch(() => fs.readFile(path.join(backupDir(id), 'backup.info'), 'utf8'));
  };
  /** Back up, then return the new backup's id (status DONE required). */
  const backup = async (...args: string[]): Promise<string> => {
    const e = env();
    await e.ok('backup', '--wait', '--wait-timeout', '120', '--immediate-checkpoint', ...args, e.server);
    const list = await listBackups(e);
    assert.equal(list[0]?.status, 'DONE', JSON.stringify(list));
    const id = list[0]?.backup_id ?? '';
    ids.push(id);
    return id;
  };
  return { ids, backupDir, infoText, backup };
}

/**
 * Recover backup `id` with tablespace `extra` relocated into a new directory owned by
 * `owner`, start it, and return its FINGERPRINT.
 */
export async function recoverFingerprint(env: BarmanEnv, id: string, opts: { owner: string; tempPrefix: string }): Promise<string> {
  const dest = await env.newDir(`${opts.tempPrefix}-restore-`);
  const newTs = path.join(await makeTempDir(`${opts.tempPrefix}-newts-`, { owner: opts.owner, mode: 0o755 }), 'space');
  await env.ok('recover', env.server, id, dest, '--tablespace', `extra:${newTs}`);
  const { cluster } = await startRecoveredCluster(dest, undefined, { extraConf: { archive_mode: 'off' } });
  try {
    return await cluster.psql(FINGERPRINT);
  } finally {
    await cluster.destroy();
  }
}
