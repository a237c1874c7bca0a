/**
 * NVIDIA kvpress's own Ada-KV and PyramidKV rules (kvpress 0.5, `AdaKVPress` and `PyramidKVPress`), used by
 * `preset: 'kvpress'`. They differ from the CoKV / AdaKV reference rules of ada.ts and pyramid.ts (docs/presses.md):
 *
 * - Ada-KV: each head's top `n_safe = int(α · B)` scores are safe, where B = n_kept counts the window (which holds
 *   the top scores), so only max(0, n_safe − w) selected tokens are guaranteed; the rest of the layer's H · B slots
 *   go to the highest of all other scores, over every head of the layer. (kvpress masks the others instead of
 *   evicting them; the kept sets are the same.)
 * - PyramidKV: the whole per-head budget K = L · (1 − r) (window included, unrounded) ramps from 2K − K/β at the
 *   first layer down to K/β at the last (clipped at L − w, the other end moved to keep the sum), each layer's value
 *   rounded half to even (Python's round); when the ramp's low end is below the window (K/β < w) every layer gets
 *   round(K), plain SnapKV. A one-layer model gets round(K) (kvpress divides by layers − 1).
 *
 * Layers are the budgeted (full-attention) layers; kvpress counts every layer of the model, which is the same for
 * models without sliding-window layers.
 */
import type { AllocationContext, Allocator } from './types.js';
import { headCap } from './types.js';
import { roundHalfEven } from '../rounding.js';

/** kvpress `AdaKVPress` per-head counts (window excluded) for a layer whose heads keep B = ctx.budget on average. */
export function adaKvpressAllocator(alpha = 0.2): Allocator {
  return {
    name: 'ada-kvpress',
    needsScores: true,
    allocate(ctx: AllocationContext): number[] {
      const H = ctx.numKvHeads;
      const base = Math.max(0, ctx.budget - ctx.window);
      const safe = Math.min(base, Math.max(0, Math.trunc(ctx.budget * alpha) - ctx.window));
      const counts = new Array<number>(H).fill(0);
      const rest: { s: number; g: number; p: number }[] = [];
      ctx.scores.forEach((arr, g) => {
        const order = Array.from(arr, (s, p) => ({ s, g, p })).sort((a, b) => b.s - a.s || a.p - b.p);
        const k = Math.min(safe, order.length);
        counts[g] = k;
        for (let i = k; i < order.length; i++) rest.push(order[i]);
      });
      rest.sort((a, b) => b.s - a.s || a.g - b.g || a.p - b.p);
      const picks = Math.min(rest.length, H * base - counts.reduce((a, b) => a + b, 0));
      for (let i = 0; i < picks; i++) counts[rest[i].g]++;
      return counts;
    },
  };
}

/**
 * kvpress `PyramidKVPress.get_layer_budget`: the entries (window included) a head of budgeted layer `layer` of
 * `numLayers` keeps for a prompt of `promptLength` tokens, where `keep` = L · (1 − r), the unrounded average.
 * The arithmetic follows kvpress's float operations in order, so the rounding is kvpress's.
 */
export function pyramidKvpressLayerBudget(layer: number, numLayers: number, promptLength: number, window: number, keep: number, beta: number): number {
  const maxCapacity = window + keep;
  let minNum = (maxCapacity - window) / beta;
  let maxNum = (maxCapacity - window) * 2 - minNum;
  if (maxNum >= promptLength - window) {
    maxNum = promptLength - window;
    minNum = (maxCapacity - window) * 2 - maxNum;
  }
  if (!(promptLength >= maxNum && maxNum >= minNum && minNum >= window) || numLayers < 2) return roundHalfEven(keep);
  const steps = (maxNum - minNum) / (numLayers - 1);
  return roundHalfEven(maxNum - layer * steps);
}

/** kvpress's PyramidKV layer budgets, the budget spread within a layer by `inner` (uniform, or kvpress's Ada-KV). */
export function pyramidKvpressAllocator(inner: Allocator, beta = 20): Allocator {
  return {
    name: `pyramid-kvpress(${inner.name})`,
    needsScores: inner.needsScores,
    allocate(ctx: AllocationContext): number[] {
      const kept = pyramidKvpressLayerBudget(ctx.layer, ctx.numLayers, ctx.promptLength, ctx.window, ctx.keep ?? ctx.budget, beta);
      // Selected tokens per head: the layer budget less the window, within what the head holds.
      const budget = ctx.window + Math.min(headCap(ctx), Math.max(0, kept - ctx.window));
      return inner.allocate({ ...ctx, budget });
    },
  };
}
