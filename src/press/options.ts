import { CokvError } from '../errors.js';

/** Everything a press can be configured with (CLI flags map one to one). */
export interface PressOptions {
  /**
   * Average prompt tokens kept per budgeted KV head (the heads of full-attention layers; sliding layers keep their
   * window), including the window (and sink tokens).
   */
  budget?: number;
  /** Alternatively a fraction (0, 1] of the prompt length, per budgeted head on average. */
  ratio?: number;
  /** Observation window: the last `window` prompt tokens are always kept and their queries score the rest. */
  window?: number;
  /** Pooling of the scores along tokens. Default max (CoKV code). */
  pool?: 'max' | 'avg' | 'none';
  /** Pooling kernel (odd). Default 7. */
  kernel?: number;
  /** Aggregation over the query heads of a KV group. Default mean. */
  groupAggregation?: 'mean' | 'max';
  /** CoKV: number of lowest-valued heads that get only the window. Default 10 (scaled down for small models). */
  alpha?: number;
  /** CoKV head values file (the profiler's output). */
  profile?: string;
  /** HeadKV per-head scores file. */
  headScores?: string;
  /** HeadKV β (default 1.01). */
  headkvBeta?: number;
  /** PyramidKV β (default 20). */
  pyramidBeta?: number;
  /** Ada-KV floor α (default 0.2). */
  adaFloor?: number;
  /** StreamingLLM sink tokens (default 4). */
  sink?: number;
  /** Give budget a head cannot use (prompt too short) to the other heads. Default true; false = reference code. */
  redistribute?: boolean;
  /** Seed for the random allocator. */
  seed?: number;
}

export const DEFAULT_WINDOW = 8;

/** Check option ranges once; throws CokvError whose message starts with the option's name (`budget: …`). */
export function validatePressOptions(o: PressOptions): void {
  const w = o.window ?? DEFAULT_WINDOW;
  if (!(Number.isInteger(w) && w >= 1)) throw new CokvError(`window: ${w} must be a positive integer`, 'flag');
  if (o.budget !== undefined && o.ratio !== undefined) throw new CokvError('budget/ratio: give one, not both', 'flag');
  if (o.budget !== undefined) {
    if (!(Number.isInteger(o.budget) && o.budget > 0)) throw new CokvError(`budget: ${o.budget} must be a positive integer`, 'flag');
    if (o.budget <= w) throw new CokvError(`budget: ${o.budget} must be larger than the window (${w})`, 'flag');
  }
  if (o.ratio !== undefined && !(o.ratio > 0 && o.ratio <= 1)) throw new CokvError(`ratio: ${o.ratio} must be in (0, 1]`, 'flag');
  if (o.kernel !== undefined && !(Number.isInteger(o.kernel) && o.kernel >= 1 && o.kernel % 2 === 1)) {
    throw new CokvError(`kernel: ${o.kernel} must be a positive odd integer`, 'flag');
  }
  if (o.alpha !== undefined && !(Number.isInteger(o.alpha) && o.alpha >= 0)) throw new CokvError(`alpha: ${o.alpha} must be a non-negative integer`, 'flag');
  if (o.pool !== undefined && !['max', 'avg', 'none'].includes(o.pool)) throw new CokvError(`pool: '${o.pool}' must be max, avg or none`, 'flag');
  if (o.sink !== undefined && !(Number.isInteger(o.sink) && o.sink >= 0)) throw new CokvError(`sink: ${o.sink} must be a non-negative integer`, 'flag');
  if (o.headkvBeta !== undefined && !(o.headkvBeta > 1)) throw new CokvError(`headkvBeta: ${o.headkvBeta} must be > 1`, 'flag');
  if (o.pyramidBeta !== undefined && !(o.pyramidBeta >= 1)) throw new CokvError(`pyramidBeta: ${o.pyramidBeta} must be ≥ 1`, 'flag');
  if (o.adaFloor !== undefined && !(o.adaFloor >= 0 && o.adaFloor <= 1)) throw new CokvError(`adaFloor: ${o.adaFloor} must be in [0, 1]`, 'flag');
}

/** The average per-head budget (incl. window) for a prompt of `promptLength` tokens. */
export function resolveBudget(o: PressOptions, promptLength: number): number {
  const w = o.window ?? DEFAULT_WINDOW;
  if (o.budget !== undefined) return o.budget;
  if (o.ratio !== undefined) return Math.max(w + 1, Math.round(o.ratio * promptLength));
  throw new CokvError('budget/ratio: this press needs a budget or a ratio', 'flag');
}
