/**
 * Running a command on another host through an administrator's ssh command (`ssh_command`,
 * `--remote-ssh-command`, e.g. `ssh -p 2222 postgres@db1`), without ever interpolating our
 * values into a shell string.
 *
 * Two shells are involved and values must survive both:
 *  - locally, the ssh command is the admin's shell text: it runs as `sh -c '<cmd> "$@"' sh
 *    <remote command line>`, so our values are positional parameters, never parsed locally;
 *  - ssh joins its arguments into one line that the remote login shell parses: every word of
 *    that line is single-quoted here (`remoteQuote`).
 */

/** Quote one word for the remote POSIX shell (single quotes; `'` becomes `'\''`). */
export function remoteQuote(word: string): string {
  if (word !== '' && /^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** The one command line ssh sends: the words quoted for the remote shell, space-separated. */
export function remoteCommandLine(words: readonly string[]): string {
  return words.map(remoteQuote).join(' ');
}

/** Program and arguments that run `words` on the other host through the ssh command. */
export function sshInvocation(sshCommand: string, words: readonly string[]): { cmd: string; args: string[] } {
  return { cmd: '/bin/sh', args: ['-c', `${sshCommand} "$@"`, 'sh', remoteCommandLine(words)] };
}

/**
 * glibc malloc settings for an ssh client that carries a long stream: with the defaults, its
 * channel buffers (a few MiB, grown and shrunk all the time) come from mmap and go back with
 * munmap, and every page of them faults in again; on a virtual machine, where a page fault
 * costs several microseconds, that took a quarter of the CPU of an agent backup's stream on
 * the backup host. Buffers up to 32 MiB stay in the heap instead. Settings the administrator
 * gave in GLIBC_TUNABLES are kept (theirs come last: glibc applies the last value).
 */
export const STREAM_MALLOC_TUNABLES = 'glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=134217728';

/** `env` with STREAM_MALLOC_TUNABLES for an ssh client carrying a long stream (see there). */
export function streamingSshEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const own = env.GLIBC_TUNABLES;
  return { ...env, GLIBC_TUNABLES: own ? `${STREAM_MALLOC_TUNABLES}:${own}` : STREAM_MALLOC_TUNABLES };
}
