import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadModel, type CokvModel } from '../src/engine.js';
import { headkvR2Scores, needleMassRow } from '../src/press/headkv-r2.js';
import { buildNeedlePrompt, depthGrid, makeNeedles, type NeedleSpec } from '../src/press/head-scores/needle-prompts.js';
import { createPress } from '../src/press/registry.js';
import { HELD_OUT_ESSAYS } from '../src/eval/retrieval-gen.js';
import { asset, haveAssets, tmpDir } from './helpers.js';

const tinyDir = asset('models/cokv-retrieval-tiny');
const essays = asset('data/needle/PaulGrahamEssays');

/** The training-split essays (the held-out ones are the evaluation haystacks). */
function trainingEssays(): string {
  return fs.readdirSync(essays).filter((f) => f.endsWith('.txt') && !(HELD_OUT_ESSAYS as readonly string[]).includes(f.slice(0, -4)))
    .sort().slice(0, 6).map((f) => fs.readFileSync(`${essays}/${f}`, 'utf8')).join('\n\n');
}

const top = (m: number[][], n: number): number[] =>
  m.flat().map((v, i) => ({ v, i })).sort((a, b) => b.v - a.v).slice(0, n).map((o) => o.i).sort((a, b) => a - b);

describe('needleMassRow (the official retrieval_calculate)', () => {
  it('adds weight / |span| for the top-k positions (k = |span|) that lie in the span', () => {
    const probs = Float64Array.from([0.05, 0.4, 0.3, 0.02, 0.2, 0.03]);
    const positions = Int32Array.from([0, 1, 2, 3, 4, 5]);
    // Span [2, 4): k = 2; the top-2 positions are 1 (0.4) and 2 (0.3); only 2 is in the span.
    expect(needleMassRow(probs, positions, [2, 4])).toBeCloseTo(0.3 / 2, 12);
    // Span [3, 6): k = 3; top-3 are 1, 2, 4; only 4 (0.2) is in the span. Position 3 (0.02) is in the span but not top-k.
    expect(needleMassRow(probs, positions, [3, 6])).toBeCloseTo(0.2 / 3, 12);
    // Positions, not indices, are compared (a compressed cache has gaps).
    expect(needleMassRow(probs, Int32Array.from([10, 11, 12, 13, 14, 15]), [11, 12])).toBeCloseTo(0.4, 12);
  });
});

describe('needle prompts', () => {
  it('depths follow np.round(np.linspace(0, 100, n))', () => {
    expect(depthGrid(10)).toEqual([0, 11, 22, 33, 44, 56, 67, 78, 89, 100]);
    expect(depthGrid(1)).toEqual([0]);
  });
  it('makes retrieval and reasoning needles; the reasoning answer is the chosen word\'s number', () => {
    const n = makeNeedles(5, 2);
    expect(n.map((x) => x.kind)).toEqual(['retrieval', 'retrieval', 'reasoning', 'reasoning']);
    for (const r of n.filter((x) => x.kind === 'reasoning')) {
      const chosen = /The chosen word is (\w+)\./.exec(r.sentences[2])![1];
      expect(r.sentences[r.answerSentence]).toBe(`The special magic number for ${chosen} is ${r.answer}.`);
      expect(r.sentences[1 - r.answerSentence]).not.toContain(r.answer);
    }
  });
});

describe.skipIf(!haveAssets || !fs.existsSync(tinyDir))('HeadKV-R2 scores on cokv-retrieval-tiny', () => {
  let model: CokvModel;
  const haystack = haveAssets ? trainingEssays() : '';
  const load = async (): Promise<CokvModel> => (model ??= await loadModel(tinyDir));

  it('prompts hold the answer sentence at the recorded span, at a sentence end, with the requested length', async () => {
    const m = await load();
    const hay = m.tokenizer.encode(haystack, { addSpecial: false });
    for (const needle of makeNeedles(2, 1)) {
      const p = buildNeedlePrompt(m, hay, needle, 512, 50, 123);
      expect(p.ids.length).toBe(512);
      expect(m.decode(p.ids.slice(p.span[0], p.span[1])).trim()).toBe(needle.sentences[needle.answerSentence]);
      expect(m.tokenizer.tokenText(p.ids[p.needleAt - 1])).toMatch(/[.!?]\s*$/);
      expect(m.decode(p.ids.slice(p.needleAt, p.span[1])).trim()).toBe(needle.sentences.slice(0, needle.answerSentence + 1).join(' '));
    }
  });

  it('ranks the supervised retrieval heads on top, L2 query head 0 among the first two, and feeds the headkv press', async () => {
    const m = await load();
    const r = headkvR2Scores(m, { haystack, lengths: [512], depths: 3, needlesPerKind: 1, seed: 1 });
    expect(r.scores).toHaveLength(4);
    for (const row of r.scores) expect(row).toHaveLength(8);
    expect(r.scores.flat().reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
    expect(r.samples).toHaveLength(6);
    expect(r.samples.filter((s) => s.kept).length).toBeGreaterThan(0);
    // MODEL_CARD.md: query head 0 of KV head 0 in layers 1, 2, 3 were trained to attend to earlier occurrences /
    // the answer source; L2H0 is the head the answers depend on. R2 (attention mass on the needle) puts those
    // three on top; L3's answer-source head is as high as L2's even though cutting it costs nothing (the card's
    // ablation): R2 measures where heads look, not what the answer needs.
    expect(top(r.scores, 3)).toEqual([8, 16, 24]);
    expect(top(r.scores, 2)).toContain(16);
    expect(r.scores[2][0]).toBeGreaterThan(0.2);
    const file = `${tmpDir()}/r2.json`;
    fs.writeFileSync(file, JSON.stringify({ shape: [4, 8], method: 'r2', scores: r.scores }));
    expect(createPress('headkv', { headScores: file, budget: 32 }, m.config)?.name).toBe('headkv');
  });

  it('the F1 filter drops prompts the model answers wrongly', async () => {
    const m = await load();
    const [good] = makeNeedles(3, 1);
    // The question asks for the pass key, but the reference answer is another number: the model's (right) reading
    // of the text scores F1 0 against it, so this prompt must not enter the scores.
    const wrong: NeedleSpec = { ...good, sentences: ['The pass key is 31415.', 'Remember it.'], answer: '27182' };
    const both = headkvR2Scores(m, { haystack, lengths: [512], depths: 1, needlesPerKind: 1, seed: 1, needles: [good, wrong] });
    expect(both.samples.map((s) => s.kept)).toEqual([true, false]);
    expect(both.samples[1].f1).toBe(0);
    expect(both.samples[1].response).toBe('31415');
    // The first prompt of both runs is the same (same needle, same haystack offset): only it counts.
    const alone = headkvR2Scores(m, { haystack, lengths: [512], depths: 1, needlesPerKind: 1, seed: 1, needles: [good] });
    expect(both.rawMeans).toEqual(alone.rawMeans);
    // Without the filter the wrong prompt's sums enter the mean and change it.
    const unfiltered = headkvR2Scores(m, { haystack, lengths: [512], depths: 1, needlesPerKind: 1, seed: 1, needles: [good, wrong], f1Threshold: -1 });
    expect(unfiltered.samples.every((s) => s.kept)).toBe(true);
    expect(unfiltered.rawMeans).not.toEqual(alone.rawMeans);
    // Nothing answered: an error, not a file of zeros.
    expect(() => headkvR2Scores(m, { haystack, lengths: [512], depths: 1, needlesPerKind: 1, seed: 1, needles: [wrong] }))
      .toThrow(/no answer passed the F1 > 0\.5 filter \(0 of 1 prompts\)/);
  });
});
