/** Random per-head shares (seeded): the ablation that tells whether *which* heads get budget matters. */
import { Rng } from '../../generate/rng.js';
import { apportion } from '../apportion.js';
import type { AllocationContext, Allocator } from './types.js';
import { PerPromptTable, headCap, toRows } from './types.js';

export function randomAllocator(seed = 0): Allocator {
  const table = new PerPromptTable();
  return {
    name: 'random',
    needsScores: false,
    allocate(ctx: AllocationContext): number[] {
      return table.get(ctx, () => {
        const n = ctx.numLayers * ctx.numKvHeads;
        const rng = new Rng(seed);
        const weights = Array.from({ length: n }, () => rng.next());
        const flat = apportion(weights, (ctx.budget - ctx.window) * n, new Array<number>(n).fill(headCap(ctx)));
        return toRows(flat, ctx.numLayers, ctx.numKvHeads);
      });
    },
  };
}
