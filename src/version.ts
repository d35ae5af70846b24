/**
 * Versions. `VERSION` is the Barman version whose output barman-ts follows where Barman versions
 * differ (Debian 12's Barman 3.4: see the compatibility table of the README). It is what
 * `barman -v` prints first, what hook scripts get in BARMAN_VERSION and what `diagnose` reports as
 * barman_ver, so that a script that gates on Barman's version expects exactly the shapes we print.
 * barman-ts's own version follows on a line of its own.
 */
export const VERSION = '3.4.0';
export const BARMAN_TS_VERSION = '0.1.0';

/**
 * `barman -v`: Barman's real output on the first line (argparse folds Barman's
 * `"%s\n\nBarman by ..."` into one line: `3.4.0 Barman by EnterpriseDB (www.enterprisedb.com)`),
 * then barman-ts's version.
 */
export function versionText(): string {
  return `${VERSION} Barman by EnterpriseDB (www.enterprisedb.com)\nbarman-ts ${BARMAN_TS_VERSION} (a drop-in replacement for Barman)`;
}
