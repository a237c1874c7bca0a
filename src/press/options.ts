import { CokvError } from '../errors.js';

/**
 * Everything a press can be configured with. Which press reads which option, and with what default, is in the
 * press's descriptor (src/press/presses/); the CLI's flags for them are in src/cli/press-flags.ts.
 */
export interface PressOptions {
  /**
   * Average prompt tokens kept per budgeted KV head (the heads of full-attention layers; sliding layers keep their
   * window), including the window (and sink tokens).
   */
  budget?: number;
  /**
   * Alternatively a fraction (0, 1] of the prompt length kept per budgeted head on average (rounded to the nearest
   * token, at least window + 1). With `preset: 'kvpress'` it is kvpress's `compression_ratio` instead: the fraction
   * [0, 1) REMOVED, and a head keeps `int(L · (1 − ratio))` tokens (truncated, as kvpress does; at least window + 1).
   */
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
  /**
   * Boundary protection: this fraction [0, 1) of each head's budget is kept for the first tokens of the prompt's
   * segments (the boundaries a prefill is given; without any, the first tokens of the prompt), whatever their scores
   * (see src/press/boundaries.ts). 0 or unset: off. The `boundary-snapkv` press defaults it to 0.1.
   */
  protect?: number;
  /**
   * `kvpress`: NVIDIA kvpress's conventions — avg pooling, kernel 5, window 64 (StreamingLLM: window 1, kvpress's
   * StreamingLLMPress has none), kvpress's Ada-KV and PyramidKV rules, and `ratio` = kvpress's compression_ratio.
   * Options given explicitly override the preset's values. Unset: the CoKV reference's conventions.
   */
  preset?: PressPreset;
}

export const PRESS_PRESETS = ['kvpress'] as const;
export type PressPreset = (typeof PRESS_PRESETS)[number];

/** The boundary-snapkv press's protected share (arXiv 2605.18053 reserves 10%). */
export const DEFAULT_PROTECT = 0.1;

/**
 * `o` with the preset's defaults filled in for the options it leaves unset (window, pool, kernel): what the press
 * named `press` runs with. Without a preset, `o` itself.
 */
export function withPresetDefaults(o: PressOptions, press?: string): PressOptions {
  if (o.preset !== 'kvpress') return o;
  return { ...o, window: o.window ?? (press === 'streaming' ? 1 : 64), pool: o.pool ?? 'avg', kernel: o.kernel ?? 5 };
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
  if (o.preset !== undefined && !(PRESS_PRESETS as readonly string[]).includes(o.preset)) {
    throw new CokvError(`preset: '${String(o.preset)}' must be ${PRESS_PRESETS.join(' or ')}`, 'flag');
  }
  if (o.preset === 'kvpress') {
    if (o.ratio !== undefined && !(o.ratio >= 0 && o.ratio < 1)) throw new CokvError(`ratio: ${o.ratio} must be in [0, 1) (with preset kvpress it is the fraction removed)`, 'flag');
  } else if (o.ratio !== undefined && !(o.ratio > 0 && o.ratio <= 1)) {
    throw new CokvError(`ratio: ${o.ratio} must be in (0, 1]`, 'flag');
  }
  if (o.protect !== undefined && !(typeof o.protect === 'number' && o.protect >= 0 && o.protect < 1)) {
    throw new CokvError(`protect: ${o.protect} must be a fraction in [0, 1)`, 'flag');
  }
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

/**
 * The average per-head budget (incl. window) for a prompt of `promptLength` tokens. A kvpress-preset ratio r keeps
 * `int(L · (1 − r))` (kvpress's truncation: the float product can land just below an integer, e.g. 1020 · (1 − 0.9)
 * gives 101, as kvpress keeps); without the preset a ratio keeps `round(r · L)`.
 */
export function resolveBudget(o: PressOptions, promptLength: number): number {
  const w = o.window ?? DEFAULT_WINDOW;
  if (o.budget !== undefined) return o.budget;
  if (o.ratio !== undefined && o.preset === 'kvpress') return Math.max(w + 1, Math.trunc(promptLength * (1 - o.ratio)));
  if (o.ratio !== undefined) return Math.max(w + 1, Math.round(o.ratio * promptLength));
  throw new CokvError('budget/ratio: this press needs a budget or a ratio', 'flag');
}
