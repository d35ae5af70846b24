/** The campaign table: every case family, in the order they run (the world carries over). */
import { backupCases } from './cases-backup.js';
import { catalogCases } from './cases-catalog.js';
import { cloudCases } from './cases-cloud.js';
import { cloudBackupCases } from './cases-cloud-backup.js';
import { deleteHooksCases } from './cases-delete-hooks.js';
import { putWalCases } from './cases-put-wal.js';
import { walCases } from './cases-wal.js';
import { syncCases } from './cases-sync.js';
import { timelineCases } from './cases-timeline.js';
import type { FaultCase } from './types.js';

export function allCases(): FaultCase[] {
  const cases = [...backupCases(), ...catalogCases(), ...walCases(), ...putWalCases(), ...deleteHooksCases(), ...syncCases(), ...timelineCases(), ...cloudCases(), ...cloudBackupCases()];
  const ids = new Set<string>();
  for (const c of cases) {
    if (ids.has(c.id)) throw new Error(`duplicate case id ${c.id}`);
    ids.add(c.id);
  }
  return cases;
}
