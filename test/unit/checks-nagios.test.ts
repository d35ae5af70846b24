/** `check --nagios` rendering, against Barman's exact strings (spec §4.4). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { renderNagios, type NagiosServer } from '../../src/checks/nagios.js';

const ok = (name: string, hint = '', perfdata?: number) => ({ name, ok: true, hint, ...(perfdata === undefined ? {} : { perfdata }) });
const ko = (name: string, hint = '') => ({ name, ok: false, hint });
const srv = (name: string, results: NagiosServer['results'], active = true): NagiosServer => ({ name, active, results });

describe('renderNagios', () => {
  it('no server configured', () => {
    assert.deepEqual(renderNagios([]), { text: 'BARMAN OK - No server configured\n', exitCode: 0 });
  });

  it('one good server, no perfdata', () => {
    assert.deepEqual(renderNagios([srv('a', [ok('test')])]), { text: 'BARMAN OK - Ready to serve the Espresso backup for a\n', exitCode: 0 });
  });

  it('several good servers with perfdata', () => {
    const r = renderNagios([srv('a', [ok('test')]), srv('b', [ok('test')]), srv('c', [ok('test'), ok('backup minimum size', '789 B', 789)])]);
    assert.equal(r.text, 'BARMAN OK - Ready to serve the Espresso backup for 3 servers * a * b * c|c=789B\n');
    assert.equal(r.exitCode, 0);
  });

  it('perfdata for backup size and WAL size, single server', () => {
    const r = renderNagios([srv('pg', [ok('backup minimum size', '1.0 MiB', 1048576), ok('wal size', '16.0 MiB', 16777216)])]);
    assert.equal(r.text, 'BARMAN OK - Ready to serve the Espresso backup for pg|pg=1048576B pg_wals=16777216B\n');
  });

  it('inactive failing servers are ignored', () => {
    const r = renderNagios([srv('a', [ok('test')]), srv('b', [ko('test')], false), srv('c', [ko('test')], false)]);
    assert.deepEqual(r, { text: 'BARMAN OK - Ready to serve the Espresso backup for a * IGNORING: b * IGNORING: c\n', exitCode: 0 });
  });

  it('several good servers and an ignored one', () => {
    const r = renderNagios([srv('a', [ok('test')]), srv('b', [ok('test')]), srv('c', [ko('test')], false)]);
    assert.equal(r.text, 'BARMAN OK - Ready to serve the Espresso backup for 2 servers * a * b * IGNORING: c\n');
  });

  it('all servers ignored', () => {
    const r = renderNagios([srv('a', [ko('test')], false), srv('b', [ko('test')], false), srv('c', [ko('test')], false)]);
    assert.equal(r.text, 'BARMAN OK - No server configured * IGNORING: a * IGNORING: b * IGNORING: c\n');
    assert.equal(r.exitCode, 0);
  });

  it('one failing server', () => {
    assert.deepEqual(renderNagios([srv('a', [ko('test')])]), { text: 'BARMAN CRITICAL - server a has issues * a FAILED: test\na.test: FAILED\n', exitCode: 2 });
  });

  it('one server failing out of three, hint and perfdata', () => {
    const r = renderNagios([srv('a', [ok('test')]), srv('b', [ko('test', 'hint')]), srv('c', [ok('test'), ok('wal size', '789 B', 789)])]);
    assert.equal(r.text, 'BARMAN CRITICAL - 1 server out of 3 have issues * b FAILED: test|c_wals=789B\nb.test: FAILED (hint)\n');
    assert.equal(r.exitCode, 2);
  });

  it('several failed checks of several servers', () => {
    const r = renderNagios([
      srv('a', [ko('PostgreSQL'), ok('directories'), ko('archiver errors', 'duplicates: 2')]),
      srv('b', [ko('ssh', "Connection failed using 'false' return code 1")]),
    ]);
    assert.equal(
      r.text,
      'BARMAN CRITICAL - 2 server out of 2 have issues * a FAILED: PostgreSQL, archiver errors * b FAILED: ssh\n' +
        'a.PostgreSQL: FAILED\na.archiver errors: FAILED (duplicates: 2)\n' +
        "b.ssh: FAILED (Connection failed using 'false' return code 1)\n",
    );
  });

  it('global configuration errors', () => {
    assert.deepEqual(renderNagios([], true), { text: 'BARMAN CRITICAL - Global configuration errors\n', exitCode: 2 });
    assert.deepEqual(renderNagios([srv('a', [ok('test')])], true), { text: 'BARMAN CRITICAL - Global configuration errors\n', exitCode: 2 });
  });

  it('check timeout is a failed check like any other', () => {
    const r = renderNagios([srv('pg', [ko('PostgreSQL'), ko('check timeout', 'barman check command timed out')])]);
    assert.equal(r.text, 'BARMAN CRITICAL - server pg has issues * pg FAILED: PostgreSQL, check timeout\npg.PostgreSQL: FAILED\npg.check timeout: FAILED (barman check command timed out)\n');
  });
});
