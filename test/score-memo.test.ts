/**
 * Shared scores (`scoreMemo`): the eval runner compresses many forks of one prefill and lets presses with the same
 * scorer settings share each layer's scores. Sharing must not change a kept entry: every press keeps exactly what
 * it keeps when it scores alone, and scorers with other settings (pooling, kernel, window, StreamingLLM) never
 * receive another's scores.
 */
import { describe, expect, it } from 'vitest';
import { loadModel } from '../src/engine.js';
import { createPress } from '../src/press/registry.js';
import type { PressOptions } from '../src/press/options.js';
import { Sequence } from '../src/session/sequence.js';
import { asset, haveAssets } from './helpers.js';

describe.skipIf(!haveAssets)('scoreMemo', () => {
  it('presses sharing scores keep the same entries as presses scoring alone', async () => {
    const model = await loadModel(asset('models/cokv-retrieval-tiny'));
    const ids = model.encode('The pass key is 81234. Remember it. ' + 'The grass is green and the sky is blue. '.repeat(30) + 'What is the pass key? The pass key is', true);
    const doc = Sequence.create(model, { kvDtype: 'f32' });
    await doc.prefill(ids);
    const presses: [string, PressOptions][] = [
      ['snapkv', { budget: 32 }], ['snapkv', { budget: 64 }], ['snapkv', { budget: 32, pool: 'avg', kernel: 5 }],
      ['snapkv', { budget: 32, window: 4 }], ['streaming', { budget: 32 }], ['adakv', { budget: 48 }], ['pyramidkv', { budget: 40 }],
      ['boundary-snapkv', { budget: 32 }], ['cokv', { budget: 32, profile: 'results/profiles/cokv-retrieval-tiny__metric.json' }],
    ];
    const memo = new Map<string, Float32Array[]>();
    const c = model.config;
    for (const [name, o] of presses) {
      const alone = doc.fork();
      await alone.compress(createPress(name, o, c));
      const shared = doc.fork();
      await shared.compress(createPress(name, o, c), { scoreMemo: memo });
      for (let l = 0; l < c.numLayers; l++) {
        for (let g = 0; g < c.numKvHeads; g++) expect(Array.from(shared.headPositions(l, g)), `${name} ${JSON.stringify(o)} L${l}H${g}`).toEqual(Array.from(alone.headPositions(l, g)));
      }
    }
    // One entry per distinct scorer setting and layer: snapkv max/7 (w 8, w 4), snapkv avg/5, streaming.
    expect(memo.size).toBe(4 * c.numLayers);
  });
});
