/**
 * `barman-ts agent` (transfer_method = agent, backup_method = rsync): barman-agent is started
 * through ssh_command and must answer with the protocol version of this barman-ts. Runs before
 * every backup too, so that a missing or mismatched agent stops it before anything is written;
 * there the agent checked is the first of those the backup started ahead for its copy
 * (agent/prestart.ts), kept running for it.
 */
import { AgentSession } from '../agent/session.js';
import { newSeed } from '../agent/pages.js';
import type { PrestartedAgents } from '../agent/prestart.js';
import { errorMessage } from '../util/errors.js';
import type { CheckCollector } from './types.js';

/** Start an agent and say hello (or wait for the first prestarted one): the `barman-ts agent` line, not yet added. */
export async function probeAgent(col: CheckCollector, sshCommand: string, env?: NodeJS.ProcessEnv, prestarted?: PrestartedAgents): Promise<{ ok: boolean; hint: string }> {
  const abort = new AbortController();
  col.onAbandon(() => abort.abort());
  const timer = setTimeout(() => abort.abort(), col.remainingMs());
  const aborted = new Promise<never>((_, reject) => abort.signal.addEventListener('abort', () => reject(new Error('timed out')), { once: true }));
  aborted.catch(() => undefined);
  try {
    const early = prestarted?.first();
    if (early) {
      // The backup's own agent: left running for the copy (the backup discards it if it fails).
      const s = await Promise.race([early, aborted]);
      return { ok: true, hint: `barman-ts ${s.agentVersion}` };
    }
    const s = await AgentSession.open({ sshCommand, where: 'the database host', env }, { codec: 'none', level: 0, seed: newSeed(), signal: abort.signal });
    await s.close();
    return { ok: true, hint: `barman-ts ${s.agentVersion}` };
  } catch (err) {
    return { ok: false, hint: abort.signal.aborted ? 'timed out' : errorMessage(err) };
  } finally {
    clearTimeout(timer);
  }
}
