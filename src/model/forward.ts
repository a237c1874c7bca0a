/**
 * The decoder forward pass, top to bottom like llama2.c's run.c, but over T tokens at once (prefill as
 * matrix-matrix work) and against the ragged per-head cache.
 *
 * Per layer: RMSNorm → Q/K/V (+bias) → RoPE → append K/V to each KV head → causal attention of every query head
 * over its KV head's cache → hook (presses compress here, after the layer's prefill attention) → O → residual →
 * RMSNorm → SwiGLU FFN → residual. Then the final norm and the LM head only for the rows whose logits are asked.
 */
import type { Backend } from '../backend/types.js';
import type { RaggedKVCache } from '../cache/ragged.js';
import type { ModelConfig } from './config.js';
import type { ModelWeights } from './weights.js';
import { applyRope, RopeTable, ropeInvFreq } from './rope.js';

/** What a layer hook sees right after the layer's attention over the new tokens. */
export interface LayerPrefillContext {
  layer: number;
  /** Post-RoPE queries of the new tokens, [numTokens][numHeads*headDim]. */
  queries: Float32Array;
  numTokens: number;
  /** Sequence position of the first new token. */
  startPosition: number;
  cache: RaggedKVCache;
}

export interface ForwardOptions {
  /** Which rows need logits: the last new token (default), every new token, or none. */
  logits?: 'last' | 'all' | 'none';
  /** Called after each layer's attention; the cache already holds this layer's new K/V. */
  onLayer?: (ctx: LayerPrefillContext) => void;
}

function rmsNorm(out: Float32Array, x: Float32Array, w: Float32Array, rows: number, dim: number, eps: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[o + i] * x[o + i];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) out[o + i] = w[i] * (x[o + i] * inv);
  }
}

function addBias(x: Float32Array, b: Float32Array, rows: number): void {
  const n = b.length;
  for (let r = 0; r < rows; r++) for (let i = 0; i < n; i++) x[r * n + i] += b[i];
}

/** Scratch buffers sized for T tokens; reused across calls so decode allocates nothing. */
class Workspace {
  constructor(
    readonly tokens: number,
    c: ModelConfig,
    readonly x = new Float32Array(tokens * c.hiddenSize),
    readonly xn = new Float32Array(tokens * c.hiddenSize),
    readonly q = new Float32Array(tokens * c.numHeads * c.headDim),
    readonly k = new Float32Array(tokens * c.numKvHeads * c.headDim),
    readonly v = new Float32Array(tokens * c.numKvHeads * c.headDim),
    readonly att = new Float32Array(tokens * c.numHeads * c.headDim),
    readonly proj = new Float32Array(tokens * c.hiddenSize),
    readonly gate = new Float32Array(tokens * c.intermediateSize),
    readonly up = new Float32Array(tokens * c.intermediateSize),
  ) {}
}

export class Transformer {
  readonly rope: RopeTable;
  private ws: Workspace | undefined;
  private scores = new Float32Array(0);
  private logitsBuf = new Float32Array(0);

  constructor(readonly config: ModelConfig, readonly weights: ModelWeights, readonly backend: Backend) {
    this.rope = new RopeTable(ropeInvFreq(config));
  }

  private workspace(tokens: number): Workspace {
    if (!this.ws || this.ws.tokens < tokens) this.ws = new Workspace(tokens, this.config);
    return this.ws;
  }

  /**
   * Run `tokens` through the model, appending their K/V to `cache` and advancing its position.
   * Returns the logits of the requested rows, [rows][vocab] (a view into a reused buffer: copy to keep).
   */
  forward(tokens: ArrayLike<number>, cache: RaggedKVCache, opts: ForwardOptions = {}): Float32Array {
    const c = this.config;
    const T = tokens.length;
    const H = c.hiddenSize, hd = c.headDim, nh = c.numHeads, nkv = c.numKvHeads;
    const qDim = nh * hd, kvDim = nkv * hd;
    const group = nh / nkv;
    const w = this.weights;
    const be = this.backend;
    const ws = this.workspace(T);
    const start = cache.position;
    this.rope.ensure(start + T);
    const { cos, sin } = this.rope;

    for (let t = 0; t < T; t++) {
      const id = tokens[t];
      if (!(Number.isInteger(id) && id >= 0 && id < c.vocabSize)) throw new RangeError(`token id ${id} outside vocab`);
      be.embedRow(ws.x, t * H, w.tokenEmbedding, id);
    }

    for (let l = 0; l < c.numLayers; l++) {
      const lw = w.layers[l];
      rmsNorm(ws.xn, ws.x, lw.attnNorm, T, H, c.rmsNormEps);
      be.matmul(ws.q, ws.xn, T, lw.wq);
      be.matmul(ws.k, ws.xn, T, lw.wk);
      be.matmul(ws.v, ws.xn, T, lw.wv);
      if (lw.bq) addBias(ws.q, lw.bq, T);
      if (lw.bk) addBias(ws.k, lw.bk, T);
      if (lw.bv) addBias(ws.v, lw.bv, T);
      for (let t = 0; t < T; t++) {
        applyRope(ws.q, t * qDim, nh, hd, start + t, cos, sin);
        applyRope(ws.k, t * kvDim, nkv, hd, start + t, cos, sin);
        for (let g = 0; g < nkv; g++) {
          cache.head(l, g).append(ws.k, t * kvDim + g * hd, ws.v, t * kvDim + g * hd, start + t);
        }
      }
      for (let g = 0; g < nkv; g++) {
        for (let j = 0; j < group; j++) this.attendHead(ws, cache, l, g, g * group + j, T);
      }
      opts.onLayer?.({ layer: l, queries: ws.q, numTokens: T, startPosition: start, cache });

      be.matmul(ws.proj, ws.att, T, lw.wo);
      for (let i = 0; i < T * H; i++) ws.x[i] += ws.proj[i];

      rmsNorm(ws.xn, ws.x, lw.ffnNorm, T, H, c.rmsNormEps);
      be.matmul(ws.gate, ws.xn, T, lw.wGate);
      be.matmul(ws.up, ws.xn, T, lw.wUp);
      const F = T * c.intermediateSize;
      for (let i = 0; i < F; i++) {
        const g = ws.gate[i];
        ws.gate[i] = (g / (1 + Math.exp(-g))) * ws.up[i];
      }
      // wDown maps intermediate → hidden; reuse `proj` for its output.
      be.matmul(ws.proj, ws.gate, T, lw.wDown);
      for (let i = 0; i < T * H; i++) ws.x[i] += ws.proj[i];
    }
    cache.position = start + T;

    const mode = opts.logits ?? 'last';
    if (mode === 'none') return new Float32Array(0);
    const first = mode === 'all' ? 0 : T - 1;
    const rows = T - first;
    rmsNorm(ws.xn, ws.x.subarray(first * H, T * H), w.finalNorm, rows, H, c.rmsNormEps);
    const V = c.vocabSize;
    if (this.logitsBuf.length < rows * V) this.logitsBuf = new Float32Array(rows * V);
    const out = this.logitsBuf.subarray(0, rows * V);
    be.matmul(out, ws.xn, rows, w.lmHead);
    return out;
  }

  /** Causal attention of query head `qh` (of KV head `g`) for the T new tokens, written into ws.att. */
  private attendHead(ws: Workspace, cache: RaggedKVCache, layer: number, g: number, qh: number, T: number): void {
    const c = this.config;
    const hd = c.headDim;
    const qDim = c.numHeads * hd;
    const head = cache.head(layer, g);
    const len = head.length;
    const base = len - T;
    if (this.scores.length < len) this.scores = new Float32Array(Math.max(len, this.scores.length * 2));
    const scores = this.scores;
    const K = head.keys, Vv = head.values;
    const scale = 1 / Math.sqrt(hd);
    for (let t = 0; t < T; t++) {
      const qo = t * qDim + qh * hd;
      const visible = base + t + 1;
      let max = -Infinity;
      for (let j = 0; j < visible; j++) {
        const ko = j * hd;
        let s = 0;
        for (let i = 0; i < hd; i++) s += ws.q[qo + i] * K[ko + i];
        s *= scale;
        scores[j] = s;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let j = 0; j < visible; j++) {
        const e = Math.exp(scores[j] - max);
        scores[j] = e;
        sum += e;
      }
      const ao = qo;
      for (let i = 0; i < hd; i++) ws.att[ao + i] = 0;
      const inv = 1 / sum;
      for (let j = 0; j < visible; j++) {
        const p = scores[j] * inv;
        const vo = j * hd;
        for (let i = 0; i < hd; i++) ws.att[ao + i] += p * Vv[vo + i];
      }
    }
  }
}
