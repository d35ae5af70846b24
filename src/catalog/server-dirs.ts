/**
 * Where a server keeps things on disk (spec §1), created with catalog permissions (0700).
 */
import * as path from 'node:path';
import type { ServerConfig } from '../config/config.js';
import { ensureDir } from '../util/fsutil.js';
import { lockNames } from './lock.js';

export interface ServerPaths {
  backupDir: string;
  baseDir: string;
  walsDir: string;
  incomingDir: string;
  streamingDir: string;
  errorsDir: string;
  xlogdbDir: string;
  /** The xlog.db we write: classic name `xlog.db`, read by every Barman 3.x. */
  xlogdbFile: string;
  /** The name Barman >= 3.13 writes; read if present. */
  xlogdbFileNew: string;
  lockDir: string;
}

export function serverPaths(srv: ServerConfig): ServerPaths {
  return {
    backupDir: srv.backup_directory,
    baseDir: srv.basebackups_directory,
    walsDir: srv.wals_directory,
    incomingDir: srv.incoming_wals_directory,
    streamingDir: srv.streaming_wals_directory,
    errorsDir: srv.errors_directory,
    xlogdbDir: srv.xlogdb_directory,
    xlogdbFile: path.join(srv.xlogdb_directory, 'xlog.db'),
    xlogdbFileNew: path.join(srv.xlogdb_directory, `${srv.name}-xlog.db`),
    lockDir: srv.global.barman_lock_directory ?? srv.global.barman_home,
  };
}

/** Absolute path of one of the server's lock files. */
export function lockPath(srv: ServerConfig, kind: Exclude<keyof typeof lockNames, 'perBackup' | 'syncBackup' | 'globalCron'>): string {
  return path.join(serverPaths(srv).lockDir, lockNames[kind](srv.name));
}

export function backupLockPath(srv: ServerConfig, backupId: string): string {
  return path.join(serverPaths(srv).lockDir, lockNames.perBackup(srv.name, backupId));
}

/** `.<srv>-<id>-sync-backup.lock`: held by the `sync-backup` copying that backup (passive nodes). */
export function syncBackupLockPath(srv: ServerConfig, backupId: string): string {
  return path.join(serverPaths(srv).lockDir, lockNames.syncBackup(srv.name, backupId));
}

/** Create every directory of the server (as `check` and `cron` do). */
export async function ensureServerDirs(srv: ServerConfig): Promise<void> {
  const p = serverPaths(srv);
  for (const d of [p.backupDir, p.baseDir, p.walsDir, p.incomingDir, p.streamingDir, p.errorsDir, p.xlogdbDir]) {
    await ensureDir(d);
  }
}

/**
 * barman-ts agent metadata of one backup (page hash maps, per-file SHA-256, transfer
 * statistics): `<backup_directory>/agent/<id>`, outside `base/<id>` so that Barman's list-files
 * and size walks never see it. Removed with the backup; one left behind by a Barman delete is
 * swept by the next agent backup.
 */
export function agentMetaDir(srv: ServerConfig, backupId: string): string {
  return path.join(serverPaths(srv).backupDir, 'agent', backupId);
}
