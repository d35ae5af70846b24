/**
 * The child processes of a backup and of WAL streaming: signals (SIGINT/SIGTERM become an abort
 * signal that every wait must watch) and passwords (never on a command line). PostgreSQL is not
 * needed: pg_basebackup and pg_receivewal are fakes found through path_prefix.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadConfig, type ServerConfig } from '../../src/config/config.js';
import { WAITING_FOR_WALS, newBackupInfo, readBackupInfoFile } from '../../src/catalog/backup-info.js';
import { classicInfoFile, loadCatalog, saveBackupInfo } from '../../src/catalog/catalog.js';
import { settle } from '../../src/backup/backup.js';
import { basebackupArgs, runBasebackup, tablespaceMappingArg, type BasebackupRequest } from '../../src/backup/postgres-executor.js';
import { conninfoForChild, parseConninfo } from '../../src/postgres/conninfo.js';
import { BarmanError } from '../../src/util/errors.js';
import { createSlot, receiveWal } from '../../src/wal/receive-wal.js';

let tmpRoot = '';
let serial = 0;

before(() => {
  tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'bts-backup-proc-'));
});

after(() => {
  fs.rmSync(tmpRoot, { recursive: true, force: true });
});

interface Fake {
  srv: ServerConfig;
  dir: string;
  /** Where the fakes write their arguments (one a line) and $PGPASSWORD. */
  argsFile: string;
  pwFile: string;
}

/**
 * A server whose path_prefix holds fake pg_basebackup and pg_receivewal: they record their
 * arguments and PGPASSWORD, then run `body` (default: exit 0).
 */
function fakeServer(serverOptions: Record<string, string> = {}, body = 'exit 0'): Fake {
  const dir = path.join(tmpRoot, `f${++serial}`);
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  const argsFile = path.join(dir, 'args');
  const pwFile = path.join(dir, 'pw');
  const script = `#!/bin/sh\nprintf '%s\\n' "$@" > '${argsFile}'\nprintf '%s' "\${PGPASSWORD-<unset>}" > '${pwFile}'\n${body}\n`;
  for (const name of ['pg_basebackup', 'pg_receivewal']) fs.writeFileSync(path.join(bin, name), script, { mode: 0o755 });
  const conf = path.join(dir, 'barman.conf');
  const opts: Record<string, string> = { conninfo: 'host=127.0.0.1 user=barman', backup_method: 'postgres', path_prefix: bin, ...serverOptions };
  fs.writeFileSync(conf, `[barman]\nbarman_home = ${dir}/home\n\n[pg]\n${Object.entries(opts).map(([k, v]) => `${k} = ${v}`).join('\n')}\n`);
  const srv = loadConfig(conf).servers.get('pg');
  assert.ok(srv);
  return { srv, dir, argsFile, pwFile };
}

function request(f: Fake, signal?: AbortSignal): BasebackupRequest {
  return { srv: f.srv, destDir: path.join(f.dir, 'base', '20240101T000000'), tablespaces: [], immediateCheckpoint: true, label: 'barman', signal };
}

const recordedArgs = (f: Fake) => fs.readFileSync(f.argsFile, 'utf8').split('\n').filter((l) => l !== '');

describe('signals during a backup', () => {
  it('never starts pg_basebackup once the abort signal fired', async () => {
    const f = fakeServer();
    const abort = new AbortController();
    abort.abort(); // SIGINT arrived while we were connecting to PostgreSQL
    await assert.rejects(runBasebackup(request(f, abort.signal)), (err: Error) => err instanceof BarmanError && /interrupted/i.test(err.message));
    assert.ok(!fs.existsSync(f.argsFile), 'pg_basebackup was started');
  });

  it('stops a running pg_basebackup on abort (the backup then ends FAILED)', async () => {
    const f = fakeServer({}, 'exec sleep 30');
    const abort = new AbortController();
    const started = Date.now();
    const copy = runBasebackup(request(f, abort.signal));
    while (!fs.existsSync(f.pwFile)) await new Promise((r) => setTimeout(r, 20));
    abort.abort();
    await assert.rejects(copy, /pg_basebackup: killed by SIGTERM/);
    assert.ok(Date.now() - started < 10_000);
  });

  async function waitingBackup(f: Fake) {
    const id = '20240101T000000';
    // WALs 1..3 are needed and none is archived: --wait would wait forever.
    await saveBackupInfo(
      f.srv,
      id,
      newBackupInfo({ status: WAITING_FOR_WALS, mode: 'postgres', version: 150000, timeline: 1, begin_wal: '000000010000000000000001', end_wal: '000000010000000000000003' }),
      { create: true },
    );
    const entry = (await loadCatalog(f.srv))[0];
    assert.ok(entry);
    return entry;
  }

  it('a signal stops `backup --wait`, leaving the backup WAITING_FOR_WALS', async () => {
    const f = fakeServer();
    const entry = await waitingBackup(f);
    const abort = new AbortController();
    let archiveRuns = 0;
    const timer = setTimeout(() => abort.abort(), 300);
    const started = Date.now();
    try {
      await assert.rejects(
        settle(f.srv, entry, { wait: true, waitTimeoutSec: 20 }, { archive: async () => void archiveRuns++ }, abort.signal),
        (err: Error) => err instanceof BarmanError && /Interrupted while waiting/.test(err.message) && err.message.includes(WAITING_FOR_WALS),
      );
    } finally {
      clearTimeout(timer);
    }
    assert.ok(Date.now() - started < 5_000, 'the wait ended at once');
    assert.ok(archiveRuns >= 1);
    assert.equal((await readBackupInfoFile(classicInfoFile(f.srv, entry.id))).status, WAITING_FOR_WALS);
  });

  it('a signal that came before the wait stops it before archiving', async () => {
    const f = fakeServer();
    const entry = await waitingBackup(f);
    const abort = new AbortController();
    abort.abort();
    let archiveRuns = 0;
    await assert.rejects(settle(f.srv, entry, { wait: true, waitTimeoutSec: 5 }, { archive: async () => void archiveRuns++ }, abort.signal), BarmanError);
    assert.equal(archiveRuns, 0);
    assert.equal((await readBackupInfoFile(classicInfoFile(f.srv, entry.id))).status, WAITING_FOR_WALS);
  });
});

describe('passwords never on a command line', () => {
  it('conninfoForChild moves the password to PGPASSWORD', () => {
    const kv = conninfoForChild("host=h user=u password='s3 cr\\'et' dbname=d", { application_name: 'barman' });
    assert.deepEqual(parseConninfo(kv.conninfo), { host: 'h', user: 'u', dbname: 'd', application_name: 'barman' });
    assert.deepEqual(kv.env, { PGPASSWORD: "s3 cr'et" });
    const uri = conninfoForChild('postgresql://u:p%40ss@h:5433/db?sslmode=require');
    assert.ok(!uri.conninfo.includes('p@ss') && !uri.conninfo.includes('password'), uri.conninfo);
    assert.deepEqual(uri.env, { PGPASSWORD: 'p@ss' });
    assert.deepEqual(conninfoForChild('host=h').env, {});
  });

  it('pg_basebackup gets the password through its environment only', async () => {
    const f = fakeServer({ conninfo: 'host=127.0.0.1 user=barman password=s3cr3t' });
    const ownPassword = process.env.PGPASSWORD;
    const { args, env } = basebackupArgs(request(f), false);
    assert.ok(!args.join(' ').includes('s3cr3t'));
    assert.deepEqual(env, { PGPASSWORD: 's3cr3t' });
    await runBasebackup(request(f));
    const recorded = recordedArgs(f);
    assert.ok(recorded.some((a) => a.startsWith('--dbname=') && a.includes('host=127.0.0.1')));
    assert.ok(!recorded.join('\n').includes('s3cr3t'), recorded.join(' '));
    assert.equal(fs.readFileSync(f.pwFile, 'utf8'), 's3cr3t');
    assert.equal(process.env.PGPASSWORD, ownPassword, 'our own environment is untouched');
  });

  it('pg_receivewal gets the password through its environment only', async () => {
    const f = fakeServer({ streaming_conninfo: 'host=127.0.0.1 user=streaming_barman password=s3cr3t' });
    assert.equal(await receiveWal(f.srv), 0);
    const recorded = recordedArgs(f);
    assert.ok(recorded.some((a) => a.startsWith('--dbname=') && a.includes('user=streaming_barman')));
    assert.ok(!recorded.join('\n').includes('s3cr3t'), recorded.join(' '));
    assert.equal(fs.readFileSync(f.pwFile, 'utf8'), 's3cr3t');

    const g = fakeServer({ streaming_conninfo: 'host=127.0.0.1 password=an0ther', slot_name: 'barman' });
    await createSlot(g.srv, true);
    assert.ok(recordedArgs(g).includes('--create-slot'));
    assert.ok(!recordedArgs(g).join('\n').includes('an0ther'));
    assert.equal(fs.readFileSync(g.pwFile, 'utf8'), 'an0ther');
  });
});

describe('pg_basebackup --tablespace-mapping', () => {
  it('escapes = in both directories and refuses a directory ending in a backslash', () => {
    assert.equal(tablespaceMappingArg('/srv/ts a', '/b/base/1/16384'), '--tablespace-mapping=/srv/ts a=/b/base/1/16384');
    assert.equal(tablespaceMappingArg('/srv/x=y $z', '/home/b=c/16384'), '--tablespace-mapping=/srv/x\\=y $z=/home/b\\=c/16384');
    // A backslash that does not precede = stays as it is; one that does is kept by pg_basebackup too.
    assert.equal(tablespaceMappingArg('/srv/a\\b', '/d'), '--tablespace-mapping=/srv/a\\b=/d');
    assert.equal(tablespaceMappingArg('/srv/a\\=b', '/d'), '--tablespace-mapping=/srv/a\\\\=b=/d');
    assert.throws(() => tablespaceMappingArg('/srv/a\\', '/d'), /ends with a backslash/);
  });
});
