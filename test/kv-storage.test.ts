/** KV storage types: Q8 (int8 K/V rows with one F32 scale per row, scale = max|x|/127) and F16, against F32. */
import { describe, expect, it } from 'vitest';
import { TsBackend } from '../src/backend/ts.js';
import { equalBytesLength, HeadCache, kvEntryBytes, RaggedKVCache } from '../src/cache/ragged.js';
import { loadModel } from '../src/engine.js';
import { Rng } from '../src/generate/rng.js';
import { Transformer } from '../src/model/forward.js';
import { createPress } from '../src/press/registry.js';
import { asset, haveAssets, maxRelDiff } from './helpers.js';
import { randomWeights, tinyConfig } from './random-model.js';

const hd = 16;
/** F32 rounding of the dequantized product q·scale (|q| ≤ 127). */
const F32_EPS = 127 * 2 ** -24;

/** Rows of very different magnitudes, an all-zero row, a one-hot row and a row of one repeated negative value. */
function rows(n: number, seed: number): Float32Array[] {
  const rng = new Rng(seed);
  const out: Float32Array[] = [];
  for (let j = 0; j < n; j++) {
    const mag = 10 ** (rng.next() * 6 - 3);
    out.push(Float32Array.from({ length: hd }, () => (rng.next() * 2 - 1) * mag));
  }
  out[2] = new Float32Array(hd);
  out[3] = new Float32Array(hd);
  out[3][5] = -7.25;
  out[4] = new Float32Array(hd).fill(-0.3);
  return out;
}

function fill(h: HeadCache, ks: Float32Array[], vs: Float32Array[]): void {
  for (let j = 0; j < ks.length; j++) h.append(ks[j], 0, vs[j], 0, 100 + j);
}

/** Check that entry `e` of `h` dequantizes to `x` within half a quantization step (scale = max|x|/127). */
function expectRow(h: HeadCache, keys: boolean, e: number, deq: Float32Array, x: Float32Array): void {
  const amax = Math.max(...Array.from(x, Math.abs));
  const scale = (keys ? h.entries().keyScales : h.entries().valueScales)[e];
  expect(scale).toBe(Math.fround(amax / 127));
  for (let i = 0; i < hd; i++) {
    const got = deq[e * hd + i];
    expect(Math.abs(got - x[i])).toBeLessThanOrEqual(scale / 2 + scale * F32_EPS);
    const q = (keys ? h.entries().keys : h.entries().values)[e * hd + i];
    expect(Math.abs(q)).toBeLessThanOrEqual(127);
    if (Math.abs(x[i]) === amax && amax > 0) expect(Math.abs(q)).toBe(127);
  }
}

describe('Q8 KV storage: HeadCache', () => {
  const ks = rows(40, 1), vs = rows(40, 2);

  it('bytes per entry: f32 8·hd, f16 4·hd, q8 2·(hd + 4); equal-bytes budgets round down', () => {
    expect(kvEntryBytes('f32', 32)).toBe(256);
    expect(kvEntryBytes('f16', 32)).toBe(128);
    expect(kvEntryBytes('q8', 32)).toBe(72);
    // cokv-retrieval-tiny (hd 32): B=16 → 56 (56·72 = 4032 ≤ 16·256 = 4096 < 57·72), 32 → 113, 64 → 227.
    expect([16, 32, 64].map((b) => equalBytesLength(b, 'q8', 32))).toEqual([56, 113, 227]);
    expect([16, 32, 64].map((b) => equalBytesLength(b, 'f16', 32))).toEqual([32, 64, 128]);
    for (const d of [8, 32, 64, 128]) {
      for (const b of [1, 7, 16, 100, 128]) {
        const n = equalBytesLength(b, 'q8', d);
        expect(n * kvEntryBytes('q8', d)).toBeLessThanOrEqual(b * kvEntryBytes('f32', d));
        expect((n + 1) * kvEntryBytes('q8', d)).toBeGreaterThan(b * kvEntryBytes('f32', d));
      }
    }
  });

  it('round trip within half a step per element, zero rows exact, exact bytes; grows from capacity 0', () => {
    const h = new HeadCache(hd, 0, 'q8');
    fill(h, ks, vs);
    expect(h.length).toBe(40);
    expect(h.entries().keys).toBeInstanceOf(Int8Array);
    expect(h.bytes()).toBe(40 * 2 * (hd + 4));
    const K = h.keysF32(), V = h.valuesF32();
    for (let e = 0; e < 40; e++) {
      expectRow(h, true, e, K, ks[e]);
      expectRow(h, false, e, V, vs[e]);
    }
    expect(h.entries().keyScales[2]).toBe(0);
    expect(Array.from(K.subarray(2 * hd, 3 * hd))).toEqual(new Array(hd).fill(0));
    expect(K[3 * hd + 5]).toBeCloseTo(-7.25, 5);
    expect(Array.from(h.positions.subarray(0, 40))).toEqual(Array.from({ length: 40 }, (_, j) => 100 + j));
    // The scratch is reused when large enough, replaced when too small.
    const scratch = new Float32Array(40 * hd);
    expect(h.keysF32(scratch)).toBe(scratch);
    expect(Array.from(scratch)).toEqual(Array.from(K.subarray(0, 40 * hd)));
    expect(h.valuesF32(new Float32Array(3)).length).toBeGreaterThanOrEqual(40 * hd);
  });

  it('keep evicts for real: exact bytes, allocatedBytes shrink, kept rows and scales unchanged', () => {
    const h = new HeadCache(hd, 64, 'q8');
    fill(h, ks, vs);
    const before = h.allocatedBytes();
    // K and V int8, K and V scales, positions: 64 × (2·hd + 4 + 4 + 4).
    expect(before).toBe(64 * (2 * hd + 12));
    const K = h.keysF32().slice(), V = h.valuesF32().slice();
    const idx = [0, 2, 3, 9, 17, 39];
    h.keep(idx, 2);
    expect(h.length).toBe(6);
    expect(h.bytes()).toBe(6 * 2 * (hd + 4));
    expect(h.allocatedBytes()).toBe(8 * (2 * hd + 12));
    expect(h.allocatedBytes()).toBeLessThan(before);
    const K2 = h.keysF32(), V2 = h.valuesF32();
    idx.forEach((j, n) => {
      expect(Array.from(K2.subarray(n * hd, (n + 1) * hd))).toEqual(Array.from(K.subarray(j * hd, (j + 1) * hd)));
      expect(Array.from(V2.subarray(n * hd, (n + 1) * hd))).toEqual(Array.from(V.subarray(j * hd, (j + 1) * hd)));
      expect(h.positions[n]).toBe(100 + j);
    });
    // Appending after keep uses the reserved room, then grows.
    for (let j = 0; j < 5; j++) h.append(ks[j], 0, vs[j], 0, 200 + j);
    expect(h.length).toBe(11);
    expect(h.bytes()).toBe(11 * 2 * (hd + 4));
    expectRow(h, true, 10, h.keysF32(), ks[4]);
  });

  it('clone is independent (int8 data and scales copied)', () => {
    const h = new HeadCache(hd, 0, 'q8');
    fill(h, ks.slice(0, 10), vs.slice(0, 10));
    const c = h.clone(3);
    expect(c.dtype).toBe('q8');
    expect(c.length).toBe(10);
    expect(c.capacity).toBe(13);
    expect(c.bytes()).toBe(h.bytes());
    const K = h.keysF32().slice(0, 10 * hd), V = h.valuesF32().slice(0, 10 * hd);
    expect(Array.from(c.keysF32().subarray(0, 10 * hd))).toEqual(Array.from(K));
    h.keep([1, 4]);
    h.entries().keys[0] = 99; // writes through the views into h's storage, not c's
    h.entries().keyScales[0] = 1e9;
    h.append(ks[20], 0, vs[20], 0, 7);
    expect(c.length).toBe(10);
    expect(Array.from(c.keysF32().subarray(0, 10 * hd))).toEqual(Array.from(K));
    expect(Array.from(c.valuesF32().subarray(0, 10 * hd))).toEqual(Array.from(V));
    c.append(ks[30], 0, vs[30], 0, 8);
    expect(h.length).toBe(3);
    expectRow(c, false, 10, c.valuesF32(), vs[30]);
  });
});

describe('F16 and Q8 KV storage: forward pass and presses', () => {
  const cfg = tinyConfig({ numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 8 });
  const w = randomWeights(cfg, 5);
  const ids = Array.from({ length: 40 }, (_, i) => (i * 5 + 1) % cfg.vocabSize);
  const run = (dtype: 'f32' | 'f16' | 'q8', press?: ReturnType<typeof createPress>) => {
    const tf = new Transformer(cfg, w, new TsBackend());
    const cache = new RaggedKVCache(cfg.numLayers, cfg.numKvHeads, cfg.headDim, 0, dtype);
    tf.forward(ids, cache, { logits: 'none', onLayer: press ? (ctx) => press.compressLayer(ctx, 4) : undefined });
    const out: Float32Array[] = [];
    for (const t of [3, 9, 27]) out.push(tf.forward([t], cache).slice());
    return { cache, out };
  };

  it('F16 holds exactly half the bytes and stays within f16 rounding of the F32 logits, with and without a press', () => {
    for (const press of [undefined, createPress('snapkv', { budget: 16 }, cfg)]) {
      const a = run('f32', press), b = run('f16', press);
      expect(b.cache.bytes()).toBe(a.cache.bytes() / 2);
      expect(b.cache.fullBytes()).toBe(a.cache.fullBytes() / 2);
      expect(b.cache.lengths()).toEqual(a.cache.lengths());
      for (let s = 0; s < a.out.length; s++) {
        const d = maxRelDiff(b.out[s], a.out[s]);
        // f16 keeps 11 significant bits (relative error ≤ 2^-11 ≈ 4.9e-4 per stored element).
        expect(d).toBeLessThan(5e-3);
        expect(d).toBeGreaterThan(0);
      }
    }
  });

  it('Q8, random model: bytes = lengths × 2·(hd + 4), same lengths as F32 with snapkv, logits close to F32', () => {
    for (const press of [undefined, createPress('snapkv', { budget: 16 }, cfg)]) {
      const a = run('f32', press), b = run('q8', press);
      expect(b.cache.lengths()).toEqual(a.cache.lengths());
      const total = b.cache.lengths().flat().reduce((x, y) => x + y, 0);
      expect(b.cache.bytes()).toBe(total * 2 * (cfg.headDim + 4));
      expect(b.cache.bytes()).toBe((a.cache.bytes() * (cfg.headDim + 4)) / (4 * cfg.headDim));
      expect(b.cache.fullBytes()).toBe(b.cache.position * cfg.numLayers * cfg.numKvHeads * 2 * (cfg.headDim + 4));
      for (let s = 0; s < a.out.length; s++) {
        const d = maxRelDiff(b.out[s], a.out[s]);
        // Measured (ts backend): at most 9.2e-3 of the logit range (F16: 3.9e-4); int8 rows step by 1/127 of each row's max.
        expect(d).toBeLessThan(2.5e-2);
        expect(d).toBeGreaterThan(0);
      }
    }
  });
});

describe.skipIf(!haveAssets)('Q8 KV storage on stories260K', () => {
  const prompt = 'Once upon a time there was a little dog named Max. Max liked to run in the big green park with his friends.';

  it('teacher-forced logits stay close to F32; generate reports q8 bytes', async () => {
    const model = await loadModel(asset('models/stories260K'), { backend: 'ts' });
    const c = model.config;
    const gen = model.generate(prompt, { maxTokens: 24, temperature: 0 });
    await gen.complete();
    const ids = [...model.promptIds(prompt), ...gen.tokens];
    const logits = (dtype: 'f32' | 'q8') => model.transformer.forward(ids, model.newCache(ids.length, dtype), { logits: 'all' }).slice();
    const a = logits('f32'), b = logits('q8');
    const V = c.vocabSize;
    let worst = 0, sameArgmax = 0;
    const argmax = (x: Float32Array) => x.indexOf(Math.max(...x));
    for (let t = 0; t < ids.length; t++) {
      const ra = a.subarray(t * V, (t + 1) * V), rb = b.subarray(t * V, (t + 1) * V);
      worst = Math.max(worst, maxRelDiff(rb, ra));
      if (argmax(ra) === argmax(rb)) sameArgmax++;
    }
    // Measured (ts backend, 62 positions, headDim 8): worst position 2.4e-2 of the logit range (F16: 4.4e-4), argmax
    // agreement at 61 of 62 positions.
    expect(worst).toBeLessThan(6e-2);
    expect(worst).toBeGreaterThan(0);
    expect(sameArgmax).toBeGreaterThanOrEqual(ids.length - 4);

    const q8 = model.generate(prompt, { maxTokens: 24, temperature: 0, kvDtype: 'q8' });
    await q8.complete();
    const entry = c.numLayers * c.numKvHeads * 2 * (c.headDim + 4);
    expect(q8.stats!.promptKvBytes).toBe(model.promptIds(prompt).length * entry);
    expect(q8.stats!.kvBytes).toBe(q8.stats!.kvFullBytes);
    expect(q8.stats!.kvBytes % entry).toBe(0);
    // Greedy decoding follows F32 at first (measured: the first 9 tokens, then a near-tie goes the other way).
    expect(q8.tokens.slice(0, 6)).toEqual(gen.tokens.slice(0, 6));
  });

  it('snapkv budget 16: same per-head lengths as F32, bytes = lengths × 2·(hd + 4)', async () => {
    const model = await loadModel(asset('models/stories260K'), { backend: 'ts' });
    const c = model.config;
    const ids = model.promptIds(prompt);
    const lengths = (dtype: 'f32' | 'q8') => {
      const cache = model.newCache(ids.length, dtype);
      model.prefill(ids, cache, createPress('snapkv', { budget: 16 }, c));
      return cache;
    };
    const a = lengths('f32'), b = lengths('q8');
    expect(b.lengths()).toEqual(a.lengths());
    expect(b.lengths().flat().every((n) => n === 16)).toBe(true);
    const total = b.lengths().flat().reduce((x, y) => x + y, 0);
    expect(b.bytes()).toBe(total * 2 * (c.headDim + 4));
    expect(b.bytes() / a.bytes()).toBeCloseTo((c.headDim + 4) / (4 * c.headDim), 12);
    expect(b.allocatedBytes()).toBeLessThan(model.newCache(ids.length, 'q8').allocatedBytes());
  });
});
