/**
 * The profiler's coalition mask: a head in the coalition keeps its whole prompt, every other head keeps only the
 * window. Budget-free, so it ignores `ctx.budget`.
 */
import type { AllocationContext, Allocator } from './types.js';
import { headCap } from './types.js';

/** `full[layer][kvHead]` = true for coalition members, indexed by the model's layer (sliding rows are unused). */
export function maskAllocator(full: boolean[][]): Allocator {
  return {
    name: 'mask',
    needsScores: false,
    budgetFree: true,
    allocate(ctx: AllocationContext): number[] {
      return full[ctx.modelLayer ?? ctx.layer].map((f) => (f ? headCap(ctx) : 0));
    },
  };
}
