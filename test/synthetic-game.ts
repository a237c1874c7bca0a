/**
 * A small synthetic head game for the profile-file tests (resume, shards, merge, validation): 12 players shaped
 * 3 × 4, a non-additive utility (so the records carry real information), and the profiler settings of such a run.
 */
import type { Coalition } from '../src/game/players.js';
import type { Game, ProfilerOptions } from '../src/game/profiler.js';
import type { ProfileSettings } from '../src/game/profile-file.js';
import { defaultSizes } from '../src/game/sliced-shapley.js';
import { modelFingerprint } from '../src/model/fingerprint.js';
import { tinyConfig } from './random-model.js';

export const n = 12;
export const shape: [number, number] = [3, 4];
export const weights = [0.9, 0.3, 0.5, 0.1, 0.7, 0.2, 1.0, 0, 0.4, 0.8, 0.6, 0.15];

export const utility = (s: Coalition): number => Math.sqrt(s.reduce((t, x, i) => t + x * weights[i], 0)) + 0.3 * s[1] * s[4];

/** The game, counting evaluate() calls. */
export function game(u = utility): Game & { calls: number } {
  return { n, calls: 0, evaluate(cs) { this.calls++; return cs.map(u); } };
}

export function settings(over: Partial<ProfileSettings> = {}): ProfileSettings {
  return {
    model: modelFingerprint(tinyConfig({ numLayers: shape[0], numKvHeads: shape[1], numHeads: shape[1] })),
    shape, window: 4, sizes: defaultSizes(n), sizeOrder: 'round-robin', sSideOnly: false, utility: 'loglik',
    task: 'synthetic', maxNew: 1, dataFile: 'none', dataHash: 'abc', sampleIds: ['s0', 's1'], seed: 3, runs: 2, ...over,
  };
}

/** Profiler options of a run of `maxSamples` samples per run (checkpoints every 8). */
export function profilerOptions(maxSamples: number, over: Partial<ProfilerOptions> = {}): ProfilerOptions {
  return { settings: settings(), modelPath: 'synthetic', maxSamples, tolerance: 0, checkpointEvery: 8, ...over };
}
