/**
 * Catalog commands at scale (issue 4): a synthetic server with 1,000 DONE backups and 200,000
 * archived WAL segments in xlog.db, then the time of `list-backups`, `status`, one `cron` pass
 * (retention classification included) and an `archive-wal` of 20 new segments into that catalog.
 * Target: each under 2 seconds.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { newBackupInfo, writeBackupInfoFile } from '../src/catalog/backup-info.js';
import { formatXlogDb, type XlogDbEntry } from '../src/catalog/xlogdb.js';
import { run } from '../src/util/proc.js';
import { PyDateTime } from '../src/util/pytime.js';
import { BARMAN_SCRIPT } from '../src/util/self.js';
import { walName } from '../src/wal/names.js';

const BACKUPS = 1000;
const WALS = 200_000;
const SEG = 16 * 1024 * 1024;

/** The n-th segment of timeline 1 (256 segments per log with 16 MiB segments). */
const seg = (n: number) => walName(1, Math.floor(n / 256), n % 256);

export async function catalogScale(): Promise<void> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'barman-scale-'));
  try {
    const home = path.join(root, 'home');
    const srvDir = path.join(home, 'big');
    const conf = path.join(root, 'barman.conf');
    fs.mkdirSync(path.join(srvDir, 'wals'), { recursive: true });
    fs.writeFileSync(
      conf,
      `[barman]\nbarman_home = ${home}\nbarman_user = ${os.userInfo().username}\n\n[big]\nconninfo = host=127.0.0.1 port=1 connect_timeout=2\nbackup_method = postgres\narchiver = on\nretention_policy = REDUNDANCY 1000\n`,
    );
    const t0 = Date.UTC(2024, 0, 1) / 1000;
    const entries: XlogDbEntry[] = [];
    for (let i = 0; i < WALS; i++) entries.push({ name: seg(i), size: SEG, time: t0 + i * 30, compression: null, encryption: null });
    fs.writeFileSync(path.join(srvDir, 'wals', 'xlog.db'), formatXlogDb(entries));
    const step = Math.floor(WALS / BACKUPS);
    for (let b = 0; b < BACKUPS; b++) {
      const begin = b * step;
      const when = new Date((t0 + begin * 30) * 1000);
      const id = `${when.getUTCFullYear()}${String(when.getUTCMonth() + 1).padStart(2, '0')}${String(when.getUTCDate()).padStart(2, '0')}T${String(when.getUTCHours()).padStart(2, '0')}${String(when.getUTCMinutes()).padStart(2, '0')}${String(when.getUTCSeconds()).padStart(2, '0')}`;
      const dir = path.join(srvDir, 'base', id);
      fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
      await writeBackupInfoFile(
        path.join(dir, 'backup.info'),
        newBackupInfo({
          status: 'DONE',
          mode: 'postgres',
          server_name: 'big',
          begin_wal: seg(begin),
          end_wal: seg(begin + 1),
          begin_xlog: '0/0',
          end_xlog: '0/0',
          timeline: 1,
          version: 150000,
          size: 1024 ** 3,
          begin_time: PyDateTime.fromEpochMicros(BigInt(t0 + begin * 30) * 1_000_000n, 0),
          end_time: PyDateTime.fromEpochMicros(BigInt(t0 + begin * 30 + 60) * 1_000_000n, 0),
        }),
      );
    }
    const incoming = path.join(srvDir, 'incoming');
    fs.mkdirSync(incoming, { recursive: true });
    const zero = Buffer.alloc(SEG);
    for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(incoming, seg(WALS + i)), zero);

    const time = async (...args: string[]) => {
      const s = process.hrtime.bigint();
      const r = await run(process.execPath, [BARMAN_SCRIPT, '-c', conf, ...args]);
      const secs = Number(process.hrtime.bigint() - s) / 1e9;
      if (r.code !== 0) throw new Error(`barman ${args.join(' ')} failed: ${r.stderr.trim()}`);
      return secs;
    };
    console.log(`CATALOG AT SCALE (${BACKUPS} backups, ${WALS} WAL segments in xlog.db; target < 2 s each)`);
    console.log(`  list-backups            ${(await time('list-backups', 'big')).toFixed(2).padStart(6)} s`);
    console.log(`  status                  ${(await time('status', 'big')).toFixed(2).padStart(6)} s   (PostgreSQL down: connection refused)`);
    console.log(`  cron (one pass)         ${(await time('cron')).toFixed(2).padStart(6)} s`);
    console.log(`  archive-wal (20 segs)   ${(await time('archive-wal', 'big')).toFixed(2).padStart(6)} s`);
  } finally {
    // cron may have started an archive-wal that is still finishing in there.
    fs.rmSync(root, { recursive: true, force: true, maxRetries: 20, retryDelay: 250 });
  }
}
