/**
 * Models with sliding-window layers (Gemma 3 style: some layers attend only to the last W positions). A small
 * random model with layers [sliding 8, full, sliding 5, full] and its own q·k scale checks that: a sliding layer's
 * cache stays within its bound (lengths and allocation) through long prefills and decode; forward logits equal a
 * naive float64 reference with windowed attention; every press leaves sliding layers untouched and meets its
 * budget over the full-attention layers; the head game's players are the full layers' KV heads and its utilities
 * equal the reference; the byte accounting is right by hand.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { NativeBackend, loadNativeAddon } from '../src/backend/native.js';
import { TsBackend } from '../src/backend/ts.js';
import type { Backend } from '../src/backend/types.js';
import { RaggedKVCache, kvEntryBytes, slidingHoldBound } from '../src/cache/ragged.js';
import { CokvModel } from '../src/engine.js';
import { CokvError } from '../src/errors.js';
import { ModelGame, type GameSample } from '../src/game/model-game.js';
import { Players, type Coalition } from '../src/game/players.js';
import { buildProfile, runProfiler } from '../src/game/profiler.js';
import { readProfile, settingsMismatch, writeProfileAtomic, type ProfileSettings } from '../src/game/profile-file.js';
import { defaultSizes, drawCoalition } from '../src/game/sliced-shapley.js';
import { Rng } from '../src/generate/rng.js';
import { fullAttentionLayers, globalRope, llamaRecipe, validateConfig, type ModelConfig } from '../src/model/config.js';
import { modelFingerprint } from '../src/model/fingerprint.js';
import type { ModelSource } from '../src/model/source.js';
import type { Tokenizer } from '../src/model/tokenizer/types.js';
import type { ModelWeights } from '../src/model/weights.js';
import { buildReport } from '../src/eval/report.js';
import { readProfileValues } from '../src/press/head-values.js';
import { ScoredPress } from '../src/press/press.js';
import { createPress, defaultAlpha, FullPress, maskPress, PRESS_NAMES } from '../src/press/registry.js';
import { kvScopeLabel } from '../src/press/scope.js';
import { snapkvScores } from '../src/press/scorers/snapkv.js';
import { maxRelDiff, tmpDir } from './helpers.js';
import { randomWeights, referenceLogits, tinyConfig } from './random-model.js';

const WINDOWS = [8, 0, 5, 0]; // per layer: sliding window, or 0 for full attention
const SCALE = 0.5; // not 1/√headDim: the scale must come from the recipe everywhere

function slidingConfig(windows = WINDOWS): ModelConfig {
  const rope = globalRope({ ropeTheta: 10000, headDim: 8 });
  const c = tinyConfig({
    numLayers: windows.length, numHeads: 4, numKvHeads: 2, headDim: 8, contextLength: 4096,
    recipe: { ...llamaRecipe(8), attentionScale: SCALE },
    layers: windows.map((w) => (w > 0 ? { kind: 'sliding' as const, window: w, rope } : { kind: 'full' as const, rope })),
  });
  validateConfig(c, 'sliding test config');
  return c;
}

const cfg = slidingConfig();
const weights = randomWeights(cfg, 5, 0.4);
const G = cfg.numKvHeads;
const FULL = fullAttentionLayers(cfg); // [1, 3]
const SLIDING = [0, 2];

const tokenizer: Tokenizer = {
  vocabSize: cfg.vocabSize, bosId: undefined, eosIds: [], addBosDefault: false,
  encode: (t) => Array.from(t, (ch) => ch.charCodeAt(0) % cfg.vocabSize),
  decode: (ids) => ids.map((i) => String.fromCharCode(97 + (i % 26))).join(''),
  tokenText: (i) => String.fromCharCode(97 + (i % 26)),
};

function modelOf(c: ModelConfig, w: ModelWeights, backend: Backend = new TsBackend()): CokvModel {
  const source: ModelSource = { format: 'hf', path: 'memory', config: c, tensors: [], loadTokenizer: async () => tokenizer, loadWeights: () => w };
  return new CokvModel(source, tokenizer, backend);
}

const model = modelOf(cfg, weights);

function randomIds(n: number, seed: number): number[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => rng.int(cfg.vocabSize));
}

function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** Reference visibility of a sliding layer: the query at q sees keys at k > q − W (itself included). */
const inWindow = (l: number, q: number, k: number) => WINDOWS[l] === 0 || q - k < WINDOWS[l];

/** Every sliding head holds consecutive positions ending at position − 1, at most its hold bound of them. */
function expectSlidingBounded(cache: RaggedKVCache): void {
  for (const l of SLIDING) {
    for (const h of cache.heads[l]) {
      expect(h.length).toBeLessThanOrEqual(slidingHoldBound(WINDOWS[l]));
      // Never fewer than the window still needs (the last W − 1 positions, or all of them early on).
      expect(h.length).toBeGreaterThanOrEqual(Math.min(cache.position, WINDOWS[l] - 1));
      const pos = Array.from(h.positions.subarray(0, h.length));
      expect(pos).toEqual(Array.from({ length: h.length }, (_, i) => cache.position - h.length + i));
    }
  }
}

describe('sliding-layer cache bounds', () => {
  it('hold bounds by hand: W − 1 visible positions plus less than a quarter-window drop batch', () => {
    expect(slidingHoldBound(1)).toBe(0);
    expect(slidingHoldBound(4)).toBe(3);
    expect(slidingHoldBound(5)).toBe(5);
    expect(slidingHoldBound(8)).toBe(8);
    expect(slidingHoldBound(512)).toBe(638);
  });

  for (const [label, opts] of [
    ['one pass', { chunkSize: 0 }], ['chunks of 32', { chunkSize: 32 }], ['with a layer hook (whole prompt)', { onLayer: () => undefined }],
  ] as const) {
    it(`${label}: sliding heads stay within their bound through a 200-token prefill and 30 decode steps`, () => {
      const cache = model.newCache(230);
      let logits = model.transformer.forward(randomIds(200, 1), cache, opts);
      expect(cache.position).toBe(200);
      expectSlidingBounded(cache);
      // The whole pass was trimmed at once: exactly the W − 1 positions the next query sees.
      for (const l of SLIDING) for (const h of cache.heads[l]) expect(h.length).toBe(WINDOWS[l] - 1);
      for (const l of FULL) for (const h of cache.heads[l]) expect(h.length).toBe(200);
      const seen = new Set<number>();
      for (let s = 0; s < 30; s++) {
        logits = model.transformer.forward([argmax(logits)], cache);
        expectSlidingBounded(cache);
        seen.add(cache.head(0, 0).length);
        for (const l of FULL) for (const h of cache.heads[l]) expect(h.length).toBe(cache.position);
      }
      // Decode drops in batches: the length cycles between W − 1 and the bound.
      expect(seen).toEqual(new Set([7, 8]));
    });
  }

  it('a sliding head never preallocates more than its window plus a prefill chunk (newCache, reserveExtra, clone)', () => {
    const entry = (cache: RaggedKVCache, l: number) => cache.head(l, 0).capacity;
    const cache = model.newCache(5000);
    expect(cache.layers.map((l) => l.kind)).toEqual(['sliding', 'full', 'sliding', 'full']);
    expect(entry(cache, 0)).toBe(slidingHoldBound(8) + 512);
    expect(entry(cache, 2)).toBe(slidingHoldBound(5) + 512);
    expect(entry(cache, 1)).toBe(5000);
    model.transformer.forward(randomIds(100, 2), cache);
    cache.reserveExtra(3000);
    expect(entry(cache, 0)).toBe(slidingHoldBound(8) + 512);
    expect(entry(cache, 1)).toBeGreaterThanOrEqual(3100);
    const copy = cache.clone(3000);
    expect(copy.layers).toEqual(cache.layers);
    expect(entry(copy, 0)).toBeLessThanOrEqual(slidingHoldBound(8) + 512);
    expect(entry(copy, 3)).toBe(3100);
    expect(copy.lengths()).toEqual(cache.lengths());
    // A small cache stays small: capped by its own capacity.
    expect(model.newCache(20).head(0, 0).capacity).toBe(20);
  });

  it('a head that grew during a 1200-row pass is shrunk back to window + chunk; memory is bounded by it', () => {
    const cache = model.newCache();
    model.transformer.forward(randomIds(1200, 3), cache, { onLayer: () => undefined, logits: 'none' });
    for (const l of SLIDING) {
      for (const h of cache.heads[l]) {
        expect(h.capacity).toBeLessThanOrEqual(slidingHoldBound(WINDOWS[l]) + 512);
        expect(h.length).toBe(WINDOWS[l] - 1);
      }
    }
    const perEntry = 2 * 8 * 4 + 4; // K and V rows (F32) plus the position index
    const full = 2 * G * 1200 * perEntry;
    expect(cache.allocatedBytes()).toBeLessThanOrEqual(Math.ceil(full * 1.5) + G * (slidingHoldBound(8) + slidingHoldBound(5) + 2 * 512) * perEntry);
  });

  it('a cache made without layer kinds takes them from the forward pass; a cache of other kinds is refused', () => {
    const ids = randomIds(40, 4);
    const want = model.transformer.forward(ids, model.newCache(), { logits: 'all' }).slice();
    const bare = new RaggedKVCache(4, G, 8);
    const got = model.transformer.forward(ids, bare, { logits: 'all' }).slice();
    expect(got).toEqual(want);
    expect(bare.layers).toEqual([{ kind: 'sliding', window: 8 }, { kind: 'full' }, { kind: 'sliding', window: 5 }, { kind: 'full' }]);
    expect(bare.budgetedLayers()).toEqual(FULL);
    const other = new RaggedKVCache(4, G, 8, 0, 'f32', [{ kind: 'full' }, { kind: 'full' }, { kind: 'sliding', window: 5 }, { kind: 'full' }]);
    expect(() => model.transformer.forward(ids, other)).toThrow(/layer 0 is sliding/);
  });
});

describe('sliding-window forward pass = naive windowed attention', () => {
  const prompt = randomIds(200, 11);

  it('one pass with logits for every row (the window applies inside a pass)', () => {
    const ids = prompt.slice(0, 60);
    const got = model.transformer.forward(ids, model.newCache(), { logits: 'all' });
    const ref = referenceLogits(cfg, weights, ids, (l, _g, q, k) => inWindow(l, q, k));
    const V = cfg.vocabSize;
    for (let t = 0; t < ids.length; t++) expect(maxRelDiff(got.subarray(t * V, (t + 1) * V), ref[t]), `row ${t}`).toBeLessThan(1e-4);
    // The window really matters: without it the logits differ.
    const unwindowed = referenceLogits(cfg, weights, ids);
    expect(maxRelDiff(got.subarray(59 * V, 60 * V), unwindowed[59])).toBeGreaterThan(1e-2);
  });

  for (const chunkSize of [0, 48]) {
    it(`200-token prefill (${chunkSize ? `chunks of ${chunkSize}` : 'one pass'}) and 12 greedy decode steps through the trimmed cache`, () => {
      const cache = model.newCache(220);
      const logits = [model.transformer.forward(prompt, cache, { chunkSize }).slice()];
      const fed: number[] = [];
      for (let s = 0; s < 12; s++) {
        fed.push(argmax(logits[logits.length - 1]));
        logits.push(model.transformer.forward([fed[fed.length - 1]], cache).slice());
      }
      const ref = referenceLogits(cfg, weights, [...prompt, ...fed], (l, _g, q, k) => inWindow(l, q, k));
      logits.forEach((lg, i) => expect(maxRelDiff(lg, ref[prompt.length - 1 + i]), `step ${i}`).toBeLessThan(1e-4));
    });
  }

  it.skipIf(!loadNativeAddon())('the native backend (fused windowed attention) gives the same logits', () => {
    const native = modelOf(cfg, weights, new NativeBackend(loadNativeAddon()!, { int8Activations: false }));
    const a = model.transformer.forward(prompt, model.newCache(), { chunkSize: 64 }).slice();
    const b = native.transformer.forward(prompt, native.newCache(), { chunkSize: 64 }).slice();
    expect(maxRelDiff(b, a)).toBeLessThan(1e-4);
  });
});

describe('presses on a model with sliding layers', () => {
  const dir = tmpDir('cokv-sliding-');
  const rng = new Rng(77);
  // A CoKV profile over the players (full layers 1 and 3), and HeadKV scores for every layer (as `cokv head-scores` writes).
  const profile = path.join(dir, 'profile.json');
  fs.writeFileSync(profile, JSON.stringify({ model: modelFingerprint(cfg), shape: [2, G], layers: FULL, values: [[0.3, 0.1], [0.05, 0.9]] }));
  const headScores = path.join(dir, 'heads.json');
  fs.writeFileSync(headScores, JSON.stringify({ scores: Array.from({ length: 4 }, () => Array.from({ length: cfg.numHeads }, () => rng.next())) }));
  const ids = randomIds(100, 21);
  const B = 24, w = 4;
  const entry = kvEntryBytes('f32', cfg.headDim);
  const reference = model.newCache(ids.length);
  model.prefill(ids, reference);

  const expectSlidingIntact = (cache: RaggedKVCache) => {
    for (const l of SLIDING) {
      for (let g = 0; g < G; g++) {
        const a = cache.head(l, g), b = reference.head(l, g);
        expect(a.length).toBe(b.length);
        expect(a.positions.subarray(0, a.length)).toEqual(b.positions.subarray(0, b.length));
        expect(a.keysF32().subarray(0, a.length * 8)).toEqual(b.keysF32().subarray(0, b.length * 8));
        expect(a.valuesF32().subarray(0, a.length * 8)).toEqual(b.valuesF32().subarray(0, b.length * 8));
      }
    }
  };

  for (const name of PRESS_NAMES) {
    it(`${name}: sliding layers untouched, budget met over the full-attention heads`, () => {
      const press = createPress(name, { budget: B, window: w, profile, headScores, seed: 3 }, cfg);
      const cache = model.newCache(ids.length + 4);
      model.prefill(ids, cache, press, 4);
      expectSlidingIntact(cache);
      expect(cache.slidingBytes()).toBe(reference.slidingBytes());
      if (name === 'full') {
        expect(press).toBeInstanceOf(FullPress);
        expect(cache.budgetedBytes()).toBe(cache.budgetedFullBytes());
        return;
      }
      const kept = FULL.flatMap((l) => cache.heads[l].map((h) => h.length));
      expect(kept.reduce((a, b) => a + b, 0)).toBe(FULL.length * G * B);
      for (const l of FULL) {
        for (const h of cache.heads[l]) {
          expect(h.length).toBeLessThanOrEqual(ids.length);
          const pos = Array.from(h.positions.subarray(0, h.length));
          for (let p = ids.length - w; p < ids.length; p++) expect(pos).toContain(p); // the window
        }
      }
      expect(cache.budgetedBytes()).toBe(FULL.length * G * B * entry);
      expect(cache.bytes()).toBe(cache.budgetedBytes() + cache.slidingBytes());
      expect(cache.fullBytes()).toBe(reference.bytes());
      // Allocations are only recorded for the layers that were budgeted.
      const alloc = (press as ScoredPress).lastAllocation;
      expect(SLIDING.map((l) => alloc[l])).toEqual([undefined, undefined]);
      expect(FULL.map((l) => alloc[l].length)).toEqual([G, G]);
    });
  }

  it('ratio budgets are over the budgeted heads: kept 25% of the full-attention KV', () => {
    const cache = model.newCache(ids.length);
    model.prefill(ids, cache, createPress('snapkv', { ratio: 0.25, window: w }, cfg));
    expect(cache.budgetedBytes() / cache.budgetedFullBytes()).toBe(0.25);
    expect(cache.bytes() / cache.fullBytes()).toBeGreaterThan(0.25); // the sliding windows are not compressed
    expectSlidingIntact(cache);
  });

  it('PyramidKV ramps over the full-attention layers only; defaultAlpha counts only their heads', () => {
    const cache = model.newCache(ids.length);
    const press = createPress('pyramidkv', { budget: B, window: w }, cfg) as ScoredPress;
    model.prefill(ids, cache, press);
    const perLayer = FULL.map((l) => press.lastAllocation[l].reduce((a, b) => a + b, 0));
    expect(perLayer[0]).toBeGreaterThan(perLayer[1]);
    expect(perLayer[0] + perLayer[1]).toBe(FULL.length * G * (B - w));
    expect(defaultAlpha(cfg)).toBe(1);
  });

  it('the profiler\'s mask press keeps members whole and the others\' window, never touching sliding layers', () => {
    const players = Players.of(cfg);
    const s: Coalition = Uint8Array.from([1, 0, 0, 1]);
    const cache = model.newCache(ids.length);
    model.prefill(ids, cache, maskPress(players.grid(s, cfg.numLayers), w));
    expectSlidingIntact(cache);
    expect(cache.lengths()[1]).toEqual([ids.length, w]);
    expect(cache.lengths()[3]).toEqual([w, ids.length]);
  });

  it('SnapKV scores with the recipe\'s attention scale', () => {
    const press = createPress('snapkv', { budget: B, window: w, pool: 'none' }, cfg)!;
    let seen: Float32Array[] | undefined;
    let ctxScores: Float32Array[] | undefined;
    const cache = model.newCache(ids.length);
    model.transformer.forward(ids, cache, {
      onLayer: (ctx) => {
        if (ctx.layer !== 1) return;
        const o = { window: w, pool: 'none' as const, kernel: 7, groupAggregation: 'mean' as const, numHeads: cfg.numHeads };
        seen = snapkvScores(ctx, { ...o, scale: SCALE });
        ctxScores = snapkvScores(ctx, o);
        press.compressLayer(ctx, 0);
      },
    });
    // The press kept the top B − w of the scores at the recipe's scale (which differ from the 1/√hd ones).
    expect(maxRelDiff(ctxScores![0], seen![0])).toBeGreaterThan(1e-3);
    const keptPos = Array.from(cache.head(1, 0).positions.subarray(0, B - w));
    const order = Array.from(seen![0].keys()).sort((a, b) => seen![0][b] - seen![0][a] || a - b).slice(0, B - w).sort((a, b) => a - b);
    expect(keptPos).toEqual(order);
  });

  it('decode through a compressed cache equals the reference that sees the kept positions and each window', () => {
    const press = createPress('snapkv', { budget: B, window: w }, cfg);
    const cache = model.newCache(ids.length + 6);
    const logits = [model.prefill(ids, cache, press, 6)];
    const kept = cache.heads.map((row) => row.map((h) => new Set(h.positions.subarray(0, h.length))));
    const fed: number[] = [];
    for (let s = 0; s < 6; s++) {
      fed.push(argmax(logits[logits.length - 1]));
      logits.push(model.transformer.forward([fed[fed.length - 1]], cache).slice());
    }
    const L = ids.length;
    const ref = referenceLogits(cfg, weights, [...ids, ...fed], (l, g, q, k) =>
      WINDOWS[l] > 0 ? q - k < WINDOWS[l] : q < L || k >= L || kept[l][g].has(k));
    logits.forEach((lg, i) => expect(maxRelDiff(lg, ref[L - 1 + i]), `step ${i}`).toBeLessThan(1e-4));
  });

  for (const name of ['snapkv', 'adakv', 'cokv']) {
    it(`${name}: compressing a shared prefill copy = compressing during prefill; stats split budgeted and sliding bytes`, async () => {
      const press = createPress(name, { budget: B, window: w, profile }, cfg);
      // F32 storage, the byte counts' `entry` (the engine's default is F16).
      const direct = model.generate(ids, { maxTokens: 5, temperature: 0, press, kvDtype: 'f32' });
      await direct.complete();
      const shared = model.prefillShared(ids, 64, 'f32');
      expect(SLIDING.map((l) => shared.queries[l])).toEqual([undefined, undefined]);
      const via = model.generate(ids, { maxTokens: 5, temperature: 0, prefilled: model.fromShared(shared, press, 6) });
      await via.complete();
      expect(via.tokens).toEqual(direct.tokens);
      const s = direct.stats!;
      expect(via.stats!.promptKvBytes).toBe(s.promptKvBytes);
      expect(s.promptBudgetedKvBytes).toBe(FULL.length * G * B * entry);
      expect(s.promptBudgetedFullKvBytes).toBe(FULL.length * G * ids.length * entry);
      const slidingHeld = s.promptKvBytes - s.promptBudgetedKvBytes;
      expect(slidingHeld).toBe((7 + 4) * G * entry); // W − 1 positions of each sliding layer after the prompt
      expect(s.promptFullKvBytes - s.promptBudgetedFullKvBytes).toBe(slidingHeld);
    });
  }

  it('a profile of every layer (made before sliding layers were known) is refused for this model; a model with no full layer is unbudgeted', () => {
    const old = path.join(dir, 'old.json');
    fs.writeFileSync(old, JSON.stringify({ shape: [4, G], values: [[1, 2], [3, 4], [5, 6], [7, 8]] }));
    expect(() => readProfileValues(old, cfg)).toThrow(CokvError);
    expect(() => readProfileValues(old, cfg)).toThrow(/full-attention layers 1,3/);
    // Only the full layers' rows, without a "layers" field, are unambiguous.
    const bare = path.join(dir, 'bare.json');
    fs.writeFileSync(bare, JSON.stringify({ scores: [[1, 2], [3, 4]] }));
    expect(readProfileValues(bare, cfg)).toEqual([1, 2, 3, 4]);
    const allSliding = slidingConfig([4, 4]);
    expect(kvScopeLabel(allSliding)).toBe('no full-attention layer of 2 (nothing budgeted); sliding layers hold their 4-token window');
    const m = modelOf(allSliding, randomWeights(allSliding, 2));
    const cache = m.newCache(40);
    m.prefill(randomIds(40, 5), cache, createPress('snapkv', { budget: 12, window: 4 }, allSliding));
    expect(cache.lengths()).toEqual([[3, 3], [3, 3]]);
    expect(cache.budgetedFullBytes()).toBe(0);
    expect(() => new ModelGame(m, [], { utility: 'loglik', window: 4, maxNew: 2, batchSize: 4 })).toThrow(CokvError);
  });

  it('scope labels', () => {
    expect(kvScopeLabel(cfg)).toBe('KV of 2 full-attention layers of 4; sliding layers hold their 5/8-token windows');
    expect(kvScopeLabel(slidingConfig([16, 16, 0, 16, 16, 16]))).toBe('KV of 1 full-attention layer of 6; sliding layers hold their 16-token window');
    expect(kvScopeLabel(tinyConfig())).toBe('KV of all 2 layers');
  });
});

describe('the head game on a model with sliding layers', () => {
  const players = Players.of(cfg);
  const n = players.n;
  const WINDOW = 4;
  const rng = new Rng(9);
  const samples: GameSample[] = Array.from({ length: 3 }, (_, i) => {
    const promptIds = randomIds(28 + rng.int(10), 100 + i);
    const answerIds = randomIds(3, 200 + i);
    return { id: `s${i}`, promptIds, answers: [tokenizer.decode(answerIds)], answerIds };
  });
  const all = Array.from({ length: 1 << n }, (_, m) => Uint8Array.from({ length: n }, (_, i) => (m >> i) & 1));

  /** Reference loglik of one sample under S: sliding layers see their window; full layers per the mask. */
  function refLoglik(s: GameSample, S: Coalition, maxNew: number): number {
    const L = s.promptIds.length, ans = s.answerIds.slice(0, maxNew);
    const logits = referenceLogits(cfg, weights, [...s.promptIds, ...ans.slice(0, -1)], (l, g, q, k) =>
      WINDOWS[l] > 0 ? q - k < WINDOWS[l] : q < L || S[players.id(l, g)] === 1 || k >= L - WINDOW);
    let total = 0;
    ans.forEach((id, t) => {
      const x = logits[L - 1 + t];
      const m = Math.max(...x);
      let z = 0;
      for (const v of x) z += Math.exp(v - m);
      total += x[id] - m - Math.log(z);
    });
    return total / ans.length;
  }

  it('players are the full layers\' KV heads, named by their real layer', () => {
    expect(players.layers).toEqual(FULL);
    expect(n).toBe(FULL.length * G);
    expect(Array.from({ length: n }, (_, i) => players.name(i))).toEqual(['L1H0', 'L1H1', 'L3H0', 'L3H1']);
    expect(players.id(3, 1)).toBe(3);
    expect(players.id(0, 0)).toBe(-1);
    expect(players.grid(Uint8Array.from([0, 1, 1, 0]), 4)).toEqual([[true, true], [false, true], [true, true], [true, false]]);
    expect(new ModelGame(model, samples, { utility: 'loglik', window: WINDOW, maxNew: 3, batchSize: 4 }).n).toBe(n);
  });

  it('loglik U(S) of every coalition equals the reference (full layers masked, sliding layers windowed)', () => {
    const game = new ModelGame(model, samples, { utility: 'loglik', window: WINDOW, maxNew: 3, batchSize: 5 });
    const u = game.evaluate(all);
    all.forEach((S, b) => {
      const want = samples.reduce((t, s) => t + refLoglik(s, S, 3), 0) / samples.length;
      expect(Math.abs(u[b] - want), `coalition ${b}`).toBeLessThan(1e-4);
    });
    // Masking matters here (else the check above could not tell coalitions apart).
    expect(Math.max(...u) - Math.min(...u)).toBeGreaterThan(1e-3);
  });

  it('kl utility is 0 for the grand coalition; the native backend agrees with the TS loop', () => {
    const u = new ModelGame(model, samples, { utility: 'kl', window: WINDOW, maxNew: 4, batchSize: 8 }).evaluate(all);
    expect(u[all.length - 1]).toBe(0);
    expect(Math.min(...u)).toBeLessThan(0);
    const addon = loadNativeAddon();
    if (!addon) return;
    const native = modelOf(cfg, weights, new NativeBackend(addon, { int8Activations: false }));
    for (const utility of ['loglik', 'kl'] as const) {
      const a = new ModelGame(model, samples, { utility, window: WINDOW, maxNew: 4, batchSize: 8 }).evaluate(all);
      const b = new ModelGame(native, samples, { utility, window: WINDOW, maxNew: 4, batchSize: 8 }).evaluate(all);
      b.forEach((x, i) => expect(Math.abs(x - a[i]), `${utility} coalition ${i}`).toBeLessThan(1e-5));
    }
  });

  it('runProfiler end to end: the profile records its player layers, reads back, and drives the CoKV press', async () => {
    const settings: ProfileSettings = {
      model: modelFingerprint(cfg), shape: [FULL.length, G], layers: FULL, window: WINDOW, sizes: defaultSizes(n),
      sizeOrder: 'round-robin', sSideOnly: false, utility: 'loglik', task: 'random', maxNew: 3, dataFile: 'memory',
      dataHash: 'random', sampleIds: samples.map((s) => s.id), seed: 1, runs: 2,
    };
    const game = new ModelGame(model, samples, { utility: 'loglik', window: WINDOW, maxNew: 3, batchSize: 16 });
    const dir = tmpDir('cokv-sliding-profile-');
    const out = path.join(dir, 'p.json');
    const p = await runProfiler(game, { settings, modelPath: 'memory', maxSamples: 12, tolerance: 0, out });
    expect(p.samples).toBe(12);
    expect(p.values).toHaveLength(FULL.length);
    expect(p.values.every((row) => row.length === G && row.every(Number.isFinite))).toBe(true);
    const back = readProfile(out);
    expect(back.layers).toEqual(FULL);
    expect(settingsMismatch(settings, back)).toBeUndefined();
    expect(settingsMismatch({ ...settings, layers: [3] , shape: [1, G] }, back)).toMatch(/shape|layers/);
    expect(readProfileValues(out, cfg)).toEqual(p.values.flat());
    // Resume continues the same players.
    const more = await runProfiler(game, { settings, modelPath: 'memory', maxSamples: 16, tolerance: 0, out, resume: true });
    expect(more.samples).toBe(16);
    const press = createPress('cokv', { budget: 16, window: WINDOW, profile: out }, cfg);
    const cache = model.newCache(60);
    model.prefill(randomIds(60, 8), cache, press);
    expect(FULL.flatMap((l) => cache.heads[l].map((h) => h.length)).reduce((a, b) => a + b, 0)).toBe(FULL.length * G * 16);
    for (const l of SLIDING) for (const h of cache.heads[l]) expect(h.length).toBe(WINDOWS[l] - 1);
  });

  it('a profile made before player layers were recorded still loads for a model without sliding layers (same ids)', () => {
    const plain = tinyConfig({ numLayers: 2, numHeads: 4, numKvHeads: 2 });
    const old: ProfileSettings = {
      model: modelFingerprint(plain), shape: [2, 2], window: 4, sizes: [1, 2], sizeOrder: 'round-robin', sSideOnly: false,
      utility: 'loglik', task: 't', maxNew: 1, dataFile: 'd', dataHash: 'h', sampleIds: ['a'], seed: 1, runs: 1,
    };
    // Records hold the coalitions their (seed, run, k) draw: profile files are checked for exactly that.
    const rec = [0.5, -0.25].map((u, k) => ({ k, u, ...drawCoalition({ n: 4, sizes: old.sizes, seed: old.seed, run: 0 }, k) }));
    const profile = buildProfile(old, 'memory', [rec]);
    expect(profile.layers).toBeUndefined();
    const dir = tmpDir('cokv-old-profile-');
    const file = path.join(dir, 'old.json');
    writeProfileAtomic(file, profile);
    expect(readProfileValues(file, plain)).toEqual(profile.values.flat());
    // New settings name every layer explicitly: the same players, so resume and merge accept the old file.
    expect(settingsMismatch({ ...old, layers: Players.of(plain).layers as number[] }, readProfile(file))).toBeUndefined();
    expect(settingsMismatch({ ...old, layers: [1, 2] }, readProfile(file))).toMatch(/layers differs/);
    expect(Array.from({ length: 4 }, (_, i) => Players.of(plain).name(i))).toEqual(['L0H0', 'L0H1', 'L1H0', 'L1H1']);
  });
});

describe('the report labels what the KV bytes and the profile cover', () => {
  it('a kept-KV caption naming the budgeted layers; profile heatmaps on the real layer indices', () => {
    const dir = tmpDir('cokv-sliding-report-');
    const scope = kvScopeLabel(cfg);
    const run = (press: string, budget: number | null, kept: number) => ({
      dataset: 'retrieval', model: 'slide-tiny', press, budget, protocol: 'question-aware', metric: 'em', score: 50 + kept,
      keptKvBytes: kept, fullKvBytes: 1000, kvScope: scope,
    });
    for (const [name, r] of [['full', run('full', null, 1000)], ['snapkv', run('snapkv', 64, 100)]] as const) {
      fs.mkdirSync(path.join(dir, `retrieval__slide-tiny__${name}__${r.budget ?? 'full'}`), { recursive: true });
      fs.writeFileSync(path.join(dir, `retrieval__slide-tiny__${name}__${r.budget ?? 'full'}`, 'metrics.json'), JSON.stringify(r));
    }
    fs.mkdirSync(path.join(dir, 'profiles'));
    fs.writeFileSync(path.join(dir, 'profiles', 'p.json'), JSON.stringify({ shape: [2, G], layers: FULL, values: [[0.1, 0.2], [0.3, 0.4]] }));
    const warnings: string[] = [];
    const html = buildReport(dir, { warn: (m) => warnings.push(m) });
    expect(warnings).toEqual([]);
    expect(html).toContain(`kept KV counts ${scope}`);
    expect(html).toContain('2 full-attention layers (1, 3) × 2 KV heads');
    fs.writeFileSync(path.join(dir, 'profiles', 'p.json'), JSON.stringify({ shape: [2, G], layers: [3, 1], values: [[0.1, 0.2], [0.3, 0.4]] }));
    buildReport(dir, { warn: (m) => warnings.push(m) });
    expect(warnings.join(' ')).toMatch(/layers/);
  });
});

describe('byte accounting by hand', () => {
  // Layers [sliding 8, full], 2 KV heads, head_dim 8, Q8 storage: 2 × (8 + 4) = 24 bytes per entry and head.
  const E = 24;
  const make = () => {
    const cache = new RaggedKVCache(2, 2, 8, 0, 'q8', [{ kind: 'sliding', window: 8 }, { kind: 'full' }]);
    const x = Float32Array.from({ length: 8 }, (_, i) => i - 3);
    // step() appends the next position's K/V; sync() records the steps (advance) and trims the sliding layer, as the
    // forward pass does after each pass.
    let next = 0;
    const step = () => {
      for (const row of cache.heads) for (const h of row) h.append(x, 0, x, 0, next);
      next++;
    };
    const sync = () => cache.advance(next - cache.position);
    return { cache, step, sync };
  };

  it('bytes, budgeted and full bytes through a prefill, a press and decode', () => {
    const { cache, step, sync } = make();
    for (let i = 0; i < 10; i++) step();
    sync();
    // Position 10: the sliding layer keeps positions 3..9 (3 older ones dropped as one batch ≥ ⌈8/4⌉).
    expect(cache.lengths()).toEqual([[7, 7], [10, 10]]);
    expect(cache.slidingBytes()).toBe(7 * 2 * E);
    expect(cache.budgetedBytes()).toBe(10 * 2 * E);
    expect(cache.budgetedFullBytes()).toBe(10 * 2 * E);
    expect(cache.bytes()).toBe(17 * 2 * E);
    expect(cache.fullBytes()).toBe(17 * 2 * E);
    // A press keeps 4 and 6 entries of the full layer's heads: half its bytes; the sliding layer is unchanged.
    cache.head(1, 0).keep([0, 1, 8, 9]);
    cache.head(1, 1).keep([0, 2, 4, 6, 8, 9]);
    expect(cache.budgetedBytes()).toBe(10 * E);
    expect(cache.budgetedBytes() / cache.budgetedFullBytes()).toBe(0.5);
    expect(cache.bytes()).toBe((10 + 14) * E);
    expect(cache.fullBytes()).toBe(17 * 2 * E);
    // Decode: position 11 holds 3..10 (one old entry waits for a batch), position 12 drops 3, 4.
    step();
    sync();
    expect(cache.head(0, 0).length).toBe(8);
    expect(cache.fullBytes()).toBe((11 + 8) * 2 * E);
    expect(cache.budgetedFullBytes()).toBe(11 * 2 * E);
    expect(cache.budgetedBytes()).toBe(12 * E);
    step();
    sync();
    expect(Array.from(cache.head(0, 1).positions.subarray(0, cache.head(0, 1).length))).toEqual([5, 6, 7, 8, 9, 10, 11]);
    expect(cache.fullBytes()).toBe((12 + 7) * 2 * E);
    expect(cache.bytes()).toBe((14 + 14) * E);
  });

  it('without layer kinds every layer is full: fullBytes = position × layers × heads × entry', () => {
    const cache = new RaggedKVCache(3, 2, 8, 4, 'f16');
    cache.advance(5);
    expect(cache.budgetedLayers()).toEqual([0, 1, 2]);
    expect(cache.fullBytes()).toBe(5 * 3 * 2 * 32);
    expect(cache.budgetedFullBytes()).toBe(cache.fullBytes());
    expect(cache.slidingBytes()).toBe(0);
  });
});
