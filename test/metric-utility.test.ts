/**
 * The `metric` utility (the paper's: greedy answer under the coalition's cache, scored by the task metric) is
 * computed by verifying the reference answer as a draft in one batched pass, deciding exact-match coalitions from
 * the verified prefix, and decoding only the undecided rest. It must equal plain greedy decoding of every
 * coalition (`metricDecode`, the reference loop): checked on every coalition of the planted 12-player game and on
 * sampled coalitions of the real cokv-retrieval-tiny game, with the row counts that make it cheap.
 */
import { describe, expect, it } from 'vitest';
import { loadModel } from '../src/engine.js';
import { loadEvalItems, splitItems } from '../src/eval/datasets.js';
import { exactMatchScore, exactMatchStillPossible } from '../src/eval/metrics.js';
import { ModelGame, type ModelGameOptions } from '../src/game/model-game.js';
import type { Coalition } from '../src/game/players.js';
import { buildSamples, metricGameOptions } from '../src/game/samples.js';
import { asset, haveAssets } from './helpers.js';
import { plantedConfig, plantedModel, plantedSamples } from './planted-model.js';

const exact = (prediction: string, answers: string[]): number => Math.max(0, ...answers.map((a) => exactMatchScore(prediction, a)));

describe('exactMatchStillPossible (the prefix rule)', () => {
  it('keeps prefixes of the normalized answer and rules out the rest', () => {
    expect(exactMatchStillPossible('', ['123'])).toBe(true);
    expect(exactMatchStillPossible(' 1', ['123'])).toBe(true);
    expect(exactMatchStillPossible(' 12', ['123'])).toBe(true);
    expect(exactMatchStillPossible(' 123', ['123'])).toBe(true);
    expect(exactMatchStillPossible(' 123.', ['123'])).toBe(true); // trailing punctuation is stripped
    expect(exactMatchStillPossible(' 123 ', ['123'])).toBe(true);
    expect(exactMatchStillPossible(' 1234', ['123'])).toBe(false);
    expect(exactMatchStillPossible(' 124', ['123'])).toBe(false);
    expect(exactMatchStillPossible(' 12 3', ['123'])).toBe(false);
    expect(exactMatchStillPossible(' 124', ['123', '1245'])).toBe(true);
    expect(exactMatchStillPossible('12\n', ['12'])).toBe(true); // the first line is fixed and matches
    expect(exactMatchStillPossible('13\n', ['12'])).toBe(false);
    expect(exactMatchStillPossible('1\uFFFD', ['12'])).toBe(true); // an unfinished UTF-8 sequence is never ruled out
  });

  it('agrees with the metric on every continuation of short strings', () => {
    // Brute force: a prefix is possible iff some continuation over a small alphabet scores 1.
    const alphabet = ['1', '2', ' ', '.', '\n'];
    const strings = (len: number): string[] => (len === 0 ? [''] : strings(len - 1).flatMap((s) => alphabet.map((a) => s + a)));
    const answers = ['12', '1.'];
    const tails = [0, 1, 2, 3].flatMap(strings);
    for (const prefix of [0, 1, 2, 3].flatMap(strings)) {
      const brute = tails.some((t) => answers.some((a) => exactMatchScore(prefix + t, a) === 1));
      if (!brute) expect(exactMatchStillPossible(prefix, answers), JSON.stringify(prefix)).toBe(false);
      else expect(exactMatchStillPossible(prefix, answers), JSON.stringify(prefix)).toBe(true);
    }
  });
});

describe('metric utility: drafted = greedy decoding of every coalition', () => {
  it('planted 12-player game: all 4096 coalitions, maxNew 2 and 4', () => {
    const c = plantedConfig();
    const n = c.numLayers * c.numKvHeads;
    const all: Coalition[] = Array.from({ length: 1 << n }, (_, m) => Uint8Array.from({ length: n }, (_, i) => (m >> i) & 1));
    const model = plantedModel();
    const samples = plantedSamples(3, 21);
    for (const maxNew of [2, 4]) {
      const opts: ModelGameOptions = { utility: 'metric', window: 4, maxNew, batchSize: 512, score: exact, prefixRule: exactMatchStillPossible };
      const drafted = new ModelGame(model, samples, opts);
      const decoded = new ModelGame(model, samples, { ...opts, metricDecode: true });
      const u = drafted.evaluate(all);
      expect(u).toEqual(decoded.evaluate(all));
      // maxNew 2: both outcomes occur (the game is not trivial); maxNew 4: the model repeats the value after the
      // answer, so every coalition scores 0, which the prefix rule sees after the third token.
      if (maxNew === 2) expect(u.some((x) => x === 1) && u.some((x) => x < 1)).toBe(true);
      else expect(u.every((x) => x === 0)).toBe(true);
      // Drafting runs about one pass of (answer length) rows per coalition (a few undecided ones decode on);
      // decoding runs up to maxNew − 1 steps of one row each.
      expect(drafted.cost.decodeRows).toBeLessThanOrEqual(all.length * samples.length * 2 * 1.01);
      if (maxNew === 4) expect(drafted.cost.decodeRows).toBeLessThan(decoded.cost.decodeRows);
    }
  });

  it.skipIf(!haveAssets)('cokv-retrieval-tiny: sampled coalitions on passkey, multikey and kv items, with the eval prompts', async () => {
    const model = await loadModel(asset('models/cokv-retrieval-tiny'));
    const items = splitItems(loadEvalItems('retrieval', asset('data/retrieval-dev.jsonl')), 0).validation
      .filter((it) => (it.length ?? 0) <= 1024 && ['passkey', 'multikey', 'kv'].includes(it.task ?? ''))
      .filter((it, i, a) => a.findIndex((x) => x.task === it.task) === i);
    expect(items.length).toBe(3);
    const samples = await buildSamples('retrieval', items, model);
    const n = 16;
    let x = 7;
    const coalitions: Coalition[] = [new Uint8Array(n).fill(1), new Uint8Array(n)];
    for (let i = 0; i < n; i++) coalitions.push(Uint8Array.from({ length: n }, (_, j) => (j === i ? 0 : 1)));
    for (let k = 0; k < 120; k++) {
      coalitions.push(Uint8Array.from({ length: n }, () => {
        x = (x * 1103515245 + 12345) >>> 0;
        return (x >>> 16) % 3 === 0 ? 0 : 1;
      }));
    }
    const opts: ModelGameOptions = { utility: 'metric', window: 8, maxNew: 24, batchSize: 64, ...metricGameOptions('retrieval') };
    const drafted = new ModelGame(model, samples, opts);
    const decoded = new ModelGame(model, samples, { ...opts, metricDecode: true });
    const u = drafted.evaluate(coalitions);
    expect(u).toEqual(decoded.evaluate(coalitions));
    expect(u[0]).toBeGreaterThan(u[1]);
    // Far fewer rows than decoding: about one pass over the answer per coalition.
    expect(drafted.cost.decodeRows).toBeLessThan(decoded.cost.decodeRows / 2);
  }, 120_000);
});
