/**
 * Press registry: name → scorer × allocator. Adding a method = one allocator or scorer file plus one line here.
 * Every press budgets the KV heads of the model's full-attention layers only (sliding layers keep their window).
 * Every scored press honours `protect` (boundary protection); `boundary-snapkv` is SnapKV with protect 0.1.
 * `preset: 'kvpress'` switches the defaults and the Ada-KV / PyramidKV rules to kvpress's (allocators/kvpress.ts).
 */
import { CokvError } from '../errors.js';
import { fullAttentionLayers, type ModelConfig } from '../model/config.js';
import type { Press } from './types.js';
import { ScoredPress, type Scorer } from './press.js';
import type { Allocator } from './allocators/types.js';
import { DEFAULT_PROTECT, DEFAULT_WINDOW, validatePressOptions, withPresetDefaults, type PressOptions } from './options.js';
import { snapkvScores, streamingScores } from './scorers/snapkv.js';
import { uniformAllocator } from './allocators/uniform.js';
import { pyramidAllocator } from './allocators/pyramid.js';
import { adaAllocator } from './allocators/ada.js';
import { cokvAllocator } from './allocators/cokv.js';
import { headkvAllocator } from './allocators/headkv.js';
import { randomAllocator } from './allocators/random.js';
import { maskAllocator } from './allocators/mask.js';
import { adaKvpressAllocator, pyramidKvpressAllocator } from './allocators/kvpress.js';
import { readHeadScores, readProfileValues } from './head-values.js';

export const PRESS_NAMES = [
  'full', 'streaming', 'snapkv', 'boundary-snapkv', 'pyramidkv', 'adakv', 'ada-pyramidkv', 'headkv', 'cokv', 'random',
] as const;
export type PressName = (typeof PRESS_NAMES)[number];

/** CoKV's default α: the paper's 10 of 256 players, scaled to the model's player count (full-attention KV heads; at least 1). */
export function defaultAlpha(c: ModelConfig): number {
  return Math.max(1, Math.round((fullAttentionLayers(c).length * c.numKvHeads * 10) / 256));
}

function snapkvScorer(o: PressOptions, c: ModelConfig): Scorer {
  return (ctx, window) => snapkvScores(ctx, {
    window, pool: o.pool ?? 'max', kernel: o.kernel ?? 7, groupAggregation: o.groupAggregation ?? 'mean', numHeads: c.numHeads,
    scale: c.recipe.attentionScale,
  });
}

/**
 * The `full` press: keeps every entry (the uncompressed cache). `CokvModel` treats it as no press at all; code
 * that calls `compressLayer` itself gets a no-op.
 */
export class FullPress implements Press {
  readonly name = 'full';

  compressLayer(): void {
    // Keeps everything.
  }
}

/** True for the press `createPress('full', …)` returns (no compression). */
export function isFullPress(p: Press | undefined): p is FullPress {
  return p instanceof FullPress;
}

/**
 * Build a press by name (`full` gives a FullPress, which compresses nothing). Throws CokvError on an unknown name
 * or bad options; the message starts with the option's name (`press: …`, `budget: …`, `budget/ratio: …`).
 *
 * ```ts
 * const press: Press = createPress('snapkv', { budget: 64 }, model.config);
 * ```
 */
export function createPress(name: string, options: PressOptions, config: ModelConfig): Press {
  if (!(PRESS_NAMES as readonly string[]).includes(name)) {
    throw new CokvError(`press: unknown press '${name}' (known: ${PRESS_NAMES.join(', ')})`, 'flag');
  }
  if (name === 'boundary-snapkv') options = { ...options, protect: options.protect ?? DEFAULT_PROTECT };
  options = withPresetDefaults(options, name);
  validatePressOptions(options);
  if (name === 'full') return new FullPress();
  if (options.budget === undefined && options.ratio === undefined) {
    throw new CokvError(`budget/ratio: press '${name}' needs a budget or a ratio`, 'flag');
  }
  const snap = snapkvScorer(options, config);
  const layers = fullAttentionLayers(config);
  const kvpress = options.preset === 'kvpress';
  const ada = () => (kvpress ? adaKvpressAllocator(options.adaFloor ?? 0.2) : adaAllocator(options.adaFloor ?? 0.2));
  const pyramid = (inner: Allocator) => (kvpress ? pyramidKvpressAllocator(inner, options.pyramidBeta ?? 20) : pyramidAllocator(inner, options.pyramidBeta ?? 20));
  switch (name as PressName) {
    case 'streaming': {
      const sink = options.sink ?? 4;
      return new ScoredPress(name, (ctx, w) => streamingScores(ctx, w, sink), { ...uniformAllocator(), needsScores: true }, options, layers);
    }
    case 'snapkv':
    case 'boundary-snapkv':
      return new ScoredPress(name, snap, { ...uniformAllocator(), needsScores: true }, options, layers);
    case 'pyramidkv':
      return new ScoredPress(name, snap, { ...pyramid(uniformAllocator()), needsScores: true }, options, layers);
    case 'adakv':
      return new ScoredPress(name, snap, ada(), options, layers);
    case 'ada-pyramidkv':
      return new ScoredPress(name, snap, pyramid(ada()), options, layers);
    case 'headkv': {
      if (!options.headScores) throw new CokvError('headScores: press headkv needs a head scores file', 'flag');
      return new ScoredPress(name, snap, headkvAllocator(readHeadScores(options.headScores, config), options.headkvBeta ?? 1.01), options, layers);
    }
    case 'cokv': {
      if (!options.profile) throw new CokvError('profile: press cokv needs a profile file (made by cokv profile)', 'flag');
      const values = readProfileValues(options.profile, config);
      return new ScoredPress(name, snap, cokvAllocator(values, options.alpha ?? defaultAlpha(config)), options, layers);
    }
    case 'random':
      return new ScoredPress(name, snap, randomAllocator(options.seed ?? 0), options, layers);
    default:
      throw new CokvError(`press: unknown press '${name}'`, 'flag');
  }
}

/**
 * `createPress`, except that `full` gives undefined: the form the engine's `press` options take (no press = the
 * full cache).
 */
export function resolvePress(name: string, options: PressOptions, config: ModelConfig): Press | undefined {
  const p = createPress(name, options, config);
  return isFullPress(p) ? undefined : p;
}

/**
 * The profiler's coalition press: `full[layer][kvHead]` keep the whole prompt, the rest only the window (indexed by
 * the model's layer; sliding layers are never masked). `layers`: the full-attention layers (default: the cache's).
 */
export function maskPress(full: boolean[][], window = DEFAULT_WINDOW, layers?: readonly number[]): ScoredPress {
  return new ScoredPress('mask', undefined, maskAllocator(full), { window }, layers);
}
