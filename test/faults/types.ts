/**
 * One fault case: a (process × fault point × fault kind) row of the campaign table. `run`
 * attacks and checks what the case itself expects (a hostile stream refused with one clear
 * line, nothing stored...); the driver then runs the next ordinary commands and checks the
 * shared invariants on `servers`.
 */
import type { Checker, Violation } from './invariants.js';
import type { ServerName, World } from './world.js';

export type FaultKind =
  | 'SIGKILL'
  | 'SIGTERM'
  | 'ENOSPC'
  | 'EIO'
  | 'EACCES'
  | 'ssh killed'
  | 'PostgreSQL crash'
  | 'timeline switch'
  | 'race'
  | 'corruption'
  | 'hostile input'
  | 'none';

export interface CaseContext {
  world: World;
  checker: Checker;
  /** A scratch directory of the case, writable by every user (pause flags, inputs). */
  dir: string;
  /** Path of a pause flag (pass it to `pause:`; the point creates `<flag>.reached`). */
  flag(name: string): string;
  /** Fault points that fired in this case so far (`point action` lines). */
  fired(): string[];
  /** Record a violated expectation of the case itself. */
  expect(ok: boolean, what: string): void;
  /** Fail the case unless the fault point fired (a case that tests nothing is a campaign bug). */
  requireFired(point: string): void;
  note(text: string): void;
}

export interface FaultCase {
  id: string;
  /** The command attacked (report rows). */
  process: string;
  /** Where: a fault point name, a time offset, a system call... */
  point: string;
  kind: FaultKind;
  /** Servers whose catalog the case may change: the invariants are checked there. */
  servers: ServerName[];
  /** DONE backups needed beforehand. */
  needs?: Partial<Record<ServerName, number>>;
  /** The fault could affect backup data: restore and start every DONE backup it made or changed. */
  fullRestore?: boolean;
  /** The case stops or restarts cluster A: no barman-cloud case (cloud lane) runs beside it. */
  restartsPostgres?: boolean;
  /** Ask Barman 3.4 to read the catalog even when base/ did not change. */
  always34?: boolean;
  /**
   * A real defect this case reveals that is not fixed yet: the case still runs and its
   * violations are reported, marked as known (never hidden), with this reason.
   */
  knownFailure?: string;
  /** Returns the observed outcome (one line for the report). */
  run(ctx: CaseContext): Promise<string>;
}

export interface CaseResult {
  id: string;
  process: string;
  point: string;
  kind: FaultKind;
  outcome: string;
  violations: Violation[];
  notes: string[];
  ms: number;
  cpuMs: number;
  checkedServers: string[];
  knownFailure?: string;
  /** The lane the case ran in (campaign.ts). */
  lane?: string;
  /**
   * Wall time of the case's phases: the fault itself (with the backups it needs), the next
   * ordinary commands, the invariant checks (and their parts, summed over its servers).
   */
  phases?: { caseMs: number; nextMs: number; checksMs: number; checkParts: Record<string, number>; nextParts: Record<string, number> };
}
