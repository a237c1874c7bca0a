import { describe, expect, it } from 'vitest';
import { TsBackend } from '../src/backend/ts.js';
import { RaggedKVCache } from '../src/cache/ragged.js';
import { Transformer } from '../src/model/forward.js';
import { createPress } from '../src/press/registry.js';
import { randomWeights, tinyConfig } from './random-model.js';

describe('F16 KV storage', () => {
  const cfg = tinyConfig({ numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 8 });
  const w = randomWeights(cfg, 5);
  const ids = Array.from({ length: 40 }, (_, i) => (i * 5 + 1) % cfg.vocabSize);

  it('holds exactly half the bytes and stays within f16 rounding of the F32 logits, with and without a press', () => {
    for (const press of [undefined, createPress('snapkv', { budget: 16 }, cfg)]) {
      const run = (dtype: 'f32' | 'f16') => {
        const tf = new Transformer(cfg, w, new TsBackend());
        const cache = new RaggedKVCache(cfg.numLayers, cfg.numKvHeads, cfg.headDim, 0, dtype);
        tf.forward(ids, cache, { logits: 'none', onLayer: press ? (ctx) => press.compressLayer(ctx, 4) : undefined });
        const out: Float32Array[] = [];
        for (const t of [3, 9, 27]) out.push(tf.forward([t], cache).slice());
        return { cache, out };
      };
      const a = run('f32'), b = run('f16');
      expect(b.cache.bytes()).toBe(a.cache.bytes() / 2);
      expect(b.cache.fullBytes()).toBe(a.cache.fullBytes() / 2);
      expect(b.cache.lengths()).toEqual(a.cache.lengths());
      for (let s = 0; s < a.out.length; s++) {
        const range = Math.max(...a.out[s]) - Math.min(...a.out[s]);
        let d = 0;
        for (let i = 0; i < a.out[s].length; i++) d = Math.max(d, Math.abs(a.out[s][i] - b.out[s][i]));
        // f16 keeps 11 significant bits (relative error ≤ 2^-11 ≈ 4.9e-4 per stored element).
        expect(d / range).toBeLessThan(5e-3);
        expect(d).toBeGreaterThan(0);
      }
    }
  });
});
