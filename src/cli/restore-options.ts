/**
 * Command-line values shared by `restore` and `drill`: the recovery target options and
 * integer options.
 */
import type { TargetOptions } from '../recovery/options.js';
import { BarmanError } from '../util/errors.js';

export interface TargetCliOptions {
  targetTime?: string;
  targetXid?: string;
  targetLsn?: string;
  targetName?: string;
  targetImmediate?: boolean;
  targetTli?: string;
  exclusive?: boolean;
}

/** The target options as the recovery domain takes them. */
export function targetOptions(o: TargetCliOptions): TargetOptions {
  return {
    targetTime: o.targetTime,
    targetXid: o.targetXid,
    targetLsn: o.targetLsn,
    targetName: o.targetName,
    targetImmediate: o.targetImmediate,
    targetTli: o.targetTli,
    exclusive: o.exclusive,
  };
}

/** An integer option (null when not given); anything else is a usage error (exit 2). */
export function intOption(name: string, text: string | undefined, min = 0): number | null {
  if (text === undefined) return null;
  if (!/^\d+$/.test(text.trim()) || Number(text) < min) throw new BarmanError(`option ${name}: invalid value '${text}' (expected an integer >= ${min})`, 2);
  return Number(text);
}
