import { completeConfig, type BaseConfig, type ModelConfig } from '../src/model/config.js';
import type { F32Weight, ModelWeights } from '../src/model/weights.js';
import { Rng } from '../src/generate/rng.js';
import { ropeInvFreq } from '../src/model/rope.js';

export function tinyConfig(over: Partial<BaseConfig> = {}): ModelConfig {
  return completeConfig({
    architecture: 'llama',
    hiddenSize: 32,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 8,
    intermediateSize: 48,
    vocabSize: 64,
    contextLength: 256,
    ropeTheta: 10000,
    rmsNormEps: 1e-5,
    tiedEmbeddings: false,
    attentionBias: false,
    ...over,
  });
}

/** Random weights with a seeded RNG (uniform in ±scale). */
export function randomWeights(c: ModelConfig, seed = 1, scale = 0.3): ModelWeights {
  const rng = new Rng(seed);
  const vec = (n: number, base = 0) => Float32Array.from({ length: n }, () => base + (rng.next() * 2 - 1) * scale);
  const mat = (rows: number, cols: number): F32Weight => ({ dtype: 'f32', rows, cols, data: vec(rows * cols) });
  const q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
  const emb = mat(c.vocabSize, c.hiddenSize);
  return {
    tokenEmbedding: emb,
    layers: Array.from({ length: c.numLayers }, () => ({
      attnNorm: vec(c.hiddenSize, 1),
      wq: mat(q, c.hiddenSize),
      wk: mat(kv, c.hiddenSize),
      wv: mat(kv, c.hiddenSize),
      wo: mat(c.hiddenSize, q),
      bq: c.attentionBias ? vec(q) : undefined,
      bk: c.attentionBias ? vec(kv) : undefined,
      bv: c.attentionBias ? vec(kv) : undefined,
      ffnNorm: vec(c.hiddenSize, 1),
      wGate: mat(c.intermediateSize, c.hiddenSize),
      wUp: mat(c.intermediateSize, c.hiddenSize),
      wDown: mat(c.hiddenSize, c.intermediateSize),
    })),
    finalNorm: vec(c.hiddenSize, 1),
    lmHead: c.tiedEmbeddings ? emb : mat(c.vocabSize, c.hiddenSize),
  };
}

/**
 * Naive float64 reference forward over a whole sequence, written independently of src/model/forward.ts.
 * `visible(layer, kvHead, queryPos, keyPos)` lets a test mask attention (default: causal only).
 * Returns logits for every position.
 */
export function referenceLogits(
  c: ModelConfig, w: ModelWeights, ids: number[],
  visible: (layer: number, kvHead: number, q: number, k: number) => boolean = () => true,
): Float64Array<ArrayBufferLike>[] {
  const T = ids.length, H = c.hiddenSize, hd = c.headDim, half = hd / 2;
  const inv = ropeInvFreq(c);
  const get = (m: F32Weight, r: number, k: number) => m.data[r * m.cols + k];
  const linear = (m: F32Weight, x: Float64Array, b?: Float32Array) => {
    const y = new Float64Array(m.rows);
    for (let r = 0; r < m.rows; r++) {
      let s = b ? b[r] : 0;
      for (let k = 0; k < m.cols; k++) s += get(m, r, k) * x[k];
      y[r] = s;
    }
    return y;
  };
  const norm = (x: Float64Array, g: Float32Array) => {
    let ss = 0;
    for (const v of x) ss += v * v;
    const s = 1 / Math.sqrt(ss / x.length + c.rmsNormEps);
    return x.map((v, i) => v * s * g[i]);
  };
  const rope = (x: Float64Array, heads: number, pos: number) => {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < half; i++) {
        const a = Math.fround(pos * inv[i]);
        const x0 = x[h * hd + i], x1 = x[h * hd + i + half];
        x[h * hd + i] = x0 * Math.cos(a) - x1 * Math.sin(a);
        x[h * hd + i + half] = x1 * Math.cos(a) + x0 * Math.sin(a);
      }
    }
  };
  let xs: Float64Array<ArrayBufferLike>[] = ids.map((id) => Float64Array.from(w.tokenEmbedding.data.subarray(id * H, (id + 1) * H)));
  const group = c.numHeads / c.numKvHeads;
  // The recipe's q·k multiplier when a config sets its own (Gemma style); the Llama 1/√hd is divided as before.
  const scale = c.recipe.attentionScale === 1 / Math.sqrt(hd) ? undefined : c.recipe.attentionScale;
  for (let l = 0; l < c.numLayers; l++) {
    const lw = w.layers[l];
    const qs: Float64Array[] = [], ks: Float64Array[] = [], vs: Float64Array[] = [];
    for (let t = 0; t < T; t++) {
      const xn = norm(xs[t], lw.attnNorm);
      const q = linear(lw.wq as F32Weight, xn, lw.bq), k = linear(lw.wk as F32Weight, xn, lw.bk);
      rope(q, c.numHeads, t);
      rope(k, c.numKvHeads, t);
      qs.push(q); ks.push(k); vs.push(linear(lw.wv as F32Weight, xn, lw.bv));
    }
    const next: Float64Array[] = [];
    for (let t = 0; t < T; t++) {
      const att = new Float64Array(c.numHeads * hd);
      for (let h = 0; h < c.numHeads; h++) {
        const g = Math.floor(h / group);
        const keys = [];
        for (let j = 0; j <= t; j++) if (j === t || visible(l, g, t, j)) keys.push(j);
        const sc = keys.map((j) => {
          let s = 0;
          for (let i = 0; i < hd; i++) s += qs[t][h * hd + i] * ks[j][g * hd + i];
          return scale === undefined ? s / Math.sqrt(hd) : s * scale;
        });
        const m = Math.max(...sc);
        const e = sc.map((s) => Math.exp(s - m));
        const z = e.reduce((a, b) => a + b, 0);
        keys.forEach((j, n) => {
          for (let i = 0; i < hd; i++) att[h * hd + i] += (e[n] / z) * vs[j][g * hd + i];
        });
      }
      const o = linear(lw.wo as F32Weight, att);
      const x1 = xs[t].map((v, i) => v + o[i]);
      const xn = norm(x1, lw.ffnNorm);
      const gte = linear(lw.wGate as F32Weight, xn), up = linear(lw.wUp as F32Weight, xn);
      const hmid = gte.map((gv, i) => (gv / (1 + Math.exp(-gv))) * up[i]);
      const d = linear(lw.wDown as F32Weight, hmid);
      next.push(x1.map((v, i) => v + d[i]));
    }
    xs = next;
  }
  return xs.map((x) => linear(w.lmHead as F32Weight, norm(x, w.finalNorm)));
}
