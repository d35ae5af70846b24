/**
 * Synthetic backups for unit tests that need a catalog but no PostgreSQL: base/<id>/backup.info
 * (and an empty base/<id>/data) written under a server directory, e.g. a CliFixture's srvDir.
 * The defaults describe a plausible DONE backup of server `pg` on PostgreSQL 15; a test passes
 * only the fields it is about.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { DONE, newBackupInfo, writeBackupInfoFile, type BackupInfo } from '../../src/catalog/backup-info.js';
import { saveBackupExtras } from '../../src/catalog/catalog.js';
import { PyDateTime } from '../../src/util/pytime.js';
import { walName } from '../../src/wal/names.js';

/** 2024-01-<day> <hour>:<minute>:<second> UTC. */
export const utc2024 = (day: number, hour = 10, minute = 0, second = 0): PyDateTime =>
  PyDateTime.fromFields({ year: 2024, month: 1, day, hour, minute, second }, 0);

/**
 * Write the backup.info of backup `id` (`202401DDT100000`) into `<srvDir>/base/<id>/`, creating
 * its data directory; returns the backup directory. Defaults, from the day DD of the id: begun
 * at 10:00 and ended at 10:05 that day UTC, on timeline 1, all in WAL segment 2×DD (LSNs
 * 0/<seg>000028 to 0/<seg>000100), mode postgres, version 150004, pgdata /srv/pgdata.
 */
export async function addSyntheticBackup(srvDir: string, id: string, fields: Partial<BackupInfo> = {}): Promise<string> {
  const day = Number(id.slice(6, 8));
  const seg = day * 2;
  const lsnHigh = seg.toString(16).toUpperCase();
  const dir = path.join(srvDir, 'base', id);
  await fsp.mkdir(path.join(dir, 'data'), { recursive: true });
  const info = newBackupInfo({
    status: DONE,
    server_name: 'pg',
    mode: 'postgres',
    version: 150004,
    pgdata: '/srv/pgdata',
    timeline: 1,
    begin_wal: walName(1, 0, seg),
    end_wal: walName(1, 0, seg),
    begin_xlog: `0/${lsnHigh}000028`,
    end_xlog: `0/${lsnHigh}000100`,
    begin_time: utc2024(day, 10, 0),
    end_time: utc2024(day, 10, 5),
    ...fields,
  });
  // as the catalog writes it: backup.info in Barman 3.4's form, the rest in .barman-ts/
  await saveBackupExtras(dir, info);
  await writeBackupInfoFile(path.join(dir, 'backup.info'), info);
  return dir;
}
