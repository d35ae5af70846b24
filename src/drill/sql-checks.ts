/**
 * The user's SQL checks (`--sql FILE`): plain SQL statements separated by `;`, each of which
 * must return exactly one row holding `true`, unless a directive comment before it says
 * otherwise:
 *
 *   -- drill: database appdb      the following statements run in database appdb
 *   -- drill: rows                the next statement must return at least one row
 *   -- drill: no rows             the next statement must return no row
 *   -- drill: any                 the next statement only has to succeed
 *
 * Statements go to psql one by one with `-c` (never through psql's script reader), so psql
 * meta-commands (`\!` runs a shell) and variable interpolation cannot happen; a line starting
 * with a backslash is refused. Parsing and judging the output are pure functions.
 */
import { BarmanError } from '../util/errors.js';

export type SqlExpectation = 'true' | 'rows' | 'no rows' | 'any';

export interface SqlCheckStatement {
  sql: string;
  /** 1-based line of the statement's first character. */
  line: number;
  expect: SqlExpectation;
  /** Database named by the last `-- drill: database` directive, null = the default one. */
  database: string | null;
}

const DIRECTIVE_RE = /^--\s*drill:\s*(.*?)\s*$/i;
const EXPECTATIONS: readonly SqlExpectation[] = ['true', 'rows', 'no rows', 'any'];

/** Split the file into statements with their expectations (BarmanError naming the line). */
export function parseSqlChecks(text: string, file = 'the SQL file'): SqlCheckStatement[] {
  const out: SqlCheckStatement[] = [];
  let database: string | null = null;
  let pending: SqlExpectation | null = null;
  let pendingLine = 0;
  let i = 0;
  let line = 1;
  let start = -1;
  let startLine = 0;
  const n = text.length;
  const fail = (msg: string, at: number): never => {
    throw new BarmanError(`${file} line ${at}: ${msg}`);
  };
  const advance = (to: number) => {
    for (let k = i; k < to && k < n; k++) if (text[k] === '\n') line++;
    i = to;
  };
  const finish = (end: number) => {
    if (start >= 0) {
      const sql = text.slice(start, end).trim();
      if (sql !== '') {
        out.push({ sql, line: startLine, expect: pending ?? 'true', database });
        pending = null;
      }
    }
    start = -1;
  };
  while (i < n) {
    const c = text[i] as string;
    const next = text[i + 1] ?? '';
    if (c === '-' && next === '-') {
      const eol = text.indexOf('\n', i);
      const end = eol < 0 ? n : eol;
      if (start < 0) {
        const m = DIRECTIVE_RE.exec(text.slice(i, end));
        if (m) {
          const d = (m[1] ?? '').toLowerCase().replace(/\s+/g, ' ');
          const db = /^database\s+(.+)$/i.exec(m[1] ?? '');
          if (db) database = (db[1] as string).trim();
          else if ((EXPECTATIONS as readonly string[]).includes(d)) {
            if (pending !== null) fail(`two expectations for one statement (line ${pendingLine} and this one)`, line);
            pending = d as SqlExpectation;
            pendingLine = line;
          } else fail(`unknown directive '${m[1] ?? ''}' (expected: database NAME, rows, no rows, any, true)`, line);
        }
      }
      advance(end);
      continue;
    }
    if (c === '/' && next === '*') {
      let depth = 1;
      let k = i + 2;
      while (k < n && depth > 0) {
        if (text[k] === '/' && text[k + 1] === '*') {
          depth++;
          k += 2;
        } else if (text[k] === '*' && text[k + 1] === '/') {
          depth--;
          k += 2;
        } else k++;
      }
      if (depth > 0) fail('unterminated /* comment', line);
      advance(k);
      continue;
    }
    if (/\s/.test(c)) {
      advance(i + 1);
      continue;
    }
    if (start < 0) {
      if (c === '\\') fail('psql meta-commands (backslash commands) are not allowed', line);
      if (c === ';') {
        advance(i + 1);
        continue;
      }
      start = i;
      startLine = line;
    }
    if (c === ';') {
      finish(i);
      advance(i + 1);
      continue;
    }
    if (c === "'") {
      // E'...' strings take backslash escapes; standard strings only ''.
      const escapes = i > 0 && /[eE]/.test(text[i - 1] ?? '') && !/[A-Za-z0-9_]/.test(text[i - 2] ?? '');
      let k = i + 1;
      for (;;) {
        if (k >= n) fail('unterminated string', line);
        const ch = text[k] as string;
        if (escapes && ch === '\\') k += 2;
        else if (ch === "'" && text[k + 1] === "'") k += 2;
        else if (ch === "'") break;
        else k++;
      }
      advance(k + 1);
      continue;
    }
    if (c === '"') {
      const k = text.indexOf('"', i + 1);
      if (k < 0) fail('unterminated quoted identifier', line);
      advance(k + 1);
      continue;
    }
    if (c === '$') {
      const m = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(text.slice(i, i + 64));
      if (m && !/[A-Za-z0-9_]/.test(text[i - 1] ?? '')) {
        const tag = m[0];
        const k = text.indexOf(tag, i + tag.length);
        if (k < 0) fail(`unterminated dollar-quoted string ${tag}`, line);
        advance(k + tag.length);
        continue;
      }
    }
    advance(i + 1);
  }
  finish(n);
  if (pending !== null) fail('expectation directive without a statement after it', pendingLine);
  if (out.length === 0) throw new BarmanError(`${file} holds no SQL statement`);
  return out;
}

/** The line psql echoes before statement `i`. */
export function statementMarker(i: number): string {
  return `@@BARMAN-DRILL-SQL ${i}@@`;
}

/** psql arguments after the connection ones: one `-c` per statement, each after its marker. */
export function psqlStatementArgs(statements: readonly { sql: string }[], firstIndex: number): string[] {
  const args = ['-X', '-q', '--csv', '-t', '-v', 'ON_ERROR_STOP=1'];
  statements.forEach((s, k) => args.push('-c', `\\echo ${statementMarker(firstIndex + k)}`, '-c', s.sql));
  return args;
}

/** CSV records (RFC 4180, as psql --csv writes them). */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  let any = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i] as string;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
      continue;
    }
    if (c === '"') {
      quoted = true;
      any = true;
    } else if (c === ',') {
      row.push(field);
      field = '';
      any = true;
    } else if (c === '\n') {
      if (any || field !== '') row.push(field);
      rows.push(row);
      row = [];
      field = '';
      any = false;
    } else if (c !== '\r') {
      field += c;
      any = true;
    }
  }
  if (any || field !== '') {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

/** Rows returned by each statement, from psql's output (index → rows). */
export function rowsByStatement(stdout: string): Map<number, string[][]> {
  const out = new Map<number, string[][]>();
  let current: number | null = null;
  for (const r of parseCsv(stdout)) {
    const m = r.length === 1 ? /^@@BARMAN-DRILL-SQL (\d+)@@$/.exec(r[0] as string) : null;
    if (m) {
      current = Number(m[1]);
      out.set(current, []);
    } else if (current !== null) {
      (out.get(current) as string[][]).push(r);
    }
  }
  return out;
}

/** The last statement psql started (its marker), to name the one an error belongs to. */
export function lastStartedStatement(stdout: string): number | null {
  const all = [...stdout.matchAll(/^@@BARMAN-DRILL-SQL (\d+)@@$/gm)];
  const last = all.at(-1);
  return last ? Number(last[1]) : null;
}

/** null when the rows meet the expectation, else what was wrong. */
export function judgeRows(expect: SqlExpectation, rows: readonly string[][]): string | null {
  switch (expect) {
    case 'any':
      return null;
    case 'rows':
      return rows.length > 0 ? null : 'returned no row (expected rows)';
    case 'no rows':
      return rows.length === 0 ? null : `returned ${rows.length} row(s) (expected none)`;
    case 'true': {
      if (rows.length === 1 && rows[0]?.length === 1 && rows[0][0] === 't') return null;
      if (rows.length !== 1) return `returned ${rows.length} rows (expected one row holding true)`;
      const v = (rows[0] ?? []).join(',');
      return `returned '${v.length > 60 ? `${v.slice(0, 57)}...` : v}' (expected true)`;
    }
  }
}
