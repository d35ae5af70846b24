/**
 * Named fault points for the fault campaign (test/faults, `npm run test:faults`). Inert unless
 * the environment variable BARMAN_TS_FAULT names a point: then reaching that point kills,
 * signals, pauses or fails this process, so that a test can stop a command at an exact stage
 * (after the fsync, before the rename, ...) instead of guessing a time. Production never sets
 * the variable; when it is unset `faultPoint` returns at once (one comparison).
 *
 *   BARMAN_TS_FAULT = RULE[;RULE...]
 *   RULE            = POINT[@N]=ACTION
 *   POINT           a point name; `*` matches any characters (`write-atomic:*backup.info:*`)
 *   @N              act the N-th time the point is reached in this process (default: the first)
 *   ACTION          kill          SIGKILL this process (what the OOM killer or a power cut does)
 *                   term          SIGTERM this process and go on (the handlers run at the next await)
 *                   throw:CODE    throw an Error with `code` CODE (EIO, ENOSPC, EACCES, ...), as
 *                                 a failed system call would
 *                   pause:FILE    create FILE.reached, then block until FILE exists (at most
 *                                 120 s): lets a test run another command at this exact moment
 *
 * BARMAN_TS_FAULT_LOG, when set, is a file to which every point that fires appends
 * `<pid> <point> <action>` first: the campaign checks that its fault was really reached.
 */
import { appendFileSync, existsSync, writeFileSync } from 'node:fs';

interface Rule {
  pattern: RegExp;
  nth: number;
  action: string;
  hits: number;
}

function parseRules(spec: string): Rule[] {
  const rules: Rule[] = [];
  for (const item of spec.split(';')) {
    const eq = item.indexOf('=');
    if (eq <= 0) continue;
    const left = item.slice(0, eq).trim();
    const action = item.slice(eq + 1).trim();
    const at = /^(.*)@(\d+)$/.exec(left);
    const point = at ? (at[1] ?? '') : left;
    const nth = at ? Number(at[2]) : 1;
    const re = point
      .split('*')
      .map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*');
    rules.push({ pattern: new RegExp(`^${re}$`), nth, action, hits: 0 });
  }
  return rules;
}

const rules: Rule[] | null = process.env.BARMAN_TS_FAULT ? parseRules(process.env.BARMAN_TS_FAULT) : null;

/** Is any fault rule set for this process? (callers that build costly point names may check) */
export const faultsActive = rules !== null;

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function fire(name: string, action: string): void {
  const logFile = process.env.BARMAN_TS_FAULT_LOG;
  if (logFile) {
    try {
      appendFileSync(logFile, `${process.pid} ${name} ${action}\n`);
    } catch {
      // the log is for the campaign's bookkeeping only
    }
  }
  if (action === 'kill') {
    process.kill(process.pid, 'SIGKILL');
    sleepSync(10_000); // SIGKILL is delivered before this returns
    return;
  }
  if (action === 'term') {
    process.kill(process.pid, 'SIGTERM');
    return;
  }
  if (action.startsWith('throw:')) {
    const code = action.slice('throw:'.length) || 'EIO';
    const err = new Error(`${code}: fault injected at ${name}`) as NodeJS.ErrnoException;
    err.code = code;
    throw err;
  }
  if (action.startsWith('pause:')) {
    const flag = action.slice('pause:'.length);
    writeFileSync(`${flag}.reached`, `${process.pid}\n`);
    const deadline = Date.now() + 120_000;
    while (!existsSync(flag) && Date.now() < deadline) sleepSync(20);
  }
}

/**
 * A named stage of a command that writes. Does nothing unless BARMAN_TS_FAULT names it (see
 * the module comment); then it may kill this process, signal it, pause it or throw.
 */
export function faultPoint(name: string): void {
  if (rules === null) return;
  for (const r of rules) {
    if (!r.pattern.test(name)) continue;
    r.hits += 1;
    if (r.hits === r.nth) fire(name, r.action);
  }
}
