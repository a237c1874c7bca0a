/** Compressing a copy of one full prefill must give exactly what the press gives during prefill. */
import { describe, expect, it } from 'vitest';
import { TsBackend } from '../src/backend/ts.js';
import { CokvModel } from '../src/engine.js';
import type { ModelSource } from '../src/model/source.js';
import type { Tokenizer } from '../src/model/tokenizer/types.js';
import { createPress } from '../src/press/registry.js';
import { randomWeights, tinyConfig } from './random-model.js';

const cfg = tinyConfig({ numLayers: 3, numHeads: 8, numKvHeads: 4, hiddenSize: 32, headDim: 8 });
const weights = randomWeights(cfg, 21);
const tokenizer: Tokenizer = {
  vocabSize: cfg.vocabSize, bosId: undefined, eosIds: [], addBosDefault: false,
  encode: (t) => Array.from(t, (ch) => ch.charCodeAt(0) % cfg.vocabSize),
  decode: (ids) => ids.map((i) => String.fromCharCode(97 + (i % 26))).join(''),
  tokenText: (i) => String.fromCharCode(97 + (i % 26)),
};
const source: ModelSource = {
  format: 'hf', path: 'memory', config: cfg, tensors: [],
  loadTokenizer: async () => tokenizer, loadWeights: () => weights,
};
const model = new CokvModel(source, tokenizer, new TsBackend());
const ids = Array.from({ length: 48 }, (_, i) => (i * 7 + 3) % cfg.vocabSize);

describe('shared prefill', () => {
  for (const name of ['snapkv', 'adakv', 'pyramidkv', 'streaming', 'random']) {
    it(`${name}: compressing a copy gives the same cache and greedy tokens as compressing during prefill`, async () => {
      const press = createPress(name, { budget: 20 }, cfg)!;
      const direct = model.generate(ids, { maxTokens: 6, temperature: 0, press });
      await direct.complete();
      const shared = model.prefillShared(ids);
      const state = model.fromShared(shared, press, 7);
      const viaShared = model.generate(ids, { maxTokens: 6, temperature: 0, prefilled: state });
      await viaShared.complete();
      expect(viaShared.tokens).toEqual(direct.tokens);
      expect(viaShared.stats!.promptKvBytes).toBe(direct.stats!.promptKvBytes);
      // The shared cache itself is untouched.
      expect(shared.cache.bytes()).toBe(shared.cache.fullBytes());
    });
  }

  it('q8 storage: a compressed copy of a q8 shared prefill equals compressing during a q8 prefill', async () => {
    const press = createPress('adakv', { budget: 20 }, cfg)!;
    const direct = model.generate(ids, { maxTokens: 6, temperature: 0, press, kvDtype: 'q8' });
    await direct.complete();
    const shared = model.prefillShared(ids, 64, 'q8');
    expect(shared.cache.dtype).toBe('q8');
    const state = model.fromShared(shared, press, 7);
    expect(state.cache.dtype).toBe('q8');
    const kept = state.cache.lengths().flat().reduce((a, b) => a + b, 0);
    const viaShared = model.generate(ids, { maxTokens: 6, temperature: 0, prefilled: state });
    await viaShared.complete();
    expect(viaShared.tokens).toEqual(direct.tokens);
    expect(viaShared.stats!.promptKvBytes).toBe(direct.stats!.promptKvBytes);
    expect(direct.stats!.promptKvBytes).toBe(kept * 2 * (cfg.headDim + 4));
    expect(shared.cache.bytes()).toBe(shared.cache.fullBytes());
    expect(shared.cache.fullBytes()).toBe(ids.length * cfg.numLayers * cfg.numKvHeads * 2 * (cfg.headDim + 4));
  });

  it('context-only: compress the prefix copy, then prefill the suffix over it', async () => {
    const press = createPress('snapkv', { budget: 16 }, cfg)!;
    const k = 40;
    const direct = model.generate(ids, { maxTokens: 5, temperature: 0, press, compressPrefix: k });
    await direct.complete();
    const shared = model.prefillShared(ids.slice(0, k));
    const viaShared = model.generate(ids, { maxTokens: 5, temperature: 0, prefilled: model.fromShared(shared, press, 6, ids.slice(k)) });
    await viaShared.complete();
    expect(viaShared.tokens).toEqual(direct.tokens);
    expect(viaShared.stats!.promptKvBytes).toBe(direct.stats!.promptKvBytes);
  });
});
