/**
 * A synthetic server for unit tests of the WAL modules: a barman home and config file with one
 * server `pg` (no PostgreSQL: conninfo points nowhere), its incoming/ and streaming/ created.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadConfig, type ServerConfig } from '../../src/config/config.js';
import { serverPaths } from '../../src/catalog/server-dirs.js';

export interface TestServer {
  srv: ServerConfig;
  conf: string;
  incoming: string;
  streaming: string;
  wals: string;
  errors: string;
}

/** A fresh server under `dir` (created), with `extra` server options. */
export function makeTestServer(dir: string, extra: Record<string, string> = {}): TestServer {
  fs.mkdirSync(dir, { recursive: true });
  const conf = path.join(dir, 'barman.conf');
  const opts: Record<string, string> = { conninfo: 'host=127.0.0.1', backup_method: 'postgres', archiver: 'on', ...extra };
  const lines = ['[barman]', `barman_home = ${dir}/home`, '', '[pg]', ...Object.entries(opts).map(([k, v]) => `${k} = ${v}`)];
  fs.writeFileSync(conf, `${lines.join('\n')}\n`);
  const srv = loadConfig(conf).servers.get('pg');
  assert.ok(srv);
  assert.deepEqual(srv.errors, []);
  const p = serverPaths(srv);
  fs.mkdirSync(p.incomingDir, { recursive: true });
  fs.mkdirSync(p.streamingDir, { recursive: true });
  return { srv, conf, incoming: p.incomingDir, streaming: p.streamingDir, wals: p.walsDir, errors: p.errorsDir };
}
