/**
 * `node dist/test/helpers/agent-copy-main.js CONFIG SERVER DEST PGDATA [OID:NAME:LOCATION ...]`:
 * the barman-ts agent's copy engine alone, without PostgreSQL's backup API, run by tests as the
 * barman user to compare it with rsync on a stopped cluster. Prints the copy_stats entries.
 */
import { agentCopyTrees } from '../../src/agent/backup-copy.js';
import { loadConfig } from '../../src/config/config.js';

const [configFile, server, destDir, pgdata, ...spaces] = process.argv.slice(2);
if (!configFile || !server || !destDir || !pgdata) {
  process.stderr.write('usage: agent-copy-main CONFIG SERVER DEST PGDATA [OID:NAME:LOCATION ...]\n');
  process.exit(2);
}
const srv = loadConfig(configFile).servers.get(server);
if (!srv) throw new Error(`no server ${server}`);
const tablespaces = spaces.map((s) => {
  const [oid, name, ...loc] = s.split(':');
  return { oid: Number(oid), name: name ?? '', location: loc.join(':') };
});
const res = await agentCopyTrees({
  srv,
  destDir,
  backupId: `engine-${Date.now()}`,
  version: 150000,
  pgdata,
  tablespaces,
  immediateCheckpoint: false,
  label: 'engine test',
  jobs: 2,
  reuse: 'off',
});
process.stdout.write(`${JSON.stringify(res.extraCopyStats)}\n`);
process.exit(0);
