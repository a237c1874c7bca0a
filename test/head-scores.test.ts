import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadModel, type CokvModel } from '../src/engine.js';
import { probeGreedyDecode } from '../src/press/head-scores/decode-probe.js';
import { attentionFocus, entropyHeadScores } from '../src/press/head-scores/entropy.js';
import { outputNormHeadScores } from '../src/press/head-scores/output-norm.js';
import { buildNeedlePrompt, makeNeedles } from '../src/press/head-scores/needle-prompts.js';
import { snapkvScores } from '../src/press/scorers/snapkv.js';
import { asset, haveAssets } from './helpers.js';

const tinyDir = asset('models/cokv-retrieval-tiny');
const essays = asset('data/needle/PaulGrahamEssays');

describe('attentionFocus', () => {
  it('is 0 for a uniform row, 1 for a one-hot row, in between otherwise', () => {
    expect(attentionFocus([0.25, 0.25, 0.25, 0.25])).toBeCloseTo(0, 12);
    expect(attentionFocus([0, 1, 0, 0])).toBe(1);
    expect(attentionFocus([1])).toBe(1);
    const f = attentionFocus([0.7, 0.1, 0.1, 0.1]);
    expect(f).toBeGreaterThan(0);
    expect(f).toBeLessThan(1);
  });
});

describe.skipIf(!haveAssets || !fs.existsSync(tinyDir))('generation-time head scores on cokv-retrieval-tiny', () => {
  let model: CokvModel;
  const haystack = haveAssets ? ['avg', 'bias', 'apple'].map((f) => fs.readFileSync(`${essays}/${f}.txt`, 'utf8')).join('\n\n') : '';
  const load = async (): Promise<CokvModel> => (model ??= await loadModel(tinyDir));

  it('the decode probe sees every head at every step, and its recomputed rows show the trained previous-token head', async () => {
    const m = await load();
    const c = m.config;
    const hay = m.tokenizer.encode(haystack, { addSpecial: false });
    const p = buildNeedlePrompt(m, hay, makeNeedles(1, 1)[0], 384, 40);
    const seen: number[] = [];
    let prevTokenHits = 0, prevTokenRows = 0;
    const stop = new Set([...m.eosIds, ...m.newlineIds()]);
    const out = probeGreedyDecode(m, {
      ids: p.ids, maxNew: p.answerTokens, stopIds: stop,
      onRow: (step, row) => {
        seen.push(step);
        const pos = p.ids.length - 1 + step;
        expect(row.probs.length).toBe(pos + 1);
        expect(row.positions[row.positions.length - 1]).toBe(pos);
        expect(row.probs.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 9);
        expect(row.output).toHaveLength(c.headDim);
        if (row.layer === 0 && row.head === 0) {
          // MODEL_CARD.md: layer 0 query head 0 was trained to attend to the previous token.
          let arg = 0;
          for (let j = 1; j < row.probs.length; j++) if (row.probs[j] > row.probs[arg]) arg = j;
          prevTokenRows++;
          if (row.positions[arg] === pos - 1) prevTokenHits++;
        }
      },
    });
    expect(m.decode(out.filter((id) => !stop.has(id))).trim()).toBe(p.needle.answer);
    expect(seen.length).toBe(out.length * c.numLayers * c.numHeads);
    expect(prevTokenRows).toBe(out.length);
    expect(prevTokenHits).toBe(prevTokenRows);
  });

  it('the probe\'s attention rows equal SnapKV\'s scorer on the same decode step (scale and positions included)', async () => {
    const m = await load();
    const c = m.config;
    const hay = m.tokenizer.encode(haystack, { addSpecial: false });
    const p = buildNeedlePrompt(m, hay, makeNeedles(4, 1)[1], 300, 60);
    const rows: Float64Array[][] = Array.from({ length: c.numLayers }, () => []);
    probeGreedyDecode(m, { ids: p.ids, maxNew: 1, stopIds: new Set(), wantOutput: false, onRow: (_s, r) => { rows[r.layer][r.head] = r.probs; } });
    // SnapKV with a window of one query (the decode row), no pooling, mean over the group: the mean of the group's
    // probe rows over every entry but the row's own.
    const cache = m.newCache(p.ids.length);
    m.transformer.forward(p.ids.slice(0, -1), cache, { logits: 'none' });
    const group = c.numHeads / c.numKvHeads;
    m.transformer.forward([p.ids[p.ids.length - 1]], cache, {
      logits: 'none',
      onLayer: (ctx) => {
        const snap = snapkvScores(ctx, { window: 1, pool: 'none', kernel: 1, groupAggregation: 'mean', numHeads: c.numHeads, scale: c.recipe.attentionScale });
        for (let g = 0; g < c.numKvHeads; g++) {
          expect(snap[g].length).toBe(p.ids.length - 1);
          let worst = 0;
          for (let j = 0; j < snap[g].length; j++) {
            let mean = 0;
            for (let k = 0; k < group; k++) mean += rows[ctx.layer][g * group + k][j] / group;
            worst = Math.max(worst, Math.abs(mean - snap[g][j]));
          }
          expect(worst).toBeLessThan(1e-5);
        }
      },
    });
  });

  it('output-norm and entropy give [layer][query head] scores over every generated token', async () => {
    const m = await load();
    const grid = { haystack, lengths: [256], depths: 2, needlesPerKind: 1, seed: 1 };
    const norm = outputNormHeadScores(m, grid);
    const ent = entropyHeadScores(m, grid);
    for (const r of [norm, ent]) {
      expect(r.scores).toHaveLength(4);
      for (const row of r.scores) expect(row).toHaveLength(8);
      expect(r.rows).toBeGreaterThan(4);
    }
    // The same prompts and the same greedy answers: the same number of generated tokens.
    expect(norm.rows).toBe(ent.rows);
    expect(norm.scores.flat().every((v) => Number.isFinite(v) && v > 0)).toBe(true);
    expect(ent.scores.flat().every((v) => v >= 0 && v <= 1)).toBe(true);
    // The previous-token head looks at one entry: nearly zero entropy.
    expect(ent.scores[0][0]).toBeGreaterThan(0.9);
    expect(Math.min(...ent.scores.flat())).toBeLessThan(0.7);
  });
});
