/**
 * The log file follows logrotate (WatchedFileHandler semantics, as Barman's): once the file is
 * renamed or removed, the next line goes to a new file under the configured name.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { configureLog, logger } from '../../src/util/log.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'bts-logrotate-'));
after(() => {
  configureLog({});
  fs.rmSync(root, { recursive: true, force: true });
});

const read = (f: string) => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '');

describe('log file rotation', () => {
  it('a renamed log file is left behind: the next line opens a new one (0600) under the name', () => {
    const file = path.join(root, 'barman.log');
    const problems: string[] = [];
    configureLog({ file, level: 'INFO', onProblem: (m) => problems.push(m) });
    const log = logger('test', 'pg');
    log.info('line one');
    fs.renameSync(file, `${file}.1`);
    log.info('line two');
    log.info('line three');
    assert.match(read(`${file}.1`), /line one/);
    assert.doesNotMatch(read(`${file}.1`), /line two/);
    assert.match(read(file), /INFO: \[pg\] line two\n.*INFO: \[pg\] line three\n$/);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    // logrotate's `copytruncate` keeps the inode: lines simply go on in the same file.
    fs.truncateSync(file, 0);
    log.info('line four');
    assert.match(read(file), /line four/);
    // Removed outright: created again.
    fs.unlinkSync(file);
    log.info('line five');
    assert.match(read(file), /line five/);
    assert.deepEqual(problems, []);
  });
});
