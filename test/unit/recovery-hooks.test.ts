import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadConfig, type ServerConfig } from '../../src/config/config.js';
import { runRecoveryHooks, type RecoveryHookInfo as RecoveryHookEnv } from '../../src/hooks/hooks.js';

let tmp: string;
const fast = { attemptPauseMs: 1, napMs: 1 };

async function srvWith(extra: string): Promise<ServerConfig> {
  const conf = path.join(tmp, `barman-${Math.random().toString(36).slice(2)}.conf`);
  await fsp.writeFile(conf, `[barman]\nbarman_home = ${tmp}\n\n[pg]\nconninfo = host=x\nbackup_method = postgres\n${extra}\n`);
  return loadConfig(conf).servers.get('pg') as ServerConfig;
}

const env: RecoveryHookEnv = {
  backupDir: '/b/base/20240101T000000',
  backupInfoPath: '/b/base/20240101T000000/backup.info',
  backupId: '20240101T000000',
  previousId: null,
  nextId: '20240102T000000',
  status: 'DONE',
  backupError: null,
  destination: '/restore/here',
  tablespaces: { tbs2: '/t2', tbs1: '/t1' },
  remoteCommand: null,
  recoverOptions: { target_time: '2024-01-01 00:00:00+00:00', target_action: 'promote' },
};

before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'rec-hooks-'));
});
after(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

describe('recovery hook scripts', () => {
  it('run in order with the Barman environment', async () => {
    const log = path.join(tmp, 'order.log');
    const srv = await srvWith(
      [
        `pre_recovery_script = echo "pre $BARMAN_PHASE $BARMAN_HOOK $BARMAN_RETRY $BARMAN_BACKUP_ID $BARMAN_DESTINATION_DIRECTORY $BARMAN_TABLESPACES $BARMAN_NEXT_ID" >> ${log}`,
        `pre_recovery_retry_script = echo "pre-retry $BARMAN_RECOVER_OPTIONS" >> ${log}`,
        `post_recovery_retry_script = echo "post-retry $BARMAN_ERROR" >> ${log}`,
        `post_recovery_script = echo "post $BARMAN_SERVER" >> ${log}; exit 3`,
      ].join('\n'),
    );
    const warnings: string[] = [];
    await runRecoveryHooks(srv, 'pre', env, { warning: (m) => warnings.push(m) }, fast);
    await runRecoveryHooks(srv, 'post', { ...env, error: 'it broke' }, { warning: (m) => warnings.push(m) }, fast);
    assert.equal(
      await fsp.readFile(log, 'utf8'),
      [
        'pre pre recovery_script 0 20240101T000000 /restore/here {"tbs1":"/t1","tbs2":"/t2"} 20240102T000000',
        'pre-retry {"target_action":"promote","target_time":"2024-01-01 00:00:00+00:00"}',
        'post-retry it broke',
        'post pg',
        '',
      ].join('\n'),
    );
    assert.equal(warnings.length, 1, 'a failing standard hook is only reported');
  });

  it('retries a retry hook until it succeeds, and aborts on 63 in the pre phase', async () => {
    const counter = path.join(tmp, 'count');
    await fsp.writeFile(counter, '');
    const srv = await srvWith(`pre_recovery_retry_script = echo x >> ${counter}; test $(wc -l < ${counter}) -ge 3`);
    await runRecoveryHooks(srv, 'pre', env, {}, fast);
    assert.equal((await fsp.readFile(counter, 'utf8')).split('\n').length - 1, 3);

    const abort = await srvWith('pre_recovery_retry_script = exit 63\npost_recovery_retry_script = exit 63');
    await assert.rejects(runRecoveryHooks(abort, 'pre', env, {}, fast), /asked to abort the restore/);
    await runRecoveryHooks(abort, 'post', env, {}, fast);
    const cont = await srvWith('pre_recovery_retry_script = exit 62');
    await runRecoveryHooks(cont, 'pre', env, {}, fast);
  });
});
