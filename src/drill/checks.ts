/**
 * What a drill checks in the promoted sandbox: pg_amcheck over every database (heap and B-tree
 * indexes, the amcheck extension created where missing: the sandbox is a throw-away copy),
 * the user's SQL file, and pg_checksums after a clean shutdown when the cluster has data
 * checksums.
 */
import { lastErrorLine } from '../recovery/remote-shell.js';
import type { DrillCheck } from './records.js';
import type { SandboxServer } from './sandbox.js';
import { judgeRows, lastStartedStatement, psqlStatementArgs, rowsByStatement, type SqlCheckStatement } from './sql-checks.js';
import { psqlError, withCEnv } from './sandbox.js';

const elapsed = (t0: number) => Math.round(performance.now() - t0) / 1000;

/** A few lines of a program's report, joined on one line. */
export function summarize(text: string, max = 400): string {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^NOTICE:/.test(l));
  const joined = lines.slice(0, 6).join(' ');
  return joined.length > max ? `${joined.slice(0, max - 3)}...` : joined;
}

/** pg_amcheck --all: exit 0 clean, 2 corruption found, anything else an error. */
export async function amcheckCheck(sb: SandboxServer, jobs: number): Promise<DrillCheck> {
  const t0 = performance.now();
  const login = sb.requireLogin();
  const dbs = await sb.query('SELECT count(*) FROM pg_database WHERE datallowconn').catch(() => '?');
  const res = await sb.runProgram('pg_amcheck', [...sb.connArgs(login), '--maintenance-db', login.db, '--all', '--install-missing', '--jobs', String(Math.max(1, jobs))]);
  const seconds = elapsed(t0);
  if (res.code === 0) return { name: 'amcheck', status: 'ok', detail: `heap and B-tree indexes of ${dbs} database(s): no corruption`, seconds };
  const report = summarize(`${res.stdout}\n${res.stderr}`);
  if (res.code === 2) return { name: 'amcheck', status: 'failed', detail: `corruption found: ${report}`, seconds };
  return { name: 'amcheck', status: 'failed', detail: `pg_amcheck failed (exit code ${res.code}): ${report || lastErrorLine(res.stderr, res.stdout)}`, seconds };
}

/** The user's statements, by database (the default one: the sandbox login's). */
export async function sqlCheck(sb: SandboxServer, statements: readonly SqlCheckStatement[], file: string): Promise<DrillCheck> {
  const t0 = performance.now();
  const login = sb.requireLogin();
  // Consecutive statements on the same database share one psql session.
  const groups: { db: string; first: number; items: SqlCheckStatement[] }[] = [];
  statements.forEach((s, i) => {
    const db = s.database ?? login.db;
    const last = groups.at(-1);
    if (last && last.db === db) last.items.push(s);
    else groups.push({ db, first: i, items: [s] });
  });
  for (const g of groups) {
    const res = await sb.host.run(withCEnv([sb.bin('psql'), ...sb.connArgs(login), '-d', g.db, ...psqlStatementArgs(g.items, g.first)]), { timeoutMs: 6 * 3600_000 });
    if (res.code !== 0) {
      const idx = lastStartedStatement(res.stdout) ?? g.first;
      const st = statements[idx];
      const why = psqlError(res.stderr) || `psql exited with code ${res.code}`;
      return { name: 'sql', status: 'failed', detail: `${file} statement ${idx + 1}${st ? ` (line ${st.line})` : ''}: ${why}`, seconds: elapsed(t0) };
    }
    const rows = rowsByStatement(res.stdout);
    for (let k = 0; k < g.items.length; k++) {
      const idx = g.first + k;
      const st = g.items[k] as SqlCheckStatement;
      const problem = judgeRows(st.expect, rows.get(idx) ?? []);
      if (problem) return { name: 'sql', status: 'failed', detail: `${file} statement ${idx + 1} (line ${st.line}) ${problem}`, seconds: elapsed(t0) };
    }
  }
  return { name: 'sql', status: 'ok', detail: `${statements.length} statement(s) of ${file} passed`, seconds: elapsed(t0) };
}

/** pg_checksums --check on the cleanly stopped sandbox. */
export async function checksumsCheck(sb: SandboxServer): Promise<DrillCheck> {
  const t0 = performance.now();
  const res = await sb.runProgram('pg_checksums', ['--check', '-D', sb.cfg.dataDir]);
  const seconds = elapsed(t0);
  const scanned = /Blocks scanned:\s+(\d+)/.exec(res.stdout)?.[1];
  const bad = /Bad checksums:\s+(\d+)/.exec(res.stdout)?.[1];
  if (res.code === 0) return { name: 'checksums', status: 'ok', detail: `${scanned ?? '?'} blocks verified`, seconds };
  const first = res.stderr.split('\n').find((l) => /checksum verification failed/.test(l))?.replace(/^pg_checksums: error: /, '');
  return {
    name: 'checksums',
    status: 'failed',
    detail: bad ? `${bad} bad checksum(s)${first ? `: ${first}` : ''}` : `pg_checksums failed (exit code ${res.code}): ${lastErrorLine(res.stderr, res.stdout)}`,
    seconds,
  };
}
