import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { peakRssBytes } from '../src/memory.js';
import { repoRoot } from './helpers.js';

describe('peakRssBytes', () => {
  it('is this process\'s own peak, not inherited from a large parent (getrusage maxRSS survives exec)', () => {
    const big = Buffer.alloc(384 * 2 ** 20, 1); // touched: the parent's peak RSS is now > 384 MiB
    expect(peakRssBytes()).toBeGreaterThan(384 * 2 ** 20);
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e',
      "import { peakRssBytes } from './src/memory.ts'; console.log(JSON.stringify([peakRssBytes(), process.resourceUsage().maxRSS * 1024]))"],
    { cwd: repoRoot, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const [own, inherited] = JSON.parse(r.stdout) as [number, number];
    expect(own).toBeGreaterThan(10 * 2 ** 20);
    expect(own).toBeLessThan(256 * 2 ** 20);
    if (process.platform === 'linux') expect(inherited).toBeGreaterThan(384 * 2 ** 20); // the pitfall it avoids
    expect(big[big.length - 1]).toBe(1);
  });
});
