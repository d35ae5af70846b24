import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { loadConfig, findConfigFile } from '../../src/config/config.js';
import { interpolate, parseIni, stripQuotes } from '../../src/config/ini.js';
import { parseInterval, parseRetentionPolicy, parseSize, parseBool } from '../../src/config/values.js';
import { BarmanError } from '../../src/util/errors.js';

// Every temporary directory made here, removed when the file's tests are done.
const made: string[] = [];
after(() => made.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

function tmpConf(main: string, includes: Record<string, string> = {}): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bts-conf-'));
  made.push(dir);
  const file = path.join(dir, 'barman.conf');
  fs.writeFileSync(file, main.replaceAll('@DIR@', dir));
  if (Object.keys(includes).length) {
    fs.mkdirSync(path.join(dir, 'barman.d'));
    for (const [n, t] of Object.entries(includes)) fs.writeFileSync(path.join(dir, 'barman.d', n), t.replaceAll('@DIR@', dir));
  }
  return file;
}

const BASE = '[barman]\nbarman_home = @DIR@/home\n';

describe('INI reading (ConfigParser rules)', () => {
  it('parses sections, = and : delimiters, lowercases keys, skips full-line comments', () => {
    const doc = parseIni('[s]\nKey = v1\nother: v2\n# c\n; c\nx=  spaced  \n', 'f');
    assert.equal(doc.raw('s', 'key')?.value, 'v1');
    assert.equal(doc.raw('s', 'other')?.value, 'v2');
    assert.equal(doc.raw('s', 'x')?.value, 'spaced');
    assert.equal(doc.raw('s', 'key')?.line, 2);
  });

  it('keeps inline # as part of the value (no inline comments)', () => {
    assert.equal(parseIni('[s]\na = x # y\n', 'f').raw('s', 'a')?.value, 'x # y');
  });

  it('continues indented lines and merges duplicate sections/keys (last wins)', () => {
    const doc = parseIni('[s]\na = one\n  two\n[t]\nb=1\n[s]\na = three\n', 'f');
    assert.equal(doc.raw('s', 'a')?.value, 'three');
    const doc2 = parseIni('[s]\na = one\n  two\n', 'f');
    assert.equal(doc2.raw('s', 'a')?.value, 'one\ntwo');
  });

  it('lets [DEFAULT] leak into every section', () => {
    const doc = parseIni('[DEFAULT]\nz = 9\n[s]\n', 'f');
    assert.equal(doc.raw('s', 'z')?.value, '9');
  });

  it('reports a line without a section or delimiter with file and line', () => {
    assert.throws(() => parseIni('a = 1\n', 'x.conf'), /x\.conf:1/);
    assert.throws(() => parseIni('[s]\njunk\n', 'x.conf'), /x\.conf:2/);
  });

  it('interpolates %(name)s and %%, rejects a lone %', () => {
    const look = (k: string) => ({ a: '1', b: '%(a)s2' })[k];
    assert.equal(interpolate('x%(b)sy', look, 'w'), 'x12y');
    assert.equal(interpolate('100%%', look, 'w'), '100%');
    assert.throws(() => interpolate('50%', look, 'w'), /must be followed/);
    assert.throws(() => interpolate('%(nope)s', look, 'w'), /bad interpolation/);
    assert.throws(() => interpolate('%(a)s', (k) => (k === 'a' ? '%(a)s' : undefined), 'w'), /too deep/);
  });

  it('strips one pair of matching quotes', () => {
    assert.equal(stripQuotes('"a b"'), 'a b');
    assert.equal(stripQuotes("'a'"), 'a');
    assert.equal(stripQuotes('"a\''), '"a\'');
    assert.equal(stripQuotes('""x""'), '"x"');
  });
});

describe('value types', () => {
  it('booleans', () => {
    for (const t of ['on', 'TRUE', 't', 'yes', '1']) assert.equal(parseBool(t), true);
    for (const f of ['off', 'False', 'f', 'no', '0']) assert.equal(parseBool(f), false);
    assert.throws(() => parseBool('maybe'));
  });
  it('intervals and sizes', () => {
    assert.equal(parseInterval('1 day'), 86400);
    assert.equal(parseInterval('2 WEEKS'), 14 * 86400);
    assert.equal(parseInterval('1 month'), 31 * 86400);
    assert.equal(parseInterval('3 hours'), 3 * 3600);
    assert.throws(() => parseInterval('soon'));
    assert.equal(parseSize('10Mi'), 10 * 1024 * 1024);
    assert.equal(parseSize('1k'), 1000);
    assert.throws(() => parseSize('1kb'));
  });
  it('retention policies', () => {
    assert.deepEqual(parseRetentionPolicy('redundancy 3'), { kind: 'redundancy', copies: 3, text: 'REDUNDANCY 3' });
    const w = parseRetentionPolicy('RECOVERY WINDOW OF 2 week');
    assert.equal(w.text, 'RECOVERY WINDOW OF 2 WEEKS');
    assert.throws(() => parseRetentionPolicy('keep everything'));
  });
});

describe('loading a configuration', () => {
  it('resolves defaults from barman_home and the server name', () => {
    const cfg = loadConfig(tmpConf(`${BASE}\n[pg]\nconninfo = host=x\nbackup_method = postgres\nstreaming_archiver = on\nslot_name = Barman\n`));
    const pg = cfg.servers.get('pg');
    assert.ok(pg);
    assert.equal(pg.backup_directory, `${path.dirname(cfg.configFile)}/home/pg`);
    assert.equal(pg.wals_directory, `${pg.backup_directory}/wals`);
    assert.equal(pg.xlogdb_directory, pg.wals_directory);
    assert.equal(pg.streaming_conninfo, 'host=x');
    assert.equal(pg.slot_name, 'barman');
    assert.equal(pg.archiver, false);
    assert.equal(pg.minimum_redundancy, 0);
    assert.equal(pg.disabled, false);
    assert.equal(pg.global.barman_lock_directory, cfg.global.barman_home);
  });

  it('inherits [barman] values for G options; an empty server value blocks inheritance', () => {
    const cfg = loadConfig(tmpConf(`${BASE}compression = gzip\nminimum_redundancy = 2\n[a]\nconninfo = x\nbackup_method = postgres\n[b]\nconninfo = x\nbackup_method = postgres\ncompression =\n`));
    assert.equal(cfg.servers.get('a')?.compression, 'gzip');
    assert.equal(cfg.servers.get('a')?.minimum_redundancy, 2);
    assert.equal(cfg.servers.get('b')?.compression, null);
  });

  it('forces archiver on (with a warning) when no archiver is enabled', () => {
    const cfg = loadConfig(tmpConf(`${BASE}[pg]\nconninfo = x\nbackup_method = postgres\n`));
    assert.equal(cfg.servers.get('pg')?.archiver, true);
    assert.ok(cfg.servers.get('pg')?.warnings.some((w) => /Forcing 'archiver = on'/.test(w)));
  });

  it('interpolates server attributes and [DEFAULT] values', () => {
    const cfg = loadConfig(tmpConf(`[DEFAULT]\nhostname = db1\n${BASE}[pg]\nconninfo = host=%(hostname)s user=%(name)s\nbackup_method = postgres\nwals_directory = %(backup_directory)s/archive\n`));
    const pg = cfg.servers.get('pg');
    assert.equal(pg?.conninfo, 'host=db1 user=pg');
    assert.equal(pg?.wals_directory, `${pg?.backup_directory}/archive`);
  });

  it('reads configuration_files_directory includes in name order', () => {
    const file = tmpConf(`${BASE}configuration_files_directory = @DIR@/barman.d\n`, {
      'b.conf': '[pg]\ndescription = from b\n',
      'a.conf': '[pg]\nconninfo = x\nbackup_method = postgres\ndescription = from a\n',
      'ignored.txt': '[other]\n',
    });
    const cfg = loadConfig(file);
    assert.equal(cfg.servers.get('pg')?.description, 'from b');
    assert.equal(cfg.servers.has('other'), false);
  });

  it('refuses an include that alters [barman]', () => {
    const file = tmpConf(`${BASE}configuration_files_directory = @DIR@/barman.d\n`, { 'x.conf': '[barman]\nlog_level = DEBUG\n' });
    assert.throws(() => loadConfig(file), /contains a not empty \[barman\] section/);
  });

  it("refuses a server named 'all'", () => {
    assert.throws(() => loadConfig(tmpConf(`${BASE}[all]\nconninfo = x\n`)), /reserved word/);
  });

  it('reports a bad [barman] value with file and line and uses the default', () => {
    const cfg = loadConfig(tmpConf(`${BASE}log_level = VERBOSE\n[pg]\nconninfo = x\nbackup_method = postgres\n`));
    assert.equal(cfg.global.log_level, 'INFO');
    assert.ok(cfg.warnings.some((w) => /barman\.conf:3: \[barman\] log_level: invalid value 'VERBOSE'.*using the default/.test(w)), cfg.warnings.join('\n'));
    assert.equal(cfg.servers.get('pg')?.disabled, false);
  });

  it('requires barman_home', () => {
    assert.throws(() => loadConfig(tmpConf('[barman]\nlog_level = INFO\n')), /barman_home/);
  });

  it('warns about unknown options and names them', () => {
    const cfg = loadConfig(tmpConf(`${BASE}[pg]\nconninfo = x\nbackup_method = postgres\nfrobnicate = 1\n`));
    assert.ok(cfg.warnings.some((w) => w === 'Invalid configuration option "frobnicate" in [pg] section.'));
  });

  it("ignores a bad server value with Barman's warning (file and line) and uses the default; the server stays enabled", () => {
    const file = tmpConf(`${BASE}[good]\nconninfo = x\nbackup_method = postgres\n[bad]\nconninfo = x\nbackup_method = postgres\nstreaming_archiver = maybe\nparallel_jobs = lots\n`);
    const cfg = loadConfig(file);
    const bad = cfg.servers.get('bad');
    assert.equal(bad?.disabled, false);
    assert.deepEqual(bad?.errors, []);
    assert.equal(bad?.parallel_jobs, 1);
    assert.equal(bad?.streaming_archiver, false);
    assert.ok(
      cfg.warnings.includes(`Ignoring invalid configuration value 'maybe' for key streaming_archiver in [bad] section: expected a boolean (on/off, true/false, yes/no, 1/0) (${file}:9)`),
      cfg.warnings.join('\n'),
    );
    assert.ok(cfg.warnings.some((w) => w.startsWith("Ignoring invalid configuration value 'lots' for key parallel_jobs in [bad] section: ")), cfg.warnings.join('\n'));
    assert.equal(cfg.servers.get('good')?.disabled, false);
  });

  it('a bad server value falls back to the [barman] value of an inheritable option', () => {
    const cfg = loadConfig(tmpConf(`${BASE}compression = gzip\n[pg]\nconninfo = x\nbackup_method = postgres\ncompression = rar\n`));
    const pg = cfg.servers.get('pg');
    assert.equal(pg?.compression, 'gzip');
    assert.equal(pg?.disabled, false);
    assert.ok(cfg.warnings.some((w) => /^Ignoring invalid configuration value 'rar' for key compression in \[pg\] section: .*barman\.conf:7\)$/.test(w)), cfg.warnings.join('\n'));
  });

  it('reports a bad value inherited from [barman] with the [barman] line', () => {
    const cfg = loadConfig(tmpConf(`${BASE}compression = rar\n[pg]\nconninfo = x\nbackup_method = postgres\n`));
    assert.equal(cfg.servers.get('pg')?.disabled, false);
    assert.equal(cfg.servers.get('pg')?.compression, null);
    assert.ok(cfg.warnings.some((w) => /^Ignoring invalid configuration value 'rar' for key compression in \[barman\] section: .*barman\.conf:3\)$/.test(w)), cfg.warnings.join('\n'));
  });

  it('requires slot_name for a streaming-only archiver and conninfo always', () => {
    const cfg = loadConfig(tmpConf(`${BASE}[a]\nconninfo = x\nbackup_method = postgres\nstreaming_archiver = on\n[b]\nbackup_method = postgres\n`));
    assert.ok(cfg.servers.get('a')?.errors.some((e) => /slot_name/.test(e)));
    assert.ok(cfg.servers.get('b')?.errors.some((e) => /conninfo/.test(e)));
  });

  it('detects conflicting paths between servers as a global error', () => {
    const cfg = loadConfig(tmpConf(`${BASE}[a]\nconninfo = x\nbackup_method = postgres\nbackup_directory = /srv/x\n[b]\nconninfo = x\nbackup_method = postgres\nbackup_directory = /srv/x\n`));
    assert.ok(cfg.errors.some((e) => /Conflicting path/.test(e)));
  });

  it('skips model sections as servers', () => {
    const cfg = loadConfig(tmpConf(`${BASE}[pg]\nconninfo = x\nbackup_method = postgres\n[m]\nmodel = true\ncluster = pg\nconninfo = y\n`));
    assert.equal(cfg.servers.has('m'), false);
    assert.equal(cfg.models.get('m')?.cluster, 'pg');
  });

  it('honours active = false and passive servers', () => {
    const cfg = loadConfig(tmpConf(`${BASE}[pg]\nconninfo = x\nbackup_method = postgres\nactive = false\n[p]\nprimary_ssh_command = ssh barman@primary\n`));
    assert.equal(cfg.servers.get('pg')?.active, false);
    assert.equal(cfg.servers.get('p')?.passive, true);
    assert.equal(cfg.servers.get('p')?.disabled, false);
  });

  it('fails clearly for a missing explicit file', () => {
    assert.throws(() => findConfigFile('/nonexistent/barman.conf'), (e: unknown) => e instanceof BarmanError && /Could not find configuration file/.test(e.message));
  });
});
