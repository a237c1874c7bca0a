/**
 * Press allocators (issue #3): invariants on seeded random scores and shapes, the reference-code behaviour with
 * redistribute=false, and known answers worked out by hand from the spec's formulas (docs/cokv-spec.md §3, §5).
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { apportion } from '../src/press/apportion.js';
import { uniformAllocator } from '../src/press/allocators/uniform.js';
import { pyramidAllocator, pyramidLayerBudgets } from '../src/press/allocators/pyramid.js';
import { adaAllocator, topKCounts } from '../src/press/allocators/ada.js';
import { cokvAllocation, cokvAllocator, cokvWeights } from '../src/press/allocators/cokv.js';
import { headkvAllocation, headkvAllocator } from '../src/press/allocators/headkv.js';
import { randomAllocator } from '../src/press/allocators/random.js';
import type { AllocationContext, Allocator } from '../src/press/allocators/types.js';
import { createPress, PRESS_NAMES } from '../src/press/registry.js';
import { ScoredPress } from '../src/press/press.js';
import { Rng } from '../src/generate/rng.js';
import { tinyConfig } from './random-model.js';
import { compressRandomCache, keptPositions } from './press-helpers.js';
import { tmpDir } from './helpers.js';

const sum = (a: ArrayLike<number>) => Array.from(a).reduce((x, y) => x + y, 0);

/** Seeded random pooled scores, one array of length promptLength − window per KV head. */
function randomScores(rng: Rng, numKvHeads: number, n: number): Float32Array[] {
  return Array.from({ length: numKvHeads }, () => Float32Array.from({ length: n }, () => rng.next()));
}

interface Shape { numLayers: number; numKvHeads: number; promptLength: number; window: number; budget: number }

/** Run an allocator over every layer of a model shape, as ScoredPress would; returns [layer][kvHead] counts. */
function allocateAll(alloc: Allocator, s: Shape, rng: Rng, redistribute = true): number[][] {
  const out: number[][] = [];
  for (let layer = 0; layer < s.numLayers; layer++) {
    const ctx: AllocationContext = {
      layer, numLayers: s.numLayers, numKvHeads: s.numKvHeads, promptLength: s.promptLength, window: s.window,
      budget: s.budget, scores: randomScores(rng, s.numKvHeads, s.promptLength - s.window), redistribute,
    };
    out.push(alloc.allocate(ctx));
  }
  return out;
}

/** Seeded random shapes: layers 1–6, kvHeads 1–8, prompts shorter / barely longer / much longer than the budget. */
function randomShapes(seed: number, count: number): Shape[] {
  const rng = new Rng(seed);
  const shapes: Shape[] = [];
  for (let i = 0; i < count; i++) {
    const window = 1 + rng.int(8);
    const budget = window + 1 + rng.int(40);
    const kind = i % 3;
    const promptLength = kind === 0 ? window + 1 + rng.int(budget - window) // ≤ budget (no compression)
      : kind === 1 ? budget + 1 + rng.int(3) // barely longer
        : budget * (2 + rng.int(8)) + rng.int(5); // much longer
    shapes.push({ numLayers: 1 + rng.int(6), numKvHeads: 1 + rng.int(8), promptLength, window, budget });
  }
  return shapes;
}

function expectValidCounts(counts: number[][], s: Shape): void {
  expect(counts.length).toBe(s.numLayers);
  for (const row of counts) {
    expect(row.length).toBe(s.numKvHeads);
    for (const c of row) {
      expect(Number.isInteger(c)).toBe(true);
      expect(c).toBeGreaterThanOrEqual(0);
      expect(c).toBeLessThanOrEqual(s.promptLength - s.window); // no head exceeds its prompt
    }
  }
}

const staticValues = (rng: Rng, n: number) => Array.from({ length: n }, () => rng.next() * 2 - 0.5);

/** Every allocator the registry can build, as factories over the model shape (static ones need values). */
function allocatorsFor(s: Shape, rng: Rng): [string, Allocator][] {
  const n = s.numLayers * s.numKvHeads;
  const values = staticValues(rng, n);
  const alpha = Math.min(n - 1, rng.int(4));
  const qPerKv = 1 + rng.int(3);
  const hk = Array.from({ length: s.numLayers }, () => Array.from({ length: s.numKvHeads * qPerKv }, () => rng.next()));
  return [
    ['uniform', uniformAllocator()],
    ['pyramid(uniform)', pyramidAllocator(uniformAllocator(), 20)],
    ['ada', adaAllocator(0.2)],
    ['pyramid(ada)', pyramidAllocator(adaAllocator(0.2), 20)],
    ['cokv', cokvAllocator(values, alpha)],
    ['headkv', headkvAllocator(hk, 1.01)],
    ['random', randomAllocator(7)],
  ];
}

describe('allocator invariants (redistribute = true)', () => {
  const shapes = randomShapes(2024, 60);
  it('totals are exact, counts stay within [0, L − w], every shape', () => {
    const rng = new Rng(99);
    for (const s of shapes) {
      if (s.promptLength <= s.budget) continue; // ScoredPress never calls the allocator then (covered below)
      for (const [name, alloc] of allocatorsFor(s, rng)) {
        const counts = allocateAll(alloc, s, rng);
        expectValidCounts(counts, s);
        const kept = sum(counts.flat()) + s.window * s.numLayers * s.numKvHeads;
        // selected + window over all heads = numHeads · budget exactly
        expect(kept, `${name} ${JSON.stringify(s)}`).toBe(s.numLayers * s.numKvHeads * s.budget);
      }
    }
  });

  it('per-layer allocators spend exactly numKvHeads·(B − w) in every layer (uniform, ada)', () => {
    const rng = new Rng(5);
    for (const s of shapes) {
      if (s.promptLength <= s.budget) continue;
      for (const alloc of [uniformAllocator(), adaAllocator(0.2), adaAllocator(0)]) {
        for (const row of allocateAll(alloc, s, rng)) expect(sum(row)).toBe(s.numKvHeads * (s.budget - s.window));
      }
    }
  });

  it('pyramid layers: non-increasing budgets with depth, each layer spread over its heads exactly', () => {
    const rng = new Rng(6);
    for (const s of shapes) {
      if (s.promptLength <= s.budget) continue;
      const layers = pyramidLayerBudgets(s.numLayers, s.budget - s.window, s.promptLength - s.window, 20, true);
      expect(sum(layers)).toBe(s.numLayers * (s.budget - s.window));
      for (let l = 1; l < layers.length; l++) expect(layers[l]).toBeLessThanOrEqual(layers[l - 1] + 1);
      const uni = allocateAll(pyramidAllocator(uniformAllocator()), s, rng);
      const ada = allocateAll(pyramidAllocator(adaAllocator()), s, rng);
      uni.forEach((row, l) => expect(row).toEqual(new Array(s.numKvHeads).fill(layers[l])));
      ada.forEach((row, l) => expect(sum(row)).toBe(s.numKvHeads * layers[l]));
    }
  });

  it('CoKV: the α lowest-valued heads get only the window while the others can hold the budget', () => {
    const rng = new Rng(7);
    let checkedZero = 0, checkedFull = 0;
    for (const s of shapes) {
      if (s.promptLength <= s.budget) continue;
      const n = s.numLayers * s.numKvHeads;
      if (n < 2) continue;
      const values = staticValues(rng, n);
      const alpha = 1 + rng.int(n - 1);
      const counts = allocateAll(cokvAllocator(values, alpha), s, rng).flat();
      const order = values.map((v, i) => ({ v, i })).sort((a, b) => a.v - b.v).map((x) => x.i);
      const low = order.slice(0, alpha), high = order.slice(alpha);
      const cap = s.promptLength - s.window, total = n * (s.budget - s.window);
      if (high.length * cap >= total) {
        for (const i of low) expect(counts[i]).toBe(0);
        checkedZero++;
      } else {
        // The others are full; only the rest spills to the α heads (never wasted while a head can hold it).
        for (const i of high) expect(counts[i]).toBe(cap);
        expect(sum(low.map((i) => counts[i]))).toBe(total - high.length * cap);
        checkedFull++;
      }
    }
    expect(checkedZero).toBeGreaterThan(5);
    expect(checkedFull).toBeGreaterThan(0);
  });

  it('random allocator is deterministic for a seed and differs across seeds', () => {
    const s: Shape = { numLayers: 4, numKvHeads: 4, promptLength: 200, window: 8, budget: 40 };
    const a = allocateAll(randomAllocator(1), s, new Rng(1));
    expect(allocateAll(randomAllocator(1), s, new Rng(2))).toEqual(a);
    expect(allocateAll(randomAllocator(2), s, new Rng(1))).not.toEqual(a);
  });
});

describe('allocator behaviour with redistribute = false (reference code)', () => {
  const shapes = randomShapes(77, 60).filter((s) => s.promptLength > s.budget);

  it('uniform keeps min(B − w, L − w) per head; CoKV truncates then caps at L − w', () => {
    const rng = new Rng(8);
    for (const s of shapes) {
      const uni = allocateAll(uniformAllocator(), s, rng, false);
      expect(uni.flat().every((c) => c === Math.min(s.budget - s.window, s.promptLength - s.window))).toBe(true);
      const n = s.numLayers * s.numKvHeads;
      const values = staticValues(rng, n);
      const alpha = rng.int(Math.min(n, 4));
      const got = allocateAll(cokvAllocator(values, alpha), s, rng, false).flat();
      const w = cokvWeights(values, alpha);
      const wsum = sum(w), total = n * (s.budget - s.window);
      const want = w.map((x) => Math.min(s.promptLength - s.window, wsum > 0 ? Math.trunc((x / wsum) * total) : s.budget - s.window));
      expect(got).toEqual(want);
      expect(sum(got)).toBeLessThanOrEqual(total);
      if (wsum > 0 && want.every((c) => c < s.promptLength - s.window)) expect(sum(got)).toBeGreaterThan(total - n);
    }
  });

  it('pyramid uses integer steps max − l·⌊(max − min)/(layers − 1)⌋', () => {
    const rng = new Rng(9);
    for (const s of shapes) {
      const base = s.budget - s.window, cap = s.promptLength - s.window;
      let min = Math.floor(base / 20), max = 2 * base - min;
      if (max >= cap) { max = cap; min = 2 * base - max; }
      const steps = s.numLayers > 1 ? Math.floor((max - min) / (s.numLayers - 1)) : 0;
      const want = s.numLayers === 1 ? [Math.min(base, cap)] : Array.from({ length: s.numLayers }, (_, l) => max - l * steps);
      expect(pyramidLayerBudgets(s.numLayers, base, cap, 20, false)).toEqual(want);
      allocateAll(pyramidAllocator(uniformAllocator()), s, rng, false)
        .forEach((row, l) => expect(row).toEqual(new Array(s.numKvHeads).fill(Math.min(want[l], cap))));
    }
  });

  it('Ada rounds each head independently: min(L − w, round((1 − α)·count + ⌊α·(B − w)⌋))', () => {
    const rng = new Rng(10);
    for (const s of shapes) {
      const base = s.budget - s.window, cap = s.promptLength - s.window;
      const scores = randomScores(rng, s.numKvHeads, cap);
      const counts = topKCounts(scores, s.numKvHeads * base);
      const got = adaAllocator(0.2).allocate({
        layer: 0, numLayers: s.numLayers, numKvHeads: s.numKvHeads, promptLength: s.promptLength, window: s.window,
        budget: s.budget, scores, redistribute: false,
      });
      expect(got).toEqual(counts.map((c) => Math.min(cap, Math.round(0.8 * c + Math.floor(0.2 * base)))));
      expectValidCounts([got], { ...s, numLayers: 1 });
    }
  });

  it('HeadKV floors each group mean and caps it at L − w', () => {
    const rng = new Rng(11);
    for (const s of shapes) {
      const hk = Array.from({ length: s.numLayers }, () => Array.from({ length: s.numKvHeads * 2 }, () => rng.next()));
      const exact = headkvAllocation(hk, s.numKvHeads, s.budget - s.window, Infinity, 1.01, false).flat();
      const got = allocateAll(headkvAllocator(hk, 1.01), s, rng, false).flat();
      expect(got).toEqual(exact.map((c) => Math.min(c, s.promptLength - s.window)));
      expect(sum(exact)).toBeLessThanOrEqual(s.numLayers * s.numKvHeads * (s.budget - s.window));
    }
  });
});

describe('invariants through createPress, every press name', () => {
  const dir = tmpDir('cokv-press-alloc-');

  /** `name` built with random profile and head-score files, then compressing a random cache (the generator goes on). */
  function runPress(name: string, s: Shape & { group: number }, rng: Rng, redistribute: boolean) {
    const cfg = tinyConfig({ numLayers: s.numLayers, numKvHeads: s.numKvHeads, numHeads: s.numKvHeads * s.group, headDim: 4 });
    const n = s.numLayers * s.numKvHeads;
    const profile = path.join(dir, `profile-${n}-${s.numLayers}.json`);
    fs.writeFileSync(profile, JSON.stringify({
      shape: [s.numLayers, s.numKvHeads],
      scores: Array.from({ length: s.numLayers }, () => Array.from({ length: s.numKvHeads }, () => rng.next())),
    }));
    const headScores = path.join(dir, `head-${n}-${s.numLayers}.json`);
    fs.writeFileSync(headScores, JSON.stringify({
      scores: Array.from({ length: s.numLayers }, () => Array.from({ length: cfg.numHeads }, () => rng.next())),
    }));
    const alpha = rng.int(Math.min(n, 3));
    const press = createPress(name, { budget: s.budget, window: s.window, profile, headScores, alpha, redistribute }, cfg);
    const cache = compressRandomCache(press, cfg, s.promptLength, rng);
    return { press, cache, alpha };
  }

  it('kept = numHeads·budget (or the whole prompt), windows kept, no head over its prompt', () => {
    const rng = new Rng(31337);
    for (const s of randomShapes(4242, 24)) {
      const shape = { ...s, group: 1 + rng.int(3) };
      for (const name of PRESS_NAMES) {
        const { press, cache } = runPress(name, shape, rng, true);
        const L = s.promptLength, n = s.numLayers * s.numKvHeads;
        const lens = cache.lengths().flat();
        if (name === 'full' || L <= s.budget) {
          expect(lens.every((x) => x === L)).toBe(true);
        } else {
          expect(sum(lens), `${name} ${JSON.stringify(s)}`).toBe(n * s.budget);
        }
        for (const pos of keptPositions(cache).flat()) {
          expect(pos.length).toBeLessThanOrEqual(L);
          for (let j = L - s.window; j < L; j++) expect(pos).toContain(j); // every head keeps its window
          for (let j = 1; j < pos.length; j++) expect(pos[j]).toBeGreaterThan(pos[j - 1]); // ascending, unique
        }
        if (press instanceof ScoredPress && L > s.budget) {
          const alloc = press.lastAllocation;
          cache.heads.forEach((row, l) => row.forEach((h, g) => expect(h.length).toBe(Math.min(alloc[l][g], L - s.window) + s.window)));
        }
        expect(cache.bytes()).toBe(sum(lens) * cache.headDim * 2 * 4);
      }
    }
  });

  it('cokv through createPress: the α lowest heads keep exactly the window when the prompt is long', () => {
    const rng = new Rng(4);
    for (let trial = 0; trial < 10; trial++) {
      const s = { numLayers: 1 + rng.int(6), numKvHeads: 1 + rng.int(8), promptLength: 120, window: 4, budget: 12, group: 2 };
      const { press, cache, alpha } = runPress('cokv', s, rng, true);
      const values = JSON.parse(fs.readFileSync(path.join(dir, `profile-${s.numLayers * s.numKvHeads}-${s.numLayers}.json`), 'utf8')).scores.flat() as number[];
      const lens = cache.lengths().flat();
      const low = values.map((v, i) => ({ v, i })).sort((a, b) => a.v - b.v).slice(0, alpha);
      for (const { i } of low) expect(lens[i]).toBe(s.window);
      expect(press).toBeInstanceOf(ScoredPress);
    }
  });

  it('redistribute = false: truncating presses never exceed numHeads·budget', () => {
    const rng = new Rng(12);
    for (const s of randomShapes(555, 18).filter((x) => x.promptLength > x.budget)) {
      for (const name of ['snapkv', 'streaming', 'adakv', 'cokv', 'headkv'] as const) {
        const { cache } = runPress(name, { ...s, group: 2 }, rng, false);
        const lens = cache.lengths().flat();
        const n = s.numLayers * s.numKvHeads;
        // Ada's per-head round() may overshoot by up to ½ token per head; the others only truncate.
        expect(sum(lens)).toBeLessThanOrEqual(n * s.budget + (name === 'adakv' ? n / 2 : 0));
        expect(lens.every((x) => x >= s.window && x <= s.promptLength)).toBe(true);
      }
    }
  });
});

describe('known answers (hand-computed from spec §3/§5)', () => {
  // CoKV, 2 layers × 4 KV heads, α = 2, B = 20, w = 4:
  //   values  = [0.5, 3.0, 1.0, 2.0, 0.2, 4.0, 1.5, 2.5]; sorted 0.2, 0.5, … → border (α-th smallest) = 0.5
  //   weights = max(v − 0.5, 0) = [0, 2.5, 0.5, 1.5, 0, 3.5, 1.0, 2.0], Σ = 11
  //   base = B − w = 16, total = 16·8 = 128; exact shares = weight·128/11
  //     = [0, 29.09, 5.818, 17.45, 0, 40.73, 11.64, 23.27]
  //   floors [0, 29, 5, 17, 0, 40, 11, 23] sum 125; 3 left to the largest remainders .818 (h2), .727 (h5), .636 (h6)
  //   → [0, 29, 6, 17, 0, 41, 12, 23] (sum 128)
  const values = [0.5, 3.0, 1.0, 2.0, 0.2, 4.0, 1.5, 2.5];

  it('CoKV, long prompt: largest remainders', () => {
    expect(cokvWeights(values, 2)).toEqual([0, 2.5, 0.5, 1.5, 0, 3.5, 1.0, 2.0]);
    expect(cokvAllocation(values, 2, 2, 4, 16, 96, true)).toEqual([[0, 29, 6, 17], [0, 41, 12, 23]]);
    // Reference: int(share·total) = the floors, sum 125 (3 tokens lost).
    expect(cokvAllocation(values, 2, 2, 4, 16, 96, false)).toEqual([[0, 29, 5, 17], [0, 40, 11, 23]]);
    // Through the allocator (layer rows) with L = 100 (cap 96).
    const alloc = cokvAllocator(values, 2);
    const ctx = (layer: number): AllocationContext => ({
      layer, numLayers: 2, numKvHeads: 4, promptLength: 100, window: 4, budget: 20, scores: [], redistribute: true,
    });
    expect(alloc.allocate(ctx(1))).toEqual([0, 41, 12, 23]);
    expect(alloc.allocate(ctx(0))).toEqual([0, 29, 6, 17]);
  });

  it('CoKV, L = 30 (cap 26): water-filling vs the reference min(c, L − w)', () => {
    // Round 1: 29.09 (h1) and 40.73 (h5) exceed 26 → fixed at 26; 128 − 52 = 76 left for weights {.5,1.5,0,1,2} (Σ 5).
    // Round 2: h7 gets 2/5·76 = 30.4 > 26 → fixed at 26; 50 left for {.5, 1.5, 1} (Σ 3).
    // Round 3: h2 = 50/6 = 8.33, h3 = 25, h6 = 16.67 → floors 8, 25, 16 (49); the 1 left goes to h6 (.67).
    // → [0, 26, 8, 25, 0, 26, 17, 26], sum 128.
    expect(cokvAllocation(values, 2, 2, 4, 16, 26, true)).toEqual([[0, 26, 8, 25], [0, 26, 17, 26]]);
    // Reference: truncated shares [0, 29, 5, 17, 0, 40, 11, 23] capped at 26 → 13 + 14 tokens wasted.
    expect(cokvAllocation(values, 2, 2, 4, 16, 26, false)).toEqual([[0, 26, 5, 17], [0, 26, 11, 23]]);
  });

  it('CoKV, L = 22 (cap 18): the positive heads fill up, the rest spills to the α heads equally', () => {
    // h1, h5, h7 exceed 18 → 18 each (74 left); then h3 (37) and h6 (24.7) exceed → 18 each (38 left);
    // then h2 (38) → 18 (20 left); only zero-weight heads h0, h4 remain → 10 each. Sum = 6·18 + 20 = 128.
    expect(cokvAllocation(values, 2, 2, 4, 16, 18, true)).toEqual([[10, 18, 18, 18], [10, 18, 18, 18]]);
  });

  it('CoKV α edge cases: α = 0 only clamps negatives; ties with the border value also get 0', () => {
    expect(cokvWeights([-1, 0, 2, 3], 0)).toEqual([0, 0, 2, 3]);
    // α = 1 → border = 1; both 1's become 0.
    expect(cokvWeights([1, 1, 4, 2], 1)).toEqual([0, 0, 3, 1]);
    // weights [0,0,3,1], total 2·4 = 8 → 6, 2.
    expect(cokvAllocation([1, 1, 4, 2], 1, 1, 4, 2, 100, true)).toEqual([[0, 0, 6, 2]]);
  });

  it('Ada: global top-k counts, floor mix, exact total vs per-head rounding', () => {
    // One layer, 2 KV heads, B = 7, w = 3 → base 4, k = 2·4 = 8; L = 10 → 7 scores per head.
    const scores = [
      Float32Array.from([0.9, 0.8, 0.7, 0.6, 0.5, 0.05, 0.04]),
      Float32Array.from([0.65, 0.1, 0.09, 0.08, 0.07, 0.06, 0.03]),
    ];
    // Top 8 of all 14: .9 .8 .7 (h0) .65 (h1) .6 .5 (h0) .1 .09 (h1) → counts [5, 3].
    expect(topKCounts(scores, 8)).toEqual([5, 3]);
    const ctx: AllocationContext = { layer: 0, numLayers: 1, numKvHeads: 2, promptLength: 10, window: 3, budget: 7, scores, redistribute: true };
    // Exact: weights 0.8·5 + 0.2·4 = 4.8 and 0.8·3 + 0.8 = 3.2 (Σ 8 = total) → floors 4, 3, the 1 left to h0 (.8).
    expect(adaAllocator(0.2).allocate(ctx)).toEqual([5, 3]);
    // Reference: round(0.8·5 + ⌊0.8⌋) = round(4) = 4, round(2.4 + 0) = 2 → [4, 2] (2 tokens lost).
    expect(adaAllocator(0.2).allocate({ ...ctx, redistribute: false })).toEqual([4, 2]);
    // floor 1 → every head gets exactly base; floor 0 → the raw counts.
    expect(adaAllocator(1).allocate(ctx)).toEqual([4, 4]);
    expect(adaAllocator(0).allocate(ctx)).toEqual([5, 3]);
  });

  it('Ada reference mode rounds half to even, as torch.round (α = 0.5)', () => {
    // 3 heads, B = 13, w = 3 → base 10, k = 30, L = 23 → 20 scores per head; head h has n[h] high scores.
    const high = [15, 5, 10];
    const scores = high.map((n, h) => Float32Array.from({ length: 20 }, (_, i) => (i < n ? 1 - 0.01 * i - 0.001 * h : 0.001 * (20 - i))));
    expect(topKCounts(scores, 30)).toEqual([15, 5, 10]);
    const ctx: AllocationContext = { layer: 0, numLayers: 1, numKvHeads: 3, promptLength: 23, window: 3, budget: 13, scores, redistribute: false };
    // 0.5·c + ⌊0.5·10⌋ = 12.5, 7.5, 10 → ties to even: 12, 8, 10 (half up would give 13, 8, 10).
    expect(adaAllocator(0.5).allocate(ctx)).toEqual([12, 8, 10]);
  });

  it('Ada: ties in the global top-k go to the lower head, then the lower position', () => {
    const flat = [Float32Array.from([1, 1, 0]), Float32Array.from([1, 1, 0])];
    expect(topKCounts(flat, 3)).toEqual([2, 1]);
    expect(topKCounts(flat, 1)).toEqual([1, 0]);
    expect(topKCounts(flat, 10)).toEqual([3, 3]);
  });

  it('Ada with caps: a head cannot get more than L − w', () => {
    // 3 heads, B = 13, w = 3 → base 10, k = 30, L = 23 → 20 scores, cap 20.
    // head0 scores all above head1's, head2 lowest → counts [20, 10, 0].
    const mk = (hi: number, step: number) => Float32Array.from({ length: 20 }, (_, i) => hi - step * i);
    const scores = [mk(1, 0.01), mk(0.5, 0.01), mk(0.05, 0.001)];
    expect(topKCounts(scores, 30)).toEqual([20, 10, 0]);
    // floor 0.5 → weights 0.5·c + 5 = [15, 10, 5] (Σ 30) → [15, 10, 5]; reference round(0.5·c + 5) the same.
    const ctx: AllocationContext = { layer: 0, numLayers: 1, numKvHeads: 3, promptLength: 23, window: 3, budget: 13, scores, redistribute: true };
    expect(adaAllocator(0.5).allocate(ctx)).toEqual([15, 10, 5]);
    expect(adaAllocator(0.5).allocate({ ...ctx, redistribute: false })).toEqual([15, 10, 5]);
    // floor 0 with L = 21 (cap 18, 18 scores): counts [18, 12, 0] → head0 capped at 18, rest 12 to head1.
    const short = scores.map((s) => s.slice(0, 18));
    expect(topKCounts(short, 30)).toEqual([18, 12, 0]);
    expect(adaAllocator(0).allocate({ ...ctx, promptLength: 21, scores: short })).toEqual([18, 12, 0]);
  });

  it('PyramidKV layer budgets, 4 layers, base 40, β 20', () => {
    // min = ⌊40/20⌋ = 2, max = 2·40 − 2 = 78. Reference step ⌊(78 − 2)/3⌋ = 25 → [78, 53, 28, 3] (Σ 162 ≠ 160).
    expect(pyramidLayerBudgets(4, 40, 1000, 20, false)).toEqual([78, 53, 28, 3]);
    // Exact ramp 78 − l·76/3 = [78, 52.67, 27.33, 2] (Σ 160) → floors 78, 52, 27, 2 (159) + 1 to layer 1 (.67).
    expect(pyramidLayerBudgets(4, 40, 1000, 20, true)).toEqual([78, 53, 27, 2]);
  });

  it('PyramidKV clamp branch: max ≥ L − w', () => {
    // L − w = 60 ≤ 78 → max = 60, min = 2·40 − 60 = 20. Reference step ⌊40/3⌋ = 13 → [60, 47, 34, 21] (Σ 162).
    expect(pyramidLayerBudgets(4, 40, 60, 20, false)).toEqual([60, 47, 34, 21]);
    // Exact ramp [60, 46.67, 33.33, 20] (Σ 160) → [60, 47, 33, 20].
    expect(pyramidLayerBudgets(4, 40, 60, 20, true)).toEqual([60, 47, 33, 20]);
    // Through the allocator: B = 48, w = 8, L = 68; pyramid(uniform) gives every head its layer's budget.
    const alloc = pyramidAllocator(uniformAllocator(), 20);
    const rows = [0, 1, 2, 3].map((layer) => alloc.allocate({
      layer, numLayers: 4, numKvHeads: 2, promptLength: 68, window: 8, budget: 48, scores: [], redistribute: false,
    }));
    expect(rows).toEqual([[60, 60], [47, 47], [34, 34], [21, 21]]);
  });

  it('PyramidKV: the spec example (B = 128, w = 8, 32 layers) runs 234 … 17, Σ 4016', () => {
    // base 120, min = 6, max = 234, step ⌊228/31⌋ = 7; last = 234 − 31·7 = 17; Σ = 32·234 − 7·496 = 4016.
    const ref = pyramidLayerBudgets(32, 120, 7992, 20, false);
    expect(ref[0]).toBe(234);
    expect(ref[31]).toBe(17);
    expect(sum(ref)).toBe(4016);
    expect(sum(pyramidLayerBudgets(32, 120, 7992, 20, true))).toBe(32 * 120);
    expect(pyramidLayerBudgets(1, 120, 50, 20, true)).toEqual([50]);
  });

  it('HeadKV-R2, 2 layers × 4 query heads, 2 KV heads', () => {
    // B = 28, w = 8 → base 20; β = 1.01 → ⌊20/1.01⌋ = ⌊19.80⌋ = 19; pool = 19·2·4 = 152; floor part 20 − 19 = 1.
    // scores [[1, 3, 0, 4], [2, 6, 1, 3]], Σ = 20 → s = [[.05, .15, 0, .2], [.1, .3, .05, .15]]
    // cap_q = 152·s + 1 = [[8.6, 23.8, 1, 31.4], [16.2, 46.6, 8.6, 23.8]]
    // group means: L0 (8.6 + 23.8)/2 = 16.2, (1 + 31.4)/2 = 16.2; L1 (16.2 + 46.6)/2 = 31.4, (8.6 + 23.8)/2 = 16.2
    // Σ = 80 = 4·20. Reference floors: [[16, 16], [31, 16]] (Σ 79); exact: the 1 left goes to 31.4 (.4 > .2).
    const table = [[1, 3, 0, 4], [2, 6, 1, 3]];
    expect(headkvAllocation(table, 2, 20, 1000, 1.01, false)).toEqual([[16, 16], [31, 16]]);
    expect(headkvAllocation(table, 2, 20, 1000, 1.01, true)).toEqual([[16, 16], [32, 16]]);
    // Cap 25 (L = 33): reference min(31, 25) = 25; exact: 25 for L1g0, the other 55 over three equal weights.
    expect(headkvAllocation(table, 2, 20, 25, 1.01, false)).toEqual([[16, 16], [25, 16]]);
    const capped = headkvAllocation(table, 2, 20, 25, 1.01, true).flat();
    expect(capped[2]).toBe(25);
    expect(sum(capped)).toBe(80);
    expect([capped[0], capped[1], capped[3]].sort()).toEqual([18, 18, 19]);
    // Scores given per KV head are the group means directly: [[1, 1], [1, 3]] Σ 6 → pool 19·2·2 = 76,
    // caps 76/6 + 1 = 13.67 (×3) and 3·76/6 + 1 = 39 → Σ 80; floors [13, 13, 13, 39] = 78 → +1 to the first two.
    expect(headkvAllocation([[1, 1], [1, 3]], 2, 20, 1000, 1.01, false)).toEqual([[13, 13], [13, 39]]);
    expect(headkvAllocation([[1, 1], [1, 3]], 2, 20, 1000, 1.01, true)).toEqual([[14, 14], [13, 39]]);
  });
});

describe('apportion', () => {
  it('largest remainders, ties → larger weight, then lower index', () => {
    // 10/3 = 3.33 each → floors 9, the 1 left to index 0 (all ties).
    expect(apportion([1, 1, 1], 10)).toEqual([4, 3, 3]);
    // 7·[.5, .3, .2] = [3.5, 2.1, 1.4] → [3, 2, 1] + 1 to index 0 (.5).
    expect(apportion([5, 3, 2], 7)).toEqual([4, 2, 1]);
    // [1.33, 2.67] → [1, 2] + 1 to index 1 (.67).
    expect(apportion([1, 2], 4)).toEqual([1, 3]);
    // [0.5, 1.5] → remainders tie at .5 → larger weight (index 1) → [0, 2].
    expect(apportion([1, 3], 2)).toEqual([0, 2]);
    expect(apportion([2, 2, 1, 1], 0)).toEqual([0, 0, 0, 0]);
    expect(apportion([], 5)).toEqual([]);
  });

  it('negative weights count as 0; all-zero weights share equally', () => {
    expect(apportion([-5, 1, 1], 4)).toEqual([0, 2, 2]);
    // 5/3 each → [1, 1, 1] + 2 to indices 0, 1.
    expect(apportion([0, 0, 0], 5)).toEqual([2, 2, 1]);
  });

  it('caps: water-filling, and the total is clipped to the sum of caps', () => {
    // 12·10/12 = 10 > cap 4 → 4; the other 8 split 4/4.
    expect(apportion([10, 1, 1], 12, [4, 10, 10])).toEqual([4, 4, 4]);
    expect(apportion([1, 1], 100, [3, 5])).toEqual([3, 5]);
    // Index 0 takes 3 (cap), the zero-weight heads share the remaining 6.
    expect(apportion([1, 0, 0], 9, [3, 10, 10])).toEqual([3, 3, 3]);
    // A cap of 0 (or fractional caps, floored) is respected.
    expect(apportion([1, 1, 1], 6, [0, 2.9, 10])).toEqual([0, 2, 4]);
  });

  it('random fuzz: exact sums, caps respected, within 1 of the proportional share when uncapped', () => {
    const rng = new Rng(3);
    for (let t = 0; t < 500; t++) {
      const n = 1 + rng.int(12);
      const weights = Array.from({ length: n }, () => (rng.next() < 0.2 ? 0 : rng.next() * 10));
      const total = rng.int(300);
      const caps = rng.next() < 0.5 ? Array.from({ length: n }, () => rng.int(60)) : undefined;
      const out = apportion(weights, total, caps);
      expect(out.every((x) => Number.isInteger(x) && x >= 0)).toBe(true);
      const capSum = caps ? sum(caps) : Infinity;
      expect(sum(out)).toBe(Math.min(total, capSum));
      if (caps) out.forEach((x, i) => expect(x).toBeLessThanOrEqual(caps[i]));
      const wsum = sum(weights);
      if (!caps && wsum > 0) out.forEach((x, i) => expect(Math.abs(x - (weights[i] / wsum) * total)).toBeLessThan(1));
      if (caps && wsum > 0) {
        // A zero-weight head gets tokens only once every positive-weight head is at its cap.
        const zeroGot = out.some((x, i) => weights[i] === 0 && x > 0);
        if (zeroGot) weights.forEach((w, i) => { if (w > 0) expect(out[i]).toBe(caps[i]); });
      }
    }
  });
});
