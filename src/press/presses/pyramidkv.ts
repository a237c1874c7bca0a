/** PyramidKV (Cai et al. 2024): SnapKV selection with layer budgets ramping down from the first layer to the last. */
import { uniformAllocator } from '../allocators/uniform.js';
import { definePress } from './descriptor.js';
import { PYRAMID_OPTIONS, SNAPKV_OPTIONS, pyramidRule, scoredPress, snapkvScorer } from './scored.js';

export const pyramidkv = definePress({
  name: 'pyramidkv',
  label: 'PyramidKV',
  description: 'SnapKV selection with layer budgets that ramp down from the first layer to the last (β sets the slope)',
  role: 'baseline',
  allocation: 'per-layer',
  options: { ...SNAPKV_OPTIONS, ...PYRAMID_OPTIONS },
  requires: [],
  sweep: true,
  build: (config, o) => scoredPress('pyramidkv', snapkvScorer(o, config), { ...pyramidRule(o, uniformAllocator()), needsScores: true }, o, config),
});
