/**
 * A catalog written by hand in Barman 3.4's format (the 29 backup.info keys 3.4 knows, xlog.db
 * lines of 4 columns), for golden tests of the console and JSON shapes: both Barman 3.4 and
 * barman-ts read it. Three backups of server `pg`:
 *   20240101T100000  DONE, postgres, two tablespaces, copy stats with 2.25 s of analysis;
 *   20240102T100000  DONE, rsync-concurrent, named 'nightly', 2 jobs, deduplicated to 10 %;
 *   20240103T100000  FAILED, with an error.
 * WAL segments 2..8 of timeline 1, 1 MiB + n bytes each, archived one an hour from
 * 2024-01-01 12:00 UTC (gzip). Times print as expected with TZ=UTC.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';

const common = (fields: Record<string, string>): string =>
  `${Object.entries({
    backup_label: 'None',
    begin_offset: '40',
    compression: 'None',
    config_file: '/srv/pgdata/postgresql.conf',
    error: 'None',
    hba_file: '/srv/pgdata/pg_hba.conf',
    ident_file: '/srv/pgdata/pg_ident.conf',
    included_files: 'None',
    mode: 'postgres',
    pgdata: '/srv/pgdata',
    server_name: 'pg',
    snapshots_info: 'None',
    status: 'DONE',
    systemid: '7300000000000000001',
    tablespaces: 'None',
    timeline: '1',
    version: '150004',
    xlog_segment_size: '16777216',
    backup_name: 'None',
    ...fields,
  })
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`)
    .join('\n')}\n`;

export const BARMAN34_BACKUPS: Readonly<Record<string, string>> = {
  '20240101T100000': common({
    backup_label:
      "'START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\\nCHECKPOINT LOCATION: 0/2000060\\nBACKUP METHOD: streamed\\nBACKUP FROM: primary\\nSTART TIME: 2024-01-01 10:00:00 UTC\\nLABEL: Barman backup pg 20240101T100000\\nSTART TIMELINE: 1\\n'",
    begin_time: '2024-01-01 10:00:00+00:00',
    begin_wal: '000000010000000000000002',
    begin_xlog: '0/2000028',
    copy_stats: "{'copy_time': 250.5, 'analysis_time': 2.25, 'total_time': 252.75}",
    deduplicated_size: '10485760',
    end_offset: '312',
    end_time: '2024-01-01 10:05:00+00:00',
    end_wal: '000000010000000000000003',
    end_xlog: '0/3000138',
    size: '10485760',
    tablespaces: "[('tbs1', 16385, '/srv/tbs1'), ('tbs2', 16386, '/srv/tbs2')]",
  }),
  '20240102T100000': common({
    begin_time: '2024-01-02 10:00:00+00:00',
    begin_wal: '000000010000000000000005',
    begin_xlog: '0/5000028',
    copy_stats: "{'copy_time': 100.0, 'analysis_time': 0.5, 'number_of_workers': 2, 'total_time': 100.5}",
    deduplicated_size: '2097152',
    end_offset: '312',
    end_time: '2024-01-02 10:05:00+00:00',
    end_wal: '000000010000000000000006',
    end_xlog: '0/6000138',
    mode: 'rsync-concurrent',
    size: '20971520',
    backup_name: 'nightly',
  }),
  '20240103T100000': common({
    begin_time: '2024-01-03 10:00:00+00:00',
    begin_wal: '000000010000000000000008',
    begin_xlog: '0/8000028',
    config_file: 'None',
    copy_stats: 'None',
    deduplicated_size: 'None',
    end_offset: 'None',
    end_time: 'None',
    end_wal: 'None',
    end_xlog: 'None',
    error: 'failure during backup copy (boom)',
    hba_file: 'None',
    ident_file: 'None',
    size: 'None',
    status: 'FAILED',
  }),
};

/** 2024-01-01 10:00:00 UTC */
export const BARMAN34_T0 = 1704103200;

/** `<name>\t<size>\t<time>\tgzip` for segments 2..8. */
export function barman34XlogDb(): string {
  let db = '';
  for (let n = 2; n <= 8; n++) db += `${barman34Wal(n)}\t${1048576 + n}\t${BARMAN34_T0 + n * 3600}.0\tgzip\n`;
  return db;
}

export const barman34Wal = (n: number): string => `0000000100000000${n.toString(16).toUpperCase().padStart(8, '0')}`;

/** Write the catalog under a server directory (`<barman_home>/pg`). */
export async function writeBarman34Catalog(srvDir: string): Promise<void> {
  for (const [id, text] of Object.entries(BARMAN34_BACKUPS)) {
    const dir = path.join(srvDir, 'base', id);
    await fsp.mkdir(path.join(dir, 'data'), { recursive: true });
    await fsp.writeFile(path.join(dir, 'backup.info'), text);
  }
  const hash = path.join(srvDir, 'wals', '0000000100000000');
  await fsp.mkdir(hash, { recursive: true });
  for (let n = 2; n <= 8; n++) await fsp.writeFile(path.join(hash, barman34Wal(n)), 'wal');
  await fsp.writeFile(path.join(srvDir, 'wals', 'xlog.db'), barman34XlogDb());
}
