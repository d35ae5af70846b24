/**
 * encryption = gpg without PostgreSQL, with the real gpg and a key generated for the run:
 * recognising OpenPGP messages, Barman's configuration rules, archive-wal storing encrypted WAL
 * under plain names (xlog.db fifth column `gpg`), get-wal / put-wal / rebuild-xlogdb reading
 * them, a catalog made by hand in Barman's format, and encrypted tar files extracted for a
 * restore.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import tar from 'tar-stream';
import { newBackupInfo } from '../../src/catalog/backup-info.js';
import { saveBackupInfo } from '../../src/catalog/catalog.js';
import { encryptionConfigProblem, gpgRunner, serverDecryptor } from '../../src/catalog/encryption.js';
import { formatXlogDbLine, parseXlogDb } from '../../src/catalog/xlogdb.js';
import { loadConfig } from '../../src/config/config.js';
import { extractTar } from '../../src/recovery/copy.js';
import { copyWals, readArchivedText } from '../../src/recovery/wal.js';
import { isOpenPgpMessage } from '../../src/util/gpg.js';
import { pyStatMtime } from '../../src/util/pytime.js';
import { archiveWal, walArchivePath } from '../../src/wal/archiver.js';
import { createGpgHome, type GpgHome } from '../helpers/gpg.js';
import { makeTestServer, type TestServer } from '../helpers/server-fixture.js';
import { BARMAN_BIN, syntheticWal, untar } from '../helpers/wal-tar.js';
import { withSegmentHeader } from '../helpers/wal-segment.js';
import { encryptTarBackup } from '../../src/backup/encrypt.js';

/** Small segments (a backup with this xlog_segment_size sets the server's segment size). */
const SEG = 1024 * 1024;
/** A synthetic segment `name` that carries its page header (the archiver checks it). */
const segWal = (seed: number, name: string): Buffer => withSegmentHeader(syntheticWal(seed, SEG), name);
const S1 = '000000010000000000000001';
const S2 = '000000010000000000000002';
const S3 = '000000010000000000000003';
const HISTORY = '00000002.history';
const HISTORY_TEXT = '1\t0/3000000\tno recovery target specified\n';

let key: GpgHome;
let root = '';
let serial = 0;
const savedHome = process.env.GNUPGHOME;

before(async () => {
  key = await createGpgHome();
  // In-process calls (archiveWal, copyWals) and the CLI children find the keyring here.
  process.env.GNUPGHOME = key.home;
  root = await fsp.mkdtemp(path.join(os.tmpdir(), 'barman-enc-'));
});

after(async () => {
  if (savedHome === undefined) delete process.env.GNUPGHOME;
  else process.env.GNUPGHOME = savedHome;
  await key?.remove();
  await fsp.rm(root, { recursive: true, force: true });
});

/** A synthetic server the CLI runs as the current user (barman_user), with `extra` options. */
function plainServer(extra: Record<string, string>): TestServer {
  const t = makeTestServer(path.join(root, `s${++serial}`), extra);
  fs.writeFileSync(t.conf, fs.readFileSync(t.conf, 'utf8').replace('[barman]\n', `[barman]\nbarman_user = ${os.userInfo().username}\n`));
  const srv = loadConfig(t.conf).servers.get('pg');
  assert.ok(srv);
  return { ...t, srv };
}

async function server(extra: Record<string, string> = {}): Promise<TestServer> {
  const t = plainServer({
    encryption: 'gpg',
    encryption_key_id: key.fingerprint,
    encryption_passphrase_command: key.passphraseCommand,
    backup_compression: 'gzip',
    ...extra,
  });
  await saveBackupInfo(t.srv, '20240101T000000', newBackupInfo({ status: 'DONE', xlog_segment_size: SEG }), { create: true });
  return t;
}

function cli(t: TestServer, args: string[]): { code: number | null; stdout: Buffer; stderr: string } {
  const r = spawnSync(process.execPath, [BARMAN_BIN, '-c', t.conf, ...args], { env: { ...process.env, GNUPGHOME: key.home }, maxBuffer: 64 << 20 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

const head = (file: string) => fs.readFileSync(file).subarray(0, 16);

/** What Barman does to read an archived file: `gpg --decrypt` with the passphrase. */
async function gpgDecrypt(file: string): Promise<Buffer> {
  const out = path.join(root, `dec-${++serial}`);
  const r = await key.gpg(['--batch', '--yes', '--pinentry-mode', 'loopback', '--passphrase-fd', '0', '--output', out, '--decrypt', file], `${key.passphrase}\n`);
  assert.equal(r.code, 0, r.stderr);
  return fs.readFileSync(out);
}

describe('recognising encrypted files', () => {
  it('knows the messages gpg writes (public key and symmetric, binary and armored)', async () => {
    const plain = path.join(root, 'plain');
    fs.writeFileSync(plain, syntheticWal(1, 4096));
    const pk = path.join(root, 'pk.gpg');
    await key.encrypt(plain, pk);
    assert.ok(isOpenPgpMessage(head(pk)));
    const sym = path.join(root, 'sym.gpg');
    assert.equal((await key.gpg(['--batch', '--yes', '--pinentry-mode', 'loopback', '--passphrase', 'x', '--symmetric', '--output', sym, plain])).code, 0);
    assert.ok(isOpenPgpMessage(head(sym)));
    const asc = path.join(root, 'pk.asc');
    assert.equal((await key.gpg(['--batch', '--yes', '--trust-model', 'always', '--armor', '-e', '-r', key.fingerprint, '-o', asc, plain])).code, 0);
    assert.ok(isOpenPgpMessage(head(asc)));
    // An RSA session key packet, as file(1) knows it (old format, 2-byte length, version 3).
    assert.ok(isOpenPgpMessage(Buffer.from([0x85, 0x01, 0x0c, 0x03, 0x73])));
  });

  it('never takes a WAL page, a history or label file or a compressed file for one', () => {
    const samples: Buffer[] = [
      // WAL page magics of PostgreSQL 9.0 .. 17 (little-endian uint16 at offset 0)
      ...[0xd064, 0xd066, 0xd071, 0xd075, 0xd07e, 0xd087, 0xd093, 0xd097, 0xd098, 0xd101, 0xd106, 0xd10d, 0xd110, 0xd113, 0xd116].map((m) => {
        const b = Buffer.alloc(16);
        b.writeUInt16LE(m, 0);
        b.writeUInt16LE(0x0007, 2);
        return b;
      }),
      Buffer.from(HISTORY_TEXT),
      Buffer.from('START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n'),
      zlib.gzipSync(Buffer.from('x')),
      zlib.brotliCompressSync(Buffer.from('x')),
      Buffer.from([0x42, 0x5a, 0x68, 0x39]),
      Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]),
      Buffer.from([0x28, 0xb5, 0x2f, 0xfd]),
      Buffer.from([0x04, 0x22, 0x4d, 0x18]),
      Buffer.from([0xff, 0x06, 0x00, 0x00, 0x73, 0x4e, 0x61, 0x50, 0x70, 0x59]),
      Buffer.alloc(0),
      // other OpenPGP packets (a signature, a literal data packet) are not encrypted messages
      Buffer.from([0x89, 0x01, 0x33, 0x04, 0x00]),
      Buffer.from([0xcb, 0x0d, 0x62, 0x00]),
    ];
    for (const s of samples) assert.equal(isOpenPgpMessage(s), false, s.toString('hex'));
  });
});

describe('configuration rules (Barman: encrypted backups are pg_basebackup tar files)', () => {
  const base = { encryption: 'gpg', encryption_key_id: 'K', backup_method: 'postgres', backup_compression: 'gzip', backup_compression_format: 'tar' } as const;
  it('names what is missing or incompatible', () => {
    assert.equal(encryptionConfigProblem(base), null);
    assert.equal(encryptionConfigProblem({ ...base, backup_compression_format: null }), null);
    assert.equal(encryptionConfigProblem({ ...base, backup_compression: 'none' }), null);
    assert.equal(encryptionConfigProblem({ ...base, encryption: 'none' }), null);
    assert.equal(encryptionConfigProblem({ ...base, encryption_key_id: null }), 'Encryption is set as gpg, but encryption_key_id is unset');
    assert.equal(encryptionConfigProblem({ ...base, backup_method: 'rsync' }), 'Encryption is set as gpg, but backup_method != postgres');
    assert.equal(encryptionConfigProblem({ ...base, backup_compression: null }), 'Encryption is set as gpg, but backup_compression is unset');
    assert.equal(encryptionConfigProblem({ ...base, backup_compression_format: 'plain' }), 'Encryption is set as gpg, but backup_compression_format != tar');
  });

  it('check fails with the reason, and an archiver without a key archives nothing', async () => {
    const t = await server({ encryption_key_id: '' });
    fs.writeFileSync(path.join(t.incoming, S1), segWal(1, S1));
    const r = cli(t, ['check', 'pg']);
    assert.match(r.stdout.toString(), /\tencryption: FAILED \(Encryption is set as gpg, but encryption_key_id is unset\)/);
    assert.equal(r.code, 1);
    const a = cli(t, ['archive-wal', 'pg']);
    assert.equal(a.code, 1);
    assert.match(a.stderr, /encryption_key_id is unset: WAL files of server 'pg' are not archived/);
    assert.deepEqual(fs.readdirSync(t.incoming), [S1], 'the file waits in incoming/');
    assert.equal(fs.existsSync(walArchivePath(t.srv, S1)), false);

    const rsync = await server({ backup_method: 'rsync', ssh_command: 'ssh nobody@127.0.0.1' });
    assert.match(cli(rsync, ['check', 'pg']).stdout.toString(), /\tencryption: FAILED \(Encryption is set as gpg, but backup_method != postgres\)/);
  });
});

describe('archive-wal with encryption = gpg', () => {
  let t: TestServer;
  const wal = new Map<string, Buffer>();

  before(async () => {
    t = await server({ compression: 'gzip', backup_compression: 'gzip' });
    wal.set(S1, segWal(11, S1));
    wal.set(S2, segWal(12, S2));
    wal.set(`${S2}.00000028.backup`, Buffer.from('START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n'));
    wal.set(HISTORY, Buffer.from(HISTORY_TEXT));
    for (const [n, d] of wal) fs.writeFileSync(path.join(t.incoming, n), d);
    fs.writeFileSync(path.join(t.streaming, `${S3}.partial`), segWal(13, S3));
    fs.writeFileSync(path.join(t.streaming, S3), segWal(14, S3));
  });

  it('stores every file encrypted for the key under its plain name, compressed inside', async () => {
    const report = await archiveWal({ ...t.srv, streaming_archiver: true });
    assert.deepEqual(report.errors, []);
    for (const [n, d] of wal) {
      const file = walArchivePath(t.srv, n);
      assert.ok(isOpenPgpMessage(head(file)), `${n} is encrypted`);
      // What Barman does to read it: gpg --decrypt, then decompress (gzip inside).
      const inner = await gpgDecrypt(file);
      assert.deepEqual(zlib.gunzipSync(inner), d, n);
      assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    }
    assert.deepEqual(zlib.gunzipSync(await gpgDecrypt(walArchivePath(t.srv, S3))), segWal(14, S3));
    assert.deepEqual(fs.readdirSync(t.incoming), []);
    const tmpLeft = fs.readdirSync(path.join(t.wals, '0000000100000000')).filter((n) => n.endsWith('.tmp'));
    assert.deepEqual(tmpLeft, []);
  });

  it('records them in xlog.db with the encrypted size and gpg in the fifth column', () => {
    const text = fs.readFileSync(path.join(t.wals, 'xlog.db'), 'utf8');
    const lines = parseXlogDb(text);
    const byName = new Map(lines.map((l) => [l.name, l]));
    for (const n of [S1, S2, HISTORY, S3]) {
      const e = byName.get(n);
      assert.ok(e, n);
      assert.equal(e.encryption, 'gpg');
      assert.equal(e.compression, 'gzip');
      assert.equal(e.size, fs.statSync(walArchivePath(t.srv, n)).size);
    }
    assert.match(text, new RegExp(`^${S1}\\t\\d+\\t\\d+\\.\\d+\\tgzip\\tgpg$`, 'm'));
  });

  it('get-wal sends the plain content, or the compressed one with --keep-compression', () => {
    const r = cli(t, ['get-wal', 'pg', S1]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout, wal.get(S1));
    const kept = cli(t, ['get-wal', '--keep-compression', 'pg', S2]);
    assert.deepEqual(zlib.gunzipSync(kept.stdout), wal.get(S2));
    const z = cli(t, ['get-wal', '-z', 'pg', HISTORY]);
    assert.deepEqual(zlib.gunzipSync(z.stdout), wal.get(HISTORY));
    const out = path.join(root, `out-${++serial}`);
    fs.mkdirSync(out);
    assert.equal(cli(t, ['get-wal', '-o', out, 'pg', S2]).code, 0);
    assert.deepEqual(fs.readFileSync(path.join(out, S2)), wal.get(S2));
    assert.deepEqual(fs.readdirSync(out), [S2], 'no decrypted copy left behind');
  });

  it('get-wal --batch sends decrypted members with their checksums', async () => {
    const r = cli(t, ['get-wal', '--batch', '3', 'pg', S1]);
    assert.equal(r.code, 0, r.stderr);
    const members = await untar(r.stdout);
    assert.deepEqual(members.map((m) => m.name), [S1, S2, S3, 'SHA256SUMS']);
    assert.deepEqual(members[0]?.data, wal.get(S1));
    assert.deepEqual(members[2]?.data, segWal(14, S3));
  });

  it('get-wal without the passphrase command, or with a wrong passphrase, fails with a clear line', async () => {
    const noCmd = plainServer({ encryption: 'gpg', encryption_key_id: key.fingerprint });
    fs.mkdirSync(path.dirname(walArchivePath(noCmd.srv, S1)), { recursive: true });
    fs.copyFileSync(walArchivePath(t.srv, S1), walArchivePath(noCmd.srv, S1));
    const r = cli(noCmd, ['get-wal', 'pg', S1]);
    // The file is there but cannot be delivered: 200, never 1 ("not found" ends a recovery).
    assert.equal(r.code, 200);
    assert.equal(r.stdout.length, 0);
    assert.match(r.stderr, /^ERROR: WAL file '000000010000000000000001' of server 'pg' is encrypted: set encryption_passphrase_command for server 'pg' to decrypt it\n$/);

    const wrongFile = path.join(root, 'wrong-pass');
    fs.writeFileSync(wrongFile, 'not the passphrase\n');
    const bad = plainServer({ encryption: 'gpg', encryption_key_id: key.fingerprint, encryption_passphrase_command: `cat ${wrongFile}` });
    fs.mkdirSync(path.dirname(walArchivePath(bad.srv, S1)), { recursive: true });
    fs.copyFileSync(walArchivePath(t.srv, S1), walArchivePath(bad.srv, S1));
    const b = cli(bad, ['get-wal', 'pg', S1]);
    assert.equal(b.code, 200);
    assert.equal(b.stdout.length, 0);
    assert.match(b.stderr, /bad passphrase/);
    assert.doesNotMatch(b.stderr, /not the passphrase/, 'the passphrase is never printed');
  });

  it('a segment sent again is recognised through its decrypted content', async () => {
    fs.writeFileSync(path.join(t.incoming, S1), wal.get(S1) as Buffer);
    const same = await archiveWal(t.srv);
    assert.deepEqual(same.sources[0]?.matchingDuplicates, [S1]);
    assert.deepEqual(fs.readdirSync(t.incoming), []);
    fs.writeFileSync(path.join(t.incoming, S2), segWal(99, S2));
    const other = await archiveWal(t.srv);
    assert.deepEqual(other.sources[0]?.duplicates, [S2]);
    assert.ok(fs.readdirSync(t.errors).some((n) => n.startsWith(`${S2}.`) && n.endsWith('.duplicate')));
  });

  it('put-wal of an archived segment: already present, exit 0', async () => {
    const tarFile = await makeWalTar(S1, wal.get(S1) as Buffer);
    const r = spawnSync(process.execPath, [BARMAN_BIN, '-c', t.conf, 'put-wal', 'pg'], { input: tarFile, env: { ...process.env, GNUPGHOME: key.home } });
    assert.equal(r.status, 0, r.stderr.toString());
    assert.deepEqual(fs.readdirSync(t.incoming), []);
  });

  it('rebuild-xlogdb finds the encryption of every file', () => {
    const old = parseXlogDb(fs.readFileSync(path.join(t.wals, 'xlog.db'), 'utf8'));
    fs.unlinkSync(path.join(t.wals, 'xlog.db'));
    const r = cli(t, ['rebuild-xlogdb', 'pg']);
    assert.equal(r.code, 0, r.stderr);
    const after = parseXlogDb(fs.readFileSync(path.join(t.wals, 'xlog.db'), 'utf8'));
    assert.deepEqual(after.map((e) => e.name).sort(), [S1, S2, `${S2}.00000028.backup`, S3, HISTORY].sort());
    for (const e of after) {
      assert.equal(e.encryption, 'gpg', e.name);
      assert.equal(e.compression, null, 'hidden by the encryption');
      assert.equal(e.size, old.find((b) => b.name === e.name)?.size);
    }
  });
});

/** A put-wal stream (tar with the file and SHA256SUMS), as barman-wal-archive sends it. */
async function makeWalTar(name: string, data: Buffer): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const c of pack) chunks.push(c as Buffer);
  })();
  const sums = Buffer.from(`${createHash('sha256').update(data).digest('hex')} *${name}\n`);
  for (const [n, body] of [[name, data], ['SHA256SUMS', sums]] as const) {
    await new Promise<void>((resolve, reject) => pack.entry({ name: n, size: body.length }, body, (err) => (err ? reject(err) : resolve())));
  }
  pack.finalize();
  await collected;
  return Buffer.concat(chunks);
}

describe('a catalog written by Barman 3.14+ with encryption = gpg (made by hand)', () => {
  let t: TestServer;
  const plain = syntheticWal(21, SEG);
  const gz = syntheticWal(22, SEG);

  before(async () => {
    // Barman with compression = gzip archives WAL compressed then encrypted, under the plain
    // name, and appends `name size time compression gpg`; the catalog here is written with
    // nothing but gpg and the format of the spec.
    t = await server({ encryption_passphrase_command: key.passphraseCommand });
    const lines: string[] = [];
    const add = async (name: string, content: Buffer, compression: string | null) => {
      const dst = walArchivePath(t.srv, name);
      fs.mkdirSync(path.dirname(dst), { recursive: true });
      const src = path.join(root, `src-${++serial}`);
      fs.writeFileSync(src, compression === 'gzip' ? zlib.gzipSync(content) : content);
      await key.encrypt(src, dst);
      const st = fs.statSync(dst, { bigint: true });
      lines.push(formatXlogDbLine({ name, size: Number(st.size), time: pyStatMtime(st.mtimeNs), compression, encryption: 'gpg' }));
    };
    await add(S1, plain, null);
    await add(S2, gz, 'gzip');
    await add(HISTORY, Buffer.from(HISTORY_TEXT), null);
    fs.writeFileSync(path.join(t.wals, 'xlog.db'), lines.join(''));
    assert.match(fs.readFileSync(path.join(t.wals, 'xlog.db'), 'utf8'), /\tgzip\tgpg\n/);
  });

  it('get-wal serves each file in clear', () => {
    assert.deepEqual(cli(t, ['get-wal', 'pg', S1]).stdout, plain);
    assert.deepEqual(cli(t, ['get-wal', 'pg', S2]).stdout, gz);
    assert.equal(cli(t, ['get-wal', 'pg', HISTORY]).stdout.toString(), HISTORY_TEXT);
  });

  it('the restore WAL copy decrypts and decompresses, history files are read in clear', async () => {
    const dest = path.join(root, `pg_wal-${++serial}`);
    const d = serverDecryptor(t.srv, 'WAL');
    const bytes = await copyWals(
      [S1, S2].map((n) => ({ name: n, path: walArchivePath(t.srv, n), encryption: 'gpg' })),
      dest,
      { workers: 2, custom: { unidentifiedIsCustom: false }, decryptor: d },
    );
    assert.equal(bytes, 2 * SEG);
    assert.deepEqual(fs.readFileSync(path.join(dest, S1)), plain);
    assert.deepEqual(fs.readFileSync(path.join(dest, S2)), gz);
    assert.deepEqual(fs.readdirSync(dest).sort(), [S1, S2], 'no temporary file left');
    assert.equal(await readArchivedText(walArchivePath(t.srv, HISTORY), { unidentifiedIsCustom: false }, d), HISTORY_TEXT);
    await assert.rejects(
      copyWals([{ name: S1, path: walArchivePath(t.srv, S1) }], path.join(root, `x-${++serial}`), { workers: 1, custom: { unidentifiedIsCustom: false } }),
      /encryption_passphrase_command is needed/,
    );
  });
});

describe('encrypted tar backups', () => {
  it('encrypts base and tablespace tars into .gpg (manifest kept), and extracts them back', async () => {
    const dir = path.join(root, `tar-${++serial}`);
    const data = path.join(dir, 'data');
    const src = path.join(dir, 'src');
    fs.mkdirSync(path.join(src, 'global'), { recursive: true });
    fs.mkdirSync(data, { recursive: true });
    fs.writeFileSync(path.join(src, 'PG_VERSION'), '15\n');
    fs.writeFileSync(path.join(src, 'global', 'pg_control'), syntheticWal(5, 8192));
    const tarRun = spawnSync('tar', ['-czf', path.join(data, 'base.tar.gz'), '-C', src, '.']);
    assert.equal(tarRun.status, 0);
    spawnSync('tar', ['-cf', path.join(data, '16385.tar'), '-C', src, 'PG_VERSION']);
    fs.writeFileSync(path.join(data, 'backup_manifest'), '{}');

    const written = await encryptTarBackup({ encryption_key_id: key.fingerprint, path_prefix: null }, data);
    assert.deepEqual(written, ['16385.tar.gpg', 'base.tar.gz.gpg']);
    assert.deepEqual(fs.readdirSync(data).sort(), ['16385.tar.gpg', 'backup_manifest', 'base.tar.gz.gpg']);
    assert.ok(isOpenPgpMessage(head(path.join(data, 'base.tar.gz.gpg'))));
    // gpg alone (Barman's way) gives back the gzip'd tar
    assert.equal((await gpgDecrypt(path.join(data, 'base.tar.gz.gpg'))).subarray(0, 2).toString('hex'), '1f8b');

    const dest = path.join(dir, 'restored');
    const decrypt = { gpg: gpgRunner({ path_prefix: null }), passphrase: Buffer.from(`${key.passphrase}\n`) };
    await extractTar(path.join(data, 'base.tar.gz.gpg'), dest, 'gzip', ['PG_VERSION'], process.env, undefined, decrypt);
    assert.deepEqual(fs.readFileSync(path.join(dest, 'global', 'pg_control')), syntheticWal(5, 8192));
    assert.equal(fs.existsSync(path.join(dest, 'PG_VERSION')), false, 'excludes still apply');

    await assert.rejects(
      extractTar(path.join(data, '16385.tar.gpg'), path.join(dir, 'bad'), 'none', [], process.env, undefined, { ...decrypt, passphrase: Buffer.from('wrong\n') }),
      /bad passphrase/,
    );
  });

  it('refuses to record an encrypted backup that has no tar file', async () => {
    const dir = path.join(root, `empty-${++serial}`);
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'PG_VERSION'), '15\n');
    await assert.rejects(encryptTarBackup({ encryption_key_id: key.fingerprint, path_prefix: null }, dir), /no tar file to encrypt/);
  });
});
