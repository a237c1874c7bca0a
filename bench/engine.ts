/**
 * `npm run bench:engine`: prefill and decode tokens/s of the pure TypeScript kernels for stories260K, the
 * retrieval-tiny model and a random SmolLM2-135M-shaped model, at 512 and 2048 prompt tokens (clipped to each
 * model's context). Prints a markdown table to paste into docs/benchmarks.md.
 * Options: --quick (fewer decode tokens, 512 only), --lengths 512,2048, --decode N.
 */
import fs from 'node:fs';
import path from 'node:path';
import { TsBackend } from '../src/backend/ts.js';
import { RaggedKVCache } from '../src/cache/ragged.js';
import { openModel } from '../src/model/load.js';
import { Transformer } from '../src/model/forward.js';
import type { ModelConfig } from '../src/model/config.js';
import type { ModelWeights } from '../src/model/weights.js';
import { argmax } from '../src/generate/sampling.js';
import { SMOLLM2_135M, machineLine, markdownTable, randomIds, randomModelWeights } from './common.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const arg = (name: string) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
const lengths = (arg('--lengths') ?? (quick ? '512' : '512,2048')).split(',').map(Number);
const decodeTokens = Number(arg('--decode') ?? (quick ? 8 : 32));
const assets = path.resolve(import.meta.dirname, '../../shared/assets');

interface Subject { name: string; config: ModelConfig; weights: () => ModelWeights }
const subjects: Subject[] = [];
for (const [name, p] of [
  ['stories260K (llama2.c)', path.join(assets, 'models/stories260K/stories260K.bin')],
  ['cokv-retrieval-tiny (HF)', path.join(assets, 'models/cokv-retrieval-tiny')],
] as const) {
  if (!fs.existsSync(p)) { console.error(`skip ${name}: ${p} not found`); continue; }
  const src = await openModel(p);
  subjects.push({ name, config: src.config, weights: () => src.loadWeights() });
}
subjects.push({ name: 'random SmolLM2-135M shape (F32)', config: SMOLLM2_135M, weights: () => randomModelWeights(SMOLLM2_135M) });

const rows: (string | number)[][] = [];
for (const s of subjects) {
  const tf = new Transformer(s.config, s.weights(), new TsBackend());
  for (const len of [...new Set(lengths.map((want) => Math.min(want, s.config.contextLength - decodeTokens - 1)))]) {
    const ids = randomIds(len, s.config.vocabSize);
    const cache = new RaggedKVCache(s.config.numLayers, s.config.numKvHeads, s.config.headDim, len + decodeTokens);
    const t0 = performance.now();
    let logits = tf.forward(ids, cache);
    const t1 = performance.now();
    const step = [argmax(logits)];
    const t2 = performance.now();
    for (let i = 0; i < decodeTokens; i++) {
      logits = tf.forward(step, cache);
      step[0] = argmax(logits);
    }
    const t3 = performance.now();
    const row = [s.name, len, ((len * 1000) / (t1 - t0)).toFixed(1), ((decodeTokens * 1000) / (t3 - t2)).toFixed(2), (cache.bytes() / 2 ** 20).toFixed(2)];
    rows.push(row);
    console.error(row.join('  '));
  }
}
console.log(`\nEngine, pure TypeScript backend (${machineLine()})\n`);
console.log(markdownTable(['model', 'prompt tokens', 'prefill tok/s', 'decode tok/s', 'KV MiB'], rows));
