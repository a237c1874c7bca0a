/** Ada-KV (Feng et al. 2024): SnapKV scores, each layer's budget shared among its heads by their share of the top scores. */
import { definePress } from './descriptor.js';
import { ADA_OPTIONS, SNAPKV_OPTIONS, adaRule, scoredPress, snapkvScorer } from './scored.js';

export const adakv = definePress({
  name: 'adakv',
  label: 'AdaKV',
  description: 'SnapKV scores; each layer\'s budget goes to its heads by their share of the layer\'s top scores, with a floor',
  role: 'baseline',
  allocation: 'per-head',
  options: { ...SNAPKV_OPTIONS, ...ADA_OPTIONS },
  requires: [],
  sweep: true,
  build: (config, o) => scoredPress('adakv', snapkvScorer(o, config), adaRule(o), o, config),
});
