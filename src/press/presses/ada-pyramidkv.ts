/** Ada-PyramidKV: PyramidKV's layer budgets, shared within each layer by Ada-KV's rule. */
import { definePress } from './descriptor.js';
import { ADA_OPTIONS, PYRAMID_OPTIONS, SNAPKV_OPTIONS, adaRule, pyramidRule, scoredPress, snapkvScorer } from './scored.js';

export const adaPyramidkv = definePress({
  name: 'ada-pyramidkv',
  label: 'Ada-PyramidKV',
  description: 'PyramidKV\'s layer budgets, shared among each layer\'s heads by Ada-KV\'s rule',
  role: 'baseline',
  allocation: 'per-head',
  options: { ...SNAPKV_OPTIONS, ...ADA_OPTIONS, ...PYRAMID_OPTIONS },
  requires: [],
  // Composes two rules the sweep already runs (pyramidkv, adakv).
  sweep: false,
  build: (config, o) => scoredPress('ada-pyramidkv', snapkvScorer(o, config), pyramidRule(o, adaRule(o)), o, config),
});
