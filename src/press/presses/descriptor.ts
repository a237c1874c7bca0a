/**
 * A press descriptor: everything the rest of cokv knows about one registry press, written once in the press's own
 * file (src/press/presses/<name>.ts) and listed in order in src/press/presses/index.ts. The registry
 * (`PRESS_NAMES`, `createPress`), the CLI (`--press` help, press option flags), the report's labels, the docs table
 * and the experiment lists are derived from these. CONTRIBUTING.md ("How to add a press") is the checklist.
 */
import type { ModelConfig } from '../../model/config.js';
import type { PressOptions } from '../options.js';
import type { Press } from '../types.js';

/** The options a press may read besides its size (`budget` / `ratio`, which every compressing press takes). */
export type PressOptionKey = Exclude<keyof PressOptions, 'budget' | 'ratio'>;

/** Options that name a value file (a press that lists one in `requires` is refused without it). */
export type PressFileOption = 'profile' | 'headScores';

/** What each file option must hold, as the refusal names it: `profile: press cokv needs a profile file (…)`. */
export const PRESS_FILE_OPTIONS: Readonly<Record<PressFileOption, string>> = {
  profile: 'a profile file (made by cokv profile)',
  headScores: 'a head scores file',
};

/**
 * A default: a value, a value computed from the model (CoKV's α scales with the number of heads), or null: no
 * default (the option is off when unset, or, for a file in `requires`, must be given).
 */
export type PressOptionDefault<K extends PressOptionKey> =
  | NonNullable<PressOptions[K]>
  | ((config: ModelConfig) => NonNullable<PressOptions[K]>)
  | null;

/** The options a press reads, each with its default. */
export type PressOptionDefaults = { readonly [K in PressOptionKey]?: PressOptionDefault<K> };

/**
 * What the press is in the experiments: `reference` (the uncompressed cache), `method` (CoKV, the method this
 * project reproduces), `baseline` (published presses it is compared with) or `control` (an ablation).
 */
export type PressRole = 'reference' | 'method' | 'baseline' | 'control';

/**
 * How the budget is shared out: `none` (keeps everything, takes no budget), `uniform` (every budgeted head the
 * same), `per-layer` (one count per layer) or `per-head` (each (layer, KV head) its own).
 */
export type PressAllocation = 'none' | 'uniform' | 'per-layer' | 'per-head';

export interface PressDescriptor<N extends string = string> {
  /** Registry name: `--press NAME`, `createPress(NAME, …)`, run folder names. Lower case, `-` between words. */
  readonly name: N;
  /** Display name: the report's legends and tables, docs/presses.md, the CLI's flag help. */
  readonly label: string;
  /** One line: what the press keeps and where its rule comes from. */
  readonly description: string;
  readonly role: PressRole;
  readonly allocation: PressAllocation;
  /** Every option `build` reads besides budget/ratio, with the default it uses when the option is unset. */
  readonly options: PressOptionDefaults;
  /** Value files the press cannot run without; `createPress` refuses it (one CokvError line) when one is missing. */
  readonly requires: readonly PressFileOption[];
  /**
   * In the default experiment sweep (`cokv experiment`'s press list, `SWEEP_PRESS_NAMES`). False for a press that
   * only composes rules the sweep already has.
   */
  readonly sweep: boolean;
  /**
   * Build the press. `options` are checked (`validatePressOptions`), have the preset's defaults filled in, hold a
   * budget or a ratio unless `allocation` is `none`, and name every file in `requires`.
   */
  build(config: ModelConfig, options: PressOptions): Press;
}

/** Define a descriptor, keeping its name's literal type (so `PressName` is the union of the registry's names). */
export function definePress<const N extends string>(d: PressDescriptor<N>): PressDescriptor<N> {
  return d;
}

/** The default `d` uses for option `key` on model `config` (undefined: `d` does not read it or it has none). */
export function optionDefault<K extends PressOptionKey>(d: PressDescriptor, key: K, config: ModelConfig): PressOptions[K] | undefined {
  const v = d.options[key] as PressOptionDefault<K> | undefined;
  if (v === null || v === undefined) return undefined;
  return typeof v === 'function' ? (v as (c: ModelConfig) => NonNullable<PressOptions[K]>)(config) : v;
}
