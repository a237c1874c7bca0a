/**
 * `npm run bench:profile`: cost of one profiling sample (a coalition S and its complement, over the validation
 * items) for cokv's profiler — one shared prefill per item, coalitions batched — against the naive loop of the
 * reference code (two full evaluations per sample: prefill under the mask, then decode, for S and for N\S).
 * Both compute the same U(S) values (checked). Options: --items N, --pairs P, --length 512|1024|2048, --batch B.
 */
import fs from 'node:fs';
import path from 'node:path';
import { loadModel } from '../src/engine.js';
import { ModelGame, type GameSample } from '../src/game/model-game.js';
import { buildSamples } from '../src/game/samples.js';
import { loadEvalItems } from '../src/eval/datasets.js';
import { coalitionToGrid, complement, type Coalition } from '../src/game/players.js';
import { defaultSizes, drawCoalition } from '../src/game/sliced-shapley.js';
import { maskPress } from '../src/press/registry.js';
import type { CokvModel } from '../src/engine.js';
import { machineLine, markdownTable } from './common.js';

const args = process.argv.slice(2);
const arg = (name: string, d: string) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : d; };
const itemsN = Number(arg('--items', '4'));
const pairs = Number(arg('--pairs', '8'));
const length = Number(arg('--length', '1024'));
const batch = Number(arg('--batch', '16'));
const assets = path.resolve(import.meta.dirname, '../../shared/assets');
const modelDir = path.join(assets, 'models/cokv-retrieval-tiny');
const data = path.join(assets, 'data/retrieval-dev.jsonl');
if (!fs.existsSync(modelDir)) { console.error(`${modelDir} not found`); process.exit(1); }

const model = await loadModel(modelDir);
const picked = loadEvalItems('retrieval', data).filter((it) => it.task === 'passkey' && it.length === length).slice(0, itemsN);
const samples = await buildSamples('retrieval', picked, model);
const c = model.config;
const n = c.numLayers * c.numKvHeads;
const window = 8;
const maxNew = 16;

const coalitions: Coalition[] = [];
for (let k = 0; k < pairs; k++) {
  const d = drawCoalition({ n, sizes: defaultSizes(n), seed: 1, run: 0 }, k);
  coalitions.push(d.coalition, complement(d.coalition));
}

/** The naive loop: for every coalition and item, prefill under the mask press, then the teacher-forced answer. */
function naiveU(m: CokvModel, s: Coalition, list: GameSample[]): number {
  let total = 0;
  for (const smp of list) {
    const cache = m.newCache();
    const press = maskPress(coalitionToGrid(s, c.numLayers, c.numKvHeads), window);
    const first = m.prefill(smp.promptIds, cache, press, maxNew);
    const teacher = smp.answerIds.slice(0, maxNew);
    const lsm = (logits: Float32Array, off: number, id: number) => {
      let mx = -Infinity;
      for (let i = 0; i < c.vocabSize; i++) mx = Math.max(mx, logits[off + i]);
      let z = 0;
      for (let i = 0; i < c.vocabSize; i++) z += Math.exp(logits[off + i] - mx);
      return logits[off + id] - mx - Math.log(z);
    };
    let u = lsm(first, 0, teacher[0]);
    if (teacher.length > 1) {
      const l = m.transformer.forward(teacher.slice(0, -1), cache, { logits: 'all' });
      for (let t = 1; t < teacher.length; t++) u += lsm(l, (t - 1) * c.vocabSize, teacher[t]);
    }
    total += u / teacher.length;
  }
  return total / list.length;
}

const t0 = performance.now();
const naive = coalitions.map((s) => naiveU(model, s, samples));
const t1 = performance.now();
const game = new ModelGame(model, samples, { utility: 'loglik', window, maxNew, batchSize: batch });
const ours = game.evaluate(coalitions);
const t2 = performance.now();
const maxDiff = Math.max(...naive.map((u, i) => Math.abs(u - ours[i])));
const promptTokens = samples.reduce((s, x) => s + x.promptIds.length, 0);
const naivePer = (t1 - t0) / pairs / 1000, oursPer = (t2 - t1) / pairs / 1000;
console.log(`\nProfiler cost per sample (S and N\\S over ${samples.length} items of ~${length} tokens, ${promptTokens} prompt tokens in all; cokv-retrieval-tiny, loglik, ${maxNew} answer tokens, batch ${batch}, ${model.transformer.backend.name} backend; ${machineLine()})\n`);
console.log(markdownTable(['method', 'prefills', 'seconds per sample', 'speed-up'], [
  ['naive: two full evaluations per sample', 2 * pairs * samples.length, naivePer.toFixed(3), '1.0×'],
  ['cokv: one shared prefill per item, batched coalitions', game.cost.prefills, oursPer.toFixed(3), `${(naivePer / oursPer).toFixed(1)}×`],
]));
console.log(`\nmax |U_naive − U_cokv| over ${coalitions.length} coalitions: ${maxDiff.toExponential(2)} (same game)`);
const amortised = ((t2 - t1) / 1000 - (game.cost.prefillSeconds ?? 0)) / pairs;
console.log(`cokv per-sample cost once the ${game.cost.prefills} prefills (${(game.cost.prefillSeconds ?? 0).toFixed(2)} s) are amortised: ${amortised.toFixed(3)} s (${(naivePer / amortised).toFixed(1)}× cheaper than naive)`);
