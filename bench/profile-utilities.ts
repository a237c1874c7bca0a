/**
 * `npm run bench:utilities`: what one profiling sample (a coalition S and its complement, over the validation
 * items) costs under each utility of the head game, measured in one run with the utilities interleaved round by
 * round (the VM is noisy): loglik (teacher-forced answer log-prob), metric as cokv computes it (the reference answer
 * verified as a draft, exact-match coalitions decided from the verified prefix), metric by plain batched greedy
 * decoding of every coalition (the reference loop, what `metric` cost before), and kl. The prefills are shared by
 * all utilities (one per item, reported apart); the table is the per-sample cost after them, and its ratio to
 * loglik. The drafted and decoded metric utilities give the same U (checked).
 * Options: --items N (validation items per task; default 3), --pairs P (default 16), --rounds R (default 3), --batch B.
 */
import path from 'node:path';
import { loadModel } from '../src/engine.js';
import { loadEvalItems, splitItems } from '../src/eval/datasets.js';
import { ModelGame, type ModelGameOptions } from '../src/game/model-game.js';
import { complement, type Coalition } from '../src/game/players.js';
import { buildSamples, metricGameOptions } from '../src/game/samples.js';
import { defaultSizes, drawCoalition } from '../src/game/sliced-shapley.js';
import { machineLine, markdownTable } from './common.js';

const args = process.argv.slice(2);
const arg = (name: string, d: string) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : d; };
const perTask = Number(arg('--items', '3'));
const pairs = Number(arg('--pairs', '16'));
const rounds = Number(arg('--rounds', '3'));
const batch = Number(arg('--batch', '16'));

const assets = path.resolve(import.meta.dirname, '../../shared/assets');
const model = await loadModel(path.join(assets, 'models/cokv-retrieval-tiny'));
const all = splitItems(loadEvalItems('retrieval', path.join(assets, 'data/retrieval-dev.jsonl')), 0).validation;
const items = ['passkey', 'multikey', 'kv'].flatMap((t) => all.filter((it) => it.task === t).slice(0, perTask));
const samples = await buildSamples('retrieval', items, model);
const n = model.config.numLayers * model.config.numKvHeads;
const coalitions: Coalition[] = [];
for (let k = 0; k < pairs; k++) {
  const d = drawCoalition({ n, sizes: defaultSizes(n), seed: 1, run: 0 }, k);
  coalitions.push(d.coalition, complement(d.coalition));
}

const maxNew = 24; // the retrieval dataset's answer length, as cokv eval and cokv profile --utility metric
const base = { window: 8, batchSize: batch };
const utilities: [string, ModelGameOptions][] = [
  ['loglik (16 answer tokens)', { ...base, utility: 'loglik', maxNew: 16 }],
  ['metric, drafted (cokv)', { ...base, utility: 'metric', maxNew, ...metricGameOptions('retrieval') }],
  ['metric, decoded (reference loop)', { ...base, utility: 'metric', maxNew, ...metricGameOptions('retrieval'), metricDecode: true }],
  ['kl (16 tokens)', { ...base, utility: 'kl', maxNew: 16 }],
];
const games = utilities.map(([, o]) => new ModelGame(model, samples, o));
const seconds = utilities.map(() => [] as number[]);
const values: number[][] = [];
for (let r = 0; r < rounds; r++) {
  games.forEach((g, i) => {
    const before = g.cost.seconds - (g.cost.prefillSeconds ?? 0);
    const u = g.evaluate(coalitions);
    seconds[i].push((g.cost.seconds - (g.cost.prefillSeconds ?? 0) - before) / pairs);
    if (r === 0) values[i] = u;
  });
}
const same = values[1].every((u, k) => u === values[2][k]);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const loglik = median(seconds[0]);
console.log(`\nHead-game cost per profiling sample (S and N\\S over ${samples.length} validation items, passkey/multikey/kv, ${samples.reduce((s, x) => s + x.promptIds.length, 0)} prompt tokens; cokv-retrieval-tiny, batch ${batch}, ${model.transformer.backend.name} backend; median of ${rounds} interleaved rounds; ${machineLine()})\n`);
console.log(markdownTable(['utility', 'seconds per sample', 'decode rows per sample', '× loglik'], utilities.map(([name], i) => [
  name, median(seconds[i]).toFixed(3), String(Math.round(games[i].cost.decodeRows / rounds / pairs)), `${(median(seconds[i]) / loglik).toFixed(2)}×`,
])));
console.log(`\nshared prefills (once per item, every utility): ${games[0].cost.prefills} items, ${(games[0].cost.prefillSeconds ?? 0).toFixed(2)} s`);
console.log(`drafted metric U = decoded metric U on all ${coalitions.length} coalitions: ${same ? 'yes' : 'NO'}`);
if (!same) process.exitCode = 1;
