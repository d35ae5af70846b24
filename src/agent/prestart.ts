/**
 * Agents started ahead of a backup (transfer_method = agent). An ssh login and the start of a
 * Node program on the database host take a second or more each; started with the command,
 * they run while the checks, the catalog work and the checkpoint do: the first one answers the
 * `barman-ts agent` check (instead of an agent of its own, started and stopped for nothing),
 * and all of them then do the copy. They are connected (greeting and protocol version checked)
 * but not greeted: the codec and the page hash seed are only known once the backup holds its
 * lock and has chosen its basis (AgentSession.hello()).
 */
import { AgentSession, type AgentEndpoint } from './session.js';

interface Pending {
  session: Promise<AgentSession>;
  abort: AbortController;
  settled: boolean;
}

export class PrestartedAgents {
  private pending: Pending[];

  constructor(
    readonly ep: AgentEndpoint,
    count: number,
    connect: (ep: AgentEndpoint, signal: AbortSignal) => Promise<AgentSession> = (e, signal) => AgentSession.connect(e, signal),
  ) {
    this.pending = Array.from({ length: Math.max(1, count) }, () => {
      const abort = new AbortController();
      const p: Pending = { session: connect(ep, abort.signal), abort, settled: false };
      // Whoever takes it sees the failure; until then it must not count as unhandled.
      p.session.then(
        () => (p.settled = true),
        () => (p.settled = true),
      );
      return p;
    });
  }

  /** How many agents are still waiting to be taken. */
  get count(): number {
    return this.pending.length;
  }

  /** The first agent's start (what the `barman-ts agent` check reports), without taking it; null once taken. */
  first(): Promise<AgentSession> | null {
    return this.pending[0]?.session ?? null;
  }

  /**
   * Take the agents (once): the caller owns them from now on, the ones it does not need too.
   * `signal` kills them, started or still starting.
   */
  take(signal?: AbortSignal): Promise<AgentSession>[] {
    const taken = this.pending;
    this.pending = [];
    for (const p of taken) {
      if (signal?.aborted) p.abort.abort();
      else signal?.addEventListener('abort', () => p.abort.abort(), { once: true });
    }
    return taken.map((p) => p.session);
  }

  /** Let the agents nobody took go: those started leave on the end of their input, the others are stopped. */
  async discard(): Promise<void> {
    const rest = this.pending;
    this.pending = [];
    await Promise.all(
      rest.map(async (p) => {
        // Still connecting (a hung ssh must not hold the command): stopped.
        if (!p.settled) p.abort.abort();
        await p.session.then((s) => s.close(), () => undefined);
      }),
    );
  }
}
