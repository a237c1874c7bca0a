/**
 * The head game on a planted model (test/planted-model.ts): hand-set weights where only PLANTED heads can copy
 * the needle into the answer. Checks that the model behaves as built (naive float64 reference forward with a
 * masked head), that ModelGame's U(S) (shared prefill + coalition batches) equals the utility computed
 * independently from referenceLogits, and that the profiler ranks the planted heads on top.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { NativeBackend, loadNativeAddon } from '../src/backend/native.js';
import { ModelGame, type GameSample, type ModelGameOptions } from '../src/game/model-game.js';
import { runProfiler } from '../src/game/profiler.js';
import type { ProfileSettings } from '../src/game/profile-file.js';
import { defaultSizes, exactShapley, exactSliced } from '../src/game/sliced-shapley.js';
import { topK } from '../src/game/compare.js';
import type { Coalition } from '../src/game/players.js';
import { modelFingerprint } from '../src/model/fingerprint.js';
import { referenceLogits } from './random-model.js';
import {
  FILLER0, PLANTED, Q, VALUE0, plantedConfig, plantedModel, plantedPlayers, plantedSamples, plantedWeights,
} from './planted-model.js';

const c = plantedConfig();
const w = plantedWeights();
const G = c.numKvHeads;
const n = c.numLayers * G;
const WINDOW = 4;
const planted = plantedPlayers();
const others = Array.from({ length: n }, (_, i) => i).filter((i) => !planted.includes(i));

function logSoftmax(x: Float64Array<ArrayBufferLike>): Float64Array {
  const m = Math.max(...x);
  let z = 0;
  for (const v of x) z += Math.exp(v - m);
  const lz = m + Math.log(z);
  return x.map((v) => v - lz);
}

const coalition = (members: Iterable<number>): Coalition => {
  const s = new Uint8Array(n);
  for (const i of members) s[i] = 1;
  return s;
};
const ALL = coalition(Array.from({ length: n }, (_, i) => i));
const NONE = coalition([]);

/** Reference logits of prompt + fed tokens with coalition S: prompt rows see everything (full prefill); later
 * rows see all of a member head's keys, but only the last `window` prompt keys (and every fed key) of the others. */
function refLogits(prompt: number[], fed: number[], s: Coalition, window = WINDOW): Float64Array<ArrayBufferLike>[] {
  const L = prompt.length;
  return referenceLogits(c, w, [...prompt, ...fed], (l, g, q, k) => q < L || s[l * G + g] === 1 || k >= L - window);
}

/** The loglik utility of one sample, naively: mean log p of the answer tokens, teacher-forced under S. */
function refLoglik(sample: GameSample, s: Coalition, maxNew: number): number {
  const ans = sample.answerIds.slice(0, maxNew);
  const L = sample.promptIds.length;
  const logits = refLogits(sample.promptIds, ans.slice(0, -1), s);
  let total = 0;
  ans.forEach((id, t) => { total += logSoftmax(logits[L - 1 + t])[id]; });
  return total / ans.length;
}

/** log p(value | prompt, Q) under S, the planted circuit's output. */
function valueLogp(sample: GameSample, s: Coalition): number {
  const L = sample.promptIds.length;
  return logSoftmax(refLogits(sample.promptIds, [Q], s)[L])[sample.answerIds[1]];
}

/** Exact match of the greedy text against the references (kept here: the task metrics live in src/eval). */
const exactMatch = (prediction: string, answers: string[]): number => (answers.some((a) => a.trim() === prediction.trim()) ? 1 : 0);

const randomCoalitions = (count: number, seed: number): Coalition[] => {
  let x = seed;
  return Array.from({ length: count }, () => Uint8Array.from({ length: n }, () => {
    x = (x * 1103515245 + 12345) >>> 0;
    return (x >>> 16) & 1;
  }));
};

describe('planted model: the reference forward behaves as built', () => {
  const samples = plantedSamples(3, 21);

  it('the needle is far from the end; greedy continuation is "Q <value>" with the full cache', () => {
    for (const s of samples) {
      const L = s.promptIds.length;
      const at = s.promptIds.findIndex((id) => id >= VALUE0 && id < FILLER0);
      expect(at).toBeGreaterThan(0);
      expect(L - at).toBeGreaterThan(2 * WINDOW);
      const logits = refLogits(s.promptIds, [Q], ALL);
      expect(Array.from(logits[L - 1]).indexOf(Math.max(...logits[L - 1]))).toBe(Q);
      expect(Array.from(logits[L]).indexOf(Math.max(...logits[L]))).toBe(s.answerIds[1]);
    }
  });

  it('masking a planted head drops the answer log-prob a lot; masking any other head barely changes it', () => {
    for (const s of samples) {
      const full = valueLogp(s, ALL);
      expect(full).toBeGreaterThan(-0.6);
      for (const p of planted) {
        const without = valueLogp(s, coalition([...ALL.keys()].filter((i) => i !== p)));
        expect(full - without).toBeGreaterThan(0.3);
      }
      for (const p of others) {
        const without = valueLogp(s, coalition([...ALL.keys()].filter((i) => i !== p)));
        expect(Math.abs(full - without)).toBeLessThan(0.005);
      }
      // Only the planted heads full: nearly the full answer; none of them: chance level (−log 24).
      expect(Math.abs(valueLogp(s, coalition(planted)) - full)).toBeLessThan(0.02);
      const chance = -Math.log(c.vocabSize);
      expect(Math.abs(valueLogp(s, coalition(others)) - chance)).toBeLessThan(0.1);
      expect(Math.abs(valueLogp(s, NONE) - chance)).toBeLessThan(0.1);
      // Each planted head alone carries part of the answer.
      for (const p of planted) expect(valueLogp(s, coalition([p])) - valueLogp(s, NONE)).toBeGreaterThan(1);
    }
  });

  it('a window that reaches the needle makes masking the planted heads harmless', () => {
    for (const s of samples) {
      const L = s.promptIds.length;
      const at = s.promptIds.findIndex((id) => id >= VALUE0 && id < FILLER0);
      const full = logSoftmax(refLogits(s.promptIds, [Q], ALL)[L])[s.answerIds[1]];
      const reach = logSoftmax(refLogits(s.promptIds, [Q], coalition(others), L - at)[L])[s.answerIds[1]];
      const miss = logSoftmax(refLogits(s.promptIds, [Q], coalition(others), L - at - 1)[L])[s.answerIds[1]];
      expect(Math.abs(reach - full)).toBeLessThan(1e-6);
      expect(full - miss).toBeGreaterThan(1);
    }
  });
});

describe('ModelGame on the planted model = the utility computed with referenceLogits', () => {
  const model = plantedModel();
  const samples = plantedSamples(3, 33);
  const coalitions = [
    ALL, NONE, coalition(planted), coalition(others), ...planted.map((p) => coalition([p])),
    coalition([...ALL.keys()].filter((i) => i !== planted[1])), ...randomCoalitions(4, 9),
  ];
  const opts = (over: Partial<ModelGameOptions> = {}): ModelGameOptions => ({ utility: 'loglik', window: WINDOW, maxNew: 2, batchSize: 16, ...over });

  it('loglik, 2 answer tokens: U(S) matches within 1e-4', () => {
    const game = new ModelGame(model, samples, opts());
    const u = game.evaluate(coalitions);
    coalitions.forEach((s, b) => {
      const want = samples.reduce((t, smp) => t + refLoglik(smp, s, 2), 0) / samples.length;
      expect(Math.abs(u[b] - want)).toBeLessThan(1e-4);
    });
    expect(game.cost.prefills).toBe(samples.length); // one prefill per sample, shared by every coalition
    expect(game.cost.coalitionEvaluations).toBe(coalitions.length);
  });

  it('loglik with several teacher-forced tokens per coalition (batched rows, causal among them) matches', () => {
    // Answer "Q v f Q v": 4 decode rows per coalition, each seeing the earlier answer tokens of its own coalition.
    const long = samples.map((s, i) => ({ ...s, answerIds: [Q, s.answerIds[1], FILLER0 + i, Q, s.answerIds[1]] }));
    const game = new ModelGame(model, long, opts({ maxNew: 5, batchSize: 3 }));
    const u = game.evaluate(coalitions);
    coalitions.forEach((s, b) => {
      const want = long.reduce((t, smp) => t + refLoglik(smp, s, 5), 0) / long.length;
      expect(Math.abs(u[b] - want)).toBeLessThan(1e-4);
    });
    // maxNew cuts the answer.
    const cut = new ModelGame(model, long, opts({ maxNew: 3 })).evaluate(coalitions.slice(0, 4));
    coalitions.slice(0, 4).forEach((s, b) => {
      expect(Math.abs(cut[b] - long.reduce((t, smp) => t + refLoglik(smp, s, 3), 0) / long.length)).toBeLessThan(1e-4);
    });
  });

  it('batch size and coalition order do not change any U(S) (bit-identical)', () => {
    const a = new ModelGame(model, samples, opts({ batchSize: 1 })).evaluate(coalitions);
    const b = new ModelGame(model, samples, opts({ batchSize: 5 })).evaluate(coalitions);
    const rev = new ModelGame(model, samples, opts()).evaluate([...coalitions].reverse()).reverse();
    expect(b).toEqual(a);
    expect(rev).toEqual(a);
  });

  it.skipIf(!loadNativeAddon())('the native backend (fused attention over the shared cache) gives the same U(S) within 1e-5', () => {
    const native = plantedModel({}, new NativeBackend(loadNativeAddon()!, { int8Activations: false }));
    const long = samples.map((s, i) => ({ ...s, answerIds: [Q, s.answerIds[1], FILLER0 + i, Q, s.answerIds[1]] }));
    for (const utility of ['loglik', 'kl'] as const) {
      const want = new ModelGame(model, long, opts({ utility, maxNew: 5, batchSize: 4 })).evaluate(coalitions);
      const got = new ModelGame(native, long, opts({ utility, maxNew: 5, batchSize: 4 })).evaluate(coalitions);
      got.forEach((u, b) => expect(Math.abs(u - want[b]), `${utility} coalition ${b}`).toBeLessThan(1e-5));
    }
  });

  it('kl utility: 0 for the full coalition, −KL(p_full ‖ p_S) at the Q row otherwise', () => {
    const game = new ModelGame(model, samples, opts({ utility: 'kl' }));
    const u = game.evaluate(coalitions);
    expect(u[0]).toBe(0);
    coalitions.forEach((s, b) => {
      let total = 0;
      for (const smp of samples) {
        const L = smp.promptIds.length;
        const full = logSoftmax(refLogits(smp.promptIds, [Q], ALL)[L]);
        const masked = logSoftmax(refLogits(smp.promptIds, [Q], s)[L]);
        let kl = 0;
        for (let v = 0; v < c.vocabSize; v++) kl += Math.exp(full[v]) * (full[v] - masked[v]);
        total += kl;
      }
      expect(Math.abs(u[b] + total / samples.length)).toBeLessThan(1e-4);
    });
  });

  it('metric utility (greedy + exact match): right whenever some planted head is full', () => {
    const game = new ModelGame(model, samples, opts({ utility: 'metric', score: exactMatch }));
    const u = game.evaluate([ALL, coalition(planted), ...planted.map((p) => coalition([p])), coalition(others), NONE]);
    expect(u.slice(0, 2 + planted.length)).toEqual(Array(2 + planted.length).fill(1));
    expect(u[2 + planted.length]).toBeLessThan(0.5);
    expect(u[3 + planted.length]).toBeLessThan(0.5);
  });
});

describe('profiling the planted model', () => {
  const model = plantedModel();
  const samples = plantedSamples(4, 5);
  const sizes = defaultSizes(n);
  const settings: ProfileSettings = {
    model: modelFingerprint(c), shape: [c.numLayers, G], window: WINDOW, sizes, sizeOrder: 'round-robin',
    sSideOnly: false, utility: 'loglik', task: 'planted', maxNew: 2, dataFile: 'memory', dataHash: 'planted',
    sampleIds: samples.map((s) => s.id), seed: 1, runs: 2,
  };
  let exactU: Float64Array;
  const U = (s: Coalition) => {
    let m = 0;
    for (let i = 0; i < n; i++) m |= s[i] << i;
    return exactU[m];
  };

  beforeAll(() => {
    // All 2^12 coalitions through the same game (cheap on this model): the exact values to compare against.
    const game = new ModelGame(model, samples, { utility: 'loglik', window: WINDOW, maxNew: 2, batchSize: 64 });
    const all = Array.from({ length: 1 << n }, (_, m) => Uint8Array.from({ length: n }, (_, i) => (m >> i) & 1));
    exactU = Float64Array.from(game.evaluate(all));
  });

  it('exact Shapley: the planted heads share U(N) − U(∅), the others get ~0', () => {
    const phi = exactShapley(n, U);
    const gap = U(ALL) - U(NONE);
    expect(gap).toBeGreaterThan(1);
    for (const p of planted) expect(Math.abs(phi[p] - gap / planted.length)).toBeLessThan(0.02 * gap);
    for (const p of others) expect(Math.abs(phi[p])).toBeLessThan(1e-3 * gap);
    // The exact sliced values: planted ≈ (n − 3)/(n − 1) · gap/3 (additive closed form), the others ≈ −gap/(n − 1).
    const sliced = exactSliced(n, U, defaultSizes(n));
    for (const p of planted) expect(Math.abs(sliced[p] - ((n - 3) / (n - 1)) * gap / 3)).toBeLessThan(0.02 * gap);
    for (const p of others) expect(Math.abs(sliced[p] + gap / (n - 1))).toBeLessThan(0.01 * gap);
  });

  /*
   * What "the others are near 0" means for sliced values: the complementary contribution U(S) − U(N\S) charges
   * every player for what it is *not* in. For an additive game the both-sides value over sizes symmetric under
   * j ↦ n − j is (n·a_i − A)/(n − 1) (see game-shapley.test.ts), so a head that contributes nothing gets
   * −A/(n − 1) with A = U(N) − U(∅), not 0. The planted game is close to additive; so the test checks that the
   * others sit at that common offset (their own contribution ≈ 0) and far below the planted heads.
   */
  it('runProfiler (loglik, 2 runs, window 4, 96 samples) ranks the planted heads on top, the others near 0', async () => {
    const game = new ModelGame(model, samples, { utility: 'loglik', window: WINDOW, maxNew: 2, batchSize: 16 });
    const p = await runProfiler(game, { settings, modelPath: 'planted', maxSamples: 96, tolerance: 0 });
    expect(p.samples).toBe(96);
    expect(p.values).toHaveLength(c.numLayers);
    const v = p.values.flat();
    expect(new Set(topK(v, planted.length))).toEqual(new Set(planted));
    for (const [l, g] of PLANTED) expect(p.values[l][g]).toBeGreaterThan(0);
    const offset = -(U(ALL) - U(NONE)) / (n - 1);
    const minPlanted = Math.min(...planted.map((i) => v[i]));
    expect(minPlanted - offset).toBeGreaterThan(0.4);
    for (const i of others) expect(Math.abs(v[i] - offset)).toBeLessThan(0.25 * (minPlanted - offset));
    const mean = others.reduce((t, i) => t + v[i], 0) / others.length;
    expect(Math.abs(mean - offset)).toBeLessThan(0.1 * (minPlanted - offset));
    // Both runs agree on the ranking.
    for (const rs of p.runStates) expect(new Set(topK(rs.values.flat(), planted.length))).toEqual(new Set(planted));
    // Close to the exact sliced values of the same game.
    const exact = exactSliced(n, U, sizes);
    const spread = Math.max(...exact) - Math.min(...exact);
    expect(Math.max(...v.map((x, i) => Math.abs(x - exact[i])))).toBeLessThan(0.25 * spread);
    expect(new Set(topK(exact, planted.length))).toEqual(new Set(planted));
    // Cost: one prefill per validation sample; 2 coalitions per sample per run, one decode row each per sample.
    expect(p.cost.prefills).toBe(samples.length);
    expect(p.cost.coalitionEvaluations).toBe(96 * 2 * 2);
    expect(p.cost.decodeRows).toBe(96 * 2 * 2 * samples.length);
  });
});
