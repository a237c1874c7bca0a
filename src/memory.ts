import fs from 'node:fs';

/**
 * This process's peak resident set size in bytes. On Linux it reads VmHWM from /proc/self/status: getrusage's
 * maxRSS survives exec, so a process spawned by a large parent would report the parent's peak instead of its own.
 * Elsewhere it falls back to `process.resourceUsage().maxRSS`.
 */
export function peakRssBytes(): number {
  if (process.platform === 'linux') {
    try {
      const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
      if (m) return Number(m[1]) * 1024;
    } catch {
      // no /proc: fall through
    }
  }
  return process.resourceUsage().maxRSS * 1024;
}
