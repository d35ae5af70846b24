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
