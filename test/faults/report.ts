/** The campaign's report: reports/fault-report.md (faults × outcome) and fault-report.json. */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { CaseResult } from './types.js';

export interface ReportInput {
  results: CaseResult[];
  totalMs: number;
  cpuMs: number;
  setupMs: number;
  restores: Array<{ server: string; id: string; why: string; ok: boolean }>;
  verifies: number;
  baseline34: Record<string, string[]>;
  filters: string[];
}

const esc = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

export function summaryTable(results: readonly CaseResult[]): string {
  const kinds = [...new Set(results.map((r) => r.kind))].sort();
  const procs = [...new Set(results.map((r) => r.process))];
  const head = `| process | ${kinds.join(' | ')} | total | violations |\n|---|${kinds.map(() => '---:').join('|')}|---:|---:|\n`;
  const rows = procs.map((p) => {
    const mine = results.filter((r) => r.process === p);
    const cells = kinds.map((k) => String(mine.filter((r) => r.kind === k).length || ''));
    return `| ${p} | ${cells.join(' | ')} | ${mine.length} | ${mine.reduce((n, r) => n + r.violations.length, 0)} |`;
  });
  const totals = kinds.map((k) => String(results.filter((r) => r.kind === k).length));
  rows.push(`| **all** | ${totals.join(' | ')} | **${results.length}** | **${results.reduce((n, r) => n + r.violations.length, 0)}** |`);
  return head + rows.join('\n') + '\n';
}

/** Wall time per lane, split into the faults, the next ordinary commands and the checks. */
export function laneTable(results: readonly CaseResult[]): string {
  const sec = (ms: number) => (ms / 1000).toFixed(0);
  const lanes = [...new Set(results.map((r) => r.lane ?? '?'))];
  let t = `| lane | cases | wall s | fault s | next commands s | checks s | of which |\n|---|---:|---:|---:|---:|---:|---|\n`;
  for (const lane of lanes) {
    const mine = results.filter((r) => (r.lane ?? '?') === lane);
    const sum = (f: (r: CaseResult) => number) => mine.reduce((n, r) => n + f(r), 0);
    const partsOf = (pick: (r: CaseResult) => Record<string, number> | undefined) => {
      const parts = new Map<string, number>();
      for (const r of mine) for (const [k, v] of Object.entries(pick(r) ?? {})) parts.set(k, (parts.get(k) ?? 0) + v);
      return [...parts].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${sec(v)}`).join(', ');
    };
    const of = `next: ${partsOf((r) => r.phases?.nextParts)}; checks: ${partsOf((r) => r.phases?.checkParts)}`;
    t += `| ${lane} | ${mine.length} | ${sec(sum((r) => r.ms))} | ${sec(sum((r) => r.phases?.caseMs ?? r.ms))} | ${sec(sum((r) => r.phases?.nextMs ?? 0))} | ${sec(sum((r) => r.phases?.checksMs ?? 0))} | ${of} |\n`;
  }
  return t;
}

/** reports/fault-report (a full run) or fault-report-<filter> (a run of some cases only). */
export function reportBase(filters: readonly string[]): string {
  return filters.length === 0 ? 'fault-report' : `fault-report-${filters.join('-').replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 60)}`;
}

export async function writeReports(dir: string, input: ReportInput): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  const { results } = input;
  const violations = results.reduce((n, r) => n + r.violations.length, 0);
  const when = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  let md = `# Fault campaign report\n\n`;
  md += `Written by \`npm run test:faults\`${input.filters.length ? ` (filtered: ${input.filters.join(' ')})` : ''} on ${when}, ${os.cpus().length} CPUs, load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}.\n\n`;
  md += `**${results.length} fault cases, ${violations} invariant violations.** Wall time ${(input.totalMs / 1000).toFixed(0)} s (world set-up ${(input.setupMs / 1000).toFixed(0)} s), CPU time ${(input.cpuMs / 1000).toFixed(0)} s (campaign, the commands it ran and PostgreSQL).\n\n`;
  md += `Invariants checked after every case on the servers it may touch: no stack trace, no EXCEPTION, no secret in any output or log; the next ordinary commands succeed (cron, archive-wal, check-backup); xlog.db agrees with wals/ (rebuild-xlogdb changes no line); every acknowledged WAL segment is in the archive with the same content unless older than every remaining backup; no backup left STARTED; DONE backups pass check-backup and verify-backup (pg_verifybackup with WAL parsing, or the agent's checksums) whenever their files changed, and a full recover + PostgreSQL start where listed below; Barman 3.4 lists the same backups and statuses and its check fails for nothing barman-ts does not report; xlog.db and backup.info are 0600.\n\n`;
  md += `## Cases by process and fault\n\n${summaryTable(results)}\n`;
  md += `## Time by lane (lanes run at once; barman34 runs beside the other checks)\n\n${laneTable(results)}\n`;
  md += `## Full restores (recover + start PostgreSQL + read the data)\n\n`;
  md += input.restores.length ? input.restores.map((r) => `- ${r.server} ${r.id}: ${r.why}: ${r.ok ? 'started, data complete' : '**FAILED**'}`).join('\n') : '(none)';
  md += `\n\nOther DONE backups were verified with verify-backup (${input.verifies} runs) whenever their files changed.\n\n`;
  const base = Object.entries(input.baseline34).filter(([, v]) => v.length > 0);
  if (base.length) md += `Barman 3.4 check differences present before any fault (not counted): ${base.map(([k, v]) => `${k}: ${v.join(', ')}`).join('; ')}.\n\n`;
  const known = results.filter((r) => r.knownFailure);
  if (known.length) {
    md += `## Known failures (real defects not fixed yet: their violations are counted above)\n\n`;
    md += known.map((r) => `- ${r.id}: ${r.knownFailure} (${r.violations.length} violation(s) this run)`).join('\n');
    md += '\n\n';
  }
  md += `## Every case\n\n| case | fault | where | outcome | invariants |\n|---|---|---|---|---|\n`;
  for (const r of results) {
    const inv = r.violations.length === 0 ? `ok${r.checkedServers.length ? ` (${r.checkedServers.join(', ')})` : ''}` : `**${r.violations.length} violated**: ${esc(r.violations.map((v) => `${v.invariant}${v.server ? ` [${v.server}]` : ''}: ${v.detail.split('\n')[0]}`).join('; ').slice(0, 400))}`;
    md += `| ${esc(r.id)}${r.knownFailure ? ' (known failure)' : ''} | ${r.kind} | ${esc(r.point)} | ${esc(r.outcome.slice(0, 200))} | ${inv} |\n`;
  }
  const file = reportBase(input.filters);
  await fs.writeFile(path.join(dir, `${file}.md`), md);
  await fs.writeFile(path.join(dir, `${file}.json`), `${JSON.stringify({ generated: when, ...input }, null, 2)}\n`);
}
