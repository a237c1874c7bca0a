/**
 * CoKV (paper Eq. 3, spec §3): from per-(layer, KV head) values v, subtract the α-th smallest value, clamp at 0,
 * and share (B − w)·n tokens in proportion. With `redistribute` (default): floor + largest remainders so the total
 * is exact, and budget a head cannot fill (short prompt) goes to the others in proportion. Without it: the
 * reference's `int(share × total)` truncation and `min(c, L − w)` at eviction (excess wasted). α = 0 subtracts
 * nothing (negative values still clamp to 0).
 */
import { apportion } from '../apportion.js';
import type { AllocationContext, Allocator } from './types.js';
import { PerPromptTable, headCap, toRows } from './types.js';

/** The clamped weights CoKV shares the budget by. */
export function cokvWeights(values: number[], alpha: number): number[] {
  if (alpha <= 0) return values.map((v) => Math.max(0, v));
  const sorted = [...values].sort((a, b) => a - b);
  const border = sorted[Math.min(alpha, sorted.length) - 1];
  return values.map((v) => Math.max(0, v - border));
}

/** Whole-model CoKV allocation, [layer][kvHead] selected tokens (window excluded). */
export function cokvAllocation(
  values: number[], alpha: number, numLayers: number, numKvHeads: number, base: number, cap: number, redistribute: boolean,
): number[][] {
  const n = numLayers * numKvHeads;
  const weights = cokvWeights(values, alpha);
  const total = base * n;
  let flat: number[];
  if (redistribute) {
    flat = apportion(weights, total, new Array<number>(n).fill(cap));
  } else {
    const sum = weights.reduce((a, b) => a + b, 0);
    flat = weights.map((x) => Math.min(cap, sum > 0 ? Math.trunc((x / sum) * total) : base));
  }
  return toRows(flat, numLayers, numKvHeads);
}

/** `values` are flat, row-major [layer][kvHead]. */
export function cokvAllocator(values: number[], alpha: number): Allocator {
  const table = new PerPromptTable();
  return {
    name: 'cokv',
    needsScores: false,
    allocate(ctx: AllocationContext): number[] {
      return table.get(ctx, () =>
        cokvAllocation(values, alpha, ctx.numLayers, ctx.numKvHeads, ctx.budget - ctx.window, headCap(ctx), ctx.redistribute));
    },
  };
}
