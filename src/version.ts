/** Version reported by `barman --version` and recorded in hook environments. */
export const VERSION = '3.17.0';
export const BARMAN_TS_VERSION = '0.1.0';

export function versionText(): string {
  return `${VERSION}\n\nbarman-ts ${BARMAN_TS_VERSION}, a drop-in replacement for Barman by EnterpriseDB (www.enterprisedb.com)`;
}
