/**
 * `barman config-switch SERVER MODEL` / `--reset` (Barman 3.10+, spec §3.1, §4.2): apply a
 * configuration model (a `model = true` section of the same `cluster`) on top of a server, or
 * stop applying one. The choice is kept in `<backup_directory>/.active-model.auto` (the model's
 * name, as Barman writes it), which every later command reads when it loads the configuration
 * (config.ts applyActiveModel). A running receive-wal is stopped so that cron starts it again
 * with the new settings (Barman restarts it).
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { activeModelFile, modelClusterMismatch, readActiveModel, type Config, type ServerConfig } from '../config/config.js';
import { configValueText } from '../reporting/server-status.js';
import { BarmanError } from '../util/errors.js';
import { ensureDir, fsyncDir, writeFileAtomic } from '../util/fsutil.js';
import { stopReceiveWal } from '../wal/receive-wal.js';

export interface SwitchEvents {
  info?: (msg: string) => void;
  warning?: (msg: string) => void;
}

/** Stop receive-wal so that cron restarts it with the new configuration. */
async function restartProcesses(srv: ServerConfig, ev: SwitchEvents): Promise<void> {
  if (await stopReceiveWal(srv)) ev.info?.(`Stopped receive-wal of server '${srv.name}': cron starts it again with the new configuration`);
}

/**
 * Apply model `modelName` to `srv` (as loaded: with its current active model, if any) and make
 * it the active model. Returns false when it already was.
 */
export async function switchModel(cfg: Config, srv: ServerConfig, modelName: string, ev: SwitchEvents = {}): Promise<boolean> {
  const model = cfg.models.get(modelName);
  if (!model) throw new BarmanError(`Unknown model '${modelName}'`);
  if (model.cluster !== srv.cluster) throw new BarmanError(modelClusterMismatch(model, srv));
  if (readActiveModel(srv) === modelName) {
    ev.info?.(`Model '${modelName}' is already active for server '${srv.name}', skipping...`);
    return false;
  }
  ev.info?.(`Applying model '${modelName}' to server '${srv.name}'`);
  const current = srv as unknown as Record<string, unknown>; // option values are keyed by option name
  for (const [option, value] of Object.entries(model.values)) {
    const before = configValueText(option, current[option]);
    const after = configValueText(option, value);
    if (before !== after) {
      ev.info?.(`Changing value of option '${option}' for server '${srv.name}' from '${before}' to '${after}' through the model '${modelName}'`);
    }
  }
  await ensureDir(srv.backup_directory);
  await writeFileAtomic(activeModelFile(srv), modelName);
  await restartProcesses(srv, ev);
  return true;
}

/** Stop applying any model to `srv` (its own configuration applies again). */
export async function resetModel(srv: ServerConfig, ev: SwitchEvents = {}): Promise<void> {
  ev.info?.(`Resetting the active model for the server ${srv.name}`);
  const file = activeModelFile(srv);
  try {
    await fsp.unlink(file);
    await fsyncDir(path.dirname(file));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new BarmanError(`cannot remove ${file}: ${(err as Error).message}`);
  }
  await restartProcesses(srv, ev);
}
