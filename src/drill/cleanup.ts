/**
 * Drills whose process died (kill -9, a crash of this host): their `running` record names the
 * sandbox, its private directory and its postmaster, which are stopped and removed, and the
 * record is marked failed. Run by the next drill on the same host, or by cron, always under
 * the host's drill lock, so no such drill can still be running.
 */
import type { ServerConfig } from '../config/config.js';
import { localNowPyDateTime } from '../util/pytime.js';
import type { DrillHost } from './host.js';
import { isDrillProcessAlive, loadDrillRecords, saveDrillRecord, type DrillRecord } from './records.js';

/**
 * Stop postmaster $1 (immediate shutdown, then SIGKILL) only if it is the sandbox's: its
 * command line names `data_directory=$2`. A PID reused by another process is left alone.
 */
const STOP_SANDBOX_SCRIPT = `
pid=$1; dir=$2
ours() { [ -r "/proc/$pid/cmdline" ] && tr '\\000' '\\n' < "/proc/$pid/cmdline" | grep -qxF "data_directory=$dir"; }
ours || exit 0
kill -QUIT "$pid" 2>/dev/null
i=0; while ours && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
ours && kill -KILL "$pid" 2>/dev/null
exit 0
`;

/** `running` records of `hostLabel` whose drill process is gone. */
export function interruptedDrills(records: readonly DrillRecord[], hostLabel: string, alive: (r: DrillRecord) => boolean = isDrillProcessAlive): DrillRecord[] {
  return records.filter((r) => r.status === 'running' && r.host === hostLabel && !alive(r));
}

/** Stop and remove what interrupted drills of this host left, and record them as failed. */
export async function cleanupInterrupted(srv: ServerConfig, host: DrillHost, info: (m: string) => void): Promise<void> {
  for (const rec of interruptedDrills(await loadDrillRecords(srv), host.label)) {
    info(`Cleaning up drill ${rec.id}, interrupted (its process ${rec.pid} is gone)`);
    if (rec.postmaster_pid !== null) {
      await host.script(STOP_SANDBOX_SCRIPT, [String(rec.postmaster_pid), rec.directory], { timeoutMs: 120_000 }).catch(() => undefined);
    }
    await host.remove(rec.directory, rec.directory_created ? 'all' : 'contents').catch(() => undefined);
    if (rec.private_directory) await host.remove(rec.private_directory, 'all').catch(() => undefined);
    await saveDrillRecord(srv, {
      ...rec,
      status: 'failed',
      error: rec.error ?? `Drill interrupted: its process (PID ${rec.pid}) died`,
      ended_at: rec.ended_at ?? localNowPyDateTime().format(),
      ended_at_timestamp: rec.ended_at_timestamp ?? Date.now() / 1000,
    });
  }
}

