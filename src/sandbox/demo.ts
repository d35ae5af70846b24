/**
 * The sandbox round trip (`npm run demo`): a throw-away PostgreSQL cluster and barman home in a
 * temporary directory; WAL streaming started by `barman cron`; a backup; timestamped rows; a
 * table dropped "by mistake"; a point-in-time recovery to the second before the drop; the
 * recovered cluster started and the rows shown. Everything is removed at the end.
 *
 * As root, PostgreSQL runs as `postgres` and barman as `barman` (as in production); as any other
 * user, both run as that user.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BARMAN_SCRIPT } from '../util/self.js';
import { as, BARMAN_USER, chownTo, freePort, LocalCluster, must, PG_USER } from './local.js';

const tty = process.stdout.isTTY === true;
const bold = (s: string) => (tty ? `\u001b[1m${s}\u001b[0m` : s);
const green = (s: string) => (tty ? `\u001b[32m${s}\u001b[0m` : s);
const dim = (s: string) => (tty ? `\u001b[2m${s}\u001b[0m` : s);


let stepNo = 0;
let stepStart = 0;
function step(text: string): void {
  stepNo++;
  stepStart = Date.now();
  process.stdout.write(`${bold(`[${stepNo}/9]`)} ${text}${tty ? ' …' : '\n'}`);
}
function done(detail = ''): void {
  const t = ((Date.now() - stepStart) / 1000).toFixed(1);
  process.stdout.write(`${tty ? '\r\u001b[2K' : ''}${green('✓')} ${bold(`[${stepNo}/9]`)} ${lastStep} ${dim(`(${t}s)`)}${detail ? `\n      ${detail}` : ''}\n`);
}
let lastStep = '';
function begin(text: string): void {
  lastStep = text;
  step(text);
}

export async function demo(): Promise<void> {
  const started = Date.now();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'barman-sandbox-'));
  fs.chmodSync(root, 0o755);
  const pgDir = path.join(root, 'pg');
  const home = path.join(root, 'barman');
  const restoreDir = path.join(root, 'restored');
  const conf = path.join(root, 'barman.conf');
  fs.mkdirSync(pgDir, { mode: 0o755 });
  fs.mkdirSync(home, { mode: 0o700 });
  chownTo(PG_USER, pgDir);
  chownTo(BARMAN_USER, home);
  const barman = (...args: string[]) => must(BARMAN_USER, process.execPath, [BARMAN_SCRIPT, '-c', conf, ...args]);
  let primary: LocalCluster | null = null;
  let recovered: LocalCluster | null = null;
  console.log(bold('barman-ts sandbox: backup, disaster, point-in-time recovery'));
  console.log(dim(`  working directory ${root} (PostgreSQL as '${PG_USER}', barman as '${BARMAN_USER}')\n`));
  try {
    begin('Creating a throw-away PostgreSQL cluster');
    primary = await LocalCluster.create(path.join(pgDir, 'data'), pgDir, 'shared_buffers = 32MB\n');
    const port = primary.port;
    const version = await primary.psql('SHOW server_version');
    done(`PostgreSQL ${version} on 127.0.0.1:${port}`);

    begin('Configuring barman (backup_method = postgres, WAL streaming with a replication slot)');
    fs.writeFileSync(
      conf,
      [
        '[barman]',
        `barman_home = ${home}`,
        `barman_user = ${BARMAN_USER}`,
        `log_file = ${path.join(home, 'barman.log')}`,
        'log_level = INFO',
        '',
        '[sandbox]',
        'description = "Sandbox PostgreSQL"',
        `conninfo = host=127.0.0.1 port=${port} user=postgres dbname=postgres`,
        `streaming_conninfo = host=127.0.0.1 port=${port} user=postgres`,
        'backup_method = postgres',
        'streaming_archiver = on',
        'slot_name = barman',
        'create_slot = auto',
        '',
      ].join('\n'),
      { mode: 0o644 },
    );
    await primary.psql(
      "CREATE TABLE orders (id serial PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT clock_timestamp(), note text); INSERT INTO orders (note) SELECT 'order before the backup #' || g FROM generate_series(1, 1000) g;",
    );
    done(`config ${conf}; table 'orders' with 1000 rows`);

    begin('Starting WAL streaming through `barman cron`');
    await barman('cron');
    for (let i = 0; i < 100; i++) {
      const r = await as(BARMAN_USER, process.execPath, [BARMAN_SCRIPT, '-c', conf, 'check', 'sandbox']);
      if (/receive-wal running: OK/.test(r.stdout) && /replication slot: OK/.test(r.stdout)) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    // As Barman's setup: a first WAL file archived proves that WAL arrives (backup checks it).
    await barman('switch-wal', '--force', '--archive', '--archive-timeout', '60', 'sandbox');
    done('pg_receivewal is streaming into the slot "barman"; a first WAL file is archived');

    begin('Taking a base backup (`barman backup sandbox --wait`)');
    await barman('backup', '--immediate-checkpoint', '--wait', '--wait-timeout', '60', 'sandbox');
    const list = (await barman('list-backups', 'sandbox')).trim();
    done(list);

    begin('Writing more timestamped rows after the backup');
    await primary.psql("INSERT INTO orders (note) SELECT 'order after the backup #' || g FROM generate_series(1, 500) g;");
    await new Promise((r) => setTimeout(r, 1100));
    const target = await primary.psql("SELECT to_char(clock_timestamp(), 'YYYY-MM-DD HH24:MI:SS.US TZH:TZM')");
    const rowsAtTarget = Number(await primary.psql('SELECT count(*) FROM orders'));
    await new Promise((r) => setTimeout(r, 1100));
    done(`${rowsAtTarget} rows in 'orders'; recovery target will be ${target}`);

    begin('Disaster: DROP TABLE orders "by mistake", then the server is stopped');
    await primary.psql('DROP TABLE orders');
    await barman('switch-wal', '--archive', '--archive-timeout', '60', 'sandbox');
    await primary.stop();
    done('table dropped; WAL up to the drop archived; primary stopped');

    begin(`Recovering to ${target} (\`barman recover sandbox latest DIR --target-time …\`)`);
    fs.mkdirSync(restoreDir, { mode: 0o700 });
    chownTo(BARMAN_USER, restoreDir);
    await barman('recover', 'sandbox', 'latest', restoreDir, '--target-time', target, '--target-action', 'promote');
    done(`restored into ${restoreDir}`);

    begin('Starting the recovered cluster and replaying WAL up to the target');
    chownTo(PG_USER, restoreDir, true);
    fs.chmodSync(restoreDir, 0o700);
    const rport = await freePort();
    fs.appendFileSync(path.join(restoreDir, 'postgresql.auto.conf'), `\nport = ${rport}\nunix_socket_directories = '${pgDir}'\n`);
    recovered = new LocalCluster(restoreDir, pgDir, rport);
    await recovered.start();
    await recovered.waitPromoted();
    done(`recovered cluster promoted on port ${rport}`);

    begin('Proof');
    const count = Number(await recovered.psql('SELECT count(*) FROM orders'));
    const last = await recovered.psql("SELECT id || ' | ' || created_at || ' | ' || note FROM orders ORDER BY id DESC LIMIT 3");
    done();
    console.log(`\n  rows before the disaster: ${bold(String(rowsAtTarget))}`);
    console.log(`  rows after the recovery:  ${bold(String(count))}`);
    console.log(`  last rows:\n${last.split('\n').map((l) => `    ${l}`).join('\n')}`);
    if (count !== rowsAtTarget) throw new Error(`recovered ${count} rows, expected ${rowsAtTarget}`);
    console.log(`\n${green('The data is back, as it was at')} ${bold(target)} ${dim(`(total ${((Date.now() - started) / 1000).toFixed(1)}s)`)}`);
  } finally {
    await recovered?.stop('immediate').catch(() => undefined);
    await as(BARMAN_USER, process.execPath, [BARMAN_SCRIPT, '-c', conf, 'receive-wal', '--stop', 'sandbox']).catch(() => undefined);
    await primary?.stop('immediate').catch(() => undefined);
    if (process.env.BARMAN_SANDBOX_KEEP) console.log(dim(`kept ${root}`));
    else fs.rmSync(root, { recursive: true, force: true });
  }
}

demo().catch((err: unknown) => {
  console.error(`\nsandbox failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
