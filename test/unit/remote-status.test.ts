/**
 * The pure pieces of show-servers' remote status: PostgreSQL text turned into what Barman prints
 * (Python's str() of a Decimal and of a datetime), synchronous_standby_names parsing, client
 * program versions, and Barman's CSV option text.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { clientVersionText, pyDecimalStr, pyTimestamptzStr, shown, standbyNames } from '../../src/reporting/remote-status.js';

describe('pyDecimalStr (Python str(Decimal))', () => {
  it('keeps plain notation while the exponent allows it', () => {
    assert.equal(pyDecimalStr('23133897'), '23133897');
    assert.equal(pyDecimalStr('0.00453553430701216256'), '0.00453553430701216256');
    assert.equal(pyDecimalStr('12.50'), '12.50');
    assert.equal(pyDecimalStr('-0.5'), '-0.5');
    assert.equal(pyDecimalStr('0.000001'), '0.000001');
  });

  it('switches to scientific notation for tiny values, as Barman shows a zero rate', () => {
    assert.equal(pyDecimalStr('0.00000000000000000000'), '0E-20');
    assert.equal(pyDecimalStr('0.0000001'), '1E-7');
    assert.equal(pyDecimalStr('0.00000012'), '1.2E-7');
  });
});

describe('pyTimestamptzStr (Python str(datetime) of a timestamptz)', () => {
  it('pads microseconds to six digits and writes the offset as +HH:MM', () => {
    assert.equal(pyTimestamptzStr('2026-12-06 15:23:34.262159+00'), '2026-12-06 15:23:34.262159+00:00');
    assert.equal(pyTimestamptzStr('2026-12-06 15:23:34.26+02'), '2026-12-06 15:23:34.260000+02:00');
    assert.equal(pyTimestamptzStr('2026-12-06 15:23:34+05:30'), '2026-12-06 15:23:34+05:30');
    assert.equal(pyTimestamptzStr('2026-12-06 15:23:34.000000-03'), '2026-12-06 15:23:34-03:00');
  });
});

describe('standbyNames (synchronous_standby_names)', () => {
  it('lists the names, without the count, FIRST/ANY and quotes', () => {
    assert.deepEqual(standbyNames(''), ['']);
    assert.deepEqual(standbyNames('a, b'), ['a', 'b']);
    assert.deepEqual(standbyNames('2 (a, "b c")'), ['a', 'b c']);
    assert.deepEqual(standbyNames('ANY 1 (barman_receive_wal)'), ['barman_receive_wal']);
  });
});

describe('clientVersionText', () => {
  it('reads the version of pg_basebackup and pg_receivewal as Barman does', () => {
    assert.equal(clientVersionText('pg_basebackup (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n'), '15.18');
    assert.equal(clientVersionText('pg_receivewal (PostgreSQL) 17devel\n'), '17devel');
    assert.equal(clientVersionText('something else\n'), null);
  });
});

describe('shown', () => {
  it('gives the console text and the JSON value Barman prints', () => {
    assert.deepEqual(shown.bool(true), { text: 'True', json: true });
    assert.deepEqual(shown.bool(null), { text: 'None', json: null });
    assert.deepEqual(shown.list(['']), { text: "['']", json: [''] });
    assert.deepEqual(shown.object('0E-20'), { text: '0E-20', json: '0E-20' });
    assert.deepEqual(shown.int(300), { text: '300', json: 300 });
  });
});
