/**
 * PyramidKV layer budgets (spec §5, β = 20): a linear ramp from `max` at layer 0 down to `min` at the last layer,
 * with min = ⌊base/β⌋ and max = 2·base − min (if max ≥ L − w: max = L − w, min = 2·base − max), base = B − w.
 * The reference uses integer steps, so its total differs from numLayers·base; with `redistribute` (default) the
 * real-valued ramp is apportioned so the total is exact. Within a layer the budget is spread by `inner`
 * (uniform → PyramidKV, Ada → Ada-PyramidKV).
 */
import { apportion } from '../apportion.js';
import type { AllocationContext, Allocator } from './types.js';
import { headCap } from './types.js';

export function pyramidLayerBudgets(numLayers: number, base: number, cap: number, beta: number, exact: boolean): number[] {
  let min = Math.floor(base / beta);
  let max = base * 2 - min;
  if (max >= cap) {
    max = cap;
    min = base * 2 - max;
  }
  if (numLayers === 1) return [Math.min(base, cap)];
  if (!exact) {
    const steps = Math.floor((max - min) / (numLayers - 1));
    return Array.from({ length: numLayers }, (_, l) => max - l * steps);
  }
  const ramp = Array.from({ length: numLayers }, (_, l) => max - (l * (max - min)) / (numLayers - 1));
  return apportion(ramp, numLayers * Math.min(base, cap), new Array<number>(numLayers).fill(cap));
}

export function pyramidAllocator(inner: Allocator, beta = 20): Allocator {
  return {
    name: `pyramid(${inner.name})`,
    needsScores: inner.needsScores,
    allocate(ctx: AllocationContext): number[] {
      const base = ctx.budget - ctx.window;
      const layers = pyramidLayerBudgets(ctx.numLayers, base, headCap(ctx), beta, ctx.redistribute);
      // The inner allocator sees this layer's budget as if it were the average budget.
      return inner.allocate({ ...ctx, budget: layers[ctx.layer] + ctx.window });
    },
  };
}
