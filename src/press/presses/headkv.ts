/** HeadKV-R2 (Fu et al. 2025): per-head budgets from offline head scores (`cokv head-scores`), SnapKV selection. */
import { headkvAllocator } from '../allocators/headkv.js';
import { readHeadScores } from '../head-values.js';
import { definePress } from './descriptor.js';
import { SNAPKV_OPTIONS, scoredPress, snapkvScorer } from './scored.js';

const options = { ...SNAPKV_OPTIONS, headScores: null, headkvBeta: 1.01, redistribute: true } as const;

export const headkv = definePress({
  name: 'headkv',
  label: 'HeadKV',
  description: 'per-head budgets from a head scores file (HeadKV-R2: a floor plus a share by score), SnapKV selection',
  role: 'baseline',
  allocation: 'per-head',
  options,
  requires: ['headScores'],
  sweep: true,
  build: (config, o) => scoredPress('headkv', snapkvScorer(o, config),
    headkvAllocator(readHeadScores(o.headScores!, config), o.headkvBeta ?? options.headkvBeta), o, config),
});
