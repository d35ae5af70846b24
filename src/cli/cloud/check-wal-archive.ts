/**
 * barman-cloud-check-wal-archive DESTINATION_URL SERVER_NAME [--timeline N] (spec §11.2):
 * succeed only when the archive can be used by a new server (no WAL at all, or none on
 * timelines >= N). A missing bucket passes.
 */
import { BarmanError, errorMessage } from '../../util/errors.js';
import { runIfEntryPoint } from '../../walclient/cli-common.js';
import { cloudCommand, commonOptions, cloudMain, openAndCheck, positiveInt, EXIT_OPERATION } from './common.js';

function program() {
  return cloudCommand('barman-cloud-check-wal-archive', 'Checks that the WAL archive on the specified cloud storage can be safely used for a new PostgreSQL server.', 'destination')
    .option('--timeline <N>', 'The earliest timeline whose WALs should cause the check to fail');
}

export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<number> {
  const cmd = program();
  return cloudMain(argv, cmd, 'Barman cloud WAL archive check exception', async () => {
    const raw = cmd.opts<{ timeline?: string }>().timeline;
    const timeline = raw === undefined ? undefined : positiveInt(raw, '--timeline', 1);
    const common = commonOptions(cmd);
    const opened = await openAndCheck(common);
    try {
      if (common.test || !opened.exists) return 0;
      const { CloudCatalog } = await import('../../cloud/catalog.js');
      const { checkArchiveUsable } = await import('../../wal/check-wal-archive.js');
      const catalog = new CloudCatalog(opened.storage, opened.layout);
      try {
        checkArchiveUsable([...(await catalog.walPaths()).keys()], timeline);
      } catch (err) {
        if (!(err instanceof BarmanError)) throw err;
        throw new BarmanError(`WAL archive check failed for server ${common.server}: ${errorMessage(err)}`, EXIT_OPERATION);
      }
      return 0;
    } finally {
      await opened.storage.close();
    }
  });
}

runIfEntryPoint(import.meta.url, () => main());
