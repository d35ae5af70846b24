/**
 * Locating the PostgreSQL client programs (pg_basebackup, pg_receivewal, ...): `path_prefix`
 * first, then PATH, then the newest Debian/RPM style install directory.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BarmanError } from '../util/errors.js';

const INSTALL_ROOTS = ['/usr/lib/postgresql', '/usr/pgsql'];

function candidates(pathPrefix: string | null | undefined): string[] {
  const dirs = [...(pathPrefix ? pathPrefix.split(':') : []), ...(process.env.PATH ?? '').split(':')];
  for (const root of INSTALL_ROOTS) {
    try {
      const versions = fs.readdirSync(root).filter((v) => /^\d+(\.\d+)?$/.test(v)).sort((a, b) => Number(b) - Number(a));
      for (const v of versions) dirs.push(path.join(root, v, 'bin'));
    } catch {
      /* not installed there */
    }
  }
  return dirs.filter((d) => d !== '');
}

export function findPgBinary(name: string, pathPrefix?: string | null): string {
  for (const dir of candidates(pathPrefix)) {
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* keep looking */
    }
  }
  throw new BarmanError(`${name} not found (install the PostgreSQL client programs or set path_prefix)`);
}

/** Environment for subprocesses: path_prefix prepended to PATH. */
export function subprocessEnv(pathPrefix?: string | null, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  if (pathPrefix) env.PATH = `${pathPrefix}:${env.PATH ?? ''}`;
  return env;
}
