/**
 * Presses against an independent float64 reference (test/random-model.ts): with a budget ≥ the prompt nothing is
 * evicted and the logits are bit-identical to no press; with an evicting budget, prefill + greedy decode through
 * the compressed cache must equal the reference forward where each decode query sees only the prompt positions the
 * press kept for that (layer, KV head). This pins down RoPE/position bookkeeping after eviction.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { TsBackend } from '../src/backend/ts.js';
import { RaggedKVCache } from '../src/cache/ragged.js';
import { Transformer } from '../src/model/forward.js';
import type { ModelConfig } from '../src/model/config.js';
import type { ModelWeights } from '../src/model/weights.js';
import { Rng } from '../src/generate/rng.js';
import { createPress, PRESS_NAMES } from '../src/press/registry.js';
import type { PressOptions } from '../src/press/options.js';
import type { Press } from '../src/press/types.js';
import { ScoredPress } from '../src/press/press.js';
import { randomWeights, referenceLogits, tinyConfig } from './random-model.js';
import { tmpDir, maxRelDiff } from './helpers.js';

const STEPS = 6;

function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

interface Run {
  /** Logits after prefill (last prompt row), then after each decode step. */
  logits: Float32Array[];
  /** Tokens fed during decode (greedy). */
  fed: number[];
  /** Prompt positions kept per [layer][kvHead] right after prefill. */
  kept: Set<number>[][];
  lengthsAfterPrefill: number[][];
  cache: RaggedKVCache;
  /** allocatedBytes per head right before / after its layer was compressed. */
  allocBefore: number[][];
  allocAfter: number[][];
}

function runGreedy(cfg: ModelConfig, w: ModelWeights, ids: number[], press: Press | undefined): Run {
  const tf = new Transformer(cfg, w, new TsBackend());
  const cache = new RaggedKVCache(cfg.numLayers, cfg.numKvHeads, cfg.headDim);
  const allocBefore: number[][] = [], allocAfter: number[][] = [];
  const prefill = tf.forward(ids, cache, {
    onLayer: (ctx) => {
      allocBefore[ctx.layer] = cache.heads[ctx.layer].map((h) => h.allocatedBytes());
      press?.compressLayer(ctx, STEPS);
      allocAfter[ctx.layer] = cache.heads[ctx.layer].map((h) => h.allocatedBytes());
    },
  }).slice();
  const kept = cache.heads.map((row) => row.map((h) => new Set(h.positions.subarray(0, h.length))));
  const lengthsAfterPrefill = cache.lengths();
  const logits = [prefill];
  const fed: number[] = [];
  for (let s = 0; s < STEPS; s++) {
    const tok = argmax(logits[logits.length - 1]);
    fed.push(tok);
    logits.push(tf.forward([tok], cache).slice());
  }
  return { logits, fed, kept, lengthsAfterPrefill, cache, allocBefore, allocAfter };
}

describe('press equivalence with the float64 reference', () => {
  const cfg = tinyConfig({ numLayers: 3, numHeads: 8, numKvHeads: 4, headDim: 8 });
  const weights = randomWeights(cfg, 17, 0.4);
  const rng = new Rng(41);
  const L = 40;
  const ids = Array.from({ length: L }, () => rng.int(cfg.vocabSize));
  const dir = tmpDir('cokv-press-eq-');

  const profile = path.join(dir, 'profile.json');
  fs.writeFileSync(profile, JSON.stringify({
    shape: [cfg.numLayers, cfg.numKvHeads],
    scores: Array.from({ length: cfg.numLayers }, () => Array.from({ length: cfg.numKvHeads }, () => rng.next())),
  }));
  // HeadKV's own "layer-head" format: per-sample scores averaged per query head.
  const headScores = path.join(dir, 'head-scores.json');
  const hk: Record<string, number[]> = {};
  for (let l = 0; l < cfg.numLayers; l++) for (let h = 0; h < cfg.numHeads; h++) hk[`${l}-${h}`] = [rng.next(), rng.next() * 2];
  fs.writeFileSync(headScores, JSON.stringify(hk));

  const full = runGreedy(cfg, weights, ids, undefined);

  it('without a press the run matches the reference (sanity)', () => {
    const ref = referenceLogits(cfg, weights, [...ids, ...full.fed]);
    full.logits.forEach((lg, s) => expect(maxRelDiff(lg, ref[L - 1 + s])).toBeLessThan(1e-5));
    expect(full.cache.lengths().flat().every((n) => n === L + STEPS)).toBe(true);
  });

  for (const name of PRESS_NAMES) {
    for (const budget of [L, L + 24]) {
      it(`${name}, budget ${budget} ≥ prompt: nothing evicted, logits bit-identical to no press`, () => {
        const press = createPress(name, { budget, profile, headScores, alpha: 3 }, cfg);
        const run = runGreedy(cfg, weights, ids, press);
        expect(run.lengthsAfterPrefill.flat().every((n) => n === L)).toBe(true);
        expect(run.fed).toEqual(full.fed);
        run.logits.forEach((lg, s) => expect(lg).toEqual(full.logits[s]));
      });
    }
  }

  it('ratio 1 keeps everything too', () => {
    const run = runGreedy(cfg, weights, ids, createPress('snapkv', { ratio: 1 }, cfg));
    run.logits.forEach((lg, s) => expect(lg).toEqual(full.logits[s]));
  });

  const evicting: [string, string, PressOptions][] = [
    ['snapkv', 'snapkv', { budget: 16 }],
    ['snapkv avg-3, group max, window 4', 'snapkv', { budget: 12, window: 4, pool: 'avg', kernel: 3, groupAggregation: 'max' }],
    ['adakv', 'adakv', { budget: 16 }],
    ['pyramidkv', 'pyramidkv', { budget: 16 }],
    ['pyramidkv reference steps', 'pyramidkv', { budget: 16, redistribute: false }],
    ['ada-pyramidkv', 'ada-pyramidkv', { budget: 14 }],
    ['cokv', 'cokv', { budget: 16, profile, alpha: 3 }],
    ['cokv reference truncation', 'cokv', { budget: 12, profile, alpha: 2, redistribute: false }],
    ['headkv', 'headkv', { budget: 16, headScores }],
    ['streaming', 'streaming', { budget: 16 }],
    ['random', 'random', { budget: 16, seed: 5 }],
  ];

  for (const [label, name, options] of evicting) {
    it(`${label}: decode logits equal the reference with the evicted keys masked`, () => {
      const press = createPress(name, options, cfg)!;
      const run = runGreedy(cfg, weights, ids, press);
      const window = options.window ?? 8;

      // Something was evicted, every head kept its window, and the lengths match the allocation.
      const lens = run.lengthsAfterPrefill;
      expect(lens.flat().some((n) => n < L)).toBe(true);
      const alloc = (press as ScoredPress).lastAllocation;
      lens.forEach((row, l) => row.forEach((n, g) => {
        expect(n).toBe(Math.min(alloc[l][g], L - window) + window);
        for (let p = L - window; p < L; p++) expect(run.kept[l][g].has(p)).toBe(true);
        expect([...run.kept[l][g]].every((p) => p >= 0 && p < L)).toBe(true);
      }));
      if (options.redistribute !== false) expect(lens.flat().reduce((a, b) => a + b, 0)).toBe(cfg.numLayers * cfg.numKvHeads * options.budget!);

      // Memory: exact K+V bytes, and compressed heads really shrank to length + reserve.
      const c = run.cache;
      const hd = cfg.headDim;
      expect(c.bytes()).toBe(c.lengths().flat().reduce((a, b) => a + b, 0) * hd * 2 * 4);
      lens.forEach((row, l) => row.forEach((n, g) => {
        if (n < L) {
          expect(run.allocAfter[l][g]).toBe((n + STEPS) * (hd * 2 * 4 + 4));
          expect(run.allocAfter[l][g]).toBeLessThan(run.allocBefore[l][g]);
          // The reserve was enough: decoding did not reallocate.
          expect(c.head(l, g).allocatedBytes()).toBe(run.allocAfter[l][g]);
        }
        const h = c.head(l, g);
        expect(h.length).toBe(n + STEPS);
        expect(Array.from(h.positions.subarray(n, n + STEPS))).toEqual(Array.from({ length: STEPS }, (_, i) => L + i));
      }));
      expect(c.position).toBe(L + STEPS);

      // The first generated token sees the full prompt (prefill attention is never compressed).
      expect(run.logits[0]).toEqual(full.logits[0]);

      const seq = [...ids, ...run.fed];
      const ref = referenceLogits(cfg, weights, seq, (l, g, q, k) => q < L || k >= L || run.kept[l][g].has(k));
      run.logits.forEach((lg, s) => expect(maxRelDiff(lg, ref[L - 1 + s]), `step ${s}`).toBeLessThan(1e-5));

      // The masked reference differs from the unmasked one, so the comparison above is not vacuous.
      const unmasked = referenceLogits(cfg, weights, seq);
      expect(maxRelDiff(ref[L + STEPS - 1], unmasked[L + STEPS - 1])).toBeGreaterThan(1e-4);
    });
  }

  it('a Transformer reused after a longer prompt scores a shorter one the same (queries of this chunk only)', () => {
    // The forward pass reuses its scratch buffers, so the queries array it hands to the hook may hold rows of an
    // earlier, longer call; the scorer must only read this chunk's numTokens rows with the model's head count.
    const short = ids.slice(0, 30);
    for (const name of ['snapkv', 'adakv', 'pyramidkv']) {
      const fresh = runGreedy(cfg, weights, short, createPress(name, { budget: 12 }, cfg));
      const tf = new Transformer(cfg, weights, new TsBackend());
      tf.forward(ids, new RaggedKVCache(cfg.numLayers, cfg.numKvHeads, cfg.headDim), { logits: 'none' });
      const press = createPress(name, { budget: 12 }, cfg)!;
      const cache = new RaggedKVCache(cfg.numLayers, cfg.numKvHeads, cfg.headDim);
      const logits = tf.forward(short, cache, { onLayer: (ctx) => press.compressLayer(ctx, STEPS) });
      const kept = cache.heads.map((row) => row.map((h) => new Set(h.positions.subarray(0, h.length))));
      expect(kept, name).toEqual(fresh.kept);
      expect(logits).toEqual(fresh.logits[0]);
    }
  });

  it('compressing twice with the same press object gives the same result (per-prompt tables reset)', () => {
    const press = createPress('cokv', { budget: 16, profile, alpha: 3 }, cfg)!;
    const a = runGreedy(cfg, weights, ids, press);
    const b = runGreedy(cfg, weights, ids.slice(0, 30), press);
    const c2 = runGreedy(cfg, weights, ids, press);
    expect(c2.lengthsAfterPrefill).toEqual(a.lengthsAfterPrefill);
    expect(b.lengthsAfterPrefill.flat().reduce((x, y) => x + y, 0)).toBe(cfg.numLayers * cfg.numKvHeads * 16);
    c2.logits.forEach((lg, s) => expect(lg).toEqual(a.logits[s]));
  });
});
