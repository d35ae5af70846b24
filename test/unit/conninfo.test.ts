import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatConninfo, parseConninfo, withParams } from '../../src/postgres/conninfo.js';
import { redact } from '../../src/util/redact.js';

describe('conninfo', () => {
  it('parses key=value with quotes and escapes', () => {
    assert.deepEqual(parseConninfo("host=db port=5432 password='a b\\'c' user = x"), { host: 'db', port: '5432', password: "a b'c", user: 'x' });
  });
  it('parses URIs', () => {
    assert.deepEqual(parseConninfo('postgresql://u:p%40ss@h:5433/db?sslmode=require'), { host: 'h', port: '5433', user: 'u', password: 'p@ss', dbname: 'db', sslmode: 'require' });
  });
  it('round-trips and overrides', () => {
    assert.equal(formatConninfo({ host: 'h', application_name: 'a b' }), "host=h application_name='a b'");
    assert.equal(withParams('host=h user=x', { application_name: 'barman' }), 'host=h user=x application_name=barman');
  });
  it('rejects garbage', () => {
    assert.throws(() => parseConninfo('host'), /missing "="/);
    assert.throws(() => parseConninfo("host='x"), /unterminated/);
  });
});

describe('password redaction', () => {
  it('hides passwords in conninfo and URIs', () => {
    assert.equal(redact('host=x password=secret user=y'), 'host=x password=*REDACTED* user=y');
    assert.equal(redact("password='a b' x"), 'password=*REDACTED* x');
    assert.equal(redact('postgresql://u:pw@h/db'), 'postgresql://u:*REDACTED*@h/db');
  });
});
