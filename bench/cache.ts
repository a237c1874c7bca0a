/**
 * `npm run bench:cache`: KV bytes held and decode ms/token for Full and SnapKV budgets 64…1024 at prompt lengths
 * 512, 2048, 8192, for cokv-retrieval-tiny (real prefill + real SnapKV press, lengths ≤ its 2048 context) and a
 * random SmolLM2-135M-shaped model. For the SmolLM2 shape, prefilling 8192 tokens with the pure TS kernels takes
 * tens of minutes, so its cache is filled with random K/V of the right shape and the same per-head lengths a
 * SnapKV press leaves (decode cost depends only on those lengths); the table says which.
 * Options: --decode N (tokens timed, default 16), --lengths, --budgets, --models tiny,smollm2.
 */
import fs from 'node:fs';
import path from 'node:path';
import { TsBackend } from '../src/backend/ts.js';
import { RaggedKVCache } from '../src/cache/ragged.js';
import { Transformer } from '../src/model/forward.js';
import { openModel } from '../src/model/load.js';
import type { ModelConfig } from '../src/model/config.js';
import { createPress } from '../src/press/registry.js';
import { Rng } from '../src/generate/rng.js';
import { argmax } from '../src/generate/sampling.js';
import { SMOLLM2_135M, machineLine, markdownTable, median, randomIds, randomModelWeights } from './common.js';

const args = process.argv.slice(2);
const arg = (name: string, d: string) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : d; };
const decodeN = Number(arg('--decode', '16'));
const lengths = arg('--lengths', '512,2048,8192').split(',').map(Number);
const budgets = arg('--budgets', '64,128,256,512,1024').split(',').map(Number);
const which = arg('--models', 'tiny,smollm2').split(',');
const assets = path.resolve(import.meta.dirname, '../../shared/assets');

function timeDecode(tf: Transformer, cache: RaggedKVCache, first: number): number {
  cache.reserveExtra(decodeN + 1);
  const times: number[] = [];
  const step = [first];
  for (let i = 0; i < decodeN; i++) {
    const t0 = performance.now();
    const logits = tf.forward(step, cache);
    times.push(performance.now() - t0);
    step[0] = argmax(logits);
  }
  return median(times);
}

/** A cache as a press would leave it: `keep` entries per head (window included) of `length` prompt tokens. */
function syntheticCache(c: ModelConfig, length: number, keep: number): RaggedKVCache {
  const cache = new RaggedKVCache(c.numLayers, c.numKvHeads, c.headDim, Math.min(length, keep));
  const rng = new Rng(3);
  const k = new Float32Array(c.headDim), v = new Float32Array(c.headDim);
  const kept = Math.min(length, keep);
  for (const row of cache.heads) for (const h of row) {
    for (let j = 0; j < kept; j++) {
      for (let i = 0; i < c.headDim; i++) { k[i] = rng.next() - 0.5; v[i] = rng.next() - 0.5; }
      h.append(k, 0, v, 0, length - kept + j);
    }
  }
  cache.advance(length);
  return cache;
}

const rows: (string | number)[][] = [];
const fmtMiB = (b: number) => (b / 2 ** 20).toFixed(3);

if (which.includes('tiny')) {
  const dir = path.join(assets, 'models/cokv-retrieval-tiny');
  if (fs.existsSync(dir)) {
    const src = await openModel(dir);
    const c = src.config;
    const tf = new Transformer(c, src.loadWeights(), new TsBackend());
    // Lengths at the model's context are clipped so the timed decode steps still fit (2048 → 2039 here).
    for (const L of [...new Set(lengths.map((x) => Math.min(x, c.contextLength - decodeN - 1)))]) {
      const ids = randomIds(L, c.vocabSize);
      let fullMs = 0, fullBytes = 0;
      for (const b of [0, ...budgets]) {
        if (b >= L) continue;
        const cache = new RaggedKVCache(c.numLayers, c.numKvHeads, c.headDim);
        const press = b ? createPress('snapkv', { budget: b }, c) : undefined;
        const logits = tf.forward(ids, cache, { onLayer: press ? (ctx) => press.compressLayer(ctx, decodeN + 1) : undefined });
        const bytes = cache.bytes();
        const ms = timeDecode(tf, cache, argmax(logits));
        if (!b) { fullMs = ms; fullBytes = bytes; }
        rows.push(['cokv-retrieval-tiny', 'real', L, b ? `snapkv B=${b}` : 'full', fmtMiB(bytes), (bytes / fullBytes).toFixed(4), ms.toFixed(3), (ms / fullMs).toFixed(2)]);
        console.error(rows[rows.length - 1].join('  '));
      }
    }
  }
}

if (which.includes('smollm2')) {
  const c = SMOLLM2_135M;
  const tf = new Transformer(c, randomModelWeights(c), new TsBackend());
  for (const L of lengths) {
    let fullMs = 0, fullBytes = 0;
    for (const b of [0, ...budgets]) {
      if (b >= L) continue;
      const cache = syntheticCache(c, L, b || L);
      // Prompt part only: bytes before decode.
      const bytes = cache.bytes();
      const ms = timeDecode(tf, cache, 1);
      if (!b) { fullMs = ms; fullBytes = bytes; }
      rows.push(['SmolLM2-135M shape (random)', 'synthetic', L, b ? `B=${b}` : 'full', fmtMiB(bytes), (bytes / fullBytes).toFixed(4), ms.toFixed(2), (ms / fullMs).toFixed(2)]);
      console.error(rows[rows.length - 1].join('  '));
    }
  }
}

console.log(`\nKV cache memory and decode latency, pure TypeScript backend (${machineLine()}; median of ${decodeN} decode steps)\n`);
console.log(markdownTable(['model', 'prefill', 'prompt tokens', 'cache', 'KV MiB held (prompt)', 'bytes / full', 'decode ms/token', 'time / full'], rows));
