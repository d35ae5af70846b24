/**
 * How to run this very program again (cron starts `barman receive-wal` and `barman archive-wal`
 * as background processes; recovery writes a restore_command calling `barman get-wal`).
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

/** dist/src/util/self.js → <package>/bin/barman.js */
export const BARMAN_SCRIPT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'barman.js');

/** Program and leading arguments that start `barman`. */
export function barmanCommand(): [string, string[]] {
  return [process.execPath, [BARMAN_SCRIPT]];
}
