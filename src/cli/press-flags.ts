/** The press flags every command shares (`--press NAME --budget N | --ratio R --window W …`). */
import type { Command } from 'commander';
import { CokvError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import { DEFAULT_PROTECT, PRESS_PRESETS, type PressOptions, type PressPreset } from '../press/options.js';
import { PRESS_NAMES, resolvePress } from '../press/registry.js';
import type { Press } from '../press/types.js';
import { numberFlag } from './util.js';

export interface PressFlags {
  press?: string;
  budget?: string;
  ratio?: string;
  window?: string;
  pool?: string;
  kernel?: string;
  alpha?: string;
  profile?: string;
  headScores?: string;
  sink?: string;
  redistribute?: boolean;
  /** `--protect` alone is `true` (the default share); with a value, that fraction. */
  protect?: string | boolean;
  preset?: string;
}

/** Tuning flags whose defaults `--preset` replaces unless they are given. */
const PRESET_FLAGS = ['window', 'pool', 'kernel'] as const;

/** `--press`, `--budget`, `--ratio` plus the tuning flags. */
export function addPressFlags(cmd: Command): Command {
  cmd
    .option('--press <name>', `KV-cache press: ${PRESS_NAMES.join(', ')}`, 'full')
    .option('--budget <n>', 'average prompt tokens kept per KV head of the full-attention layers, window included (sliding layers keep their window)')
    .option('--ratio <r>', 'or keep this fraction (0, 1] of the prompt per full-attention KV head on average (with --preset kvpress: the fraction [0, 1) removed, kvpress\'s compression_ratio)');
  return addPressTuningFlags(cmd);
}

/** The flags that tune presses (shared by commands that sweep presses and budgets themselves). */
export function addPressTuningFlags(cmd: Command): Command {
  // With --preset, the defaults of the flags it sets are dropped (so the preset's apply); given flags stay.
  cmd.hook('preAction', (_hooked, action) => {
    if (action.opts().preset === undefined) return;
    for (const k of PRESET_FLAGS) if (action.getOptionValueSource(k) === 'default') action.setOptionValueWithSource(k, undefined, 'default');
  });
  return cmd
    .option('--window <w>', 'observation window, always kept (--preset kvpress: 64; streaming 1)', '8')
    .option('--pool <kind>', 'score pooling: max, avg or none (--preset kvpress: avg)', 'max')
    .option('--kernel <k>', 'pooling kernel size (odd) (--preset kvpress: 5)', '7')
    .option('--alpha <a>', 'CoKV: number of lowest-valued heads that keep only the window')
    .option('--profile <file>', 'CoKV head-value profile (from cokv profile)')
    .option('--head-scores <file>', 'HeadKV per-head scores')
    .option('--sink <n>', 'StreamingLLM sink tokens', '4')
    .option('--no-redistribute', 'reproduce the reference code: do not re-share budget a head cannot use')
    .option('--protect [fraction]', `boundary protection: keep this fraction [0, 1) of each head's budget for the first tokens of the prompt's segments (alone: ${DEFAULT_PROTECT}; boundary-snapkv: ${DEFAULT_PROTECT})`)
    .option('--preset <name>', `kvpress: NVIDIA kvpress's conventions (avg pool, kernel 5, window 64, its Ada-KV and PyramidKV rules, --ratio = fraction removed); given flags override it`);
}

export function pressOptionsFromFlags(f: PressFlags): PressOptions {
  const pool = f.pool as PressOptions['pool'];
  if (pool !== undefined && !['max', 'avg', 'none'].includes(pool)) throw new CokvError(`--pool: '${f.pool}' must be max, avg or none`, 'flag');
  if (f.preset !== undefined && !(PRESS_PRESETS as readonly string[]).includes(f.preset)) {
    throw new CokvError(`--preset: '${f.preset}' must be ${PRESS_PRESETS.join(' or ')}`, 'flag');
  }
  const protect = f.protect === true ? DEFAULT_PROTECT : numberFlag('--protect', f.protect === false ? undefined : f.protect, { min: 0 });
  if (protect !== undefined && !(protect < 1)) throw new CokvError(`--protect: ${protect} must be a fraction in [0, 1)`, 'flag');
  return {
    budget: numberFlag('--budget', f.budget, { integer: true, min: 1 }),
    ratio: numberFlag('--ratio', f.ratio),
    window: numberFlag('--window', f.window, { integer: true, min: 1 }),
    pool,
    kernel: numberFlag('--kernel', f.kernel, { integer: true, min: 1 }),
    alpha: numberFlag('--alpha', f.alpha, { integer: true, min: 0 }),
    profile: f.profile,
    headScores: f.headScores,
    sink: numberFlag('--sink', f.sink, { integer: true, min: 0 }),
    redistribute: f.redistribute ?? true,
    ...(protect !== undefined ? { protect } : {}),
    ...(f.preset !== undefined ? { preset: f.preset as PressPreset } : {}),
  };
}

export function pressFromFlags(f: PressFlags, config: ModelConfig): Press | undefined {
  return resolvePress(f.press ?? 'full', pressOptionsFromFlags(f), config);
}
