/** Version reported by `barman --version` and recorded in hook environments. */
export const VERSION = '3.17.0';
export const BARMAN_TS_VERSION = '0.1.0';
