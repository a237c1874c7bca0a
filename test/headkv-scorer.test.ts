import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadModel } from '../src/engine.js';
import { retrievalHeadScores } from '../src/press/headkv-scorer.js';
import { createPress } from '../src/press/registry.js';
import { asset, haveAssets, tmpDir } from './helpers.js';

const tinyDir = asset('models/cokv-retrieval-tiny');
const essays = asset('data/needle/PaulGrahamEssays');

describe.skipIf(!haveAssets || !fs.existsSync(tinyDir))('HeadKV retrieval-head scorer', () => {
  it('finds the induction heads the retrieval model was trained with, and its output feeds the headkv press', async () => {
    const model = await loadModel(tinyDir);
    const haystack = fs.readdirSync(essays).sort().slice(0, 3).map((f) => fs.readFileSync(`${essays}/${f}`, 'utf8')).join('\n');
    const scores = retrievalHeadScores(model, { haystack, length: 256, samples: 2, needleTokens: 12, seed: 3 });
    expect(scores).toHaveLength(4);
    expect(scores[0]).toHaveLength(8);
    // MODEL_CARD.md: query head 0 of layers 1 and 2 were trained as (1-gram, 2-gram) induction heads.
    const flat = scores.flat();
    const top2 = flat.map((v, i) => ({ v, i })).sort((a, b) => b.v - a.v).slice(0, 2).map((o) => o.i).sort((a, b) => a - b);
    expect(top2).toEqual([8, 16]);
    expect(flat[16]).toBeGreaterThan(0.5);
    const file = `${tmpDir()}/hs.json`;
    fs.writeFileSync(file, JSON.stringify({ shape: [4, 8], scores }));
    expect(createPress('headkv', { headScores: file, budget: 32 }, model.config)?.name).toBe('headkv');
  });
});
