/**
 * A press = scorer × allocator (like kvpress): after each layer's prefill, score the prompt keys of every KV head,
 * let the allocator decide each head's count c_h, and keep the top c_h tokens (ties → lower position) plus the
 * last `window` tokens. Nothing is evicted when the prompt is no longer than the budget.
 *
 * With `protect` (boundary protection, src/press/boundaries.ts) each head first keeps r = ⌊protect·B⌋ boundary
 * entries; the allocator then shares the budget B − r as usual and each head's top c_h are taken among the other
 * entries, so a head keeps c_h + r + window entries and the totals stay those of the plain press. The boundaries
 * come from the layer's prefill context (`ctx.boundaries`); without them the first r prompt tokens are protected.
 *
 * Only full-attention layers are compressed: a sliding-window layer already holds just its window (the forward
 * pass relies on its entries being consecutive positions), so it is left as it is, and allocators share the
 * budget among the KV heads of the full-attention layers alone.
 */
import type { LayerPrefillContext } from '../model/forward.js';
import type { Press } from './types.js';
import type { Allocator } from './allocators/types.js';
import { DEFAULT_WINDOW, resolveBudget, validatePressOptions, withPresetDefaults, type PressOptions } from './options.js';
import { protectedCount, protectedEntries } from './boundaries.js';

/**
 * Scores of a layer's entries per KV head. `key`, when set, names what the scorer computes (its kind and settings):
 * scorers with equal keys give equal scores for one layer, cache and window, so presses compressing copies of one
 * cache can share them through `LayerPrefillContext.scoreMemo` (the eval runner's sweeps over presses and budgets).
 * Scores are never modified after they are made.
 */
export type Scorer = ((ctx: LayerPrefillContext, window: number) => Float32Array[]) & { readonly key?: string };

/** `scorer(ctx, window)`, or its result for the same key, layer and window from `ctx.scoreMemo`. */
function scoreLayer(scorer: Scorer, ctx: LayerPrefillContext, window: number): Float32Array[] {
  const memo = ctx.scoreMemo;
  if (!memo || scorer.key === undefined) return scorer(ctx, window);
  const key = `${scorer.key}|w${window}|l${ctx.layer}`;
  let scores = memo.get(key);
  if (!scores) {
    scores = scorer(ctx, window);
    memo.set(key, scores);
  }
  return scores;
}

/**
 * Indices of the `c` highest scores (ties → lower index), returned in ascending order; indices in `exclude` are
 * never taken (c must not exceed the others' count).
 */
export function topIndices(scores: Float32Array, c: number, exclude?: ReadonlySet<number>): number[] {
  const n = scores.length;
  if (exclude && exclude.size > 0) {
    const masked = Float32Array.from(scores);
    for (const i of exclude) masked[i] = -Infinity;
    return topIndices(masked, Math.min(c, n - exclude.size));
  }
  if (c >= n) return Array.from({ length: n }, (_, i) => i);
  if (c <= 0) return [];
  // One reused index buffer (a press over a long prompt would otherwise leave one n-entry array per head behind).
  if (indexScratch.length < n) indexScratch = new Uint32Array(n);
  const idx = indexScratch.subarray(0, n);
  for (let i = 0; i < n; i++) idx[i] = i;
  idx.sort((a, b) => scores[b] - scores[a] || a - b);
  return Array.from(idx.subarray(0, c)).sort((a, b) => a - b);
}

let indexScratch = new Uint32Array(0);

export class ScoredPress implements Press {
  readonly window: number;
  /**
   * Per-head selected counts of the last compression, [layer][kvHead] (window excluded, protected boundary entries
   * included; sliding layers: no row).
   */
  lastAllocation: number[][] = [];
  /** The options the press runs with (a preset's defaults filled in). */
  readonly options: PressOptions;

  /**
   * `layers`: the model's full-attention layers (from its config); without it, the cache's own layer kinds say
   * which layers are budgeted.
   */
  constructor(
    readonly name: string,
    private readonly scorer: Scorer | undefined,
    private readonly allocator: Allocator,
    options: PressOptions,
    private readonly layers?: readonly number[],
  ) {
    this.options = withPresetDefaults(options, name);
    validatePressOptions(this.options);
    this.window = this.options.window ?? DEFAULT_WINDOW;
  }

  /**
   * Heads of one layer may hold different counts (a cache compressed before, e.g. by the bounded `prefillEvict`
   * mode after each chunk, or a chat history): each head keeps the top of its own entries plus its own last
   * `window` ones, and the allocation is made for a prompt of P = max(longest head, tokens seen) tokens — so a
   * budget stays a target per head (a head never keeps more than its allocation plus the window) and a ratio is a
   * fraction of everything seen, not of what is still held. On a cache whose heads are all whole (one prefill), P is
   * the prompt length, as before.
   */
  compressLayer(ctx: LayerPrefillContext, reserve: number): void {
    const { cache, layer } = ctx;
    if (!cache.isBudgeted(layer)) return;
    const budgeted = this.layers ?? cache.budgetedLayers();
    const row = budgeted.indexOf(layer);
    if (row < 0) return;
    let longest = 0;
    for (let g = 0; g < cache.numKvHeads; g++) longest = Math.max(longest, cache.head(layer, g).length);
    const P = Math.max(longest, ctx.startPosition + ctx.numTokens);
    const w = this.window;
    // A budget-free allocator (the profiler's coalition mask) decides every head's count itself: no budget to
    // resolve, nothing to protect, and a short prompt is no reason to skip it.
    const budgetFree = this.allocator.budgetFree === true;
    const budget = budgetFree ? P : resolveBudget(this.options, P);
    if (!budgetFree && longest <= budget) return;
    if (longest <= w) return;
    if (ctx.numTokens < w) throw new Error(`press ${this.name}: the prefill chunk (${ctx.numTokens} tokens) is shorter than the window (${w})`);
    const reserved = budgetFree ? 0 : protectedCount(this.options.protect ?? 0, budget, w);
    // kvpress's PyramidKV ramps the unrounded L·(1 − r); a budget stands for itself.
    const o = this.options;
    const keep = (o.preset === 'kvpress' && o.budget === undefined && o.ratio !== undefined ? P * (1 - o.ratio) : budget) - reserved;
    const needScores = this.allocator.needsScores;
    let scores = needScores && this.scorer ? scoreLayer(this.scorer, ctx, w) : undefined;
    const counts = this.allocator.allocate({
      layer: row, modelLayer: layer, numLayers: budgeted.length, numKvHeads: cache.numKvHeads, promptLength: P, window: w,
      budget: budget - reserved, keep, scores: scores ?? [], redistribute: this.options.redistribute ?? true,
    });
    if (row === 0) this.lastAllocation = [];
    this.lastAllocation[layer] = counts.map((c) => c + reserved);
    for (let g = 0; g < cache.numKvHeads; g++) {
      const head = cache.head(layer, g);
      const L = head.length;
      if (L <= w) continue;
      const c = Math.min(counts[g] + reserved, L - w);
      let chosen: number[];
      if (c >= L - w) {
        chosen = Array.from({ length: L - w }, (_, i) => i);
      } else if (c === 0) {
        chosen = [];
      } else {
        if (!scores) {
          if (!this.scorer) throw new Error(`press ${this.name}: allocator ${this.allocator.name} needs a scorer`);
          scores = scoreLayer(this.scorer, ctx, w);
        }
        if (reserved > 0) {
          const kept = protectedEntries(head.positions, L - w, ctx.boundaries, Math.min(reserved, c));
          chosen = [...kept, ...topIndices(scores[g], c - kept.length, new Set(kept))].sort((a, b) => a - b);
        } else {
          chosen = topIndices(scores[g], c);
        }
      }
      for (let j = L - w; j < L; j++) chosen.push(j);
      if (chosen.length < L) head.keep(chosen, reserve);
    }
  }
}
