/**
 * conninfo strings read as libpq reads them. The expected keywords below are what libpq's own
 * parser (PQconninfoParse, through psycopg2's parse_dsn) returns for each string; when Debian's
 * python3-psycopg2 is installed (it comes with Barman), the same corpus and our rewrites of it
 * are also checked against libpq itself, live.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { appendParams, conninfoForChild, formatConninfo, parseConninfo, withParams, type Conninfo } from '../../src/postgres/conninfo.js';
import { connectParams, oneLine, queryErrorLine, statusConnectTimeoutMs } from '../../src/postgres/connection.js';
import { redact } from '../../src/util/redact.js';

/** [conninfo, what libpq makes of it] */
const CORPUS: [string, Conninfo][] = [
  ["host=db port=5432 password='a b\\'c' user = x", {"host": "db", "password": "a b'c", "port": "5432", "user": "x"}],
  ["host=a\tport=5\ndbname=''", {"dbname": "", "host": "a", "port": "5"}],
  ["host=h1,h2,h3 port=5432,,5434 target_session_attrs=read-write", {"host": "h1,h2,h3", "port": "5432,,5434", "target_session_attrs": "read-write"}],
  ["sslmode=verify-full sslrootcert=/etc/ssl/ca.crt sslcert=~/c.crt sslkey=/k sslcrl=/crl sslpassword='p w'", {"sslcert": "~/c.crt", "sslcrl": "/crl", "sslkey": "/k", "sslmode": "verify-full", "sslpassword": "p w", "sslrootcert": "/etc/ssl/ca.crt"}],
  ["service=prod options='-c search_path=x -c statement_timeout=5s' application_name='my app'", {"application_name": "my app", "options": "-c search_path=x -c statement_timeout=5s", "service": "prod"}],
  ["host=/var/run/postgresql dbname=x\\ y", {"dbname": "x y", "host": "/var/run/postgresql"}],
  ["keepalives=1 keepalives_idle=30 keepalives_interval=10 keepalives_count=3 connect_timeout=7 hostaddr=127.0.0.1 gssencmode=disable", {"connect_timeout": "7", "gssencmode": "disable", "hostaddr": "127.0.0.1", "keepalives": "1", "keepalives_count": "3", "keepalives_idle": "30", "keepalives_interval": "10"}],
  ["postgresql://", {}],
  ["postgres://h", {"host": "h"}],
  ["postgresql://u:p%40ss@h:5433/db?sslmode=require", {"dbname": "db", "host": "h", "password": "p@ss", "port": "5433", "sslmode": "require", "user": "u"}],
  ["postgresql://u:p%40ss@h1:5432,[::1]:5433,h3/db?sslmode=require&ssl=true", {"dbname": "db", "host": "h1,::1,h3", "password": "p@ss", "port": "5432,5433,", "sslmode": "require", "user": "u"}],
  ["postgresql://h1,h2/db", {"dbname": "db", "host": "h1,h2", "port": ","}],
  ["postgresql:///db?host=/tmp", {"dbname": "db", "host": "/tmp"}],
  ["postgresql://%2Fvar%2Frun%2Fpostgresql/db", {"dbname": "db", "host": "/var/run/postgresql"}],
  ["postgresql://u@/", {"user": "u"}],
  ["postgresql://:pw@h", {"host": "h", "password": "pw"}],
  ["postgresql://h?application_name=a%20b&options=-c%20x%3Dy", {"application_name": "a b", "host": "h", "options": "-c x=y"}],
  ["postgresql://[::1]/d", {"dbname": "d", "host": "::1"}],
  ["postgresql://h:5432?", {"host": "h", "port": "5432"}],
  ["postgresql://u%C3%A9@h/d%C3%A9", {"dbname": "dé", "host": "h", "user": "ué"}],
  ["postgresql://h/db?target_session_attrs=read-only&", {"dbname": "db", "host": "h", "target_session_attrs": "read-only"}],
  ["postgresql://user:secret@host1:5432,host2:5433/mydb?target_session_attrs=primary&connect_timeout=3", {"connect_timeout": "3", "dbname": "mydb", "host": "host1,host2", "password": "secret", "port": "5432,5433", "target_session_attrs": "primary", "user": "user"}],
];

const sorted = (ci: Conninfo): Conninfo => Object.fromEntries(Object.entries(ci).sort(([a], [b]) => a.localeCompare(b)));

/** libpq's PQconninfoParse of each string (null: unavailable here), or 'ERROR ...'. */
function libpqParse(strings: string[]): (Conninfo | string)[] | null {
  const py = '/usr/bin/python3';
  if (!existsSync(py)) return null;
  const script = [
    'import json, sys',
    'try:',
    '  import psycopg2.extensions as e',
    'except ImportError:',
    '  print("null"); sys.exit(0)',
    'out = []',
    'for s in json.load(sys.stdin):',
    '  try: out.append(e.parse_dsn(s))',
    '  except Exception as x: out.append("ERROR " + str(x).strip())',
    'print(json.dumps(out))',
  ].join('\n');
  const r = spawnSync(py, ['-c', script], { input: JSON.stringify(strings), encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`python3 failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as (Conninfo | string)[] | null;
}

describe('conninfo as libpq reads it', () => {
  it('parses every string of the corpus into the keywords libpq finds', () => {
    for (const [text, expected] of CORPUS) assert.deepEqual(sorted(parseConninfo(text)), expected, text);
  });

  it('agrees with the live libpq on the corpus, and on our rewrites of it', (t) => {
    const params = { application_name: "barman 'x'", replication: 'true', connect_timeout: '9' };
    const appended = CORPUS.map(([s]) => appendParams(s, params));
    const children = CORPUS.map(([s]) => conninfoForChild(s, { application_name: 'a b' }).conninfo);
    const live = libpqParse([...CORPUS.map(([s]) => s), ...appended, ...children]);
    if (live === null) return t.skip('python3-psycopg2 (libpq) not installed');
    const n = CORPUS.length;
    CORPUS.forEach(([text], i) => {
      assert.deepEqual(sorted(parseConninfo(text)), live[i], text);
      // Appended keywords win over the user's, in key=value strings as in URIs.
      assert.deepEqual(live[n + i], sorted({ ...parseConninfo(text), ...params }), appended[i]);
      const rest: Conninfo = { ...parseConninfo(text), application_name: 'a b' };
      delete rest.password;
      assert.deepEqual(live[2 * n + i], sorted(rest), children[i]);
    });
  });

  it('refuses what libpq refuses to parse', () => {
    assert.throws(() => parseConninfo('host'), /missing "="/);
    assert.throws(() => parseConninfo('host=x port'), /missing "=" after "port"/);
    assert.throws(() => parseConninfo("host='x"), /unterminated/);
    assert.throws(() => parseConninfo('postgresql://[::1/db'), /matching "\]"/);
    assert.throws(() => parseConninfo('postgresql://[]/db'), /may not be empty/);
    assert.throws(() => parseConninfo('postgresql://[::1]x/db'), /unexpected character "x"/);
    assert.throws(() => parseConninfo('postgresql://h/db?sslmode'), /missing key\/value separator/);
    assert.throws(() => parseConninfo('postgresql://h/db?a=b=c'), /extra key\/value separator/);
    assert.throws(() => parseConninfo('postgresql://h/d%zz'), /invalid percent-encoded token/);
    assert.throws(() => parseConninfo('postgresql://h/d%00'), /forbidden value %00/);
    // URI prefixes are case-sensitive in libpq: this is a (bad) key=value string.
    assert.throws(() => parseConninfo('POSTGRESQL://h/db'), /missing "="/);
  });

  it('formats, overrides and appends', () => {
    assert.equal(formatConninfo({ host: 'h', application_name: 'a b', x: '' }), "host=h application_name='a b' x=''");
    assert.equal(withParams('host=h user=x', { application_name: 'barman' }), 'host=h user=x application_name=barman');
    assert.equal(appendParams('host=h ', { application_name: 'a b' }), "host=h application_name='a b'");
    assert.equal(appendParams('', { application_name: 'b' }), 'application_name=b');
    assert.equal(appendParams('postgresql://h/db', { application_name: 'a b' }), 'postgresql://h/db?application_name=a%20b');
    assert.equal(appendParams('postgresql://h/db?sslmode=require', { a_b: 'x&y' }), 'postgresql://h/db?sslmode=require&a_b=x%26y');
    assert.equal(appendParams('postgresql://h/db?', { a: '1' }), 'postgresql://h/db?a=1');
    assert.equal(appendParams('host=h', {}), 'host=h');
  });
});

describe('what our connections add to the conninfo', () => {
  it('application_name only when the user set none (Barman rule)', () => {
    assert.deepEqual(connectParams('host=h', {}, {}), { application_name: 'barman' });
    assert.deepEqual(connectParams('host=h', { applicationName: 'barman_check' }, {}), { application_name: 'barman_check' });
    assert.deepEqual(connectParams('host=h application_name=mine', {}, {}), {});
    assert.deepEqual(connectParams('postgresql://h/db?application_name=mine', {}, {}), {});
  });

  it('connect_timeout only for a bounded attempt that nothing of the user bounds', () => {
    assert.deepEqual(connectParams('host=h', { timeoutMs: 12_300 }, {}), { application_name: 'barman', connect_timeout: '13' });
    assert.deepEqual(connectParams('host=h', { timeoutMs: 100 }, {}), { application_name: 'barman', connect_timeout: '2' });
    assert.deepEqual(connectParams('host=h connect_timeout=5', { timeoutMs: 10_000 }, {}), { application_name: 'barman' });
    assert.deepEqual(connectParams('host=h', { timeoutMs: 10_000 }, { PGCONNECT_TIMEOUT: '4' }), { application_name: 'barman' });
    assert.deepEqual(connectParams('service=prod', { timeoutMs: 10_000 }, {}), { application_name: 'barman' });
    assert.deepEqual(connectParams('host=h', { timeoutMs: 10_000 }, { PGSERVICE: 'prod' }), { application_name: 'barman' });
    assert.deepEqual(connectParams('host=h', {}, {}), { application_name: 'barman' });
  });

  it('extra keywords are appended last', () => {
    assert.deepEqual(connectParams('host=h replication=database', { extra: { replication: 'true' } }, {}), { application_name: 'barman', replication: 'true' });
  });

  it('status waits as libpq does when the user set connect_timeout, else check_timeout up to 30 s', () => {
    assert.equal(statusConnectTimeoutMs('host=h connect_timeout=3', 30), undefined);
    assert.equal(statusConnectTimeoutMs('host=h', 10), 10_000);
    assert.equal(statusConnectTimeoutMs('host=h', 300), 30_000);
    assert.equal(statusConnectTimeoutMs('host=h', 0), 30_000);
  });

  it('libpq messages become one line', () => {
    const msg = 'connection to server at "127.0.0.1", port 1 failed: Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?\nconnection to server at "127.0.0.1", port 2 failed: FATAL:  no pg_hba.conf entry\n';
    assert.equal(
      oneLine(msg),
      'connection to server at "127.0.0.1", port 1 failed: Connection refused Is the server running on that host and accepting TCP/IP connections? connection to server at "127.0.0.1", port 2 failed: FATAL:  no pg_hba.conf entry',
    );
  });
});

describe('statement errors', () => {
  it('keep the primary message without its severity, as node-postgres did', () => {
    assert.equal(queryErrorLine('ERROR:  relation "nope" does not exist\nLINE 1: SELECT * FROM nope\n                      ^\n'), 'relation "nope" does not exist');
    assert.equal(queryErrorLine('FATAL:  terminating connection due to administrator command\n'), 'terminating connection due to administrator command');
    assert.equal(queryErrorLine('server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally\n'), 'server closed the connection unexpectedly');
  });
});

describe('password redaction', () => {
  it('hides passwords in conninfo and URIs', () => {
    assert.equal(redact('host=x password=secret user=y'), 'host=x password=*REDACTED* user=y');
    assert.equal(redact("password='a b' x"), 'password=*REDACTED* x');
    assert.equal(redact('host=x sslpassword=secret'), 'host=x sslpassword=*REDACTED*');
    assert.equal(redact('postgresql://u:pw@h/db'), 'postgresql://u:*REDACTED*@h/db');
  });
});
