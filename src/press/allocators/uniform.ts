import type { AllocationContext, Allocator } from './types.js';
import { headCap } from './types.js';

/** SnapKV / StreamingLLM: every head keeps B − w selected tokens. */
export function uniformAllocator(): Allocator {
  return {
    name: 'uniform',
    needsScores: false,
    allocate(ctx: AllocationContext): number[] {
      const c = Math.min(ctx.budget - ctx.window, headCap(ctx));
      return new Array<number>(ctx.numKvHeads).fill(c);
    },
  };
}
