/**
 * Token selection as small composable steps (like transformers' logits processors): repetition penalty →
 * temperature → top-k → top-p → min-p → draw. Temperature 0 means greedy (argmax, lowest id on ties).
 */
import { Rng } from './rng.js';

export interface SamplingOptions {
  /** 0 = greedy. Default 0. */
  temperature?: number;
  /** Keep the k most likely tokens (0 = off). */
  topK?: number;
  /** Keep the smallest set whose probability reaches p (1 = off). */
  topP?: number;
  /** Drop tokens whose probability is below minP × the top probability (0 = off). */
  minP?: number;
  /** > 1 discourages tokens already in the context (CTRL-style, as transformers). 1 = off. */
  repetitionPenalty?: number;
  seed?: number;
}

/** Index of the largest value (lowest index on ties). */
export function argmax(x: ArrayLike<number>, n = x.length): number {
  let best = 0;
  let bv = x[0];
  for (let i = 1; i < n; i++) if (x[i] > bv) { bv = x[i]; best = i; }
  return best;
}

/** Apply transformers' RepetitionPenaltyLogitsProcessor in place. */
export function applyRepetitionPenalty(logits: Float32Array, history: ArrayLike<number>, penalty: number): void {
  if (penalty === 1) return;
  const seen = new Set<number>();
  for (let i = 0; i < history.length; i++) seen.add(history[i]);
  for (const id of seen) {
    const v = logits[id];
    logits[id] = v < 0 ? v * penalty : v / penalty;
  }
}

/** A reusable sampler: holds its RNG and scratch so each call allocates nothing. */
export class Sampler {
  private readonly rng: Rng;
  private readonly temperature: number;
  private readonly topK: number;
  private readonly topP: number;
  private readonly minP: number;
  private readonly penalty: number;
  private order = new Int32Array(0);
  private probs = new Float64Array(0);

  constructor(opts: SamplingOptions = {}) {
    this.temperature = opts.temperature ?? 0;
    this.topK = opts.topK ?? 0;
    this.topP = opts.topP ?? 1;
    this.minP = opts.minP ?? 0;
    this.penalty = opts.repetitionPenalty ?? 1;
    this.rng = new Rng(opts.seed ?? 0x5eed);
  }

  /** Pick the next token from `logits` (modified in place) given the token history. */
  sample(logits: Float32Array, history: ArrayLike<number>): number {
    applyRepetitionPenalty(logits, history, this.penalty);
    const V = logits.length;
    if (this.temperature <= 0) return argmax(logits);
    if (this.order.length < V) {
      this.order = new Int32Array(V);
      this.probs = new Float64Array(V);
    }
    // Softmax at temperature over all tokens, then sort candidates by probability.
    let max = -Infinity;
    for (let i = 0; i < V; i++) if (logits[i] > max) max = logits[i];
    let sum = 0;
    for (let i = 0; i < V; i++) {
      const p = Math.exp((logits[i] - max) / this.temperature);
      this.probs[i] = p;
      sum += p;
    }
    for (let i = 0; i < V; i++) this.probs[i] /= sum;
    const probs = this.probs;
    const order = this.order.subarray(0, V);
    for (let i = 0; i < V; i++) order[i] = i;
    order.sort((a, b) => probs[b] - probs[a] || a - b);
    let n = V;
    if (this.topK > 0) n = Math.min(n, this.topK);
    if (this.topP < 1) {
      let acc = 0;
      for (let i = 0; i < n; i++) {
        acc += probs[order[i]];
        if (acc >= this.topP) { n = i + 1; break; }
      }
    }
    if (this.minP > 0) {
      const floor = this.minP * probs[order[0]];
      let m = 1;
      while (m < n && probs[order[m]] >= floor) m++;
      n = m;
    }
    let total = 0;
    for (let i = 0; i < n; i++) total += probs[order[i]];
    let r = this.rng.next() * total;
    for (let i = 0; i < n; i++) {
      r -= probs[order[i]];
      if (r <= 0) return order[i];
    }
    return order[n - 1];
  }
}
