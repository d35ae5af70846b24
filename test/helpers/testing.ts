/** Small helpers shared by unit tests. */
import { accessSync, constants as fsc } from 'node:fs';
import * as path from 'node:path';

/** Is `name` an executable somewhere on PATH? (tests of optional tools skip without it) */
export function hasProgram(name: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (!dir) continue;
    try {
      accessSync(path.join(dir, name), fsc.X_OK);
      return true;
    } catch {
      // keep looking
    }
  }
  return false;
}

/** Deterministic xorshift32, so that generated data and failures reproduce. */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>>= 0);
  };
}
