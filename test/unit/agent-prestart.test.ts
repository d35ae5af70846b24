/**
 * PrestartedAgents (src/agent/prestart.ts): agents started with `barman backup`, checked through
 * the first one, taken by the copy, or let go. Fake connections stand for ssh and the agent.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PrestartedAgents } from '../../src/agent/prestart.js';
import type { AgentEndpoint, AgentSession } from '../../src/agent/session.js';

const ep: AgentEndpoint = { sshCommand: 'ssh db', where: 'the database host' };

/** A connection that the test settles by hand, and what happened to it. */
function fakeConnect() {
  const made: { resolve: (s: AgentSession) => void; reject: (e: Error) => void; signal: AbortSignal; closed: boolean; session: AgentSession }[] = [];
  const connect = (_ep: AgentEndpoint, signal: AbortSignal): Promise<AgentSession> =>
    new Promise<AgentSession>((resolve, reject) => {
      const entry = {
        resolve,
        reject,
        signal,
        closed: false,
        session: null as unknown as AgentSession,
      };
      entry.session = {
        agentVersion: `v${made.length}`,
        close: async () => {
          entry.closed = true;
        },
      } as unknown as AgentSession;
      // As AgentSession.connect does: the signal stops a connection still being made.
      signal.addEventListener('abort', () => reject(new Error('interrupted')), { once: true });
      made.push(entry);
    });
  return { made, connect };
}

describe('agents started ahead of a backup', () => {
  it('starts them all at once; the first one is what the check reports, still there for the copy', async () => {
    const { made, connect } = fakeConnect();
    const agents = new PrestartedAgents(ep, 3, connect);
    assert.equal(made.length, 3);
    assert.equal(agents.count, 3);
    made.forEach((m) => m.resolve(m.session));
    const first = await agents.first();
    assert.equal(first, made[0]?.session);
    // Asking does not take it.
    assert.equal(agents.count, 3);
    const taken = await Promise.all(agents.take());
    assert.deepEqual(taken, made.map((m) => m.session));
    assert.equal(agents.count, 0);
    assert.equal(agents.first(), null);
    assert.deepEqual(agents.take(), []);
    // Taken: discard leaves them alone.
    await agents.discard();
    assert.ok(made.every((m) => !m.closed && !m.signal.aborted));
  });

  it('at least one agent, whatever the number of jobs', () => {
    const { made, connect } = fakeConnect();
    new PrestartedAgents(ep, 0, connect);
    assert.equal(made.length, 1);
  });

  it('a failed start is seen by whoever looks (the check, then the copy), never as an unhandled rejection', async () => {
    const { made, connect } = fakeConnect();
    const agents = new PrestartedAgents(ep, 2, connect);
    made[0]?.reject(new Error('cannot reach the database host'));
    // Let an unhandled rejection surface, if there were one.
    await new Promise((r) => setImmediate(r));
    await assert.rejects(agents.first() as Promise<AgentSession>, /cannot reach/);
    const [p0] = agents.take();
    await assert.rejects(p0 as Promise<AgentSession>, /cannot reach/);
  });

  it('discard closes the agents that started and stops those still starting', async () => {
    const { made, connect } = fakeConnect();
    const agents = new PrestartedAgents(ep, 2, connect);
    made[0]?.resolve(made[0].session);
    await agents.first();
    await agents.discard();
    assert.equal(made[0]?.closed, true);
    assert.equal(made[0]?.signal.aborted, false);
    assert.equal(made[1]?.signal.aborted, true);
    assert.equal(agents.count, 0);
  });

  it('the signal given to take() stops the agents taken, started or starting', async () => {
    const { made, connect } = fakeConnect();
    const agents = new PrestartedAgents(ep, 2, connect);
    const stop = new AbortController();
    const taken = agents.take(stop.signal);
    taken.forEach((p) => p.catch(() => undefined));
    assert.ok(made.every((m) => !m.signal.aborted));
    stop.abort();
    assert.ok(made.every((m) => m.signal.aborted));
    await assert.rejects(taken[1] as Promise<AgentSession>, /interrupted/);
    // Already aborted when taken: stopped at once.
    const more = fakeConnect();
    const late = new PrestartedAgents(ep, 1, more.connect);
    late.take(stop.signal)[0]?.catch(() => undefined);
    assert.equal(more.made[0]?.signal.aborted, true);
  });
});
