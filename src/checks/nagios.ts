/**
 * `barman check --nagios`: the Nagios plugin output, byte for byte as Barman prints it (monitoring
 * templates parse it). One status line, performance data after `|`, then one line per failed
 * check. Failures of inactive servers do not make the result critical: those servers are listed
 * as `IGNORING`. Pure: the command prints the text and exits with the code.
 */
import type { CheckResult } from './types.js';

export interface NagiosServer {
  name: string;
  active: boolean;
  results: readonly CheckResult[];
}

export interface NagiosReport {
  text: string;
  /** 0 OK, 2 CRITICAL. */
  exitCode: 0 | 2;
}

/**
 * @param globalError an error was reported outside the checks (unknown server, configuration
 *   errors): with no failing server this is `Global configuration errors`.
 */
export function renderNagios(servers: readonly NagiosServer[], globalError = false): NagiosReport {
  const names: string[] = [];
  const issues: string[] = [];
  const perf: string[] = [];
  let errorOccurred = globalError;
  for (const s of servers) {
    if (s.results.length === 0) continue;
    if (!names.includes(s.name)) names.push(s.name);
    for (const r of s.results) {
      if (!r.ok) {
        if (!issues.includes(s.name)) issues.push(s.name);
        if (s.active) errorOccurred = true;
      }
      if (r.name === 'backup minimum size') perf.push(`${s.name}=${Math.trunc(r.perfdata ?? 0)}B`);
      if (r.name === 'wal size') perf.push(`${s.name}_wals=${Math.trunc(r.perfdata ?? 0)}B`);
    }
  }
  const perfText = perf.length > 0 ? `|${perf.join(' ')}` : '';

  if (issues.length === 0 && errorOccurred) return { text: 'BARMAN CRITICAL - Global configuration errors\n', exitCode: 2 };

  if (issues.length > 0 && errorOccurred) {
    const summary: string[] = [];
    const details: string[] = [];
    for (const name of issues) {
      const failed = servers.filter((s) => s.name === name).flatMap((s) => s.results.filter((r) => !r.ok));
      summary.push(`${name} FAILED: ${failed.map((r) => r.name).join(', ')}`);
      for (const r of failed) details.push(`${name}.${r.name}: FAILED${r.hint ? ` (${r.hint})` : ''}`);
    }
    const head =
      names.length === 1
        ? `BARMAN CRITICAL - server ${names[0] ?? ''} has issues * ${summary.join(' * ')}${perfText}`
        : `BARMAN CRITICAL - ${issues.length} server out of ${names.length} have issues * ${summary.join(' * ')}${perfText}`;
    return { text: [head, ...details].map((l) => `${l}\n`).join(''), exitCode: 2 };
  }

  const ignoring = issues.map((n) => ` * IGNORING: ${n}`).join('');
  const good = names.filter((n) => !issues.includes(n));
  let line: string;
  if (good.length === 0) line = `BARMAN OK - No server configured${ignoring}`;
  else if (good.length === 1) line = `BARMAN OK - Ready to serve the Espresso backup for ${good[0] ?? ''}${ignoring}${perfText}`;
  else line = `BARMAN OK - Ready to serve the Espresso backup for ${good.length} servers * ${good.join(' * ')}${ignoring}${perfText}`;
  return { text: `${line}\n`, exitCode: 0 };
}
