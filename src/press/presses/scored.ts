/**
 * Parts the scored presses share: the SnapKV and StreamingLLM scorers with their option defaults, and the Ada-KV /
 * PyramidKV rules (CoKV reference or, with `preset: 'kvpress'`, kvpress's; allocators/kvpress.ts).
 */
import { fullAttentionLayers, type ModelConfig } from '../../model/config.js';
import type { LayerPrefillContext } from '../../model/forward.js';
import type { Allocator } from '../allocators/types.js';
import { uniformAllocator } from '../allocators/uniform.js';
import { adaAllocator } from '../allocators/ada.js';
import { pyramidAllocator } from '../allocators/pyramid.js';
import { adaKvpressAllocator, pyramidKvpressAllocator } from '../allocators/kvpress.js';
import { DEFAULT_WINDOW, type PressOptions } from '../options.js';
import { ScoredPress, type Scorer } from '../press.js';
import { snapkvScores, streamingScores } from '../scorers/snapkv.js';
import type { PressOptionDefaults } from './descriptor.js';

/** Options every scored press reads: the window, boundary protection (off unless set) and the preset. */
export const SCORED_OPTIONS = { window: DEFAULT_WINDOW, protect: null, preset: null } as const satisfies PressOptionDefaults;

/** SnapKV scoring's options and defaults (the CoKV reference's `pred.py`: max pooling, kernel 7, group mean). */
export const SNAPKV_OPTIONS = { ...SCORED_OPTIONS, pool: 'max', kernel: 7, groupAggregation: 'mean' } as const satisfies PressOptionDefaults;

/** Ada-KV's floor α and PyramidKV's β (the references' 0.2 and 20). */
export const ADA_OPTIONS = { adaFloor: 0.2, redistribute: true } as const satisfies PressOptionDefaults;
export const PYRAMID_OPTIONS = { pyramidBeta: 20, redistribute: true } as const satisfies PressOptionDefaults;

/**
 * SnapKV scores (src/press/scorers/snapkv.ts) with the press's settings. Its `key` names the settings, so presses
 * that score alike can share one layer's scores (`LayerPrefillContext.scoreMemo`).
 */
export function snapkvScorer(o: PressOptions, c: ModelConfig): Scorer {
  const settings = {
    pool: o.pool ?? SNAPKV_OPTIONS.pool, kernel: o.kernel ?? SNAPKV_OPTIONS.kernel,
    groupAggregation: o.groupAggregation ?? SNAPKV_OPTIONS.groupAggregation, numHeads: c.numHeads, scale: c.recipe.attentionScale,
  } as const;
  const scorer = (ctx: LayerPrefillContext, window: number) => snapkvScores(ctx, { window, ...settings });
  return Object.assign(scorer, { key: `snapkv|${JSON.stringify(settings)}` });
}

/** StreamingLLM's position scores: the first `sink` tokens and the most recent ones win. */
export function streamingScorer(sink: number): Scorer {
  return Object.assign((ctx: LayerPrefillContext, w: number) => streamingScores(ctx, w, sink), { key: `streaming|${sink}` });
}

/**
 * Every head the same count. Scores are asked for up front (`needsScores`), as the top-c selection needs them
 * whenever the prompt is longer than the budget.
 */
export function uniformScored(): Allocator {
  return { ...uniformAllocator(), needsScores: true };
}

/** Ada-KV's rule: the CoKV reference's, or kvpress's with the preset. */
export function adaRule(o: PressOptions): Allocator {
  const floor = o.adaFloor ?? ADA_OPTIONS.adaFloor;
  return o.preset === 'kvpress' ? adaKvpressAllocator(floor) : adaAllocator(floor);
}

/** PyramidKV's layer budgets around `inner`: the CoKV reference's rule, or kvpress's with the preset. */
export function pyramidRule(o: PressOptions, inner: Allocator): Allocator {
  const beta = o.pyramidBeta ?? PYRAMID_OPTIONS.pyramidBeta;
  return o.preset === 'kvpress' ? pyramidKvpressAllocator(inner, beta) : pyramidAllocator(inner, beta);
}

/** A ScoredPress over the model's full-attention layers (the layers a press budgets). */
export function scoredPress(name: string, scorer: Scorer, allocator: Allocator, o: PressOptions, c: ModelConfig): ScoredPress {
  return new ScoredPress(name, scorer, allocator, o, fullAttentionLayers(c));
}
