/**
 * A cluster made with `initdb --wal-segsize=64` archives before its first backup: its segments
 * reach the archive through archive_command (bin/barman-wal-archive → ssh → put-wal → incoming/)
 * and through streaming (receive-wal → pg_receivewal → streaming/), and archive-wal accepts them
 * because each segment's own page header says it is 64 MiB long (no backup tells it). The same
 * running receive-wal then shows log rotation: once barman.log is renamed (as logrotate does),
 * its next lines go to a new barman.log.
 */
import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BARMAN_SCRIPT } from '../../src/util/self.js';
import { readSegmentHeader } from '../../src/wal/segment-header.js';
import { formatLsn, walToLsn } from '../../src/wal/names.js';
import { cleanupAll, PgCluster, quoteLiteral } from '../helpers/pg-cluster.js';
import { createBarmanEnv, startStreaming, type BarmanEnv } from '../helpers/barman-env.js';
import { startSshd, type Sshd } from '../helpers/sshd.js';
import { BARMAN_USER, POSTGRES_USER, ensureBarmanUser, makeTempDir, sleep } from '../helpers/system.js';

const ARCHIVE_CLIENT = path.join(path.dirname(path.dirname(BARMAN_SCRIPT)), 'bin', 'barman-wal-archive');
const SEG64 = 64 << 20;

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

describe('WAL segments of 64 MiB, before the first backup', { timeout: 600_000 }, () => {
  let sshd: Sshd;
  let pg: PgCluster;
  let env: BarmanEnv;
  let wals = '';

  before(async () => {
    await ensureBarmanUser();
    sshd = await startSshd();
    const sshConfig = await sshd.clientConfigFor(POSTGRES_USER, [BARMAN_USER]);
    const spool = await makeTempDir('walarchive-spool-', { owner: POSTGRES_USER, mode: 0o700 });
    pg = await PgCluster.create({ archiveMode: true, initdbArgs: ['--wal-segsize=64'] });
    env = await createBarmanEnv(pg, { extra: { archiver: 'on', streaming_archiver: 'on', create_slot: 'auto' } });
    await env.run('check', env.server); // creates the server directories
    wals = path.join(env.home, env.server, 'wals');
    const cmd = [ARCHIVE_CLIENT, '-c', env.configFile, '--ssh-config', sshConfig, '--spool-dir', spool, '-U', BARMAN_USER, '127.0.0.1', env.server, '%p'].join(' ');
    await pg.psql(`ALTER SYSTEM SET archive_command = ${quoteLiteral(cmd)}; SELECT pg_reload_conf();`);
    await pg.psql('CREATE TABLE t (id serial PRIMARY KEY, pad text)');
    await startStreaming(env, 60_000);
  });

  after(async () => {
    await env?.stop().catch(() => undefined);
    await cleanupAll();
    await sshd?.stop();
  });

  it('archive_command and streaming both deliver 64 MiB segments that archive-wal accepts', async () => {
    assert.equal(await pg.psql('SHOW wal_segment_size'), '64MB');
    const closed: string[] = [];
    for (let i = 0; i < 2; i++) {
      await pg.psql(`INSERT INTO t (pad) SELECT repeat('x', 200) FROM generate_series(1, 2000)`);
      closed.push(await pg.switchWal());
    }
    const last = closed.at(-1) ?? '';
    // archive_command: PostgreSQL counts the segment archived once put-wal stored it.
    await until(`${last} archived by archive_command`, async () => {
      const [done, failed] = (await pg.psql("SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver")).split('|');
      assert.equal(failed, '0', `archive_command failed:\n${pg.logTail()}`);
      return (done ?? '') >= last;
    });
    // streaming: pg_receivewal renamed the segment once complete.
    await until(`${last} streamed`, async () => existsSync(path.join(env.home, env.server, 'streaming', last)) || existsSync(path.join(wals, last.slice(0, 16), last)));

    const run = await env.run('archive-wal', env.server);
    assert.equal(run.code, 0, `${run.stdout}${run.stderr}`);
    for (const name of closed) {
      const file = path.join(wals, name.slice(0, 16), name);
      const st = await fs.stat(file);
      assert.equal(st.size, SEG64, `${name} archived whole`);
      assert.equal((await readSegmentHeader(file))?.segSize, SEG64);
    }
    const errorsDir = path.join(env.home, env.server, 'errors');
    assert.deepEqual(existsSync(errorsDir) ? await fs.readdir(errorsDir) : [], [], 'nothing set aside in errors/');
    const xlogdb = await fs.readFile(path.join(wals, 'xlog.db'), 'utf8');
    for (const name of closed) assert.match(xlogdb, new RegExp(`^${name}\\t${SEG64}\\t`, 'm'));
    const check = await env.run('check', env.server);
    assert.match(check.stdout, /archiver errors: OK/);
  });

  it('a running receive-wal writes into a new log file once the old one was renamed (logrotate)', async () => {
    const log = path.join(env.root, 'barman.log');
    const rotated = `${log}.1`;
    await fs.rename(log, rotated);
    // Some WAL first: with nothing written since the last switch, pg_switch_wal() does nothing
    // and names the segment finished before the rename.
    await pg.psql("SELECT pg_logical_emit_message(false, 'bts', 'after the rename')");
    const name = await pg.switchWal();
    // pg_receivewal --verbose reports each finished segment; receive-wal logs the line.
    const end = formatLsn(walToLsn(name, 0, SEG64) + BigInt(SEG64));
    const line = new RegExp(`INFO: .*pg_receivewal: .*finished segment at ${end} `);
    await until(`"finished segment at ${end}" in the new barman.log`, async () => line.test(await fs.readFile(log, 'utf8').catch(() => '')));
    assert.equal((await fs.stat(log)).mode & 0o777, 0o600);
    const old = await fs.readFile(rotated, 'utf8');
    assert.match(old, /pg_receivewal/, 'the rotated file holds the earlier lines');
    assert.doesNotMatch(old, line, 'the line after the rename did not go to the renamed file');
  });
});
