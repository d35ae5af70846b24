/**
 * The test sshd (test/helpers/sshd.ts) itself: a real key login from the postgres user to the
 * barman user runs this checkout's `barman`, and a key that was never authorised is refused.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startSshd, type Sshd } from '../helpers/sshd.js';
import { BARMAN_USER, POSTGRES_USER, ensureBarmanUser, removeTempDirs, runAs } from '../helpers/system.js';
import { versionText } from '../../src/version.js';

describe('test sshd harness', () => {
  let sshd: Sshd;
  let pgConfig: string;

  before(async () => {
    await ensureBarmanUser();
    sshd = await startSshd();
    pgConfig = await sshd.clientConfigFor(POSTGRES_USER, [BARMAN_USER]);
  });

  after(async () => {
    await sshd?.stop();
    await removeTempDirs();
  });

  it('runs `barman --version` of this checkout as barman, logged in with postgres\'s key', async () => {
    const r = await runAs(POSTGRES_USER, 'ssh', ['-F', pgConfig, `${BARMAN_USER}@127.0.0.1`, 'barman', '--version'], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, `ssh failed: ${r.stderr}\n--- sshd log ---\n${sshd.log()}`);
    assert.equal(r.stdout.trim(), versionText());
    const who = await runAs(POSTGRES_USER, 'ssh', ['-F', pgConfig, `${BARMAN_USER}@127.0.0.1`, 'id', '-un'], { timeoutMs: 60_000 });
    assert.equal(who.stdout.trim(), BARMAN_USER);
  });

  it('puts the barman wrapper first on the remote PATH', async () => {
    const r = await runAs(POSTGRES_USER, 'ssh', ['-F', pgConfig, `${BARMAN_USER}@127.0.0.1`, 'command', '-v', 'barman'], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), `${sshd.binDir}/barman`);
  });

  it('refuses a key that was not authorised for the login user', async () => {
    // barman has a key pair and a config, but only postgres's key may log in as barman;
    // barman's key is authorised nowhere, and postgres's key is not authorised for postgres.
    const barmanConfig = await sshd.clientConfigFor(BARMAN_USER);
    const wrongKey = await runAs(BARMAN_USER, 'ssh', ['-F', barmanConfig, `${BARMAN_USER}@127.0.0.1`, 'true'], { timeoutMs: 60_000 });
    assert.equal(wrongKey.code, 255);
    assert.match(wrongKey.stderr, /Permission denied \(publickey\)/);
    const wrongLogin = await runAs(POSTGRES_USER, 'ssh', ['-F', pgConfig, `${POSTGRES_USER}@127.0.0.1`, 'true'], { timeoutMs: 60_000 });
    assert.equal(wrongLogin.code, 255);
    assert.match(wrongLogin.stderr, /Permission denied \(publickey\)/);
  });

  it('lets a key in once authorize() names it', async () => {
    await sshd.authorize(BARMAN_USER, BARMAN_USER);
    const barmanConfig = await sshd.clientConfigFor(BARMAN_USER);
    const r = await runAs(BARMAN_USER, 'ssh', ['-F', barmanConfig, `${BARMAN_USER}@barman-host`, 'echo', 'ok'], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, `${r.stderr}\n${sshd.log()}`);
    assert.equal(r.stdout.trim(), 'ok');
  });

  it('refuses a server whose host key is not the known one', async () => {
    const other = await startSshd();
    try {
      // Same client config, other server (other host key) on its port.
      const r = await runAs(POSTGRES_USER, 'ssh', ['-F', pgConfig, '-p', String(other.port), `${BARMAN_USER}@127.0.0.1`, 'true'], { timeoutMs: 60_000 });
      assert.equal(r.code, 255);
      assert.match(r.stderr, /Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/);
    } finally {
      await other.stop();
    }
  });
});
