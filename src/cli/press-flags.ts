/** The press flags every command shares (`--press NAME --budget N | --ratio R --window W …`). */
import type { Command } from 'commander';
import { CokvError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import type { PressOptions } from '../press/options.js';
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
}

/** `--press`, `--budget`, `--ratio` plus the tuning flags. */
export function addPressFlags(cmd: Command): Command {
  cmd
    .option('--press <name>', `KV-cache press: ${PRESS_NAMES.join(', ')}`, 'full')
    .option('--budget <n>', 'average prompt tokens kept per KV head of the full-attention layers, window included (sliding layers keep their window)')
    .option('--ratio <r>', 'or keep this fraction (0, 1] of the prompt per full-attention KV head on average');
  return addPressTuningFlags(cmd);
}

/** The flags that tune presses (shared by commands that sweep presses and budgets themselves). */
export function addPressTuningFlags(cmd: Command): Command {
  return cmd
    .option('--window <w>', 'observation window, always kept', '8')
    .option('--pool <kind>', 'score pooling: max, avg or none', 'max')
    .option('--kernel <k>', 'pooling kernel size (odd)', '7')
    .option('--alpha <a>', 'CoKV: number of lowest-valued heads that keep only the window')
    .option('--profile <file>', 'CoKV head-value profile (from cokv profile)')
    .option('--head-scores <file>', 'HeadKV per-head scores')
    .option('--sink <n>', 'StreamingLLM sink tokens', '4')
    .option('--no-redistribute', 'reproduce the reference code: do not re-share budget a head cannot use');
}

export function pressOptionsFromFlags(f: PressFlags): PressOptions {
  const pool = f.pool as PressOptions['pool'];
  if (pool !== undefined && !['max', 'avg', 'none'].includes(pool)) throw new CokvError(`--pool: '${f.pool}' must be max, avg or none`, 'flag');
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
  };
}

export function pressFromFlags(f: PressFlags, config: ModelConfig): Press | undefined {
  return resolvePress(f.press ?? 'full', pressOptionsFromFlags(f), config);
}
