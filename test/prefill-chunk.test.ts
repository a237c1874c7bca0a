/** Chunked prefill: the same cache and logits as one pass, activation buffers bounded by the chunk. */
import { describe, expect, it } from 'vitest';
import { TsBackend } from '../src/backend/ts.js';
import { createBackend } from '../src/backend/select.js';
import type { Backend } from '../src/backend/types.js';
import { RaggedKVCache } from '../src/cache/ragged.js';
import { loadModel } from '../src/engine.js';
import { DEFAULT_PREFILL_CHUNK, Transformer } from '../src/model/forward.js';
import { createPress } from '../src/press/registry.js';
import { asset, haveAssets, maxRelDiff } from './helpers.js';
import { randomWeights, tinyConfig } from './random-model.js';

const cfg = tinyConfig({ numLayers: 3, numHeads: 4, numKvHeads: 2, headDim: 8, contextLength: 512 });
const w = randomWeights(cfg, 9);
const ids = Array.from({ length: 70 }, (_, i) => (i * 7 + 3) % cfg.vocabSize);
const backends: Backend[] = [new TsBackend(), ...(['native'] as const).flatMap((k) => { try { return [createBackend(k)]; } catch { return []; } })];

function run(be: Backend, chunkSize: number, press?: ReturnType<typeof createPress>) {
  const tf = new Transformer(cfg, w, be);
  const cache = new RaggedKVCache(cfg.numLayers, cfg.numKvHeads, cfg.headDim, 0);
  const first = tf.forward(ids, cache, { chunkSize, onLayer: press ? (ctx) => press.compressLayer(ctx, 4) : undefined }).slice();
  const next = [5, 9, 1].map((t) => tf.forward([t], cache).slice());
  return { tf, cache, logits: [first, ...next] };
}

describe('chunked prefill', () => {
  for (const be of backends) {
    it(`${be.name}: chunks of 16 (first chunk 6, below the GEMM row minimum) give one pass's cache and logits`, () => {
      const a = run(be, 0), b = run(be, 16);
      expect(b.tf.workspaceRows).toBe(16);
      expect(a.tf.workspaceRows).toBe(70);
      expect(b.cache.position).toBe(a.cache.position);
      expect(b.cache.lengths()).toEqual(a.cache.lengths());
      for (let l = 0; l < cfg.numLayers; l++) {
        for (let g = 0; g < cfg.numKvHeads; g++) {
          expect(maxRelDiff(b.cache.head(l, g).keysF32(), a.cache.head(l, g).keysF32())).toBeLessThan(1e-5);
          expect(maxRelDiff(b.cache.head(l, g).valuesF32(), a.cache.head(l, g).valuesF32())).toBeLessThan(1e-5);
        }
      }
      a.logits.forEach((want, i) => expect(maxRelDiff(b.logits[i], want), `step ${i}`).toBeLessThan(1e-5));
    });

    it(`${be.name}: a press hook sees the last chunk and compresses exactly as after one pass`, () => {
      const mk = () => createPress('snapkv', { budget: 20, window: 8 }, cfg);
      const a = run(be, 0, mk()), b = run(be, 16, mk());
      expect(b.cache.lengths()).toEqual(a.cache.lengths());
      expect(b.cache.lengths().flat().every((n) => n < ids.length)).toBe(true);
      for (let l = 0; l < cfg.numLayers; l++) {
        for (let g = 0; g < cfg.numKvHeads; g++) {
          const h = (c: RaggedKVCache) => Array.from(c.head(l, g).positions.subarray(0, c.head(l, g).length));
          expect(h(b.cache)).toEqual(h(a.cache));
        }
      }
      a.logits.forEach((want, i) => expect(maxRelDiff(b.logits[i], want)).toBeLessThan(1e-5));
    });
  }

  it('defaults: chunked without a hook, one pass with one; bad sizes are refused', () => {
    const long = Array.from({ length: DEFAULT_PREFILL_CHUNK + 40 }, (_, i) => i % cfg.vocabSize);
    const big = tinyConfig({ contextLength: 1024 });
    const tf = new Transformer(big, randomWeights(big, 2), new TsBackend());
    tf.forward(long, new RaggedKVCache(big.numLayers, big.numKvHeads, big.headDim, 0), { logits: 'none' });
    expect(tf.workspaceRows).toBe(DEFAULT_PREFILL_CHUNK);
    const hooked = new Transformer(big, randomWeights(big, 2), new TsBackend());
    let seen = 0;
    hooked.forward(long, new RaggedKVCache(big.numLayers, big.numKvHeads, big.headDim, 0), { logits: 'none', onLayer: (ctx) => { seen = ctx.numTokens; } });
    expect(seen).toBe(long.length);
    expect(() => tf.forward([1], new RaggedKVCache(big.numLayers, big.numKvHeads, big.headDim, 0), { chunkSize: -1 })).toThrow(/chunkSize/);
    expect(() => tf.forward([1], new RaggedKVCache(big.numLayers, big.numKvHeads, big.headDim, 0), { chunkSize: 1.5 })).toThrow(/chunkSize/);
  });
});

describe.skipIf(!haveAssets)('chunked prefill on cokv-retrieval-tiny', () => {
  it('a 1500-token prompt: the engine prefills in 512-row passes with the same logits as one pass', async () => {
    const model = await loadModel(asset('models/cokv-retrieval-tiny'));
    const prompt = Array.from({ length: 1500 }, (_, i) => 100 + ((i * 37) % 900));
    const chunked = model.prefill(prompt, model.newCache());
    expect(model.transformer.workspaceRows).toBe(DEFAULT_PREFILL_CHUNK);
    const whole = model.transformer.forward(prompt, model.newCache(), { chunkSize: 0 }).slice();
    expect(maxRelDiff(chunked, whole)).toBeLessThan(1e-5);
  });
});
