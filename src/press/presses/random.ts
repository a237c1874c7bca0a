/** Random per-head shares (seeded), SnapKV selection: the control that tells whether *which* heads get budget matters. */
import { randomAllocator } from '../allocators/random.js';
import { definePress } from './descriptor.js';
import { SNAPKV_OPTIONS, scoredPress, snapkvScorer } from './scored.js';

const options = { ...SNAPKV_OPTIONS, seed: 0 } as const;

export const random = definePress({
  name: 'random',
  label: 'Random',
  description: 'seeded random per-head budgets, SnapKV selection: the ablation of which heads get budget',
  role: 'control',
  allocation: 'per-head',
  options,
  requires: [],
  sweep: true,
  build: (config, o) => scoredPress('random', snapkvScorer(o, config), randomAllocator(o.seed ?? options.seed), o, config),
});
