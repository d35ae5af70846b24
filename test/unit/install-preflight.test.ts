/**
 * What the Debian package prints after its installation (src/checks/install-preflight.ts): the
 * configuration's unknown options and errors, and catalogs in Barman 3.13's layout. It only
 * reads: the tests compare the whole tree before and after.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { preflight } from '../../src/checks/install-preflight.js';

function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const n of readdirSync(d).sort()) {
      const p = path.join(d, n);
      const st = statSync(p);
      out.push(`${path.relative(dir, p)} ${st.mode} ${st.size} ${st.mtimeMs}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}

function withConfig(body: (dir: string, conf: string) => void, servers: string, global = ''): void {
  const dir = mkdtempSync(path.join(tmpdir(), 'preflight-'));
  try {
    const conf = path.join(dir, 'barman.conf');
    const user = process.env.USER ?? 'root';
    writeFileSync(conf, `[barman]\nbarman_home = ${dir}/home\nbarman_user = ${user}\n${global}\n${servers}`);
    mkdirSync(path.join(dir, 'home'));
    body(dir, conf);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const SERVER = (name: string, extra = '') => `[${name}]\nconninfo = host=/nonexistent dbname=postgres\nbackup_method = postgres\nstreaming_conninfo = host=/nonexistent\narchiver = on\n${extra}\n`;

describe('install preflight', () => {
  it('a classic configuration and catalog: one info line, nothing else', () => {
    withConfig((_dir, conf) => {
      const f = preflight(conf);
      assert.equal(f.length, 1);
      assert.equal(f[0]?.level, 'info');
      assert.match(f[0]?.text ?? '', /1 server\(s\), catalog in .*\/home$/);
    }, SERVER('pg'));
  });

  it('names options barman-ts does not know, in [barman] and in a server', () => {
    withConfig(
      (_dir, conf) => {
        const warnings = preflight(conf).filter((x) => x.level === 'warning').map((x) => x.text);
        assert.ok(warnings.some((w) => /Invalid configuration option "future_global_option" in \[barman\] section: barman-ts ignores it\./.test(w)), warnings.join('\n'));
        assert.ok(warnings.some((w) => /Invalid configuration option "future_server_option" in \[pg\] section/.test(w)), warnings.join('\n'));
      },
      SERVER('pg', 'future_server_option = 1'),
      'future_global_option = yes',
    );
  });

  it("points out catalogs in Barman 3.13's layout (meta/, <server>-xlog.db, xlogdb_directory) without touching them", () => {
    withConfig(
      (dir, conf) => {
        mkdirSync(path.join(dir, 'home', 'a', 'meta'), { recursive: true });
        mkdirSync(path.join(dir, 'home', 'b', 'wals'), { recursive: true });
        writeFileSync(path.join(dir, 'home', 'b', 'wals', 'b-xlog.db'), '');
        mkdirSync(path.join(dir, 'home', 'xlogdb'));
        const before = tree(dir);
        const warnings = preflight(conf).filter((x) => x.level === 'warning').map((x) => x.text);
        assert.deepEqual(tree(dir), before, 'the preflight changed files');
        const about = (s: string) => warnings.find((w) => w.startsWith(`server ${s}: its catalog has the layout of Barman 3.13 or later`));
        assert.match(about('a') ?? '', /\/home\/a\/meta\/\)/);
        assert.match(about('b') ?? '', /b-xlog\.db/);
        assert.equal(about('c'), `server c: its catalog has the layout of Barman 3.13 or later (xlogdb_directory = ${dir}/home/xlogdb). barman-ts reads and keeps it as it is; Barman 3.4 (Debian 12) cannot read it: switch back only to Barman 3.13 or later.`);
        assert.equal(about('d'), undefined);
        assert.match(about('a') ?? '', /Barman 3\.4 \(Debian 12\) cannot read it/);
      },
      SERVER('a') + SERVER('b') + SERVER('c', 'xlogdb_directory = %(barman_home)s/xlogdb') + SERVER('d'),
    );
  });

  it('an unreadable or missing configuration is one error finding, not an exception', () => {
    const f = preflight('/nonexistent/barman.conf');
    assert.equal(f.length, 1);
    assert.equal(f[0]?.level, 'error');
    assert.match(f[0]?.text ?? '', /^the configuration cannot be read: /);
  });
});
