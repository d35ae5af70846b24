/**
 * WAL streaming: `pg_receivewal` into `streaming/`, under the server's receive-wal lock, with the
 * configured replication slot. pg_receivewal runs with --no-loop: when PostgreSQL goes away it
 * exits, and the next `cron` starts it again (so a restarted server is picked up within a minute).
 */
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { acquireLock, readLockPid, isLockHeld } from '../catalog/lock.js';
import { ensureServerDirs, lockPath, serverPaths } from '../catalog/server-dirs.js';
import { conninfoForChild } from '../postgres/conninfo.js';
import { findPgBinary, subprocessEnv } from '../postgres/binaries.js';
import { BarmanError } from '../util/errors.js';
import { faultPoint } from '../util/fault.js';
import { logger } from '../util/log.js';
import { runChecked } from '../util/proc.js';
import { readdirIfExists } from '../util/fsutil.js';

const log = logger('wal.receive');

export function streamingConninfo(srv: ServerConfig): string {
  const ci = srv.wal_streaming_conninfo ?? srv.streaming_conninfo;
  if (!ci) throw new BarmanError(`streaming_conninfo is not set for server '${srv.name}'`);
  return ci;
}

function requireSlot(srv: ServerConfig): string {
  if (!srv.slot_name) throw new BarmanError("Replication slot name not set. Set 'slot_name' in the configuration");
  return srv.slot_name;
}

/** Create the server's replication slot (pg_receivewal --create-slot). */
export async function createSlot(srv: ServerConfig, ifNotExists: boolean): Promise<void> {
  const slot = requireSlot(srv);
  // The password goes through the child's environment: arguments are visible in `ps`.
  const { conninfo, env } = conninfoForChild(streamingConninfo(srv));
  const args = ['--create-slot', `--slot=${slot}`, `--dbname=${conninfo}`, '--no-password'];
  if (ifNotExists) args.push('--if-not-exists');
  await runChecked(findPgBinary('pg_receivewal', srv.path_prefix), args, { env: subprocessEnv(srv.path_prefix, env) });
  log.info(`created replication slot '${slot}' for server ${srv.name}`);
}

export async function dropSlot(srv: ServerConfig): Promise<void> {
  const slot = requireSlot(srv);
  const { conninfo, env } = conninfoForChild(streamingConninfo(srv));
  await runChecked(findPgBinary('pg_receivewal', srv.path_prefix), ['--drop-slot', `--slot=${slot}`, `--dbname=${conninfo}`, '--no-password'], {
    env: subprocessEnv(srv.path_prefix, env),
  });
  log.info(`dropped replication slot '${slot}' for server ${srv.name}`);
}

export async function isReceiveWalRunning(srv: ServerConfig): Promise<boolean> {
  return isLockHeld(lockPath(srv, 'receiveWal'));
}

/** Stop a running receive-wal (SIGTERM to the PID recorded in its lock); its PID, null if none ran. */
export async function stopReceiveWal(srv: ServerConfig): Promise<number | null> {
  const file = lockPath(srv, 'receiveWal');
  if (!(await isLockHeld(file))) return null;
  const pid = readLockPid(file);
  if (!pid) return null;
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 100 && (await isLockHeld(file)); i++) await new Promise((r) => setTimeout(r, 100));
  return pid;
}

/**
 * Forget the local streaming position: remove `.partial` files so that pg_receivewal starts again
 * from the slot's (or the server's current) position. Refused while receive-wal runs.
 */
export async function resetReceiveWal(srv: ServerConfig): Promise<string[]> {
  if (await isReceiveWalRunning(srv)) throw new BarmanError('receive-wal is running: stop it first (barman receive-wal --stop)');
  const dir = serverPaths(srv).streamingDir;
  const removed: string[] = [];
  for (const n of await readdirIfExists(dir)) {
    if (n.endsWith('.partial')) {
      await fsp.unlink(path.join(dir, n));
      removed.push(n);
    }
  }
  return removed;
}

export interface ReceiveWalEvents {
  onStarted?: (pid: number) => void;
  onLine?: (line: string) => void;
}

/**
 * Run pg_receivewal in the foreground until it exits or we are signalled. Resolves with its exit
 * code. Throws LockBusyError if another receive-wal holds the lock.
 */
export async function receiveWal(srv: ServerConfig, events: ReceiveWalEvents = {}): Promise<number> {
  const lock = await acquireLock(lockPath(srv, 'receiveWal'), 'receive-wal');
  try {
    await ensureServerDirs(srv);
    if (srv.slot_name && srv.create_slot === 'auto') await createSlot(srv, true);
    const dir = serverPaths(srv).streamingDir;
    // The password goes through the child's environment: arguments are visible in `ps`.
    const { conninfo, env } = conninfoForChild(streamingConninfo(srv), { application_name: srv.streaming_archiver_name });
    const args = [`--dbname=${conninfo}`, `--directory=${dir}`, '--verbose', '--no-loop', '--no-password'];
    if (srv.slot_name) args.push(`--slot=${srv.slot_name}`);
    const bin = findPgBinary('pg_receivewal', srv.path_prefix);
    log.info(`starting ${bin} for server ${srv.name} into ${dir}`);
    return await new Promise<number>((resolve, reject) => {
      const child = spawn(bin, args, { env: subprocessEnv(srv.path_prefix, env), stdio: ['ignore', 'pipe', 'pipe'] });
      const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
      const onTerm = forward('SIGTERM');
      const onInt = forward('SIGINT');
      process.on('SIGTERM', onTerm);
      process.on('SIGINT', onInt);
      if (child.pid) events.onStarted?.(child.pid);
      faultPoint('receive-wal:started');
      let buf = '';
      const onData = (d: Buffer) => {
        buf += d.toString('utf8');
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          log.info(`pg_receivewal: ${line}`);
          events.onLine?.(line);
        }
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      child.on('error', (err) => reject(new BarmanError(`cannot run pg_receivewal: ${err.message}`)));
      child.on('close', (code, signal) => {
        process.off('SIGTERM', onTerm);
        process.off('SIGINT', onInt);
        log.info(`pg_receivewal for server ${srv.name} exited (code ${code}, signal ${signal})`);
        resolve(code ?? (signal ? 0 : 1));
      });
    });
  } finally {
    lock.release();
  }
}
