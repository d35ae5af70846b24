/** The campaign table: every case family, in the order they run (the world carries over). */
import { putWalCases } from './cases-put-wal.js';
import type { FaultCase } from './types.js';

export function allCases(): FaultCase[] {
  const cases = [...putWalCases()];
  const ids = new Set<string>();
  for (const c of cases) {
    if (ids.has(c.id)) throw new Error(`duplicate case id ${c.id}`);
    ids.add(c.id);
  }
  return cases;
}
