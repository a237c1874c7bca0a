/** What an allocator knows when a layer is compressed. */
export interface AllocationContext {
  /** Index of this layer among the budgeted (full-attention) layers: the row of per-player tables. */
  layer: number;
  /** The layer's index in the model (default `layer`: every layer budgeted). */
  modelLayer?: number;
  /** Budgeted layers of the model (sliding-window layers are not budgeted). */
  numLayers: number;
  numKvHeads: number;
  promptLength: number;
  window: number;
  /** Average prompt tokens per KV head, window included (protected boundary entries excluded). */
  budget: number;
  /**
   * The same before rounding, when the press has a kvpress-preset ratio: L·(1 − r) (kvpress's PyramidKV ramps this
   * real value); otherwise `budget`. Unset = `budget`.
   */
  keep?: number;
  /** Pooled scores of this layer's heads (length promptLength − window each); empty for static allocators. */
  scores: Float32Array[];
  /** Re-share budget a head cannot use (default true); false reproduces the reference code's integer rules. */
  redistribute: boolean;
}

/** Decides how many prompt tokens (beyond the window) each KV head of a layer keeps. */
export interface Allocator {
  readonly name: string;
  /** Whether `allocate` reads `ctx.scores` (static allocators skip scoring when every head keeps all or nothing). */
  readonly needsScores: boolean;
  /**
   * The counts do not come from a budget (the profiler's coalition mask: a head keeps all or only the window): the
   * press resolves no budget, protects no boundary entries, and compresses even a prompt shorter than a budget.
   */
  readonly budgetFree?: boolean;
  allocate(ctx: AllocationContext): number[];
}

/** Selected-token capacity of one head: everything before the window. */
export function headCap(ctx: AllocationContext): number {
  return Math.max(0, ctx.promptLength - ctx.window);
}

/**
 * Helper for allocators that decide all layers at once from static values (CoKV, HeadKV, random): computes the
 * [layer][kvHead] table once per prompt length and serves each layer's row.
 */
export class PerPromptTable {
  private key = '';
  private table: number[][] = [];
  get(ctx: AllocationContext, build: () => number[][]): number[] {
    const k = `${ctx.promptLength}/${ctx.budget}/${ctx.window}`;
    if (k !== this.key) {
      this.table = build();
      this.key = k;
    }
    return this.table[ctx.layer];
  }
}

/** Split a flat per-player array into [layer][kvHead] rows. */
export function toRows(flat: number[], numLayers: number, numKvHeads: number): number[][] {
  return Array.from({ length: numLayers }, (_, l) => flat.slice(l * numKvHeads, (l + 1) * numKvHeads));
}
