/**
 * Test-only fault points of the agent, read from BARMAN_TS_AGENT_FAULT on the agent's host
 * (integration tests set it in the remote command through ssh_command). Inert when the variable
 * is unset, which is always the case outside the tests. Comma-separated:
 *
 *   protocol=N            announce protocol version N (an agent of another barman-ts version)
 *   corrupt=SUBSTRING     alter one byte of the first page sent of every file whose path holds
 *                         SUBSTRING, after hashing it (a page damaged in transit)
 *   pause=SUBSTRING:FLAG  before reading a file whose path holds SUBSTRING, create FLAG.reached
 *                         and wait (at most 5 minutes) until FLAG exists (lets a test act at a
 *                         precise moment of the copy)
 */
import { existsSync, writeFileSync } from 'node:fs';

export interface Faults {
  protocol: number | null;
  corrupt: string | null;
  pause: { match: string; flag: string } | null;
}

export function parseFaults(text: string | undefined): Faults {
  const f: Faults = { protocol: null, corrupt: null, pause: null };
  for (const item of (text ?? '').split(',')) {
    const eq = item.indexOf('=');
    if (eq < 0) continue;
    const key = item.slice(0, eq);
    const value = item.slice(eq + 1);
    if (key === 'protocol' && /^\d+$/.test(value)) f.protocol = Number(value);
    else if (key === 'corrupt' && value) f.corrupt = value;
    else if (key === 'pause') {
      const colon = value.lastIndexOf(':');
      if (colon > 0) f.pause = { match: value.slice(0, colon), flag: value.slice(colon + 1) };
    }
  }
  return f;
}

/** The `pause` fault point for `file`. */
export async function pauseAt(faults: Faults, file: string): Promise<void> {
  const p = faults.pause;
  if (!p || !file.includes(p.match)) return;
  writeFileSync(`${p.flag}.reached`, `${process.pid}\n`);
  const deadline = Date.now() + 300_000;
  while (!existsSync(p.flag) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}
