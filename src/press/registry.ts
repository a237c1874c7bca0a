/**
 * Press registry: name → press, from the descriptors in src/press/presses/ (one file per press, listed in order in
 * presses/index.ts; CONTRIBUTING.md has the checklist for adding one). A press is a scorer × an allocator
 * (press.ts). Every press budgets the KV heads of the model's full-attention layers only (sliding layers keep their
 * window). Every scored press honours `protect` (boundary protection); `boundary-snapkv` is SnapKV with protect 0.1.
 * `preset: 'kvpress'` switches the defaults and the Ada-KV / PyramidKV rules to kvpress's (allocators/kvpress.ts).
 */
import { CokvError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import type { Press } from './types.js';
import { ScoredPress } from './press.js';
import { DEFAULT_WINDOW, validatePressOptions, withPresetDefaults, type PressOptions } from './options.js';
import { maskAllocator } from './allocators/mask.js';
import { PRESS_FILE_OPTIONS, isFullPress, pressDescriptor } from './presses/index.js';

export { PRESS_NAMES, PRESS_DESCRIPTORS, SWEEP_PRESS_NAMES, isPressName, pressDescriptor, pressLabel, pressesReading, type PressName } from './presses/index.js';
export { FullPress, isFullPress, defaultAlpha } from './presses/index.js';

/**
 * Build a press by name (`full` gives a FullPress, which compresses nothing). Throws CokvError on an unknown name
 * or bad options; the message starts with the option's name (`press: …`, `budget: …`, `budget/ratio: …`,
 * `profile: …` for a missing file the press needs).
 *
 * ```ts
 * const press: Press = createPress('snapkv', { budget: 64 }, model.config);
 * ```
 */
export function createPress(name: string, options: PressOptions, config: ModelConfig): Press {
  const d = pressDescriptor(name);
  const o = withPresetDefaults(options, name);
  validatePressOptions(o);
  if (d.allocation !== 'none') {
    if (o.budget === undefined && o.ratio === undefined) {
      throw new CokvError(`budget/ratio: press '${name}' needs a budget or a ratio`, 'flag');
    }
    for (const key of d.requires) {
      if (!o[key]) throw new CokvError(`${key}: press ${name} needs ${PRESS_FILE_OPTIONS[key]}`, 'flag');
    }
  }
  return d.build(config, o);
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
