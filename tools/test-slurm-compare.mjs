// Part of `npm run test:slurm`: the merged profile must equal the single-process one bit for bit (values, and every
// run's records, sums, counts and values), and the merged eval the single-process eval (run.json byte for byte;
// predictions and metrics.json field for field, the timings aside). Exit 1 naming the first difference.
// Usage: node tools/test-slurm-compare.mjs SINGLE_PROFILE MERGED_PROFILE SINGLE_EVAL_DIR MERGED_EVAL_DIR
import fs from 'node:fs';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';

const [singleProfile, mergedProfile, singleEval, mergedEval] = process.argv.slice(2);
const read = (f) => JSON.parse(fs.readFileSync(f, 'utf8'));
const fail = (msg) => { console.error(`test:slurm: ${msg}`); process.exit(1); };

const a = read(singleProfile), b = read(mergedProfile);
if (b.shard !== undefined) fail(`${mergedProfile} is still a shard (${b.shard})`);
if (a.samples !== b.samples) fail(`profile: ${b.samples} samples per run merged, ${a.samples} in the single run`);
// JSON numbers are the doubles' shortest round-trip text: equal text = equal bits.
if (JSON.stringify(a.values) !== JSON.stringify(b.values)) fail('profile: merged values differ from the single run');
for (const [r, rs] of a.runStates.entries()) {
  for (const k of ['records', 'sizes', 'sums', 'counts', 'values']) {
    if (JSON.stringify(rs[k]) !== JSON.stringify(b.runStates[r][k])) fail(`profile: run ${r} ${k} differ from the single run`);
  }
}
const n = a.values.flat().length;
console.log(`test:slurm: profile: merged = single run, bit for bit (${n} head values, ${a.samples} samples × ${a.runs} runs)`);

const TIMING = new Set(['prefillMs', 'decodeMsPerToken']);
const runs = fs.readdirSync(singleEval).sort();
const merged = fs.readdirSync(mergedEval).sort();
if (!isDeepStrictEqual(runs, merged)) fail(`eval: run folders differ (${runs.join(', ')} vs ${merged.join(', ')})`);
let lines = 0;
for (const run of runs) {
  const da = path.join(singleEval, run), db = path.join(mergedEval, run);
  if (fs.readFileSync(path.join(da, 'run.json'), 'utf8') !== fs.readFileSync(path.join(db, 'run.json'), 'utf8')) fail(`eval ${run}: run.json differs`);
  const preds = (d) => fs.readFileSync(path.join(d, 'predictions.jsonl'), 'utf8').trim().split('\n')
    .map((l) => JSON.stringify(Object.entries(JSON.parse(l)).filter(([k]) => !TIMING.has(k))));
  const pa = preds(da), pb = preds(db);
  if (!isDeepStrictEqual(pa, pb)) fail(`eval ${run}: predictions differ`);
  lines += pa.length;
  const metrics = (d) => { const m = read(path.join(d, 'metrics.json')); const keys = Object.keys(m); delete m.createdAt; delete m.timings; return [keys, JSON.stringify(m)]; };
  if (!isDeepStrictEqual(metrics(da), metrics(db))) fail(`eval ${run}: metrics.json differs`);
}
console.log(`test:slurm: eval: merged = single run (${runs.length} runs, ${lines} predictions; run.json byte for byte, predictions and metrics field for field but timings)`);
