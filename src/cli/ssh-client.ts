/**
 * Commands that barman-wal-archive / barman-wal-restore run on this host through SSH (put-wal,
 * get-wal) name the client in their messages, so that the DBA reading the PostgreSQL log on the
 * database host (or the barman log) knows which side the error concerns.
 */

/** ` (SSH host: <client ip>)` when run through SSH (sshd sets SSH_CONNECTION), else ''. */
export function sshSuffix(env: NodeJS.ProcessEnv = process.env): string {
  const host = env.SSH_CONNECTION?.trim().split(/\s+/)[0];
  return host ? ` (SSH host: ${host})` : '';
}
