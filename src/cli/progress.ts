/** A one-line progress display on a TTY (nothing at all otherwise). */
export function progressLine(label: string): { update: (done: number, total: number) => void; end: () => void } {
  const tty = process.stdout.isTTY === true;
  let last = 0;
  let shown = false;
  return {
    update(done, total) {
      if (!tty) return;
      const now = Date.now();
      if (now - last < 200 && done < total) return;
      last = now;
      const pct = total > 0 ? Math.min(100, (done / total) * 100) : 0;
      const width = 30;
      const filled = Math.round((pct / 100) * width);
      process.stdout.write(`\r${label} [${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${pct.toFixed(0).padStart(3)}% `);
      shown = true;
    },
    end() {
      if (tty && shown) process.stdout.write('\r\u001b[2K');
    },
  };
}
