/**
 * What an administrator must know right after installing barman-ts over an existing Barman
 * setup (run by the Debian package's postinst, and by hand after `npm install -g`): the
 * configuration as barman-ts reads it (unknown options, errors) and the layout of each server's
 * catalog (a layout of Barman >= 3.13 cannot be read by Barman 3.4 any more). Read-only:
 * it opens files and lists directories, it never creates, moves or locks anything.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadConfig, type Config, type ServerConfig } from '../config/config.js';
import { serverPaths } from '../catalog/server-dirs.js';

export interface Finding {
  level: 'info' | 'warning' | 'error';
  text: string;
}

function exists(p: string): boolean {
  try {
    fs.statSync(p);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** Layout features of Barman >= 3.13 in one server's catalog, in words (empty: classic layout). */
export function newerLayoutFeatures(srv: ServerConfig): string[] {
  const p = serverPaths(srv);
  const found: string[] = [];
  const meta = path.join(p.backupDir, 'meta');
  if (exists(meta)) found.push(`${meta}/`);
  if (exists(p.xlogdbFileNew)) found.push(p.xlogdbFileNew);
  if (srv.sources.xlogdb_directory !== 'default' && srv.xlogdb_directory !== srv.wals_directory) {
    found.push(`xlogdb_directory = ${srv.xlogdb_directory}`);
  }
  return found;
}

export function preflight(configFile?: string): Finding[] {
  let cfg: Config;
  try {
    cfg = loadConfig(configFile);
  } catch (err) {
    return [{ level: 'error', text: `the configuration cannot be read: ${(err as Error).message}` }];
  }
  const out: Finding[] = [{ level: 'info', text: `configuration: ${cfg.configFile}, ${cfg.servers.size} server(s), catalog in ${cfg.global.barman_home}` }];
  for (const w of cfg.warnings) {
    const unknown = w.startsWith('Invalid configuration option');
    out.push({ level: 'warning', text: unknown ? `${w.replace(/\.$/, '')}: barman-ts ignores it.` : w });
  }
  for (const e of cfg.errors) out.push({ level: 'error', text: e });
  for (const srv of cfg.servers.values()) {
    for (const e of srv.errors) out.push({ level: 'error', text: `server ${srv.name}: ${e} (the server is disabled until this is fixed)` });
    let features: string[];
    try {
      features = newerLayoutFeatures(srv);
    } catch (err) {
      out.push({ level: 'warning', text: `server ${srv.name}: cannot look at its catalog: ${(err as Error).message}` });
      continue;
    }
    if (features.length > 0) {
      out.push({
        level: 'warning',
        text: `server ${srv.name}: its catalog has the layout of Barman 3.13 or later (${features.join(', ')}). barman-ts reads and keeps it as it is; Barman 3.4 (Debian 12) cannot read it: switch back only to Barman 3.13 or later.`,
      });
    }
  }
  return out;
}
