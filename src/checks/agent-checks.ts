/**
 * `barman-ts agent` (transfer_method = agent, backup_method = rsync): barman-agent is started
 * through ssh_command and must answer with the protocol version of this barman-ts. Runs before
 * every backup too, so that a missing or mismatched agent stops it before anything is written.
 */
import { AgentSession } from '../agent/session.js';
import { newSeed } from '../agent/pages.js';
import { errorMessage } from '../util/errors.js';
import type { CheckCollector } from './types.js';

/** Start an agent and say hello: the `barman-ts agent` line, not yet added. */
export async function probeAgent(col: CheckCollector, sshCommand: string, env?: NodeJS.ProcessEnv): Promise<{ ok: boolean; hint: string }> {
  const abort = new AbortController();
  col.onAbandon(() => abort.abort());
  const timer = setTimeout(() => abort.abort(), col.remainingMs());
  try {
    const s = await AgentSession.open({ sshCommand, where: 'the database host', env }, { codec: 'none', level: 0, seed: newSeed(), signal: abort.signal });
    await s.close();
    return { ok: true, hint: `barman-ts ${s.agentVersion}` };
  } catch (err) {
    return { ok: false, hint: abort.signal.aborted ? 'timed out' : errorMessage(err) };
  } finally {
    clearTimeout(timer);
  }
}
