/**
 * HeadKV-R2 (spec §5): per query-head scores s_q (normalised to sum 1 over all layers × query heads),
 * base = B − w, pool = ⌊base/β⌋·(layers·heads), cap_q = s_q·pool + (base − ⌊base/β⌋), and a KV head's budget is
 * the mean of its query heads' cap_q (floored in the reference; apportioned exactly with `redistribute`).
 * Scores given per KV head are used as the group mean directly.
 */
import { apportion } from '../apportion.js';
import type { AllocationContext, Allocator } from './types.js';
import { PerPromptTable, headCap, toRows } from './types.js';

/** `scores` is [layer][head] with head = query heads (numHeads) or KV heads (numKvHeads). */
export function headkvAllocation(
  scores: number[][], numKvHeads: number, base: number, cap: number, beta: number, redistribute: boolean,
): number[][] {
  const numLayers = scores.length;
  const perLayer = scores[0].length;
  const group = perLayer / numKvHeads;
  let sum = 0;
  for (const row of scores) for (const v of row) sum += Math.max(0, v);
  const shared = Math.floor(base / beta);
  const pool = shared * numLayers * perLayer;
  const floorPart = base - shared;
  const groupCaps: number[] = [];
  for (const row of scores) {
    for (let g = 0; g < numKvHeads; g++) {
      let m = 0;
      for (let j = 0; j < group; j++) {
        const s = sum > 0 ? Math.max(0, row[g * group + j]) / sum : 1 / (numLayers * perLayer);
        m += s * pool + floorPart;
      }
      groupCaps.push(m / group);
    }
  }
  const n = numLayers * numKvHeads;
  const flat = redistribute
    ? apportion(groupCaps, base * n, new Array<number>(n).fill(cap))
    : groupCaps.map((c) => Math.min(cap, Math.floor(c)));
  return toRows(flat, numLayers, numKvHeads);
}

export function headkvAllocator(scores: number[][], beta = 1.01): Allocator {
  const table = new PerPromptTable();
  return {
    name: 'headkv',
    needsScores: false,
    allocate(ctx: AllocationContext): number[] {
      return table.get(ctx, () =>
        headkvAllocation(scores, ctx.numKvHeads, ctx.budget - ctx.window, headCap(ctx), beta, ctx.redistribute));
    },
  };
}
