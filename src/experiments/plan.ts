/**
 * What the results pipeline runs and where it writes: the experiment names, their options, the plan (lengths,
 * budgets, item counts) of each mode, the press and task lists, and the paths of assets, profiles and runs.
 */
import path from 'node:path';
import { SWEEP_PRESS_NAMES } from '../press/presses/index.js';

export const EXPERIMENTS = ['profiles', 'budget', 'generated', 'baselines', 'masking', 'estimator', 'sensitivity', 'quant', 'memory', 'summary'] as const;
export type ExperimentName = (typeof EXPERIMENTS)[number];

export interface ExperimentOptions {
  quick: boolean;
  /** 'tiny': a smoke-test slice (one item per task, a budget above the prompt length) for the test suite. */
  slice?: 'tiny';
  /** Samples per run for the sensitivity profiles (metric, kl utilities); default: the plan's. */
  sensitivitySamples?: number;
  out: string;
  assets: string;
  seed: number;
  /**
   * No progress bars, no sub-command lines or output (shown only for a step that fails) and no per-loop log lines:
   * only the `== step` lines and where the summary went.
   */
  quiet?: boolean;
  log: (msg: string) => void;
}

/** The presses every sweep runs: the registry's sweep list (press descriptors), in its order. */
export const PRESSES: string[] = [...SWEEP_PRESS_NAMES];
export const TASKS = ['passkey', 'multikey', 'kv'];

export interface Plan {
  lengths: number[];
  budgets: number[];
  ratios: number[];
  testLimit?: number;
  profileSamples: number;
  profileLimit?: number;
  storiesLimit?: number;
}

export function plan(quick: boolean, slice?: 'tiny'): Plan {
  if (slice === 'tiny') return { lengths: [512], budgets: [16, 1024], ratios: [], testLimit: 1, profileSamples: 8, profileLimit: 2, storiesLimit: 1 };
  return quick
    ? { lengths: [512], budgets: [16, 32, 64, 128], ratios: [], testLimit: 3, profileSamples: 32, profileLimit: 6, storiesLimit: 4 }
    : { lengths: [512, 1024, 2048], budgets: [16, 32, 64, 128, 256], ratios: [0.75, 0.5, 0.25, 0.125], profileSamples: 256 };
}

export function paths(o: ExperimentOptions) {
  const a = o.assets;
  return {
    tiny: path.join(a, 'models/cokv-retrieval-tiny'),
    stories: path.join(a, 'models/stories260K'),
    retrievalData: path.join(a, 'data/retrieval-dev.jsonl'),
    storiesData: path.join(a, 'data/stories/stories-dev.jsonl'),
    haystack: path.join(a, 'data/needle/PaulGrahamEssays'),
    profiles: path.join(o.out, 'profiles'),
    runs: path.join(o.out, 'runs'),
  };
}

export function profileFile(o: ExperimentOptions, model: string, utility = 'loglik', extra = ''): string {
  return path.join(paths(o).profiles, `${model}__${utility}${extra}.json`);
}
/**
 * The profile each model's CoKV press uses: the `cokv profile` default (metric utility: the greedy answer's exact
 * match) for the retrieval model; loglik for stories260K, whose task is scored by log-likelihood.
 */
export function defaultProfile(o: ExperimentOptions, model: string): string {
  return profileFile(o, model, model === 'stories260K' ? 'loglik' : 'metric');
}
/** HeadKV scores: `r2` (HeadKV-R2 as the official code computes it, the default) or `copy` (the earlier needle-copy score). */
export function headScoresFile(o: ExperimentOptions, model: string, method: 'r2' | 'copy' | 'output-norm' | 'entropy' = model === 'stories260K' ? 'copy' : 'r2'): string {
  return path.join(paths(o).profiles, method === 'copy' ? `${model}__headkv.json` : `${model}__headkv-${method}.json`);
}
