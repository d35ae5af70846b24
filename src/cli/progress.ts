/**
 * A one-line progress display for long work (backup, restore): bar, percentage, amount done of
 * the total, rate and ETA. It is drawn on stderr, because stdout must stay clean for pipes and
 * `-f json`, and only when the caller allows it (a terminal, console format, not quiet: see
 * `Output.progressAllowed`). Otherwise nothing at all is written.
 */
import { prettySize } from '../util/format.js';

export type ProgressUnit = 'bytes' | 'files';

export interface ProgressFigures {
  label: string;
  done: number;
  total: number;
  /** Since the work started. */
  elapsedMs: number;
  unit: ProgressUnit;
}

/** `1:02:03`, `4:05` (no hours part under an hour). */
export function formatEta(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

const amount = (n: number, unit: ProgressUnit): string => (unit === 'bytes' ? prettySize(n) : String(Math.round(n)));

/**
 * The text of the line (pure). Rate is the average since the start, which is steadier than an
 * instantaneous one for copies made of many small files and a few large ones; under half a
 * second of history there is no rate and no ETA yet (`--`).
 */
export function formatProgress(f: ProgressFigures, barWidth = 20): string {
  const total = Math.max(0, f.total);
  const done = Math.max(0, total > 0 ? Math.min(f.done, total) : f.done);
  const ratio = total > 0 ? done / total : 0;
  const filled = Math.round(ratio * barWidth);
  const bar = `[${'#'.repeat(filled)}${'.'.repeat(barWidth - filled)}]`;
  const pct = `${Math.floor(ratio * 100)}%`.padStart(4);
  const unitName = f.unit === 'files' ? ' files' : '';
  const of = `${amount(done, f.unit)}/${amount(total, f.unit)}${unitName}`;
  const secs = f.elapsedMs / 1000;
  const perSec = secs >= 0.5 && done > 0 ? done / secs : null;
  const rate = perSec === null ? '--' : f.unit === 'bytes' ? `${prettySize(perSec)}/s` : `${perSec.toFixed(1)} files/s`;
  let eta = '--:--';
  if (done >= total && total > 0) eta = formatEta(0);
  else if (perSec !== null && total > 0) eta = formatEta((total - done) / perSec);
  return `${f.label} ${bar} ${pct} ${of} ${rate} ETA ${eta}`;
}

export interface ProgressOptions {
  /** Draw at all (default: stderr is a terminal). Pass `out.progressAllowed` from commands. */
  enabled?: boolean;
  unit?: ProgressUnit;
  /** Multiplier from the caller's numbers to the unit (pg_basebackup reports kB: 1024). */
  scale?: number;
}

export interface ProgressLine {
  update(done: number, total: number): void;
  /** Erase the line (before any other message, and at the end). */
  end(): void;
}

/** Redraws at most five times a second, cut to the terminal width so that it never wraps. */
export function progressLine(label: string, opts: ProgressOptions = {}): ProgressLine {
  const enabled = opts.enabled ?? process.stderr.isTTY === true;
  const unit = opts.unit ?? 'bytes';
  const scale = opts.scale ?? 1;
  const start = Date.now();
  let last = 0;
  let shown = false;
  return {
    update(done, total) {
      if (!enabled) return;
      const now = Date.now();
      if (now - last < 200 && done < total) return;
      last = now;
      let text = formatProgress({ label, done: done * scale, total: total * scale, elapsedMs: now - start, unit });
      const cols = process.stderr.columns;
      if (cols && text.length >= cols) text = text.slice(0, cols - 1);
      process.stderr.write(`\r\u001b[2K${text}`);
      shown = true;
    },
    end() {
      if (enabled && shown) process.stderr.write('\r\u001b[2K');
      shown = false;
    },
  };
}

/**
 * Messages and progress of a long operation to the output, around a progress line: the line is
 * erased before each message (which then stays above the redrawn line).
 */
export function progressEvents(
  out: { info(m: string): void; warning(m: string): void },
  bar: ProgressLine,
): { info(m: string): void; warning(m: string): void; progress(done: number, total: number): void } {
  return {
    info: (m) => {
      bar.end();
      out.info(m);
    },
    warning: (m) => {
      bar.end();
      out.warning(m);
    },
    progress: (d, t) => bar.update(d, t),
  };
}
