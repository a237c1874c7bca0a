/**
 * `npm run bench:speed`: kernel and engine speed of the ts / wasm / native backends.
 *  - GEMM GFLOP/s: M512 K576 N1536 and 1024³ (F32).
 *  - GEMV GB/s of weights read (F32 and Q8_0): K576 N1536 rotating over ~100 MB of copies (so weights come from
 *    DRAM, as in decoding) and K576 N49152 (the SmolLM2 LM head, 113 MB F32).
 *  - Attention for one head over a 2048-token causal prefill, and one decode step of a KV group (3 query heads) over
 *    8192 entries (TS attendSegments vs the native `attend`).
 *  - RMSNorm, SwiGLU (TS vs native) and RoPE (TS) over one 512-token prefill of the SmolLM2 shape.
 *  - Engine prefill / decode tokens/s on a random SmolLM2-135M-shaped model (F32, and Q8_0 for wasm/native).
 * Options: --prompt N (default 512), --decode N (default 16), --no-ts (skip the slow TS engine rows),
 * --threads N (native pool size). Prints markdown tables.
 */
import { TsBackend } from '../src/backend/ts.js';
import type { Backend } from '../src/backend/types.js';
import { NativeBackend, loadNativeAddon, nativeLoadError } from '../src/backend/native.js';
import { WasmBackend } from '../src/backend/wasm.js';
import { RaggedKVCache } from '../src/cache/ragged.js';
import { Transformer, attendSegments, rmsNorm, swiglu } from '../src/model/forward.js';
import { applyRope, RopeTable, ropeInvFreq } from '../src/model/rope.js';
import { quantizeMatrix } from '../src/model/quant.js';
import type { ModelWeights, Weight } from '../src/model/weights.js';
import { argmax } from '../src/generate/sampling.js';
import { Rng } from '../src/generate/rng.js';
import { SMOLLM2_135M, machineLine, markdownTable, median, randomIds, randomModelWeights } from './common.js';

const args = process.argv.slice(2);
const arg = (name: string) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
const promptTokens = Number(arg('--prompt') ?? 512);
const decodeTokens = Number(arg('--decode') ?? 16);
const noTs = args.includes('--no-ts');

const addon = loadNativeAddon();
if (!addon) console.error(`native backend skipped: ${nativeLoadError()}`);
if (addon && arg('--threads')) addon.setThreads(Number(arg('--threads')));
const backends: Backend[] = [new TsBackend(), new WasmBackend()];
if (addon) backends.push(new NativeBackend(addon), Object.assign(new NativeBackend(addon, { q8Int8: true }), { name: 'native-q8i8' }) as Backend);

const rng = new Rng(3);
function rand(n: number, s = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (rng.next() * 2 - 1) * s;
  return a;
}

/** Median seconds per call over 3 trials of at least `minS` seconds each (at least one call per trial). */
function time(fn: (i: number) => void, minS = 0.25): number {
  fn(0);
  const trials: number[] = [];
  for (let t = 0; t < 3; t++) {
    let n = 0;
    const t0 = performance.now();
    do fn(n++); while (performance.now() - t0 < minS * 1000);
    trials.push((performance.now() - t0) / 1000 / n);
  }
  return median(trials);
}

// ---- GEMM ----
const gemmRows: (string | number)[][] = [];
for (const [M, K, N] of [[512, 576, 1536], [1024, 1024, 1024]]) {
  const w: Weight = { dtype: 'f32', rows: N, cols: K, data: rand(N * K, 0.05) };
  const x = rand(M * K), out = new Float32Array(M * N);
  const row: (string | number)[] = [`GEMM M${M} K${K} N${N} (GFLOP/s)`];
  for (const be of backends) {
    if (be.name === 'native-q8i8') continue;
    const s = time(() => be.matmul(out, x, M, w), be.name === 'ts' ? 0.5 : 0.25);
    row.push(((2 * M * N * K) / s / 1e9).toFixed(1));
    console.error(row.join('  '));
  }
  gemmRows.push(row);
}

// ---- GEMV ----
const gemvRows: (string | number)[][] = [];
for (const [K, N, copies] of [[576, 1536, 28], [576, 49152, 1]]) {
  const f32: Weight[] = Array.from({ length: copies }, () => ({ dtype: 'f32', rows: N, cols: K, data: rand(N * K, 0.05) }));
  const q8: Weight[] = f32.map((w) => quantizeMatrix('q8_0', w.data as Float32Array, N, K));
  const x = rand(K), out = new Float32Array(N);
  for (const [label, ws, bpw] of [['F32', f32, 4], ['Q8_0', q8, 34 / 32]] as const) {
    const row: (string | number)[] = [`GEMV K${K} N${N} ${label} (GB/s)`];
    for (const be of backends) {
      if (be.name === 'native-q8i8' && label === 'F32') { row.push('–'); continue; }
      for (const w of ws) be.matmul(out, x, 1, w); // wasm: copy the weights in before timing
      const s = time((i) => be.matmul(out, x, 1, ws[i % ws.length]));
      row.push(((N * K * bpw) / s / 1e9).toFixed(1));
    }
    gemvRows.push(row);
    console.error(row.join('  '));
  }
}

// ---- attention, one head, causal 2048 ----
const attRows: (string | number)[][] = [];
{
  const T = 2048, hd = 64;
  const q = rand(T * hd), k = rand(T * hd), v = rand(T * hd), o = new Float32Array(T * hd), scores = new Float32Array(T);
  const empty = new Float32Array(0);
  const sTs = time(() => {
    for (let t = 0; t < T; t++) attendSegments(q, t * hd, hd, 0.125, o, t * hd, scores, k, v, 0, t + 1, empty, empty, 0, 0);
  }, 0.5);
  const row: (string | number)[] = [`causal attention, 1 head, ${T} tokens, hd ${hd} (ms)`, (sTs * 1000).toFixed(1)];
  if (addon) {
    const nb = new NativeBackend(addon);
    const count = new Int32Array(T).map((_, i) => i + 1);
    const args = { out: o, oOff: 0, oStride: hd, q, qOff: 0, qStride: hd, nq: T, hd, scale: 0.125, k1: k, v1: v, from1: 0, to1: T, count1: count, k2: empty, v2: empty, from2: 0, to2: 0 };
    const sN = time(() => nb.attend(args));
    row.push((sN * 1000).toFixed(2), (sTs / sN).toFixed(1) + 'x');
  }
  attRows.push(row);
  console.error(row.join('  '));
}
// ---- decode attention: one KV group (3 query heads, as SmolLM2) over 8192 entries ----
{
  const L = 8192, hd = 64, group = 3;
  const q = rand(group * hd), k = rand(L * hd), v = rand(L * hd), o = new Float32Array(group * hd), scores = new Float32Array(L);
  const empty = new Float32Array(0);
  const sTs = time(() => {
    for (let j = 0; j < group; j++) attendSegments(q, j * hd, hd, 0.125, o, j * hd, scores, k, v, 0, L, empty, empty, 0, 0);
  }, 0.5);
  const row: (string | number)[] = [`decode attention, ${group} query heads of one KV head, ${L} entries, hd ${hd} (ms)`, (sTs * 1000).toFixed(2)];
  if (addon) {
    const nb = new NativeBackend(addon);
    const args = { out: o, oOff: 0, oStride: hd, q, qOff: 0, qStride: hd, nq: group, hd, scale: 0.125, k1: k, v1: v, from1: 0, to1: L, count1: null, k2: empty, v2: empty, from2: 0, to2: 0 };
    const sN = time(() => nb.attend(args));
    row.push((sN * 1000).toFixed(3), (sTs / sN).toFixed(1) + 'x');
  }
  attRows.push(row);
  console.error(row.join('  '));
}

// ---- element-wise layers over one 512-token prefill of the SmolLM2 shape (all 30 layers) ----
const ewRows: (string | number)[][] = [];
{
  const c = SMOLLM2_135M, T = 512, H = c.hiddenSize, F = c.intermediateSize;
  const qDim = c.numHeads * c.headDim, kvDim = c.numKvHeads * c.headDim;
  const x = rand(T * H), out = new Float32Array(T * H), wn = rand(H), gate = rand(T * F, 4), up = rand(T * F), g2 = gate.slice();
  const rope = new RopeTable(ropeInvFreq(c));
  rope.ensure(T);
  const q = rand(T * qDim), k = rand(T * kvDim);
  const ms = (fn: () => void) => time(fn, 0.3) * 1000;
  const nb = addon ? new NativeBackend(addon) : undefined;
  const norm = [ms(() => { for (let l = 0; l < 2 * c.numLayers; l++) rmsNorm(out, x, wn, T, H, 1e-5); })];
  if (nb) norm.push(ms(() => { for (let l = 0; l < 2 * c.numLayers; l++) nb.rmsNorm(out, x, wn, T, H, 1e-5); }));
  const glu = [ms(() => { for (let l = 0; l < c.numLayers; l++) { g2.set(gate); swiglu(g2, up, T * F); } })];
  if (nb) glu.push(ms(() => { for (let l = 0; l < c.numLayers; l++) { g2.set(gate); nb.swiglu(g2, up, T * F); } }));
  const ropeMs = ms(() => {
    for (let l = 0; l < c.numLayers; l++) {
      for (let t = 0; t < T; t++) {
        applyRope(q, t * qDim, c.numHeads, c.headDim, t, rope.cos, rope.sin);
        applyRope(k, t * kvDim, c.numKvHeads, c.headDim, t, rope.cos, rope.sin);
      }
    }
  });
  const row = (name: string, v: number[]) => [name, v[0].toFixed(1), v.length > 1 ? v[1].toFixed(1) : 'TS only', v.length > 1 ? (v[0] / v[1]).toFixed(1) + 'x' : '–'];
  ewRows.push(row('RMSNorm, 2 per layer (ms)', norm), row('SwiGLU (SiLU·up incl. the copy of gate), 1 per layer (ms)', glu), row('RoPE on Q and K (ms)', [ropeMs]));
  console.error(ewRows.map((r) => r.join('  ')).join('\n'));
}

// ---- engine ----
function quantizeModel(w: ModelWeights): ModelWeights {
  const q = (m: Weight): Weight => (m.dtype === 'f32' ? quantizeMatrix('q8_0', m.data, m.rows, m.cols) : m);
  const emb = q(w.tokenEmbedding);
  return {
    tokenEmbedding: emb,
    layers: w.layers.map((l) => ({ ...l, wq: q(l.wq), wk: q(l.wk), wv: q(l.wv), wo: q(l.wo), wGate: q(l.wGate), wUp: q(l.wUp), wDown: q(l.wDown) })),
    finalNorm: w.finalNorm,
    lmHead: w.lmHead === w.tokenEmbedding ? emb : q(w.lmHead),
  };
}

const c = SMOLLM2_135M;
const engineRows: (string | number)[][] = [];
const f32Weights = randomModelWeights(c);
let q8Weights: ModelWeights | undefined;
for (const dtype of ['F32', 'Q8_0'] as const) {
  if (dtype === 'Q8_0') q8Weights = quantizeModel(f32Weights);
  for (const be of backends) {
    if (be.name === 'ts' && (noTs || dtype === 'Q8_0')) continue;
    if (be.name === 'native-q8i8' && dtype === 'F32') continue;
    const tf = new Transformer(c, dtype === 'F32' ? f32Weights : q8Weights!, be);
    const ids = randomIds(promptTokens, c.vocabSize);
    const cache = new RaggedKVCache(c.numLayers, c.numKvHeads, c.headDim, promptTokens + decodeTokens);
    const t0 = performance.now();
    let logits = tf.forward(ids, cache);
    const t1 = performance.now();
    const step = [argmax(logits)];
    const n = be.name === 'ts' ? Math.min(decodeTokens, 4) : decodeTokens;
    const t2 = performance.now();
    for (let i = 0; i < n; i++) {
      logits = tf.forward(step, cache);
      step[0] = argmax(logits);
    }
    const t3 = performance.now();
    const row = [be.name, dtype, promptTokens, ((promptTokens * 1000) / (t1 - t0)).toFixed(1), ((n * 1000) / (t3 - t2)).toFixed(2)];
    engineRows.push(row);
    console.error(row.join('  '));
  }
}

const names = backends.map((b) => b.name).filter((n) => n !== 'native-q8i8');
console.log(`\nKernel speed (${machineLine()}; native threads: ${addon ? addon.info().threads : 'n/a'}, wasm: 1 thread, ts: 1 thread)\n`);
console.log(markdownTable(['kernel', ...names], gemmRows));
console.log('');
console.log(markdownTable(['kernel', ...backends.map((b) => b.name)], gemvRows));
console.log('');
console.log(markdownTable(['attention', 'ts', ...(addon ? ['native', 'speed-up'] : [])], attRows));
console.log('\nElement-wise layers over a 512-token prefill of the SmolLM2-135M shape (30 layers; native = 1 thread)\n');
console.log(markdownTable(['layer', 'ts', 'native', 'speed-up'], ewRows));
console.log(`\nEngine, random SmolLM2-135M shape, ${promptTokens}-token prompt, ${decodeTokens} decode tokens (ts: 4)\n`);
console.log(markdownTable(['backend', 'weights', 'prompt tokens', 'prefill tok/s', 'decode tok/s'], engineRows));
