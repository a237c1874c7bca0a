/** SnapKV (Li et al. 2024): the tokens the last `window` queries attend to most, the same count in every head. */
import { definePress } from './descriptor.js';
import { SNAPKV_OPTIONS, scoredPress, snapkvScorer, uniformScored } from './scored.js';

export const snapkv = definePress({
  name: 'snapkv',
  label: 'SnapKV',
  description: 'keeps the tokens the observation window attends to most (pooled), the same count in every head',
  role: 'baseline',
  allocation: 'uniform',
  options: SNAPKV_OPTIONS,
  requires: [],
  sweep: true,
  build: (config, o) => scoredPress('snapkv', snapkvScorer(o, config), uniformScored(), o, config),
});
