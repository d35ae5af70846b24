/**
 * Only "not found" is absent (src/util/fsutil.ts): a missing file or a path through a file is
 * null / false / []; anything else (a symlink loop, a file where a directory is expected) is an
 * error with the path in its message. EACCES and EIO are injected into the real CLI by
 * test/integration/io-errors.test.ts.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  isNotFound,
  lstatIfExists,
  pathExists,
  pathExistsSync,
  readdirIfExists,
  readdirIfExistsSync,
  readTextIfExists,
  statIfExists,
  statIfExistsSync,
  treeSizes,
} from '../../src/util/fsutil.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'bts-fsutil-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
const file = path.join(root, 'file');
fs.writeFileSync(file, 'x');
const loop = path.join(root, 'loop');
fs.symlinkSync(loop, loop);

describe('absent means ENOENT (or a path through a file)', () => {
  it('says absent for missing paths and paths through a file', async () => {
    for (const p of [path.join(root, 'missing'), path.join(file, 'child')]) {
      assert.equal(await pathExists(p), false, p);
      assert.equal(pathExistsSync(p), false, p);
      assert.equal(await statIfExists(p), null, p);
      assert.deepEqual(await readdirIfExists(p), [], p);
      assert.deepEqual(readdirIfExistsSync(p), [], p);
      assert.equal(await readTextIfExists(p), null, p);
    }
    assert.equal(isNotFound(Object.assign(new Error('x'), { code: 'EACCES' })), false);
    assert.equal(isNotFound(Object.assign(new Error('x'), { code: 'EIO' })), false);
  });

  it('throws for what is there but cannot be used: never "absent"', async () => {
    // A symlink loop: lstat sees the link, stat cannot resolve it (ELOOP).
    assert.ok((await lstatIfExists(loop))?.isSymbolicLink());
    await assert.rejects(statIfExists(loop), /cannot access .*loop: ELOOP/);
    assert.throws(() => statIfExistsSync(loop), /ELOOP/);
    await assert.rejects(readTextIfExists(loop), /cannot read .*loop: ELOOP/);
    // A file where a directory is expected is not an empty directory.
    await assert.rejects(readdirIfExists(file), /not a directory/);
    assert.throws(() => readdirIfExistsSync(file), /not a directory/);
  });

  it('treeSizes counts the files of a tree; a missing tree is an empty one', async () => {
    const tree = path.join(root, 'tree');
    fs.mkdirSync(path.join(tree, 'a'), { recursive: true });
    fs.writeFileSync(path.join(tree, 'a', 'f'), Buffer.alloc(100));
    assert.deepEqual(await treeSizes(tree), { size: 100, deduplicated: 100 });
    assert.deepEqual(await treeSizes(path.join(root, 'no-tree')), { size: 0, deduplicated: 0 });
  });
});
