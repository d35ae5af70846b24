/**
 * Barman runs as `barman_user`: started as root it drops to that user (so that a `sudo barman`
 * never leaves root-owned files that the barman user cannot write, which would stop WAL
 * archiving); started as anyone else it must already be that user.
 */
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { BarmanError } from './errors.js';

interface UserIds {
  uid: number;
  gid: number;
  groups: number[];
  home: string;
}

/** From /etc/passwd and /etc/group (no process to spawn: this runs on every command as root). */
function idsFromFiles(user: string): UserIds | null {
  try {
    const pw = fs
      .readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .map((l) => l.split(':'))
      .find((f) => f[0] === user);
    if (!pw) return null;
    const gid = Number(pw[3]);
    const groups = new Set<number>([gid]);
    for (const line of fs.readFileSync('/etc/group', 'utf8').split('\n')) {
      const f = line.split(':');
      if ((f[3] ?? '').split(',').includes(user)) groups.add(Number(f[2]));
    }
    return { uid: Number(pw[2]), gid, groups: [...groups], home: pw[5] ?? '/' };
  } catch {
    return null;
  }
}

/** Through NSS (LDAP and friends), when the files do not know the user. */
function idsFromNss(user: string): UserIds {
  // Loaded only here: child_process costs milliseconds on every start-up otherwise.
  const { execFileSync } = createRequire(import.meta.url)('node:child_process') as typeof import('node:child_process');
  try {
    const uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
    const groups = execFileSync('id', ['-G', user], { encoding: 'utf8' }).trim().split(/\s+/).map(Number);
    const home = execFileSync('getent', ['passwd', user], { encoding: 'utf8' }).split(':')[5] ?? '/';
    return { uid, gid, groups, home };
  } catch {
    throw new BarmanError(`barman_user '${user}' does not exist on this system`);
  }
}

/**
 * Become `user` if we are root, else check that we are `user`. `allowOtherUsers` is for
 * read-only commands that PostgreSQL itself may run (get-wal as a restore_command).
 */
export function becomeBarmanUser(user: string, allowOtherUsers = false): void {
  const me = os.userInfo();
  if (me.username === user) return;
  if (me.uid === 0) {
    const target = idsFromFiles(user) ?? idsFromNss(user);
    process.setgroups?.(target.groups);
    process.setgid?.(target.gid);
    process.setuid?.(target.uid);
    process.env.HOME = target.home;
    process.env.USER = user;
    process.env.LOGNAME = user;
    return;
  }
  if (!allowOtherUsers) throw new BarmanError(`barman must run as user '${user}' (barman_user), not '${me.username}'`);
}
