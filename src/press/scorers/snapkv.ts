/**
 * SnapKV scoring as in the CoKV reference code (spec §4): the last `w` prompt queries attend to all prompt keys
 * (causal inside the last w×w block), softmax over keys in fp32, keep columns [0, L−w), mean over the w queries,
 * aggregate over the query heads of each KV group (mean, or max), then 1-D pooling (max by default, kernel 7,
 * stride 1, padding k/2). Returns one score array of length L−w per KV head. Softmax uses the model's own q·k scale
 * (Gemma: 1/√query_pre_attn_scalar), so the scores are the attention the model really computes.
 */
import type { LayerPrefillContext } from '../../model/forward.js';

export interface SnapKvScoreOptions {
  window: number;
  pool: 'max' | 'avg' | 'none';
  kernel: number;
  groupAggregation: 'mean' | 'max';
  /**
   * Query heads of the model. Give it: the forward pass may hand over a reused scratch buffer holding more rows
   * than `numTokens`, so the head count cannot always be inferred from `ctx.queries.length`.
   */
  numHeads?: number;
  /** Multiplier of q·k: the model's recipe.attentionScale (default 1/√headDim, the Llama recipe). */
  scale?: number;
}

let keyScratch: Float32Array = new Float32Array(0);
/** Per-head accumulators (agg, perHead, logits), reused by every call. */
let f64Scratch = new Float64Array(0);

export function snapkvScores(ctx: LayerPrefillContext, o: SnapKvScoreOptions): Float32Array[] {
  const cache = ctx.cache;
  const { numKvHeads, headDim: hd } = cache;
  const numHeads = o.numHeads ?? ctx.queries.length / ctx.numTokens / hd;
  const group = numHeads / numKvHeads;
  if (!Number.isInteger(group) || group < 1 || ctx.queries.length < ctx.numTokens * numHeads * hd) {
    throw new Error(`snapkvScores: ${numHeads} query heads do not fit ${numKvHeads} KV heads and the queries given`);
  }
  const qDim = numHeads * hd;
  const w = o.window;
  const scale = o.scale ?? 1 / Math.sqrt(hd);
  const out: Float32Array[] = [];
  for (let g = 0; g < numKvHeads; g++) {
    const head = cache.head(ctx.layer, g);
    // F16/Q8 heads are widened into one reused scratch buffer: a press prefill then leaves no per-head garbage of
    // the whole prompt's keys behind (its peak memory stays the full-cache run's).
    const keys = head.keysF32(keyScratch);
    if (head.dtype !== 'f32') keyScratch = keys;
    const L = head.length;
    const n = L - w;
    if (f64Scratch.length < 3 * L) f64Scratch = new Float64Array(3 * L);
    const agg = f64Scratch.subarray(0, n).fill(0);
    const perHead = f64Scratch.subarray(L, L + n);
    const logits = f64Scratch.subarray(2 * L, 3 * L);
    const queries = ctx.queries;
    for (let j = 0; j < group; j++) {
      const qh = g * group + j;
      perHead.fill(0);
      for (let i = 0; i < w; i++) {
        const row = ctx.numTokens - w + i; // query row within this prefill chunk
        const visible = L - w + i + 1;
        const qo = row * qDim + qh * hd;
        let max = -Infinity;
        for (let k = 0; k < visible; k++) {
          // q·k summed in double in index order (4 terms a turn, the same order and so the same value as one term a
          // turn): products of two f32 values are exact in double.
          let s = 0;
          const ko = k * hd;
          let d = 0;
          for (; d + 4 <= hd; d += 4) {
            s += queries[qo + d] * keys[ko + d];
            s += queries[qo + d + 1] * keys[ko + d + 1];
            s += queries[qo + d + 2] * keys[ko + d + 2];
            s += queries[qo + d + 3] * keys[ko + d + 3];
          }
          for (; d < hd; d++) s += queries[qo + d] * keys[ko + d];
          s = Math.fround(s * scale);
          logits[k] = s;
          if (s > max) max = s;
        }
        // exp once per key: the sum and the probabilities use the same values
        let z = 0;
        for (let k = 0; k < visible; k++) {
          const e = Math.exp(logits[k] - max);
          logits[k] = e;
          z += e;
        }
        for (let k = 0; k < n; k++) perHead[k] += Math.fround(logits[k] / z);
      }
      for (let k = 0; k < n; k++) {
        const v = perHead[k] / w;
        if (o.groupAggregation === 'max') agg[k] = j === 0 ? v : Math.max(agg[k], v);
        else agg[k] += v / group;
      }
    }
    out.push(pool1d(agg, o.pool, o.kernel));
  }
  return out;
}

/** 1-D pooling with stride 1 and padding ⌊k/2⌋: max pads with −∞, avg counts the zero padding (PyTorch defaults). */
export function pool1d(x: ArrayLike<number>, pool: 'max' | 'avg' | 'none', kernel: number): Float32Array {
  const n = x.length;
  const out = new Float32Array(n);
  if (pool === 'none' || kernel <= 1) {
    for (let i = 0; i < n; i++) out[i] = x[i];
    return out;
  }
  const r = Math.floor(kernel / 2);
  for (let i = 0; i < n; i++) {
    let m = -Infinity, s = 0;
    for (let k = i - r; k <= i + r; k++) {
      if (k < 0 || k >= n) continue;
      if (x[k] > m) m = x[k];
      s += x[k];
    }
    out[i] = pool === 'max' ? m : s / kernel;
  }
  return out;
}

/**
 * StreamingLLM as a scorer: the first `sink` tokens score highest, then more recent tokens score higher, so
 * taking the top c keeps the sink plus the most recent prompt tokens.
 */
export function streamingScores(ctx: LayerPrefillContext, window: number, sink: number): Float32Array[] {
  const out: Float32Array[] = [];
  for (let g = 0; g < ctx.cache.numKvHeads; g++) {
    const n = ctx.cache.head(ctx.layer, g).length - window;
    const s = new Float32Array(n);
    for (let k = 0; k < n; k++) s[k] = k < sink ? 1e9 - k : k;
    out.push(s);
  }
  return out;
}
