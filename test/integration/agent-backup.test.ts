/**
 * transfer_method = agent (backup_method = rsync) on real PostgreSQL 15 through a real sshd:
 * barman-agent runs as postgres on the "database host" (started through ssh_command) and sends
 * pages to barman on the backup host.
 *
 *  - a full backup, then an incremental chain across relation files that grow, shrink, are
 *    truncated, dropped and created, and a tablespace: every backup a plain copy (pg_verifybackup
 *    passes on its backup_manifest, verify-backup checks every file's SHA-256), few pages on the
 *    wire for a small change, unchanged files hard-linked; a PITR from the third incremental;
 *  - kills mid-copy (the agent, its ssh, the barman process) leave a FAILED backup, never DONE,
 *    earlier backups untouched; the next backup resumes (fewer bytes than a full one);
 *  - a page altered in transit (test fault point in the agent) fails the backup;
 *  - bad input: an agent of another protocol version, an agent that talks garbage, a file that
 *    vanishes or shrinks during the copy.
 *
 * The fault points are set in the remote command through ssh_command (`... postgres@host
 * BARMAN_TS_AGENT_FAULT=... `), so only that backup's agents see them.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { cleanupAll, PgCluster, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { createBarmanEnv, listBackups, readLog, type BarmanEnv } from '../helpers/barman-env.js';
import { backupRecorder, createFingerprintData, FINGERPRINT, infoField, recoverFingerprint, startStreamingOnSettledData, walkLinks } from '../helpers/rsync-backup-fixture.js';
import { startSshd, type Sshd } from '../helpers/sshd.js';
import { BARMAN_USER, ensureBarmanUser, makeTempDir, POSTGRES_USER, runAs, sleep, waitFor } from '../helpers/system.js';

interface Stats {
  bytesIn: number;
  bytesOut: number;
  bytesTotal: number;
  filesLinked: number;
  filesUnchanged: number;
  filesDelta: number;
  filesFull: number;
  filesVanished: number;
  pagesSent: number;
  resumedFrom: string | null;
}

describe('transfer_method = agent', { timeout: 600_000 }, () => {
  let sshd: Sshd;
  let pg: PgCluster;
  let env: BarmanEnv;
  let tsOid = '';
  let ssh = '';
  const { ids, backupDir, infoText, backup } = backupRecorder(() => env);
  const stats = async (id: string): Promise<Stats> => {
    const meta = JSON.parse(await fs.readFile(path.join(env.home, env.server, 'agent', id, 'meta.json'), 'utf8')) as { stats: Stats };
    return meta.stats;
  };
  const setSsh = async (command: string): Promise<void> => {
    const text = await fs.readFile(env.configFile, 'utf8');
    await fs.writeFile(env.configFile, text.replace(/^ssh_command = .*$/m, `ssh_command = ${command}`));
  };

  before(async () => {
    await ensureBarmanUser();
    sshd = await startSshd();
    const cfg = await sshd.clientConfigFor(BARMAN_USER, [POSTGRES_USER]);
    ssh = `ssh -F ${cfg} postgres@127.0.0.1`;
    pg = await PgCluster.create();
    tsOid = await createFingerprintData(pg, 'agent-ts-');
    env = await createBarmanEnv(pg, {
      server: 'ag',
      extra: { backup_method: 'rsync', transfer_method: 'agent', reuse_backup: 'link', ssh_command: ssh, slot_name: 'barman_ag', parallel_jobs: '2' },
    });
    await startStreamingOnSettledData(env, pg);
  });

  after(async () => {
    await env?.stop();
    await cleanupAll();
    await sshd?.stop();
  });

  it('takes a full backup: a plain copy with a backup_manifest, every file checksummed, recovering the source data', async () => {
    const expected = await pg.psql(FINGERPRINT);
    const id = await backup();
    const text = await infoText(id);
    assert.equal(infoField(text, 'mode'), 'rsync-concurrent');
    assert.match(infoField(text, 'copy_stats'), /'number_of_workers': 2/);
    const s = await stats(id);
    assert.equal(s.filesLinked + s.filesUnchanged + s.filesDelta, 0, JSON.stringify(s));
    assert.ok(s.filesFull > 100, JSON.stringify(s));
    const data = path.join(backupDir(id), 'data');
    await fs.access(path.join(data, 'backup_manifest'));
    assert.match(await fs.readFile(path.join(data, 'backup_label'), 'utf8'), /^LABEL: Barman backup ag /m);
    assert.deepEqual(await fs.readdir(path.join(data, 'pg_wal')), []);
    // The metadata is outside base/<id>: Barman's walks of the backup never see it.
    assert.ok(!(await fs.readdir(backupDir(id))).some((n) => /agent|\.jsonl|\.bin$/.test(n)));
    const verify = await env.ok('verify-backup', env.server, id);
    assert.match(verify, /checksums of \d+ files OK/);
    assert.equal(await recoverFingerprint(env, id, { owner: BARMAN_USER, tempPrefix: 'agent' }), expected);
  });
});
