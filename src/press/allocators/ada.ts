/**
 * Ada-KV (spec §5): per layer, take the global top nkv·(B−w) of all heads' pooled scores; head g's share is
 * count_g (its picks) mixed with a floor: (1−α)·count_g + α·(B−w), α = 0.2. The reference rounds each head
 * independently (`torch.round(0.8·count + int(0.2·base))`, ties to even); with `redistribute` the shares are apportioned so the
 * layer total is exactly nkv·(B−w) and no head exceeds its prompt.
 */
import { apportion } from '../apportion.js';
import { roundHalfEven } from '../rounding.js';
import type { AllocationContext, Allocator } from './types.js';
import { headCap } from './types.js';

/** How many of the global top-k (ties → lower head, then lower position) fall in each head. */
export function topKCounts(scores: Float32Array[], k: number): number[] {
  const all: { s: number; g: number; p: number }[] = [];
  scores.forEach((arr, g) => arr.forEach((s, p) => all.push({ s, g, p })));
  all.sort((a, b) => b.s - a.s || a.g - b.g || a.p - b.p);
  const counts = new Array<number>(scores.length).fill(0);
  for (let i = 0; i < Math.min(k, all.length); i++) counts[all[i].g]++;
  return counts;
}

export function adaAllocator(floor = 0.2): Allocator {
  return {
    name: 'ada',
    needsScores: true,
    allocate(ctx: AllocationContext): number[] {
      const base = ctx.budget - ctx.window;
      const cap = headCap(ctx);
      const counts = topKCounts(ctx.scores, ctx.numKvHeads * base);
      if (!ctx.redistribute) {
        return counts.map((c) => Math.min(cap, roundHalfEven((1 - floor) * c + Math.floor(floor * base))));
      }
      const weights = counts.map((c) => (1 - floor) * c + floor * base);
      return apportion(weights, ctx.numKvHeads * base, new Array<number>(ctx.numKvHeads).fill(cap));
    },
  };
}
