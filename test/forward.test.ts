import { describe, expect, it } from 'vitest';
import { TsBackend } from '../src/backend/ts.js';
import { RaggedKVCache } from '../src/cache/ragged.js';
import { Transformer } from '../src/model/forward.js';
import { quantizeMatrix, dequantize } from '../src/model/quant.js';
import type { ModelConfig } from '../src/model/config.js';
import { randomWeights, referenceLogits, tinyConfig } from './random-model.js';
import { maxRelDiff } from './helpers.js';

const cases: [string, ModelConfig][] = [
  ['GQA llama', tinyConfig()],
  ['qwen2-style bias, tied', tinyConfig({ architecture: 'qwen2', attentionBias: true, tiedEmbeddings: true })],
  ['MHA, odd sizes', tinyConfig({ numHeads: 3, numKvHeads: 3, hiddenSize: 30, headDim: 10, intermediateSize: 37, vocabSize: 53 })],
  ['head_dim ≠ hidden/heads, llama3 rope', tinyConfig({
    headDim: 16, ropeTheta: 500000,
    ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 16 },
  })],
];

describe('forward pass', () => {
  for (const [name, cfg] of cases) {
    it(`matches the float64 reference (${name})`, () => {
      const w = randomWeights(cfg, 3);
      const ids = [1, 5, 9, 2, 33, 7, 7, 20, 11, 4, 0, 50];
      const ref = referenceLogits(cfg, w, ids);
      const tf = new Transformer(cfg, w, new TsBackend());
      const cache = new RaggedKVCache(cfg.numLayers, cfg.numKvHeads, cfg.headDim);
      const all = tf.forward(ids, cache, { logits: 'all' });
      const V = cfg.vocabSize;
      for (let t = 0; t < ids.length; t++) {
        expect(maxRelDiff(all.subarray(t * V, (t + 1) * V), ref[t])).toBeLessThan(1e-4);
      }
      expect(cache.position).toBe(ids.length);
    });
  }

  it('prefill + token-by-token decode gives the same logits as one prefill', () => {
    const cfg = tinyConfig();
    const w = randomWeights(cfg, 9);
    const ids = [3, 14, 15, 9, 2, 6, 5, 35, 8, 9];
    const tf = new Transformer(cfg, w, new TsBackend());
    const full = tf.forward(ids, new RaggedKVCache(2, 2, 8), { logits: 'all' }).slice();
    const cache = new RaggedKVCache(2, 2, 8);
    tf.forward(ids.slice(0, 4), cache, { logits: 'none' });
    for (let t = 4; t < ids.length; t++) {
      const l = tf.forward([ids[t]], cache);
      expect(maxRelDiff(l, full.subarray(t * 64, (t + 1) * 64))).toBeLessThan(1e-5);
    }
    expect(cache.lengths()).toEqual([[10, 10], [10, 10]]);
  });

  it('Q8_0 weights give the reference of their dequantized values', () => {
    const cfg = tinyConfig({ hiddenSize: 64, intermediateSize: 64, headDim: 16, numHeads: 4, numKvHeads: 2 });
    const w = randomWeights(cfg, 5);
    for (const lw of w.layers) {
      for (const k of ['wq', 'wk', 'wv', 'wo', 'wGate', 'wUp', 'wDown'] as const) {
        const m = lw[k];
        if (m.dtype === 'f32') lw[k] = quantizeMatrix('q8_0', m.data, m.rows, m.cols);
      }
    }
    const deq = { ...w, layers: w.layers.map((lw) => {
      const o = { ...lw };
      for (const k of ['wq', 'wk', 'wv', 'wo', 'wGate', 'wUp', 'wDown'] as const) {
        const m = lw[k];
        o[k] = m.dtype === 'f32' ? m : { dtype: 'f32', rows: m.rows, cols: m.cols, data: dequantize(m) };
      }
      return o;
    }) };
    const ids = [1, 2, 3, 4, 5, 6];
    const ref = referenceLogits(cfg, deq, ids);
    const got = new Transformer(cfg, w, new TsBackend()).forward(ids, new RaggedKVCache(2, 2, 16));
    expect(maxRelDiff(got, ref[ids.length - 1])).toBeLessThan(1e-4);
  });
});
