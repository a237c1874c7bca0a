/** A one-line progress bar on stderr (redrawn in place on a terminal, one line per update otherwise). */
export function formatDuration(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(0)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.round((s % 3600) / 60)).padStart(2, '0')}m`;
}

export class ProgressBar {
  private last = 0;
  constructor(private readonly label: string, private readonly quiet = false) {}

  update(done: number, total: number, extra = ''): void {
    if (this.quiet) return;
    const now = Date.now();
    const tty = process.stderr.isTTY;
    if (!tty && done < total && now - this.last < 2000) return;
    this.last = now;
    const width = 24;
    const filled = Math.round((width * Math.min(done, total)) / Math.max(total, 1));
    const line = `${this.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total}${extra ? ' | ' + extra : ''}`;
    process.stderr.write(tty ? `\r${line}\x1b[K` : `${line}\n`);
  }

  finish(): void {
    if (!this.quiet && process.stderr.isTTY) process.stderr.write('\n');
  }
}
