/**
 * SnapKV scoring (spec §4) on hand-built attention examples whose softmax is computed by hand, pooling, top-k
 * selection with ties, and the StreamingLLM scorer.
 */
import { describe, expect, it } from 'vitest';
import { RaggedKVCache } from '../src/cache/ragged.js';
import type { LayerPrefillContext } from '../src/model/forward.js';
import { pool1d, snapkvScores, streamingScores, type SnapKvScoreOptions } from '../src/press/scorers/snapkv.js';
import { ScoredPress, topIndices } from '../src/press/press.js';
import { uniformAllocator } from '../src/press/allocators/uniform.js';
import { createPress } from '../src/press/registry.js';
import { resolveBudget } from '../src/press/options.js';
import { tinyConfig } from './random-model.js';

/**
 * A one-layer prefill context built by hand. `keys[g][t]` = key of KV head g at position t (head_dim = its length);
 * `query(t, qh)` = query vector of query head qh at row t (only the last `window` rows are read by the scorer).
 */
function handCtx(keys: number[][][], numHeads: number, query: (t: number, qh: number) => number[]): LayerPrefillContext {
  const nkv = keys.length, L = keys[0].length, hd = keys[0][0].length;
  const cache = new RaggedKVCache(1, nkv, hd);
  keys.forEach((seq, g) => seq.forEach((k, t) => {
    const kv = Float32Array.from(k);
    cache.head(0, g).append(kv, 0, kv, 0, t);
  }));
  cache.advance(L);
  const queries = new Float32Array(L * numHeads * hd);
  for (let t = 0; t < L; t++) for (let qh = 0; qh < numHeads; qh++) queries.set(query(t, qh), (t * numHeads + qh) * hd);
  return { layer: 0, queries, numTokens: L, startPosition: 0, cache };
}

const opts = (o: Partial<SnapKvScoreOptions> = {}): SnapKvScoreOptions => ({ window: 2, pool: 'none', kernel: 1, groupAggregation: 'mean', ...o });
const zeros = (n: number) => Array.from({ length: n }, () => [0, 0]);
/** Keys (0, 0) everywhere except (1, 0) at `hot`. */
const spikeKeys = (L: number, hot: number) => zeros(L).map((k, t) => (t === hot ? [1, 0] : k));

function expectClose(got: ArrayLike<number>, want: number[], digits = 6): void {
  expect(got.length).toBe(want.length);
  want.forEach((v, i) => expect(got[i]).toBeCloseTo(v, digits));
}

describe('snapkvScores by hand', () => {
  // head_dim 2, L = 5, w = 2. Key 1 = (1, 0), all other keys = 0; window queries q = (√2·ln 6, 0), so the scaled
  // logit q·k/√2 is ln 6 for key 1 and 0 for the others → unnormalised weights 6 for key 1, 1 for the rest.
  //   query at position 3 sees keys 0..3 (causal): Z = 1 + 6 + 1 + 1 = 9  → p = [1/9, 6/9, 1/9, 1/9]
  //   query at position 4 sees keys 0..4:          Z = 1 + 6 + 1 + 1 + 1 = 10 → p = [.1, .6, .1, .1, .1]
  //   mean over the 2 window queries of columns [0, L − w) = [0, 3):
  //     key 0, 2: (1/9 + 1/10)/2 = 19/180;  key 1: (2/3 + 3/5)/2 = 19/30
  // (Without the causal mask, query 3 would also see key 4 and key 0 would score exactly 0.1.)
  const a = Math.SQRT2 * Math.log(6);
  const hot = (t: number) => (t >= 3 ? [a, 0] : [0, 0]);

  it('softmax over visible keys, mean over window queries, causal mask in the window', () => {
    const ctx = handCtx([spikeKeys(5, 1)], 1, hot);
    const [s] = snapkvScores(ctx, opts());
    expectClose(s, [19 / 180, 19 / 30, 19 / 180]);
  });

  // Two query heads share the KV head: head 0 as above, head 1 has q = 0 → uniform attention:
  //   position 3: 1/4 each; position 4: 1/5 each → mean (1/4 + 1/5)/2 = 9/40 for every key.
  it('GQA aggregation: mean vs max over the query heads of a group', () => {
    const ctx = handCtx([spikeKeys(5, 1)], 2, (t, qh) => (qh === 0 ? hot(t) : [0, 0]));
    const [mean] = snapkvScores(ctx, opts());
    expectClose(mean, [(19 / 180 + 9 / 40) / 2, (19 / 30 + 9 / 40) / 2, (19 / 180 + 9 / 40) / 2]);
    const [max] = snapkvScores(ctx, opts({ groupAggregation: 'max' }));
    expectClose(max, [9 / 40, 19 / 30, 9 / 40]);
  });

  it('query head h belongs to KV head ⌊h / group⌋ and each KV head scores its own keys', () => {
    // 2 KV heads × 2 query heads: KV head 0 has its hot key at 1 and query heads 0, 1 both hot;
    // KV head 1 has its hot key at 2 and query heads 2, 3: head 2 hot, head 3 uniform.
    const ctx = handCtx([spikeKeys(5, 1), spikeKeys(5, 2)], 4, (t, qh) => (qh === 3 ? [0, 0] : hot(t)));
    const [s0, s1] = snapkvScores(ctx, opts());
    expectClose(s0, [19 / 180, 19 / 30, 19 / 180]);
    expectClose(s1, [(19 / 180 + 9 / 40) / 2, (19 / 180 + 9 / 40) / 2, (19 / 30 + 9 / 40) / 2]);
  });

  it('reads only this chunk\'s rows when the queries buffer is a larger reused scratch buffer (numHeads given)', () => {
    const ctx = handCtx([spikeKeys(5, 1)], 2, (t, qh) => (qh === 0 ? hot(t) : [0, 0]));
    const padded = new Float32Array(ctx.queries.length * 2).fill(7); // stale rows of an earlier, longer call
    padded.set(ctx.queries);
    const [s] = snapkvScores({ ...ctx, queries: padded }, opts({ numHeads: 2 }));
    expectClose(s, [(19 / 180 + 9 / 40) / 2, (19 / 30 + 9 / 40) / 2, (19 / 180 + 9 / 40) / 2]);
    // A head count that does not fit the KV heads is refused rather than silently misread.
    expect(() => snapkvScores(ctx, opts({ numHeads: 3 }))).toThrow(/query heads/);
  });

  it('a dominant key gets ~all the mass; scores of a head sum to the prompt mass outside the window', () => {
    // q·k/√2 = 20 for the hot key: p ≈ 1 − (L−1)e^−20.
    const L = 10, w = 3;
    const ctx = handCtx([spikeKeys(L, 4)], 1, (t) => (t >= L - w ? [20 * Math.SQRT2, 0] : [0, 0]));
    const [s] = snapkvScores(ctx, opts({ window: w }));
    expect(s.length).toBe(L - w);
    expect(s[4]).toBeCloseTo(1, 6);
    expect(s.reduce((x, y) => x + y, 0)).toBeLessThanOrEqual(1 + 1e-6);
    expect(topIndices(s, 1)).toEqual([4]);
  });

  it('pooling inside snapkvScores equals pool1d of the unpooled scores', () => {
    const L = 16;
    const keys = Array.from({ length: L }, (_, t) => [Math.sin(t * 1.7), Math.cos(t * 0.3)]);
    const ctx = handCtx([keys], 2, (t, qh) => [t * 0.1 + qh, 1 - qh]);
    const [raw] = snapkvScores(ctx, opts({ window: 4 }));
    for (const pool of ['max', 'avg'] as const) {
      for (const kernel of [3, 7]) {
        const [p] = snapkvScores(ctx, opts({ window: 4, pool, kernel }));
        // (the scorer pools its float64 aggregate; `raw` is already rounded to float32)
        expectClose(p, Array.from(pool1d(raw, pool, kernel)), 7);
      }
    }
  });
});

describe('pool1d', () => {
  it('max pooling, kernel 3 and 7, −∞ padding', () => {
    const x = [0, 0, 1, 0, 0, 0, 0, 0, 2, 0];
    expect(Array.from(pool1d(x, 'max', 3))).toEqual([0, 1, 1, 1, 0, 0, 0, 2, 2, 2]);
    expect(Array.from(pool1d(x, 'max', 7))).toEqual([1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
    // All-negative input: −∞ padding never wins (zero padding would give 0 at the edges).
    expect(Array.from(pool1d([-3, -1, -2], 'max', 3))).toEqual([-1, -1, -1]);
  });

  it('avg pooling counts the zero padding (PyTorch avg_pool1d default)', () => {
    // kernel 3: out[i] = (x[i−1] + x[i] + x[i+1]) / 3 with x[−1] = x[n] = 0.
    const x = [3, 0, 0, 0, 0, 0, 0, 0, 0, 6];
    expectClose(pool1d(x, 'avg', 3), [1, 1, 0, 0, 0, 0, 0, 0, 2, 2]);
    // kernel 7: a 7 at index 2 spreads 7/7 = 1 over indices 0..5; at the left edge only 3..4 real neighbours.
    const y = [0, 0, 7, 0, 0, 0, 0, 0, 0, 0];
    expectClose(pool1d(y, 'avg', 7), [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]);
    expectClose(pool1d([1, 1, 1], 'avg', 7), [3 / 7, 3 / 7, 3 / 7]);
  });

  it('none (or kernel 1) is the identity', () => {
    expect(Array.from(pool1d([0.5, 0.25, 1], 'none', 7))).toEqual([0.5, 0.25, 1]);
    expect(Array.from(pool1d([0.5, 0.25, 1], 'max', 1))).toEqual([0.5, 0.25, 1]);
    expect(pool1d([], 'max', 7).length).toBe(0);
  });
});

describe('topIndices', () => {
  it('top c, ascending output, ties → lower position', () => {
    const s = Float32Array.from([0.5, 0.9, 0.1, 0.9, 0.3]);
    expect(topIndices(s, 1)).toEqual([1]);
    expect(topIndices(s, 2)).toEqual([1, 3]);
    expect(topIndices(s, 3)).toEqual([0, 1, 3]);
    expect(topIndices(s, 0)).toEqual([]);
    expect(topIndices(s, -1)).toEqual([]);
    expect(topIndices(s, 5)).toEqual([0, 1, 2, 3, 4]);
    expect(topIndices(s, 9)).toEqual([0, 1, 2, 3, 4]);
    expect(topIndices(new Float32Array(6), 3)).toEqual([0, 1, 2]);
  });
});

describe('kept positions known in advance', () => {
  const cfg = tinyConfig({ numLayers: 1, numHeads: 1, numKvHeads: 1, headDim: 2 });
  // L = 12, w = 2: one dominant key at position 4, all others equal; 10 scored positions 0..9.
  const L = 12;
  const ctx = () => handCtx([spikeKeys(L, 4)], 1, (t) => (t >= L - 2 ? [Math.SQRT2 * Math.log(50), 0] : [0, 0]));
  const kept = (o: Parameters<typeof createPress>[1]) => {
    const c = ctx();
    createPress('snapkv', { window: 2, ...o }, cfg)!.compressLayer(c, 0);
    return Array.from(c.cache.head(0, 0).positions.subarray(0, c.cache.head(0, 0).length));
  };

  it('no pooling: the hot key, then ties → lowest positions', () => {
    expect(kept({ budget: 3, pool: 'none' })).toEqual([4, 10, 11]);
    expect(kept({ budget: 4, pool: 'none' })).toEqual([0, 4, 10, 11]);
    expect(kept({ budget: 5, pool: 'none' })).toEqual([0, 1, 4, 10, 11]);
  });

  it('max pooling kernel 3 spreads the peak to its neighbours; kernel 7 to ±3', () => {
    expect(kept({ budget: 5, pool: 'max', kernel: 3 })).toEqual([3, 4, 5, 10, 11]);
    expect(kept({ budget: 4, pool: 'max', kernel: 3 })).toEqual([3, 4, 10, 11]); // tie 3/4/5 → lower
    expect(kept({ budget: 9, pool: 'max', kernel: 7 })).toEqual([1, 2, 3, 4, 5, 6, 7, 10, 11]);
    expect(kept({ budget: 5, pool: 'max', kernel: 7 })).toEqual([1, 2, 3, 10, 11]); // the default pipeline
  });

  it('nothing is evicted when the prompt fits the budget', () => {
    expect(kept({ budget: 12 })).toEqual(Array.from({ length: 12 }, (_, i) => i));
    expect(kept({ budget: 40 })).toEqual(Array.from({ length: 12 }, (_, i) => i));
  });

  it('the press refuses a prefill chunk shorter than the window', () => {
    const c = ctx();
    const press = new ScoredPress('snapkv', (x, w) => snapkvScores(x, opts({ window: w })), uniformAllocator(), { budget: 5, window: 4 });
    expect(() => press.compressLayer({ ...c, numTokens: 3, queries: c.queries.subarray(0, 3 * 2) }, 0)).toThrow(/shorter than the window/);
  });

  it('ratio budgets resolve to max(w + 1, round(ratio·L))', () => {
    expect(resolveBudget({ ratio: 0.25 }, 40)).toBe(10);
    expect(resolveBudget({ ratio: 0.1 }, 40)).toBe(9); // w + 1 with the default window 8
    expect(resolveBudget({ ratio: 0.5, window: 2 }, 12)).toBe(6);
    expect(kept({ ratio: 0.5 })).toEqual([1, 2, 3, 4, 10, 11]); // budget 6 → c = 4 of the tied peak ±3 (1..7)
  });
});

describe('streamingScores', () => {
  const cfg = tinyConfig({ numLayers: 1, numHeads: 2, numKvHeads: 2, headDim: 2 });
  const L = 40;
  const mk = () => handCtx([zeros(L), zeros(L)], 2, () => [0, 0]);

  it('sinks score highest, then recency', () => {
    const s = streamingScores(mk(), 8, 4);
    expect(s.length).toBe(2);
    expect(s[0].length).toBe(32);
    expect(topIndices(s[0], 6)).toEqual([0, 1, 2, 3, 30, 31]);
    expect(topIndices(s[1], 3)).toEqual([0, 1, 2]);
    expect(topIndices(streamingScores(mk(), 8, 0)[0], 3)).toEqual([29, 30, 31]);
  });

  it('the streaming press keeps sink + most recent + window in every head', () => {
    const c = mk();
    createPress('streaming', { budget: 16, window: 8 }, cfg)!.compressLayer(c, 0);
    const want = [0, 1, 2, 3, 28, 29, 30, 31, ...Array.from({ length: 8 }, (_, i) => 32 + i)];
    for (let g = 0; g < 2; g++) {
      const h = c.cache.head(0, g);
      expect(Array.from(h.positions.subarray(0, h.length))).toEqual(want);
    }
    const c2 = mk();
    createPress('streaming', { budget: 14, window: 8, sink: 2 }, cfg)!.compressLayer(c2, 0);
    const h2 = c2.cache.head(0, 1);
    expect(Array.from(h2.positions.subarray(0, h2.length))).toEqual([0, 1, 28, 29, 30, 31, ...Array.from({ length: 8 }, (_, i) => 32 + i)]);
  });
});
