/**
 * encryption = gpg on real PostgreSQL 15, with the real gpg and a key of the barman user:
 *  - barman-ts archives WAL encrypted (streaming), backs up (tar + gzip) into base.tar.gz.gpg,
 *    records `encryption=gpg`, and recovers it; the recovered cluster starts with every row;
 *  - a catalog in Barman 3.14+'s encrypted format made by hand with nothing but gpg (WAL
 *    encrypted under their plain names with `gpg` in xlog.db's fifth column, base.tar.gz.gpg,
 *    backup.info `encryption=gpg`) is recovered by barman-ts, on a server whose configuration
 *    no longer encrypts (only encryption_passphrase_command), as after turning encryption off.
 */
import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseXlogDb, formatXlogDbLine } from '../../src/catalog/xlogdb.js';
import { isOpenPgpMessage } from '../../src/util/gpg.js';
import { pyStatMtime } from '../../src/util/pytime.js';
import { createBarmanEnv, listBackups, startStreaming, type BarmanEnv } from '../helpers/barman-env.js';
import { createGpgHome, type GpgHome } from '../helpers/gpg.js';
import { cleanupAll, PgCluster, startRecoveredCluster } from '../helpers/pg-cluster.js';
import { BARMAN_USER, chownR } from '../helpers/system.js';

async function backupInfoFile(env: BarmanEnv, id: string): Promise<string> {
  const meta = path.join(env.home, env.server, 'meta', `${id}-backup.info`);
  return existsSync(meta) ? meta : path.join(env.home, env.server, 'base', id, 'backup.info');
}

async function head(file: string): Promise<Buffer> {
  const fh = await fs.open(file, 'r');
  try {
    const b = Buffer.alloc(16);
    const { bytesRead } = await fh.read(b, 0, 16, 0);
    return b.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** Every archived file of a server (wals/<hash>/* and wals/*.history). */
async function archivedFiles(env: BarmanEnv): Promise<string[]> {
  const wals = path.join(env.home, env.server, 'wals');
  const out: string[] = [];
  for (const e of await fs.readdir(wals, { withFileTypes: true })) {
    if (e.isDirectory()) for (const f of await fs.readdir(path.join(wals, e.name))) out.push(path.join(wals, e.name, f));
    else if (/^[0-9A-F]{8}\.history$/.test(e.name)) out.push(path.join(wals, e.name));
  }
  return out.sort();
}

describe('encryption = gpg', () => {
  let pg: PgCluster;
  let key: GpgHome;
  let enc: BarmanEnv;
  let handmade: BarmanEnv;
  const savedHome = process.env.GNUPGHOME;

  before(async () => {
    pg = await PgCluster.create();
    key = await createGpgHome({ owner: BARMAN_USER });
    // The barman processes (and what cron starts) find the barman user's keyring here.
    process.env.GNUPGHOME = key.home;
    await pg.psql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'first' FROM generate_series(1, 1000) g;");
    enc = await createBarmanEnv(pg, {
      server: 'enc',
      extra: {
        slot_name: 'barman_enc',
        compression: 'gzip',
        backup_compression: 'gzip',
        encryption: 'gpg',
        encryption_key_id: key.fingerprint,
        encryption_passphrase_command: `"${key.passphraseCommand}"`,
      },
    });
    handmade = await createBarmanEnv(pg, { server: 'handmade', extra: { slot_name: 'barman_hand', backup_compression: 'gzip' } });
    await startStreaming(enc);
    await startStreaming(handmade);
  });

  after(async () => {
    await enc?.stop();
    await handmade?.stop();
    await key?.remove();
    if (savedHome === undefined) delete process.env.GNUPGHOME;
    else process.env.GNUPGHOME = savedHome;
    await cleanupAll();
  });

  it('check says the encryption works', async () => {
    const out = await enc.run('check', enc.server);
    assert.match(out.stdout, /\tencryption: OK/);
  });

  it('backs up into encrypted tar files and archives encrypted WAL', async () => {
    await enc.ok('backup', '--wait', '--wait-timeout', '90', '--immediate-checkpoint', enc.server);
    const [b] = await listBackups(enc);
    assert.equal(b?.status, 'DONE');
    const id = b?.backup_id ?? '';
    const data = path.join(enc.home, enc.server, 'base', id, 'data');
    const names = (await fs.readdir(data)).sort();
    assert.deepEqual(names, ['backup_manifest', 'base.tar.gz.gpg']);
    assert.ok(isOpenPgpMessage(await head(path.join(data, 'base.tar.gz.gpg'))));
    const info = await fs.readFile(await backupInfoFile(enc, id), 'utf8');
    assert.match(info, /^encryption=gpg$/m);
    assert.match(info, /^compression=gzip$/m);
    const show = await enc.ok('show-backup', enc.server, id);
    assert.match(show, /Encryption\s+: gpg/);

    const files = await archivedFiles(enc);
    assert.ok(files.length >= 2);
    for (const f of files) assert.ok(isOpenPgpMessage(await head(f)), `${f} is encrypted`);
    const db = parseXlogDb(await fs.readFile(path.join(enc.home, enc.server, 'wals', 'xlog.db'), 'utf8'));
    assert.ok(db.length >= files.length);
    for (const e of db) {
      assert.equal(e.encryption, 'gpg', e.name);
      assert.equal(e.compression, 'gzip', e.name);
    }
  });

  it('recovers the encrypted backup and WAL written after it; the cluster starts with every row', async () => {
    await pg.psql("INSERT INTO t SELECT g, 'second' FROM generate_series(1001, 2000) g;");
    await enc.ok('switch-wal', '--force', '--archive', '--archive-timeout', '90', enc.server);
    const dest = await enc.newDir('restore-enc-');
    const res = await enc.run('recover', enc.server, 'latest', dest);
    assert.equal(res.code, 0, res.stderr + res.stdout);
    const { cluster, outcome } = await startRecoveredCluster(dest);
    try {
      assert.equal(outcome, 'primary');
      assert.equal(await cluster.psql('SELECT count(*) FROM t'), '2000');
      assert.equal(await cluster.psql("SELECT count(*) FROM t WHERE v = 'second'"), '1000');
    } finally {
      await cluster.destroy();
    }
  });

  it('recovers a catalog in Barman 3.14 encrypted format made by hand with gpg', async () => {
    await handmade.ok('backup', '--wait', '--wait-timeout', '90', '--immediate-checkpoint', handmade.server);
    await pg.psql("INSERT INTO t SELECT g, 'third' FROM generate_series(2001, 2500) g;");
    await handmade.ok('switch-wal', '--force', '--archive', '--archive-timeout', '90', handmade.server);
    const [b] = await listBackups(handmade);
    const id = b?.backup_id ?? '';
    assert.equal(b?.status, 'DONE');

    // What Barman 3.14+ leaves with encryption = gpg, built here with gpg alone.
    const srvDir = path.join(handmade.home, handmade.server);
    const data = path.join(srvDir, 'base', id, 'data');
    await key.encrypt(path.join(data, 'base.tar.gz'), path.join(data, 'base.tar.gz.gpg'));
    await fs.unlink(path.join(data, 'base.tar.gz'));
    const infoFile = await backupInfoFile(handmade, id);
    const info = await fs.readFile(infoFile, 'utf8');
    await fs.writeFile(infoFile, /^encryption=/m.test(info) ? info.replace(/^encryption=.*$/m, 'encryption=gpg') : `${info}encryption=gpg\n`);
    const xlogdb = path.join(srvDir, 'wals', 'xlog.db');
    const lines: string[] = [];
    for (const e of parseXlogDb(await fs.readFile(xlogdb, 'utf8'))) {
      const file = (await archivedFiles(handmade)).find((f) => path.basename(f) === e.name);
      assert.ok(file, e.name);
      const tmp = `${file}.gpg`;
      await key.encrypt(file, tmp);
      await fs.rename(tmp, file);
      const st = await fs.stat(file, { bigint: true });
      lines.push(formatXlogDbLine({ name: e.name, size: Number(st.size), time: pyStatMtime(st.mtimeNs), compression: e.compression, encryption: 'gpg' }));
    }
    await fs.writeFile(xlogdb, lines.join(''));
    await chownR(srvDir, BARMAN_USER);
    assert.match(await fs.readFile(xlogdb, 'utf8'), /\tgpg\n/);
    // The server does not encrypt any more; it can still read what was encrypted.
    await fs.appendFile(handmade.configFile, `encryption_passphrase_command = "${key.passphraseCommand}"\n`);

    const show = await handmade.ok('show-backup', handmade.server, id);
    assert.match(show, /Encryption\s+: gpg/);
    const dest = await handmade.newDir('restore-hand-');
    const res = await handmade.run('recover', handmade.server, id, dest);
    assert.equal(res.code, 0, res.stderr + res.stdout);
    const { cluster, outcome } = await startRecoveredCluster(dest);
    try {
      assert.equal(outcome, 'primary');
      assert.equal(await cluster.psql("SELECT count(*) FROM t WHERE v = 'third'"), '500');
    } finally {
      await cluster.destroy();
    }
  });
});
