/** roundHalfEven: the ties-to-even rounding of torch.round / Python round, which the reference allocators use. */
import { describe, expect, it } from 'vitest';
import { roundHalfEven } from '../src/press/rounding.js';

describe('roundHalfEven', () => {
  it('sends ties to the even neighbour and everything else to the nearest integer', () => {
    expect([0.5, 1.5, 2.5, 3.5, 12.5, -0.5, -1.5, -2.5].map(roundHalfEven)).toEqual([0, 2, 2, 4, 12, 0, -2, -2]);
    expect([0.49, 0.51, 2.4999, 2.5001, 7, -3.2, -3.7].map(roundHalfEven)).toEqual([0, 1, 2, 3, 7, -3, -4]);
  });
});
