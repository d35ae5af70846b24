/**
 * The trust rules of the WAL clients' sh fast paths and of the Node code cannot drift apart:
 * both launchers carry exactly the fragment rendered from src/walclient/trust-rules.ts, and the
 * sh functions and the Node ones give the same answers on the same files and directories
 * (marker identities to the nanosecond, directory modes, owners, symlinks).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { dirTrusted, fileSignature, LAUNCHERS, SH_TRUST_FRAGMENT, withCurrentFragment } from '../../src/walclient/trust-rules.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'bts-trust-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

/** Run `body` in /bin/sh after the fragment, with `args` as "$@"; stdout lines. */
function sh(body: string, args: readonly string[]): string[] {
  const r = spawnSync('/bin/sh', ['-c', `${SH_TRUST_FRAGMENT}\n${body}`, 'sh', ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.split('\n').filter((l) => l !== '');
}

describe('trust rules shared by the sh launchers and Node', () => {
  it('each launcher carries the current fragment (run `node dist/src/walclient/trust-rules.js --write` after changing it)', () => {
    for (const rel of LAUNCHERS) {
      const text = fs.readFileSync(path.join(REPO, rel), 'utf8');
      assert.ok(text.includes(SH_TRUST_FRAGMENT), `${rel} has no up-to-date trust rules block`);
      assert.equal(withCurrentFragment(text), text);
    }
  });

  it('a marker identity is the same from `stat -c "$marker_stat_format"` and from fileSignature()', () => {
    const files: string[] = [];
    const mtimes = ['1700000000.000000000', '1700000000.000000001', '1700000000.999999999', '1234567890.5', '2000000000.123456789'];
    for (const [i, m] of mtimes.entries()) {
      const f = path.join(root, `wal${i}`);
      fs.writeFileSync(f, Buffer.alloc(i * 1000, i));
      // touch -d keeps the nanoseconds exactly (utimes in JS goes through a double).
      assert.equal(spawnSync('touch', ['-m', '-d', `@${m}`, f]).status, 0);
      files.push(f);
    }
    fs.linkSync(files[0] as string, path.join(root, 'hardlink'));
    files.push(path.join(root, 'hardlink'));
    if (fs.existsSync('/dev/shm')) {
      // Another file system: another device number.
      const shm = fs.mkdtempSync('/dev/shm/bts-trust-');
      fs.writeFileSync(path.join(shm, 'f'), 'x');
      files.push(path.join(shm, 'f'));
      after(() => fs.rmSync(shm, { recursive: true, force: true }));
    }
    const fromSh = sh('stat -c "$marker_stat_format" -- "$@"', files);
    assert.deepEqual(
      fromSh,
      files.map((f) => fileSignature(fs.statSync(f, { bigint: true }))),
    );
    assert.match(fromSh[1] ?? '', / 1700000000\.000000001$/);
    assert.notEqual(fromSh[1], fromSh[0], 'one nanosecond apart: different identities');
  });

  it('dir_trusted and dirTrusted agree on modes, owners, symlinks and non-directories', () => {
    const cases: string[] = [];
    for (const mode of [0o700, 0o755, 0o750, 0o705, 0o711, 0o500, 0o770, 0o775, 0o757, 0o777, 0o702, 0o720, 0o1777, 0o2755, 0o3770, 0o4700]) {
      const d = path.join(root, `d${mode.toString(8)}`);
      fs.mkdirSync(d);
      fs.chmodSync(d, mode);
      cases.push(d);
    }
    const link = path.join(root, 'link-to-700');
    fs.symlinkSync(path.join(root, 'd700'), link);
    const file = path.join(root, 'plain-file');
    fs.writeFileSync(file, '');
    fs.chmodSync(file, 0o700);
    cases.push(link, file, path.join(root, 'missing'));
    if (process.getuid?.() === 0) {
      for (const mode of [0o700, 0o755]) {
        const d = path.join(root, `foreign${mode.toString(8)}`);
        fs.mkdirSync(d);
        fs.chmodSync(d, mode);
        fs.chownSync(d, 65534, 65534);
        cases.push(d);
      }
    }
    const fromSh = sh('for d do if dir_trusted "$d" "$(stat -c %a -- "$d" 2>/dev/null)"; then echo yes; else echo no; fi; done', cases);
    const fromNode = cases.map((d) => {
      let st: fs.Stats;
      try {
        st = fs.lstatSync(d);
      } catch {
        return 'no';
      }
      return dirTrusted(st, process.getuid?.()) ? 'yes' : 'no';
    });
    assert.deepEqual(
      cases.map((c, i) => `${path.basename(c)} ${fromSh[i]}`),
      cases.map((c, i) => `${path.basename(c)} ${fromNode[i]}`),
    );
    // The rule itself: ours and closed to others is trusted, whatever the read bits.
    const trusted = cases.filter((_, i) => fromNode[i] === 'yes').map((c) => path.basename(c));
    assert.deepEqual(trusted, ['d700', 'd755', 'd750', 'd705', 'd711', 'd500', 'd2755', 'd4700']);
  });
});
