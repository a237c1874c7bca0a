/**
 * CoKV (the method cokv reproduces): per-head budgets in proportion to the heads' Sliced Shapley values (a profile
 * from `cokv profile`) less the α-th smallest, SnapKV selection within each head.
 */
import { fullAttentionLayers, type ModelConfig } from '../../model/config.js';
import { cokvAllocator } from '../allocators/cokv.js';
import { readProfileValues } from '../head-values.js';
import { definePress } from './descriptor.js';
import { SNAPKV_OPTIONS, scoredPress, snapkvScorer } from './scored.js';

/** CoKV's default α for `players` (layer, KV head) players: the paper's 10 of 256, scaled (at least 1). */
export function alphaForPlayers(players: number): number {
  return Math.max(1, Math.round((players * 10) / 256));
}

/** CoKV's default α: the paper's 10 of 256 players, scaled to the model's player count (full-attention KV heads; at least 1). */
export function defaultAlpha(c: ModelConfig): number {
  return alphaForPlayers(fullAttentionLayers(c).length * c.numKvHeads);
}

const options = { ...SNAPKV_OPTIONS, profile: null, alpha: defaultAlpha, redistribute: true } as const;

export const cokv = definePress({
  name: 'cokv',
  label: 'CoKV',
  description: 'per-head budgets by the heads\' Shapley values (a cokv profile) less the α-th smallest, SnapKV selection',
  role: 'method',
  allocation: 'per-head',
  options,
  requires: ['profile'],
  sweep: true,
  build: (config, o) => scoredPress('cokv', snapkvScorer(o, config),
    cokvAllocator(readProfileValues(o.profile!, config), o.alpha ?? defaultAlpha(config)), o, config),
});
