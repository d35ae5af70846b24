/**
 * `barman-ts agent` (transfer_method = agent, backup_method = rsync): barman-agent is started
 * through ssh_command and must answer with the protocol version of this barman-ts. Runs before
 * every backup too, so that a missing or mismatched agent stops it before anything is written.
 */
import { AgentSession } from '../agent/session.js';
import { newSeed } from '../agent/pages.js';
import { errorMessage } from '../util/errors.js';
import type { CheckCollector } from './types.js';

export async function checkAgent(col: CheckCollector, sshCommand: string, env?: NodeJS.ProcessEnv): Promise<void> {
  const abort = new AbortController();
  col.onAbandon(() => abort.abort());
  const timer = setTimeout(() => abort.abort(), col.remainingMs());
  try {
    const s = await AgentSession.open({ sshCommand, where: 'the database host', env }, { codec: 'none', level: 0, seed: newSeed(), signal: abort.signal });
    await s.close();
    col.add('barman-ts agent', true, `barman-ts ${s.agentVersion}`);
  } catch (err) {
    col.add('barman-ts agent', false, abort.signal.aborted ? 'timed out' : errorMessage(err));
  } finally {
    clearTimeout(timer);
  }
}
