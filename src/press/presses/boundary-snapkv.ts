/**
 * SnapKV with boundary protection (arXiv 2605.18053): 10% of each head's budget is kept for the first tokens of the
 * prompt's segments (docs/presses.md, src/press/boundaries.ts).
 */
import { DEFAULT_PROTECT } from '../options.js';
import { definePress } from './descriptor.js';
import { SNAPKV_OPTIONS, scoredPress, snapkvScorer, uniformScored } from './scored.js';

const options = { ...SNAPKV_OPTIONS, protect: DEFAULT_PROTECT } as const;

export const boundarySnapkv = definePress({
  name: 'boundary-snapkv',
  label: 'Boundary-SnapKV',
  description: 'SnapKV that keeps 10% of each head\'s budget for the first tokens of the prompt\'s segments',
  role: 'baseline',
  allocation: 'uniform',
  options,
  requires: [],
  sweep: true,
  build: (config, o) => scoredPress('boundary-snapkv', snapkvScorer(o, config), uniformScored(), { ...o, protect: o.protect ?? options.protect }, config),
});
