/** A one-line progress bar on stderr (redrawn in place on a terminal, one line every 10 s otherwise), with an ETA. */

/** Seconds as `42s`, `3m05s` or `2h07m` (`?` when not finite). */
export function formatDuration(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(0)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.round((s % 3600) / 60)).padStart(2, '0')}m`;
}

/**
 * Time left at the rate observed since the first update: (total − done) / ((done − done₀) / elapsed). Measuring
 * from the first update, not from 0, keeps a resumed run (done₀ > 0) from looking faster than it is.
 */
export function estimateEta(first: { done: number; ms: number }, done: number, total: number, nowMs: number): number {
  const rate = (done - first.done) / Math.max(nowMs - first.ms, 1);
  return rate > 0 ? (total - done) / rate / 1000 : Infinity;
}

export class ProgressBar {
  private last = 0;
  private first: { done: number; ms: number } | undefined;
  private readonly t0 = Date.now();
  constructor(private readonly label: string, private readonly quiet = false) {}

  /** Redraw with `done` of `total`; the elapsed time and an ETA are appended (or `etaSeconds` when the caller knows better). */
  update(done: number, total: number, extra = '', etaSeconds?: number): void {
    if (this.quiet) return;
    const now = Date.now();
    this.first ??= { done, ms: now };
    const tty = process.stderr.isTTY;
    if (!tty && done < total && now - this.last < 10000) return;
    this.last = now;
    const width = 24;
    const filled = Math.round((width * Math.min(done, total)) / Math.max(total, 1));
    const eta = etaSeconds ?? estimateEta(this.first, done, total, now);
    const time = `${formatDuration((now - this.t0) / 1000)} elapsed${done < total ? `, ETA ${formatDuration(eta)}` : ''}`;
    const line = `${this.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} | ${time}${extra ? ' | ' + extra : ''}`;
    process.stderr.write(tty ? `\r${line}\x1b[K` : `${line}\n`);
  }

  finish(): void {
    if (!this.quiet && process.stderr.isTTY) process.stderr.write('\n');
  }
}
