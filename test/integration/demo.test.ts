/**
 * The README's first command: `npm run demo` (the sandbox round trip) backs up a throw-away
 * cluster, drops a table, recovers to the second before the drop and shows the rows back.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const DEMO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/sandbox/demo.js');

describe('the sandbox demo (npm run demo)', { timeout: 600_000 }, () => {
  it('recovers every row written before the disaster and removes its directory', () => {
    const before = new Set(readdirSync(tmpdir()).filter((n) => n.startsWith('barman-sandbox-')));
    const r = spawnSync(process.execPath, [DEMO], { encoding: 'utf8', env: { ...process.env, BARMAN_SANDBOX_KEEP: '' }, timeout: 540_000 });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    const rowsBefore = /rows before the disaster: (\d+)/.exec(r.stdout)?.[1];
    const rowsAfter = /rows after the recovery: +(\d+)/.exec(r.stdout)?.[1];
    assert.ok(rowsBefore !== undefined && Number(rowsBefore) > 1000, r.stdout);
    assert.equal(rowsAfter, rowsBefore);
    assert.match(r.stdout, /The data is back, as it was at /);
    const left = readdirSync(tmpdir()).filter((n) => n.startsWith('barman-sandbox-') && !before.has(n));
    assert.deepEqual(left, [], 'the sandbox directory is removed');
  });
});
