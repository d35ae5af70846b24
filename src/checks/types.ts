/**
 * What every check module shares: the result of one check, the options of a run, and the
 * collector that keeps results in order and stops accepting them once the run has timed out
 * (a check still running in the background must not append a line after `check timeout`).
 */
import type { PrestartedAgents } from '../agent/prestart.js';

export interface CheckResult {
  name: string;
  ok: boolean;
  hint: string;
  /** Bytes reported to Nagios as performance data (`backup minimum size`, `wal size`). */
  perfdata?: number;
}

export interface CheckOptions {
  /** The clock for age checks (frozen in tests); default: now. */
  now?: Date;
  /** Seconds for the whole run; default the server's check_timeout; 0 = unbounded. */
  checkTimeout?: number;
  /** `backup`: the agents it started for its copy; the first one is the `barman-ts agent` check. */
  agents?: PrestartedAgents;
}

export class CheckCollector {
  readonly results: CheckResult[] = [];
  private closed = false;
  private readonly cleanups: (() => void)[] = [];

  constructor(
    /** Absolute time (ms) by which everything must be over; Infinity when unbounded. */
    readonly deadline: number,
    readonly now: Date,
  ) {}

  add(name: string, ok: boolean, hint = '', perfdata?: number): void {
    if (this.closed) return;
    this.results.push(perfdata === undefined ? { name, ok, hint } : { name, ok, hint, perfdata });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Milliseconds left before the deadline (at least 1, capped to keep timers sane). */
  remainingMs(cap = 30_000): number {
    return Math.max(1, Math.min(cap, this.deadline - Date.now()));
  }

  /** Something to undo (kill a child, close a socket) if the run is abandoned. */
  onAbandon(fn: () => void): void {
    this.cleanups.push(fn);
  }

  /** Stop accepting results and release what is still running. */
  close(): void {
    this.closed = true;
    for (const fn of this.cleanups.splice(0)) {
      try {
        fn();
      } catch {
        /* best effort: the process is about to report and exit */
      }
    }
  }
}
