import { describe, expect, it } from 'vitest';
import { estimateEta, formatDuration } from '../src/cli/progress.js';

describe('progress ETA', () => {
  it('uses the rate since the first update (a resumed run starts with done > 0)', () => {
    // 10 → 30 of 110 in 20 s: 1 per second, 80 left.
    expect(estimateEta({ done: 10, ms: 0 }, 30, 110, 20_000)).toBeCloseTo(80, 6);
    expect(estimateEta({ done: 0, ms: 0 }, 50, 100, 5_000)).toBeCloseTo(5, 6);
    expect(estimateEta({ done: 5, ms: 0 }, 5, 100, 5_000)).toBe(Infinity); // no progress yet
  });

  it('formats durations', () => {
    expect(formatDuration(42)).toBe('42s');
    expect(formatDuration(125)).toBe('2m05s');
    expect(formatDuration(3 * 3600 + 15 * 60)).toBe('3h15m');
    expect(formatDuration(Infinity)).toBe('?');
  });
});
